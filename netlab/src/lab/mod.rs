//! The network lab: an underlay bridge, node namespaces and pod namespaces, removed on drop.
//!
//! ```text
//!   underlay ns: br0 198.18.0.1/15 ("services", where the test API server listens)
//!     ├─ node0 ══ eth0 198.18.0.10 [node-0 ns, forwarding] ─ pod0 ══ eth0 10.244.0.10 [pod-0-0 ns]
//!     │                                                     └ pod1 ══ eth0 10.244.0.11 [pod-0-1 ns]
//!     └─ node1 ══ eth0 198.18.0.11 [node-1 ns] …             (══ is a veth pair)
//! ```
//!
//! The address plan and routing (pods on /32s behind a per-node gateway address, host-gateway
//! routes between nodes, optional dual stack) are described in [`addressing`]. Every namespace name
//! starts with a per-run prefix `mclab-<pid hex>-<n>-`; a new lab first removes the namespaces of
//! runs whose process is gone ([`naming::sweep_stale`]). Dropping a [`Lab`] stops its processes and
//! deletes its namespaces, also while a panic unwinds; [`leftovers`] checks that nothing remains.
//!
//! [`LabBuilder::vpc_cni`] builds the VPC-CNI-like variant instead (pods scattered over the nodes
//! from one shared range, per-pod routes, the CNI's policy rules and ENI table): see [`vpc_cni`].
//! Pods can be added and removed while a lab runs ([`Lab::add_pod`], [`Lab::remove_pod`]), as can
//! nodes.
//!
//! Code that must run inside a namespace (binding a listener there, for instance) uses
//! [`Lab::run_in`]; programs run with [`Lab::exec`] (to completion) or [`Lab::spawn`] (owned by the
//! lab, stopped on drop; [`SpawnOptions::private_dirs`] gives each its own `/run/wireguard`).
//!
//! Needs root, iproute2 (`ip`), and iputils-ping for [`Lab::ping`].

pub mod addressing;
mod builder;
mod command;
mod connectivity;
mod error;
mod instance;
pub mod leftovers;
mod model;
pub mod naming;
pub mod netns;
mod options;
mod processes;
pub mod vpc_cni;

pub use addressing::BRIDGE;
pub use builder::LabBuilder;
pub use connectivity::{PING_DEADLINE_SECS, TCP_TIMEOUT};
pub use error::LabError;
pub use instance::Lab;
pub use model::{Node, Pod};
pub use options::LabOptions;
pub use processes::{LabProcess, STOP_GRACE, SpawnOptions, wg_via, worker_threads};
