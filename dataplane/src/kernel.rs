//! Kernel WireGuard behind [`WireGuardDevice`]: the `wireguard` link made or adopted over
//! `NETLINK_ROUTE`, configured and read back over WireGuard's generic netlink family
//! (`include/uapi/linux/wireguard.h`). The device, its peers and their sessions live in the
//! kernel, so they outlive the agent: dropping a [`KernelDevice`] leaves the link running
//! (an agent restarting adopts it); [`WireGuardDevice::delete`] removes it.
//!
//! Modules: `link` (create, adopt, delete), `set_device` ([`Change`]s as messages), `get_device`
//! (a dump as a [`DeviceState`]), `netlink` (the blocking request).
//!
//! What the userspace device does and the kernel's does not report here: per-device drop
//! counters ([`DeviceState::counters`] stay empty), flow accounting, a handshake started on
//! request (the kernel starts one when a packet waits for a peer), and one started for a peer
//! added after its initiation was refused (the kernel's peer retries within REKEY_TIMEOUT, 5 s).

mod get_device;
mod link;
mod netlink;
mod set_device;

use std::sync::{Arc, Mutex, MutexGuard};

use meshcrypt_keyexchange::PublicKey;
use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_wireguard::{WireguardAttribute, WireguardCmd, WireguardMessage};
use netlink_sys::protocols::NETLINK_GENERIC;

use crate::backend::{BackendKind, WireGuardBackend, WireGuardDevice};
use crate::config::{Change, DeviceConfig};
use crate::error::Error;
use crate::flows::FlowHarvest;
use crate::state::DeviceState;
use crate::tun::validate_ifname;
use link::netlink as netlink_error;
use netlink::{NetlinkSocket, Wipe};

/// How many times a dump the kernel marks inconsistent is asked again before the error is
/// returned (each try is one dump; a change between two takes a pass's worth of peers).
const DUMP_ATTEMPTS: u32 = 10;

/// The kernel backend: devices are the kernel's `wireguard` links.
#[derive(Debug, Clone, Copy, Default)]
pub struct Kernel;

impl Kernel {
    /// Whether this kernel has WireGuard: its generic netlink family resolves (asking for it
    /// loads the module where it is installed, by its `net-pf-16-proto-16-family-wireguard`
    /// alias). `false` on any error, `EPERM` included.
    pub fn available() -> bool {
        NetlinkSocket::open(NETLINK_GENERIC).and_then(|mut s| family_id(&mut s)).is_ok()
    }
}

impl WireGuardBackend for Kernel {
    /// Creates the link, or adopts the one a previous run left (its peers and sessions kept),
    /// and sets its key, port and fwmark: the kernel leaves sessions alone when the key and
    /// port are the ones it has. Errors keep the kernel's errno ([`Error::Netlink`]:
    /// `EOPNOTSUPP` without the module, `EADDRINUSE` for a taken port).
    fn create(&self, config: DeviceConfig) -> Result<Arc<dyn WireGuardDevice>, Error> {
        validate_ifname(&config.ifname)?;
        let link = link::create_or_adopt(&config.ifname, config.mtu)?;
        tracing::info!(ifname = %config.ifname, ifindex = link.ifindex, adopted = link.adopted,
            "kernel WireGuard device");
        let device = KernelDevice::open(link.ifindex)?;
        device.apply(&[
            Change::SetPrivateKey(config.private_key),
            Change::SetListenPort(config.listen_port),
            Change::SetFwmark(config.fwmark),
        ])?;
        Ok(Arc::new(device))
    }
}

/// A kernel `wireguard` link, configured by deltas over generic netlink.
#[derive(Debug)]
pub struct KernelDevice {
    ifindex: u32,
    family: u16,
    socket: Mutex<NetlinkSocket>,
}

impl KernelDevice {
    /// Opens the generic netlink socket for the link with index `ifindex`.
    fn open(ifindex: u32) -> Result<Self, Error> {
        let mut socket =
            NetlinkSocket::open(NETLINK_GENERIC).map_err(netlink_error("open a NETLINK_GENERIC socket"))?;
        let family = family_id(&mut socket).map_err(netlink_error("resolve the wireguard netlink family"))?;
        Ok(Self { ifindex, family, socket: Mutex::new(socket) })
    }

    fn socket(&self) -> MutexGuard<'_, NetlinkSocket> {
        self.socket.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn message(&self, payload: WireguardMessage) -> GenlMessage<WireguardMessage> {
        let mut message = GenlMessage::from_payload(payload);
        message.set_resolved_family_id(self.family);
        message
    }
}

impl WireGuardDevice for KernelDevice {
    /// Sends the changes as `WG_CMD_SET_DEVICE` messages in order (module `set_device`): the kernel
    /// applies each message whole, but a list that needs several is not atomic as the userspace
    /// device's is. Stops at the first error (the kernel's errno in [`Error::Netlink`]); the
    /// messages before it stay applied. `ReplaceAllowedIps` for a peer the device lacks does
    /// nothing (the kernel's `WGPEER_F_UPDATE_ONLY`) where the userspace device returns
    /// `PeerNotFound`.
    fn apply(&self, changes: &[Change]) -> Result<(), Error> {
        let mut messages = set_device::set_device_messages(self.ifindex, changes).into_iter();
        let mut socket = self.socket();
        let result = messages.by_ref().try_for_each(|message| {
            let answers = socket.request(self.message(message), 0);
            answers.map(drop).map_err(netlink_error("configure the WireGuard device"))
        });
        messages.for_each(|mut m| set_device::zeroize_keys(&mut m));
        result
    }

    /// One `WG_CMD_GET_DEVICE` dump (module `get_device`), asked again when the peers changed
    /// while it was read (`NLM_F_DUMP_INTR`, as `wg` does), at most 10 times in all.
    fn observe(&self) -> Result<DeviceState, Error> {
        let mut socket = self.socket();
        let mut attempt = 1;
        loop {
            let query = WireguardMessage {
                cmd: WireguardCmd::GetDevice,
                attributes: vec![WireguardAttribute::IfIndex(self.ifindex)],
            };
            match socket.request(self.message(query), NLM_F_DUMP) {
                Ok(answers) => {
                    return get_device::device_state(answers.into_iter().map(|m| m.payload).collect());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted && attempt < DUMP_ATTEMPTS => {
                    attempt += 1
                }
                Err(e) => return Err(Error::Netlink { what: "read the WireGuard device", source: e }),
            }
        }
    }

    /// The kernel has no command for it: it starts a handshake when a packet waits for a peer.
    fn initiate_handshakes(&self, _peers: &[PublicKey]) -> usize {
        0
    }

    /// Flow accounting is the userspace data path's: the kernel device counts none.
    fn set_flow_accounting(&self, _max_flows: Option<usize>) {}

    /// Always empty ([`Self::set_flow_accounting`]).
    fn take_flows(&self) -> FlowHarvest {
        FlowHarvest::default()
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Kernel
    }

    /// Deletes the link (`RTM_DELLINK`). Errors: [`Error::Netlink`] (`ENODEV` if it is gone).
    fn delete(&self) -> Result<(), Error> {
        link::delete(self.ifindex)
    }
}

/// The id of the `wireguard` generic netlink family (`CTRL_CMD_GETFAMILY`). `ENOENT`: the
/// kernel has no WireGuard.
fn family_id(socket: &mut NetlinkSocket) -> std::io::Result<u16> {
    let query =
        GenlCtrl { cmd: GenlCtrlCmd::GetFamily, nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())] };
    let answers = socket.request(GenlMessage::from_payload(query), 0)?;
    answers
        .iter()
        .flat_map(|a| &a.payload.nlas)
        .find_map(|nla| match nla {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no family id in the answer"))
}

impl Wipe for GenlMessage<WireguardMessage> {
    fn wipe(&mut self) {
        set_device::zeroize_keys(&mut self.payload);
    }
}

impl Wipe for GenlMessage<GenlCtrl> {
    fn wipe(&mut self) {}
}

impl Wipe for RouteNetlinkMessage {
    fn wipe(&mut self) {}
}
