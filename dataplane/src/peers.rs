//! The peer table: each peer's session (`Tunn`), endpoint and allowed IPs, and the longest-prefix
//! routing table over all allowed IPs. Configuration logic without sockets and without a clock
//! (the time is passed in: the data path's millisecond clock, or the wall time of a snapshot), so
//! it is unit-tested without root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use boringtun::noise::Tunn;
use boringtun::noise::rate_limiter::RateLimiter;
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use ipnet::IpNet;
use meshcrypt_keyexchange::PublicKey;
use rand_core::{OsRng, RngCore};
use x25519_dalek::StaticSecret;

use crate::config::PeerUpdate;
use crate::error::Error;
use crate::state::PeerState;
use meshcrypt_keyexchange::PresharedKey;

/// How long a probed path MTU holds before it is probed again: Linux's
/// `net.ipv4.route.mtu_expires` default (600 s).
pub(crate) const PMTU_EXPIRY: Duration = Duration::from_secs(600);
/// How soon a failed path probe (no route yet, say) is tried again.
pub(crate) const PMTU_RETRY: Duration = Duration::from_secs(10);

/// Handshake initiations per second (device-wide) before cookies are demanded.
const HANDSHAKE_RATE_LIMIT: u64 = 100;

/// One peer as the data path sees it.
pub(crate) struct Peer {
    pub(crate) public_key: PublicKey,
    /// The 24-bit local index; the session indices of this peer's `Tunn` are `index << 8 | n`.
    pub(crate) index: u32,
    pub(crate) tunnel: Mutex<Tunnel>,
    pub(crate) endpoint: RwLock<Option<SocketAddr>>,
    /// Persistent keepalive in seconds, 0 for none (kept outside `Tunn` so it can change live).
    keepalive: AtomicU32,
    /// When the last datagram went to the peer, in ms of [`crate::datapath::clock`]; 0 for never.
    last_sent_ms: AtomicU64,
    /// The largest inner packet the underlay path to the endpoint carries (the kernel's path MTU
    /// less WireGuard's overhead); 0 while none is known.
    inner_mtu: AtomicU32,
    /// When the path was last probed, in ms of [`crate::datapath::clock`]; 0 for never.
    probed_at: AtomicU64,
    /// Bytes of the handshake and cookie datagrams sent to the peer ([`Peer::count_control`]).
    control_tx: AtomicU64,
}

/// What makes a peer's tunnel: the device's static key, the peer's key and pre-shared key, the
/// peer's session index base and the device's handshake rate limiter.
struct TunnParams {
    private: StaticSecret,
    peer: x25519_dalek::PublicKey,
    psk: Option<PresharedKey>,
    index: u32,
    rate_limiter: Arc<RateLimiter>,
    in_use: Arc<InUse>,
}

/// Longest-prefix lookups over one batch: the table cannot change while the batch holds its read
/// guard, and a flow's packets come in runs, so the last address's answer is kept and a run costs
/// one lookup.
pub(crate) struct CachedRoutes<'a> {
    peers: &'a Peers,
    last: Option<(IpAddr, Option<&'a Arc<Peer>>)>,
}

impl<'a> CachedRoutes<'a> {
    /// The peer whose allowed IPs cover `ip` most specifically ([`Peers::route`]).
    pub(crate) fn route(&mut self, ip: IpAddr) -> Option<&'a Arc<Peer>> {
        if let Some((last, peer)) = self.last
            && last == ip
        {
            return peer;
        }
        let peer = self.peers.route(ip);
        self.last = Some((ip, peer));
        peer
    }
}

/// The peers whose timers run, by index: those with a tunnel or a persistent keepalive. A peer
/// joins as its tunnel is made (or its keepalive set), and the timer thread lets it go once it
/// has neither, both under the peer's tunnel lock, so neither can miss the other. The timers
/// visit only these: at 5,000 peers of which a few carry traffic, a tick touched every peer's
/// memory (about 1 ms every 100 ms, a tenth of an agent's CPU under churn).
#[derive(Default)]
pub(crate) struct InUse(Mutex<HashSet<u32>>);

impl InUse {
    fn lock(&self) -> MutexGuard<'_, HashSet<u32>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, index: u32) {
        self.lock().insert(index);
    }

    /// Lets `peer` go if its `tunnel` holds no `Tunn` and it has no keepalive (the caller holds
    /// the tunnel's lock).
    pub(crate) fn release_idle(&self, peer: &Peer, tunnel: &mut Tunnel) {
        if tunnel.existing().is_none() && peer.keepalive().is_none() {
            self.lock().remove(&peer.index);
        }
    }
}

/// A peer's tunnel state: boringtun's `Tunn`, about 10 KB whether or not it ever carries a
/// session (its eight session slots, each with two AEAD keys and a replay window, are inline).
/// Made at its first use (a handshake to send or answer, a packet to seal), and dropped when it
/// expires: boringtun's `ConnectionExpired`, once no session key is left and no handshake is under
/// way (90 s after an unanswered handshake, 540 s after the last session key). What outlives it
/// is kept here: the bytes it counted and its latest handshake.
///
/// A dropped tunnel forgets the timestamp of the peer's latest handshake initiation, so a
/// replayed initiation is answered again, as after a restart; it cannot complete a session
/// without the peer's ephemeral key.
pub(crate) struct Tunnel {
    params: TunnParams,
    tunn: Option<Box<Tunn>>,
    tx_before: u64,
    rx_before: u64,
    last_handshake: Option<SystemTime>,
}

impl Tunnel {
    fn new(params: TunnParams) -> Self {
        Self { params, tunn: None, tx_before: 0, rx_before: 0, last_handshake: None }
    }

    /// The tunnel, made now if there is none.
    pub(crate) fn get(&mut self) -> &mut Tunn {
        let p = &self.params;
        self.tunn.get_or_insert_with(|| {
            p.in_use.add(p.index);
            Box::new(Tunn::new(
                p.private.clone(),
                p.peer,
                p.psk.as_ref().map(|k| *k.as_bytes()),
                None,
                p.index,
                Some(p.rate_limiter.clone()),
            ))
        })
    }

    /// The tunnel, if there is one.
    pub(crate) fn existing(&mut self) -> Option<&mut Tunn> {
        self.tunn.as_deref_mut()
    }

    /// Drops the tunnel (it expired, or its keys changed), keeping its byte counts and its latest
    /// handshake as of `now`.
    pub(crate) fn expire(&mut self, now: SystemTime) {
        let Some(tunn) = self.tunn.take() else { return };
        let (since, tx, rx, _, _) = tunn.stats();
        self.tx_before += tx as u64;
        self.rx_before += rx as u64;
        if let Some(at) = since.and_then(|d| now.checked_sub(d)) {
            self.last_handshake = Some(at);
        }
    }

    /// The latest handshake and the bytes sent and received, as of `now`: the live tunnel's added
    /// to those of the tunnels dropped before it.
    pub(crate) fn stats(&self, now: SystemTime) -> (Option<SystemTime>, u64, u64) {
        match &self.tunn {
            Some(tunn) => {
                let (since, tx, rx, _, _) = tunn.stats();
                let last = since.and_then(|d| now.checked_sub(d)).or(self.last_handshake);
                (last, self.tx_before + tx as u64, self.rx_before + rx as u64)
            }
            None => (self.last_handshake, self.tx_before, self.rx_before),
        }
    }

    /// Takes the device's new static key; a live tunnel restarts its sessions with it.
    fn set_static_private(
        &mut self,
        private: StaticSecret,
        public: x25519_dalek::PublicKey,
        limiter: Arc<RateLimiter>,
    ) {
        if let Some(tunn) = self.tunn.as_deref_mut() {
            tunn.set_static_private(private.clone(), public, Some(limiter.clone()));
        }
        self.params.private = private;
        self.params.rate_limiter = limiter;
    }

    /// Takes a new pre-shared key: boringtun fixes it at creation, so a live tunnel is dropped
    /// (a new key, a new session).
    fn set_preshared_key(&mut self, psk: Option<PresharedKey>, now: SystemTime) {
        self.expire(now);
        self.params.psk = psk;
    }
}

impl Peer {
    pub(crate) fn lock_tunnel(&self) -> MutexGuard<'_, Tunnel> {
        self.tunnel.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn endpoint(&self) -> Option<SocketAddr> {
        *self.endpoint.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_endpoint(&self, addr: SocketAddr) {
        let mut ep = self.endpoint.write().unwrap_or_else(|p| p.into_inner());
        if *ep != Some(addr) {
            tracing::debug!(peer = %self.public_key, endpoint = %addr, "peer endpoint set");
            *ep = Some(addr);
            // Another path: what was learned about the old one does not hold.
            self.inner_mtu.store(0, Ordering::Relaxed);
            self.probed_at.store(0, Ordering::Relaxed);
        }
    }

    /// The largest inner packet the path to the peer carries, once probed.
    pub(crate) fn inner_mtu(&self) -> Option<u32> {
        match self.inner_mtu.load(Ordering::Relaxed) {
            0 => None,
            mtu => Some(mtu),
        }
    }

    /// Whether the path should be probed at `now_ms`: never probed, or probed [`PMTU_EXPIRY`] ago
    /// (routes change), or a failed probe [`PMTU_RETRY`] ago.
    pub(crate) fn path_probe_due(&self, now_ms: u64) -> bool {
        let at = self.probed_at.load(Ordering::Relaxed);
        let every = if self.inner_mtu.load(Ordering::Relaxed) == 0 { PMTU_RETRY } else { PMTU_EXPIRY };
        at == 0 || now_ms.saturating_sub(at) >= every.as_millis() as u64
    }

    /// Records a probe at `now_ms`: the largest inner packet the path carries, or `None` if the
    /// probe failed.
    pub(crate) fn set_inner_mtu(&self, mtu: Option<u32>, now_ms: u64) {
        self.probed_at.store(now_ms.max(1), Ordering::Relaxed);
        self.inner_mtu.store(mtu.unwrap_or(0), Ordering::Relaxed);
    }

    pub(crate) fn keepalive(&self) -> Option<u16> {
        match self.keepalive.load(Ordering::Relaxed) {
            0 => None,
            k => u16::try_from(k).ok(),
        }
    }

    fn set_keepalive(&self, k: Option<u16>) {
        self.keepalive.store(k.map_or(0, u32::from), Ordering::Relaxed);
    }

    /// Counts `datagram`, just sent to the peer, into its tx bytes if it is a handshake or cookie
    /// message (types 1 to 3); boringtun counts the data (type 4) itself.
    pub(crate) fn count_control(&self, datagram: &[u8]) {
        if matches!(datagram.first(), Some(1..=3)) {
            self.control_tx.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        }
    }

    /// Records that a datagram went to the peer at `now_ms` (for the persistent keepalive timer).
    pub(crate) fn mark_sent(&self, now_ms: u64) {
        self.last_sent_ms.store(now_ms.max(1), Ordering::Relaxed);
    }

    /// True when a persistent keepalive is configured and due at `now_ms`: nothing was sent yet,
    /// or nothing for the keepalive interval.
    pub(crate) fn keepalive_due(&self, now_ms: u64) -> bool {
        let Some(k) = self.keepalive() else { return false };
        match self.last_sent_ms.load(Ordering::Relaxed) {
            0 => true,
            sent => now_ms.saturating_sub(sent) >= u64::from(k) * 1000,
        }
    }
}

/// Configuration-only fields of a peer, changed only under the table's write lock.
struct Entry {
    peer: Arc<Peer>,
    allowed_ips: Vec<IpNet>,
    preshared_key: Option<PresharedKey>,
    /// The endpoint configured (the peer may roam away from it).
    endpoint: Option<SocketAddr>,
}

/// All peers of a device, with the routing table and the device's static key.
pub(crate) struct Peers {
    private: StaticSecret,
    public: x25519_dalek::PublicKey,
    pub(crate) rate_limiter: Arc<RateLimiter>,
    /// The peers whose timers run.
    pub(crate) in_use: Arc<InUse>,
    entries: BTreeMap<PublicKey, Entry>,
    by_index: HashMap<u32, Arc<Peer>>,
    /// Each configured endpoint's peer (the latest configured with it).
    by_endpoint: HashMap<SocketAddr, PublicKey>,
    routes: IpNetworkTable<Arc<Peer>>,
}

impl Peers {
    pub(crate) fn new(private: StaticSecret) -> Self {
        let public = x25519_dalek::PublicKey::from(&private);
        Self {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT)),
            private,
            public,
            in_use: Arc::default(),
            entries: BTreeMap::new(),
            by_index: HashMap::new(),
            by_endpoint: HashMap::new(),
            routes: IpNetworkTable::new(),
        }
    }

    pub(crate) fn private_key(&self) -> &StaticSecret {
        &self.private
    }

    pub(crate) fn public_key(&self) -> &x25519_dalek::PublicKey {
        &self.public
    }

    /// The device's public key in meshcrypt's type.
    pub(crate) fn device_public_key(&self) -> PublicKey {
        PublicKey::from_bytes(self.public.to_bytes()).expect("a clamped scalar's public key has full order")
    }

    /// The peer whose allowed IPs cover `ip` most specifically.
    pub(crate) fn route(&self, ip: IpAddr) -> Option<&Arc<Peer>> {
        self.routes.longest_match(ip).map(|(_, p)| p)
    }

    /// [`Peers::route`] for one batch, remembering the last answer.
    pub(crate) fn cached_routes(&self) -> CachedRoutes<'_> {
        CachedRoutes { peers: self, last: None }
    }

    pub(crate) fn by_index(&self, index: u32) -> Option<&Arc<Peer>> {
        self.by_index.get(&index)
    }

    /// The peer configured with the endpoint `addr` (canonical: IPv4 as IPv4).
    pub(crate) fn by_endpoint(&self, addr: SocketAddr) -> Option<&Arc<Peer>> {
        self.by_endpoint.get(&addr).and_then(|key| self.entries.get(key)).map(|e| &e.peer)
    }

    pub(crate) fn by_key(&self, key: &[u8; 32]) -> Option<&Arc<Peer>> {
        let key = PublicKey::from_bytes(*key).ok()?;
        self.entries.get(&key).map(|e| &e.peer)
    }

    /// The peers whose timers run ([`InUse`]); indices of peers removed since are let go.
    pub(crate) fn in_use(&self) -> Vec<Arc<Peer>> {
        let mut indices = self.in_use.lock();
        indices.retain(|index| self.by_index.contains_key(index));
        indices.iter().filter_map(|index| self.by_index.get(index)).cloned().collect()
    }

    /// Replaces the static key: every session restarts and a peer with the device's own key goes.
    pub(crate) fn set_private_key(&mut self, private: StaticSecret) {
        let public = x25519_dalek::PublicKey::from(&private);
        if public.as_bytes() == self.public.as_bytes() {
            return;
        }
        self.private = private;
        self.public = public;
        self.rate_limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        if let Ok(own) = PublicKey::from_bytes(public.to_bytes()) {
            self.remove(&own);
        }
        for entry in self.entries.values() {
            entry.peer.lock_tunnel().set_static_private(
                self.private.clone(),
                self.public,
                self.rate_limiter.clone(),
            );
        }
    }

    pub(crate) fn remove_all(&mut self) {
        let keys: Vec<PublicKey> = self.entries.keys().copied().collect();
        for key in keys {
            self.remove(&key);
        }
    }

    pub(crate) fn remove(&mut self, key: &PublicKey) -> bool {
        let Some(entry) = self.entries.remove(key) else { return false };
        self.routes.retain(|_, p| !Arc::ptr_eq(p, &entry.peer));
        self.by_index.remove(&entry.peer.index);
        if let Some(ep) = entry.endpoint
            && self.by_endpoint.get(&ep) == Some(key)
        {
            self.by_endpoint.remove(&ep);
        }
        tracing::info!(peer = %key, "peer removed");
        true
    }

    /// Applies a field-wise update, creating the peer unless `update_only`.
    pub(crate) fn update(&mut self, u: &PeerUpdate) -> Result<(), Error> {
        if u.remove {
            self.remove(&u.public_key);
            return Ok(());
        }
        if u.public_key.as_bytes() == self.public.as_bytes() {
            // WireGuard ignores a peer carrying the device's own key.
            tracing::warn!(peer = %u.public_key, "ignoring a peer with the device's own public key");
            return Ok(());
        }
        if !self.entries.contains_key(&u.public_key) {
            if u.update_only {
                return Ok(());
            }
            self.insert_new(u.public_key, u.preshared_key.clone().flatten());
        }
        let entry = self.entries.get_mut(&u.public_key).expect("just ensured");
        if let Some(psk) = &u.preshared_key
            && *psk != entry.preshared_key
        {
            // boringtun fixes the pre-shared key at creation: a new key means a new session.
            entry.preshared_key = psk.clone();
            entry.peer.lock_tunnel().set_preshared_key(psk.clone(), SystemTime::now());
        }
        if let Some(ep) = u.endpoint {
            entry.peer.set_endpoint(ep);
            if let Some(old) = entry.endpoint.replace(ep)
                && old != ep
                && self.by_endpoint.get(&old) == Some(&u.public_key)
            {
                self.by_endpoint.remove(&old);
            }
            self.by_endpoint.insert(ep, u.public_key);
        }
        if let Some(k) = u.persistent_keepalive {
            // Under the tunnel lock, as the timers let an idle peer go (see `InUse`).
            let _tunnel = entry.peer.lock_tunnel();
            let keepalive = k.filter(|k| *k > 0);
            entry.peer.set_keepalive(keepalive);
            if keepalive.is_some() {
                self.in_use.add(entry.peer.index);
            }
        }
        if u.replace_allowed_ips {
            self.replace_allowed_ips(&u.public_key, &u.allowed_ips)?;
        } else {
            for net in &u.allowed_ips {
                self.add_allowed_ip(&u.public_key, *net);
            }
        }
        Ok(())
    }

    /// Replaces one peer's allowed IPs in place; its session is untouched.
    pub(crate) fn replace_allowed_ips(&mut self, key: &PublicKey, nets: &[IpNet]) -> Result<(), Error> {
        let entry = self.entries.get_mut(key).ok_or(Error::PeerNotFound(*key))?;
        let peer = entry.peer.clone();
        for old in std::mem::take(&mut entry.allowed_ips) {
            if self.routes.exact_match(table_key(old)).is_some_and(|p| Arc::ptr_eq(p, &peer)) {
                self.routes.remove(table_key(old));
            }
        }
        for net in nets {
            self.add_allowed_ip(key, *net);
        }
        Ok(())
    }

    /// Adds one allowed IP to a peer, taking it from any other peer that had it (WireGuard's rule).
    /// Host bits are dropped (`10.0.0.1/24` is `10.0.0.0/24`), as `wg` does.
    fn add_allowed_ip(&mut self, key: &PublicKey, net: IpNet) {
        let net = net.trunc();
        let Some(entry) = self.entries.get_mut(key) else { return };
        if !entry.allowed_ips.contains(&net) {
            entry.allowed_ips.push(net);
        }
        let peer = entry.peer.clone();
        if let Some(previous) = self.routes.insert(table_key(net), peer.clone())
            && !Arc::ptr_eq(&previous, &peer)
            && let Some(other) = self.entries.get_mut(&previous.public_key)
        {
            other.allowed_ips.retain(|n| *n != net);
        }
    }

    fn insert_new(&mut self, key: PublicKey, psk: Option<PresharedKey>) {
        let index = loop {
            let candidate = OsRng.next_u32() >> 8;
            if !self.by_index.contains_key(&candidate) {
                break candidate;
            }
        };
        let params = TunnParams {
            private: self.private.clone(),
            peer: x25519_dalek::PublicKey::from(*key.as_bytes()),
            psk: psk.clone(),
            index,
            rate_limiter: self.rate_limiter.clone(),
            in_use: self.in_use.clone(),
        };
        let peer = Arc::new(Peer {
            public_key: key,
            index,
            tunnel: Mutex::new(Tunnel::new(params)),
            endpoint: RwLock::new(None),
            keepalive: AtomicU32::new(0),
            last_sent_ms: AtomicU64::new(0),
            inner_mtu: AtomicU32::new(0),
            probed_at: AtomicU64::new(0),
            control_tx: AtomicU64::new(0),
        });
        self.by_index.insert(index, peer.clone());
        self.entries.insert(key, Entry { peer, allowed_ips: Vec::new(), preshared_key: psk, endpoint: None });
        tracing::info!(peer = %key, fingerprint = %key.fingerprint(), "peer added");
    }

    /// Configuration and statistics of every peer, sorted by key; with each pre-shared key for
    /// the UAPI `get` reply only.
    pub(crate) fn snapshot(&self, now: SystemTime) -> Vec<(PeerState, Option<PresharedKey>)> {
        self.entries
            .iter()
            .map(|(key, e)| {
                let (last_handshake, tx, rx) = e.peer.lock_tunnel().stats(now);
                let state = PeerState {
                    public_key: *key,
                    endpoint: e.peer.endpoint(),
                    allowed_ips: e.allowed_ips.clone(),
                    persistent_keepalive: e.peer.keepalive(),
                    preshared_key: e.preshared_key.as_ref().map(PresharedKey::fingerprint),
                    last_handshake,
                    rx_bytes: rx,
                    tx_bytes: tx + e.peer.control_tx.load(Ordering::Relaxed),
                };
                (state, e.preshared_key.clone())
            })
            .collect()
    }
}

/// The routing table's key for `net` (whose host bits are zero).
fn table_key(net: IpNet) -> IpNetwork {
    IpNetwork::new_truncate(net.network(), net.prefix_len())
        .expect("an IpNet prefix length is valid for its family")
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::noise::TunnResult;
    use meshcrypt_keyexchange::PrivateKey;

    fn key() -> PublicKey {
        PrivateKey::generate().public_key()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn table() -> Peers {
        Peers::new(StaticSecret::random_from_rng(OsRng))
    }

    fn upsert(peers: &mut Peers, k: PublicKey, nets: &[&str]) {
        let mut u = PeerUpdate::new(k);
        u.replace_allowed_ips = true;
        u.allowed_ips = nets.iter().map(|s| net(s)).collect();
        peers.update(&u).unwrap();
    }

    fn routed(peers: &Peers, ip: &str) -> Option<PublicKey> {
        peers.route(ip.parse().unwrap()).map(|p| p.public_key)
    }

    /// `DeviceState::peer` searches the snapshot by halves: the real table must report its
    /// peers sorted by key, however they were added.
    #[test]
    fn the_snapshot_is_sorted_by_key_and_every_peer_is_found() {
        let mut peers = table();
        let keys: Vec<PublicKey> = (0..64).map(|_| key()).collect();
        for k in &keys {
            upsert(&mut peers, *k, &[]);
        }
        let state = crate::DeviceState {
            backend: crate::BackendKind::Userspace,
            ifname: "meshcrypt0".into(),
            ifindex: 1,
            public_key: key(),
            listen_port: 51820,
            fwmark: None,
            peers: peers.snapshot(SystemTime::now()).into_iter().map(|(s, _)| s).collect(),
            counters: Default::default(),
        };
        assert!(state.peers.windows(2).all(|w| w[0].public_key < w[1].public_key));
        for k in &keys {
            assert_eq!(state.peer(k).map(|p| p.public_key), Some(*k));
        }
        assert!(state.peer(&key()).is_none());
    }

    /// The timers visit a peer from its tunnel's first use or its keepalive until it has neither,
    /// and never a peer that is gone.
    #[test]
    fn the_peers_in_use_are_those_with_a_tunnel_or_a_keepalive() {
        let mut peers = table();
        let (idle, busy, kept, gone) = (key(), key(), key(), key());
        for k in [idle, busy, kept, gone] {
            upsert(&mut peers, k, &[]);
        }
        let in_use = |peers: &Peers| {
            let mut keys: Vec<PublicKey> = peers.in_use().iter().map(|p| p.public_key).collect();
            keys.sort();
            keys
        };
        let sorted = |mut keys: Vec<PublicKey>| {
            keys.sort();
            keys
        };
        assert_eq!(in_use(&peers), [], "configured is not in use");
        let peer = |peers: &Peers, k: PublicKey| peers.by_key(k.as_bytes()).unwrap().clone();
        peer(&peers, busy).lock_tunnel().get();
        peer(&peers, gone).lock_tunnel().get();
        let mut u = PeerUpdate::new(kept);
        u.persistent_keepalive = Some(Some(25));
        peers.update(&u).unwrap();
        assert_eq!(in_use(&peers), sorted(vec![busy, kept, gone]));
        peers.remove(&gone);
        assert_eq!(in_use(&peers), sorted(vec![busy, kept]), "a removed peer is let go");

        // What the timer does after each peer's tick.
        let release = |peers: &Peers, k: PublicKey| {
            let p = peer(peers, k);
            peers.in_use.release_idle(&p, &mut p.lock_tunnel());
        };
        for k in [idle, busy, kept] {
            release(&peers, k);
        }
        assert_eq!(in_use(&peers), sorted(vec![busy, kept]), "a tunnel or a keepalive keeps a peer");
        peer(&peers, busy).lock_tunnel().expire(SystemTime::now());
        let mut u = PeerUpdate::new(kept);
        u.persistent_keepalive = Some(None);
        peers.update(&u).unwrap();
        for k in [busy, kept] {
            release(&peers, k);
        }
        assert_eq!(in_use(&peers), [], "without either, both go");
        peer(&peers, idle).lock_tunnel().get();
        assert_eq!(in_use(&peers), [idle], "and come back at the next use");
    }

    /// A peer's tunnel exists only from its first use (here a handshake) until it expires; what
    /// it counted and its latest handshake outlive it, and the next use makes a fresh one whose
    /// counts add to the old.
    #[test]
    fn a_tunnel_lives_from_its_first_use_until_it_expires_and_its_counts_outlive_it() {
        let (mut a, mut b) = (table(), table());
        let (a_key, b_key) = (a.device_public_key(), b.device_public_key());
        upsert(&mut a, b_key, &[]);
        upsert(&mut b, a_key, &[]);
        let (to_b, to_a) =
            (a.by_key(b_key.as_bytes()).unwrap().clone(), b.by_key(a_key.as_bytes()).unwrap().clone());
        assert!(to_b.lock_tunnel().existing().is_none(), "no tunnel before its first use");
        let now = SystemTime::now();
        assert_eq!(to_b.lock_tunnel().stats(now), (None, 0, 0));

        // A handshake in memory, then one packet from a to b.
        let (mut m1, mut m2, mut m3) = ([0u8; 2048], [0u8; 2048], [0u8; 2048]);
        let handshake = |to_b: &Peer, to_a: &Peer, m1: &mut [u8], m2: &mut [u8], m3: &mut [u8]| {
            let TunnResult::WriteToNetwork(init) =
                to_b.lock_tunnel().get().format_handshake_initiation(m1, false)
            else {
                panic!("an initiation")
            };
            let TunnResult::WriteToNetwork(resp) = to_a.lock_tunnel().get().decapsulate(None, init, m2)
            else {
                panic!("a response")
            };
            let done = to_b.lock_tunnel().get().decapsulate(None, resp, m3);
            assert!(matches!(done, TunnResult::WriteToNetwork(_) | TunnResult::Done));
        };
        handshake(&to_b, &to_a, &mut m1, &mut m2, &mut m3);
        let packet = [0x45u8, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 244, 0, 1, 10, 244, 1, 1];
        let TunnResult::WriteToNetwork(sealed) = to_b.lock_tunnel().get().encapsulate(&packet, &mut m1)
        else {
            panic!("sealed")
        };
        assert!(matches!(
            to_a.lock_tunnel().get().decapsulate(None, sealed, &mut m2),
            TunnResult::WriteToTunnelV4(..)
        ));
        let (last, tx, rx) = to_b.lock_tunnel().stats(SystemTime::now());
        assert!(last.is_some() && tx > 0, "{last:?} {tx} {rx}");
        assert!(to_a.lock_tunnel().stats(SystemTime::now()).2 > 0, "the packet counted where it arrived");

        let later = SystemTime::now();
        to_b.lock_tunnel().expire(later);
        assert!(to_b.lock_tunnel().existing().is_none(), "the expired tunnel is gone");
        let (kept, tx_kept, rx_kept) = to_b.lock_tunnel().stats(later);
        assert_eq!((tx_kept, rx_kept), (tx, rx), "its counts outlive it");
        assert!(kept.is_some_and(|k| k <= later), "and its latest handshake");

        handshake(&to_b, &to_a, &mut m1, &mut m2, &mut m3);
        let sealed = to_b.lock_tunnel().get().encapsulate(&packet, &mut m1);
        assert!(matches!(sealed, TunnResult::WriteToNetwork(_)), "a fresh session seals");
        let (_, tx_again, _) = to_b.lock_tunnel().stats(SystemTime::now());
        assert!(tx_again > tx, "a fresh tunnel's counts add to the old: {tx_again} > {tx}");
    }

    #[test]
    fn longest_prefix_wins_and_unknown_is_unrouted() {
        let (a, b) = (key(), key());
        let mut peers = table();
        upsert(&mut peers, a, &["10.244.0.0/16"]);
        upsert(&mut peers, b, &["10.244.2.0/24"]);
        assert_eq!(routed(&peers, "10.244.1.9"), Some(a));
        assert_eq!(routed(&peers, "10.244.2.9"), Some(b));
        assert_eq!(routed(&peers, "10.245.0.1"), None);
        assert_eq!(routed(&peers, "fd00::1"), None);
    }

    /// A batch's cached lookups answer as the table does, in runs and across changes of
    /// address (unrouted ones too), whatever came before.
    #[test]
    fn cached_routes_answer_as_the_table_does() {
        let (a, b) = (key(), key());
        let mut peers = table();
        upsert(&mut peers, a, &["10.244.0.0/16"]);
        upsert(&mut peers, b, &["10.244.2.0/24", "fd00::/64"]);
        let mut routes = peers.cached_routes();
        for ip in [
            "10.244.1.9",
            "10.244.1.9",
            "10.244.2.9",
            "10.244.2.9",
            "10.245.0.1",
            "10.245.0.1",
            "10.244.1.9",
            "fd00::1",
            "10.244.2.9",
        ] {
            let cached = routes.route(ip.parse().unwrap()).map(|p| p.public_key);
            assert_eq!(cached, routed(&peers, ip), "{ip}");
        }
    }

    #[test]
    fn replacing_allowed_ips_keeps_the_peer_object() {
        let a = key();
        let mut peers = table();
        upsert(&mut peers, a, &["10.244.1.0/24"]);
        let before = peers.by_key(a.as_bytes()).unwrap().clone();
        peers.replace_allowed_ips(&a, &[net("10.244.9.0/24")]).unwrap();
        let after = peers.by_key(a.as_bytes()).unwrap().clone();
        assert!(Arc::ptr_eq(&before, &after));
        assert_eq!(routed(&peers, "10.244.1.1"), None);
        assert_eq!(routed(&peers, "10.244.9.1"), Some(a));
        assert_eq!(peers.snapshot(SystemTime::now())[0].0.allowed_ips, vec![net("10.244.9.0/24")]);
    }

    #[test]
    fn an_allowed_ip_moves_between_peers() {
        let (a, b) = (key(), key());
        let mut peers = table();
        upsert(&mut peers, a, &["10.244.1.0/24", "10.244.3.0/24"]);
        upsert(&mut peers, b, &["10.244.1.0/24"]);
        assert_eq!(routed(&peers, "10.244.1.1"), Some(b));
        let snap = peers.snapshot(SystemTime::now());
        let a_state = snap.iter().find(|(s, _)| s.public_key == a).unwrap();
        assert_eq!(a_state.0.allowed_ips, vec![net("10.244.3.0/24")]);
        // Replacing a's set must not remove b's route.
        peers.replace_allowed_ips(&a, &[]).unwrap();
        assert_eq!(routed(&peers, "10.244.1.1"), Some(b));
    }

    #[test]
    fn remove_drops_routes_and_index() {
        let a = key();
        let mut peers = table();
        upsert(&mut peers, a, &["10.244.1.0/24"]);
        let index = peers.by_key(a.as_bytes()).unwrap().index;
        assert!(peers.remove(&a));
        assert!(peers.by_index(index).is_none());
        assert_eq!(routed(&peers, "10.244.1.1"), None);
        assert!(!peers.remove(&a));
    }

    #[test]
    fn update_only_does_not_create_and_unknown_replace_fails() {
        let a = key();
        let mut peers = table();
        let mut u = PeerUpdate::new(a);
        u.update_only = true;
        peers.update(&u).unwrap();
        assert!(peers.snapshot(SystemTime::now()).is_empty());
        assert!(matches!(peers.replace_allowed_ips(&a, &[]), Err(Error::PeerNotFound(_))));
    }

    #[test]
    fn keepalive_is_due_until_something_is_sent() {
        let a = key();
        let mut peers = table();
        let mut u = PeerUpdate::new(a);
        u.persistent_keepalive = Some(Some(25));
        peers.update(&u).unwrap();
        let p = peers.by_key(a.as_bytes()).unwrap();
        assert!(p.keepalive_due(5_000));
        p.mark_sent(5_000);
        assert!(!p.keepalive_due(5_000));
        assert!(!p.keepalive_due(29_999), "24.999 s after");
        assert!(p.keepalive_due(30_000), "25 s after");
    }

    #[test]
    fn path_probes_are_due_when_new_expired_or_failed_and_a_new_endpoint_forgets_the_path() {
        let a = key();
        let mut peers = table();
        upsert(&mut peers, a, &["10.244.1.0/24"]);
        let p = peers.by_key(a.as_bytes()).unwrap().clone();
        let (expiry, retry) = (PMTU_EXPIRY.as_millis() as u64, PMTU_RETRY.as_millis() as u64);
        assert!(p.path_probe_due(1000), "never probed");
        assert_eq!(p.inner_mtu(), None);
        p.set_inner_mtu(Some(1440), 1000);
        assert_eq!(p.inner_mtu(), Some(1440));
        for (now, due) in [(1000, false), (1000 + expiry - 1, false), (1000 + expiry, true)] {
            assert_eq!(p.path_probe_due(now), due, "probed at 1000, now {now}");
        }
        p.set_inner_mtu(None, 1000);
        for (now, due) in [(1000 + retry - 1, false), (1000 + retry, true)] {
            assert_eq!(p.path_probe_due(now), due, "failed at 1000, now {now}");
        }
        p.set_inner_mtu(Some(1440), 2000);
        p.set_endpoint("198.18.0.12:51820".parse().unwrap());
        assert_eq!(p.inner_mtu(), None, "a new endpoint is a new path");
        assert!(p.path_probe_due(2000));
    }
}
