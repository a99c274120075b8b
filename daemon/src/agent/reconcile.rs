//! One reconcile pass, in three phases: [`gather`] reads every input, [`decide`] (pure) turns
//! them into a plan, [`execute`] applies it in a fixed order. A pass that creates the device runs
//! the phases once more to program it. The loop's memory ([`LoopState`]) is separate from the IO
//! handles ([`Io`]).

use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::ObjectRef;
use meshcrypt_dataplane::WireGuardBackend;
use meshcrypt_routing::Kernel;
use tracing::Instrument as _;

use super::decide::{Params, PassPlan, Readiness, decide};
use super::execute::{Outcome, execute};
use super::gather::{Source, gather};
use super::io::Io;
use super::last_known::LastKnown;
use super::publish::{STARTUP_TAINT, remove_startup_taint};
use super::state::LoopState;
use crate::error::AgentError;

/// The reconcile loop's parts: what never changes, the IO handles, and the loop's memory.
pub struct Reconciler<K: Kernel, B: WireGuardBackend> {
    /// This agent's node and kernel objects.
    pub params: Params,
    /// The IO handles.
    pub io: Io<K, B>,
    /// The loop's memory.
    pub state: LoopState,
}

impl<K: Kernel, B: WireGuardBackend> Reconciler<K, B> {
    /// Before the first complete Node list: programs the device and the fail-closed floor from
    /// this node's own Node alone (its pod prefixes stay local, everything else in the pod network
    /// is dropped), so that no pod packet leaves in plaintext while the agent waits for the full
    /// list. No peers are configured and readiness is not claimed.
    pub async fn bootstrap(&mut self, local: &Node, now: jiff::Timestamp) -> Result<(), AgentError> {
        let span = tracing::info_span!("bootstrap", node = %self.params.node);
        self.run(&Source::LocalOnly(Box::new(local.clone())), now).instrument(span).await.map(|_| ())
    }

    /// Programs the device and the kernel from the last known peer set, before the API server has
    /// answered (an agent restarted during a control-plane outage carries traffic at once).
    /// Readiness stays false, with the reason, until a pass with the API server's list succeeds;
    /// that pass replaces everything restored here. Returns the number of peers restored.
    pub async fn restore(&mut self, last: LastKnown, now: jiff::Timestamp) -> Result<usize, AgentError> {
        let peers = last.peer_set()?;
        let count = peers.peers.len();
        let span = tracing::info_span!("restore", node = %self.params.node, saved = %last.saved);
        let plan = self.run(&Source::LastKnown(Box::new(last.clone()), peers), now).instrument(span).await?;
        if let Readiness::NotReady(reason) = plan.readiness {
            self.io.health.set_ready(false, reason);
        }
        self.state.last_known = Some(last);
        Ok(count)
    }

    /// Runs one pass over the Node store at `now` inside its own span, recording the outcome
    /// (readiness, metrics, the `MeshReady` Event, the startup taint); true if it succeeded.
    pub async fn pass(&mut self, now: jiff::Timestamp) -> bool {
        self.state.passes += 1;
        let span = tracing::info_span!("reconcile", pass = self.state.passes, node = %self.params.node);
        let result = self.run(&Source::Api, now).instrument(span.clone()).await;
        self.io.metrics.reconciles.inc();
        self.io.metrics.set_key(&self.state.key);
        self.io.health.tick();
        match result {
            Ok(plan) => {
                self.state.failure = None;
                let Readiness::Ready(reason) = plan.readiness else { return true };
                let first = !self.io.health.set_ready(true, reason);
                self.io.metrics.ready.set(1);
                let enabled = plan.settings.as_ref().is_some_and(|s| s.enabled);
                span.in_scope(|| {
                    tracing::debug!(
                        peers = plan.peers,
                        device_ops = plan.peer_ops.len(),
                        kernel_ops = plan.kernel.ops.len(),
                        "reconciled"
                    );
                    if first && enabled {
                        tracing::info!(peers = plan.peers, "mesh programmed: device and routes in place");
                    }
                });
                if first && enabled {
                    let note =
                        format!("{} peers; key {}", plan.peers, self.state.key.public_key.fingerprint());
                    self.io
                        .events
                        .normal(&self.params.node, "MeshReady", &note)
                        .instrument(span.clone())
                        .await;
                }
                if plan.untaint {
                    self.untaint().instrument(span).await;
                }
                true
            }
            Err(e) => {
                self.io.metrics.reconcile_errors.inc();
                self.io.health.set_ready(false, format!("the last reconcile pass failed: {e}"));
                self.io.metrics.ready.set(0);
                span.in_scope(|| tracing::warn!(error = %e, "reconcile failed; the last programmed state stays in force"));
                let failure = e.to_string();
                if self.state.failure.as_ref() != Some(&failure) {
                    let note = format!("{failure}; the last programmed state stays in force, retrying");
                    self.io
                        .events
                        .warning(&self.params.node, "ReconcileFailed", &note)
                        .instrument(span)
                        .await;
                    self.state.failure = Some(failure);
                }
                false
            }
        }
    }

    /// Gather, decide, execute; again once if the device was created.
    async fn run(&mut self, source: &Source, now: jiff::Timestamp) -> Result<PassPlan, AgentError> {
        for _ in 0..2 {
            let inputs = gather(&mut self.io, &self.params, &self.state, source, now).await?;
            let plan = decide(&self.params, &self.state, &inputs);
            if execute(&mut self.io, &self.params, &mut self.state, &plan).await? == Outcome::Done {
                return Ok(plan);
            }
        }
        // A device created in this pass is gone again already; the next pass starts over.
        Err(AgentError::DeviceGone { ifname: self.params.ifname.clone() })
    }

    /// Removes this node's startup taint once the mesh is in place (a failure is a WARN; the next
    /// pass tries again).
    async fn untaint(&self) {
        let Some(local) = self.io.nodes.get(&ObjectRef::new(&self.params.node)) else { return };
        if let Err(e) = remove_startup_taint(&self.io.client, &local).await {
            tracing::warn!(error = %e, taint = STARTUP_TAINT, "cannot remove the startup taint yet");
        }
    }
}
