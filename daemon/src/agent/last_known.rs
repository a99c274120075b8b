//! The last known peer set, kept in the state directory (`last-known.json`, 0600) after every
//! pass that programmed the mesh, so that an agent started while the API server is unreachable
//! carries encrypted traffic from it at once. It is a cache, never an authority: the first
//! complete list from the API server replaces it, and it is checked before use (format, its
//! SHA-256 digest, the node it was written for) and ignored, with a WARN, when it fails a check.
//! It is written as a journal ([`journal`]): a save appends what changed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use meshcrypt_keyexchange::PublicKey;
use meshcrypt_keyexchange::mesh::{Peer, PeerSet};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub mod journal;

/// The file's name inside the state directory.
pub const FILE: &str = "last-known.json";
/// The first line's prefix in the format before the journal (still read); the line ends with the
/// SHA-256 of the rest of the file, in hex.
const HEADER_V1: &str = "meshcrypt last-known v1 sha256=";

/// How often the file is rewritten at most for a change of allowed IPs only: in pod-IP mode pod
/// churn changes them many times a second, and a restart needs them only roughly current (the
/// API's list replaces them).
pub const SAVE_EVERY: jiff::SignedDuration = jiff::SignedDuration::from_secs(10);

/// Whether the snapshot of `settings` and `peers` at `now` is to be written, `last` being what
/// was written last: when nothing was; at once when the peers (their nodes, keys, endpoints) or
/// the settings changed; and when only allowed IPs or local prefixes changed, once the last write
/// is [`SAVE_EVERY`] old. Compared in place: the snapshot is built only when it is due.
pub fn save_due(
    last: Option<&LastKnown>,
    settings: Snapshot<'_>,
    peers: &PeerSet,
    now: jiff::Timestamp,
) -> bool {
    let Some(last) = last else { return true };
    // The destructuring names every field, so a new one cannot be left out.
    let LastKnown {
        node,
        saved,
        port,
        mtu,
        strict,
        host_encryption,
        pod_networks,
        node_ips,
        local_prefixes,
        peers: saved_peers,
    } = last;
    let Snapshot {
        node: next_node,
        port: next_port,
        mtu: next_mtu,
        strict: next_strict,
        host_encryption: next_host_encryption,
        pod_networks: next_pod_networks,
        node_ips: next_node_ips,
    } = settings;
    // What changes rarely and matters: everything but allowed IPs and local prefixes.
    let same_peers = saved_peers.len() == peers.peers.len()
        && saved_peers.iter().zip(peers.peers.values()).all(|(a, b)| {
            let SavedPeer { node, public_key, key_epoch, endpoint, allowed_ips: _ } = a;
            (node, public_key, key_epoch, endpoint) == (&b.node, &b.public_key, &b.key_epoch, &b.endpoint)
        });
    let same_skeleton = same_peers
        && (node.as_str(), port, mtu, strict, host_encryption, pod_networks.as_slice(), node_ips.as_slice())
            == (
                next_node,
                &next_port,
                &next_mtu,
                &next_strict,
                &next_host_encryption,
                next_pod_networks,
                next_node_ips,
            );
    if !same_skeleton {
        return true;
    }
    let same_ips = *local_prefixes == peers.local_prefixes
        && saved_peers.iter().zip(peers.peers.values()).all(|(a, b)| a.allowed_ips == b.allowed_ips);
    !same_ips && now.duration_since(*saved) >= SAVE_EVERY
}

/// Everything a pass needs to program the device and the kernel without the API server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastKnown {
    /// The node this was written on (a file copied from another node is refused).
    pub node: String,
    /// When it was written.
    pub saved: jiff::Timestamp,
    /// The mesh's UDP port.
    pub port: u16,
    /// The tunnel MTU in force.
    pub mtu: u32,
    /// Fail closed.
    pub strict: bool,
    /// Host encryption.
    pub host_encryption: bool,
    /// The pod networks steered into the mesh.
    pub pod_networks: Vec<IpNet>,
    /// Every node's InternalIPs, sorted (routing keeps node addresses inside pod networks local).
    pub node_ips: Vec<IpAddr>,
    /// This node's own pod prefixes.
    pub local_prefixes: Vec<IpNet>,
    /// The peers.
    pub peers: Vec<SavedPeer>,
}

/// One peer as saved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SavedPeer {
    /// The Node's name.
    pub node: String,
    /// Its public key (in WireGuard's base64 in the file).
    pub public_key: PublicKey,
    /// Its key epoch.
    pub key_epoch: u64,
    /// Where its packets go.
    pub endpoint: SocketAddr,
    /// Its allowed IPs.
    pub allowed_ips: Vec<IpNet>,
}

/// Why a saved file was not used.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The first line is not this format's header.
    #[error("not a meshcrypt last-known file (unknown header)")]
    Header,
    /// The digest does not match the contents (truncated, edited, or corrupted on disk).
    #[error("its SHA-256 does not match its contents")]
    Digest,
    /// The contents do not parse (an invalid public key among them, say).
    #[error("malformed: {0}")]
    Malformed(#[source] serde_json::Error),
    /// It was written for another node.
    #[error("written for node {0}, not this one")]
    OtherNode(String),
}

impl LastKnown {
    /// The snapshot of a pass's outcome.
    pub fn of(settings: Snapshot<'_>, peers: &PeerSet, saved: jiff::Timestamp) -> Self {
        Self {
            node: settings.node.to_owned(),
            saved,
            port: settings.port,
            mtu: settings.mtu,
            strict: settings.strict,
            host_encryption: settings.host_encryption,
            pod_networks: settings.pod_networks.to_vec(),
            node_ips: settings.node_ips.to_vec(),
            local_prefixes: peers.local_prefixes.clone(),
            peers: peers
                .peers
                .values()
                .map(|p| SavedPeer {
                    node: p.node.clone(),
                    public_key: p.public_key,
                    key_epoch: p.key_epoch,
                    endpoint: p.endpoint,
                    allowed_ips: p.allowed_ips.clone(),
                })
                .collect(),
        }
    }

    /// The peer set it describes (no problems: those were reported when it was saved).
    pub fn peer_set(&self) -> PeerSet {
        let peers = self
            .peers
            .iter()
            .map(|p| {
                let peer = Peer {
                    node: p.node.clone(),
                    public_key: p.public_key,
                    key_epoch: p.key_epoch,
                    endpoint: p.endpoint,
                    allowed_ips: p.allowed_ips.clone(),
                };
                (p.node.clone(), peer)
            })
            .collect();
        PeerSet { peers, local_prefixes: self.local_prefixes.clone(), problems: Vec::new() }
    }

    /// Parses and checks file contents (a journal, [`journal`], or a file of the format before
    /// it) written for node `node`.
    pub fn decode(text: &str, node: &str) -> Result<Self, Refused> {
        let (header, body) = text.split_once('\n').ok_or(Refused::Header)?;
        let saved = if let Some(digest) = header.strip_prefix(journal::HEADER) {
            journal::decode(digest, body)?
        } else {
            let digest = header.strip_prefix(HEADER_V1).ok_or(Refused::Header)?;
            if hex::encode(Sha256::digest(body)) != digest {
                return Err(Refused::Digest);
            }
            serde_json::from_str(body).map_err(Refused::Malformed)?
        };
        if saved.node != node {
            return Err(Refused::OtherNode(saved.node));
        }
        Ok(saved)
    }
}

/// What of a pass's settings a snapshot keeps.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// This node.
    pub node: &'a str,
    /// The mesh port.
    pub port: u16,
    /// The tunnel MTU.
    pub mtu: u32,
    /// Fail closed.
    pub strict: bool,
    /// Host encryption.
    pub host_encryption: bool,
    /// The pod networks.
    pub pod_networks: &'a [IpNet],
    /// Every node's InternalIPs, sorted.
    pub node_ips: &'a [IpAddr],
}

/// The file in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Reads the saved snapshot for `node` from `state_dir`: `Ok(None)` when there is none.
pub fn load(state_dir: &Path, node: &str) -> Result<Option<LastKnown>, Refused> {
    let path = path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => LastKnown::decode(&text, node).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Refused::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_dataplane::PrivateKey;

    fn sample() -> LastKnown {
        let key = PrivateKey::generate().public_key();
        let peers = PeerSet {
            peers: [(
                "node-1".to_owned(),
                Peer {
                    node: "node-1".into(),
                    public_key: key,
                    key_epoch: 3,
                    endpoint: "198.18.0.11:51820".parse().unwrap(),
                    allowed_ips: vec!["10.244.1.0/24".parse().unwrap()],
                },
            )]
            .into(),
            local_prefixes: vec!["10.244.0.0/24".parse().unwrap()],
            problems: vec![],
        };
        let settings = Snapshot {
            node: "node-0",
            port: 51820,
            mtu: 1440,
            strict: true,
            host_encryption: false,
            pod_networks: &["10.244.0.0/16".parse().unwrap()],
            node_ips: &["198.18.0.10".parse().unwrap(), "198.18.0.11".parse().unwrap()],
        };
        LastKnown::of(settings, &peers, jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    /// The file a first save writes.
    fn whole(saved: &LastKnown) -> String {
        match journal::write_for(None, saved).0 {
            journal::Write::Whole(text) => text,
            journal::Write::Append(line) => panic!("a first save appends {line}"),
        }
    }

    /// The file as the format before the journal wrote it.
    fn v1(saved: &LastKnown) -> String {
        let body = format!("{}\n", serde_json::to_string(saved).unwrap());
        format!("{HEADER_V1}{}\n{body}", hex::encode(Sha256::digest(&body)))
    }

    #[test]
    fn round_trips_and_rebuilds_the_peer_set() {
        let saved = sample();
        for (format, text) in [("journal", whole(&saved)), ("before the journal", v1(&saved))] {
            let back = LastKnown::decode(&text, "node-0").unwrap();
            assert_eq!(back, saved, "{format}");
            let peers = back.peer_set();
            assert_eq!(peers.peers["node-1"].key_epoch, 3, "{format}");
            assert_eq!(peers.local_prefixes, saved.local_prefixes, "{format}");
        }
    }

    #[test]
    fn save_due_table() {
        let last = sample();
        // secs after the last save; what changed: 0 nothing, 1 allowed IPs, 2 a peer's key, 3 the
        // MTU, 4 the local prefixes, 5 a peer more, 6 a node's address.
        let later = |secs: i64, change: u8| {
            let mut next = last.clone();
            next.saved = last.saved + jiff::SignedDuration::from_secs(secs);
            match change {
                1 => next.peers[0].allowed_ips.push("10.244.9.0/24".parse().unwrap()),
                2 => next.peers[0].public_key = PrivateKey::generate().public_key(),
                3 => next.mtu = 1400,
                4 => next.local_prefixes.push("10.244.8.0/24".parse().unwrap()),
                5 => next.peers.push(SavedPeer { node: "node-9".into(), ..next.peers[0].clone() }),
                6 => next.node_ips.push("198.18.0.99".parse().unwrap()),
                _ => {}
            }
            next
        };
        for (name, last, next, due) in [
            ("nothing saved yet", None, later(0, 0), true),
            ("unchanged, long after", Some(&last), later(3600, 0), false),
            ("allowed IPs changed, too soon", Some(&last), later(9, 1), false),
            ("allowed IPs changed, 10 s on", Some(&last), later(10, 1), true),
            ("a peer's key changed: at once", Some(&last), later(0, 2), true),
            ("the MTU changed: at once", Some(&last), later(0, 3), true),
            ("local prefixes changed, too soon", Some(&last), later(9, 4), false),
            ("local prefixes changed, 10 s on", Some(&last), later(10, 4), true),
            ("a peer joined: at once", Some(&last), later(0, 5), true),
            ("a node's address changed: at once", Some(&last), later(0, 6), true),
        ] {
            let settings = Snapshot {
                node: &next.node,
                port: next.port,
                mtu: next.mtu,
                strict: next.strict,
                host_encryption: next.host_encryption,
                pod_networks: &next.pod_networks,
                node_ips: &next.node_ips,
            };
            assert_eq!(save_due(last, settings, &next.peer_set(), next.saved), due, "{name}");
        }
    }

    #[test]
    fn refusals_table() {
        let saved = sample();
        let good = whole(&saved);
        let flipped = good.replacen("10.244.1.0/24", "10.244.9.0/24", 1);
        let (header, body) = good.split_once('\n').unwrap();
        let mut other = sample();
        other.node = "node-7".into();
        let signed = |snapshot: &str| {
            format!(
                "{}{}\n{snapshot}\n",
                journal::HEADER,
                hex::encode(Sha256::digest(format!("{snapshot}\n")))
            )
        };
        let bad_key =
            signed(body.trim_end().replacen(&saved.peers[0].public_key.to_string(), "AAAA", 1).as_str());
        type Check = fn(&Refused) -> bool;
        let cases: Vec<(&str, String, Check)> = vec![
            ("an edited body", flipped, |r| matches!(r, Refused::Digest)),
            ("a truncated file", good[..good.len() / 2].to_owned(), |r| matches!(r, Refused::Digest)),
            ("no header", body.to_owned(), |r| matches!(r, Refused::Header)),
            ("an unknown version", good.replacen("v2", "v9", 1), |r| matches!(r, Refused::Header)),
            ("another node's", whole(&other), |r| matches!(r, Refused::OtherNode(n) if n == "node-7")),
            (
                "another node's, before the journal",
                v1(&other),
                |r| matches!(r, Refused::OtherNode(n) if n == "node-7"),
            ),
            (
                "an edited body, before the journal",
                v1(&saved).replacen("10.244.1.0/24", "10.244.9.0/24", 1),
                |r| matches!(r, Refused::Digest),
            ),
            (
                "an invalid key",
                bad_key,
                |r| matches!(r, Refused::Malformed(e) if e.to_string().contains("key")),
            ),
            ("valid digest, not JSON", signed("not json"), |r| matches!(r, Refused::Malformed(_))),
        ];
        assert!(header.starts_with(journal::HEADER));
        for (name, text, expected) in cases {
            let refused = LastKnown::decode(&text, "node-0").expect_err(name);
            assert!(expected(&refused), "{name}: {refused}");
        }
    }
}
