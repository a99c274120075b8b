//! Configuration: the live settings read from the cluster ConfigMap, and `meshcrypt config check`,
//! which validates a manifest's ConfigMap exactly as the agent would.

mod check;
pub mod settings;

pub use check::run as check;
