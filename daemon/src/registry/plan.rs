//! The registry's decisions, pure: the bundle this cluster publishes, its generation, when to
//! poll, what names are acceptable (the publish pace is in [`super::pace`]). Time is an argument.

use std::time::{Duration, Instant};

use meshcrypt_keyexchange::mesh::PeerSet;
use meshcrypt_registry::{Bundle, BundleNode};

/// The bundle of `cluster` at `generation` from its members (see
/// [`meshcrypt_keyexchange::mesh::cluster_members`]), sorted by node name.
pub fn bundle_of(cluster: &str, generation: u64, members: &PeerSet) -> Bundle {
    Bundle {
        cluster: cluster.to_owned(),
        generation,
        nodes: members
            .peers
            .values()
            .map(|p| BundleNode {
                name: p.node.clone(),
                public_key: p.public_key,
                key_epoch: p.key_epoch,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips.clone(),
            })
            .collect(),
    }
}

/// The next generation: above the last one written (by this replica or another, read back at
/// takeover) and at least the wall clock in milliseconds, so it grows across restarts and
/// failovers without any state of its own.
pub fn next_generation(last: Option<u64>, now_unix_ms: u64) -> u64 {
    last.map_or(now_unix_ms, |l| (l.saturating_add(1)).max(now_unix_ms))
}

/// When to poll a peer cluster next: `interval` from `now`, shifted by `jitter` (−1.0..=1.0) times
/// 20% of it, so the registries of many clusters do not poll in step.
pub fn next_poll(now: Instant, interval: Duration, jitter: f64) -> Instant {
    let fifth = interval.as_secs_f64() / 5.0;
    now + Duration::from_secs_f64((interval.as_secs_f64() + jitter.clamp(-1.0, 1.0) * fifth).max(0.0))
}

/// Whether `s` is a DNS label (RFC 1123): 1–63 lowercase letters, digits and `-`, starting and
/// ending with a letter or digit. Cluster ids are, since they name RemoteCluster objects and
/// secrets.
pub fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// The region of a secret-name prefix that is a partial ARN
/// (`arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME`); `None` for a plain name prefix.
pub fn arn_region(prefix: &str) -> Option<&str> {
    let mut fields = prefix.strip_prefix("arn:")?.split(':');
    let (_partition, service, region) = (fields.next()?, fields.next()?, fields.next()?);
    (service == "secretsmanager").then_some(region)
}

/// The first of `names` that Secrets Manager could mistake for a full ARN when it is read by
/// partial ARN: a name ending in a hyphen and six characters looks like the random suffix of a
/// full ARN (API reference, GetSecretValue `SecretId`; user guide, "Finding a secret from a
/// partial ARN").
pub fn partial_arn_trap(names: impl IntoIterator<Item = String>) -> Option<String> {
    names.into_iter().find(|name| name.len() >= 7 && name.as_bytes()[name.len() - 7] == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_label_table() {
        for (s, want) in [
            ("prod-a", true),
            ("a", true),
            ("0", true),
            ("", false),
            ("-a", false),
            ("a-", false),
            ("Prod", false),
            ("a.b", false),
            ("a_b", false),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
        ] {
            assert_eq!(is_dns_label(s), want, "{s:?}");
        }
    }

    #[test]
    fn partial_arns_table() {
        let arn = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:meshcrypt";
        assert_eq!(arn_region(arn), Some("eu-west-1"));
        assert_eq!(arn_region("meshcrypt"), None);
        assert_eq!(arn_region("arn:aws:s3:::bucket"), None);
        for (cluster, trap) in [
            ("prod-a", None),
            ("prod-abcde", None),
            ("prod-abcdef", Some("/prod-abcdef")),
            ("eu-west1a", Some("/eu-west1a")),
            ("prod-abcd", Some("/prod-abcd/0")),
        ] {
            let names = std::iter::once(format!("{arn}/{cluster}"))
                .chain((0..1000).map(|n| format!("{arn}/{cluster}/{n}")));
            let found = partial_arn_trap(names);
            assert_eq!(found.is_some(), trap.is_some(), "{cluster}: {found:?}");
            if let (Some(found), Some(trap)) = (found, trap) {
                assert!(found.ends_with(trap), "{cluster}: {found}");
            }
        }
    }

    #[test]
    fn next_generation_table() {
        for (last, now, want) in [
            (None, 1_000, 1_000),
            (Some(5), 1_000, 1_000),
            (Some(1_000), 1_000, 1_001),
            (Some(2_000), 1_000, 2_001),
            (Some(u64::MAX), 1_000, u64::MAX),
        ] {
            assert_eq!(next_generation(last, now), want, "{last:?} at {now}");
        }
    }

    #[test]
    fn polls_are_spread_within_a_fifth_of_the_interval() {
        let t0 = Instant::now();
        let i = Duration::from_secs(30);
        assert_eq!(next_poll(t0, i, 0.0), t0 + i);
        assert_eq!(next_poll(t0, i, 1.0), t0 + Duration::from_secs(36));
        assert_eq!(next_poll(t0, i, -1.0), t0 + Duration::from_secs(24));
        assert_eq!(next_poll(t0, i, 7.0), t0 + Duration::from_secs(36), "clamped");
    }
}
