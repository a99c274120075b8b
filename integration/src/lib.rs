//! meshcrypt's local lab: a stateful test Kubernetes API server over real HTTP, nodes and pods as
//! network namespaces joined by an underlay bridge, and the detector that reports plaintext pod
//! traffic on that underlay. Tests and the demo use it; production code never does.

pub mod cluster;
pub mod lab;
pub mod leak;
pub mod manifests;
pub mod traffic;
pub mod wait;
