//! meshcrypt's cross-cluster exchange: what one cluster tells its peer clusters about its nodes.
//!
//! A cluster's nodes travel as a [`Bundle`] (cluster id, generation, and per node its name, public
//! key, key epoch, endpoint and allowed prefixes). [`seal`] encodes it compactly, cuts it into
//! shards that each fit one AWS Secrets Manager secret value (64 KiB), and signs a manifest that
//! names every shard by its SHA-256 with the cluster's Ed25519 key; [`open`] checks all of that
//! against the peer cluster's pinned key and the last generation accepted, and refuses anything
//! unsigned, badly signed, foreign, rolled back, torn or malformed.
//!
//! Modules: `bundle` (the content and its checks), `seal` (encoding, sharding, signing and the
//! reverse), `store` (the [`SecretStore`] seam and AWS Secrets Manager behind it), `exchange`
//! (writing and reading a cluster's secrets in the order that keeps readers consistent), `error`;
//! `testing` (feature `test-support`): moto's server and an in-memory store for tests.

mod bundle;
mod error;
mod exchange;
#[cfg(feature = "test-support")]
mod memory_store;
mod seal;
mod store;
#[cfg(feature = "test-support")]
pub mod testing;

pub use bundle::{Bundle, BundleNode, MAX_NODES};
pub use error::Error;
pub use exchange::{Fetched, Names, Published, fetch, publish};
pub use seal::{MAX_SHARD_BYTES, Manifest, Sealed, ShardRef, Trust, open, seal};
pub use store::{SecretStore, SecretsManager, Stage};
