//! meshcrypt's scenarios: a cluster of agents on the network lab (`meshcrypt-netlab`) talking to
//! the test API server (`meshcrypt-test-apiserver`), the scenario tests, the deploy tests, the
//! one-command demo and the scale harness. Production code never uses it.

pub mod cluster;
pub mod manifests;
pub mod scale;
