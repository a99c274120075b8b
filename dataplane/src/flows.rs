//! Flow accounting: the packets each direction of the data path handles, summed per flow (the
//! inner 5-tuple and direction) and outcome (sent encrypted, or dropped and why), in a table of
//! bounded size that the agent drains every interval ([`crate::Device::take_flows`]).
//!
//! The cost on the data path is one relaxed load per batch when accounting is off. When it is
//! on, each packet's 5-tuple is read from its first bytes (no allocation), consecutive packets of
//! one flow (a TCP super-packet's segments, a GRO train) are summed in the batch, and the table is
//! locked once per batch. A full table counts what it cannot hold in `overflow_*` instead of
//! growing.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use meshcrypt_keyexchange::PublicKey;

/// The default cap on flows held between two drains.
pub const DEFAULT_MAX_FLOWS: usize = 65_536;

/// Which way a packet crossed the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowDirection {
    /// Read from the TUN (sent by something on this node), to go to a peer.
    Outbound,
    /// Received from a peer, to be delivered on this node.
    Inbound,
}

/// Why the data path dropped a packet. The names ([`DropReason::as_str`]) are the ones the
/// `meshcrypt_packets_dropped_total` metric's `reason` label uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Outbound, and no peer's allowed IPs cover the destination: in strict mode, traffic to a
    /// node without a key (or outside every peer) that the rules steered into the device.
    NoPeer,
    /// Outbound to a peer with no endpoint yet.
    NoEndpoint,
    /// Inbound, and the inner source is outside the sending peer's allowed IPs (spoofing).
    BadSource,
    /// Outbound, and larger than the path to the peer carries (answered with ICMP too-big).
    TooBig,
}

impl DropReason {
    /// The stable name: `no_peer`, `no_endpoint`, `bad_source` or `too_big`.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NoPeer => "no_peer",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::BadSource => "bad_source",
            DropReason::TooBig => "too_big",
        }
    }
}

/// What happened to a flow's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowOutcome {
    /// Outbound: sealed for the peer (or queued while its handshake runs). Inbound: opened,
    /// authenticated and delivered.
    Encrypted,
    /// Dropped, never sent in plaintext.
    Dropped(DropReason),
}

/// A flow's identity: the inner packet's addresses, protocol (IANA number) and ports (0 when the
/// protocol has none, or the packet is a later fragment or an IPv6 packet with extension headers,
/// whose `protocol` is then the first extension header's number), and the direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Which way the packets went.
    pub direction: FlowDirection,
    /// The IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …).
    pub protocol: u8,
    /// The inner source address.
    pub src: IpAddr,
    /// The inner source port (TCP, UDP, SCTP), else 0.
    pub src_port: u16,
    /// The inner destination address.
    pub dst: IpAddr,
    /// The inner destination port (TCP, UDP, SCTP), else 0.
    pub dst_port: u16,
}

/// One flow's totals over the interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The 5-tuple and direction.
    pub key: FlowKey,
    /// What happened to the packets.
    pub outcome: FlowOutcome,
    /// The peer the packets went to or came from (`None` for [`DropReason::NoPeer`]).
    pub peer: Option<PublicKey>,
    /// Packets.
    pub packets: u64,
    /// Bytes of inner IP packets (their IP length, without WireGuard's padding or overhead).
    pub bytes: u64,
    /// When the first packet was seen (millisecond resolution).
    pub first_seen: SystemTime,
    /// When the last packet was seen (millisecond resolution).
    pub last_seen: SystemTime,
}

/// What one drain returns: the flows seen since the previous drain, and what did not fit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowHarvest {
    /// The flows, sorted by key and outcome.
    pub flows: Vec<Flow>,
    /// Packets of flows that found the table full (counted here, not per flow).
    pub overflow_packets: u64,
    /// Bytes of those packets.
    pub overflow_bytes: u64,
}

/// The 5-tuple of an IP packet and its IP length, read from its first bytes; `None` when it is
/// too short to be one. IPv4 per RFC 791 (header length from IHL; ports only in the first
/// fragment), IPv6 per RFC 8200 (ports only when the fixed header's next header is the transport).
pub(crate) fn parse(packet: &[u8], direction: FlowDirection) -> Option<(FlowKey, u64)> {
    let ports = |transport: &[u8], protocol: u8| match (protocol, transport) {
        // TCP, UDP, UDP-Lite, SCTP: source and destination port lead the header.
        (6 | 17 | 136 | 132, [a, b, c, d, ..]) => {
            (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d]))
        }
        _ => (0, 0),
    };
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let protocol = packet[9];
            let later_fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff != 0;
            let (src_port, dst_port) = match packet.get(ihl..) {
                Some(transport) if ihl >= 20 && !later_fragment => ports(transport, protocol),
                _ => (0, 0),
            };
            let key = FlowKey {
                direction,
                protocol,
                src: IpAddr::V4(Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15])),
                src_port,
                dst: IpAddr::V4(Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19])),
                dst_port,
            };
            Some((key, u64::from(u16::from_be_bytes([packet[2], packet[3]]))))
        }
        6 if packet.len() >= 40 => {
            let protocol = packet[6];
            let (src_port, dst_port) = ports(&packet[40..], protocol);
            let addr = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&packet[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let key = FlowKey { direction, protocol, src: addr(8), src_port, dst: addr(24), dst_port };
            Some((key, 40 + u64::from(u16::from_be_bytes([packet[4], packet[5]]))))
        }
        _ => None,
    }
}

/// One batch's flows, summed over runs of consecutive packets of one flow; kept by a direction's
/// buffers and merged into the [`FlowTable`] once per batch.
#[derive(Debug, Default)]
pub(crate) struct BatchFlows {
    runs: Vec<(FlowKey, FlowOutcome, Option<PublicKey>, u64, u64)>,
}

impl BatchFlows {
    /// Counts `packet` (an inner IP packet) with its outcome.
    pub(crate) fn add(
        &mut self,
        packet: &[u8],
        direction: FlowDirection,
        outcome: FlowOutcome,
        peer: Option<PublicKey>,
    ) {
        let Some((key, bytes)) = parse(packet, direction) else { return };
        match self.runs.last_mut() {
            Some((k, o, p, packets, b)) if *k == key && *o == outcome && *p == peer => {
                *packets += 1;
                *b += bytes;
            }
            _ => self.runs.push((key, outcome, peer, 1, bytes)),
        }
    }

    /// Moves the batch's runs into `table` (if accounting is on), seen at `now`.
    pub(crate) fn flush(&mut self, table: &FlowTable) {
        if self.runs.is_empty() {
            return;
        }
        if table.enabled() {
            table.merge(self.runs.drain(..), SystemTime::now());
        } else {
            self.runs.clear();
        }
    }
}

#[derive(Debug)]
struct Totals {
    peer: Option<PublicKey>,
    packets: u64,
    bytes: u64,
    first_ms: u64,
    last_ms: u64,
}

#[derive(Debug, Default)]
struct Table {
    flows: HashMap<(FlowKey, FlowOutcome), Totals>,
    overflow_packets: u64,
    overflow_bytes: u64,
}

/// The device's flows between two drains, at most `max` of them (0: accounting off).
#[derive(Debug, Default)]
pub(crate) struct FlowTable {
    max: AtomicUsize,
    table: Mutex<Table>,
}

impl FlowTable {
    /// Whether packets are being accounted (one relaxed load: the data path asks once per batch).
    pub(crate) fn enabled(&self) -> bool {
        self.max.load(Ordering::Relaxed) > 0
    }

    /// Turns accounting on with room for `max` flows, or off (`None`, or 0). Turning it off
    /// keeps what was counted until the next drain.
    pub(crate) fn set_max(&self, max: Option<usize>) {
        self.max.store(max.unwrap_or(0), Ordering::Relaxed);
    }

    fn merge(
        &self,
        runs: impl Iterator<Item = (FlowKey, FlowOutcome, Option<PublicKey>, u64, u64)>,
        now: SystemTime,
    ) {
        let now_ms = millis(now);
        let max = self.max.load(Ordering::Relaxed);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for (key, outcome, peer, packets, bytes) in runs {
            let full = table.flows.len() >= max;
            match table.flows.get_mut(&(key, outcome)) {
                Some(t) => {
                    t.packets += packets;
                    t.bytes += bytes;
                    t.last_ms = now_ms;
                    t.peer = peer;
                }
                None if full => {
                    table.overflow_packets += packets;
                    table.overflow_bytes += bytes;
                }
                None => {
                    let totals = Totals { peer, packets, bytes, first_ms: now_ms, last_ms: now_ms };
                    table.flows.insert((key, outcome), totals);
                }
            }
        }
    }

    /// Takes every flow counted since the last call, sorted, and the overflow.
    pub(crate) fn take(&self) -> FlowHarvest {
        let table = std::mem::take(&mut *self.table.lock().unwrap_or_else(|p| p.into_inner()));
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let mut flows: Vec<Flow> = table
            .flows
            .into_iter()
            .map(|((key, outcome), t)| Flow {
                key,
                outcome,
                peer: t.peer,
                packets: t.packets,
                bytes: t.bytes,
                first_seen: at(t.first_ms),
                last_seen: at(t.last_ms),
            })
            .collect();
        flows.sort_by_key(|f| (f.key, f.outcome));
        FlowHarvest { flows, overflow_packets: table.overflow_packets, overflow_bytes: table.overflow_bytes }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
