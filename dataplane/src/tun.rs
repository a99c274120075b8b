//! Creating (or opening) the TUN interface through `tun-rs`, without touching its addresses,
//! routes or link state: the routing crate owns those ([`crate::Device::create`] sets its MTU).

use tun_rs::{DeviceBuilder, SyncDevice};

use crate::error::Error;

/// Linux's `IFNAMSIZ` less the NUL.
const MAX_IFNAME: usize = 15;

/// Checks an interface name the way the kernel would, so the error names the problem.
pub(crate) fn validate_ifname(ifname: &str) -> Result<(), Error> {
    let ok = !ifname.is_empty()
        && ifname.len() <= MAX_IFNAME
        && ifname != "."
        && ifname != ".."
        && !ifname.bytes().any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok { Ok(()) } else { Err(Error::InvalidIfname(ifname.to_owned())) }
}

/// Creates the layer-3 TUN interface `ifname` (no packet-info header, left in its current link
/// state) and returns it with its interface index.
///
/// The interface is opened with offloads (`IFF_VNET_HDR`, TSO and, where the kernel has it, USO):
/// the kernel hands over TCP super-packets of up to 64 KiB that the send path splits, and takes
/// coalesced ones on the receive path. A kernel that refuses offloads gets a plain TUN.
pub(crate) fn open(ifname: &str) -> Result<(SyncDevice, u32), Error> {
    validate_ifname(ifname)?;
    let err = |source| Error::Tun { ifname: ifname.to_owned(), source };
    let build = |offload: bool| {
        DeviceBuilder::new().name(ifname).inherit_enable_state().offload(offload).build_sync()
    };
    let dev = match build(true) {
        Ok(dev) => dev,
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Err(err(e)),
        Err(e) => {
            tracing::warn!(ifname, error = %e, "TUN offloads unavailable; packets go one at a time");
            build(false).map_err(err)?
        }
    };
    dev.set_nonblocking(true).map_err(err)?;
    let ifindex = dev.if_index().map_err(err)?;
    Ok((dev, ifindex))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for (name, ok) in [
            ("meshcrypt0", true),
            ("a", true),
            ("0123456789abcde", true),
            ("0123456789abcdef", false),
            ("", false),
            ("a/b", false),
            ("a b", false),
            ("..", false),
        ] {
            assert_eq!(validate_ifname(name).is_ok(), ok, "{name:?}");
        }
    }
}
