//! Starting, configuring, using and stopping the server: [`TestApiServer`] and its config.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::auth::{Identity, Tokens};
use super::error::ApiServerError;
use super::handlers::{AppState, dispatch};
use super::kubeconfig;
use super::patch::PatchKind;
use super::resources::{self, ResourceDef};
use super::store::{Store, WriteContext};
use super::tls::TlsListener;
use super::traffic::{Traffic, TrafficLog};

/// How to run a [`TestApiServer`].
#[derive(Debug, Clone)]
pub struct ApiServerConfig {
    /// Address to bind when the server creates its own listener (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// The admin bearer token; a random one when `None`.
    pub admin_token: Option<String>,
    /// `(node name, token)` pairs for node identities.
    pub node_tokens: Vec<(String, String)>,
    /// Interval between watch bookmarks (default 3 s).
    pub bookmark_interval: Duration,
    /// How many events the watch history keeps (default 10 000).
    pub history_limit: usize,
    /// Objects created at start (before anything can watch).
    pub seed: Vec<Value>,
    /// Serve https with the test certificate ([`TEST_CA_PEM`](super::TEST_CA_PEM)) instead of plain http. kubectl
    /// sends bearer tokens only over https; kube-rs sends them over either.
    pub tls: bool,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: None,
            node_tokens: Vec::new(),
            bookmark_interval: Duration::from_secs(3),
            history_limit: 10_000,
            seed: Vec::new(),
            tls: false,
        }
    }
}

impl ApiServerConfig {
    /// Reads seed objects from a YAML or JSON file: one object, a list of objects, a `v1 List`
    /// (`items`), or several YAML documents.
    pub fn load_seed(path: &Path) -> Result<Vec<Value>, ApiServerError> {
        let text = std::fs::read_to_string(path)?;
        let mut out = Vec::new();
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| ApiServerError::Parse(format!("{}: {e}", path.display())))?;
            match v {
                Value::Null => {}
                Value::Array(items) => out.extend(items),
                Value::Object(ref m) if m.get("items").is_some_and(Value::is_array) => {
                    out.extend(m["items"].as_array().cloned().unwrap_or_default())
                }
                other => out.push(other),
            }
        }
        Ok(out)
    }
}

/// A running test API server. Dropping it stops it (use [`TestApiServer::shutdown`] to wait).
pub struct TestApiServer {
    state: Arc<AppState>,
    addrs: Vec<SocketAddr>,
    admin_token: String,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    tls: bool,
}

impl std::fmt::Debug for TestApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApiServer").field("addrs", &self.addrs).finish_non_exhaustive()
    }
}

/// A random hex token (not cryptographically strong; this is a test server).
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn resource_of(api_version: &str, kind: &str) -> Result<ResourceDef, ApiServerError> {
    resources::lookup_kind(api_version, kind).ok_or_else(|| {
        ApiServerError::NotFound(format!("no resource for apiVersion {api_version:?} kind {kind:?}"))
    })
}

fn namespace_for(res: &ResourceDef, namespace: Option<&str>) -> String {
    if res.namespaced { namespace.unwrap_or("default").to_string() } else { String::new() }
}

const HELPER_MANAGER: &str = "test-apiserver";

async fn serve<L>(listener: L, router: axum::Router, mut stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "test API server stopped with an error");
    }
}

impl TestApiServer {
    /// Binds `config.listen` and serves.
    pub async fn start(config: ApiServerConfig) -> Result<Self, ApiServerError> {
        let listener = std::net::TcpListener::bind(config.listen)?;
        Self::serve_listeners(config, vec![listener]).await
    }

    /// Serves on listeners the caller created (for example inside a network namespace);
    /// `config.listen` is ignored. Must be called inside a Tokio runtime.
    pub async fn serve_listeners(
        config: ApiServerConfig,
        listeners: Vec<std::net::TcpListener>,
    ) -> Result<Self, ApiServerError> {
        if listeners.is_empty() {
            return Err(ApiServerError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no listeners",
            )));
        }
        let store = Arc::new(Store::new(config.history_limit));
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            store.ensure_namespace(ns)?;
        }
        let tokens = Tokens::default();
        let admin_token = config.admin_token.clone().unwrap_or_else(random_token);
        tokens.insert(admin_token.clone(), Identity::Admin);
        for (node, token) in &config.node_tokens {
            tokens.insert(token.clone(), Identity::Node(node.clone()));
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let state = Arc::new(AppState {
            store,
            tokens,
            bookmark_interval: config.bookmark_interval,
            shutdown: shutdown_rx,
            traffic: TrafficLog::default(),
        });
        let server = Self {
            state: state.clone(),
            addrs: Vec::new(),
            admin_token,
            shutdown_tx,
            tasks: Vec::new(),
            tls: config.tls,
        };
        for obj in config.seed {
            server.create(obj)?;
        }
        let mut server = server;
        server.spawn_listeners(listeners)?;
        Ok(server)
    }

    /// Each client's requests and response bytes since the start or the last
    /// [`TestApiServer::reset_traffic`], by `admin`, `reader`, `node:NAME` or `anonymous`.
    pub fn traffic(&self) -> std::collections::BTreeMap<String, Traffic> {
        self.state.traffic.snapshot()
    }

    /// Starts counting traffic afresh.
    pub fn reset_traffic(&self) {
        self.state.traffic.reset();
    }

    /// The base URL of the first listener, e.g. `http://127.0.0.1:41234` (`https` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addrs[0])
    }

    /// Whether the server speaks TLS (with the certificate of [`TEST_CA_PEM`](super::TEST_CA_PEM)).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The addresses served.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Creates (and returns) a new random token for the agent on `node`.
    pub fn add_node_token(&self, node: &str) -> String {
        let token = random_token();
        self.add_token(&token, Identity::Node(node.to_string()));
        token
    }

    /// Creates (and returns) a new random token that may only read (an auditor's).
    pub fn add_reader_token(&self) -> String {
        let token = random_token();
        self.add_token(&token, Identity::Reader);
        token
    }

    /// Accepts `token` as `identity` from now on.
    pub fn add_token(&self, token: &str, identity: Identity) {
        self.state.tokens.insert(token.to_string(), identity);
    }

    /// Writes a kubeconfig for this server with `token` to `path`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> Result<(), ApiServerError> {
        kubeconfig::write(path, &self.url(), token)
    }

    /// Drops the watch history: a watch from any earlier resourceVersion gets 410 Expired, and
    /// open watches end with a 410 Expired event (so watchers relist).
    pub fn compact(&self) {
        self.state.store.compact();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state.store.current_rv()
    }

    /// Creates an object directly (no HTTP, no authorization); its resource comes from
    /// `apiVersion`/`kind`, a namespaced object defaults to namespace `default`, and a missing
    /// namespace is created. `status` is kept as given.
    pub fn create(&self, obj: Value) -> Result<Value, ApiServerError> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let res = resource_of(api_version, kind)?;
        let ns = namespace_for(&res, obj.pointer("/metadata/namespace").and_then(Value::as_str));
        if res.namespaced {
            self.state.store.ensure_namespace(&ns)?;
        }
        self.state.store.create(&res, &ns, obj, &WriteContext::manager(HELPER_MANAGER))
    }

    /// Gets an object directly.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiServerError> {
        let res = resource_of(api_version, kind)?;
        self.state.store.get(&res, &namespace_for(&res, namespace), name)
    }

    /// Every object of a kind, across namespaces.
    pub fn list(&self, api_version: &str, kind: &str) -> Result<Vec<Value>, ApiServerError> {
        Ok(self.state.store.all(&resource_of(api_version, kind)?))
    }

    /// Replaces an object directly (main resource; a `metadata.resourceVersion` must be current).
    pub fn replace(&self, obj: Value) -> Result<Value, ApiServerError> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let res = resource_of(api_version, kind)?;
        let ns = namespace_for(&res, obj.pointer("/metadata/namespace").and_then(Value::as_str));
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        self.state.store.update(&res, &ns, &name, obj, &WriteContext::manager(HELPER_MANAGER))
    }

    /// Applies a JSON merge patch directly, to the main resource or (`status: true`) to the
    /// status subresource (the only way, besides HTTP, to change a Node's `status.addresses`
    /// after creation).
    pub fn merge_patch(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
        status: bool,
    ) -> Result<Value, ApiServerError> {
        self.merge_patch_as(HELPER_MANAGER, api_version, kind, namespace, name, patch, status)
    }

    /// [`TestApiServer::merge_patch`] recorded under field manager `manager` (e.g. `kubelet` for
    /// a Node's status heartbeat: its `managedFields` entry is then kubelet's, as on a cluster).
    #[allow(clippy::too_many_arguments)]
    pub fn merge_patch_as(
        &self,
        manager: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
        status: bool,
    ) -> Result<Value, ApiServerError> {
        let res = resource_of(api_version, kind)?;
        let ctx = WriteContext {
            manager: manager.to_string(),
            subresource: status.then(|| "status".to_string()),
            dry_run: false,
        };
        self.state.store.patch(
            &res,
            &namespace_for(&res, namespace),
            name,
            PatchKind::Merge,
            patch.to_string().as_bytes(),
            false,
            &ctx,
        )
    }

    /// Deletes an object directly, returning its last state.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiServerError> {
        let res = resource_of(api_version, kind)?;
        self.state.store.delete(&res, &namespace_for(&res, namespace), name, None, false)
    }

    /// A minimal Node object (for seeding): name, `spec.podCIDRs` and an InternalIP address.
    pub fn node_object(name: &str, pod_cidr: &str, internal_ip: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
            "status": {"addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name}
            ]},
        })
    }

    fn spawn_listeners(&mut self, listeners: Vec<std::net::TcpListener>) -> Result<(), ApiServerError> {
        self.addrs.clear();
        for listener in listeners {
            listener.set_nonblocking(true)?;
            let addr = listener.local_addr()?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let router = axum::Router::new().fallback(dispatch).with_state(self.state.clone());
            let stop = self.shutdown_tx.subscribe();
            let task = if self.tls {
                tokio::spawn(serve(TlsListener::new(listener)?, router, stop))
            } else {
                tokio::spawn(serve(listener, router, stop))
            };
            self.tasks.push(task);
            tracing::info!(%addr, "test API server listening");
            self.addrs.push(addr);
        }
        Ok(())
    }

    /// An outage: stops serving (open watches end, listeners close) but keeps every object, as
    /// a restarting API server keeps etcd. [`TestApiServer::resume`] serves again.
    pub async fn pause(&mut self) {
        let _ = self.shutdown_tx.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                abort.abort();
            }
        }
        tracing::info!("test API server paused");
    }

    /// Serves again after [`TestApiServer::pause`] on new listeners (bind them to the old
    /// addresses to look like a restart), with the watch history gone: a client re-watching from
    /// its last resourceVersion gets 410 Expired and relists. resourceVersions continue.
    pub fn resume(&mut self, listeners: Vec<std::net::TcpListener>) -> Result<(), ApiServerError> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        self.shutdown_tx = shutdown_tx;
        self.state = Arc::new(AppState {
            store: self.state.store.clone(),
            tokens: self.state.tokens.clone(),
            bookmark_interval: self.state.bookmark_interval,
            shutdown: shutdown_rx,
            traffic: self.state.traffic.clone(),
        });
        self.state.store.compact();
        self.spawn_listeners(listeners)
    }

    /// Stops serving: open watches end, in-flight requests finish (up to 5 s), then returns.
    pub async fn shutdown(mut self) {
        self.pause().await;
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}
