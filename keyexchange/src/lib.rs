//! Node keys, the key file and the Node annotation schema for meshcrypt.
//!
//! Everything a node says about itself on the Kubernetes API goes through [`annotations`]; the
//! private key never leaves [`keys::PrivateKey`] and the 0600 file written by [`keystore`] (which
//! also stages rotations). [`rotation`] says when a key is due; [`mesh`] turns Nodes (and Pods)
//! into the peer set; [`aggregate`] merges pod addresses into the fewest prefixes.

pub mod aggregate;
pub mod annotations;
mod error;
pub mod keys;
pub mod keystore;
pub mod mesh;
pub mod psk;
pub mod rotation;
pub mod secret_file;
mod secret_text;

pub use annotations::{ANNOTATION_PREFIX, NodeKeyAnnotations};
pub use error::Error;
pub use keys::{PrivateKey, PublicKey};
pub use keystore::{KeyRecord, KeyStore, write_atomic, write_private};
pub use psk::PresharedKey;
pub use secret_text::SecretText;
