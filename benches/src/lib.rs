//! meshcrypt's benchmarks live in `benches/benches/`: criterion benches of the hot paths. This
//! library target only anchors the package.
