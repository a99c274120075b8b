//! The packet loops: TUN→UDP (route, encrypt, send), UDP→TUN (dispatch, decrypt, check the
//! source, deliver) and the timer tick (handshake retries, rekeys, keepalives).
//!
//! Both loops work in batches. TUN→UDP reads one TUN frame, which with offloads is a TCP
//! super-packet of up to 64 KiB that `tun-rs` splits into MTU-sized segments; consecutive segments
//! for one peer are sealed back to back into one buffer and leave in one `sendmsg` with UDP GSO.
//! UDP→TUN takes up to [`RX_MESSAGES`] messages per `recvmmsg`, each possibly a GRO train of
//! datagrams; every datagram is opened straight into its slot of the TUN batch, and the batch is
//! written with TCP GRO coalescing (`tun-rs`), so the kernel sees a few large packets. Buffers
//! are allocated once per worker and reused.
//!
//! Two cores: one thread per direction plus the timer tick, and no per-packet locking beyond
//! one peer-table read and one session lock per run of packets.

use std::io;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tun_rs::{GROTable, IDEAL_BATCH_SIZE, InterruptEvent, SyncDevice, VIRTIO_NET_HDR_LEN};

use crate::peers::{Peer, Peers};
use crate::socket;
use crate::state::DeviceCounters;

/// Largest datagram or inner packet handled.
const MAX_PACKET: usize = 65_535;
/// Room for WireGuard's header and tag around an inner packet.
const OVERHEAD: usize = 32;
/// Most bytes in one GSO send (a UDP datagram's payload limit, less some slack).
const MAX_GSO_BYTES: usize = 65_000;
/// TUN frames (each up to 64 KiB, split into up to IDEAL_BATCH_SIZE segments) per send batch.
const TX_FRAMES: usize = 4;
/// Messages per `recvmmsg` (each up to 64 KiB with GRO).
const RX_MESSAGES: usize = 8;
/// How long a send waits for room in a full socket buffer before dropping.
const SEND_WAIT: Duration = Duration::from_millis(100);
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
    /// The TUN→UDP buffers; holding them makes a thread the TUN's reader.
    pub(crate) tx: Mutex<TxState>,
    /// The TUN's MTU, refreshed by the timer tick: padding never grows a packet past it.
    pub(crate) mtu: AtomicU32,
}

/// A socket handle for sending.
struct Sender {
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
    dual_stack: bool,
}

impl Sender {
    /// Sends one datagram, or with `segment` a GSO train of `segment`-sized datagrams (the last
    /// may be shorter). A full socket buffer is waited on briefly; other errors drop the batch.
    fn transmit(&self, contents: &[u8], segment: Option<usize>, to: SocketAddr) -> io::Result<()> {
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

    fn send(&self, peer: &Peer, packet: &[u8], to: SocketAddr) {
        match self.transmit(packet, None, to) {
            Ok(()) => peer.mark_sent(),
            Err(e) => tracing::debug!(peer = %peer.public_key, endpoint = %to, error = %e, "send failed"),
        }
    }

    /// The most datagrams one GSO send may carry.
    fn max_segments(&self) -> usize {
        self.state.max_gso_segments().max(1)
    }
}

impl Shared {
    pub(crate) fn peers(&self) -> RwLockReadGuard<'_, Peers> {
        self.peers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn sender(&self) -> Sender {
        let net = self.net.read().unwrap_or_else(|p| p.into_inner());
        Sender { socket: net.socket.clone(), state: net.state.clone(), dual_stack: net.dual_stack }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Where inner packets start in TUN buffers: after the virtio header when offloads are on.
    fn tun_offset(&self) -> usize {
        if self.tun.tcp_gso() { VIRTIO_NET_HDR_LEN } else { 0 }
    }
}

/// Datagrams sealed back to back for one peer, waiting for one GSO send.
struct SendBatch {
    buf: Vec<u8>,
    len: usize,
    count: usize,
    /// The size of every datagram but possibly the last.
    segment: usize,
    /// A datagram shorter than `segment` ends the batch.
    closed: bool,
}

impl SendBatch {
    fn new() -> Self {
        Self {
            buf: vec![0u8; MAX_GSO_BYTES + MAX_PACKET + OVERHEAD],
            len: 0,
            count: 0,
            segment: 0,
            closed: false,
        }
    }

    /// Whether a datagram of `size` bytes can join the batch.
    fn fits(&self, size: usize, max_segments: usize) -> bool {
        self.count == 0
            || (!self.closed
                && size <= self.segment
                && self.count < max_segments
                && self.len + size <= MAX_GSO_BYTES)
    }

    fn push(&mut self, size: usize) {
        if self.count == 0 {
            self.segment = size;
        } else if size < self.segment {
            self.closed = true;
        }
        self.len += size;
        self.count += 1;
    }

    fn flush(&mut self, sender: &Sender, peer: &Peer, to: SocketAddr) {
        if self.count == 0 {
            return;
        }
        match sender.transmit(&self.buf[..self.len], Some(self.segment), to) {
            Ok(()) => peer.mark_sent(),
            Err(e) => {
                tracing::debug!(peer = %peer.public_key, endpoint = %to, error = %e, datagrams = self.count, "send failed")
            }
        }
        self.len = 0;
        self.count = 0;
        self.closed = false;
    }
}

/// The TUN→UDP path's buffers. Whoever holds them (behind [`Shared::tx`]) is the only reader of
/// the TUN, so packets leave in the order the kernel queued them.
pub(crate) struct TxState {
    offload: bool,
    frame: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    targets: Vec<Option<Arc<Peer>>>,
    batch: SendBatch,
}

impl TxState {
    pub(crate) fn new(tun: &SyncDevice) -> Self {
        let offload = tun.tcp_gso();
        // One slot per segment; without offloads a single slot takes the whole packet. With
        // offloads the batch takes whatever frames are already queued, up to TX_FRAMES of them.
        let slots = if offload { TX_FRAMES * IDEAL_BATCH_SIZE } else { 1 };
        Self {
            offload,
            frame: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            bufs: (0..slots).map(|_| vec![0u8; MAX_PACKET + 16]).collect(),
            sizes: vec![0usize; slots],
            targets: Vec::with_capacity(slots),
            batch: SendBatch::new(),
        }
    }
}

/// Reads packets from the TUN, routes each to a peer by longest prefix, encrypts and sends it.
/// A packet no peer covers is dropped and counted: nothing leaves unencrypted.
pub(crate) fn tun_to_udp(shared: &Shared) {
    while !shared.stopping() {
        let read = {
            let mut st = shared.tx.lock().unwrap_or_else(|p| p.into_inner());
            tx_once(shared, &mut st)
        };
        match read {
            Ok(true) => {}
            // Under load the non-blocking read succeeds at once; only when the queue is empty
            // do we wait in poll(2), where shutdown can interrupt us.
            Ok(false) => match shared.tun.wait_readable_intr(&shared.interrupt) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if !shared.stopping() {
                        tracing::error!(ifname = %shared.ifname, error = %e, "TUN wait failed; stopping");
                    }
                    break;
                }
            },
            Err(e) => {
                if !shared.stopping() {
                    tracing::error!(ifname = %shared.ifname, error = %e, "TUN read failed; stopping");
                }
                break;
            }
        }
    }
}

/// Reads one batch from the TUN (never waiting) and sends it: `Ok(false)` when the TUN had
/// nothing, an error only when reading cannot go on.
///
/// The receive worker calls this too, right after writing to the TUN when the send worker is
/// idle: replies and ACKs the kernel generated in that write then leave without waking another
/// thread.
pub(crate) fn tx_once(shared: &Shared, st: &mut TxState) -> io::Result<bool> {
    let TxState { offload, frame, bufs, sizes, targets, batch } = st;
    let offload = *offload;
    let slots = bufs.len();
    let mut n = match shared.tun.recv_multiple(frame, bufs, sizes, 0) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::Other => {
            // A malformed offload frame: drop it, keep going.
            tracing::debug!(ifname = %shared.ifname, error = %e, "TUN frame dropped");
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    // More frames already queued join the batch (never waiting for them): fewer, fuller GSO
    // sends. Each read needs room for a whole 64 KiB frame's segments.
    while offload && slots - n >= IDEAL_BATCH_SIZE {
        match shared.tun.recv_multiple(frame, &mut bufs[n..], &mut sizes[n..], 0) {
            Ok(k) => n += k,
            // Empty queue (or a bad frame, dropped): send what we have.
            Err(_) => break,
        }
    }
    let mtu = shared.mtu.load(Ordering::Relaxed) as usize;
    // Route the whole batch under one read of the peer table.
    targets.clear();
    {
        let peers = shared.peers();
        for (buf, size) in bufs.iter_mut().zip(sizes.iter_mut()).take(n) {
            // WireGuard pads the plaintext with zeros to a multiple of 16 (which boringtun
            // leaves out): it hides exact lengths, and receivers trim by the inner IP header.
            let padded = padded_len(*size, mtu);
            buf[*size..padded].fill(0);
            *size = padded;
            let peer = Tunn::dst_address(&buf[..padded]).and_then(|dst| peers.route(dst));
            if peer.is_none() {
                bump(&shared.counters.no_route);
            }
            targets.push(peer.cloned());
        }
    }
    let sender = shared.sender();
    let max_segments = sender.max_segments();
    let mut i = 0;
    while i < n {
        let Some(peer) = targets[i].clone() else {
            i += 1;
            continue;
        };
        let run_end =
            (i..n).find(|&j| !targets[j].as_ref().is_some_and(|p| Arc::ptr_eq(p, &peer))).unwrap_or(n);
        let Some(endpoint) = peer.endpoint() else {
            shared.counters.no_endpoint.fetch_add((run_end - i) as u64, Ordering::Relaxed);
            i = run_end;
            continue;
        };
        let mut tunn = peer.lock_tunn();
        for j in i..run_end {
            let packet = &bufs[j][..sizes[j]];
            let size = packet.len() + OVERHEAD;
            if !batch.fits(size, max_segments) {
                drop(tunn);
                batch.flush(&sender, &peer, endpoint);
                tunn = peer.lock_tunn();
            }
            match tunn.encapsulate(packet, &mut batch.buf[batch.len..]) {
                TunnResult::WriteToNetwork(datagram)
                    if datagram.len() == size && datagram.first() == Some(&4) =>
                {
                    batch.push(size)
                }
                TunnResult::WriteToNetwork(other) => {
                    // No session yet: the packet is queued and a handshake initiation
                    // goes out instead.
                    let other = other.to_vec();
                    sender.send(&peer, &other, endpoint);
                }
                TunnResult::Err(e) => {
                    tracing::debug!(peer = %peer.public_key, error = ?e, "encapsulate failed");
                }
                _ => {}
            }
        }
        drop(tunn);
        batch.flush(&sender, &peer, endpoint);
        i = run_end;
    }
    targets.clear();
    Ok(true)
}

/// The padded length of an `n`-byte packet: the next multiple of 16, but never past the MTU
/// (nor shorter than the packet).
fn padded_len(n: usize, mtu: usize) -> usize {
    n.next_multiple_of(16).min(mtu.max(n)).min(MAX_PACKET)
}

/// Decrypted packets waiting to be written to the TUN in one coalescing batch.
struct TunBatch {
    bufs: Vec<Vec<u8>>,
    count: usize,
    offset: usize,
    gro: GROTable,
}

impl TunBatch {
    fn new(offset: usize) -> Self {
        let bufs = (0..IDEAL_BATCH_SIZE).map(|_| Vec::with_capacity(offset + 2048)).collect();
        Self { bufs, count: 0, offset, gro: GROTable::new() }
    }

    /// The next free slot, sized for a datagram of `len` bytes after the offset.
    fn slot(&mut self, len: usize) -> &mut [u8] {
        let buf = &mut self.bufs[self.count];
        buf.clear();
        buf.resize(self.offset + len, 0);
        &mut buf[self.offset..]
    }

    /// Keeps the slot just filled with an inner packet of `len` bytes.
    fn commit(&mut self, len: usize) {
        self.bufs[self.count].truncate(self.offset + len);
        self.count += 1;
    }

    fn full(&self) -> bool {
        self.count == self.bufs.len()
    }

    /// Writes the batch; true if there was anything to write.
    fn flush(&mut self, shared: &Shared) -> bool {
        if self.count == 0 {
            return false;
        }
        if let Err(e) = shared.tun.send_multiple(&mut self.gro, &mut self.bufs[..self.count], self.offset) {
            tracing::debug!(error = %e, "TUN write failed");
        }
        self.count = 0;
        true
    }
}

/// Receives datagrams, hands each to its peer's session and delivers what decrypts.
pub(crate) fn udp_to_tun(shared: &Shared) {
    // Each message buffer holds a whole GRO train (one skb: at most 64 KiB).
    let msg_len = MAX_PACKET + 1;
    let mut storage = vec![0u8; msg_len * RX_MESSAGES];
    let mut metas = [RecvMeta::default(); RX_MESSAGES];
    let mut batch = TunBatch::new(shared.tun_offset());
    let mut scratch = vec![0u8; MAX_PACKET + OVERHEAD];
    while !shared.stopping() {
        let sender = shared.sender();
        let received = {
            let mut slices: Vec<IoSliceMut<'_>> = storage.chunks_mut(msg_len).map(IoSliceMut::new).collect();
            sender.state.recv((&*sender.socket).into(), &mut slices, &mut metas)
        };
        let msgs = match received {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Err(e) = socket::wait(&sender.socket, libc::POLLIN, socket::RECV_TIMEOUT) {
                    tracing::debug!(error = %e, "UDP poll failed");
                    std::thread::sleep(socket::RECV_TIMEOUT);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ICMP errors surface here (ECONNREFUSED, …); they are not fatal.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        {
            let peers = shared.peers();
            for (meta, msg) in metas.iter().zip(storage.chunks(msg_len)).take(msgs) {
                let from = socket::canonical(meta.addr);
                let stride = if meta.stride == 0 { meta.len } else { meta.stride };
                for datagram in msg[..meta.len].chunks(stride.max(1)) {
                    if batch.full() {
                        let _ = batch.flush(shared);
                    }
                    handle_datagram(shared, &peers, &sender, datagram, from, &mut batch, &mut scratch);
                }
            }
        }
        // What the kernel answered inside that write (ACKs, echo replies) is queued on the TUN
        // now: send it from here unless the send worker is already at it, saving a wake-up.
        if batch.flush(shared)
            && let Ok(mut st) = shared.tx.try_lock()
        {
            let _ = tx_once(shared, &mut st);
        }
    }
}

fn handle_datagram(
    shared: &Shared,
    peers: &Peers,
    sender: &Sender,
    datagram: &[u8],
    from: SocketAddr,
    batch: &mut TunBatch,
    scratch: &mut [u8],
) {
    let counters = &shared.counters;
    let Ok(packet) = Tunn::parse_incoming_packet(datagram) else {
        bump(&counters.decrypt_errors);
        return;
    };
    let is_data = matches!(packet, Packet::PacketData(_));
    let is_cookie = matches!(packet, Packet::PacketCookieReply(_));
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
            parse_handshake_anon(peers.private_key(), peers.public_key(), init)
                .ok()
                .and_then(|half| peers.by_key(&half.peer_static_public))
        }
        Packet::HandshakeResponse(ref p) => peers.by_index(p.receiver_idx >> 8),
        Packet::PacketCookieReply(ref p) => peers.by_index(p.receiver_idx >> 8),
        Packet::PacketData(ref p) => peers.by_index(p.receiver_idx >> 8),
    };
    let Some(peer) = peer else {
        bump(&counters.decrypt_errors);
        return;
    };

    // Lock order is peers → session. Data opens straight into the TUN batch's next slot.
    let mut tunn = peer.lock_tunn();
    let mut authenticated = !is_cookie;
    let out: &mut [u8] = if is_data { batch.slot(datagram.len()) } else { scratch };
    let delivered = match tunn.decapsulate(Some(from.ip()), datagram, out) {
        TunnResult::Done => None,
        TunnResult::Err(e) => {
            authenticated = false;
            if !matches!(e, WireGuardError::DuplicateCounter) {
                tracing::trace!(peer = %peer.public_key, error = ?e, "datagram rejected");
            }
            bump(&counters.decrypt_errors);
            None
        }
        TunnResult::WriteToNetwork(reply) => {
            // A cookie reply (type 3) answers an unauthenticated packet: no roaming on it.
            authenticated &= reply.first() != Some(&3);
            sender.send(peer, reply, from);
            // Packets queued while the handshake ran go out now.
            while let TunnResult::WriteToNetwork(queued) = tunn.decapsulate(None, &[], scratch) {
                sender.send(peer, queued, from);
            }
            None
        }
        TunnResult::WriteToTunnelV4(inner, src) => Some((inner.len(), IpAddr::V4(src))),
        TunnResult::WriteToTunnelV6(inner, src) => Some((inner.len(), IpAddr::V6(src))),
    };
    drop(tunn);
    if let Some((len, src)) = delivered {
        // A peer may only send from its allowed IPs.
        if peers.route(src).is_some_and(|p| Arc::ptr_eq(p, peer)) {
            if is_data {
                batch.commit(len);
            }
        } else {
            bump(&counters.bad_source);
            tracing::trace!(peer = %peer.public_key, %src, "inner source not in the peer's allowed IPs");
        }
    }
    if authenticated {
        peer.set_endpoint(from);
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
    use super::{MAX_GSO_BYTES, SendBatch, padded_len};

    #[test]
    fn gso_batches_take_equal_datagrams_and_one_shorter_last() {
        let mut b = SendBatch::new();
        assert!(b.fits(1452, 64));
        b.push(1452);
        assert!(b.fits(1452, 64));
        b.push(1452);
        assert!(!b.fits(1468, 64), "a longer datagram starts a new batch");
        assert!(b.fits(100, 64));
        b.push(100);
        assert!(!b.fits(100, 64), "nothing follows the short last datagram");
        assert_eq!((b.count, b.len, b.segment), (3, 1452 * 2 + 100, 1452));
    }

    #[test]
    fn gso_batches_respect_segment_and_byte_limits() {
        let mut b = SendBatch::new();
        for _ in 0..3 {
            b.push(64);
        }
        assert!(!b.fits(64, 3), "the kernel's segment limit");
        let mut b = SendBatch::new();
        while b.fits(1452, 64) {
            b.push(1452);
        }
        assert!(b.len <= MAX_GSO_BYTES);
        assert_eq!(b.count, MAX_GSO_BYTES / 1452);
    }

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
