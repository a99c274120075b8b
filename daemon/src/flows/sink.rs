//! Where flow records go: a file for the node's log shipper, replaced by a fresh one when it grows
//! past a size (the old one kept as `<path>.1`, which Fluent Bit's `tail` input follows), or stdout.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// A destination for JSON lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// The process's standard output.
    Stdout,
    /// A file, opened for appending at each write (created 0640 with its directory); once it is
    /// larger than `max_bytes` it is renamed to `<path>.1` (replacing the previous one) first.
    File {
        /// The file.
        path: PathBuf,
        /// The size at which it is rotated.
        max_bytes: u64,
    },
}

impl Sink {
    /// `-` is stdout; anything else a file.
    pub fn new(path: &Path, max_bytes: u64) -> Self {
        if path == Path::new("-") { Sink::Stdout } else { Sink::File { path: path.to_owned(), max_bytes } }
    }

    /// Writes `lines`, each followed by a newline, in one write. Errors are the file system's.
    pub fn write(&self, lines: &[String]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()
            }
            Sink::File { path, max_bytes } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                match std::fs::metadata(path) {
                    Ok(meta) if meta.len() > *max_bytes => {
                        let mut rotated = path.clone().into_os_string();
                        rotated.push(".1");
                        std::fs::rename(path, rotated)?;
                    }
                    _ => {}
                }
                let mut file = OpenOptions::new().create(true).append(true).mode(0o640).open(path)?;
                file.write_all(text.as_bytes())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_appended_to_and_rotated_past_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/flows.log");
        let sink = Sink::new(&path, 19);
        sink.write(&["a".repeat(15)]).unwrap();
        sink.write(&["b".repeat(3)]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\nbbb\n", "a".repeat(15)));
        sink.write(&["c".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\n", "rotated: past 19 bytes");
        let old = std::fs::read_to_string(dir.path().join("sub/flows.log.1")).unwrap();
        assert!(old.ends_with("bbb\n"));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(Sink::new(Path::new("-"), 1), Sink::Stdout);
    }
}
