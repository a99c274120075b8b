//! A fake WireGuard backend for tests of the code that drives a device (feature `test-support`):
//! it keeps the configuration a real device would hold, applies [`Change`]s with the real
//! device's rules (in order, stopping at the first error, the earlier changes kept), records the
//! handshakes it was asked to start, and fails on request — no TUN, no socket, no root.
//!
//! A device needs an interface index the routing code can find: [`FakeBackend::new`] takes the
//! two hooks that add and remove the interface in whatever stands in for the kernel.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use meshcrypt_keyexchange::{PresharedKey, PublicKey};

use crate::backend::{WireGuardBackend, WireGuardDevice};
use crate::config::{Change, DeviceConfig};
use crate::error::Error;
use crate::flows::FlowHarvest;
use crate::state::{DeviceCounters, DeviceState, PeerState};

/// Adds an interface by name and returns its index (or the operating system's error).
pub type AddLink = Box<dyn Fn(&str) -> io::Result<u32> + Send + Sync>;
/// Removes the interface with this index (the device was dropped).
pub type RemoveLink = Arc<dyn Fn(u32) + Send + Sync>;

/// Creates [`FakeDevice`]s and remembers the latest one.
pub struct FakeBackend {
    add_link: AddLink,
    remove_link: RemoveLink,
    fail_create: Mutex<Option<i32>>,
    created: Mutex<Vec<std::sync::Weak<FakeDevice>>>,
}

impl FakeBackend {
    /// A backend whose devices add their interface with `add_link` and remove it with
    /// `remove_link` when dropped.
    pub fn new(add_link: AddLink, remove_link: RemoveLink) -> Self {
        Self { add_link, remove_link, fail_create: Mutex::new(None), created: Mutex::new(Vec::new()) }
    }

    /// Makes the next [`WireGuardBackend::create`] fail with `errno` (as `Error::Tun`), once.
    pub fn fail_next_create(&self, errno: i32) {
        *lock(&self.fail_create) = Some(errno);
    }

    /// How many devices were created so far.
    pub fn created(&self) -> usize {
        lock(&self.created).len()
    }

    /// The most recently created device, while it is alive.
    pub fn device(&self) -> Option<Arc<FakeDevice>> {
        lock(&self.created).last().and_then(std::sync::Weak::upgrade)
    }
}

impl WireGuardBackend for FakeBackend {
    fn create(&self, config: DeviceConfig) -> Result<Arc<dyn WireGuardDevice>, Error> {
        let tun_error = |source| Error::Tun { ifname: config.ifname.clone(), source };
        if let Some(errno) = lock(&self.fail_create).take() {
            return Err(tun_error(io::Error::from_raw_os_error(errno)));
        }
        let ifindex = (self.add_link)(&config.ifname).map_err(tun_error)?;
        let device = Arc::new(FakeDevice {
            kind: config.backend,
            deleted: std::sync::atomic::AtomicBool::new(false),
            ifname: config.ifname,
            ifindex,
            remove_link: self.remove_link.clone(),
            config: Mutex::new(Config {
                public_key: config.private_key.public_key(),
                listen_port: config.listen_port,
                fwmark: config.fwmark,
                peers: BTreeMap::new(),
            }),
            fail_apply: Mutex::new(None),
            handshakes: Mutex::new(Vec::new()),
            flows: Mutex::default(),
        });
        lock(&self.created).push(Arc::downgrade(&device));
        Ok(device)
    }
}

/// One fake device: its configuration, the handshakes it was asked to start, and a failure to
/// inject.
pub struct FakeDevice {
    /// As the config asked: a kernel fake outlives its handle (its link stays) until deleted.
    kind: crate::BackendKind,
    /// The link was removed ([`WireGuardDevice::delete`]).
    deleted: std::sync::atomic::AtomicBool,
    ifname: String,
    ifindex: u32,
    remove_link: RemoveLink,
    config: Mutex<Config>,
    fail_apply: Mutex<Option<usize>>,
    handshakes: Mutex<Vec<PublicKey>>,
    flows: Mutex<(Option<usize>, FlowHarvest)>,
}

/// What the device holds; of its key only the public half (a fake has no use for the secret).
struct Config {
    public_key: PublicKey,
    listen_port: u16,
    fwmark: Option<u32>,
    peers: BTreeMap<PublicKey, PeerState>,
}

impl FakeDevice {
    /// Makes the next [`WireGuardDevice::apply`] fail after `applied` of its changes took effect
    /// (the real device's partial-failure shape), once. The error is [`Error::PeerNotFound`] for
    /// the device's own key.
    pub fn fail_next_apply_after(&self, applied: usize) {
        *lock(&self.fail_apply) = Some(applied);
    }

    /// Every peer key a handshake was started with, in order, since the last call.
    pub fn take_handshakes(&self) -> Vec<PublicKey> {
        std::mem::take(&mut *lock(&self.handshakes))
    }

    /// Sets when peer `key`'s current session's handshake completed (`None`: its session expired
    /// or never was), as the real device reports it.
    pub fn set_handshake(&self, key: &PublicKey, at: Option<std::time::SystemTime>) {
        if let Some(peer) = lock(&self.config).peers.get_mut(key) {
            peer.last_handshake = at;
        }
    }

    /// Sets the bytes sent to peer `key` (handshake initiations count, as on the real device).
    pub fn set_tx_bytes(&self, key: &PublicKey, bytes: u64) {
        if let Some(peer) = lock(&self.config).peers.get_mut(key) {
            peer.tx_bytes = bytes;
        }
    }

    /// Adds `flows` to what the next [`WireGuardDevice::take_flows`] returns, as if the data
    /// path had counted them (only while accounting is on, as the real device does).
    pub fn count_flows(&self, flows: impl IntoIterator<Item = crate::Flow>) {
        let mut held = lock(&self.flows);
        if held.0.is_some() {
            held.1.flows.extend(flows);
        }
    }

    /// The flow accounting asked for: the cap on flows, or `None` when off.
    pub fn flow_accounting(&self) -> Option<usize> {
        lock(&self.flows).0
    }

    /// The interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

impl std::fmt::Debug for FakeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeDevice").field("ifname", &self.ifname).field("ifindex", &self.ifindex).finish()
    }
}

impl Drop for FakeDevice {
    /// A userspace fake takes its link with it; a kernel fake leaves it, as the kernel does.
    fn drop(&mut self) {
        if self.kind == crate::BackendKind::Userspace {
            self.remove_link();
        }
    }
}

impl FakeDevice {
    /// Removes the link, once.
    fn remove_link(&self) {
        if !self.deleted.swap(true, std::sync::atomic::Ordering::SeqCst) {
            (self.remove_link)(self.ifindex);
        }
    }
}

impl WireGuardDevice for FakeDevice {
    fn apply(&self, changes: &[Change]) -> Result<(), Error> {
        let fail_after = lock(&self.fail_apply).take();
        let mut config = lock(&self.config);
        for (i, change) in changes.iter().enumerate() {
            if fail_after == Some(i) {
                return Err(Error::PeerNotFound(config.public_key));
            }
            config.apply(change)?;
        }
        Ok(())
    }

    fn observe(&self) -> Result<DeviceState, Error> {
        let config = lock(&self.config);
        Ok(DeviceState {
            backend: self.kind,
            ifname: self.ifname.clone(),
            ifindex: self.ifindex,
            public_key: config.public_key,
            listen_port: config.listen_port,
            fwmark: config.fwmark,
            peers: config.peers.values().cloned().collect(),
            counters: DeviceCounters::default(),
        })
    }

    fn initiate_handshakes(&self, peers: &[PublicKey]) -> usize {
        let config = lock(&self.config);
        let sent: Vec<PublicKey> = peers
            .iter()
            .filter(|k| config.peers.get(k).is_some_and(|p| p.endpoint.is_some()))
            .copied()
            .collect();
        let count = sent.len();
        lock(&self.handshakes).extend(sent);
        count
    }

    fn set_flow_accounting(&self, max_flows: Option<usize>) {
        lock(&self.flows).0 = max_flows.filter(|m| *m > 0);
    }

    fn take_flows(&self) -> FlowHarvest {
        std::mem::take(&mut lock(&self.flows).1)
    }

    fn kind(&self) -> crate::BackendKind {
        self.kind
    }

    /// A kernel fake's link goes now; a userspace fake's goes on drop, as the real device's does.
    fn delete(&self) -> Result<(), Error> {
        if self.kind == crate::BackendKind::Kernel {
            self.remove_link();
        }
        Ok(())
    }
}

impl Config {
    fn apply(&mut self, change: &Change) -> Result<(), Error> {
        match change {
            Change::SetPrivateKey(key) => self.public_key = key.public_key(),
            Change::SetListenPort(port) => self.listen_port = *port,
            Change::SetFwmark(mark) => self.fwmark = *mark,
            Change::RemoveAllPeers => self.peers.clear(),
            Change::UpsertPeer(c) => {
                let peer = self.peers.entry(c.public_key).or_insert_with(|| PeerState::new(c.public_key));
                peer.endpoint = c.endpoint.or(peer.endpoint);
                peer.allowed_ips = c.allowed_ips.clone();
                peer.persistent_keepalive = c.persistent_keepalive;
                peer.preshared_key = c.preshared_key.as_ref().map(PresharedKey::fingerprint);
            }
            Change::UpdatePeer(u) => {
                if u.remove {
                    self.peers.remove(&u.public_key);
                    return Ok(());
                }
                if u.update_only && !self.peers.contains_key(&u.public_key) {
                    return Ok(());
                }
                let peer = self.peers.entry(u.public_key).or_insert_with(|| PeerState::new(u.public_key));
                if let Some(endpoint) = u.endpoint {
                    peer.endpoint = Some(endpoint);
                }
                if let Some(keepalive) = u.persistent_keepalive {
                    peer.persistent_keepalive = keepalive;
                }
                if let Some(psk) = &u.preshared_key {
                    peer.preshared_key = psk.as_ref().map(PresharedKey::fingerprint);
                }
                if u.replace_allowed_ips {
                    peer.allowed_ips.clear();
                }
                peer.allowed_ips.extend(u.allowed_ips.iter().copied());
            }
            Change::RemovePeer(key) => {
                self.peers.remove(key);
            }
            Change::ReplaceAllowedIps { public_key, allowed_ips } => {
                let peer = self.peers.get_mut(public_key).ok_or(Error::PeerNotFound(*public_key))?;
                peer.allowed_ips = allowed_ips.clone();
            }
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
