//! WireGuard's optional pre-shared key (the `psk` mixed into every handshake of one peer pair, a
//! hedge against a future quantum computer recording today's x25519 exchanges): zeroized on drop,
//! never printed, compared and reported by fingerprint.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;
use crate::keys::decode_key;

/// A pre-shared key: 32 bytes, zeroized on drop, redacted in `Debug`, no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey(Zeroizing<[u8; 32]>);

impl PresharedKey {
    /// Wraps 32 raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// True for the all-zero key, which UAPI uses to mean "no pre-shared key".
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// A fingerprint that tells two keys apart without revealing either: `sha256:` and the first
    /// 16 hex digits of the SHA-256 of the key bytes.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_slice());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

/// Parses WireGuard's form (`wg genpsk`): 44 characters of canonical base64, 32 bytes, not all
/// zero (which would mean "none").
impl FromStr for PresharedKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bytes = decode_key(text)?;
        let key = Self(bytes);
        if key.is_zero() {
            return Err(Error::KeyEncoding("the all-zero pre-shared key means none".into()));
        }
        Ok(key)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wireguards_form_and_never_prints_the_key() {
        let text = "m2Y0vhN3v3wYbVKkP0oHwM2vQyLq6ZQq9x8wq0mE4WU=";
        let key: PresharedKey = text.parse().unwrap();
        assert_eq!(format!("{key:?}"), "PresharedKey(<redacted>)");
        assert!(!format!("{key:?}").contains(&text[..8]));
        assert_eq!(key.fingerprint(), key.clone().fingerprint());
        assert_ne!(key.fingerprint(), PresharedKey::from_bytes([7; 32]).fingerprint());
        for bad in ["", "short", &format!(" {text}"), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="] {
            assert!(bad.parse::<PresharedKey>().is_err(), "{bad:?}");
        }
    }
}
