//! Two clusters on one underlay, as two EKS clusters in peered VPCs: each has its own API server,
//! agents and `meshcrypt registry`, and they exchange their nodes through Secrets Manager (moto on
//! loopback). Pods of one cluster reach pods of the other only through the mesh (the leak detector
//! sees no plaintext), in pod-CIDR and in pod-IP mode; nodes and pods added in one cluster become
//! reachable from the other; traffic goes on while Secrets Manager does not answer for 60 s; and a
//! remote node claiming a local prefix is refused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meshcrypt_integration::cluster::exchange::{Exchange, ExchangeOptions};
use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use meshcrypt_netlab::lab::{Lab, Pod};
use meshcrypt_netlab::leak::LeakReport;
use meshcrypt_netlab::traffic::Stream;
use serde_json::json;

const READY: Duration = Duration::from_secs(30);
/// How long Secrets Manager stays unreachable (the "moto stopped for 60 s").
const OUTAGE: Duration = Duration::from_secs(60);

/// The registries (stopped first) and the two clusters `a` and `b`.
struct TwoClusters {
    exchange: Exchange,
    cluster: Cluster,
}

impl TwoClusters {
    /// `lab`'s first half of the nodes is cluster `a`, the rest `b`; agents and registries
    /// started, every agent meshed with every node of both clusters.
    fn start(lab: Lab, agents: AgentOptions, options: ExchangeOptions) -> Self {
        Self::join(Self::apart(lab, agents), options)
    }

    /// The two clusters with their agents ready and no exchange yet: each meshes its own nodes
    /// only.
    fn apart(lab: Lab, agents: AgentOptions) -> Cluster {
        let half = lab.nodes().len() / 2;
        let rest = lab.nodes().len() - half;
        let cluster = Cluster::start_clusters(lab, agents, &[("a", half), ("b", rest)]).expect("clusters");
        cluster.wait_ready(READY).expect("agents ready");
        cluster
    }

    /// Starts the registries (and moto) and waits until every agent meshes with every node of
    /// both clusters.
    fn join(cluster: Cluster, options: ExchangeOptions) -> Self {
        let exchange = Exchange::start(&cluster, options).expect("exchange");
        let both = Self { exchange, cluster };
        both.cluster.wait_ready(READY).unwrap_or_else(|e| panic!("{e}\n{}", both.exchange.logs_tail(20)));
        both.cluster.wait_converged(READY).unwrap_or_else(|e| panic!("{e}\n{}", both.exchange.logs_tail(20)));
        both
    }

    fn pods_of(&self, id: &str) -> Vec<Pod> {
        let nodes = self.cluster.nodes_of(id).expect("cluster");
        self.cluster.lab.pods().iter().filter(|p| nodes.contains(&p.node)).cloned().collect()
    }

    /// Polls until `from` pings `to`, returning how long it took.
    fn reach(&self, from: &Pod, to: &Pod, deadline: Duration) -> Duration {
        let start = Instant::now();
        poll(deadline, || {
            if self.cluster.lab.ping(from, to.address.into()).unwrap_or(false) {
                Ok(start.elapsed())
            } else {
                Err(format!("{} cannot reach {}", from.name, to.name))
            }
        })
        .unwrap_or_else(|e| {
            panic!("{e}\n{}\n{}", self.cluster.agent_logs_tail(20), self.exchange.logs_tail(20))
        })
    }

    /// Every pod of `a` and every pod of `b` reach each other by ping and TCP.
    fn all_cross_cluster_pairs_talk(&self) {
        let (a, b) = (self.pods_of("a"), self.pods_of("b"));
        for (from, to) in a.iter().flat_map(|x| b.iter().flat_map(move |y| [(x, y), (y, x)])) {
            self.reach(from, to, Duration::from_secs(10));
            self.cluster
                .lab
                .tcp_exchange(from, to, b"across clusters")
                .unwrap_or_else(|e| panic!("tcp {} -> {}: {e}", from.name, to.name));
        }
    }

    /// The number of WireGuard peers on `node`'s device.
    fn peers(&self, node: &str) -> usize {
        let out = self.cluster.wg(node, &["show", "meshcrypt0", "peers"]).unwrap_or_default();
        out.lines().filter(|l| !l.trim().is_empty()).count()
    }

    fn wait(&self, what: &str, deadline: Duration, mut check: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        poll(deadline, || if check() { Ok(start.elapsed()) } else { Err(format!("waiting for {what}")) })
            .unwrap_or_else(|e| {
                panic!("{e}\n{}\n{}", self.cluster.agent_logs_tail(20), self.exchange.logs_tail(30))
            })
    }
}

/// How many versions secret `id` has (deprecated ones included).
fn versions(exchange: &Exchange, id: &str) -> usize {
    let client = exchange.moto.client();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let listed = runtime
        .block_on(client.list_secret_version_ids().secret_id(id).include_deprecated(true).send())
        .expect("ListSecretVersionIds");
    listed.versions().len()
}

/// `node`'s published public key, from cluster `id`'s API server.
fn public_key(cluster: &Cluster, id: &str, node: &str) -> Option<String> {
    let object = cluster.api_of(id).ok()?.get("v1", "Node", None, node).ok()?;
    object["metadata"]["annotations"]["meshcrypt.dev/public-key"].as_str().map(str::to_owned)
}

/// `wg show meshcrypt0 allowed-ips` on `node`: each peer's key and its allowed IPs.
fn allowed_ips(cluster: &Cluster, node: &str) -> BTreeMap<String, Vec<ipnet::IpNet>> {
    let out = cluster.wg(node, &["show", "meshcrypt0", "allowed-ips"]).expect("wg show");
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let key = fields.next()?.to_owned();
            Some((key, fields.filter_map(|f| f.parse().ok()).collect()))
        })
        .collect()
}

fn assert_clean(report: &LeakReport) {
    assert_eq!(report.pod_plaintext, 0, "plaintext pod packets on the underlay:\n{report}");
    assert!(report.is_clean(), "unexpected traffic between nodes:\n{report}");
    assert!(report.mesh_packets > 0, "the detector saw no WireGuard traffic at all:\n{report}");
}

#[test]
fn pod_cidr_clusters_mesh_across_and_survive_a_secrets_manager_outage() {
    let lab = Lab::builder().nodes(4).pods_per_node(1).build().expect("lab");
    let agents = AgentOptions::new().expect("meshcrypt binary");
    let options = ExchangeOptions::default();
    let poll_interval = Duration::from_secs(options.poll_interval);
    // Before any bundle is exchanged, strict mode (pod-networks covers both clusters) drops what
    // a pod of a sends to a pod of b: the lab's host-gateway routes would carry it in plaintext.
    let apart = TwoClusters::apart(lab, agents);
    let leak = apart.leak_detector().expect("leak detector");
    let (a0, b0) = (apart.lab.pods()[0].clone(), apart.lab.pods()[2].clone());
    assert_ne!(a0.node, b0.node);
    assert!(!apart.lab.ping(&a0, b0.address.into()).expect("ping"), "a reached b before any bundle");
    let mut both = TwoClusters::join(apart, options);
    both.all_cross_cluster_pairs_talk();
    for (on, peer) in [("a", "b"), ("b", "a")] {
        let remote = Exchange::remote_cluster(&both.cluster, on, peer);
        assert_eq!(
            remote["spec"]["nodes"].as_array().map(Vec::len),
            Some(2),
            "{on}'s view of {peer}: {remote}"
        );
        assert!(remote["status"]["fetched"].is_string(), "{remote}");
    }

    // A node joins a: b's pods reach its pod once a's registry has published it and b's has
    // polled (at most one publish interval plus one poll interval, +20% jitter, after its key).
    let b_pod = both.pods_of("b")[0].clone();
    let added = both.cluster.add_node_in("a").expect("add a node to a");
    let new_pod = both.cluster.lab.pods().iter().find(|p| p.node == added).expect("its pod").clone();
    let published = both
        .wait("the new node's key on its Node", READY, || public_key(&both.cluster, "a", &added).is_some());
    let since_key = Instant::now();
    both.reach(&b_pod, &new_pod, READY);
    let took = since_key.elapsed();
    println!(
        "node {added} added in a: key published after {published:?}; reachable from b's {} {took:?} later (poll interval {poll_interval:?})",
        b_pod.name
    );
    for node in both.cluster.nodes_of("b").expect("b") {
        both.wait(&format!("{node} peering with the new node"), READY, || both.peers(&node) == 4);
    }

    // It leaves a: it leaves b's devices too.
    both.cluster.remove_node(&added).expect("remove the node");
    for node in both.cluster.nodes_of("b").expect("b") {
        both.wait(&format!("{node} dropping the removed node"), READY, || both.peers(&node) == 3);
    }
    both.wait("b's RemoteCluster a back to 2 nodes", READY, || {
        Exchange::remote_cluster(&both.cluster, "b", "a")["spec"]["nodes"].as_array().map(Vec::len) == Some(2)
    });

    // Secrets Manager accepts connections and never answers, for 60 s: pods keep talking across
    // the clusters the whole time; b reports a as stale (status and metric) and recovers after.
    // A node joins a meanwhile: a's registry cannot publish it, retries the same sealed bundle,
    // and once Secrets Manager answers (working through the requests it queued) b learns of it
    // from exactly one new version of a's manifest.
    let (from, to) = (both.pods_of("a")[0].clone(), both.pods_of("b")[0].clone());
    let versions_before = versions(&both.exchange, "meshcrypt/a");
    let stream =
        Stream::start(&both.cluster.lab, &from.namespace, &to.namespace, to.address.into()).expect("stream");
    both.exchange.pause_secrets_manager().expect("stop moto");
    let outage = Instant::now();
    let stale_metric = |registry: &str, peer: &str| {
        both.exchange.metric(registry, "meshcrypt_registry_peer_stale", &format!("peer_cluster=\"{peer}\""))
    };
    both.wait("b's RemoteCluster a marked stale", OUTAGE, || {
        Exchange::remote_cluster(&both.cluster, "b", "a")["status"]["staleSince"].is_string()
    });
    both.wait("b's registry reporting a stale", OUTAGE, || stale_metric("b-0", "a") == Some(1.0));
    let unavailable =
        both.cluster.api_of("b").expect("b").list("events.k8s.io/v1", "Event").unwrap_or_default();
    assert!(
        unavailable
            .iter()
            .any(|e| e["reason"] == "SecretsManagerUnavailable" && e["regarding"]["name"] == "a"),
        "b's Warning Event about a: {unavailable:?}"
    );
    let joined = both.cluster.add_node_in("a").expect("a node joins a");
    let publish_errors = || both.exchange.metric("a-0", "meshcrypt_registry_publish_errors_total", "");
    both.wait("a's registry failing to publish the new node", OUTAGE, || publish_errors() >= Some(1.0));
    // Through the rest of the outage, new connections from b to a work too.
    let mut exchanges = 0;
    poll(OUTAGE * 2, || {
        both.cluster
            .lab
            .tcp_exchange(&to, &from, b"outage")
            .unwrap_or_else(|e| panic!("tcp {} -> {} during the outage: {e}", to.name, from.name));
        exchanges += 1;
        if outage.elapsed() >= OUTAGE { Ok(()) } else { Err("Secrets Manager is still away".into()) }
    })
    .expect("the outage ends");
    let remote = Exchange::remote_cluster(&both.cluster, "b", "a");
    assert_eq!(
        remote["spec"]["nodes"].as_array().map(Vec::len),
        Some(2),
        "the last good nodes stay: {remote}"
    );
    both.exchange.resume_secrets_manager().expect("continue moto");
    let report = stream.stop();
    assert_eq!(report.error, None, "the stream across the clusters broke during the outage: {report:?}");
    assert!(
        report.max_stall < OUTAGE / 6,
        "traffic stalled for {:?} while Secrets Manager was away: {report:?}",
        report.max_stall
    );
    let recovered = both.wait("b's RemoteCluster a fresh again", READY, || {
        Exchange::remote_cluster(&both.cluster, "b", "a")["status"]["staleSince"].is_null()
    });
    both.wait("b's registry reporting a fresh", READY, || stale_metric("b-0", "a") == Some(0.0));
    let joined_pod = both.cluster.lab.pods().iter().find(|p| p.node == joined).expect("its pod").clone();
    both.reach(&to, &joined_pod, READY);
    assert_eq!(
        versions(&both.exchange, "meshcrypt/a"),
        versions_before + 1,
        "one new bundle, however often its write was retried ({:?} failed attempts)",
        publish_errors()
    );
    both.cluster.remove_node(&joined).expect("remove the joined node");
    println!(
        "Secrets Manager away {:?}: {exchanges} new TCP connections from b to a all echoed, stream max stall {:?}, {} echoes; fresh again {recovered:?} after it came back",
        OUTAGE, report.max_stall, report.echoed
    );

    // A node of b claims a's node-0 pod CIDR: b's registry publishes it, but a's agents refuse the
    // prefix (Event) and keep routing it to node-0.
    let mut intruder =
        meshcrypt_test_apiserver::TestApiServer::node_object("intruder", "10.244.0.0/24", "198.18.0.250");
    let key = meshcrypt_keyexchange::NodeKeyAnnotations {
        public_key: meshcrypt_keyexchange::PrivateKey::generate().public_key(),
        epoch: 0,
        created: jiff::Timestamp::now(),
    };
    intruder["metadata"]["annotations"] = json!(key.to_annotations());
    both.cluster.api_of("b").expect("b").create(intruder).expect("the intruding Node");
    both.wait("a's agents refusing b/intruder's prefix", READY, || {
        both.cluster.events("RemotePrefixOverlap").iter().any(|e| {
            e["regarding"]["name"] == "b" && e["note"].as_str().is_some_and(|n| n.contains("10.244.0.0/24"))
        })
    });
    let allowed = allowed_ips(&both.cluster, "node-1");
    let node0 = public_key(&both.cluster, "a", "node-0").expect("node-0's key");
    let holders: Vec<&String> = allowed
        .iter()
        .filter(|(_, nets)| nets.contains(&"10.244.0.0/24".parse().unwrap()))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(holders, [&node0], "10.244.0.0/24 must stay node-0's on node-1: {allowed:?}");
    both.reach(&both.pods_of("a")[1], &both.pods_of("a")[0], Duration::from_secs(10));

    assert_clean(&leak.stop().expect("leak report"));
}

#[test]
fn pod_ip_clusters_mesh_across_and_follow_new_pods() {
    let lab = Lab::builder().nodes(4).pods_per_node(2).vpc_cni(true).build().expect("lab");
    let mut agents = AgentOptions::new().expect("meshcrypt binary");
    agents.config_map = Some(BTreeMap::from([("addressing".to_owned(), "pod-ip".to_owned())]));
    let options = ExchangeOptions { addressing: "pod-ip".into(), ..ExchangeOptions::default() };
    let mut both = TwoClusters::start(lab, agents, options);
    let leak = both.cluster.leak_detector().expect("leak detector");
    both.all_cross_cluster_pairs_talk();
    // On b, each of a's nodes is a peer whose allowed IPs are its pods' addresses (aggregated) and
    // its node address: no nominal pod CIDR.
    let b_node = both.cluster.nodes_of("b").expect("b")[0].clone();
    let allowed = allowed_ips(&both.cluster, &b_node);
    for node in both.cluster.nodes_of("a").expect("a") {
        let key = public_key(&both.cluster, "a", &node).expect("key");
        let nets = allowed.get(&key).unwrap_or_else(|| panic!("{node} is no peer of {b_node}: {allowed:?}"));
        let lab_node = both.cluster.lab.node(&node).expect("node");
        let mut want: Vec<std::net::IpAddr> =
            both.pods_of("a").iter().filter(|p| p.node == node).map(|p| p.address.into()).collect();
        want.push(lab_node.underlay_addr.into());
        for ip in &want {
            assert!(
                nets.iter().any(|n| n.contains(ip)),
                "{ip} of {node} not routed to it from {b_node}: {nets:?}"
            );
        }
        let covered: u128 = nets.iter().map(|n| 1u128 << (32 - n.prefix_len())).sum();
        assert_eq!(
            covered,
            want.len() as u128,
            "{node}'s allowed IPs on {b_node} are exactly its addresses: {nets:?}"
        );
    }

    // A pod starts in a: b's pods reach it once the registries have passed it on.
    let a_node = both.cluster.nodes_of("a").expect("a")[0].clone();
    let started = Instant::now();
    let pod = both.cluster.add_pod(&a_node).expect("a new pod in a");
    both.reach(&both.pods_of("b")[0], &pod, READY);
    println!(
        "pod {} ({}) started in a: reachable from b after {:?}",
        pod.name,
        pod.address,
        started.elapsed()
    );

    assert_clean(&leak.stop().expect("leak report"));
}

/// Pre-shared keys per cluster pair: with the same key on both sides the clusters' pods talk and
/// each cross-cluster peer carries it (this cluster's own peers none); a mismatched key stops
/// cross-cluster traffic (dropped, never sent in plaintext) until it matches again; a malformed
/// key file keeps the last good key (an Event on the RemoteCluster) and traffic flowing.
#[test]
fn preshared_keys_guard_the_cluster_pair_and_fail_closed() {
    use std::os::unix::fs::PermissionsExt as _;
    let psk_dir = tempfile::tempdir().expect("psk dir");
    let write = |cluster: &str, text: &str| {
        let path = psk_dir.path().join(cluster);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, text).expect("write psk");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    };
    // One directory serves both clusters: a's agents read the file `b` (their peer cluster),
    // b's the file `a`; each cluster's own id names no peer cluster of its own.
    let key = "m2Y0vhN3v3wYbVKkP0oHwM2vQyLq6ZQq9x8wq0mE4WU=";
    let other = "Zm9vYmFyYmF6cXV1eGZvb2JhcmJhenF1dXhmb29iYXI=";
    write("a", key);
    write("b", key);
    let lab = Lab::builder().nodes(4).pods_per_node(1).build().expect("lab");
    let mut agents = AgentOptions::new().expect("meshcrypt binary");
    agents.extra_args = vec!["--psk-dir".into(), psk_dir.path().display().to_string()];
    let both = TwoClusters::start(lab, agents, ExchangeOptions::default());
    let leak = both.cluster.leak_detector().expect("leak detector");
    both.all_cross_cluster_pairs_talk();

    let psks = both.cluster.wg("node-0", &["show", "meshcrypt0", "preshared-keys"]).expect("wg");
    let b_keys: Vec<String> = both
        .cluster
        .nodes_of("b")
        .expect("b")
        .iter()
        .map(|n| public_key(&both.cluster, "b", n).expect("key"))
        .collect();
    for line in psks.lines() {
        let (peer, psk) = line.split_once('\t').expect("peer<TAB>psk");
        let want = if b_keys.iter().any(|k| k == peer) { key } else { "(none)" };
        assert_eq!(psk, want, "node-0's peer {peer}:\n{psks}");
    }

    // a's agents switch to another key for b; b's keep the first: no handshake completes, and
    // a pod of a cannot reach a pod of b.
    let (from, to) = (both.pods_of("a")[0].clone(), both.pods_of("b")[0].clone());
    write("b", other);
    both.wait("a's pods cut off from b's by the mismatched key", READY, || {
        !both.cluster.lab.ping(&from, to.address.into()).unwrap_or(true)
    });
    write("b", key);
    both.reach(&from, &to, READY);

    // A malformed file: the last good key stays, traffic goes on, and the reason is reported on
    // the RemoteCluster.
    write("b", "not a key");
    both.wait("a's agents reporting b's key file", READY, || {
        both.cluster.events("InvalidPresharedKey").iter().any(|e| e["regarding"]["name"] == "b")
    });
    let note = both.cluster.events("InvalidPresharedKey")[0]["note"].as_str().unwrap_or_default().to_owned();
    assert!(note.contains("last good key stays") && !note.contains("not a key"), "{note}");
    both.reach(&from, &to, Duration::from_secs(10));

    assert_clean(&leak.stop().expect("leak report"));
}
