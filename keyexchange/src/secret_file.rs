//! Reading a small secret file (a node key, a pre-shared key, a signing key) into one buffer that
//! is allocated once and zeroized when dropped: `read_to_end` and `read_to_string` grow their
//! buffer when the file is longer than they guessed, and a grown `Vec` frees the old buffer, key
//! bytes included, without zeroing it.

use std::io::{self, Read};

use zeroize::Zeroizing;

/// All of `source`, at most `max` bytes, in a buffer of `max + 1` bytes allocated once (it never
/// grows) and zeroized, spare capacity included, when dropped.
///
/// # Errors
/// The reader's errors (an interrupted read is retried); `InvalidData` when `source` holds more
/// than `max` bytes (what was read is zeroized with the buffer).
pub fn read_secret(source: &mut impl Read, max: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(vec![0u8; max + 1]);
    let mut filled = 0;
    loop {
        match source.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if filled > max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("longer than {max} bytes"),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Truncating keeps the allocation; `Zeroizing` zeroes the whole capacity on drop.
    buffer.truncate(filled);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes a few at a time, like a slow pipe.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.1.min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn read_secret_table() {
        // (case, content, max, chunk, Ok(content) or Err)
        let long = "k".repeat(65);
        let cases: Vec<(&str, &str, usize, usize, bool)> = vec![
            ("empty", "", 64, 8, true),
            ("in one read", "secret\n", 64, 64, true),
            ("a byte at a time", "secret\n", 64, 1, true),
            ("exactly max", &long[..64], 64, 7, true),
            ("one byte over max", &long, 64, 7, false),
        ];
        for (case, content, max, chunk, ok) in cases {
            let got = read_secret(&mut Trickle(content.as_bytes(), chunk), max);
            match got {
                Ok(bytes) => {
                    assert!(ok, "{case}: read");
                    assert_eq!(bytes.as_slice(), content.as_bytes(), "{case}");
                    assert_eq!(bytes.capacity(), max + 1, "{case}: the one buffer, never grown");
                }
                Err(e) => {
                    assert!(!ok, "{case}: {e}");
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{case}");
                }
            }
        }
    }
}
