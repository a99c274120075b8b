//! What a device reports: its configuration read back, per-peer statistics and drop counters.

use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use meshcrypt_keyexchange::PublicKey;

/// A snapshot of a device: configuration plus statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// Which implementation the device is.
    pub backend: crate::BackendKind,
    /// The interface name.
    pub ifname: String,
    /// The interface index.
    pub ifindex: u32,
    /// The public half of the device's private key.
    pub public_key: PublicKey,
    /// The UDP port actually bound.
    pub listen_port: u16,
    /// The socket's `SO_MARK`.
    pub fwmark: Option<u32>,
    /// The peers, sorted by public key.
    pub peers: Vec<PeerState>,
    /// Device-wide counters.
    pub counters: DeviceCounters,
}

impl DeviceState {
    /// The peer with this key, if configured: a binary search of [`DeviceState::peers`], which
    /// every backend reports sorted (a pass looks up every peer: a linear search cost 5,000 × 5,000
    /// key comparisons a pass at 5,000 nodes).
    pub fn peer(&self, key: &PublicKey) -> Option<&PeerState> {
        self.peers.binary_search_by(|p| p.public_key.cmp(key)).ok().map(|i| &self.peers[i])
    }
}

/// One peer's configuration and statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The peer's public key.
    pub public_key: PublicKey,
    /// The current endpoint (configured, or roamed to the last authenticated source).
    pub endpoint: Option<SocketAddr>,
    /// The allowed IPs, in configuration order.
    pub allowed_ips: Vec<IpNet>,
    /// The keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
    /// The pre-shared key's fingerprint ([`PresharedKey::fingerprint`]), when one is set (the key
    /// itself is never reported here).
    ///
    /// [`PresharedKey::fingerprint`]: meshcrypt_keyexchange::PresharedKey::fingerprint
    pub preshared_key: Option<String>,
    /// When the current session's handshake completed; `None` without a session.
    pub last_handshake: Option<SystemTime>,
    /// Inner bytes received from this peer.
    pub rx_bytes: u64,
    /// Bytes sent to this peer: the inner bytes of its data packets plus the whole handshake and
    /// cookie datagrams, so a peer never reached still shows what was sent trying (kernel
    /// WireGuard counts every datagram it sends a peer: `wg_socket_send_skb_to_peer`,
    /// drivers/net/wireguard/socket.c).
    pub tx_bytes: u64,
}

impl PeerState {
    /// A peer with this key and nothing else yet: no endpoint, allowed IPs, keepalive,
    /// pre-shared key or session, no bytes.
    pub(crate) fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
            preshared_key: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        }
    }
}

/// A handshake initiation from a key that is no peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownHandshake {
    /// Where it came from.
    pub from: SocketAddr,
    /// The initiator's static public key.
    pub public_key: PublicKey,
}

/// A packet from a peer with an inner source outside the peer's allowed IPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSource {
    /// The peer it came through.
    pub peer: PublicKey,
    /// Its inner source address.
    pub source: std::net::IpAddr,
}

/// A packet dropped because no peer's allowed IPs cover its destination (fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoPeerDrop {
    /// Its source address (a pod on this node, or the node).
    pub source: std::net::IpAddr,
    /// The destination it had no tunnel to.
    pub destination: std::net::IpAddr,
}

/// Device-wide packet counters. Every dropped packet is counted exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// The latest of `dropped_no_route`, if any.
    pub last_no_route: Option<NoPeerDrop>,
    /// Packets read from the TUN whose destination no peer's allowed IPs cover (fail closed).
    pub dropped_no_route: u64,
    /// Packets for a peer that has no endpoint yet.
    pub dropped_no_endpoint: u64,
    /// Decrypted packets whose inner source is not in the sending peer's allowed IPs.
    pub dropped_bad_source: u64,
    /// The latest of those, if any (recorded unless another worker is recording one).
    pub last_bad_source: Option<BadSource>,
    /// Datagrams that failed authentication or decryption, or that match no peer.
    pub decrypt_errors: u64,
    /// Handshake initiations that authenticated (they were made for this device's key) from a
    /// static key that is no peer's: a node the mesh refused, or someone probing the mesh port.
    pub handshakes_unknown_key: u64,
    /// The latest of those, if any.
    pub last_unknown_handshake: Option<UnknownHandshake>,
    /// Datagrams the kernel refused to send (each also logged as a WARN, at most every 10 s).
    pub dropped_send_error: u64,
    /// Packets larger than the path to their peer carries: each answered with ICMP
    /// fragmentation-needed / packet-too-big to its sender when its family allows (IPv4 with Don't
    /// Fragment, IPv6), as a router would.
    pub dropped_too_big: u64,
}
