//! `meshcrypt`: the node agent and its subcommands.
fn main() {}
