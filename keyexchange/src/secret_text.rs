//! Text that holds key material (a key file's contents, a UAPI message with `private_key=` or
//! `preshared_key=`), grown without leaving copies behind: a `String` that outgrows its buffer
//! reallocates and frees the old buffer as it is, key bytes included, even inside a `Zeroizing`
//! (which zeroes only the final buffer). [`SecretText`] moves to a bigger buffer itself, zeroing the
//! old one, and is zeroed when dropped.

use std::fmt;

use zeroize::{Zeroize as _, Zeroizing};

/// A growable string for secrets: every buffer it ever used is zeroed before it is freed.
#[derive(Default)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// Empty, with room for `capacity` bytes before the first move.
    pub fn with_capacity(capacity: usize) -> Self {
        Self(Zeroizing::new(String::with_capacity(capacity)))
    }

    /// Appends `s`, moving to a buffer twice as big (the old one zeroed) when it does not fit.
    pub fn push_str(&mut self, s: &str) {
        let needed = self.0.len() + s.len();
        if needed > self.0.capacity() {
            let mut bigger = String::with_capacity(needed.max(self.0.capacity() * 2).max(64));
            bigger.push_str(&self.0);
            // The old buffer is zeroed by `Zeroizing` when replaced.
            self.0 = Zeroizing::new(bigger);
        }
        self.0.push_str(s);
    }

    /// Appends `bytes` in lower-case hex (as UAPI writes keys), with no intermediate string.
    pub fn push_hex(&mut self, bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for b in bytes {
            let pair = [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]];
            // Two ASCII digits: always valid UTF-8.
            self.push_str(std::str::from_utf8(&pair).unwrap_or_default());
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Empties it, zeroing what it held (the buffer is kept).
    pub fn clear(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Write for SecretText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretText({} bytes, redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn grows_past_its_capacity_and_keeps_the_text() {
        let mut t = SecretText::with_capacity(4);
        t.push_str("private_key=");
        t.push_hex(&[0x00, 0xab, 0xff]);
        let _ = writeln!(t, " epoch={}", 7);
        assert_eq!(t.as_str(), "private_key=00abff epoch=7\n");
        assert!(format!("{t:?}").contains("redacted") && !format!("{t:?}").contains("ab"));
        t.clear();
        assert!(t.is_empty());
    }
}
