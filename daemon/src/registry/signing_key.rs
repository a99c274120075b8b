//! This cluster's Ed25519 signing key: a 0600 file holding the base64 seed, made once with
//! `meshcrypt signing-key --out FILE` (which prints the public half peers pin) and given to every
//! registry replica (a Kubernetes Secret). The registry never makes one itself: two replicas must
//! sign with the same key.

use std::io::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use meshcrypt_keyexchange::secret_file::read_secret;

use crate::error::AgentError;

/// The longest signing key file read: the seed's base64 is 44 bytes and a newline.
const MAX_FILE: usize = 256;

/// Reads the key in `path`: a file (or a link to one, as a mounted Secret is) that others may not
/// read and the group may at most read (a Secret mounted with `fsGroup` is 0440), holding the
/// base64 of the 32-byte seed.
pub fn load(path: &Path) -> Result<SigningKey, AgentError> {
    use std::os::unix::fs::PermissionsExt as _;
    let invalid = |reason: String| AgentError::SigningKey { path: path.to_owned(), reason };
    let bytes = std::fs::File::open(path).and_then(|mut f| read_secret(&mut f, MAX_FILE)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            invalid(
                "missing: make one with `meshcrypt signing-key --out FILE` and give it to every replica"
                    .into(),
            )
        } else {
            AgentError::Io { what: format!("read {}", path.display()), source: e }
        }
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid("not UTF-8 text".into()))?;
    let mode = std::fs::metadata(path)
        .map_err(|source| AgentError::Io { what: format!("stat {}", path.display()), source })?
        .permissions()
        .mode();
    if mode & 0o027 != 0 {
        return Err(invalid(format!(
            "mode {:o}: others may not read it, nor the group write it",
            mode & 0o777
        )));
    }
    let seed = Zeroizing::new(STANDARD.decode(text.trim()).map_err(|e| invalid(e.to_string()))?);
    let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| invalid("not 32 bytes".into()))?;
    Ok(SigningKey::from_bytes(seed))
}

/// `meshcrypt signing-key --out FILE`: makes a new key in `out` (0600, never over an existing
/// file) and prints its public half, base64, for the peer clusters' `--peer NAME=KEY`.
pub fn create(out: &Path) -> Result<(), AgentError> {
    if out.exists() {
        return Err(AgentError::SigningKey { path: out.to_owned(), reason: "exists: not replaced".into() });
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let encoded = Zeroizing::new(STANDARD.encode(key.to_bytes()));
    meshcrypt_keyexchange::write_private(dir, out, encoded.as_bytes())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", STANDARD.encode(key.verifying_key().as_bytes()))
        .map_err(|source| AgentError::Io { what: "write to stdout".into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_key_loads_and_an_exposed_or_missing_one_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        assert!(matches!(load(&path), Err(AgentError::SigningKey { .. })), "missing");
        create(&path).unwrap();
        assert!(matches!(create(&path), Err(AgentError::SigningKey { .. })), "never replaced");
        let key = load(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&path), Err(AgentError::SigningKey { .. })), "readable by others");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        assert!(matches!(load(&path), Err(AgentError::SigningKey { .. })), "writable by the group");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o440)).unwrap();
        assert!(load(&path).is_ok(), "a Secret mounted with fsGroup");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load(&path).unwrap().to_bytes(), key.to_bytes());
    }
}
