//! What a device is told: its creation parameters and the typed configuration deltas.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use meshcrypt_keyexchange::{PresharedKey, PrivateKey, PublicKey};

/// Where `wg` looks for UAPI sockets by default.
pub const DEFAULT_UAPI_DIR: &str = "/var/run/wireguard";

/// The parameters of [`crate::Device::create`].
#[derive(Debug)]
pub struct DeviceConfig {
    /// The implementation [`crate::Native`] creates (the other backends make their own kind).
    pub backend: crate::BackendKind,
    /// The TUN interface to create (or open if it exists and is free), e.g. `meshcrypt0`.
    pub ifname: String,
    /// The device's static private key.
    pub private_key: PrivateKey,
    /// The UDP port to listen on; 0 picks a free one (see [`crate::DeviceState::listen_port`]).
    pub listen_port: u16,
    /// The `SO_MARK` set on the UDP socket, so policy routing can keep encrypted packets out of
    /// the tunnel.
    pub fwmark: Option<u32>,
    /// The directory of the UAPI socket `<uapi_dir>/<ifname>.sock` (`wg` uses
    /// [`DEFAULT_UAPI_DIR`]); created 0700 if missing.
    pub uapi_dir: PathBuf,
    /// Data-path workers, each serving both directions (TUN→UDP and UDP→TUN); 1 suits 2 cores.
    /// 0 counts as 1.
    pub workers: usize,
    /// The TUN's MTU, set at creation; `None` leaves the interface's (a new TUN has 1500, which
    /// no 1500-byte underlay can carry once WireGuard's 60–80 bytes are added).
    pub mtu: Option<u16>,
}

/// The tunnel MTU a device gets unless told otherwise: a 1500-byte underlay less WireGuard over
/// IPv6's 80 bytes, as wireguard-go and wg-quick default to.
pub const DEFAULT_MTU: u16 = 1420;

impl DeviceConfig {
    /// A configuration with the defaults: the userspace device, port 51820, no fwmark, the standard UAPI directory, one
    /// data-path worker and MTU [`DEFAULT_MTU`].
    pub fn new(ifname: impl Into<String>, private_key: PrivateKey) -> Self {
        Self {
            backend: crate::BackendKind::Userspace,
            ifname: ifname.into(),
            private_key,
            listen_port: 51820,
            fwmark: None,
            uapi_dir: PathBuf::from(DEFAULT_UAPI_DIR),
            workers: 1,
            mtu: Some(DEFAULT_MTU),
        }
    }
}

/// The whole desired configuration of one peer (add, or update in place keeping its session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static public key: its identity.
    pub public_key: PublicKey,
    /// Where to send; `None` keeps whatever the device has (e.g. a roamed address).
    pub endpoint: Option<SocketAddr>,
    /// The inner addresses this peer may send from, and that are routed to it.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives when idle; `None` disables them.
    pub persistent_keepalive: Option<u16>,
    /// The optional pre-shared key.
    pub preshared_key: Option<PresharedKey>,
}

/// A field-wise update of one peer, shaped like a UAPI `public_key=` section: only the fields
/// given change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    /// The peer's static public key.
    pub public_key: PublicKey,
    /// Remove the peer instead (the other fields are ignored).
    pub remove: bool,
    /// Only update an existing peer; do not create it.
    pub update_only: bool,
    /// A new endpoint.
    pub endpoint: Option<SocketAddr>,
    /// A new keepalive interval: `Some(None)` disables keepalives.
    pub persistent_keepalive: Option<Option<u16>>,
    /// A new pre-shared key: `Some(None)` removes it.
    pub preshared_key: Option<Option<PresharedKey>>,
    /// Drop the current allowed IPs before adding [`PeerUpdate::allowed_ips`].
    pub replace_allowed_ips: bool,
    /// Allowed IPs to add.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerUpdate {
    /// An update that changes nothing yet, for `public_key`.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            endpoint: None,
            persistent_keepalive: None,
            preshared_key: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

impl From<PeerConfig> for PeerUpdate {
    fn from(c: PeerConfig) -> Self {
        Self {
            public_key: c.public_key,
            remove: false,
            update_only: false,
            endpoint: c.endpoint,
            persistent_keepalive: Some(c.persistent_keepalive),
            preshared_key: Some(c.preshared_key),
            replace_allowed_ips: true,
            allowed_ips: c.allowed_ips,
        }
    }
}

/// One configuration delta. A list of them is applied in order under one lock, so packets see
/// either the state before or after the whole list (up to the first error, if any). Nothing here
/// recreates the device, and only a new pre-shared key or private key restarts a peer's session.
#[derive(Debug)]
pub enum Change {
    /// Replace the device's private key (every session restarts: WireGuard's rule).
    SetPrivateKey(PrivateKey),
    /// Rebind the UDP socket to another port (0: any free port).
    SetListenPort(u16),
    /// Set or clear the socket's `SO_MARK`.
    SetFwmark(Option<u32>),
    /// Remove every peer (UAPI `replace_peers=true`).
    RemoveAllPeers,
    /// Add a peer, or bring an existing one to exactly this configuration.
    UpsertPeer(PeerConfig),
    /// Change some fields of a peer (or add it, unless `update_only`).
    UpdatePeer(PeerUpdate),
    /// Remove a peer; removing an absent peer is not an error.
    RemovePeer(PublicKey),
    /// Replace the allowed-IP set of an existing peer, keeping its session.
    ReplaceAllowedIps {
        /// The peer.
        public_key: PublicKey,
        /// Its new allowed IPs.
        allowed_ips: Vec<IpNet>,
    },
}
