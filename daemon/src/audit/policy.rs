//! The policy an audit checks against: the longest a node key may live, whether fail-closed mode
//! is required, and how recent every peer's latest handshake must be. From a file (YAML or
//! JSON), each value replaced by its flag when given.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cli::AuditArgs;
use crate::error::AgentError;

/// The default longest key life: 90 days (a common rotation period for data-in-transit keys; set
/// your organisation's with `--max-key-age` or `maxKeyAge`).
pub const DEFAULT_MAX_KEY_AGE: &str = "90d";

/// What the audit checks against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// The longest a node key may be in use, from its creation time, in seconds.
    pub max_key_age_seconds: u64,
    /// Every node with an agent must run fail-closed (`strict: true`); when false a node with
    /// strict off is listed as an exception instead of a violation.
    pub require_strict: bool,
    /// When set, every configured peer must have completed a handshake, the oldest of them at
    /// most this many seconds before the agent's report. Unset by default: a peer no pod talks to
    /// has no reason to handshake.
    pub max_handshake_age_seconds: Option<u64>,
}

/// A policy file: every key optional; durations like `90d`, `720h`, `15m`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
    max_key_age: Option<String>,
    require_strict: Option<bool>,
    max_handshake_age: Option<String>,
}

impl Policy {
    /// The policy from `--policy FILE` (if given) with the flags given replacing its values, and
    /// the defaults (`90d`, strict required, handshakes not checked) for what neither says.
    ///
    /// # Errors
    /// [`AgentError::Io`] for an unreadable file, [`AgentError::PolicyFile`] for an unknown key
    /// or a wrong type, [`AgentError::PolicyDuration`] and [`AgentError::PolicyNotPositive`] for
    /// a duration that does not parse or is not positive.
    pub fn from_args(args: &AuditArgs) -> Result<Self, AgentError> {
        let file = match &args.policy {
            Some(path) => read_file(path)?,
            None => PolicyFile::default(),
        };
        // Each duration with where it came from, for the error that names it.
        let origin = |flag: &str, key: &str, from_flag: bool| match (&args.policy, from_flag) {
            (Some(path), false) => format!("{key} in {}", path.display()),
            _ => flag.to_owned(),
        };
        let key_age = match (&args.max_key_age, file.max_key_age) {
            (Some(text), _) => (text.clone(), origin("--max-key-age", "maxKeyAge", true)),
            (None, Some(text)) => (text, origin("--max-key-age", "maxKeyAge", false)),
            (None, None) => (DEFAULT_MAX_KEY_AGE.to_owned(), "--max-key-age".to_owned()),
        };
        let handshake_age = match (&args.max_handshake_age, file.max_handshake_age) {
            (Some(text), _) => Some((text.clone(), origin("--max-handshake-age", "maxHandshakeAge", true))),
            (None, Some(text)) => Some((text, origin("--max-handshake-age", "maxHandshakeAge", false))),
            (None, None) => None,
        };
        Ok(Self {
            max_key_age_seconds: seconds(key_age.1, &key_age.0)?,
            require_strict: args.require_strict.or(file.require_strict).unwrap_or(true),
            max_handshake_age_seconds: handshake_age.map(|(text, what)| seconds(what, &text)).transpose()?,
        })
    }
}

fn read_file(path: &Path) -> Result<PolicyFile, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::Io {
        what: format!("read the policy file {}", path.display()),
        source: e,
    })?;
    yaml_serde::from_str(&text).map_err(|source| AgentError::PolicyFile { path: path.to_owned(), source })
}

/// A duration like `90d`, `720h` or `15m` (jiff's friendly format; a day is 24 hours) in seconds.
fn seconds(what: String, text: &str) -> Result<u64, AgentError> {
    let bad = |source| AgentError::PolicyDuration { what: what.clone(), text: text.to_owned(), source };
    let span: jiff::Span = text.parse().map_err(bad)?;
    let duration = span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()).map_err(bad)?;
    match u64::try_from(duration.as_secs()) {
        Ok(0) | Err(_) => Err(AgentError::PolicyNotPositive { what: what.clone(), text: text.to_owned() }),
        Ok(secs) => Ok(secs),
    }
}

/// `seconds` in the largest of days, hours, minutes or seconds that divides it (`90d`, `36h`,
/// `15m`, `45s`): how the policy's durations are written back to people.
pub fn human(seconds: u64) -> String {
    match seconds {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `seconds` roughly, in whole days, hours, minutes or seconds, the largest that is at least one
/// (`100 days`, `3 hours`, `1 minute`): an age for people.
pub fn roughly(seconds: u64) -> String {
    let (n, unit) = match seconds {
        s if s >= 86_400 => (s / 86_400, "day"),
        s if s >= 3_600 => (s / 3_600, "hour"),
        s if s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn policy(args: &[&str]) -> Result<Policy, AgentError> {
        let cli = Cli::try_parse_from(["meshcrypt", "audit"].iter().chain(args)).expect("flags");
        let Command::Audit(args) = cli.command else { panic!("not audit") };
        Policy::from_args(&args)
    }

    #[test]
    fn roughly_table() {
        for (seconds, want) in [
            (0, "0 seconds"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "1 minute"),
            (7_199, "1 hour"),
            (8_640_123, "100 days"),
        ] {
            assert_eq!(roughly(seconds), want, "{seconds}");
        }
    }

    #[test]
    fn human_table() {
        for (seconds, want) in
            [(0, "0s"), (45, "45s"), (900, "15m"), (129_600, "36h"), (7_776_000, "90d"), (90_061, "90061s")]
        {
            assert_eq!(human(seconds), want, "{seconds}");
        }
    }

    #[test]
    fn policy_table() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, "maxKeyAge: 30d\nrequireStrict: false\nmaxHandshakeAge: 15m\n").unwrap();
        let unknown = dir.path().join("unknown.yaml");
        std::fs::write(&unknown, "maxKeyAges: 30d\n").unwrap();
        let bad_duration = dir.path().join("bad.yaml");
        std::fs::write(&bad_duration, "maxKeyAge: \"90\"\n").unwrap();
        let (file, unknown, bad_duration) =
            (file.to_str().unwrap(), unknown.to_str().unwrap(), bad_duration.to_str().unwrap());
        let day = 86_400;
        // (flags, Ok((max key age, strict required, max handshake age)) or Err(what it names))
        type Want = Result<(u64, bool, Option<u64>), &'static str>;
        let cases: Vec<(Vec<&str>, Want)> = vec![
            (vec![], Ok((90 * day, true, None))),
            (vec!["--max-key-age", "720h", "--max-handshake-age", "10m"], Ok((30 * day, true, Some(600)))),
            (vec!["--policy", file], Ok((30 * day, false, Some(900)))),
            (
                vec!["--policy", file, "--max-key-age", "7d", "--require-strict", "true"],
                Ok((7 * day, true, Some(900))),
            ),
            (vec!["--policy", unknown], Err("unknown field `maxKeyAges`")),
            (vec!["--policy", "/nonexistent/policy.yaml"], Err("read the policy file")),
            (vec!["--max-key-age", "soon"], Err("--max-key-age \"soon\": want a duration in days")),
            (vec!["--max-key-age", "1y"], Err("no months or years: write 365d")),
            (vec!["--max-key-age", "0d"], Err("--max-key-age \"0d\": want a positive")),
            (vec!["--max-handshake-age=-5m"], Err("--max-handshake-age \"-5m\": want a positive")),
            (vec!["--policy", bad_duration], Err("maxKeyAge in")),
        ];
        for (flags, want) in cases {
            let got = policy(&flags);
            match (got, want) {
                (Ok(p), Ok(w)) => {
                    assert_eq!(
                        (p.max_key_age_seconds, p.require_strict, p.max_handshake_age_seconds),
                        w,
                        "{flags:?}"
                    )
                }
                (Err(e), Err(named)) => {
                    let chain: Vec<String> =
                        std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                            .map(ToString::to_string)
                            .collect();
                    assert!(chain.join(": ").contains(named), "{flags:?}: {chain:?}");
                }
                (got, want) => panic!("{flags:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
