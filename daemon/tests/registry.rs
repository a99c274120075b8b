//! Two clusters exchange their nodes through Secrets Manager: two test API servers, moto on
//! loopback, and real `meshcrypt registry` processes (two replicas in cluster a, one in b). Each
//! cluster's RemoteCluster lists the other's nodes; a node added in a reaches b's RemoteCluster
//! within a poll; the active replica of a is killed and the standby takes the Lease and goes on.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use meshcrypt_keyexchange::{NodeKeyAnnotations, PrivateKey};
use meshcrypt_registry::testing::{CREDENTIALS, MotoServer, REGION};
use meshcrypt_test_apiserver::{ApiServerConfig, TestApiServer};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

/// A `meshcrypt registry` process, killed on drop.
struct Registry {
    child: Child,
    identity: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    id: &'static str,
    server: TestApiServer,
    kubeconfig: std::path::PathBuf,
    key_file: std::path::PathBuf,
    key: SigningKey,
}

async fn cluster(id: &'static str, dir: &Path, octet: u8, nodes: u8) -> Cluster {
    let server = TestApiServer::start(ApiServerConfig::default()).await.expect("API server");
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "meshcrypt-system"}}))
        .unwrap();
    for i in 0..nodes {
        add_node(&server, octet, i);
    }
    let kubeconfig = dir.join(format!("{id}.kubeconfig"));
    server.write_kubeconfig(&kubeconfig, server.admin_token()).unwrap();
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let key_file = dir.join(format!("{id}.signing.key"));
    meshcrypt_keyexchange::write_private(dir, &key_file, STANDARD.encode(key.to_bytes()).as_bytes()).unwrap();
    Cluster { id, server, kubeconfig, key_file, key }
}

/// Node `i` of the cluster whose addresses use `octet`: pod CIDR 10.`octet`.`i`.0/24, InternalIP
/// 198.`octet`.0.`i+1`, a published key.
fn add_node(server: &TestApiServer, octet: u8, i: u8) {
    let name = format!("node-{octet}-{i}");
    let node = TestApiServer::node_object(
        &name,
        &format!("10.{octet}.{i}.0/24"),
        &format!("198.{octet}.0.{}", i + 1),
    );
    server.create(node).unwrap();
    let key = NodeKeyAnnotations {
        public_key: PrivateKey::generate().public_key(),
        epoch: 0,
        created: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
    };
    let patch = json!({"metadata": {"annotations": key.to_annotations()}});
    server.merge_patch("v1", "Node", None, &name, &patch, false).unwrap();
}

/// `--peer` for `peer`, with `more` (`,prefix=…,region=…`) after its key.
fn peer_arg(peer: &Cluster, more: &str) -> String {
    format!("--peer={}={}{more}", peer.id, STANDARD.encode(peer.key.verifying_key().as_bytes()))
}

fn spawn(me: &Cluster, peer: &Cluster, moto: &MotoServer, identity: &str, dir: &Path) -> Registry {
    let args = [peer_arg(peer, ""), "--region".into(), REGION.into()];
    spawn_with(me, &args, moto, identity, dir)
}

/// A registry of `me` with `args` (its peers and where its secrets live).
fn spawn_with(me: &Cluster, args: &[String], moto: &MotoServer, identity: &str, dir: &Path) -> Registry {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{identity}.log")))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_meshcrypt"))
        .args(["registry", "--cluster-id", me.id, "--identity", identity])
        .args(args)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--signing-key")
        .arg(&me.key_file)
        .arg("--kubeconfig")
        .arg(&me.kubeconfig)
        .args(["--endpoint-url", &moto.url])
        .args(["--publish-interval", "1", "--poll-interval", "1", "--lease-seconds", "3"])
        .args(["--publishes-per-day", "1440"])
        .env("AWS_ACCESS_KEY_ID", CREDENTIALS.0)
        .env("AWS_SECRET_ACCESS_KEY", CREDENTIALS.1)
        .env("MESHCRYPT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn meshcrypt registry");
    Registry { child, identity: identity.to_owned() }
}

/// The node names `server`'s RemoteCluster `name` lists (empty while there is none).
fn remote_nodes(server: &TestApiServer, name: &str) -> Vec<String> {
    let Ok(object) = server.get("meshcrypt.dev/v1alpha1", "RemoteCluster", None, name) else { return vec![] };
    object["spec"]["nodes"]
        .as_array()
        .map(|nodes| nodes.iter().filter_map(|n| n["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Polls `check` every 50 ms (without blocking the runtime the API servers run on) until it holds,
/// failing with every registry's log at [`DEADLINE`].
async fn wait_for(what: &str, dir: &Path, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        if start.elapsed() > DEADLINE {
            let logs: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
                .map(|e| {
                    format!(
                        "--- {}\n{}",
                        e.path().display(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    )
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

fn status(server: &TestApiServer, name: &str) -> Value {
    server
        .get("meshcrypt.dev/v1alpha1", "RemoteCluster", None, name)
        .map(|o| o["status"].clone())
        .unwrap_or_default()
}

/// Writes `manifest` as secret `id`'s new current version (someone with write access to the
/// secrets, but not the signing key).
async fn put_manifest(sm: &aws_sdk_secretsmanager::Client, id: &str, manifest: &Value) {
    let value = aws_sdk_secretsmanager::primitives::Blob::new(serde_json::to_vec(manifest).unwrap());
    sm.put_secret_value().secret_id(id).secret_binary(value).send().await.unwrap();
}

fn holder(server: &TestApiServer) -> Option<String> {
    let lease: Value =
        server.get("coordination.k8s.io/v1", "Lease", Some("meshcrypt-system"), "meshcrypt-registry").ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_exchange_their_nodes_and_a_standby_registry_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start();
    let a = cluster("a", dir.path(), 20, 3).await;
    let b = cluster("b", dir.path(), 30, 2).await;
    let mut a_replicas =
        vec![spawn(&a, &b, &moto, "a-0", dir.path()), spawn(&a, &b, &moto, "a-1", dir.path())];
    let _b = spawn(&b, &a, &moto, "b-0", dir.path());

    wait_for("cluster b to list cluster a's 3 nodes", dir.path(), || remote_nodes(&b.server, "a").len() == 3)
        .await;
    wait_for("cluster a to list cluster b's 2 nodes", dir.path(), || remote_nodes(&a.server, "b").len() == 2)
        .await;
    // The spec and the status are two writes: wait for the status too.
    wait_for("b's status of a", dir.path(), || status(&b.server, "a")["nodes"] == 3).await;
    assert!(status(&b.server, "a")["fetched"].is_string());
    let object = b.server.get("meshcrypt.dev/v1alpha1", "RemoteCluster", None, "a").unwrap();
    let node = &object["spec"]["nodes"][0];
    assert_eq!(node["endpoint"], "198.20.0.1:51820");
    assert_eq!(node["allowedIPs"], json!(["10.20.0.0/24", "198.20.0.1/32"]));

    // Someone with write access to a's secrets but not its signing key raises the generation:
    // b refuses it with an Event and keeps a's nodes.
    let sm = moto.client();
    let current = sm.get_secret_value().secret_id("meshcrypt/a").send().await.unwrap();
    let mut manifest: Value = serde_json::from_slice(current.secret_binary().unwrap().as_ref()).unwrap();
    manifest["generation"] = json!(manifest["generation"].as_u64().unwrap() + 1000);
    put_manifest(&sm, "meshcrypt/a", &manifest).await;
    wait_for("b's BundleRejected Event about a", dir.path(), || {
        b.server.list("events.k8s.io/v1", "Event").unwrap_or_default().iter().any(|e| {
            e["reason"] == "BundleRejected"
                && e["regarding"]["kind"] == "RemoteCluster"
                && e["regarding"]["name"] == "a"
        })
    })
    .await;
    wait_for("b's status of a to say why it is stale", dir.path(), || {
        status(&b.server, "a")["message"].as_str().is_some_and(|m| m.contains("signature"))
    })
    .await;
    assert!(status(&b.server, "a")["staleSince"].is_string());
    assert_eq!(remote_nodes(&b.server, "a").len(), 3, "the last good nodes stay");

    // The same manifest without its signature: refused too, and reported again.
    manifest.as_object_mut().unwrap().remove("signature");
    put_manifest(&sm, "meshcrypt/a", &manifest).await;
    // (The Recorder folds a repeated reason into the first Event's series; the status says why.)
    wait_for("b's status of a: unsigned", dir.path(), || {
        status(&b.server, "a")["message"].as_str().is_some_and(|m| m.contains("not signed"))
    })
    .await;
    let rejected: Vec<Value> = b
        .server
        .list("events.k8s.io/v1", "Event")
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["reason"] == "BundleRejected" && e["regarding"]["name"] == "a")
        .collect();
    let count: u64 = rejected.iter().map(|e| e["series"]["count"].as_u64().unwrap_or(1)).sum();
    assert!(count >= 2, "both refusals raised an Event: {rejected:?}");
    assert_eq!(remote_nodes(&b.server, "a").len(), 3, "the last good nodes stay");

    add_node(&a.server, 20, 3);
    let took = wait_for("a new node of a in b's RemoteCluster", dir.path(), || {
        remote_nodes(&b.server, "a").len() == 4
    })
    .await;
    wait_for("b's status of a fresh again", dir.path(), || status(&b.server, "a")["staleSince"].is_null())
        .await;
    eprintln!("node added in a → listed in b after {took:?} (publish and poll intervals 1 s)");

    let active = wait_for_holder(&a.server, dir.path()).await;
    let index =
        a_replicas.iter().position(|r| r.identity == active).expect("the holder is one of a's replicas");
    drop(a_replicas.remove(index));
    add_node(&a.server, 20, 4);
    let took = wait_for("the standby to publish a's fifth node", dir.path(), || {
        remote_nodes(&b.server, "a").len() == 5
    })
    .await;
    eprintln!("active replica killed → the standby's publish reached b after {took:?} (lease 3 s)");
    assert_eq!(holder(&a.server).as_deref(), Some(a_replicas[0].identity.as_str()));
}

async fn wait_for_holder(server: &TestApiServer, dir: &Path) -> String {
    let mut found = None;
    wait_for("a Lease holder", dir, || {
        found = holder(server).filter(|h| !h.is_empty());
        found.is_some()
    })
    .await;
    found.unwrap()
}

/// Where a peer's secrets live is per peer (another prefix and region); a restarted registry
/// refuses an older bundle put back (it resumes from the generation its RemoteCluster holds); and
/// a peer removed from the configuration loses its RemoteCluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_peer_locations_replays_after_a_restart_and_removed_peers() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start();
    let a = cluster("a", dir.path(), 20, 3).await;
    let b = cluster("b", dir.path(), 30, 1).await;
    // a keeps its secrets under team-a/ in us-west-2; b (in eu-west-1) reads them there.
    let a_args = [
        peer_arg(&b, ",prefix=meshcrypt,region=eu-west-1"),
        "--region=us-west-2".into(),
        "--secret-prefix=team-a".into(),
    ];
    let _a = spawn_with(&a, &a_args, &moto, "a-0", dir.path());
    let b_args = [peer_arg(&a, ",prefix=team-a,region=us-west-2"), format!("--region={REGION}")];
    let b0 = spawn_with(&b, &b_args, &moto, "b-0", dir.path());
    wait_for("b to list a's 3 nodes from team-a/ in us-west-2", dir.path(), || {
        remote_nodes(&b.server, "a").len() == 3
    })
    .await;
    wait_for("a to list b's node", dir.path(), || remote_nodes(&a.server, "b").len() == 1).await;

    // Keep a's bundle as it is now (one shard), then let a publish a newer one.
    let sm = {
        let config = moto
            .client()
            .config()
            .to_builder()
            .region(aws_sdk_secretsmanager::config::Region::new("us-west-2"))
            .build();
        aws_sdk_secretsmanager::Client::from_conf(config)
    };
    let read = |id: &'static str| {
        let sm = sm.clone();
        async move { sm.get_secret_value().secret_id(id).send().await.unwrap().secret_binary().unwrap().clone() }
    };
    let (old_manifest, old_shard) = (read("team-a/a").await, read("team-a/a/0").await);
    add_node(&a.server, 20, 3);
    wait_for("b to list a's 4th node", dir.path(), || remote_nodes(&b.server, "a").len() == 4).await;

    // b's registry restarts while someone with write access puts the older, validly signed bundle
    // back: the new process refuses it and a's 4 nodes stay.
    drop(b0);
    for (id, value) in [("team-a/a/0", old_shard), ("team-a/a", old_manifest)] {
        sm.put_secret_value().secret_id(id).secret_binary(value).send().await.unwrap();
    }
    let _b0 = spawn_with(&b, &b_args, &moto, "b-0", dir.path());
    wait_for("b's restarted registry refusing the replayed bundle", dir.path(), || {
        b.server.list("events.k8s.io/v1", "Event").unwrap_or_default().iter().any(|e| {
            e["reason"] == "BundleRejected"
                && e["regarding"]["name"] == "a"
                && e["note"].as_str().is_some_and(|n| n.contains("replay or rollback"))
        })
    })
    .await;
    assert_eq!(remote_nodes(&b.server, "a").len(), 4, "the last good nodes stay");

    // a is no longer b's peer: its RemoteCluster goes, and with it a's nodes from b's agents.
    drop(_b0);
    let _b1 = spawn_with(&b, &[format!("--region={REGION}")], &moto, "b-1", dir.path());
    wait_for("b's RemoteCluster a removed", dir.path(), || {
        b.server.get("meshcrypt.dev/v1alpha1", "RemoteCluster", None, "a").is_err()
    })
    .await;
}
