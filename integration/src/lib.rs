//! meshcrypt's scenarios: a cluster of agents on the network lab (`meshcrypt-netlab`) talking to
//! the test API server (`meshcrypt-test-apiserver`), the scenario tests, the deploy tests and the
//! one-command demo. Production code never uses it.

pub mod cluster;
pub mod manifests;
