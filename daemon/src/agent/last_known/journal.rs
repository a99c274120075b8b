//! The last known peer set's file as a journal (format v2): the whole snapshot once, then what
//! each later save changed, appended as one line and flushed. A save that changes one peer of
//! 5,000 writes that peer, not the megabyte of the others, and is as durable at once as a
//! rewrite. Each line carries the SHA-256 of the previous line's digest and its own text, so a
//! line edited, dropped or moved refuses the file; a last line without its newline (an append cut
//! short by a crash) is left out, and the file reads as it was before that save. When the lines
//! appended outweigh the snapshot, or the settings change, the next save rewrites the file whole.
//!
//! ```text
//! meshcrypt last-known v2 sha256=<hex SHA-256 of the snapshot line>
//! <the snapshot: LastKnown as JSON>
//! <hex SHA-256 of (the previous digest, this line's JSON and its newline)> <a Change as JSON>
//! ...
//! ```

use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{LastKnown, Refused, SavedPeer};

/// The first line's prefix; the line ends with the SHA-256 of the snapshot line, in hex.
pub const HEADER: &str = "meshcrypt last-known v2 sha256=";

/// Where the file's chain of digests ends, and how much it holds: what the next save appends to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The digest of the last line.
    digest: [u8; 32],
    /// The snapshot line's length in bytes.
    snapshot: usize,
    /// The bytes appended since.
    appended: usize,
}

/// How a save writes the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Replace it with this text (atomically).
    Whole(String),
    /// Append this line (one `write(2)`, then `fdatasync(2)`).
    Append(String),
}

/// What one save changed of the snapshot before it. Settings are not among it: a change of
/// settings rewrites the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Change {
    /// When it was saved.
    saved: jiff::Timestamp,
    /// This node's pod prefixes, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    local_prefixes: Option<Vec<IpNet>>,
    /// Node addresses gone (one occurrence each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    node_ips_removed: Vec<IpAddr>,
    /// Node addresses new.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    node_ips_added: Vec<IpAddr>,
    /// Peers gone, by node name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    peers_removed: Vec<String>,
    /// Peers new or changed, whole.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    peers_set: Vec<SavedPeer>,
}

impl Change {
    /// What changed from `last` to `next`; `None` when a setting did (the node, port, MTU,
    /// strictness, host encryption, pod networks). Both hold their peers sorted by node name and
    /// their node addresses sorted ([`LastKnown::of`]).
    fn between(last: &LastKnown, next: &LastKnown) -> Option<Self> {
        fn settings(l: &LastKnown) -> (&str, u16, u32, bool, bool, &[IpNet]) {
            (&l.node, l.port, l.mtu, l.strict, l.host_encryption, &l.pod_networks)
        }
        if settings(last) != settings(next) {
            return None;
        }
        let (node_ips_removed, node_ips_added) =
            sorted_difference(&last.node_ips, &next.node_ips, |a, b| a.cmp(b));
        let (removed, set) =
            sorted_difference(&last.peers, &next.peers, |a, b| a.node.cmp(&b.node).then(a.cmp(b)));
        // A changed peer is among both: removed by name only if it is not set again.
        let peers_set: Vec<SavedPeer> = set.into_iter().cloned().collect();
        let peers_removed = removed
            .into_iter()
            .filter(|p| peers_set.binary_search_by(|s| s.node.cmp(&p.node)).is_err())
            .map(|p| p.node.clone())
            .collect();
        Some(Self {
            saved: next.saved,
            local_prefixes: (last.local_prefixes != next.local_prefixes).then(|| next.local_prefixes.clone()),
            node_ips_removed: node_ips_removed.into_iter().copied().collect(),
            node_ips_added: node_ips_added.into_iter().copied().collect(),
            peers_removed,
            peers_set,
        })
    }

    /// `to` with the change made.
    fn apply(self, to: &mut LastKnown) {
        to.saved = self.saved;
        if let Some(prefixes) = self.local_prefixes {
            to.local_prefixes = prefixes;
        }
        for ip in self.node_ips_removed {
            if let Ok(at) = to.node_ips.binary_search(&ip) {
                to.node_ips.remove(at);
            }
        }
        for ip in self.node_ips_added {
            let at = to.node_ips.binary_search(&ip).unwrap_or_else(|at| at);
            to.node_ips.insert(at, ip);
        }
        for node in self.peers_removed {
            if let Ok(at) = to.peers.binary_search_by(|p| p.node.as_str().cmp(&node)) {
                to.peers.remove(at);
            }
        }
        for peer in self.peers_set {
            match to.peers.binary_search_by(|p| p.node.cmp(&peer.node)) {
                Ok(at) => to.peers[at] = peer,
                Err(at) => to.peers.insert(at, peer),
            }
        }
    }
}

/// The items of sorted `a` missing from sorted `b`, and those of `b` missing from `a`, each
/// counted once per occurrence (`cmp` orders both).
fn sorted_difference<'a, T>(
    a: &'a [T],
    b: &'a [T],
    cmp: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> (Vec<&'a T>, Vec<&'a T>) {
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match cmp(&a[i], &b[j]) {
            std::cmp::Ordering::Less => {
                only_a.push(&a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                only_b.push(&b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    only_a.extend(&a[i..]);
    only_b.extend(&b[j..]);
    (only_a, only_b)
}

/// How to save `next`, `last` being what the file holds and where its chain ends (`None`: the
/// file's contents are not known, as after a start or a failed write), and where the chain ends
/// after the write. Appends the change unless a setting changed or the lines appended would then
/// outweigh the snapshot.
pub fn write_for(last: Option<(&LastKnown, &End)>, next: &LastKnown) -> (Write, End) {
    if let Some((last, end)) = last
        && let Some(change) = Change::between(last, next)
    {
        let json = serde_json::to_string(&change).expect("plain data serializes");
        let digest = chained(&end.digest, &json);
        let line = format!("{} {json}\n", hex::encode(digest));
        if end.appended + line.len() <= end.snapshot {
            let end = End { digest, snapshot: end.snapshot, appended: end.appended + line.len() };
            return (Write::Append(line), end);
        }
    }
    let mut snapshot = serde_json::to_string(next).expect("plain data serializes");
    snapshot.push('\n');
    let digest: [u8; 32] = Sha256::digest(&snapshot).into();
    let end = End { digest, snapshot: snapshot.len(), appended: 0 };
    let header = format!("{HEADER}{}\n", hex::encode(digest));
    snapshot.insert_str(0, &header);
    (Write::Whole(snapshot), end)
}

/// The digest following `previous` for the line holding `json`.
fn chained(previous: &[u8; 32], json: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(json);
    hasher.update("\n");
    hasher.finalize().into()
}

/// Appends `line` to the file at `path` (never creating it, never through a symlink) and flushes
/// it to the disk.
pub fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().append(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// Reads what follows the header line: the snapshot, checked against `digest` (hex), and the
/// changes after it, each checked against the chain.
pub fn decode(digest: &str, body: &str) -> Result<LastKnown, Refused> {
    let (snapshot, mut rest) = body.split_once('\n').ok_or(Refused::Digest)?;
    let mut chain: [u8; 32] = Sha256::digest(format!("{snapshot}\n")).into();
    if hex::encode(chain) != digest {
        return Err(Refused::Digest);
    }
    let mut saved: LastKnown = serde_json::from_str(snapshot).map_err(Refused::Malformed)?;
    // A last line without its newline is an append cut short: the save before it stands.
    while let Some((line, next)) = rest.split_once('\n') {
        let (digest, json) = line.split_once(' ').ok_or(Refused::Digest)?;
        chain = chained(&chain, json);
        if hex::encode(chain) != digest {
            return Err(Refused::Digest);
        }
        let change: Change = serde_json::from_str(json).map_err(Refused::Malformed)?;
        change.apply(&mut saved);
        rest = next;
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_dataplane::PrivateKey;

    fn peer(node: &str, last: u8) -> SavedPeer {
        SavedPeer {
            node: node.into(),
            public_key: PrivateKey::generate().public_key(),
            key_epoch: 1,
            endpoint: format!("198.18.0.{last}:51820").parse().unwrap(),
            allowed_ips: vec![format!("10.244.{last}.0/24").parse().unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn first() -> LastKnown {
        LastKnown {
            node: "node-0".into(),
            saved: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
            port: 51820,
            mtu: 1440,
            strict: true,
            host_encryption: false,
            pod_networks: vec!["10.244.0.0/16".parse().unwrap()],
            node_ips: vec![ip("198.18.0.10"), ip("198.18.0.11"), ip("198.18.0.12")],
            local_prefixes: vec!["10.244.0.0/24".parse().unwrap()],
            peers: (1..=40).map(|i| peer(&format!("node-{i:02}"), i)).collect(),
        }
    }

    /// `file` after writing `write`.
    fn written(file: &mut String, write: Write) -> &'static str {
        match write {
            Write::Whole(text) => {
                *file = text;
                "whole"
            }
            Write::Append(line) => {
                file.push_str(&line);
                "append"
            }
        }
    }

    /// Saves in turn, each the one before with a change made: how each is written (a change of
    /// peers, addresses or prefixes appended, a change of settings or an outweighing journal
    /// whole), and that the file then reads as the snapshot saved.
    #[test]
    fn each_save_appends_its_change_and_the_file_reads_as_the_last_saved() {
        type Edit = fn(&mut LastKnown);
        let steps: Vec<(&str, Edit, &str)> = vec![
            ("the first save", |_| {}, "whole"),
            ("a peer joins", |l| l.peers.push(peer("node-99", 99)), "append"),
            ("a peer leaves", |l| drop(l.peers.remove(0)), "append"),
            (
                "a peer's key changes",
                |l| l.peers[3].public_key = PrivateKey::generate().public_key(),
                "append",
            ),
            (
                "a peer's allowed IPs change",
                |l| l.peers[5].allowed_ips.push("10.250.0.0/24".parse().unwrap()),
                "append",
            ),
            (
                "a node address goes, one comes",
                |l| l.node_ips = vec![ip("198.18.0.10"), ip("198.18.0.13")],
                "append",
            ),
            ("two nodes claim one address", |l| l.node_ips.insert(1, ip("198.18.0.10")), "append"),
            (
                "one of them leaves",
                |l| {
                    l.node_ips.remove(0);
                },
                "append",
            ),
            (
                "local prefixes change",
                |l| l.local_prefixes = vec!["10.244.7.0/24".parse().unwrap()],
                "append",
            ),
            ("nothing but the time", |_| {}, "append"),
            ("the MTU changes", |l| l.mtu = 1400, "whole"),
            ("a peer joins after the rewrite", |l| l.peers.push(peer("node-98", 98)), "append"),
        ];
        let mut file = String::new();
        let mut last: Option<(LastKnown, End)> = None;
        let mut next = first();
        for (i, (what, edit, how)) in steps.into_iter().enumerate() {
            edit(&mut next);
            next.peers.sort_by(|a, b| a.node.cmp(&b.node));
            next.saved = first().saved + jiff::SignedDuration::from_secs(i as i64);
            let (write, end) = write_for(last.as_ref().map(|(l, e)| (l, e)), &next);
            assert_eq!(written(&mut file, write), how, "{what}");
            assert_eq!(LastKnown::decode(&file, "node-0").unwrap(), next, "{what}");
            last = Some((next.clone(), end));
        }
        // A peer's key changed and saved again and again: the journal outweighs the snapshot
        // within a few dozen saves (each line holds a whole peer), and the file is rewritten.
        let mut hows = Vec::new();
        for i in 0..200 {
            next.peers[0].public_key = PrivateKey::generate().public_key();
            next.saved += jiff::SignedDuration::from_secs(1);
            let (write, end) = write_for(last.as_ref().map(|(l, e)| (l, e)), &next);
            hows.push(written(&mut file, write));
            assert_eq!(LastKnown::decode(&file, "node-0").unwrap(), next, "save {i}");
            assert!(file.len() <= 2 * end.snapshot + 200, "the file at most twice the snapshot");
            last = Some((next.clone(), end));
        }
        assert!(hows.contains(&"whole") && hows.iter().filter(|h| **h == "append").count() > 100, "{hows:?}");
    }

    /// An append cut short leaves the save before it; a line edited, dropped or moved refuses the
    /// file.
    #[test]
    fn a_torn_last_line_is_left_out_and_a_broken_chain_refuses_the_file() {
        let one = first();
        let mut two = one.clone();
        two.peers.push(peer("node-99", 99));
        let mut three = two.clone();
        three.peers.remove(0);
        let (Write::Whole(mut file), end) = write_for(None, &one) else { panic!("a first save is whole") };
        let (Write::Append(line2), end) = write_for(Some((&one, &end)), &two) else { panic!("appended") };
        let (Write::Append(line3), _) = write_for(Some((&two, &end)), &three) else { panic!("appended") };
        let snapshot_end = file.len();
        file.push_str(&line2);
        let torn = format!("{file}{}", &line3[..line3.len() / 2]);
        assert_eq!(LastKnown::decode(&torn, "node-0").unwrap(), two, "the torn save left out");
        file.push_str(&line3);
        assert_eq!(LastKnown::decode(&file, "node-0").unwrap(), three);
        let without_second = format!("{}{line3}", &file[..snapshot_end]);
        let swapped = format!("{}{line3}{line2}", &file[..snapshot_end]);
        let edited = file.replacen("node-99", "node-98", 1);
        for (what, text) in
            [("a line dropped", without_second), ("lines swapped", swapped), ("a line edited", edited)]
        {
            let refused = LastKnown::decode(&text, "node-0").expect_err(what);
            assert!(matches!(refused, Refused::Digest), "{what}: {refused}");
        }
    }
}
