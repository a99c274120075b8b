//! What the reconcile loop remembers between passes: small, owned by the loop, changed only by
//! the outcome of a pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshcrypt_keyexchange::{NodeKeyAnnotations, PresharedKey, PublicKey};

use super::last_known::{LastKnown, journal};
use super::report::Reported;
use crate::config::settings::{KeyError, Settings};
use crate::mesh_peer::Offer;

/// The loop's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopState {
    /// The settings in force (the last good ones); `None` before the first valid read.
    pub settings: Option<Settings>,
    /// The rejection last reported, so each is reported once.
    pub rejected: Option<Vec<KeyError>>,
    /// The node problems last reported as (node, reason, message), so each is reported once.
    pub reported: BTreeSet<(String, &'static str, String)>,
    /// The key the device runs with, as published.
    pub key: NodeKeyAnnotations,
    /// The last known peer set as saved (or restored).
    pub last_known: Option<Arc<LastKnown>>,
    /// Where the saved file's journal ends, when this agent wrote it and its last write
    /// succeeded (else the next save writes it whole).
    pub last_known_end: Option<journal::End>,
    /// A staged rotation waits to be published (reported once).
    pub rotation_pending: bool,
    /// Passes run so far.
    pub passes: u64,
    /// The peer clusters' pre-shared keys in force (the last good ones).
    pub preshared_keys: BTreeMap<String, PresharedKey>,
    /// The failure of the passes failing in a row, as reported (each distinct one once).
    pub failure: Option<String>,
    /// What this node's MeshPeer was last written with (or found not served with).
    pub offered: Option<Offer>,
    /// The last report written to this node's MeshNode.
    pub reported_status: Option<Reported>,
    /// The failure of the MeshNode reports failing in a row, as logged (each distinct one once).
    pub report_failure: Option<String>,
    /// The device's count of handshake initiations from unknown keys, as last reported.
    pub unknown_handshakes: u64,
    /// The device's count of packets with a bad inner source, as last reported.
    pub bad_sources: u64,
    /// The device's count of packets no peer covered (strict mode), as last reported.
    pub no_peer_drops: u64,
    /// When the device was first seen sending to each peer that has not answered yet (its tx bytes
    /// above 0, no handshake ever).
    pub tried_since: BTreeMap<PublicKey, jiff::Timestamp>,
    /// The peers without a handshake long after the device started sending to them, as reported.
    pub silent_peers: BTreeSet<PublicKey>,
    /// Peer key → node name, for metric labels, as the last pass left it.
    pub peer_names: Arc<BTreeMap<PublicKey, String>>,
}

impl LoopState {
    /// The state of an agent that just started with `key`.
    pub fn new(key: NodeKeyAnnotations) -> Self {
        Self {
            settings: None,
            rejected: None,
            reported: BTreeSet::new(),
            key,
            last_known: None,
            last_known_end: None,
            rotation_pending: false,
            passes: 0,
            preshared_keys: BTreeMap::new(),
            failure: None,
            offered: None,
            reported_status: None,
            report_failure: None,
            unknown_handshakes: 0,
            bad_sources: 0,
            no_peer_drops: 0,
            tried_since: BTreeMap::new(),
            silent_peers: BTreeSet::new(),
            peer_names: Arc::default(),
        }
    }
}
