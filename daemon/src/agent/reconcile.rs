//! One reconcile pass, in three phases: [`gather`] reads every input, [`decide`] (pure) turns
//! them into a plan, [`execute`] applies it in a fixed order. A pass that creates the device runs
//! the phases once more to program it. The loop's memory ([`LoopState`]) is separate from the IO
//! handles ([`Io`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshcrypt_dataplane::WireGuardBackend;
use meshcrypt_keyexchange::mesh::PeerIndex;
use meshcrypt_routing::Kernel;
use tracing::Instrument as _;

use super::decide::{Params, PassPlan, Readiness, decide};
use super::execute::{Outcome, execute};
use super::gather::{Source, gather};
use super::io::Io;
use super::last_known::LastKnown;
use super::publish::{STARTUP_TAINT, remove_startup_taint};
use super::report::{self, ReportInputs, Reported, report_due, summary};
use super::slim_node::SlimNode;
use super::state::LoopState;
use crate::error::AgentError;
use crate::status::{NodeStatus, PassView, node_status};

/// How long a stopping agent tries to report the stop.
const STOP_REPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// The reconcile loop's parts: what never changes, the IO handles, and the loop's memory.
pub struct Reconciler<K: Kernel, B: WireGuardBackend> {
    /// This agent's node and kernel objects.
    pub params: Params,
    /// The IO handles.
    pub io: Io<K, B>,
    /// The loop's memory.
    pub state: LoopState,
    /// The peer set kept between passes ([`decide`] keeps it up to date).
    pub peer_index: PeerIndex,
    /// How often, at least, the node's state is reported on its MeshNode.
    pub report_interval: Duration,
}

impl<K: Kernel, B: WireGuardBackend> Reconciler<K, B> {
    /// Before the first complete Node list: programs the device and the fail-closed floor from
    /// this node's own Node alone (its pod prefixes stay local, everything else in the pod network
    /// is dropped), so that no pod packet leaves in plaintext while the agent waits for the full
    /// list. No peers are configured and readiness is not claimed.
    pub async fn bootstrap(&mut self, local: &SlimNode, now: jiff::Timestamp) -> Result<(), AgentError> {
        let span = tracing::info_span!("bootstrap", node = %self.params.node);
        self.run(&Source::LocalOnly(Box::new(local.clone())), now).instrument(span).await.map(|_| ())
    }

    /// Programs the device and the kernel from the last known peer set, before the API server has
    /// answered (an agent restarted during a control-plane outage carries traffic at once).
    /// Readiness stays false, with the reason, until a pass with the API server's list succeeds;
    /// that pass replaces everything restored here. Returns the number of peers restored.
    pub async fn restore(&mut self, last: LastKnown, now: jiff::Timestamp) -> Result<usize, AgentError> {
        let peers = last.peer_set();
        let count = peers.peers.len();
        let span = tracing::info_span!("restore", node = %self.params.node, saved = %last.saved);
        let plan = self.run(&Source::LastKnown(Box::new(last.clone()), peers), now).instrument(span).await?;
        if let Readiness::NotReady(reason) = plan.readiness {
            self.io.health.set_ready(false, reason);
        }
        self.state.last_known = Some(Arc::new(last));
        Ok(count)
    }

    /// Runs one pass over the Node store at `now` inside its own span, recording the outcome
    /// (readiness, metrics, the `MeshReady` Event, the startup taint) and the node's status (the
    /// status socket's view, the MeshNode report when due), then gives the pages the pass freed
    /// back to the kernel (timed as the `release` phase); true if it succeeded.
    pub async fn pass(&mut self, now: jiff::Timestamp) -> bool {
        let ok = self.pass_only(now).await;
        self.record_status(now, false).await;
        let started = Instant::now();
        super::heap::release_free_pages();
        self.observe_phase("release", started);
        ok
    }

    /// Reports the node's state as stopped on its MeshNode (SIGTERM), giving up after 3 s.
    pub async fn report_stopped(&mut self, now: jiff::Timestamp) {
        if tokio::time::timeout(STOP_REPORT_TIMEOUT, self.record_status(now, true)).await.is_err() {
            tracing::warn!("cannot report the stop on this node's MeshNode in time");
        }
    }

    /// What the status socket answers: the node's status built at the moment of asking, from
    /// the latest pass's view and the device as it reports itself then.
    pub fn status_source(&self) -> Arc<dyn Fn() -> NodeStatus + Send + Sync> {
        let node = self.params.node.clone();
        let health = self.io.health.clone();
        let view = self.io.status_view.clone();
        let device = self.io.device.clone();
        let names = self.io.names.clone();
        let handshakes = self.io.handshakes.clone();
        Arc::new(move || {
            let state = device.read().ok().and_then(|d| d.clone()).and_then(|d| d.observe().ok());
            let latest = state.as_ref().map(|s| handshakes.observe(s)).unwrap_or_default();
            let names = names.lock().map(|n| Arc::clone(&n)).unwrap_or_default();
            let view = view.lock().map(|v| v.clone()).unwrap_or_default();
            node_status(
                &node,
                jiff::Timestamp::now(),
                health.readiness(),
                &view,
                state.as_ref(),
                &names,
                &latest,
            )
        })
    }

    /// Records what the pass left for the status socket, and reports the node's state on its
    /// MeshNode when due (a failure is a WARN once per distinct error; the next pass retries).
    async fn record_status(&mut self, now: jiff::Timestamp, stopped: bool) {
        let state = self.io.device().and_then(|d| d.observe().ok());
        let handshakes = state.as_ref().map(|s| self.io.handshakes.observe(s)).unwrap_or_default();
        let problems: Vec<(String, String, String)> =
            self.state.reported.iter().map(|(n, r, m)| (n.clone(), (*r).to_owned(), m.clone())).collect();
        let view = PassView {
            settings: self.state.settings.clone(),
            base: self.io.config.base().clone(),
            config_map: self.io.config.data(),
            rejected: self.state.rejected.iter().flatten().map(ToString::to_string).collect(),
            key: Some(self.state.key.clone()),
            problems: problems.clone(),
        };
        if let Ok(mut shared) = self.io.status_view.lock() {
            *shared = view;
        }
        let own =
            problems.iter().filter(|(n, _, _)| *n == self.params.node).map(|(_, r, m)| format!("{r}: {m}"));
        let silent = (!self.state.silent_peers.is_empty()).then(|| {
            format!(
                "PeerNoHandshake: no handshake with {} peer(s) this node has been sending to",
                self.state.silent_peers.len()
            )
        });
        let inputs = ReportInputs {
            readiness: self.io.health.readiness(),
            settings: self.state.settings.as_ref(),
            key: &self.state.key,
            device: state.as_ref(),
            handshakes: &handshakes,
            problems: own.chain(silent).collect(),
            interval: self.report_interval,
            stopped,
        };
        let next = summary(&inputs);
        if !report_due(self.state.reported_status.as_ref(), &next, now, self.report_interval) {
            return;
        }
        let Some(node) = self.io.local_node(&self.params.node) else { return };
        match report::write(&self.io.client, &node, &next, now).await {
            Ok(()) => {
                self.state.reported_status = Some(Reported { status: next, at: now });
                self.state.report_failure = None;
            }
            Err(e) => {
                let failure = e.to_string();
                if self.state.report_failure.as_ref() != Some(&failure) {
                    tracing::warn!(error = %failure, "cannot report this node's state on its MeshNode; retrying after the next pass");
                    self.state.report_failure = Some(failure);
                }
            }
        }
    }

    /// One pass and its outcome, without the status.
    async fn pass_only(&mut self, now: jiff::Timestamp) -> bool {
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
            let started = Instant::now();
            let inputs = gather(&mut self.io, &self.params, &self.state, source, now).await?;
            let gathered = self.observe_phase("gather", started);
            let plan = decide(&self.params, &self.state, &inputs, &mut self.peer_index);
            let decided = self.observe_phase("decide", gathered);
            let outcome = execute(&mut self.io, &self.params, &mut self.state, &plan).await;
            self.observe_phase("execute", decided);
            if outcome? == Outcome::Done {
                self.io.metrics.peer_ops.inc_by(plan.peer_ops.len() as u64);
                self.io.metrics.kernel_ops.inc_by(plan.kernel.ops.len() as u64);
                return Ok(plan);
            }
        }
        // A device created in this pass is gone again already; the next pass starts over.
        Err(AgentError::DeviceGone { ifname: self.params.ifname.clone() })
    }

    /// Records how long `phase` took since `started` (the monotonic clock: a measurement, never
    /// an input to a decision); returns now.
    fn observe_phase(&self, phase: &'static str, started: Instant) -> Instant {
        let now = Instant::now();
        self.io
            .metrics
            .phase_seconds
            .get_or_create(&vec![("phase", phase)])
            .observe((now - started).as_secs_f64());
        now
    }

    /// Removes this node's startup taint once the mesh is in place (a failure is a WARN; the next
    /// pass tries again).
    async fn untaint(&self) {
        let Some(local) = self.io.local_node(&self.params.node) else { return };
        if let Err(e) = remove_startup_taint(&self.io.client, &local).await {
            tracing::warn!(error = %e, taint = STARTUP_TAINT, "cannot remove the startup taint yet");
        }
    }
}
