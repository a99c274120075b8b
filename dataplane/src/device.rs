//! The userspace WireGuard device: creation, the worker threads, configuration by deltas,
//! observation, and shutdown.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock, RwLockWriteGuard};
use std::thread::JoinHandle;

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::backend::WireGuardDevice;
use crate::config::{Change, DeviceConfig};
use crate::datapath::rx::RxState;
use crate::datapath::tx::TxState;
use crate::datapath::{self, Counters, Net, Shared, worker};
use crate::error::Error;
use crate::flows::FlowHarvest;
use crate::peers::Peers;
use crate::socket;
use crate::state::{DeviceState, PeerState};
use crate::tun;
use crate::uapi;
use crate::wake::Waker;
use meshcrypt_keyexchange::PresharedKey;

/// A running userspace WireGuard device: a TUN interface, a UDP socket, worker threads and a UAPI
/// socket. Dropping it (or [`Device::shutdown`]) stops everything and removes the interface.
pub struct Device {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    uapi: Option<uapi::Server>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("ifname", &self.shared.ifname)
            .field("ifindex", &self.shared.ifindex)
            .finish()
    }
}

impl Device {
    /// Creates the TUN interface (left down, without addresses: the routing crate owns those; with
    /// [`DeviceConfig::mtu`] as its MTU),
    /// binds the UDP socket, starts the workers and serves UAPI at `<uapi_dir>/<ifname>.sock`.
    pub fn create(config: DeviceConfig) -> Result<Self, Error> {
        let (tun_dev, ifindex) = tun::open(&config.ifname)?;
        if let Some(mtu) = config.mtu {
            tun_dev.set_mtu(mtu).map_err(|source| Error::Tun { ifname: config.ifname.clone(), source })?;
        }
        // The TUN's MTU bounds padding (the timer tick follows later changes).
        let tun_mtu = tun_dev.mtu().unwrap_or(1500);
        let bound = socket::bind(config.listen_port, config.fwmark)?;
        let (gso, gro) = (bound.state.max_gso_segments(), bound.state.gro_segments());
        let tun_offload = tun_dev.tcp_gso();
        let waker = Waker::new().map_err(|source| Error::Tun { ifname: config.ifname.clone(), source })?;
        let private = StaticSecret::from(*config.private_key.to_bytes());
        let (tick_now, ticks) = mpsc::channel();
        let tx = Mutex::new(TxState::new(&tun_dev));
        let rx = Mutex::new(RxState::new(&tun_dev));
        let shared = Arc::new(Shared {
            ifname: config.ifname.clone(),
            ifindex,
            tun: tun_dev,
            peers: RwLock::new(Peers::new(private)),
            net: RwLock::new(Net {
                socket: Arc::new(bound.socket),
                state: Arc::new(bound.state),
                port: bound.port,
                fwmark: config.fwmark,
                dual_stack: bound.dual_stack,
            }),
            counters: Counters::default(),
            flows: crate::flows::FlowTable::default(),
            stop: AtomicBool::new(false),
            mtu: AtomicU32::new(u32::from(tun_mtu)),
            waker,
            tick_now,
            tx,
            rx,
        });
        let mut device = Device { shared: shared.clone(), workers: Vec::new(), uapi: None };

        for i in 0..config.workers.max(1) {
            let s = shared.clone();
            device.spawn(format!("wg-{i}"), move || worker::run(&s))?;
        }
        let s = shared.clone();
        device.spawn("wg-timers".to_owned(), move || datapath::timers(&s, ticks))?;

        let path = config.uapi_dir.join(format!("{}.sock", config.ifname));
        let handle = DeviceHandle { shared };
        device.uapi = Some(uapi::Server::start(&config.uapi_dir, path, handle)?);
        tracing::info!(
            ifname = %config.ifname,
            ifindex,
            listen_port = bound.port,
            tun_offload,
            udp_gso_segments = gso,
            udp_gro_segments = gro,
            public_key = %config.private_key.public_key(),
            "WireGuard device created"
        );
        Ok(device)
    }

    fn spawn(&mut self, name: String, f: impl FnOnce() + Send + 'static) -> Result<(), Error> {
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(f)
            .map_err(|source| Error::Thread { name, source })?;
        self.workers.push(handle);
        Ok(())
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.shared.ifname
    }

    /// The interface index, for netlink.
    pub fn ifindex(&self) -> u32 {
        self.shared.ifindex
    }

    /// The UDP port actually bound (useful after asking for port 0).
    pub fn listen_port(&self) -> u16 {
        self.shared.net.read().unwrap_or_else(|p| p.into_inner()).port
    }

    /// The path of the UAPI socket.
    pub fn uapi_path(&self) -> Option<&std::path::Path> {
        self.uapi.as_ref().map(uapi::Server::path)
    }

    /// Applies configuration deltas in order (see [`Change`]).
    pub fn apply(&self, changes: &[Change]) -> Result<(), Error> {
        apply(&self.shared, changes)
    }

    /// Starts a handshake with each peer in `peers` now, instead of when the first packet needs
    /// one (WireGuard's default): a path is then up before traffic needs it, and a peer that kept
    /// a session this device lost (a restart) moves to the new one at once instead of after
    /// KEEPALIVE + REKEY_TIMEOUT (10 s + 5 s, whitepaper §6.5). A handshake under way is resent.
    /// Keys that are not peers, or peers without an endpoint, are skipped. Returns how many
    /// initiations were sent; a send error is logged (WARN) and the peer skipped.
    pub fn initiate_handshakes(&self, peers: &[meshcrypt_keyexchange::PublicKey]) -> usize {
        datapath::initiate_handshakes(&self.shared, peers)
    }

    /// The configuration and statistics now.
    pub fn observe(&self) -> DeviceState {
        observe(&self.shared)
    }

    /// Turns flow accounting on with room for `max_flows` flows between two drains, or off
    /// (`None`): each drain ([`Self::take_flows`]) returns the flows counted since the previous
    /// one, summed per 5-tuple, direction and outcome ([`crate::Flow`]). Takes effect from the next batch of packets.
    pub fn set_flow_accounting(&self, max_flows: Option<usize>) {
        self.shared.flows.set_max(max_flows);
    }

    /// Every flow counted since the previous call, and what did not fit.
    pub fn take_flows(&self) -> FlowHarvest {
        self.shared.flows.take()
    }

    /// Stops the workers, removes the UAPI socket and closes the TUN (the interface disappears).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.shared.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(server) = self.uapi.take() {
            server.stop();
        }
        let _ = self.shared.tick_now.send(());
        if let Err(e) = self.shared.waker.wake() {
            tracing::warn!(error = %e, "could not wake the data-path workers");
        }
        for worker in self.workers.drain(..) {
            if worker.join().is_err() {
                tracing::error!("a data-path thread panicked");
            }
        }
        tracing::info!(ifname = %self.shared.ifname, "WireGuard device stopped");
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop();
    }
}

impl WireGuardDevice for Device {
    fn apply(&self, changes: &[Change]) -> Result<(), Error> {
        Device::apply(self, changes)
    }

    fn observe(&self) -> Result<DeviceState, Error> {
        Ok(Device::observe(self))
    }

    fn initiate_handshakes(&self, peers: &[meshcrypt_keyexchange::PublicKey]) -> usize {
        Device::initiate_handshakes(self, peers)
    }

    fn set_flow_accounting(&self, max_flows: Option<usize>) {
        Device::set_flow_accounting(self, max_flows);
    }

    fn take_flows(&self) -> FlowHarvest {
        Device::take_flows(self)
    }

    fn kind(&self) -> crate::BackendKind {
        crate::BackendKind::Userspace
    }

    /// Nothing: the device stops when its last handle drops.
    fn delete(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// What the UAPI server holds: the shared state, not the threads.
pub(crate) struct DeviceHandle {
    shared: Arc<Shared>,
}

impl DeviceHandle {
    pub(crate) fn apply(&self, changes: &[Change]) -> Result<(), Error> {
        apply(&self.shared, changes)
    }

    /// The state plus the secrets a UAPI `get` reply carries.
    pub(crate) fn dump(&self) -> uapi::Dump {
        let peers = self.shared.peers();
        let private_key = Zeroizing::new(peers.private_key().to_bytes());
        let snapshot: Vec<(PeerState, Option<PresharedKey>)> = peers.snapshot(std::time::SystemTime::now());
        drop(peers);
        let net = self.shared.net.read().unwrap_or_else(|p| p.into_inner());
        uapi::Dump { private_key, listen_port: net.port, fwmark: net.fwmark, peers: snapshot }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }
}

fn write_peers(shared: &Shared) -> RwLockWriteGuard<'_, Peers> {
    shared.peers.write().unwrap_or_else(|p| p.into_inner())
}

/// Applies `changes` under the peer table's write lock, then starts a handshake with each peer
/// added or updated that knocked while it was no peer ([`datapath::knocks`]).
fn apply(shared: &Shared, changes: &[Change]) -> Result<(), Error> {
    let mut peers = write_peers(shared);
    let applied = apply_locked(shared, &mut peers, changes);
    // Even after a failed change: the ones before it are in force.
    let now = std::time::SystemTime::now();
    let changed: Vec<_> = changes
        .iter()
        .filter_map(|c| match c {
            Change::UpsertPeer(config) => Some(config.public_key),
            Change::UpdatePeer(update) => Some(update.public_key),
            _ => None,
        })
        .filter_map(|key| peers.by_key(key.as_bytes()).map(|p| (key, p.lock_tunnel().stats(now).0)))
        .collect();
    let knocked = datapath::knocks::to_answer(&shared.counters.knocks.latest(), &changed, now);
    drop(peers);
    if !knocked.is_empty() {
        let sent = datapath::initiate_handshakes(shared, &knocked);
        tracing::info!(
            peers = knocked.len(),
            sent,
            "handshakes initiated with peers refused before they were added"
        );
    }
    applied?;
    // A new endpoint's path is probed by a tick now rather than at the next one, so that the
    // first packets to it already know what it carries (the timer thread is in the device's
    // network namespace; the caller may not be).
    let _ = shared.tick_now.send(());
    Ok(())
}

fn apply_locked(shared: &Shared, peers: &mut Peers, changes: &[Change]) -> Result<(), Error> {
    for change in changes {
        match change {
            Change::SetPrivateKey(key) => {
                peers.set_private_key(StaticSecret::from(*key.to_bytes()));
                tracing::info!(public_key = %key.public_key(), "device private key replaced");
            }
            Change::SetListenPort(port) => rebind(shared, Some(*port), None)?,
            Change::SetFwmark(mark) => rebind(shared, None, Some(*mark))?,
            Change::RemoveAllPeers => peers.remove_all(),
            Change::UpsertPeer(config) => peers.update(&config.clone().into())?,
            Change::UpdatePeer(update) => peers.update(update)?,
            Change::RemovePeer(key) => {
                peers.remove(key);
            }
            Change::ReplaceAllowedIps { public_key, allowed_ips } => {
                peers.replace_allowed_ips(public_key, allowed_ips)?;
            }
        }
    }
    Ok(())
}

/// Binds a new socket for a port change (the receive worker picks it up within its timeout; port
/// 0 keeps the current one) or sets the mark on the current one.
fn rebind(shared: &Shared, port: Option<u16>, fwmark: Option<Option<u32>>) -> Result<(), Error> {
    let mut net = shared.net.write().unwrap_or_else(|p| p.into_inner());
    if let Some(mark) = fwmark {
        if mark != net.fwmark {
            socket::set_mark(&net.socket, mark).map_err(|source| Error::Socket { port: net.port, source })?;
            net.fwmark = mark;
        }
        return Ok(());
    }
    if let Some(port) = port
        && port != 0
        && port != net.port
    {
        let bound = socket::bind(port, net.fwmark)?;
        tracing::info!(ifname = %shared.ifname, listen_port = bound.port, "listen port changed");
        *net = Net {
            socket: Arc::new(bound.socket),
            state: Arc::new(bound.state),
            port: bound.port,
            fwmark: net.fwmark,
            dual_stack: bound.dual_stack,
        };
    }
    Ok(())
}

fn observe(shared: &Shared) -> DeviceState {
    let peers = shared.peers();
    let public_key = peers.device_public_key();
    let peer_states = peers.snapshot(std::time::SystemTime::now()).into_iter().map(|(s, _)| s).collect();
    drop(peers);
    let net = shared.net.read().unwrap_or_else(|p| p.into_inner());
    DeviceState {
        backend: crate::BackendKind::Userspace,
        ifname: shared.ifname.clone(),
        ifindex: shared.ifindex,
        public_key,
        listen_port: net.port,
        fwmark: net.fwmark,
        peers: peer_states,
        counters: shared.counters.snapshot(),
    }
}

/// Where a device's UAPI socket lives.
pub fn uapi_socket_path(uapi_dir: &std::path::Path, ifname: &str) -> PathBuf {
    uapi_dir.join(format!("{ifname}.sock"))
}
