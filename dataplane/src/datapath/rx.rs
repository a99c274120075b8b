//! UDP→TUN: receive a batch of datagrams (GRO trains through `recvmmsg`), dispatch each to its
//! peer's session, open data straight into the TUN batch, check the inner source against the
//! peer's allowed IPs, and write the batch coalesced into super-packets ([`super::gro`]).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use quinn_udp::RecvMeta;
use tun_rs::{IDEAL_BATCH_SIZE, SyncDevice};

use super::gro::{self, Gro, MAX_SEGMENTS};
use super::tx::tx_once;
use super::{Counters, MAX_PACKET, OVERHEAD, Sender, Shared, bump};
use crate::PublicKey;
use crate::flows::{BatchFlows, DropReason, FlowDirection, FlowOutcome};
use crate::peers::{CachedRoutes, Peers};
use crate::socket;

/// Messages per `recvmmsg` (each up to 64 KiB with GRO).
pub(crate) const RX_MESSAGES: usize = 8;
/// Each message buffer holds a whole GRO train (one skb: at most 64 KiB).
const MSG_LEN: usize = MAX_PACKET + 1;

/// Room for one batch's decrypted packets (bytes): four whole GRO trains.
const ARENA: usize = 4 * MSG_LEN;
/// Where packets start in the arena: a cache line.
const ALIGN: usize = 64;

/// Decrypted packets waiting to be written to the TUN, coalesced where they can be.
struct TunBatch {
    /// The packets, laid end to end at cache-line boundaries: a batch of full-size packets spans
    /// a few dozen KiB (zeroed once; pages are only touched as used). One buffer per packet, as
    /// before, spread each batch over 128 buffers of 64 KiB whose first bytes all fall on the
    /// same cache sets.
    arena: Vec<u8>,
    /// Where each filled packet starts in the arena, and its length.
    starts: [usize; IDEAL_BATCH_SIZE],
    lens: [usize; IDEAL_BATCH_SIZE],
    count: usize,
    /// The arena's first free byte.
    used: usize,
    /// Whether every TUN write starts with a virtio-net header (the TUN has offloads).
    vnet: bool,
    /// Whether UDP datagrams may be coalesced (the TUN takes USO).
    udp: bool,
    gro: Gro,
}

impl TunBatch {
    fn new(vnet: bool, udp: bool) -> Self {
        Self {
            arena: vec![0u8; ARENA],
            starts: [0; IDEAL_BATCH_SIZE],
            lens: [0; IDEAL_BATCH_SIZE],
            count: 0,
            used: 0,
            vnet,
            udp,
            gro: Gro::default(),
        }
    }

    /// Whether a datagram of `len` bytes can be opened into the batch without flushing it.
    fn has_room(&self, len: usize) -> bool {
        self.count < IDEAL_BATCH_SIZE && self.used + len.min(MAX_PACKET) <= self.arena.len()
    }

    /// The next free slot, for a datagram of `len` bytes (the batch has room for it).
    fn slot(&mut self, len: usize) -> &mut [u8] {
        &mut self.arena[self.used..self.used + len.min(MAX_PACKET)]
    }

    /// The slot being filled.
    fn filled(&self) -> &[u8] {
        &self.arena[self.used..]
    }

    /// Keeps the slot just filled with an inner packet of `len` bytes.
    fn commit(&mut self, len: usize) {
        self.starts[self.count] = self.used;
        self.lens[self.count] = len;
        self.count += 1;
        self.used = (self.used + len).next_multiple_of(ALIGN).min(self.arena.len());
    }

    /// Writes the batch; true if there was anything to write. With offloads every write is a
    /// virtio-net header and a packet or a super-packet gathered from its slots (one `writev`
    /// each); without, each packet is written as it is.
    fn flush(&mut self, shared: &Shared) -> bool {
        if self.count == 0 {
            return false;
        }
        let Self { arena, starts, lens, count, used, vnet, udp, gro } = self;
        let n = std::mem::take(count);
        *used = 0;
        let at = |i: usize| starts[i]..starts[i] + lens[i];
        let report = |e: io::Error| tracing::debug!(ifname = %shared.ifname, error = %e, "TUN write failed");
        if !*vnet {
            for i in 0..n {
                shared.tun.send(&arena[at(i)]).map(drop).unwrap_or_else(report);
            }
            return true;
        }
        let arena_ref = &*arena;
        let packets: [&[u8]; IDEAL_BATCH_SIZE] = std::array::from_fn(|i| &arena_ref[at(i)]);
        gro.plan(&packets[..n], *udp);
        let writes = gro.writes();
        for write in writes {
            gro::finish(write, &mut arena[at(write.head)]);
        }
        for write in writes {
            let header = write.vnet_header();
            let mut iov = [IoSlice::new(&[]); MAX_SEGMENTS + 1];
            iov[0] = IoSlice::new(&header);
            iov[1] = IoSlice::new(&arena[at(write.head)]);
            for (slot, &m) in iov[2..].iter_mut().zip(gro.members(write)) {
                *slot = IoSlice::new(write.payload(&arena[at(m)]));
            }
            shared.tun.send_vectored(&iov[..1 + write.segments()]).map(drop).unwrap_or_else(report);
        }
        true
    }
}

/// The UDP→TUN path's buffers. Whoever holds them (behind [`Shared::rx`]) is the only reader of
/// the socket, so each peer's datagrams are opened in the order they arrived.
pub(crate) struct RxState {
    storage: Vec<u8>,
    metas: [RecvMeta; RX_MESSAGES],
    batch: TunBatch,
    scratch: Vec<u8>,
    /// The batch's flows, when flow accounting is on.
    flows: BatchFlows,
}

impl RxState {
    pub(crate) fn new(tun: &SyncDevice) -> Self {
        Self {
            storage: vec![0u8; MSG_LEN * RX_MESSAGES],
            metas: [RecvMeta::default(); RX_MESSAGES],
            batch: TunBatch::new(tun.tcp_gso(), tun.udp_gso()),
            scratch: vec![0u8; MAX_PACKET + OVERHEAD],
            flows: BatchFlows::default(),
        }
    }
}

/// Receives one batch of datagrams (never waiting), hands each to its peer's session and writes
/// what decrypts to the TUN; then sends what the kernel answered inside that write. Returns how
/// many messages the socket gave (0: it had none; [`RX_MESSAGES`]: there may be more).
pub(crate) fn rx_once(shared: &Shared, st: &mut RxState) -> io::Result<usize> {
    let RxState { storage, metas, batch, scratch, flows } = st;
    let mut flows = shared.flows.enabled().then_some(flows);
    let sender = shared.sender();
    let received = {
        let mut chunks = storage.chunks_mut(MSG_LEN);
        let mut slices: [IoSliceMut<'_>; RX_MESSAGES] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        sender.state.recv((&*sender.socket).into(), &mut slices, metas)
    };
    let msgs = match received {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(RX_MESSAGES),
        // ICMP errors surface here (ECONNREFUSED, …); the caller logs them and goes on.
        Err(e) => return Err(e),
    };
    {
        let peers = shared.peers();
        let mut routes = peers.cached_routes();
        for (meta, msg) in metas.iter().zip(storage.chunks(MSG_LEN)).take(msgs) {
            let from = socket::canonical(meta.addr);
            let stride = if meta.stride == 0 { meta.len } else { meta.stride };
            for datagram in msg[..meta.len].chunks(stride.max(1)) {
                if !batch.has_room(datagram.len()) {
                    let _ = batch.flush(shared);
                }
                let out = Out {
                    batch: &mut *batch,
                    scratch: &mut scratch[..],
                    flows: flows.as_deref_mut(),
                    routes: &mut routes,
                };
                handle_datagram(shared, &peers, &sender, datagram, from, out);
            }
        }
    }
    if let Some(flows) = flows {
        flows.flush(&shared.flows);
    }
    // What the kernel answered inside that write (ACKs, echo replies) is queued on the TUN
    // now: send it from here unless another worker is already at it, saving a wake-up.
    if batch.flush(shared)
        && let Ok(mut tx) = shared.tx.try_lock()
    {
        // A read error here shows again on the worker's own TUN read, which stops it.
        let _ = tx_once(shared, &mut tx);
    }
    Ok(msgs)
}

/// Where a datagram's results go: the TUN batch (data), scratch space (handshakes, cookies) and
/// the batch's flows (when accounting is on); and the batch's allowed-IPs lookups.
struct Out<'a, 'p> {
    batch: &'a mut TunBatch,
    scratch: &'a mut [u8],
    flows: Option<&'a mut BatchFlows>,
    routes: &'a mut CachedRoutes<'p>,
}

fn handle_datagram(
    shared: &Shared,
    peers: &Peers,
    sender: &Sender,
    datagram: &[u8],
    from: SocketAddr,
    out: Out<'_, '_>,
) {
    let Out { batch, scratch, flows, routes } = out;
    let counters = &shared.counters;
    let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
        bump(&counters.decrypt_errors);
        return;
    };
    let is_data = matches!(packet, Packet::PacketData(_));
    let is_cookie = matches!(packet, Packet::PacketCookieReply(_));
    let is_init = matches!(packet, Packet::HandshakeInit(_));
    let peer = match packet {
        Packet::HandshakeInit(ref init) => {
            // Check mac1 (and under load, the cookie) before spending a Diffie-Hellman on it.
            match peers.rate_limiter.verify_packet(Some(from.ip()), datagram, scratch) {
                Ok(_) => {}
                Err(TunnResult::WriteToNetwork(cookie)) => {
                    let _ = sender.transmit(cookie, None, from);
                    return;
                }
                Err(_) => {
                    bump(&counters.decrypt_errors);
                    return;
                }
            }
            let Ok(half) = parse_handshake_anon(peers.private_key(), peers.public_key(), init) else {
                bump(&counters.decrypt_errors);
                return;
            };
            match peers.by_key(&half.peer_static_public) {
                Some(peer) => Some(peer),
                None => {
                    match PublicKey::from_bytes(half.peer_static_public) {
                        Ok(key) => counters.unknown_handshake(from, key),
                        Err(_) => bump(&counters.decrypt_errors),
                    }
                    return;
                }
            }
        }
        Packet::HandshakeResponse(ref p) => peers.by_index(p.receiver_idx >> 8),
        Packet::PacketCookieReply(ref p) => peers.by_index(p.receiver_idx >> 8),
        Packet::PacketData(ref p) => peers.by_index(p.receiver_idx >> 8),
    };
    let Some(peer) = peer else {
        bump(&counters.decrypt_errors);
        if is_data {
            answer_lost_session(peers, sender, from, counters, scratch);
        }
        return;
    };

    // Lock order is peers → session. Data opens straight into the TUN batch's next slot.
    // Only an initiation may start a tunnel: a response, a cookie or data belongs to one this
    // device made, and without it none can be opened.
    let mut tunnel = peer.lock_tunnel();
    let tunn = if is_init { Some(tunnel.get()) } else { tunnel.existing() };
    let Some(tunn) = tunn else {
        bump(&counters.decrypt_errors);
        drop(tunnel);
        if is_data {
            answer_lost_session(peers, sender, from, counters, scratch);
        }
        return;
    };
    let mut authenticated = !is_cookie;
    let mut lost_session = false;
    let out: &mut [u8] = if is_data { batch.slot(datagram.len()) } else { &mut scratch[..] };
    let delivered = match tunn.decapsulate(Some(from.ip()), datagram, out) {
        TunnResult::Done => None,
        TunnResult::Err(e) => {
            authenticated = false;
            if !matches!(e, WireGuardError::DuplicateCounter) {
                tracing::trace!(peer = %peer.public_key, error = ?e, "datagram rejected");
            }
            bump(&counters.decrypt_errors);
            lost_session = matches!(e, WireGuardError::NoCurrentSession | WireGuardError::WrongIndex);
            None
        }
        TunnResult::WriteToNetwork(reply) => {
            // A cookie reply (type 3) answers an unauthenticated packet: no roaming on it.
            authenticated &= reply.first() != Some(&3);
            sender.send(peer, reply, from, counters);
            // Packets queued while the handshake ran go out now.
            while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], scratch) {
                sender.send(peer, queued, from, counters);
            }
            None
        }
        TunnResult::WriteToTunnelV4(inner, src) => Some((inner.len(), IpAddr::V4(src))),
        TunnResult::WriteToTunnelV6(inner, src) => Some((inner.len(), IpAddr::V6(src))),
    };
    drop(tunnel);
    if is_data && lost_session {
        answer_lost_session(peers, sender, from, counters, scratch);
    }
    if let Some((len, src)) = delivered {
        // A peer may only send from its allowed IPs.
        let allowed = routes.route(src).is_some_and(|p| Arc::ptr_eq(p, peer));
        if let Some(flows) = flows {
            let inner = if is_data { &batch.filled()[..len] } else { &scratch[..len] };
            let outcome =
                if allowed { FlowOutcome::Encrypted } else { FlowOutcome::Dropped(DropReason::BadSource) };
            flows.add(inner, FlowDirection::Inbound, outcome, Some(peer.public_key));
        }
        if allowed {
            if is_data {
                batch.commit(len);
            }
        } else {
            counters.bad_source(peer.public_key, src);
        }
    }
    if authenticated {
        peer.set_endpoint(from);
    }
}

/// How long a session may carry data after its handshake (REJECT_AFTER_TIME, WireGuard paper
/// §6.1: 180 s).
const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

/// A data packet from `from` that no session of this device opens: its sender holds a session
/// this device no longer has (its agent restarted, its interface was made again, a key changed)
/// and would keep sending on it until its own timers give up (KEEPALIVE + REKEY_TIMEOUT, 15 s).
/// When `from` is a peer's configured endpoint and that peer has no live session here, a
/// handshake initiation goes to it now. boringtun sends none while one is under way, so a flood
/// of such packets, forged or not, costs at most one initiation per peer per REKEY_TIMEOUT (5 s),
/// and only towards the peer's own configured endpoint.
fn answer_lost_session(
    peers: &Peers,
    sender: &Sender,
    from: SocketAddr,
    counters: &Counters,
    scratch: &mut [u8],
) {
    let Some(peer) = peers.by_endpoint(from) else { return };
    let mut tunnel = peer.lock_tunnel();
    let tunn = tunnel.get();
    if tunn.time_since_last_handshake().is_some_and(|age| age < REJECT_AFTER_TIME) {
        return;
    }
    if let TunnResult::WriteToNetwork(init) = tunn.format_handshake_initiation(scratch, false) {
        tracing::debug!(peer = %peer.public_key, endpoint = %from, "data for a session this device lost: handshake initiated");
        sender.send(peer, init, from, counters);
    }
}
