//! A stateful test Kubernetes API server over real HTTP, faithful to what kube-rs and kubectl need.
//!
//! Objects are stored as generic JSON with one global, monotonically increasing resourceVersion and
//! a bounded event history. Served: Nodes (with `/status`), Pods, ConfigMaps, Secrets,
//! ServiceAccounts, Events, Leases, Namespaces and meshcrypt's RemoteClusters, MeshNodes and MeshPeers; get,
//! list (paged with `limit`/`continue`, label and field selectors), watch (history replay,
//! synthetic initial events, streaming lists, bookmarks, `timeoutSeconds`, 410 Expired in-stream),
//! create, update (409 on a stale resourceVersion), delete, and all four patch types including
//! server-side apply with per-manager field ownership. Deleting an object deletes, at once, every
//! object all of whose owners (`ownerReferences`) are then gone, as the garbage collector's
//! background cascade does shortly after. Every write takes a server-side dry run
//! (`dryRun=All`, or `dryRun: [All]` in a delete's options), answered as if done with nothing
//! stored, no resourceVersion taken and no watch event (`kubectl diff`, `--dry-run=server`). A
//! write that would leave `metadata.annotations` over 256 KiB (keys and values) is refused with 422
//! Invalid, as a real server refuses it. Discovery, `/version` and an abridged OpenAPI v3 document
//! are enough for kubectl's get (with a real server's Node and Event columns, `-o wide` too),
//! describe, annotate, patch, apply and `apply --server-side`. Bodies of creates and updates may be
//! JSON, YAML or, for the kinds kubectl's `create` commands send that way (Namespace, ConfigMap,
//! Secret, ServiceAccount), the protobuf encoding; a protobuf body of another kind is refused with
//! 415 and a Status saying so.
//!
//! Events are one resource in two versions, as on a real server: stored once as core/v1 and
//! served as core/v1 and events.k8s.io/v1 with Kubernetes' field mapping (`note`/`message`,
//! `regarding`/`involvedObject`, `reportingController`/`reportingComponent`, the `deprecated*`
//! fields), so lists, watches and field selectors of either version see Events written through
//! the other, and `kubectl get events` and `kubectl describe` show them as on a real server. Field
//! ownership of Events is kept in core/v1's field names whichever version wrote them (a real
//! server keeps each manager's in its own version).
//!
//! Start one in-process with [`TestApiServer::start`] (or on listeners you created, e.g. inside a
//! network namespace, with [`TestApiServer::serve_listeners`]); the `test-apiserver` binary wraps
//! the same server for people and for kubectl-driven tests.
//!
//! Authentication is by bearer token: the admin token may do anything; a node token (see
//! [`TestApiServer::add_node_token`]) authenticates as [`NODE_USER`] with [`NODE_NAME_EXTRA`] set
//! to its node, may read anything, create and patch Events, and modify only its own Node, MeshNode and
//! MeshPeer.
//! SelfSubjectAccessReviews (`kubectl auth can-i`) are answered by this same authorizer.
//!
//! kube-rs sends bearer tokens over plain http, kubectl only over https: set
//! [`ApiServerConfig::tls`] (the binary's default) to serve https with a fixed test certificate
//! for 127.0.0.1, `::1` and `localhost` whose CA is [`TEST_CA_PEM`];
//! [`TestApiServer::write_kubeconfig`] embeds that CA.
//!
//! Modules: `server` (listeners, routes, the helper API), `handlers` (one per verb), `store`
//! (objects, resourceVersions, history), `watch`, `patch` and `apply` (the four patch types,
//! server-side apply with field ownership), `protobuf` (kubectl's protobuf bodies), `resources` and
//! `discovery` (what is served), `versions` (one stored object served in two versions),
//! `validation`, `selectors`, `table` (kubectl's table output), `auth` (tokens and the node
//! authorizer), `review` (`kubectl auth can-i`), `kubeconfig`, `tls`, `timestamp`, `error`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meshcrypt_test_apiserver::ApiServerError> {
//! use meshcrypt_test_apiserver::{ApiServerConfig, TestApiServer};
//!
//! let server = TestApiServer::start(ApiServerConfig::default()).await?;
//! server.create(TestApiServer::node_object("node-a", "10.244.1.0/24", "198.18.0.1"))?;
//! let token = server.add_node_token("node-a");
//! server.write_kubeconfig(std::path::Path::new("/tmp/node-a.kubeconfig"), &token)?;
//! // ... point a kube::Client at server.url() with that token ...
//! server.compact(); // watches from older resourceVersions now get 410 Expired
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod apply;
mod auth;
mod discovery;
mod error;
mod handlers;
mod kubeconfig;
mod patch;
mod protobuf;
mod resources;
mod review;
mod selectors;
mod server;
mod store;
mod table;
mod timestamp;
mod tls;
mod traffic;
mod validation;
mod versions;
mod watch;

pub use auth::{Identity, NODE_NAME_EXTRA, NODE_USER};
pub use error::ApiServerError;
pub use kubeconfig::{kubeconfig_yaml, kubeconfig_yaml_via};
pub use server::{ApiServerConfig, TestApiServer};
pub use tls::TEST_CA_PEM;
pub use traffic::Traffic;
