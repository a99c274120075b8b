//! Criterion benches of key handling.
fn main() {}
