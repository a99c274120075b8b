//! Benches live in `benches/benches/`; the crate exists to hold them.
