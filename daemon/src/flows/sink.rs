//! Where flow records go: a file for the node's log shipper, replaced by a fresh one when it grows
//! past a size (the old one kept as `<path>.1`, which Fluent Bit's `tail` input follows), stdout,
//! or CloudWatch Logs directly.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use crate::error::AgentError;

/// The `--flow-log` prefix that names a CloudWatch Logs group.
pub const CLOUDWATCH_PREFIX: &str = "cloudwatch-logs:";

/// A destination for JSON lines.
#[derive(Debug)]
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
    /// This node's stream in a CloudWatch Logs group.
    CloudWatch(super::cloudwatch::CloudWatch),
}

impl Sink {
    /// `-` is stdout; `cloudwatch-logs:GROUP` the stream `node` of that log group (the AWS SDK's
    /// default credentials and region unless `region` or, in tests, `endpoint` say otherwise);
    /// anything else a file.
    pub async fn open(
        arg: &Path,
        max_bytes: u64,
        node: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
    ) -> Result<Self, AgentError> {
        match arg.to_str().and_then(|a| a.strip_prefix(CLOUDWATCH_PREFIX)) {
            Some(group) => {
                let config = crate::aws::sdk_config(region, endpoint).await?;
                let client = aws_sdk_cloudwatchlogs::Client::new(&config);
                Ok(Sink::CloudWatch(super::cloudwatch::CloudWatch::new(
                    client,
                    group.to_owned(),
                    node.to_owned(),
                )))
            }
            None => Ok(Self::local(arg, max_bytes)),
        }
    }

    /// `-` is stdout; anything else a file.
    fn local(path: &Path, max_bytes: u64) -> Self {
        if path == Path::new("-") { Sink::Stdout } else { Sink::File { path: path.to_owned(), max_bytes } }
    }

    /// Writes `lines`: to a file or stdout each followed by a newline, in one write; to CloudWatch
    /// Logs as events stamped now.
    pub async fn write(&self, lines: &[String]) -> Result<(), AgentError> {
        if lines.is_empty() {
            return Ok(());
        }
        if let Sink::CloudWatch(stream) = self {
            return stream.put(lines, jiff::Timestamp::now().as_millisecond()).await;
        }
        let io = |source: io::Error| AgentError::Io { what: format!("write flow records to {self}"), source };
        self.write_local(lines).map_err(io)
    }

    fn write_local(&self, lines: &[String]) -> io::Result<()> {
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
            Sink::CloudWatch(_) => Ok(()),
        }
    }
}

impl std::fmt::Display for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Stdout => f.write_str("stdout"),
            Sink::File { path, .. } => write!(f, "{}", path.display()),
            Sink::CloudWatch(stream) => write!(f, "{CLOUDWATCH_PREFIX}{}", stream.group()),
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
        let sink = Sink::local(&path, 19);
        sink.write_local(&["a".repeat(15)]).unwrap();
        sink.write_local(&["b".repeat(3)]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\nbbb\n", "a".repeat(15)));
        sink.write_local(&["c".into()]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\n", "rotated: past 19 bytes");
        let old = std::fs::read_to_string(dir.path().join("sub/flows.log.1")).unwrap();
        assert!(old.ends_with("bbb\n"));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(matches!(Sink::local(Path::new("-"), 1), Sink::Stdout));
    }
}
