//! meshcrypt's network lab: nodes and pods as network namespaces joined by an underlay bridge
//! ([`lab`]), the detector that reports plaintext pod traffic on that underlay ([`leak`]), traffic
//! generators between namespaces ([`traffic`]) and waiting with a deadline ([`wait`]). The data
//! plane's tests, the benches and the scenario crate (`meshcrypt-integration`) build on it;
//! production code never does. Needs root.

pub mod lab;
pub mod leak;
pub mod traffic;
pub mod wait;
