//! The one error type of the keyexchange crate.

use std::path::PathBuf;

/// Everything that can go wrong with keys, the key file and the annotation schema.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key is not valid standard base64 (WireGuard's form: 44 characters, padded).
    #[error("key is not canonical base64: {0}")]
    KeyEncoding(String),
    /// A key decoded to a number of bytes other than 32.
    #[error("key has {0} bytes, want 32")]
    KeyLength(usize),
    /// A public key is the all-zero point or another point of small order, which would give a
    /// predictable shared secret.
    #[error("public key is a low-order point and cannot be used")]
    LowOrderKey,
    /// Reading or writing the key file (or its directory) failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error, errno included.
        source: std::io::Error,
    },
    /// The key file or state directory can be read or written by group or others, or is not a
    /// regular file / directory; meshcrypt refuses to use it rather than trust a key others saw.
    #[error(
        "{path} has mode {mode:o}: must not be accessible to group or others (want 0600 files in a 0700 directory)"
    )]
    InsecurePermissions {
        /// The offending path.
        path: PathBuf,
        /// The permission bits found.
        mode: u32,
    },
    /// A `meshcrypt.dev/` annotation on a Node has a value the schema does not allow.
    #[error("annotation {key}: {reason}")]
    Annotation {
        /// The full annotation key.
        key: String,
        /// Why the value was rejected.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    pub(crate) fn annotation(key: &str, reason: impl Into<String>) -> Self {
        Self::Annotation { key: key.to_owned(), reason: reason.into() }
    }
}
