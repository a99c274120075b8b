//! TUN→UDP: read TUN frames (with offloads, TCP and UDP super-packets, split in place by
//! [`super::gso`]), route each frame to a peer by longest prefix, pad and seal its packets, and
//! send each peer's run of datagrams with one UDP GSO `sendmsg`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use boringtun::noise::{Tunn, TunnResult};
use tun_rs::{SyncDevice, VIRTIO_NET_HDR_LEN};

use super::gso::{self, Frame};
use super::offload::VnetHeader;
use super::{Counters, MAX_PACKET, OVERHEAD, Sender, Shared, bump};
use crate::flows::{BatchFlows, DropReason, FlowDirection, FlowOutcome};
use crate::peers::Peer;
use crate::pmtu;

/// Most bytes in one GSO send (a UDP datagram's payload limit, less some slack).
const MAX_GSO_BYTES: usize = 65_000;
/// TUN frames (each up to 64 KiB) per send batch.
const TX_FRAMES: usize = 4;
/// Room after a frame for padding its last packet to a multiple of 16.
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
    /// Whether every frame starts with a virtio-net header (the TUN has offloads).
    offload: bool,
    /// Frames as read: with offloads a virtio-net header, then a packet or a super-packet; room
    /// to pad the last packet after it.
    frames: Vec<Vec<u8>>,
    /// Each read frame's length (header included).
    lens: Vec<usize>,
    /// Each read frame that [`gso::plan`] took: its index, its plan and its peer.
    planned: Vec<(usize, Frame, Option<Arc<Peer>>)>,
    batch: SendBatch,
    /// The batch's flows, when flow accounting is on.
    flows: BatchFlows,
    /// Whether the last read found the TUN still busy (a frame, not an empty queue): only then
    /// are more frames read into the batch before sending.
    streak: bool,
}

impl TxState {
    pub(crate) fn new(tun: &SyncDevice) -> Self {
        Self::with_offload(tun.tcp_gso())
    }

    fn with_offload(offload: bool) -> Self {
        // With offloads the batch takes whatever frames are already queued, up to TX_FRAMES.
        let (count, len) = if offload {
            (TX_FRAMES, VIRTIO_NET_HDR_LEN + MAX_PACKET + PAD_ROOM)
        } else {
            (1, MAX_PACKET + PAD_ROOM)
        };
        Self {
            offload,
            frames: vec![vec![0u8; len]; count],
            lens: vec![0; count],
            planned: Vec::with_capacity(count),
            batch: SendBatch::new(),
            flows: BatchFlows::default(),
            streak: false,
        }
    }

    /// Where a frame's packet bytes start.
    fn packet_offset(&self) -> usize {
        if self.offload { VIRTIO_NET_HDR_LEN } else { 0 }
    }
}

/// Reads up to [`TX_FRAMES`] frames from the TUN (never waiting); `Ok(0)` when it had none.
///
/// In a burst, more frames already queued join the batch (never waiting for them): fewer,
/// fuller GSO sends. A frame that follows an empty queue leaves at once instead: a lone packet
/// (a ping, a request) does not wait for a read that finds nothing, and a burst's second read
/// turns batching on.
fn read_frames(shared: &Shared, st: &mut TxState) -> io::Result<usize> {
    let mut n = 0;
    loop {
        let frame = &mut st.frames[n];
        let room = frame.len() - PAD_ROOM;
        match shared.tun.recv(&mut frame[..room]) {
            Ok(len) => {
                st.lens[n] = len;
                n += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                st.streak = false;
                return Ok(n);
            }
            Err(e) if n == 0 => return Err(e),
            // The error shows again on the next read: send what we have.
            Err(_) => return Ok(n),
        }
        if n == 1 {
            let speculate = st.streak;
            st.streak = true;
            if !speculate {
                return Ok(n);
            }
        }
        if n == st.frames.len() {
            return Ok(n);
        }
    }
}

/// Checks frame `f` ([`gso::plan`]); `None` for a frame its virtio-net header does not fit.
fn plan_frame(st: &mut TxState, f: usize) -> Option<Frame> {
    let len = st.lens[f];
    if !st.offload {
        return Some(Frame::Packet(len));
    }
    let frame = &mut st.frames[f][..len];
    let vnet = VnetHeader::decode(frame)?;
    gso::plan(&vnet, &mut frame[VIRTIO_NET_HDR_LEN..])
}

/// Reads a batch from the TUN (never waiting), routes each frame to a peer by longest prefix,
/// splits it, pads, encrypts and sends its packets: `Ok(false)` when the TUN had nothing, an
/// error only when reading cannot go on. A packet no peer covers is dropped and counted: nothing
/// leaves unencrypted.
///
/// The receive side calls this too, right after writing to the TUN: replies and ACKs the kernel
/// generated in that write then leave at once, without another wake-up.
pub(crate) fn tx_once(shared: &Shared, st: &mut TxState) -> io::Result<bool> {
    let n = match read_frames(shared, st) {
        Ok(0) => return Ok(false),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
        Err(e) => return Err(e),
    };
    let offset = st.packet_offset();
    // Check the frames and route them under one read of the peer table: every packet of a
    // super-packet has its first packet's destination.
    st.planned.clear();
    {
        let peers = shared.peers();
        let mut routes = peers.cached_routes();
        for f in 0..n {
            let Some(frame) = plan_frame(st, f) else {
                tracing::debug!(ifname = %shared.ifname, len = st.lens[f], "TUN frame dropped: its offload header does not fit it");
                continue;
            };
            let buf = &mut st.frames[f][offset..];
            let first = frame.packet(buf, 0);
            let peer = Tunn::dst_address(&buf[first]).and_then(|dst| routes.route(dst)).cloned();
            st.planned.push((f, frame, peer));
        }
    }
    let mtu = shared.mtu.load(Ordering::Relaxed) as usize;
    let TxState { frames, planned, batch, flows, .. } = st;
    let accounting = shared.flows.enabled();
    let mut account = |packet: &[u8], outcome, peer: Option<&Peer>| {
        if accounting {
            flows.add(packet, FlowDirection::Outbound, outcome, peer.map(|p| p.public_key));
        }
    };
    let sender = shared.sender();
    let max_segments = sender.max_segments();
    let mut i = 0;
    while i < planned.len() {
        let run_end = (i..planned.len())
            .find(|&j| !same_peer(planned[j].2.as_ref(), planned[i].2.as_ref()))
            .unwrap_or(planned.len());
        let run = &planned[i..run_end];
        i = run_end;
        let packets = || run.iter().map(|(_, frame, _)| frame.count()).sum::<usize>();
        let Some(peer) = run[0].2.clone() else {
            for (f, frame, _) in run {
                let buf = &mut frames[*f][offset..];
                for k in 0..frame.count() {
                    let at = frame.packet(buf, k);
                    shared.counters.no_peer(&buf[at.clone()]);
                    account(&buf[at], FlowOutcome::Dropped(DropReason::NoPeer), None);
                }
            }
            continue;
        };
        let Some(endpoint) = peer.endpoint() else {
            shared.counters.no_endpoint.fetch_add(packets() as u64, Ordering::Relaxed);
            for (f, frame, _) in run {
                let buf = &mut frames[*f][offset..];
                for k in 0..frame.count() {
                    let at = frame.packet(buf, k);
                    account(&buf[at], FlowOutcome::Dropped(DropReason::NoEndpoint), Some(&peer));
                }
            }
            continue;
        };
        let limit = peer.inner_mtu();
        let mut tunnel = peer.lock_tunnel();
        for (f, frame, _) in run {
            let buf = &mut frames[*f][offset..];
            for k in 0..frame.count() {
                let at = frame.packet(buf, k);
                // WireGuard pads the plaintext with zeros to a multiple of 16 (which boringtun
                // leaves out): it hides exact lengths, and receivers trim by the inner IP
                // header. The padding lies over the start of the next packet's payload (or in
                // the frame's spare room): keep those bytes and put them back after sealing.
                let pad = padded_len(at.len(), mtu) - at.len();
                let mut kept = [0u8; PAD_ROOM];
                kept[..pad].copy_from_slice(&buf[at.end..at.end + pad]);
                buf[at.end..at.end + pad].fill(0);
                let packet = &buf[at.start..at.end + pad];
                let oversized =
                    limit.is_some_and(|limit| pmtu::ip_len(packet).is_some_and(|len| len > limit as usize));
                if oversized && answered_too_big(shared, packet, limit.unwrap_or_default()) {
                    account(packet, FlowOutcome::Dropped(DropReason::TooBig), Some(&peer));
                } else {
                    let size = packet.len() + OVERHEAD;
                    // An oversized packet that may be fragmented leaves alone: GSO cannot
                    // fragment.
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
                buf[at.end..at.end + pad].copy_from_slice(&kept[..pad]);
            }
        }
        drop(tunnel);
        batch.flush(&sender, &shared.counters, &peer, endpoint);
    }
    planned.clear();
    flows.flush(&shared.flows);
    Ok(true)
}

/// Whether two frames go to the same peer (or both to none).
fn same_peer(a: Option<&Arc<Peer>>, b: Option<&Arc<Peer>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The padded length of an `n`-byte packet: the next multiple of 16, but never past the MTU
/// (nor shorter than the packet).
fn padded_len(n: usize, mtu: usize) -> usize {
    n.next_multiple_of(16).min(mtu.max(n)).min(MAX_PACKET)
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
