//! The node's x25519 key pair in WireGuard's form: a zeroizing private key that never prints, and a
//! validated public key.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use curve25519_dalek::montgomery::MontgomeryPoint;
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::Error;

/// A node's WireGuard private key. Generated from the OS RNG, zeroized on drop, and redacted in
/// `Debug`; it has no `Display` and no `Clone`, so it cannot be printed or copied by accident.
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// Generates a fresh key from the operating system's random number generator.
    pub fn generate() -> Self {
        Self(StaticSecret::random_from_rng(OsRng))
    }

    /// The public half, as published on the Node.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The key in WireGuard's base64 form, in a buffer that is zeroized when dropped. Only the key
    /// file and the WireGuard device configuration may ask for it.
    pub fn to_base64(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.0.to_bytes());
        Zeroizing::new(STANDARD.encode(bytes.as_slice()))
    }

    /// The raw 32 bytes, zeroized when dropped, for handing to a WireGuard implementation.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The key with these 32 bytes (x25519 clamps them when it uses them, as WireGuard does).
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(StaticSecret::from(*bytes))
    }

    /// Parses a key from WireGuard's base64 form (as written by [`PrivateKey::to_base64`]).
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        Ok(Self::from_bytes(decode_key(text)?))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

/// A peer's WireGuard public key: 32 bytes, never a low-order point. Displays and parses in
/// WireGuard's base64 form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Accepts 32 raw bytes, rejecting the all-zero point and the other points of small order.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, Error> {
        // X25519 clamps every scalar to a multiple of the cofactor 8, so it yields an all-zero
        // shared secret exactly for the points P (on the curve or its twist) with 8·P = O. Four
        // steps of the Montgomery ladder compute 8·P: about 1/60 of a full Diffie-Hellman.
        let eight_p = MontgomeryPoint(bytes).mul_bits_be([true, false, false, false].into_iter());
        if eight_p.to_bytes() == [0u8; 32] {
            return Err(Error::LowOrderKey);
        }
        Ok(Self(bytes))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A short, stable fingerprint for inventories and logs: `sha256:` and the first 16 hex digits
    /// of the SHA-256 of the key bytes.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        Self::from_bytes(*decode_key(text)?)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

/// Serializes in WireGuard's base64 form, as the annotations and `wg` write it.
impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Parses WireGuard's base64 form, refusing what [`PublicKey::from_str`] refuses (the error names
/// why).
impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Decodes WireGuard's key form strictly: 44 characters of canonical, padded standard base64
/// holding exactly 32 bytes. Anything else (whitespace, URL-safe alphabet, non-canonical trailing
/// bits) is refused, so one key has one spelling.
pub(crate) fn decode_key(text: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
    if text.len() != 44 {
        return Err(match STANDARD.decode(text) {
            // Zeroized: a key one character short is still most of a key.
            Ok(bytes) => Error::KeyLength(Zeroizing::new(bytes).len()),
            Err(e) => Error::KeyEncoding(e.to_string()),
        });
    }
    let decoded = Zeroizing::new(STANDARD.decode(text).map_err(|e| Error::KeyEncoding(e.to_string()))?);
    let mut bytes = Zeroizing::new([0u8; 32]);
    if decoded.len() != bytes.len() {
        return Err(Error::KeyLength(decoded.len()));
    }
    bytes.copy_from_slice(&decoded);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn public_key_parse_table() {
        let valid = PrivateKey::generate().public_key().to_string();
        let zero = STANDARD.encode([0u8; 32]);
        // x = 1 is a point of order 4 on Curve25519.
        let mut one = [0u8; 32];
        one[0] = 1;
        let order4 = STANDARD.encode(one);
        let cases: Vec<(String, bool)> = vec![
            (valid.clone(), true),
            (zero, false),
            (order4, false),
            (String::new(), false),
            (valid[..43].to_owned(), false),
            (format!("{valid}="), false),
            (format!(" {}", &valid[1..]), false),
            (valid.replace('+', "-").replace('/', "_"), !valid.contains(['+', '/'])),
            (STANDARD.encode([7u8; 31]), false),
            (STANDARD.encode([7u8; 33]), false),
            ("!".repeat(44), false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<PublicKey>().is_ok(), ok, "input {input:?}");
        }
    }

    /// u-coordinates of small order (libsodium's list) and their non-canonical (+p, high-bit)
    /// spellings, for the property test.
    const SMALL_ORDER: [[u8; 32]; 8] = {
        let mut p_minus_1 = [0xff; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        let mut p = p_minus_1;
        p[0] = 0xed;
        let mut p_plus_1 = p_minus_1;
        p_plus_1[0] = 0xee;
        let mut one_high = [0u8; 32];
        one_high[0] = 1;
        one_high[31] = 0x80;
        let mut one = [0u8; 32];
        one[0] = 1;
        [
            [0u8; 32],
            one,
            [
                0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
                0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
                0xb8, 0x00,
            ],
            [
                0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
                0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
                0x11, 0x57,
            ],
            p_minus_1,
            p,
            p_plus_1,
            one_high,
        ]
    };

    #[test]
    fn every_known_small_order_point_is_refused() {
        for bytes in SMALL_ORDER {
            assert!(matches!(PublicKey::from_bytes(bytes), Err(Error::LowOrderKey)), "{bytes:02x?}");
        }
    }

    #[test]
    fn non_canonical_trailing_bits_are_refused() {
        let valid = PrivateKey::generate().public_key().to_string();
        // The 43rd character carries 4 unused low bits; flipping one keeps the length and bytes
        // decodable by a lenient decoder but must be refused here.
        let mut chars: Vec<char> = valid.chars().collect();
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let idx = alphabet.find(chars[42]).unwrap();
        chars[42] = alphabet.as_bytes()[idx ^ 1] as char;
        let tampered: String = chars.into_iter().collect();
        assert!(tampered.parse::<PublicKey>().is_err());
    }

    #[test]
    fn private_key_debug_is_redacted() {
        let key = PrivateKey::generate();
        let debug = format!("{key:?}");
        assert_eq!(debug, "PrivateKey(<redacted>)");
        assert!(!debug.contains(key.to_base64().as_str()));
    }

    #[test]
    fn private_key_round_trips_and_derives_the_same_public_key() {
        let key = PrivateKey::generate();
        let again = PrivateKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        assert_ne!(key.public_key(), PrivateKey::generate().public_key());
    }

    #[test]
    fn fingerprint_is_stable_and_distinct() {
        let a = PrivateKey::generate().public_key();
        let b = PrivateKey::generate().public_key();
        assert_eq!(a.fingerprint(), a.fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), "sha256:".len() + 16);
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,64}") {
            let _ = text.parse::<PublicKey>();
            let _ = PrivateKey::from_base64(&text);
        }

        /// The small-order check agrees with the definition: a Diffie-Hellman with such a point is
        /// all zeros. Random bytes, and random bytes forced onto each known small-order u.
        #[test]
        fn small_order_check_matches_diffie_hellman(bytes in any::<[u8; 32]>(), pick in 0usize..8, force in any::<bool>()) {
            let mut bytes = bytes;
            if force {
                bytes = SMALL_ORDER[pick];
            }
            let shared = StaticSecret::from([0x5a; 32]).diffie_hellman(&x25519_dalek::PublicKey::from(bytes));
            prop_assert_eq!(PublicKey::from_bytes(bytes).is_ok(), shared.was_contributory());
        }

        #[test]
        fn public_keys_round_trip(bytes in any::<[u8; 32]>()) {
            if let Ok(key) = PublicKey::from_bytes(bytes) {
                prop_assert_eq!(key.to_string().parse::<PublicKey>().unwrap(), key);
            }
        }
    }
}
