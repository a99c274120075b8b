//! Pre-shared keys per peer cluster (WireGuard's `psk`, a hedge against a quantum computer that
//! records today's handshakes): one file per peer cluster id in `--psk-dir` (a Kubernetes Secret
//! mounted there, each key a cluster id, each value `wg genpsk`'s form), the same value in both
//! clusters. `read_dir` is the IO; `choose` keeps the last good key of a cluster whose file turns
//! bad, and refuses a cluster's nodes when its first file is bad (they would fail every handshake
//! anyway; this way the reason is reported); `by_peer` gives each remote peer its cluster's key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use meshcrypt_dataplane::{PresharedKey, PublicKey};
use meshcrypt_keyexchange::mesh::{NodeProblem, PeerSet, Problem};
use meshcrypt_keyexchange::secret_file::read_secret;

/// The longest pre-shared key file read: `wg genpsk` prints 45 bytes.
const MAX_PSK_FILE: usize = 256;

/// The files as read: per peer cluster id, its key or why the file was refused. `None` when the
/// directory could not be read at all (the last good keys stay).
pub type Reading = Option<BTreeMap<String, Result<PresharedKey, String>>>;

/// Reads `dir`: every entry whose name is not hidden (kubelet's `..data` and its temporaries are)
/// is a peer cluster id and holds its key. A missing directory means no pre-shared keys. A file
/// its group or others may read is refused, as the node key is (a Secret volume must be mounted
/// with `defaultMode: 0400`).
pub fn read_dir(dir: &Path) -> Reading {
    use std::os::unix::fs::PermissionsExt as _;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(BTreeMap::new()),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot read the pre-shared key directory; the last good keys stay");
            return None;
        }
    };
    let mut out = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let key = match std::fs::metadata(&path) {
            Err(e) => Err(format!("cannot read it: {e}")),
            Ok(meta) if !meta.is_file() => Err("not a file".to_owned()),
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => Err(format!(
                "mode {:o}: open to its group or others (want 0400)",
                meta.permissions().mode() & 0o777
            )),
            Ok(_) => match std::fs::File::open(&path).and_then(|mut f| read_secret(&mut f, MAX_PSK_FILE)) {
                Err(e) => Err(format!("cannot read it: {e}")),
                // The parse error names no part of the value.
                Ok(bytes) => std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|text| text.trim().parse::<PresharedKey>().ok())
                    .ok_or_else(|| {
                        "not a pre-shared key (44 characters of base64, 32 bytes, as `wg genpsk` prints)"
                            .to_owned()
                    }),
            },
        };
        out.insert(name, key);
    }
    Some(out)
}

/// The keys in force after a reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chosen {
    /// Per peer cluster id, the key its nodes get.
    pub keys: BTreeMap<String, PresharedKey>,
    /// Peer clusters whose nodes are left out: a bad file and no earlier good one.
    pub refused: BTreeSet<String>,
    /// What to report, one per bad file (on `<cluster>/*`: the Event goes on its RemoteCluster).
    pub problems: Vec<NodeProblem>,
}

/// Chooses the keys in force from `reading` and the last good ones: a good file's key; for a bad
/// file, the last good key if there is one (else the cluster is refused); a removed file, none
/// (the operator turned the key off). An unreadable directory keeps the last good keys.
pub fn choose(reading: &Reading, last_good: &BTreeMap<String, PresharedKey>) -> Chosen {
    let Some(files) = reading else { return Chosen { keys: last_good.clone(), ..Chosen::default() } };
    let mut chosen = Chosen::default();
    for (cluster, file) in files {
        match file {
            Ok(key) => {
                chosen.keys.insert(cluster.clone(), key.clone());
            }
            Err(reason) => {
                let kept = last_good.get(cluster);
                match kept {
                    Some(key) => {
                        chosen.keys.insert(cluster.clone(), key.clone());
                    }
                    None => {
                        chosen.refused.insert(cluster.clone());
                    }
                }
                chosen.problems.push(NodeProblem {
                    node: format!("{cluster}/*"),
                    problem: Problem::InvalidPresharedKey { reason: reason.clone(), kept: kept.is_some() },
                });
            }
        }
    }
    chosen
}

/// The peer cluster of peer id `id` (`<cluster>/<node>`; this cluster's peers have none).
pub fn cluster_of(id: &str) -> Option<&str> {
    id.split_once('/').map(|(cluster, _)| cluster)
}

/// Each remote peer's key, by its public key (peers of clusters without one are absent).
pub fn by_peer(peers: &PeerSet, keys: &BTreeMap<String, PresharedKey>) -> BTreeMap<PublicKey, PresharedKey> {
    if keys.is_empty() {
        // No peer cluster: no peer to look at (a pass at 5,000 nodes would look at each).
        return BTreeMap::new();
    }
    peers
        .peers
        .iter()
        .filter_map(|(id, peer)| Some((peer.public_key, keys.get(cluster_of(id)?)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psk(n: u8) -> PresharedKey {
        PresharedKey::from_bytes([n; 32])
    }

    #[test]
    fn choose_table() {
        type Files = &'static [(&'static str, Option<u8>)];
        type Keys = &'static [(&'static str, u8)];
        /// Name, the files (`None`: an unreadable directory; a `None` key: a bad file), the last
        /// good keys, the keys chosen, the clusters refused, the problems as (node, kept).
        type Row = (
            &'static str,
            Option<Files>,
            Keys,
            Keys,
            &'static [&'static str],
            &'static [(&'static str, bool)],
        );
        let rows: Vec<Row> = vec![
            ("no directory entries", Some(&[]), &[], &[], &[], &[]),
            ("a good file", Some(&[("b", Some(1))]), &[], &[("b", 1)], &[], &[]),
            (
                "a new good file replaces the old key",
                Some(&[("b", Some(2))]),
                &[("b", 1)],
                &[("b", 2)],
                &[],
                &[],
            ),
            (
                "a bad file keeps the last good key",
                Some(&[("b", None)]),
                &[("b", 1)],
                &[("b", 1)],
                &[],
                &[("b/*", true)],
            ),
            (
                "a bad first file refuses the cluster",
                Some(&[("b", None)]),
                &[],
                &[],
                &["b"],
                &[("b/*", false)],
            ),
            ("a removed file turns the key off", Some(&[]), &[("b", 1)], &[], &[], &[]),
            (
                "an unreadable directory keeps all",
                None,
                &[("b", 1), ("c", 3)],
                &[("b", 1), ("c", 3)],
                &[],
                &[],
            ),
        ];
        for (name, files, last, want_keys, want_refused, want_problems) in rows {
            let reading: Reading = files.map(|f| {
                f.iter().map(|(c, k)| ((*c).to_owned(), k.map(psk).ok_or_else(|| "bad".to_owned()))).collect()
            });
            let last: BTreeMap<String, PresharedKey> =
                last.iter().map(|(c, k)| ((*c).to_owned(), psk(*k))).collect();
            let chosen = choose(&reading, &last);
            let keys: BTreeMap<String, PresharedKey> =
                want_keys.iter().map(|(c, k)| ((*c).to_owned(), psk(*k))).collect();
            assert_eq!(chosen.keys, keys, "{name}");
            let refused: BTreeSet<String> = want_refused.iter().map(|c| (*c).to_owned()).collect();
            assert_eq!(chosen.refused, refused, "{name}");
            let problems: Vec<(String, bool)> = chosen
                .problems
                .iter()
                .map(|p| match &p.problem {
                    Problem::InvalidPresharedKey { kept, .. } => (p.node.clone(), *kept),
                    other => panic!("{name}: {other:?}"),
                })
                .collect();
            let want: Vec<(String, bool)> =
                want_problems.iter().map(|(n, k)| ((*n).to_owned(), *k)).collect();
            assert_eq!(problems, want, "{name}");
        }
    }

    #[test]
    fn read_dir_skips_kubelets_own_entries_and_refuses_what_others_can_read() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_dir(&dir.path().join("missing")), Some(BTreeMap::new()), "no directory: no keys");
        let good = "m2Y0vhN3v3wYbVKkP0oHwM2vQyLq6ZQq9x8wq0mE4WU=";
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("prod-b", &format!("{good}\n"), 0o400);
        write("prod-c", "not a key", 0o400);
        write("prod-d", good, 0o644);
        write("prod-e", good, 0o440);
        std::fs::create_dir(dir.path().join("..data")).unwrap();
        let read = read_dir(dir.path()).unwrap();
        assert_eq!(read.keys().collect::<Vec<_>>(), ["prod-b", "prod-c", "prod-d", "prod-e"]);
        assert_eq!(read["prod-b"].as_ref().unwrap(), &good.parse::<PresharedKey>().unwrap());
        assert!(
            read["prod-c"].as_ref().is_err_and(|e| !e.contains("not a key")),
            "the value is never echoed"
        );
        assert!(read["prod-d"].as_ref().is_err_and(|e| e.contains("group or others")));
        assert!(read["prod-e"].as_ref().is_err_and(|e| e.contains("group or others")));
    }
}
