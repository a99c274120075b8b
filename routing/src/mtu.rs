//! The tunnel MTU: the underlay's MTU less WireGuard's overhead for the underlay's address family.

/// WireGuard's per-packet overhead over an IPv4 underlay: IPv4 (20) + UDP (8) + WireGuard (32).
pub const OVERHEAD_IPV4: u32 = 60;
/// Over an IPv6 underlay: IPv6 (40) + UDP (8) + WireGuard (32).
pub const OVERHEAD_IPV6: u32 = 80;
/// The smallest MTU an IPv6 link may have; a tunnel carrying IPv6 must offer at least this.
pub const IPV6_MIN_MTU: u32 = 1280;
/// The smallest tunnel MTU meshcrypt will configure.
pub const MIN_TUNNEL_MTU: u32 = 576;

/// The tunnel MTU for an underlay of `underlay_mtu` bytes, or `None` if the underlay is too small
/// to carry a useful tunnel.
pub fn tunnel_mtu(underlay_mtu: u32, underlay_is_ipv6: bool) -> Option<u32> {
    let overhead = if underlay_is_ipv6 { OVERHEAD_IPV6 } else { OVERHEAD_IPV4 };
    underlay_mtu.checked_sub(overhead).filter(|mtu| *mtu >= MIN_TUNNEL_MTU)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_mtu_table() {
        for (underlay, v6, want) in [
            (1500, false, Some(1440)),
            (1500, true, Some(1420)),
            (9001, false, Some(8941)),
            (9001, true, Some(8921)),
            (8500, false, Some(8440)),
            (636, false, Some(576)),
            (635, false, None),
            (40, true, None),
        ] {
            assert_eq!(tunnel_mtu(underlay, v6), want, "{underlay} v6={v6}");
        }
    }
}
