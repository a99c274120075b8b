//! Reading UAPI lines from a client without leaving key material behind: `set=1` carries
//! `private_key=` and `preshared_key=` in hex. A `BufReader` frees its buffer unzeroed and a
//! growing `String` frees each outgrown buffer unzeroed; this reader's buffer is fixed and zeroed
//! when dropped, and lines go into a [`SecretText`].

use std::io::{self, Read};

use meshcrypt_keyexchange::SecretText;
use zeroize::Zeroizing;

/// The longest line accepted (bytes, `\n` included): the longest UAPI line is a 64-hex-digit key
/// with its name, or an IPv6 endpoint or prefix, well under this.
pub const LINE_MAX: usize = 1024;

/// The read buffer's size.
const BUFFER: usize = 4096;

/// A line reader over `R` whose buffer never grows and is zeroed when dropped.
pub struct SecretLines<R> {
    inner: R,
    buf: Zeroizing<Vec<u8>>,
    start: usize,
    end: usize,
}

impl<R: Read> SecretLines<R> {
    /// Reads from `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, buf: Zeroizing::new(vec![0; BUFFER]), start: 0, end: 0 }
    }

    /// Appends the next line, `\n` included, to `out`; returns its length (0 at the end of the
    /// stream). A line longer than [`LINE_MAX`] or not ASCII is an `InvalidData` error.
    pub fn read_line(&mut self, out: &mut SecretText) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
                self.end = match self.inner.read(&mut self.buf)? {
                    0 => return Ok(taken),
                    n => n,
                };
            }
            let chunk = &self.buf[self.start..self.end];
            let (line, done) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (&chunk[..=i], true),
                None => (chunk, false),
            };
            if taken + line.len() > LINE_MAX || !line.is_ascii() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "UAPI line too long or not ASCII"));
            }
            // ASCII is UTF-8.
            out.push_str(
                std::str::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            );
            taken += line.len();
            self.start += line.len();
            if done {
                return Ok(taken);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_reads_the_end_and_the_limits() {
        let long = format!("private_key={}\n", "ab".repeat(32));
        let input = format!("set=1\n{long}listen_port=51820\n\nlast");
        let mut r = SecretLines::new(input.as_bytes());
        let mut got = Vec::new();
        loop {
            let mut line = SecretText::default();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
            got.push(line.as_str().to_owned());
        }
        assert_eq!(got, ["set=1\n", long.as_str(), "listen_port=51820\n", "\n", "last"]);

        let too_long = "x".repeat(LINE_MAX + 1);
        let err = SecretLines::new(too_long.as_bytes()).read_line(&mut SecretText::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let exactly = format!("{}\n", "x".repeat(LINE_MAX - 1));
        assert_eq!(
            SecretLines::new(exactly.as_bytes()).read_line(&mut SecretText::default()).unwrap(),
            LINE_MAX
        );
        let err = SecretLines::new("é\n".as_bytes()).read_line(&mut SecretText::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
