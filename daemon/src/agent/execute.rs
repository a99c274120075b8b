//! Carrying out a [`PassPlan`]: the only place a pass changes anything, in one fixed order (the
//! numbered steps of [`execute`]). The order keeps the node fail-closed at every step and makes
//! every peer able to learn a key before the device runs with it.

use std::sync::Arc;

use meshcrypt_dataplane::{BackendKind, Change, DeviceConfig, WireGuardBackend, WireGuardDevice};
use meshcrypt_keyexchange::{NodeKeyAnnotations, write_atomic};
use meshcrypt_routing::Kernel;

use super::abridged::Abridged;
use super::decide::{Blocked, DeviceStep, KeyStep, Params, PassPlan};
use super::events::{EventType, configmap_ref, node_ref, remote_cluster_ref};
use super::io::Io;
use super::last_known::{self, journal};
use super::peer_ops::to_changes;
use super::publish::{publish_key, withdraw_key};
use super::state::LoopState;
use crate::error::AgentError;
use crate::flows::SignalRecord;
use crate::mesh_peer::{self, Offer};

/// How far a pass got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything planned is in place.
    Done,
    /// A device was created: gather and decide again to program it.
    Again,
}

/// Applies `plan`, in this order:
///
/// 0. The loop's memory takes the plan's settings, rejection and reported problems; the log
///    filter follows the settings.
/// 1. A device to discard is dropped (the kernel removes the routes through it; the floor holds).
/// 2. Without a device in use, the kernel changes: the fail-closed floor and the rules, first.
/// 3. A blocked plan stops here, with its error. A device to create is created, and the pass
///    runs again to program it.
/// 4. The device moves to a new port; its flow accounting follows the settings.
/// 5. The key: a staged (or newly staged) key is published, and only once that succeeded does the
///    device switch to it; or the device follows a key file that changed.
/// 6. The key in use is published if the Node does not carry it; then this node's MeshPeer offers
///    the key and the Node's addresses and pod CIDRs if it does not already (a key is always on
///    the Node first, and on both before the device runs with it).
/// 7. The device's peers change (removals first), then handshakes start with the new peers (with
///    every peer after a key switch).
/// 8. With a device in use, the kernel changes (make-before-break: routes, then rules, then
///    removals).
/// 9. The last known peer set is saved (or, switched off, removed).
/// 10. Switched off, the published key is withdrawn, from the Node and then from the MeshPeer.
///
/// Whatever happened, the metrics and the Events of the pass are reported at the end.
pub async fn execute<K: Kernel, B: WireGuardBackend>(
    io: &mut Io<K, B>,
    params: &Params,
    state: &mut LoopState,
    plan: &PassPlan,
) -> Result<Outcome, AgentError> {
    // 0.
    if plan.settings_changed
        && let Some(settings) = &plan.settings
    {
        if let Some(previous) = &state.settings {
            tracing::info!(?previous, current = ?settings, "configuration changed");
        }
        io.log.set(&settings.log_level);
        io.flow_settings.send_if_modified(|current| {
            let changed = *current != settings.flows;
            current.clone_from(&settings.flows);
            changed
        });
    }
    if plan.rejected != state.rejected {
        for e in plan.rejected.iter().flatten() {
            tracing::warn!(key = %e.key, reason = %e.reason, "configuration rejected; the last good configuration stays in force");
        }
    }
    for p in &plan.new_problems {
        tracing::warn!(peer_node = %p.node, reason = p.problem.reason(), message = %p.problem, "a node is left out of the mesh, or holds a claim others contest");
    }
    state.settings.clone_from(&plan.settings);
    state.rejected.clone_from(&plan.rejected);
    state.reported.clone_from(&plan.problems);
    state.unknown_handshakes = plan.unknown_handshakes;
    state.bad_sources = plan.bad_sources;
    state.no_peer_drops = plan.no_peer_drops;
    if let Some(since) = &plan.tried_since {
        state.tried_since.clone_from(since);
    }
    if let Some(silent) = &plan.silent_peers {
        state.silent_peers.clone_from(silent);
    }
    if let Some(names) = &plan.peer_names {
        state.peer_names = Arc::clone(names);
    }
    if let Some(keys) = &plan.preshared_keys {
        state.preshared_keys.clone_from(keys);
    }

    let mut key_rotated = None;
    let result = apply(io, params, state, plan, &mut key_rotated).await;
    report(io, params, plan, key_rotated).await;
    result
}

async fn apply<K: Kernel, B: WireGuardBackend>(
    io: &mut Io<K, B>,
    params: &Params,
    state: &mut LoopState,
    plan: &PassPlan,
    key_rotated: &mut Option<NodeKeyAnnotations>,
) -> Result<Outcome, AgentError> {
    // 1. (A kernel device is deleted; taking a device out of its slot drops it: a userspace
    // device's interface and routes go with it.)
    let mut discarded = None;
    if plan.device == DeviceStep::Discard
        && let Ok(mut slot) = io.device.write()
        && let Some(device) = slot.take()
    {
        if plan.blocked == Some(Blocked::DeviceGone) {
            tracing::warn!(interface = %params.ifname, "the WireGuard interface was deleted; recreating the device");
        } else if let Err(e) = device.delete() {
            tracing::warn!(interface = %params.ifname, error = %e, "cannot delete the WireGuard device");
        }
        discarded = Some(device.kind());
    }
    // 2.
    if plan.kernel.link.is_none() {
        apply_kernel(io, params, plan).await?;
    }
    // 3.
    if let Some(blocked) = &plan.blocked {
        return Err(blocked_error(params, io, blocked));
    }
    if let DeviceStep::Create { port, backend } = plan.device {
        create_device(io, params, port, backend)?;
        return Ok(Outcome::Again);
    }
    let Some(device) = io.device() else {
        // Switched off, or a device of the other backend goes: nothing to program.
        finish(io, params, state, plan).await?;
        let switching = discarded.is_some() && plan.settings.as_ref().is_some_and(|s| s.enabled);
        return Ok(if switching { Outcome::Again } else { Outcome::Done });
    };
    // 4.
    if let Some(port) = plan.move_port {
        tracing::info!(to = port, "moving the mesh port");
        device.apply(&[Change::SetListenPort(port)])?;
    }
    if let Some(flows) = plan.settings.as_ref().map(|s| &s.flows) {
        device.set_flow_accounting(flows.enabled.then_some(flows.max_flows));
    }
    // 5.
    let switched = switch_key(io, params, state, plan, device.as_ref(), key_rotated).await?;
    // 6.
    if plan.publish && key_rotated.is_none() {
        publish_key(&io.client, &params.node, &state.key).await?;
    }
    let key = state.key.clone();
    offer(io, params, plan, &mut state.offered, Some(&key)).await?;
    // 7.
    if !plan.peer_ops.is_empty() {
        tracing::info!(count = plan.peer_ops.len(), ops = ?Abridged(&plan.peer_ops), "updating wireguard peers");
        device.apply(&to_changes(&plan.peer_ops))?;
    }
    if switched && !plan.handshakes_after_switch.is_empty() {
        let sent = device.initiate_handshakes(&plan.handshakes_after_switch);
        tracing::info!(
            peers = plan.handshakes_after_switch.len(),
            sent,
            "handshakes initiated under the new key"
        );
    }
    // 8.
    if plan.kernel.link.is_some() {
        apply_kernel(io, params, plan).await?;
    }
    finish(io, params, state, plan).await?;
    Ok(Outcome::Done)
}

/// Steps 9 and 10.
async fn finish<K: Kernel, B: WireGuardBackend>(
    io: &mut Io<K, B>,
    params: &Params,
    state: &mut LoopState,
    plan: &PassPlan,
) -> Result<(), AgentError> {
    // 9.
    if let Some(save) = &plan.save {
        let path = last_known::path(&io.state_dir);
        let written = match &save.write {
            journal::Write::Whole(text) => {
                write_atomic(&io.state_dir, &path, text.as_bytes()).map_err(AgentError::from)
            }
            journal::Write::Append(line) => journal::append(&path, line)
                .map_err(|source| AgentError::Io { what: format!("append to {}", path.display()), source }),
        };
        match written {
            Ok(()) => {
                state.last_known = Some(save.snapshot.clone());
                state.last_known_end = Some(save.end.clone());
            }
            Err(error) => {
                // What the file holds is not known now: the next save writes it whole.
                state.last_known_end = None;
                tracing::warn!(%error, path = %path.display(), "cannot save the last known peer set")
            }
        }
    }
    if plan.forget {
        // Switched off: nothing may come back from the last known peer set at the next start.
        let saved = last_known::path(&io.state_dir);
        match std::fs::remove_file(&saved) {
            Ok(()) => (state.last_known, state.last_known_end) = (None, None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (state.last_known, state.last_known_end) = (None, None)
            }
            Err(source) => {
                return Err(AgentError::Io { what: format!("remove {}", saved.display()), source });
            }
        }
    }
    // 10.
    if plan.withdraw {
        withdraw_key(&io.client, &params.node).await?;
        offer(io, params, plan, &mut state.offered, None).await?;
    }
    Ok(())
}

/// Writes this node's MeshPeer with `key`, its Node's addresses and pod CIDRs and (pod-IP mode)
/// its Pods' addresses ([`PassPlan::own_pod_ips`]), unless that is what it was last written with
/// (or this node's Node is not listed yet). An API server that does
/// not serve MeshPeers is remembered as written: the CRD comes with a new rollout, which restarts
/// the agents.
async fn offer<K: Kernel, B: WireGuardBackend>(
    io: &Io<K, B>,
    params: &Params,
    plan: &PassPlan,
    offered: &mut Option<Offer>,
    key: Option<&NodeKeyAnnotations>,
) -> Result<(), AgentError> {
    let Some(own) = io.local_node(&params.node) else { return Ok(()) };
    // Its Pods' addresses only with a key (and only pod-IP mode has them).
    let pod_ips = if key.is_some() { plan.own_pod_ips.clone() } else { Vec::new() };
    let next = Offer::of(&own, key, pod_ips);
    if offered.as_ref() == Some(&next) {
        return Ok(());
    }
    if mesh_peer::write(&io.client, &params.node, &next).await? {
        tracing::info!(node = %params.node, key = key.is_some(), spec = ?next.spec, "wrote this node's MeshPeer");
    } else if offered.is_none() {
        tracing::info!("the API server serves no MeshPeers (is the CRD installed?); this node offers none");
    }
    *offered = Some(next);
    Ok(())
}

async fn apply_kernel<K: Kernel, B: WireGuardBackend>(
    io: &Io<K, B>,
    params: &Params,
    plan: &PassPlan,
) -> Result<(), AgentError> {
    if plan.kernel.ops.is_empty() {
        return Ok(());
    }
    let ops = &plan.kernel.ops;
    tracing::info!(count = ops.len(), ops = %Abridged(ops), "updating routes and rules");
    io.kernel.apply(plan.kernel.link, params.table, &plan.kernel.ops).await?;
    Ok(())
}

/// Creates the device with the key file's key, on `port`, and holds it.
fn create_device<K: Kernel, B: WireGuardBackend>(
    io: &mut Io<K, B>,
    params: &Params,
    port: u16,
    backend: BackendKind,
) -> Result<(), AgentError> {
    let record = io.keys.load()?.ok_or_else(|| AgentError::KeyFileMissing { path: io.keys.key_path() })?;
    let mut config = DeviceConfig::new(params.ifname.clone(), record.key);
    config.backend = backend;
    config.listen_port = port;
    config.uapi_dir = io.uapi_dir.clone();
    config.fwmark = Some(params.fwmark);
    config.workers = io.workers;
    // The kernel plan of the next round sets the tunnel MTU for this node's underlay.
    config.mtu = None;
    let device = io.backend.create(config).map_err(|e| {
        if e.io_error().and_then(std::io::Error::raw_os_error) == Some(nix::errno::Errno::EBUSY as i32) {
            AgentError::TunBusy { ifname: params.ifname.clone(), source: e }
        } else {
            e.into()
        }
    })?;
    tracing::info!(interface = %params.ifname, port, backend = backend.as_str(), "wireguard device up");
    if let Ok(mut slot) = io.device.write() {
        *slot = Some(device);
    }
    Ok(())
}

/// Publishes `key` on this node's Node, then on its MeshPeer.
async fn publish_both<K: Kernel, B: WireGuardBackend>(
    io: &Io<K, B>,
    params: &Params,
    plan: &PassPlan,
    offered: &mut Option<Offer>,
    key: &NodeKeyAnnotations,
) -> Result<(), AgentError> {
    publish_key(&io.client, &params.node, key).await?;
    offer(io, params, plan, offered, Some(key)).await
}

/// Step 5; true when the device's key changed (every session restarts).
async fn switch_key<K: Kernel, B: WireGuardBackend>(
    io: &mut Io<K, B>,
    params: &Params,
    state: &mut LoopState,
    plan: &PassPlan,
    device: &dyn WireGuardDevice,
    key_rotated: &mut Option<NodeKeyAnnotations>,
) -> Result<bool, AgentError> {
    match plan.key {
        KeyStep::Keep => Ok(false),
        KeyStep::Rotate { stage, publish_first } => {
            if stage {
                tracing::info!(created = %state.key.created, "scheduled key rotation due");
                io.keys.stage_rotation()?;
            }
            let pending = io
                .keys
                .pending()?
                .ok_or_else(|| AgentError::KeyFileMissing { path: io.keys.pending_path() })?;
            let next = pending.annotations();
            if publish_first && let Err(e) = publish_both(io, params, plan, &mut state.offered, &next).await {
                if !state.rotation_pending {
                    tracing::warn!(error = %e, fingerprint = %next.public_key.fingerprint(), epoch = next.epoch, "key rotation pending: the new key cannot be published yet; the current key stays in use");
                    let note = format!(
                        "the new key (epoch {}, {}) cannot be published yet: {e}; the current key stays in use",
                        next.epoch,
                        next.public_key.fingerprint()
                    );
                    io.events.warning(&params.node, "KeyPublishPending", &note).await;
                }
                state.rotation_pending = true;
                io.metrics.key_rotation_pending.set(1);
                return Ok(false);
            }
            tracing::info!(from = %state.key.public_key.fingerprint(), to = %next.public_key.fingerprint(), epoch = next.epoch, "switching to the new node key, now published");
            device.apply(&[Change::SetPrivateKey(pending.key)])?;
            io.keys.promote_pending()?;
            state.key = next.clone();
            state.rotation_pending = false;
            io.metrics.key_rotation_pending.set(0);
            io.metrics.key_rotations.inc();
            *key_rotated = Some(next);
            Ok(true)
        }
        KeyStep::Follow => {
            let record =
                io.keys.load()?.ok_or_else(|| AgentError::KeyFileMissing { path: io.keys.key_path() })?;
            let stored = record.annotations();
            tracing::info!(from = %state.key.public_key.fingerprint(), to = %stored.public_key.fingerprint(), epoch = stored.epoch, "the key file changed: switching to it");
            device.apply(&[Change::SetPrivateKey(record.key)])?;
            state.key = stored;
            Ok(true)
        }
    }
}

/// The metrics and Events of the pass.
async fn report<K: Kernel, B: WireGuardBackend>(
    io: &Io<K, B>,
    params: &Params,
    plan: &PassPlan,
    key_rotated: Option<NodeKeyAnnotations>,
) {
    io.metrics.config_rejected.set(i64::from(plan.rejected.is_some()));
    if let Some(settings) = &plan.settings {
        io.metrics.peers_summarised.store(!settings.per_peer_metrics, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(counts) = &plan.problem_counts {
        io.metrics.node_problems.clear();
        for (reason, count) in counts {
            io.metrics.node_problems.get_or_create(&vec![("reason", (*reason).to_owned())]).set(*count);
        }
    }
    if let Some(peer_names) = &plan.peer_names
        && let Ok(mut names) = io.names.lock()
    {
        *names = Arc::clone(peer_names);
    }
    for event in &plan.events {
        let type_ = if event.warning { EventType::Warning } else { EventType::Normal };
        let reference = match (&event.node, &params.config_map) {
            // A peer cluster's node (`<cluster>/<node>`): the Event goes on its RemoteCluster.
            (Some(node), _) => match node.split_once('/') {
                Some((cluster, _)) => remote_cluster_ref(cluster),
                None => node_ref(node),
            },
            (None, Some((namespace, name))) => configmap_ref(namespace, name),
            (None, None) => continue,
        };
        io.events.publish(reference, type_, &event.reason, &event.note).await;
        let subject = event.node.as_deref().unwrap_or_default();
        if event.warning
            && let Some(signal) = SignalRecord::from_event(
                &params.node,
                subject,
                &event.reason,
                &event.note,
                jiff::Timestamp::now(),
            )
        {
            io.metrics.signals.get_or_create(&vec![("reason", event.reason.clone())]).inc();
            if io.signals.try_send(signal).is_err() {
                tracing::debug!(reason = %event.reason, "signal queue full; the Event carries it");
            }
        }
    }
    if let Some(key) = key_rotated {
        let note = format!("epoch {}, key {}", key.epoch, key.public_key.fingerprint());
        io.events.normal(&params.node, "KeyRotated", &note).await;
    }
}

fn blocked_error<K: Kernel, B: WireGuardBackend>(
    params: &Params,
    io: &Io<K, B>,
    blocked: &Blocked,
) -> AgentError {
    match blocked {
        Blocked::NoSettings => AgentError::NoSettings,
        Blocked::LocalNodeMissing => AgentError::LocalNodeMissing { node: params.node.clone() },
        Blocked::NoInternalIp => AgentError::NoInternalIp { node: params.node.clone() },
        Blocked::UnderlayUnknown(ip) => AgentError::UnderlayUnknown { node: params.node.clone(), ip: *ip },
        Blocked::UnderlayTooSmall(mtu) => AgentError::UnderlayTooSmall { mtu: *mtu },
        Blocked::ForeignLink(kind) => {
            AgentError::ForeignLink { ifname: params.ifname.clone(), kind: kind.clone() }
        }
        Blocked::DeviceGone => AgentError::DeviceGone { ifname: params.ifname.clone() },
        Blocked::KeyFileMissing => AgentError::KeyFileMissing { path: io.keys.key_path() },
    }
}
