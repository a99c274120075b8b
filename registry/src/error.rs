//! The one error type of the registry crate.

/// Everything that makes a bundle unusable, or keeps one from being sealed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle breaks a rule every reader relies on (the reason names the node and the rule).
    #[error("invalid bundle: {0}")]
    Invalid(String),
    /// The bundle or manifest could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(#[source] serde_json::Error),
    /// The manifest or the joined shards are not the format's JSON.
    #[error("malformed {what}: {source}")]
    Decode {
        /// "manifest" or "bundle".
        what: &'static str,
        /// The JSON parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A format version this reader does not know.
    #[error("format version {0}, this reader knows 1")]
    Version(u32),
    /// A node's public key is not a valid WireGuard key.
    #[error("node {node}: {source}")]
    NodeKey {
        /// The node.
        node: String,
        /// Why the key was refused (encoding, length, low order).
        #[source]
        source: meshcrypt_keyexchange::Error,
    },
    /// The manifest carries no signature.
    #[error("the manifest is not signed")]
    Unsigned,
    /// The signature does not verify with the pinned key (tampered, or signed by another key).
    #[error("the manifest's signature does not verify with the pinned key")]
    BadSignature(#[source] ed25519_dalek::SignatureError),
    /// The manifest is another cluster's than the one it was read for.
    #[error("the manifest is cluster {found}'s, expected {expected}")]
    ForeignCluster {
        /// The cluster the reader asked for.
        expected: String,
        /// The cluster the manifest names.
        found: String,
    },
    /// The generation is lower than the last one accepted: a replay or a rollback.
    #[error("generation {found} is older than {last}, the last one accepted (replay or rollback)")]
    Rollback {
        /// The last generation accepted.
        last: u64,
        /// The generation offered.
        found: u64,
    },
    /// A different number of shards than the manifest lists.
    #[error("{found} shards, the manifest lists {expected}")]
    ShardCount {
        /// What the manifest lists.
        expected: usize,
        /// What was given.
        found: usize,
    },
    /// A shard's SHA-256 is not the manifest's: it belongs to another generation (a write under
    /// way) or was altered. Read it again, or its previous version.
    #[error("shard {index} does not match the manifest (a write under way, or altered)")]
    Torn {
        /// The shard's index.
        index: usize,
    },
    /// The joined shards hold another cluster or generation than the manifest signs.
    #[error("the shards hold cluster {cluster} generation {generation}, not what the manifest signs")]
    Inconsistent {
        /// The cluster in the shards.
        cluster: String,
        /// The generation in the shards.
        generation: u64,
    },
    /// A Secrets Manager request failed (throttled, denied, unreachable, ...). The message carries
    /// the SDK error's whole chain (the service's code and message, or the connection's failure).
    #[error("secrets manager {op} {name}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(source.as_ref()))]
    SecretsManager {
        /// The API operation (`GetSecretValue`, `PutSecretValue`, ...).
        op: &'static str,
        /// The secret's name.
        name: String,
        /// The SDK's error.
        #[source]
        source: Box<aws_sdk_secretsmanager::Error>,
    },
}
