//! Root-free tests of whole passes: the real reconciler, its watchers and its Kubernetes client
//! against the in-repo test API server over real HTTP, with the fake kernel of the routing crate
//! and the fake WireGuard backend of the data-plane crate standing in for netlink and the TUN
//! device. Each test drives passes by hand and checks the API, the kernel and the device.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::slim_pod::SlimPod;
use meshcrypt_dataplane::WireGuardDevice as _;
use meshcrypt_dataplane::fake::FakeBackend;
use meshcrypt_keyexchange::annotations::PUBLIC_KEY;
use meshcrypt_keyexchange::{KeyStore, NodeKeyAnnotations};
use meshcrypt_routing::fake::{FailFlags, FakeKernel};
use meshcrypt_routing::{ObservedState, RouteKind};
use meshcrypt_test_apiserver::{ApiServerConfig, TestApiServer};

use crate::test_support::client;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::config_source::ConfigSource;
use super::decide::Params;
use super::events::EventReporter;
use super::io::Io;
use super::reconcile::Reconciler;
use super::state::LoopState;
use super::{http, metrics, nodes, remotes};
use crate::cli::PeerSource;
use crate::config::settings::Settings;
use crate::logging::LogControl;

const NODE: &str = "node-a";
const IFNAME: &str = "meshcrypt0";
const TABLE: u32 = 51820;
const PRIORITY: u32 = 100;
const NAMESPACE: &str = "kube-system";
const CONFIG_MAP: &str = "meshcrypt";
/// How long anything a test waits for may take.
const DEADLINE: Duration = Duration::from_secs(10);

type TestReconciler = Reconciler<Arc<FakeKernel>, Arc<FakeBackend>>;

/// A test API server with three Nodes and the mesh ConfigMap, and the reconciler of `node-a`.
struct Harness {
    server: TestApiServer,
    agent: TestReconciler,
    kernel: Arc<FakeKernel>,
    backend: Arc<FakeBackend>,
    _state_dir: tempfile::TempDir,
}

impl Harness {
    async fn new(config: &[(&str, &str)]) -> Self {
        Self::with_source(config, PeerSource::Nodes).await
    }

    async fn with_source(config: &[(&str, &str)], peer_source: PeerSource) -> Self {
        let server = TestApiServer::start(ApiServerConfig::default()).await.expect("test API server");
        for (i, name) in [NODE, "node-b", "node-c"].iter().enumerate() {
            let node =
                TestApiServer::node_object(name, &format!("10.244.{i}.0/24"), &format!("198.18.0.{}", i + 1));
            server.create(node).expect("create node");
        }
        for peer in ["node-b", "node-c"] {
            publish_peer_key(&server, peer);
        }
        server.create(config_map(config)).expect("create configmap");
        let client = client(&server).await;

        let kernel = Arc::new(FakeKernel::new());
        let underlay = kernel.add_link("eth0", "veth", 1500).expect("underlay");
        kernel.add_address(underlay, "198.18.0.1/24".parse().unwrap());
        let (add, remove) = (kernel.clone(), kernel.clone());
        let backend = Arc::new(FakeBackend::new(
            Box::new(move |name| add.add_link(name, "tun", 1500)),
            Arc::new(move |index| remove.remove_link(index)),
        ));

        let state_dir = tempfile::tempdir().expect("state dir");
        let keys = KeyStore::open(state_dir.path()).expect("key store");
        let (record, _) = keys.load_or_create().expect("key");
        let key = record.annotations();
        drop(record);
        let wake = Arc::new(Notify::new());
        let base = Settings { pod_networks: vec!["10.244.0.0/16".parse().unwrap()], ..Settings::default() };
        let config = ConfigSource::watch(client.clone(), NAMESPACE, CONFIG_MAP, base, wake.clone());
        config.ready().await.expect("configmap store");
        let nodes = match peer_source {
            PeerSource::Nodes => nodes::watch(client.clone(), wake.clone()),
            PeerSource::MeshPeers => super::mesh_peers::watch(client.clone(), wake.clone()),
        };
        nodes.wait_until_ready().await.expect("node store");
        let own_node = nodes::watch_own(client.clone(), wake.clone(), NODE);
        own_node.wait_until_ready().await.expect("own node store");
        let remotes = remotes::watch(client.clone(), wake.clone());
        remotes.wait_until_ready().await.expect("remotecluster store");
        let io = Io {
            events: EventReporter::new(client.clone(), NODE, nodes.clone()),
            client,
            nodes,
            own_node,
            peer_source,
            node_views: Default::default(),
            remotes,
            pods: Default::default(),
            wake,
            config,
            kernel: kernel.clone(),
            backend: backend.clone(),
            kernel_wireguard: false,
            device: metrics::DeviceSlot::default(),
            uapi_dir: state_dir.path().join("uapi"),
            psk_dir: state_dir.path().join("psk"),
            workers: 1,
            keys,
            state_dir: state_dir.path().to_owned(),
            health: Arc::new(http::Health::default()),
            metrics: Arc::new(metrics::LoopMetrics::default()),
            names: metrics::PeerNames::default(),
            handshakes: Default::default(),
            status_view: Default::default(),
            log: LogControl::detached("info"),
            flow_settings: tokio::sync::watch::Sender::new(Default::default()),
            signals: tokio::sync::mpsc::channel(1).0,
        };
        let params = Params {
            node: NODE.into(),
            ifname: IFNAME.into(),
            table: TABLE,
            rule_priority: PRIORITY,
            fwmark: 0x20_0000,
            config_map: Some((NAMESPACE.into(), CONFIG_MAP.into())),
            no_handshake_after: jiff::SignedDuration::from_secs(180),
        };
        let agent = Reconciler {
            params,
            io,
            state: LoopState::new(key),
            peer_index: Default::default(),
            report_interval: Duration::from_secs(300),
        };
        Self { server, agent, kernel, backend, _state_dir: state_dir }
    }

    async fn pass(&mut self) -> bool {
        self.agent.pass(jiff::Timestamp::now()).await
    }

    /// The kernel state meshcrypt owns.
    fn kernel(&self) -> ObservedState {
        self.kernel.snapshot(IFNAME, TABLE, PRIORITY)
    }

    fn ready(&self) -> bool {
        self.agent.io.metrics.ready.get() == 1
    }

    /// This node's key as its Node carries it.
    fn published(&self) -> Option<NodeKeyAnnotations> {
        let node = self.server.get("v1", "Node", None, NODE).expect("node");
        let annotations: BTreeMap<String, String> =
            serde_json::from_value(node["metadata"]["annotations"].clone()).unwrap_or_default();
        NodeKeyAnnotations::parse(&annotations).expect("well-formed annotations")
    }

    /// Replaces the ConfigMap's data and waits until the agent's watch has it.
    async fn configure(&self, data: &[(&str, &str)]) {
        let cm = config_map(data);
        let patch = json!({"data": Value::Null});
        self.server.merge_patch("v1", "ConfigMap", Some(NAMESPACE), CONFIG_MAP, &patch, false).unwrap();
        let patch = json!({"data": cm["data"]});
        self.server.merge_patch("v1", "ConfigMap", Some(NAMESPACE), CONFIG_MAP, &patch, false).unwrap();
        let want: BTreeMap<String, String> =
            data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        poll("the agent's ConfigMap watch to catch up", || {
            (self.agent.io.config.data()? == want).then_some(())
        })
        .await;
    }

    /// Waits until the agent's Node store shows `check` true of this node's Node.
    async fn node_store(&self, what: &str, check: impl Fn(&super::slim_node::SlimNode) -> bool) {
        poll(what, || {
            let node = self.agent.io.nodes.get(&kube::runtime::reflector::ObjectRef::new(NODE))?;
            check(&node).then_some(())
        })
        .await;
    }

    fn events(&self, reason: &str) -> usize {
        let events = self.server.list("events.k8s.io/v1", "Event").unwrap_or_default();
        events.iter().filter(|e| e["reason"] == reason).count()
    }
}

/// Polls `check` every 10 ms until it returns something, failing the test at [`DEADLINE`].
async fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn config_map(data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIG_MAP, "namespace": NAMESPACE}, "data": data})
}

/// Publishes a fresh key on Node `name`, as its agent would.
fn publish_peer_key(server: &TestApiServer, name: &str) -> NodeKeyAnnotations {
    let key = NodeKeyAnnotations {
        public_key: meshcrypt_keyexchange::PrivateKey::generate().public_key(),
        epoch: 0,
        created: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    };
    let patch = json!({"metadata": {"annotations": key.to_annotations()}});
    server.merge_patch("v1", "Node", None, name, &patch, false).expect("annotate");
    key
}

#[tokio::test]
async fn a_pass_publishes_the_key_programs_device_and_kernel_and_switching_off_removes_it_all() {
    let mut h = Harness::new(&[]).await;
    assert!(h.pass().await, "first pass");
    assert!(h.ready());
    assert_eq!(h.published(), Some(h.agent.state.key.clone()), "the key in use is published");
    let device = h.backend.device().expect("a device");
    let state = device.observe().unwrap();
    assert_eq!(state.public_key, h.agent.state.key.public_key);
    assert_eq!(state.peers.len(), 2, "node-b and node-c");
    assert!(device.take_handshakes().is_empty(), "handshakes wait for the first packet to a peer");
    let kernel = h.kernel();
    let link = kernel.link.as_ref().expect("the device's link");
    assert_eq!((link.mtu, link.up), (1440, true), "1500 less WireGuard over IPv4");
    assert!(
        kernel
            .routes
            .iter()
            .any(|r| r.kind == RouteKind::Device && r.dst == "10.244.1.0/24".parse().unwrap())
    );
    assert!(kernel.routes.iter().any(|r| r.kind == RouteKind::Blackhole), "the fail-closed floor");
    assert!(!kernel.rules.is_empty());
    assert_eq!(h.events("MeshReady"), 1);

    h.node_store("the published key", |n| {
        n.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(PUBLIC_KEY))
    })
    .await;
    let applied = h.kernel.applied().len();
    assert!(h.pass().await);
    assert_eq!(h.kernel.applied().len(), applied, "a pass over an unchanged world changes nothing");
    assert_eq!(device.take_handshakes(), vec![], "and starts no handshake");

    drop(device);
    h.configure(&[("enabled", "false")]).await;
    assert!(h.pass().await, "switching off");
    assert!(h.backend.device().is_none(), "the device is gone");
    assert_eq!(h.kernel(), ObservedState::default(), "no link, route or rule is left");
    assert_eq!(h.published(), None, "the key is withdrawn");
    assert_eq!(h.events("MeshDisabled"), 1);
    assert!(h.ready(), "switched off is a ready state");
}

#[tokio::test]
async fn a_rejected_configmap_keeps_the_last_good_settings_and_is_reported_once() {
    let mut h = Harness::new(&[("port", "51821")]).await;
    assert!(h.pass().await);
    assert_eq!(h.backend.device().unwrap().observe().unwrap().listen_port, 51821);

    h.configure(&[("port", "51821"), ("mtu", "banana")]).await;
    assert!(h.pass().await, "the last good settings stay in force");
    assert!(h.pass().await);
    assert_eq!(h.backend.device().unwrap().observe().unwrap().listen_port, 51821);
    assert_eq!(h.events("ConfigRejected"), 1, "reported once");
    assert!(h.agent.state.rejected.is_some());

    h.configure(&[("port", "51822")]).await;
    assert!(h.pass().await);
    assert_eq!(h.backend.device().unwrap().observe().unwrap().listen_port, 51822, "the port moves");
    assert_eq!(h.backend.created(), 1, "without a new device");
    assert_eq!(h.events("ConfigApplied"), 1);
    let events = h.server.list("events.k8s.io/v1", "Event").unwrap();
    let applied = events.iter().find(|e| e["reason"] == "ConfigApplied").unwrap();
    assert_eq!(applied["note"], "configuration applied: port: 51821 → 51822", "names what changed");
}

#[tokio::test]
async fn a_half_applied_kernel_plan_fails_the_pass_and_the_next_pass_completes_it() {
    let mut h = Harness::new(&[]).await;
    h.kernel.fail(FailFlags { apply_after: Some(3), apply_errno: libc_enobufs(), ..FailFlags::default() });
    assert!(!h.pass().await, "the kernel refused an operation");
    assert!(!h.ready(), "readiness drops with the pass");
    let (_, reason) = h.agent.io.health.readiness();
    assert!(reason.contains("errno"), "the kernel's errno is kept: {reason}");
    assert_eq!(h.events("ReconcileFailed"), 1, "a Warning on the Node");
    let half = h.kernel();
    assert!(h.pass().await, "the next pass recovers");
    assert!(h.ready());
    let whole = h.kernel();
    assert_ne!(half, whole, "the second pass did the rest");
    let applied = h.kernel.applied().len();
    assert!(h.pass().await);
    assert_eq!(h.kernel.applied().len(), applied, "and nothing is left to do");
}

#[tokio::test]
async fn a_failed_read_changes_nothing_and_a_half_applied_device_change_is_completed_next_pass() {
    let mut h = Harness::new(&[]).await;
    h.kernel.fail(FailFlags { observe: Some(libc_enobufs()), ..FailFlags::default() });
    assert!(!h.pass().await, "a failed read fails the pass before anything changes");
    assert!(!h.ready());
    assert_eq!(h.backend.created(), 0, "nothing was created");
    assert!(h.kernel.applied().is_empty(), "nothing was applied");
    assert!(h.pass().await);
    let device = h.backend.device().unwrap();

    // Both peers change their keys: two removals and two additions, and the device refuses the
    // third change.
    let new_keys =
        [publish_peer_key(&h.server, "node-b").public_key, publish_peer_key(&h.server, "node-c").public_key];
    poll("the new keys in the Node store", || {
        let seen: Vec<String> = h
            .agent
            .io
            .nodes
            .state()
            .iter()
            .filter_map(|n| n.metadata.annotations.as_ref()?.get(PUBLIC_KEY).cloned())
            .collect();
        new_keys.iter().all(|k| seen.contains(&k.to_string())).then_some(())
    })
    .await;
    device.fail_next_apply_after(2);
    assert!(!h.pass().await, "the device refused a change half-way");
    assert!(!h.ready());
    assert_eq!(device.observe().unwrap().peers.len(), 0, "the removals before the failure stay applied");
    assert!(h.pass().await, "the next pass completes it");
    let mut configured: Vec<_> = device.observe().unwrap().peers.iter().map(|p| p.public_key).collect();
    configured.sort();
    let mut want = new_keys.to_vec();
    want.sort();
    assert_eq!(configured, want);
}

#[tokio::test]
async fn a_closed_pod_store_fails_the_pass_and_keeps_what_is_programmed() {
    let mut h = Harness::new(&[]).await;
    assert!(h.pass().await);
    let before = h.kernel();
    let (reader, writer) = kube::runtime::reflector::store::<SlimPod>();
    drop(writer);
    assert!(h.agent.io.pods.set(reader).is_ok());
    h.configure(&[("addressing", "pod-ip")]).await;
    assert!(!h.pass().await, "pod-IP mode without the Pods");
    assert!(!h.ready());
    let (_, reason) = h.agent.io.health.readiness();
    assert!(reason.contains("pods store closed"), "{reason}");
    assert_eq!(h.kernel(), before, "the last programmed state stays in force");
    assert_eq!(h.backend.device().unwrap().observe().unwrap().peers.len(), 2);
}

#[tokio::test]
async fn a_deleted_interface_drops_readiness_and_the_next_pass_makes_a_new_device() {
    let mut h = Harness::new(&[]).await;
    assert!(h.pass().await);
    let index = h.kernel.link_index(IFNAME).unwrap();
    h.kernel.remove_link(index);
    assert!(!h.pass().await, "the interface is gone");
    assert!(!h.ready());
    assert!(h.kernel().routes.iter().all(|r| r.kind != RouteKind::Device));
    assert!(h.kernel().routes.iter().any(|r| r.kind == RouteKind::Blackhole), "the floor holds");
    assert!(h.pass().await, "a new device");
    assert_eq!(h.backend.created(), 2);
    assert!(h.ready());
}

#[tokio::test]
async fn a_rotation_staged_during_an_api_outage_waits_and_completes_when_the_api_is_back() {
    let mut h = Harness::new(&[]).await;
    assert!(h.pass().await);
    let device = h.backend.device().unwrap();
    device.take_handshakes();
    // One peer carries traffic (a session a minute old), the other none.
    let busy = device.observe().unwrap().peers[0].public_key;
    device.set_handshake(&busy, Some(std::time::SystemTime::now() - std::time::Duration::from_secs(60)));
    let old = h.agent.state.key.clone();
    let staged = h.agent.io.keys.stage_rotation().expect("stage").annotations();
    let current = old.public_key.to_string();
    h.node_store("the published key", |n| {
        n.metadata.annotations.as_ref().and_then(|a| a.get(PUBLIC_KEY)) == Some(&current)
    })
    .await;

    let addrs = h.server.local_addrs().to_vec();
    h.server.pause().await;
    assert!(
        h.pass().await,
        "the mesh keeps working with the current key: {:?}",
        h.agent.io.health.readiness()
    );
    assert_eq!(h.agent.io.metrics.key_rotation_pending.get(), 1);
    assert_eq!(h.agent.io.metrics.key_rotations.get(), 0, "no rotation done yet");
    assert_eq!(device.observe().unwrap().public_key, old.public_key, "not switched before it is published");
    assert_eq!(h.agent.state.key, old);

    let listeners = addrs.iter().map(|a| std::net::TcpListener::bind(a).expect("rebind")).collect();
    h.server.resume(listeners).expect("resume");
    assert_eq!(h.published(), Some(old.clone()), "still the old key until a pass");
    assert!(h.pass().await);
    assert_eq!(h.published(), Some(staged.clone()), "published first");
    assert_eq!(device.observe().unwrap().public_key, staged.public_key, "then switched");
    assert_eq!(h.agent.io.metrics.key_rotation_pending.get(), 0);
    assert_eq!(h.agent.io.metrics.key_rotations.get(), 1, "the rotation counted");
    assert_eq!(
        device.take_handshakes(),
        [busy],
        "the session in use restarts at once under the new key; the idle peer waits for traffic"
    );
    assert_eq!(h.events("KeyRotated"), 1);
}

/// "No buffer space available": what a netlink dump that overran its socket buffer returns.
fn libc_enobufs() -> i32 {
    nix::errno::Errno::ENOBUFS as i32
}

#[tokio::test]
async fn a_peer_clusters_nodes_join_the_mesh_and_an_overlapping_prefix_is_refused_with_an_event() {
    let mut h = Harness::new(&[]).await;
    assert!(h.pass().await);
    let remote_key = meshcrypt_keyexchange::PrivateKey::generate().public_key();
    let other_key = meshcrypt_keyexchange::PrivateKey::generate().public_key();
    h.server
        .create(json!({
            "apiVersion": "meshcrypt.dev/v1alpha1",
            "kind": "RemoteCluster",
            "metadata": {"name": "prod-b"},
            "spec": {"generation": 3, "nodes": [
                {"name": "ip-10-9-0-5", "publicKey": remote_key.to_string(), "keyEpoch": 0,
                 "endpoint": "198.19.0.5:51820", "allowedIPs": ["10.245.1.0/24"]},
                // Claims node-b's pod CIDR: refused, never routed to it.
                {"name": "ip-10-9-0-6", "publicKey": other_key.to_string(), "keyEpoch": 0,
                 "endpoint": "198.19.0.6:51820", "allowedIPs": ["10.244.1.0/24"]},
            ]},
        }))
        .expect("create RemoteCluster");
    poll("the RemoteCluster in the agent's store", || (h.agent.io.remotes.state().len() == 1).then_some(()))
        .await;
    assert!(h.pass().await);
    let device = h.backend.device().unwrap().observe().unwrap();
    let remote = device.peer(&remote_key).expect("the remote node is a peer");
    assert_eq!(remote.endpoint, Some("198.19.0.5:51820".parse().unwrap()));
    let overlapping = device.peer(&other_key).expect("the other remote node, without the contested prefix");
    assert!(!overlapping.allowed_ips.contains(&"10.244.1.0/24".parse().unwrap()));
    let routes = h.kernel().routes;
    assert!(routes.iter().any(|r| r.kind == RouteKind::Device && r.dst == "10.245.1.0/24".parse().unwrap()));
    assert_eq!(h.events("RemotePrefixOverlap"), 1, "reported once, on the RemoteCluster");
    let events = h.server.list("events.k8s.io/v1", "Event").unwrap();
    let event = events.iter().find(|e| e["reason"] == "RemotePrefixOverlap").unwrap();
    assert_eq!(event["regarding"]["kind"], "RemoteCluster");
    assert_eq!(event["regarding"]["name"], "prod-b");

    h.server.delete("meshcrypt.dev/v1alpha1", "RemoteCluster", None, "prod-b").unwrap();
    poll("the RemoteCluster gone from the store", || h.agent.io.remotes.state().is_empty().then_some(()))
        .await;
    assert!(h.pass().await);
    assert!(
        h.backend.device().unwrap().observe().unwrap().peer(&remote_key).is_none(),
        "gone with its object"
    );
}

/// After a pass the status socket's document tells readiness, the key, the settings with their
/// sources and the peers with their handshakes; the MeshNode carries the same summary, owned by
/// the Node; stopping reports the stop.
#[tokio::test]
async fn a_pass_leaves_the_node_status_and_reports_it_on_the_mesh_node() {
    let mut h = Harness::new(&[("strict", "true")]).await;
    assert!(h.pass().await);
    let device = h.backend.device().expect("a device");
    let peer = device.observe().unwrap().peers[0].public_key;
    device.set_handshake(&peer, Some(std::time::SystemTime::now()));

    let status = (h.agent.status_source())();
    assert!(status.ready, "{status:?}");
    assert_eq!(status.key.fingerprint, h.agent.state.key.public_key.fingerprint());
    assert_eq!(status.device.as_ref().map(|d| d.name.as_str()), Some(IFNAME));
    let source = |key: &str| status.settings.iter().find(|s| s.key == key).map(|s| s.source.clone());
    assert_eq!(source("strict").as_deref(), Some("configmap"));
    assert_eq!(source("port").as_deref(), Some("default"));
    let peers: Vec<(&str, bool)> =
        status.peers.iter().map(|p| (p.node.as_str(), p.last_handshake.is_some())).collect();
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert_eq!(peers.iter().filter(|(_, shook)| *shook).count(), 1, "{peers:?}");
    assert!(status.drops.contains_key("no_peer"), "{:?}", status.drops);

    let mesh_node = h.server.get("meshcrypt.dev/v1alpha1", "MeshNode", None, NODE).expect("the MeshNode");
    assert_eq!(mesh_node["status"]["ready"], true, "{mesh_node}");
    assert_eq!(mesh_node["status"]["peers"], 2);
    assert_eq!(mesh_node["status"]["keyFingerprint"], h.agent.state.key.public_key.fingerprint());
    assert_eq!(mesh_node["metadata"]["ownerReferences"][0]["kind"], "Node");
    let reported = mesh_node["status"]["reportedAt"].clone();

    // Unchanged but for the handshake: within a fifth of the interval, not written again.
    assert!(h.pass().await);
    let again = h.server.get("meshcrypt.dev/v1alpha1", "MeshNode", None, NODE).expect("the MeshNode");
    assert_eq!(again["status"]["reportedAt"], reported, "no write within a fifth of the interval");

    h.agent.report_stopped(jiff::Timestamp::now()).await;
    let stopped = h.server.get("meshcrypt.dev/v1alpha1", "MeshNode", None, NODE).expect("the MeshNode");
    assert_eq!(
        (stopped["status"]["stopped"].clone(), stopped["status"]["ready"].clone()),
        (json!(true), json!(false))
    );
}

/// Writes MeshPeer `name` as its agent would, with a fresh key and the claim `(address, pod CIDR)`.
fn offer_peer(server: &TestApiServer, name: &str, claim: (&str, &str)) -> NodeKeyAnnotations {
    offer_peer_with_pods(server, name, claim, &[])
}

/// [`offer_peer`] in pod-IP mode: with its Pods' addresses.
fn offer_peer_with_pods(
    server: &TestApiServer,
    name: &str,
    claim: (&str, &str),
    pod_ips: &[&str],
) -> NodeKeyAnnotations {
    let key = NodeKeyAnnotations {
        public_key: meshcrypt_keyexchange::PrivateKey::generate().public_key(),
        epoch: 0,
        created: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    };
    let uid = server.get("v1", "Node", None, name).expect("node")["metadata"]["uid"].clone();
    server
        .create(json!({
            "apiVersion": "meshcrypt.dev/v1alpha1", "kind": "MeshPeer",
            "metadata": {"name": name, "annotations": key.to_annotations(),
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]},
            "spec": {"internalIPs": [claim.0], "podCIDRs": [claim.1], "podIPs": pod_ips},
        }))
        .expect("create the MeshPeer");
    key
}

/// With `--peer-source mesh-peers` the agent offers its own key and addresses on its MeshPeer,
/// learns the other nodes from theirs alone (a key on a Node only is not seen), takes their
/// addresses and pod CIDRs from their Nodes whatever a MeshPeer claims, and loses a node with its
/// Node (the garbage collector takes the MeshPeer); switched off, it withdraws the key from both.
#[tokio::test]
async fn with_mesh_peers_the_agent_offers_its_own_and_takes_addresses_only_from_the_nodes() {
    let mut h = Harness::with_source(&[], PeerSource::MeshPeers).await;
    assert!(h.pass().await, "first pass");
    let device = h.backend.device().expect("a device");
    assert_eq!(device.observe().unwrap().peers.len(), 0, "keys on Nodes alone are not read");
    let own = h.server.get("meshcrypt.dev/v1alpha1", "MeshPeer", None, NODE).expect("its MeshPeer");
    let node_uid = h.server.get("v1", "Node", None, NODE).unwrap()["metadata"]["uid"].clone();
    assert_eq!(own["metadata"]["ownerReferences"][0]["uid"], node_uid);
    assert_eq!(own["spec"], json!({"internalIPs": ["198.18.0.1"], "podCIDRs": ["10.244.0.0/24"]}));
    assert_eq!(
        own["metadata"]["annotations"][PUBLIC_KEY],
        json!(h.agent.state.key.public_key.to_string()),
        "the key the device runs"
    );

    let b = offer_peer(&h.server, "node-b", ("198.18.0.2", "10.244.1.0/24"));
    // node-c claims node-b's address and pod CIDR.
    let c = offer_peer(&h.server, "node-c", ("198.18.0.2", "10.244.1.0/24"));
    poll("both MeshPeers in the store", || (h.agent.io.nodes.state().len() == 3).then_some(())).await;
    assert!(h.pass().await);
    let peers = device.observe().unwrap().peers;
    let allowed = |key| {
        let peer = peers.iter().find(|p| p.public_key == key).expect("a peer");
        (
            peer.endpoint.map(|e| e.ip().to_string()),
            peer.allowed_ips.iter().map(ToString::to_string).collect(),
        )
    };
    // The pod CIDR, and the node's own address (host encryption).
    let want = |ip: &str, cidr: &str| (Some(ip.to_owned()), vec![cidr.to_owned(), format!("{ip}/32")]);
    assert_eq!(allowed(b.public_key), want("198.18.0.2", "10.244.1.0/24"));
    assert_eq!(allowed(c.public_key), want("198.18.0.3", "10.244.2.0/24"), "its Node's, not its claim");

    h.server.delete("v1", "Node", None, "node-c").unwrap();
    poll("node-c gone from the store", || (h.agent.io.nodes.state().len() == 2).then_some(())).await;
    assert!(h.pass().await);
    let keys: Vec<_> = device.observe().unwrap().peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, [b.public_key], "node-c left with its Node");

    drop(device);
    h.configure(&[("enabled", "false")]).await;
    assert!(h.pass().await, "switching off");
    let own = h.server.get("meshcrypt.dev/v1alpha1", "MeshPeer", None, NODE).unwrap();
    assert!(own["metadata"].get("annotations").is_none_or(|a| a.get(PUBLIC_KEY).is_none()), "{own}");
}

/// A running Pod on `node` with address `ip`.
fn pod(name: &str, node: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

/// Pod-IP mode with MeshPeers: the agent watches only its own node's Pods and offers their
/// addresses on its MeshPeer; another node's pod addresses come from that node's MeshPeer alone
/// (its Pod objects are not read).
#[tokio::test]
async fn with_mesh_peers_in_pod_ip_mode_pod_addresses_come_on_the_mesh_peers() {
    let mut h = Harness::with_source(&[("addressing", "pod-ip")], PeerSource::MeshPeers).await;
    h.server.create(pod("a1", NODE, "10.244.0.5")).expect("a pod here");
    h.server.create(pod("b1", "node-b", "10.244.1.5")).expect("a pod on node-b");
    let b = offer_peer_with_pods(&h.server, "node-b", ("198.18.0.2", "10.244.1.0/24"), &["10.244.1.6"]);
    poll("node-b's MeshPeer in the store", || (h.agent.io.nodes.state().len() == 1).then_some(())).await;
    assert!(h.pass().await, "first pass");
    let own_pods = |server: &TestApiServer| {
        server.get("meshcrypt.dev/v1alpha1", "MeshPeer", None, NODE).expect("its MeshPeer")["spec"]["podIPs"]
            .clone()
    };
    // The first pass started the Pod watcher; a pass after it has listed offers the pod.
    poll("its pod in the Pod store", || (h.agent.io.pods.get()?.state().len() == 1).then_some(())).await;
    assert!(h.pass().await);
    assert_eq!(own_pods(&h.server), json!(["10.244.0.5"]), "its own Pods' addresses");
    let peers = h.backend.device().unwrap().observe().unwrap().peers;
    let peer = peers.iter().find(|p| p.public_key == b.public_key).expect("node-b a peer");
    let allowed: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
    assert_eq!(allowed, ["10.244.1.6/32", "198.18.0.2/32"], "node-b's offer, not its Pod objects");

    h.server.delete("v1", "Pod", Some("default"), "a1").unwrap();
    poll("the pod gone from the store", || h.agent.io.pods.get()?.state().is_empty().then_some(())).await;
    assert!(h.pass().await);
    assert_eq!(own_pods(&h.server), Value::Null, "no Pods, no addresses");
}
