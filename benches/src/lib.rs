//! meshcrypt's benchmarks live in `benches/benches/`: criterion benches of the hot paths; the
//! `throughput` binary (`src/bin/throughput/`) is the data-plane throughput bench against
//! wireguard-go on the network lab. This library target only anchors the package.
