//! The data path: what the workers share, and the timer tick (handshake retries, rekeys,
//! keepalives). The two directions are in [`tx`] (TUN→UDP: route, encrypt, send) and [`rx`]
//! (UDP→TUN: dispatch, decrypt, check the source, deliver); [`worker`] is the event loop that
//! runs them.
//!
//! Both directions work in batches. TUN→UDP reads TUN frames, which with offloads are TCP or UDP
//! super-packets of up to 64 KiB, split in place into MTU-sized packets ([`gso`], the virtio-net
//! header in [`offload`]); consecutive packets for one peer are sealed back to back into one
//! buffer and leave in one `sendmsg` with UDP GSO. UDP→TUN takes up to [`rx::RX_MESSAGES`]
//! messages per `recvmmsg`, each possibly a GRO train of datagrams; every datagram is opened
//! straight into its slot of the TUN batch, and the batch is coalesced ([`gro`]) into a few
//! super-packets, so the kernel sees a few large packets.
//! Buffers are allocated once per device and reused. Locks: one peer-table read per batch; a
//! session lock per run of packets to one peer when sending, per datagram when receiving.

pub(crate) mod gro;
pub(crate) mod gso;
pub(crate) mod knocks;
pub(crate) mod offload;
pub(crate) mod rx;
pub(crate) mod tx;
pub(crate) mod worker;

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::TunnResult;
use boringtun::noise::errors::WireGuardError;
use quinn_udp::{Transmit, UdpSocketState};
use tun_rs::SyncDevice;

use crate::peers::{InUse, Peer, Peers};
use crate::socket;
use crate::state::DeviceCounters;
use crate::wake::Waker;

/// Largest datagram or inner packet handled.
pub(crate) const MAX_PACKET: usize = 65_535;
/// Room for WireGuard's header and tag around an inner packet.
pub(crate) const OVERHEAD: usize = 32;
/// How long a send waits for room in a full socket buffer before dropping.
const SEND_WAIT: Duration = Duration::from_millis(100);
/// A handshake initiation's length (WireGuard whitepaper §5.4.2).
const HANDSHAKE_INIT_LEN: usize = 148;
/// How often the timer tick runs.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// The UDP socket in use and how it was bound.
pub(crate) struct Net {
    pub(crate) socket: Arc<UdpSocket>,
    /// Batched-IO state of `socket`.
    pub(crate) state: Arc<UdpSocketState>,
    pub(crate) port: u16,
    pub(crate) fwmark: Option<u32>,
    pub(crate) dual_stack: bool,
}

/// Counters behind [`DeviceCounters`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) no_route: AtomicU64,
    last_no_route: Mutex<Option<crate::state::NoPeerDrop>>,
    pub(crate) no_endpoint: AtomicU64,
    pub(crate) bad_source: AtomicU64,
    last_bad_source: Mutex<Option<crate::state::BadSource>>,
    pub(crate) decrypt_errors: AtomicU64,
    pub(crate) unknown_key: AtomicU64,
    last_unknown: Mutex<Option<crate::state::UnknownHandshake>>,
    /// The keys whose initiations were refused, for the device to answer once they are peers.
    pub(crate) knocks: knocks::Knocks,
    pub(crate) send_errors: AtomicU64,
    pub(crate) too_big: AtomicU64,
    /// Send errors since the last WARN about them, and when that was (ms since [`clock`]'s start).
    unreported_send_errors: AtomicU64,
    last_send_warning_ms: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> DeviceCounters {
        DeviceCounters {
            dropped_no_route: self.no_route.load(Ordering::Relaxed),
            last_no_route: *self.last_no_route.lock().unwrap_or_else(|e| e.into_inner()),
            dropped_no_endpoint: self.no_endpoint.load(Ordering::Relaxed),
            dropped_bad_source: self.bad_source.load(Ordering::Relaxed),
            last_bad_source: *self.last_bad_source.lock().unwrap_or_else(|e| e.into_inner()),
            decrypt_errors: self.decrypt_errors.load(Ordering::Relaxed),
            handshakes_unknown_key: self.unknown_key.load(Ordering::Relaxed),
            last_unknown_handshake: *self.last_unknown.lock().unwrap_or_else(|e| e.into_inner()),
            dropped_send_error: self.send_errors.load(Ordering::Relaxed),
            dropped_too_big: self.too_big.load(Ordering::Relaxed),
        }
    }

    /// Counts a packet from `peer` whose inner `source` is outside its allowed IPs, and remembers
    /// it as the latest unless another worker holds the record (never waits on the data path).
    pub(crate) fn bad_source(&self, peer: meshcrypt_keyexchange::PublicKey, source: std::net::IpAddr) {
        bump(&self.bad_source);
        if let Ok(mut latest) = self.last_bad_source.try_lock() {
            *latest = Some(crate::state::BadSource { peer, source });
        }
        tracing::trace!(%peer, %source, "inner source not in the peer's allowed IPs");
    }

    /// Counts an outbound `packet` no peer covers, and remembers its addresses as the latest
    /// unless another worker holds the record (never waits on the data path).
    pub(crate) fn no_peer(&self, packet: &[u8]) {
        bump(&self.no_route);
        if let Some((key, _)) = crate::flows::parse(packet, crate::flows::FlowDirection::Outbound)
            && let Ok(mut latest) = self.last_no_route.try_lock()
        {
            *latest = Some(crate::state::NoPeerDrop { source: key.src, destination: key.dst });
        }
    }

    /// Counts a handshake initiation from `public_key`, which is no peer's, and remembers it as
    /// the latest and as a knock (rare: a lock here costs nothing on the data path). Called with the
    /// peer table's read lock held (see [`knocks`]).
    pub(crate) fn unknown_handshake(&self, from: SocketAddr, public_key: meshcrypt_keyexchange::PublicKey) {
        bump(&self.unknown_key);
        *self.last_unknown.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(crate::state::UnknownHandshake { from, public_key });
        self.knocks.record(public_key, SystemTime::now());
        tracing::debug!(%from, key = %public_key, "handshake initiation from a key that is no peer's: dropped");
    }

    /// Counts `datagrams` lost to a send error and logs a WARN, at most one per
    /// [`SEND_WARNING_EVERY`] with the count since the previous one (a path that refuses every
    /// batch must not flood the log, nor be silent).
    pub(crate) fn send_failed(&self, datagrams: usize, peer: &Peer, to: SocketAddr, error: &io::Error) {
        let n = datagrams as u64;
        self.send_errors.fetch_add(n, Ordering::Relaxed);
        let unreported = self.unreported_send_errors.fetch_add(n, Ordering::Relaxed) + n;
        let now = clock();
        let last = self.last_send_warning_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= SEND_WARNING_EVERY.as_millis() as u64;
        if due
            && self
                .last_send_warning_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.unreported_send_errors.fetch_sub(unreported, Ordering::Relaxed);
            tracing::warn!(
                peer = %peer.public_key,
                endpoint = %to,
                error = %error,
                errno = error.raw_os_error(),
                dropped = unreported,
                "datagrams to a peer could not be sent and were dropped"
            );
        }
    }
}

/// How often a send error is logged at most.
pub(crate) const SEND_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Milliseconds since the data path's clock started (monotonic).
pub(crate) fn clock() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Everything the worker threads share with the [`crate::Device`] handle.
pub(crate) struct Shared {
    pub(crate) ifname: String,
    pub(crate) ifindex: u32,
    pub(crate) tun: SyncDevice,
    pub(crate) peers: RwLock<Peers>,
    pub(crate) net: RwLock<Net>,
    pub(crate) counters: Counters,
    /// Flow accounting (off until asked for).
    pub(crate) flows: crate::flows::FlowTable,
    pub(crate) stop: AtomicBool,
    /// Wakes the workers out of their wait: on shutdown and when the socket is replaced.
    pub(crate) waker: Waker,
    /// The TUN→UDP buffers; holding them makes a worker the TUN's reader.
    pub(crate) tx: Mutex<tx::TxState>,
    /// The UDP→TUN buffers; holding them makes a worker the socket's reader.
    pub(crate) rx: Mutex<rx::RxState>,
    /// The TUN's MTU, refreshed by the timer tick: padding never grows a packet past it.
    pub(crate) mtu: AtomicU32,
    /// Asks the timer thread for a tick now (after a configuration change, and to stop it).
    pub(crate) tick_now: std::sync::mpsc::Sender<()>,
}

/// A socket handle for sending.
pub(crate) struct Sender {
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
    dual_stack: bool,
    pub(crate) fwmark: Option<u32>,
}

impl Sender {
    /// Sends one datagram, or with `segment` a GSO train of `segment`-sized datagrams (the last
    /// may be shorter). A full socket buffer is waited on briefly; other errors drop the batch.
    pub(crate) fn transmit(&self, contents: &[u8], segment: Option<usize>, to: SocketAddr) -> io::Result<()> {
        let transmit = Transmit {
            destination: socket::to_socket_addr(self.dual_stack, to),
            ecn: None,
            contents,
            segment_size: segment.filter(|s| *s < contents.len()),
            src_ip: None,
        };
        let mut waited = false;
        loop {
            match self.state.try_send((&*self.socket).into(), &transmit) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !waited => {
                    waited = true;
                    socket::wait(&self.socket, libc::POLLOUT, SEND_WAIT)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends one datagram to `peer`; a failure is counted and reported in `counters`. True when
    /// it went out.
    pub(crate) fn send(&self, peer: &Peer, packet: &[u8], to: SocketAddr, counters: &Counters) -> bool {
        match self.transmit(packet, None, to) {
            Ok(()) => {
                peer.mark_sent(crate::datapath::clock());
                peer.count_control(packet);
                true
            }
            Err(e) => {
                counters.send_failed(1, peer, to, &e);
                false
            }
        }
    }

    /// The most datagrams one GSO send may carry.
    pub(crate) fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }
}

impl Shared {
    pub(crate) fn peers(&self) -> RwLockReadGuard<'_, Peers> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn sender(&self) -> Sender {
        let net = self.net.read().unwrap_or_else(|p| p.into_inner());
        Sender {
            socket: net.socket.clone(),
            state: net.state.clone(),
            dual_stack: net.dual_stack,
            fwmark: net.fwmark,
        }
    }

    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Sends a handshake initiation to each of `keys` that is a peer with an endpoint, now, even if
/// one is under way (a forced resend, as after REKEY_TIMEOUT). Returns how many were sent.
pub(crate) fn initiate_handshakes(shared: &Shared, keys: &[meshcrypt_keyexchange::PublicKey]) -> usize {
    let targets: Vec<(Arc<Peer>, SocketAddr)> = {
        let peers = shared.peers();
        keys.iter()
            .filter_map(|k| peers.by_key(k.as_bytes()))
            .filter_map(|p| p.endpoint().map(|e| (p.clone(), e)))
            .collect()
    };
    let sender = shared.sender();
    let mut out = [0u8; HANDSHAKE_INIT_LEN];
    let mut sent = 0;
    for (peer, to) in targets {
        let mut tunnel = peer.lock_tunnel();
        match tunnel.get().format_handshake_initiation(&mut out, true) {
            TunnResult::WriteToNetwork(init) => {
                sent += usize::from(sender.send(&peer, init, to, &shared.counters))
            }
            TunnResult::Err(e) => {
                tracing::warn!(peer = %peer.public_key, error = ?e, "no handshake initiation")
            }
            _ => {}
        }
    }
    sent
}

/// Learns the path MTU to `to` when due (see [`Peer::path_probe_due`]): a few syscalls, no
/// packet sent.
fn probe_path(peer: &Peer, to: SocketAddr, fwmark: Option<u32>) {
    let now = clock();
    if !peer.path_probe_due(now) {
        return;
    }
    match crate::pmtu::path_mtu(to, fwmark) {
        Ok(path) => {
            let inner = crate::pmtu::inner_mtu(path, &to);
            tracing::debug!(peer = %peer.public_key, endpoint = %to, path_mtu = path, inner_mtu = inner, "path MTU");
            peer.set_inner_mtu(Some(inner), now);
        }
        Err(e) => {
            tracing::debug!(peer = %peer.public_key, endpoint = %to, error = %e, "path MTU unknown");
            peer.set_inner_mtu(None, now);
        }
    }
}

/// Runs the protocol timers of the peers in use (with a tunnel or a keepalive: a peer without
/// either has no timer running) and probes their paths when due, each [`TICK`], and at once when
/// asked through [`Shared::tick_now`], until the device stops.
pub(crate) fn timers(shared: &Shared, ticks: Receiver<()>) {
    let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
    let mut last_reset = Instant::now();
    loop {
        match ticks.recv_timeout(TICK) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if shared.stopping() {
            return;
        }
        if let Ok(mtu) = shared.tun.mtu() {
            shared.mtu.store(u32::from(mtu), Ordering::Relaxed);
        }
        let (peers_in_use, in_use) = {
            let peers = shared.peers();
            if last_reset.elapsed() >= Duration::from_secs(1) {
                peers.rate_limiter.reset_count();
                last_reset = Instant::now();
            }
            (peers.in_use(), peers.in_use.clone())
        };
        let sender = shared.sender();
        for peer in peers_in_use {
            tick_peer(&peer, &sender, &shared.counters, &in_use, &mut out);
        }
    }
}

fn tick_peer(peer: &Peer, sender: &Sender, counters: &Counters, in_use: &InUse, out: &mut [u8]) {
    let endpoint = peer.endpoint();
    if let Some(to) = endpoint {
        probe_path(peer, to, sender.fwmark);
    }
    let mut tunnel = peer.lock_tunnel();
    // A peer without a tunnel has no timer running.
    let expired = match tunnel.existing().map(|tunn| tunn.update_timers(out)) {
        Some(TunnResult::WriteToNetwork(datagram)) => {
            if let Some(to) = endpoint {
                sender.send(peer, datagram, to, counters);
            }
            false
        }
        Some(TunnResult::Err(WireGuardError::ConnectionExpired)) => true,
        Some(TunnResult::Err(e)) => {
            tracing::debug!(peer = %peer.public_key, error = ?e, "timer error");
            false
        }
        _ => false,
    };
    if expired {
        // No session key left and no handshake under way: the tunnel's memory goes until the
        // next handshake or packet.
        tunnel.expire(SystemTime::now());
    }
    if let Some(to) = endpoint
        && peer.keepalive_due(crate::datapath::clock())
    {
        if let TunnResult::WriteToNetwork(datagram) = tunnel.get().encapsulate(&[], out) {
            sender.send(peer, datagram, to, counters);
        } else {
            // A handshake is already under way; count this as the keepalive.
            peer.mark_sent(crate::datapath::clock());
        }
    }
    in_use.release_idle(peer, &mut tunnel);
}
