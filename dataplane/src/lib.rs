//! The WireGuard device behind meshcrypt: a userspace engine on a TUN interface, built on
//! boringtun's `noise::Tunn`, configured by typed deltas ([`Change`]) or through the standard
//! UAPI socket (so `wg show` and `wg set` work), behind the [`WireGuardDevice`] seam that the
//! kernel backend ([`Kernel`]: the kernel's own WireGuard, over netlink) also implements.
//!
//! Modules: `device` (the running device: TUN, UDP socket, workers), `datapath` (the workers'
//! encrypt and decrypt loops), `peers` (the peer table and its longest-prefix lookup), `pmtu`
//! (path-MTU probing and ICMP "too big"), `socket` and `tun` (the two endpoints, with their
//! offloads), `flows` (flow accounting), `wake` (waking the workers), `state` and `config` (what is read and written),
//! `uapi` (the `wg` protocol), `backend` (the seam), `kernel` (kernel WireGuard over netlink), `fake` (tests, feature `test-support`).
//!
//! The device never assigns addresses or routes, and never brings the link up: the routing crate
//! does; it sets the MTU only at creation ([`DeviceConfig::mtu`]). Outbound packets no peer's allowed IPs cover are dropped and counted (fail
//! closed); inbound packets whose inner source is not the sender's are dropped and counted.

mod backend;
mod config;
mod datapath;
mod device;
mod error;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
mod flows;
mod kernel;
mod peers;
mod pmtu;
mod socket;
mod state;
mod tun;
mod uapi;
mod wake;

pub use backend::{BackendKind, Native, Userspace, WireGuardBackend, WireGuardDevice};
pub use config::{Change, DEFAULT_MTU, DEFAULT_UAPI_DIR, DeviceConfig, PeerConfig, PeerUpdate};
pub use device::{Device, uapi_socket_path};
pub use error::Error;
pub use flows::{DEFAULT_MAX_FLOWS, DropReason, Flow, FlowDirection, FlowHarvest, FlowKey, FlowOutcome};
pub use kernel::{Kernel, KernelDevice};
pub use meshcrypt_keyexchange::PresharedKey;
pub use meshcrypt_keyexchange::{PrivateKey, PublicKey};
pub use state::{BadSource, DeviceCounters, DeviceState, NoPeerDrop, PeerState, UnknownHandshake};
