//! TUN→UDP: read a TUN frame (with offloads, a TCP super-packet split into segments), route
//! every packet to a peer by longest prefix, pad and seal it, and send each peer's run of
//! datagrams with one UDP GSO `sendmsg`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use boringtun::noise::{Tunn, TunnResult};
use tun_rs::{IDEAL_BATCH_SIZE, SyncDevice, VIRTIO_NET_HDR_LEN};

use super::{Counters, MAX_PACKET, OVERHEAD, Sender, Shared, bump};
use crate::flows::{BatchFlows, DropReason, FlowDirection, FlowOutcome};
use crate::peers::Peer;
use crate::pmtu;

/// Most bytes in one GSO send (a UDP datagram's payload limit, less some slack).
const MAX_GSO_BYTES: usize = 65_000;
/// TUN frames (each up to 64 KiB, split into up to IDEAL_BATCH_SIZE segments) per send batch.
const TX_FRAMES: usize = 4;
/// The MTU segment slots are sized for at least: jumbo frames as in an AWS VPC, so raising the
/// tunnel MTU up to it never outruns the slots. A larger MTU grows them (see [`TxState::fit`]).
const SLOT_MTU: usize = 9001;
/// Room after a packet for padding it to a multiple of 16.
const PAD_ROOM: usize = 16;

/// Datagrams sealed back to back for one peer, waiting for one GSO send.
pub(crate) struct SendBatch {
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

    /// Sends the batch with one GSO `sendmsg`. If the kernel refuses it because a segment is
    /// larger than the path takes (UDP GSO cannot fragment: `udp_send_skb` answers EINVAL, or
    /// EMSGSIZE), its datagrams go one by one, which the kernel may fragment; any other error
    /// drops the batch. Every datagram lost is counted and reported.
    fn flush(&mut self, sender: &Sender, counters: &Counters, peer: &Peer, to: SocketAddr) {
        if self.count == 0 {
            return;
        }
        match sender.transmit(&self.buf[..self.len], Some(self.segment), to) {
            Ok(()) => peer.mark_sent(crate::datapath::clock()),
            Err(e) if self.count > 1 && matches!(e.raw_os_error(), Some(libc::EMSGSIZE | libc::EINVAL)) => {
                for datagram in self.buf[..self.len].chunks(self.segment) {
                    sender.send(peer, datagram, to, counters);
                }
            }
            Err(e) => counters.send_failed(self.count, peer, to, &e),
        }
        self.len = 0;
        self.count = 0;
        self.closed = false;
    }
}

/// A packet larger than the path to its peer carries (the tunnel MTU is set too high for the
/// underlay). If its sender must be told (IPv4 with Don't Fragment, IPv6: [`pmtu::too_big`]), it
/// is dropped, counted, and the ICMP message written into the TUN as if from the path; returns
/// true then. Otherwise (IPv4 that may be fragmented) it is to be sent on its own, and the
/// kernel fragments the datagram; returns false.
fn answered_too_big(shared: &Shared, packet: &[u8], limit: u32) -> bool {
    let Some(icmp) = pmtu::too_big(packet, limit) else { return false };
    bump(&shared.counters.too_big);
    let offset = if shared.tun.tcp_gso() { VIRTIO_NET_HDR_LEN } else { 0 };
    // With offloads every TUN write starts with a virtio-net header; all zero: no offload asked.
    let mut frame = vec![0u8; offset];
    frame.extend_from_slice(&icmp);
    if let Err(e) = shared.tun.send(&frame) {
        tracing::debug!(ifname = %shared.ifname, error = %e, "ICMP too-big not delivered");
    }
    true
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
    /// The batch's flows, when flow accounting is on.
    flows: BatchFlows,
    /// Whether the last read found the TUN still busy (a frame, not an empty queue): only then
    /// are more frames read into the batch before sending.
    streak: bool,
}

impl TxState {
    pub(crate) fn new(tun: &SyncDevice, mtu: usize) -> Self {
        Self::with_offload(tun.tcp_gso(), mtu)
    }

    fn with_offload(offload: bool, mtu: usize) -> Self {
        // One slot per segment; without offloads a single slot takes the whole packet. With
        // offloads the batch takes whatever frames are already queued, up to TX_FRAMES of them,
        // and a slot takes one segment (at most an MTU).
        let (slots, slot_len) =
            if offload { (TX_FRAMES * IDEAL_BATCH_SIZE, slot_len(mtu)) } else { (1, MAX_PACKET + PAD_ROOM) };
        Self {
            offload,
            frame: vec![0u8; VIRTIO_NET_HDR_LEN + MAX_PACKET],
            bufs: (0..slots).map(|_| vec![0u8; slot_len]).collect(),
            sizes: vec![0usize; slots],
            targets: Vec::with_capacity(slots),
            batch: SendBatch::new(),
            flows: BatchFlows::default(),
            streak: false,
        }
    }

    /// Grows the segment slots when the MTU has grown past them (never shrinks them).
    fn fit(&mut self, mtu: usize) {
        let len = slot_len(mtu);
        if self.offload && self.bufs.first().is_some_and(|b| b.len() < len) {
            self.bufs.iter_mut().for_each(|b| b.resize(len, 0));
        }
    }
}

/// A segment slot's size for a TUN MTU: a whole segment and its padding.
fn slot_len(mtu: usize) -> usize {
    mtu.clamp(SLOT_MTU, MAX_PACKET) + PAD_ROOM
}

/// Reads one batch from the TUN (never waiting), routes each packet to a peer by longest prefix,
/// encrypts and sends it: `Ok(false)` when the TUN had nothing, an error only when reading cannot
/// go on. A packet no peer covers is dropped and counted: nothing leaves unencrypted.
///
/// The receive side calls this too, right after writing to the TUN: replies and ACKs the kernel
/// generated in that write then leave at once, without another wake-up.
pub(crate) fn tx_once(shared: &Shared, st: &mut TxState) -> io::Result<bool> {
    let mtu = shared.mtu.load(Ordering::Relaxed) as usize;
    st.fit(mtu);
    let TxState { offload, frame, bufs, sizes, targets, batch, flows, streak } = st;
    let offload = *offload;
    let slots = bufs.len();
    let mut n = match shared.tun.recv_multiple(frame, bufs, sizes, 0) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            *streak = false;
            return Ok(false);
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::Other => {
            // A malformed offload frame: drop it, keep going.
            tracing::debug!(ifname = %shared.ifname, error = %e, "TUN frame dropped");
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    // In a burst, more frames already queued join the batch (never waiting for them): fewer,
    // fuller GSO sends. A frame that follows an empty queue leaves at once instead: a lone
    // packet (a ping, a request) does not wait for a read that finds nothing, and a burst's
    // second read turns batching on. Each read needs room for a whole 64 KiB frame's segments.
    let speculate = *streak;
    *streak = true;
    while speculate && offload && slots - n >= IDEAL_BATCH_SIZE {
        match shared.tun.recv_multiple(frame, &mut bufs[n..], &mut sizes[n..], 0) {
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *streak = false;
                break;
            }
            // A bad frame (dropped): send what we have.
            Err(_) => break,
        }
    }
    // Route the whole batch under one read of the peer table.
    targets.clear();
    let accounting = shared.flows.enabled();
    let mut account = |packet: &[u8], outcome, peer: Option<&Peer>| {
        if accounting {
            flows.add(packet, FlowDirection::Outbound, outcome, peer.map(|p| p.public_key));
        }
    };
    {
        let peers = shared.peers();
        let mut routes = peers.cached_routes();
        for (buf, size) in bufs.iter_mut().zip(sizes.iter_mut()).take(n) {
            // WireGuard pads the plaintext with zeros to a multiple of 16 (which boringtun
            // leaves out): it hides exact lengths, and receivers trim by the inner IP header.
            let padded = padded_len(*size, mtu);
            buf[*size..padded].fill(0);
            *size = padded;
            let peer = Tunn::dst_address(&buf[..padded]).and_then(|dst| routes.route(dst));
            if peer.is_none() {
                shared.counters.no_peer(&buf[..padded]);
                account(&buf[..padded], FlowOutcome::Dropped(DropReason::NoPeer), None);
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
            for j in i..run_end {
                account(&bufs[j][..sizes[j]], FlowOutcome::Dropped(DropReason::NoEndpoint), Some(&peer));
            }
            i = run_end;
            continue;
        };
        let limit = peer.inner_mtu();
        let mut tunnel = peer.lock_tunnel();
        for j in i..run_end {
            let packet = &bufs[j][..sizes[j]];
            let oversized =
                limit.is_some_and(|limit| pmtu::ip_len(packet).is_some_and(|len| len > limit as usize));
            if oversized && answered_too_big(shared, packet, limit.unwrap_or_default()) {
                account(packet, FlowOutcome::Dropped(DropReason::TooBig), Some(&peer));
                continue;
            }
            let size = packet.len() + OVERHEAD;
            // An oversized packet that may be fragmented leaves alone: GSO cannot fragment.
            if oversized || !batch.fits(size, max_segments) {
                drop(tunnel);
                batch.flush(&sender, &shared.counters, &peer, endpoint);
                tunnel = peer.lock_tunnel();
            }
            match tunnel.get().encapsulate(packet, &mut batch.buf[batch.len..]) {
                TunnResult::WriteToNetwork(datagram)
                    if datagram.len() == size && datagram.first() == Some(&4) =>
                {
                    batch.push(size);
                    // Nothing joins it: a datagram the kernel must fragment goes alone.
                    batch.closed |= oversized;
                    account(packet, FlowOutcome::Encrypted, Some(&peer));
                }
                TunnResult::WriteToNetwork(other) => {
                    // No session yet: the packet is queued and a handshake initiation
                    // goes out instead.
                    let other = other.to_vec();
                    sender.send(&peer, &other, endpoint, &shared.counters);
                    account(packet, FlowOutcome::Encrypted, Some(&peer));
                }
                TunnResult::Err(e) => {
                    tracing::debug!(peer = %peer.public_key, error = ?e, "encapsulate failed");
                }
                // Queued behind a handshake already under way.
                TunnResult::Done => account(packet, FlowOutcome::Encrypted, Some(&peer)),
                _ => {}
            }
        }
        drop(tunnel);
        batch.flush(&sender, &shared.counters, &peer, endpoint);
        i = run_end;
    }
    targets.clear();
    flows.flush(&shared.flows);
    Ok(true)
}

/// The padded length of an `n`-byte packet: the next multiple of 16, but never past the MTU
/// (nor shorter than the packet).
fn padded_len(n: usize, mtu: usize) -> usize {
    n.next_multiple_of(16).min(mtu.max(n)).min(MAX_PACKET)
}

#[cfg(test)]
mod tests {
    use super::{MAX_GSO_BYTES, MAX_PACKET, SendBatch, TxState, padded_len};

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
    fn segment_slots_fit_the_mtu_and_grow_with_it() {
        let slots = |st: &TxState| (st.bufs.len(), st.bufs.iter().map(Vec::len).min(), st.bufs[0].len());
        // (offload, MTU at creation, MTU later) → (slots, smallest slot, first slot) after `fit`.
        for (offload, first, later, want) in [
            (true, 1420, 1420, (512, Some(9017), 9017)),
            (true, 1420, 8941, (512, Some(9017), 9017)),
            (true, 1420, 12_000, (512, Some(12_016), 12_016)),
            (true, 12_000, 1420, (512, Some(12_016), 12_016)),
            (true, 1420, 70_000, (512, Some(MAX_PACKET + 16), MAX_PACKET + 16)),
            (false, 1420, 12_000, (1, Some(MAX_PACKET + 16), MAX_PACKET + 16)),
        ] {
            let mut st = TxState::with_offload(offload, first);
            st.fit(later);
            assert_eq!(slots(&st), want, "offload {offload}, MTU {first} then {later}");
        }
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
