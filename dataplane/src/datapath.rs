//! The packet loops: TUN→UDP (route, encrypt, send), UDP→TUN (dispatch, decrypt, check the
//! source, deliver) and the timer tick (handshake retries, rekeys, keepalives).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use tun_rs::{InterruptEvent, SyncDevice};

use crate::peers::{Peer, Peers};
use crate::socket;
use crate::state::DeviceCounters;

/// Largest datagram or inner packet handled (no offloads yet, so one MTU-sized packet at a time).
const MAX_PACKET: usize = 65_535;
/// Room for WireGuard's header and tag around an inner packet.
const OVERHEAD: usize = 32;
/// How often the timer tick runs.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// The UDP socket in use and how it was bound.
pub(crate) struct Net {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) port: u16,
    pub(crate) fwmark: Option<u32>,
    pub(crate) dual_stack: bool,
}

/// Counters behind [`DeviceCounters`].
#[derive(Default)]
pub(crate) struct Counters {
    no_route: AtomicU64,
    no_endpoint: AtomicU64,
    bad_source: AtomicU64,
    decrypt_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> DeviceCounters {
        DeviceCounters {
            dropped_no_route: self.no_route.load(Ordering::Relaxed),
            dropped_no_endpoint: self.no_endpoint.load(Ordering::Relaxed),
            dropped_bad_source: self.bad_source.load(Ordering::Relaxed),
            decrypt_errors: self.decrypt_errors.load(Ordering::Relaxed),
        }
    }
}

fn bump(c: &AtomicU64) {
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
    pub(crate) stop: AtomicBool,
    pub(crate) interrupt: InterruptEvent,
    /// The TUN's MTU, refreshed by the timer tick: padding never grows a packet past it.
    pub(crate) mtu: AtomicU32,
}

/// A socket handle for one packet's worth of sending.
struct Sender {
    socket: Arc<UdpSocket>,
    dual_stack: bool,
}

impl Sender {
    fn send(&self, peer: &Peer, packet: &[u8], to: SocketAddr) {
        match self.socket.send_to(packet, socket::to_socket_addr(self.dual_stack, to)) {
            Ok(_) => peer.mark_sent(),
            Err(e) => tracing::debug!(peer = %peer.public_key, endpoint = %to, error = %e, "send failed"),
        }
    }
}

impl Shared {
    pub(crate) fn peers(&self) -> RwLockReadGuard<'_, Peers> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn sender(&self) -> Sender {
        let net = self.net.read().unwrap_or_else(|p| p.into_inner());
        Sender { socket: net.socket.clone(), dual_stack: net.dual_stack }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Reads packets from the TUN, routes each to a peer by longest prefix, encrypts and sends it.
/// A packet no peer covers is dropped and counted: nothing leaves unencrypted.
pub(crate) fn tun_to_udp(shared: &Shared) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
    while !shared.stopping() {
        // Under load the non-blocking read succeeds at once (one syscall per packet); only when
        // the queue is empty do we wait in poll(2), where shutdown can interrupt us.
        let n = match shared.tun.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match shared.tun.wait_readable_intr(&shared.interrupt) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if !shared.stopping() {
                            tracing::error!(ifname = %shared.ifname, error = %e, "TUN wait failed; stopping");
                        }
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if !shared.stopping() {
                    tracing::error!(ifname = %shared.ifname, error = %e, "TUN read failed; stopping");
                }
                break;
            }
        };
        // WireGuard pads the plaintext with zeros to a multiple of 16 (which boringtun leaves
        // out): it hides exact lengths, and receivers trim by the inner IP header's length.
        let padded = padded_len(n, shared.mtu.load(Ordering::Relaxed) as usize);
        buf[n..padded].fill(0);
        let packet = &buf[..padded];
        let Some(dst) = Tunn::dst_address(packet) else {
            bump(&shared.counters.no_route);
            continue;
        };
        let Some(peer) = shared.peers().route(dst).cloned() else {
            bump(&shared.counters.no_route);
            continue;
        };
        let Some(endpoint) = peer.endpoint() else {
            bump(&shared.counters.no_endpoint);
            continue;
        };
        let mut tunn = peer.lock_tunn();
        match tunn.encapsulate(packet, &mut out) {
            TunnResult::WriteToNetwork(datagram) => {
                drop(tunn);
                shared.sender().send(&peer, datagram, endpoint);
            }
            TunnResult::Err(e) => tracing::debug!(peer = %peer.public_key, error = ?e, "encapsulate failed"),
            _ => {}
        }
    }
}

/// The padded length of an `n`-byte packet: the next multiple of 16, but never past the MTU
/// (nor shorter than the packet).
fn padded_len(n: usize, mtu: usize) -> usize {
    n.next_multiple_of(16).min(mtu.max(n)).min(MAX_PACKET)
}

/// Receives datagrams, hands each to its peer's session and delivers what decrypts.
pub(crate) fn udp_to_tun(shared: &Shared) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
    while !shared.stopping() {
        let sender = shared.sender();
        let (n, from) = match sender.socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ICMP errors surface here (ECONNREFUSED, …); they are not fatal.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        handle_datagram(shared, &sender, &buf[..n], socket::canonical(from), &mut out);
    }
}

fn handle_datagram(shared: &Shared, sender: &Sender, datagram: &[u8], from: SocketAddr, out: &mut [u8]) {
    let counters = &shared.counters;
    let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
        bump(&counters.decrypt_errors);
        return;
    };
    let is_cookie = matches!(packet, Packet::PacketCookieReply(_));
    let peer = {
        let peers = shared.peers();
        match packet {
            Packet::HandshakeInit(ref init) => {
                // Check mac1 (and under load, the cookie) before spending a Diffie-Hellman on it.
                match peers.rate_limiter.verify_packet(Some(from.ip()), datagram, out) {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        let _ =
                            sender.socket.send_to(cookie, socket::to_socket_addr(sender.dual_stack, from));
                        return;
                    }
                    Err(_) => {
                        bump(&counters.decrypt_errors);
                        return;
                    }
                }
                parse_handshake_anon(peers.private_key(), peers.public_key(), init)
                    .ok()
                    .and_then(|half| peers.by_key(&half.peer_static_public).cloned())
            }
            Packet::HandshakeResponse(ref p) => peers.by_index(p.receiver_idx >> 8).cloned(),
            Packet::PacketCookieReply(ref p) => peers.by_index(p.receiver_idx >> 8).cloned(),
            Packet::PacketData(ref p) => peers.by_index(p.receiver_idx >> 8).cloned(),
        }
    };
    let Some(peer) = peer else {
        bump(&counters.decrypt_errors);
        return;
    };

    // Lock order is peers → session: the session lock is released before `deliver` reads the
    // peer table.
    let mut tunn = peer.lock_tunn();
    let mut authenticated = !is_cookie;
    match tunn.decapsulate(Some(from.ip()), datagram, out) {
        TunnResult::Done => drop(tunn),
        TunnResult::Err(e) => {
            drop(tunn);
            authenticated = false;
            if !matches!(e, WireGuardError::DuplicateCounter) {
                tracing::trace!(peer = %peer.public_key, error = ?e, "datagram rejected");
            }
            bump(&counters.decrypt_errors);
        }
        TunnResult::WriteToNetwork(reply) => {
            // A cookie reply (type 3) answers an unauthenticated packet: no roaming on it.
            authenticated &= reply.first() != Some(&3);
            sender.send(&peer, reply, from);
            // Packets queued while the handshake ran go out now.
            while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], out) {
                sender.send(&peer, queued, from);
            }
            drop(tunn);
        }
        TunnResult::WriteToTunnelV4(inner, src) => {
            drop(tunn);
            deliver(shared, &peer, inner, IpAddr::V4(src));
        }
        TunnResult::WriteToTunnelV6(inner, src) => {
            drop(tunn);
            deliver(shared, &peer, inner, IpAddr::V6(src));
        }
    }
    if authenticated {
        peer.set_endpoint(from);
    }
}

/// Writes a decrypted packet to the TUN if its source belongs to the sending peer.
fn deliver(shared: &Shared, peer: &Arc<Peer>, inner: &[u8], src: IpAddr) {
    let allowed = shared.peers().route(src).is_some_and(|p| Arc::ptr_eq(p, peer));
    if !allowed {
        bump(&shared.counters.bad_source);
        tracing::trace!(peer = %peer.public_key, %src, "inner source not in the peer's allowed IPs");
        return;
    }
    if let Err(e) = shared.tun.send(inner) {
        tracing::debug!(error = %e, "TUN write failed");
    }
}

/// Runs the protocol timers of every peer each [`TICK`] until `stop` fires or is dropped.
pub(crate) fn timers(shared: &Shared, stop: Receiver<()>) {
    let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
    let mut last_reset = Instant::now();
    loop {
        match stop.recv_timeout(TICK) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Ok(mtu) = shared.tun.mtu() {
            shared.mtu.store(u32::from(mtu), Ordering::Relaxed);
        }
        let all = {
            let peers = shared.peers();
            if last_reset.elapsed() >= Duration::from_secs(1) {
                peers.rate_limiter.reset_count();
                last_reset = Instant::now();
            }
            peers.all()
        };
        let sender = shared.sender();
        for peer in all {
            tick_peer(&peer, &sender, &mut out);
        }
    }
}

fn tick_peer(peer: &Peer, sender: &Sender, out: &mut [u8]) {
    let endpoint = peer.endpoint();
    let mut tunn = peer.lock_tunn();
    match tunn.update_timers(out) {
        TunnResult::WriteToNetwork(datagram) => {
            if let Some(to) = endpoint {
                sender.send(peer, datagram, to);
            }
        }
        TunnResult::Err(WireGuardError::ConnectionExpired) | TunnResult::Done => {}
        TunnResult::Err(e) => tracing::debug!(peer = %peer.public_key, error = ?e, "timer error"),
        _ => {}
    }
    if let Some(to) = endpoint
        && peer.keepalive_due()
    {
        if let TunnResult::WriteToNetwork(datagram) = tunn.encapsulate(&[], out) {
            sender.send(peer, datagram, to);
        } else {
            // A handshake is already under way; count this as the keepalive.
            peer.mark_sent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::padded_len;

    #[test]
    fn padding_table() {
        for (n, mtu, want) in [
            (0, 1420, 0),
            (1, 1420, 16),
            (16, 1420, 16),
            (17, 1420, 32),
            (1419, 1420, 1420),
            (1420, 1420, 1420),
            (1433, 1440, 1440),
            (84, 1440, 96),
            (1500, 1420, 1500),
        ] {
            assert_eq!(padded_len(n, mtu), want, "n={n} mtu={mtu}");
        }
    }
}
