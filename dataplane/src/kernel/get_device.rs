//! A `WG_CMD_GET_DEVICE` dump read back as a [`DeviceState`]: the device's attributes from its
//! first message, the peers from all of them (a peer whose allowed IPs do not fit one message
//! continues, under the same key, at the head of the next: `wg_get_device_dump`,
//! drivers/net/wireguard/netlink.c), sorted by key as every backend reports them.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use meshcrypt_keyexchange::{PresharedKey, PublicKey};
use netlink_packet_wireguard::{
    WireguardAllowedIpAttr, WireguardAttribute, WireguardMessage, WireguardPeer, WireguardPeerAttribute,
};

use crate::error::Error;
use crate::kernel::set_device::zeroize_keys;
use crate::state::{DeviceCounters, DeviceState, PeerState};

/// The state the dump `messages` describe. The keys they carry (the device's private key, the
/// peers' pre-shared keys) are zeroed here; a pre-shared key is reported by its fingerprint.
/// Errors: [`Error::UnexpectedReply`] when the dump has no device, no public key (the device has
/// no private key yet), or a peer, key or allowed IP that does not parse.
pub(crate) fn device_state(mut messages: Vec<WireguardMessage>) -> Result<DeviceState, Error> {
    let state = read(&messages);
    for message in &mut messages {
        zeroize_keys(message);
    }
    state
}

fn read(messages: &[WireguardMessage]) -> Result<DeviceState, Error> {
    let mut ifname = None;
    let mut ifindex = None;
    let mut public_key = None;
    let mut listen_port = 0;
    let mut fwmark = None;
    let mut peers: BTreeMap<PublicKey, PeerState> = BTreeMap::new();
    for message in messages {
        for attribute in &message.attributes {
            match attribute {
                WireguardAttribute::IfName(name) => ifname = Some(name.clone()),
                WireguardAttribute::IfIndex(index) => ifindex = Some(*index),
                WireguardAttribute::PublicKey(key) => public_key = Some(key_of(key)?),
                WireguardAttribute::ListenPort(port) => listen_port = *port,
                WireguardAttribute::Fwmark(mark) => fwmark = (*mark != 0).then_some(*mark),
                WireguardAttribute::Peers(list) => {
                    for peer in list {
                        merge(&mut peers, peer)?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(DeviceState {
        backend: crate::BackendKind::Kernel,
        ifname: ifname.ok_or(Error::UnexpectedReply("a WireGuard device without a name"))?,
        ifindex: ifindex.ok_or(Error::UnexpectedReply("a WireGuard device without an index"))?,
        public_key: public_key.ok_or(Error::UnexpectedReply("a WireGuard device without a private key"))?,
        listen_port,
        fwmark,
        peers: peers.into_values().collect(),
        counters: DeviceCounters::default(),
    })
}

/// Adds `peer` to `peers`, or its allowed IPs to the entry it continues.
fn merge(peers: &mut BTreeMap<PublicKey, PeerState>, peer: &WireguardPeer) -> Result<(), Error> {
    let key = peer.0.iter().find_map(|a| match a {
        WireguardPeerAttribute::PublicKey(key) => Some(key),
        _ => None,
    });
    let key = key_of(key.ok_or(Error::UnexpectedReply("a WireGuard peer without a public key"))?)?;
    let state = peers.entry(key).or_insert_with(|| PeerState::new(key));
    for attribute in &peer.0 {
        match attribute {
            WireguardPeerAttribute::Endpoint(endpoint) => state.endpoint = Some(*endpoint),
            WireguardPeerAttribute::PersistentKeepalive(seconds) => {
                state.persistent_keepalive = (*seconds != 0).then_some(*seconds);
            }
            WireguardPeerAttribute::PresharedKey(bytes) => {
                let psk = PresharedKey::from_bytes(*bytes);
                state.preshared_key = (!psk.is_zero()).then(|| psk.fingerprint());
            }
            WireguardPeerAttribute::LastHandshake(time) => {
                state.last_handshake = (time.seconds != 0 || time.nano_seconds != 0).then(|| {
                    let nanos = u32::try_from(time.nano_seconds).unwrap_or(0);
                    SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(time.seconds).unwrap_or(0), nanos)
                });
            }
            WireguardPeerAttribute::RxBytes(bytes) => state.rx_bytes = *bytes,
            WireguardPeerAttribute::TxBytes(bytes) => state.tx_bytes = *bytes,
            WireguardPeerAttribute::AllowedIps(ips) => {
                for ip in ips {
                    state.allowed_ips.push(allowed_ip(&ip.0)?);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn allowed_ip(attributes: &[WireguardAllowedIpAttr]) -> Result<IpNet, Error> {
    let address = attributes.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::IpAddr(address) => Some(*address),
        _ => None,
    });
    let prefix = attributes.iter().find_map(|a| match a {
        WireguardAllowedIpAttr::Cidr(prefix) => Some(*prefix),
        _ => None,
    });
    match (address, prefix) {
        (Some(address), Some(prefix)) => IpNet::new(address, prefix)
            .map_err(|_| Error::UnexpectedReply("an allowed IP with a prefix longer than its address")),
        _ => Err(Error::UnexpectedReply("an allowed IP without an address or a prefix length")),
    }
}

fn key_of(bytes: &[u8; 32]) -> Result<PublicKey, Error> {
    PublicKey::from_bytes(*bytes).map_err(Error::Key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_keyexchange::PrivateKey;
    use netlink_packet_wireguard::{
        WireguardAddressFamily, WireguardAllowedIp, WireguardCmd, WireguardTimeSpec,
    };

    fn key(n: u8) -> PublicKey {
        PrivateKey::from_bytes(zeroize::Zeroizing::new([n; 32])).public_key()
    }

    fn ip(s: &str) -> WireguardAllowedIp {
        let net: IpNet = s.parse().unwrap();
        WireguardAllowedIp(vec![
            WireguardAllowedIpAttr::Family(WireguardAddressFamily::Ipv4),
            WireguardAllowedIpAttr::IpAddr(net.addr()),
            WireguardAllowedIpAttr::Cidr(net.prefix_len()),
        ])
    }

    fn message(attributes: Vec<WireguardAttribute>) -> WireguardMessage {
        WireguardMessage { cmd: WireguardCmd::GetDevice, attributes }
    }

    /// A dump in two parts, a peer's allowed IPs continued across them, gives one peer each,
    /// sorted by key, with the kernel's "none" values (0, the zero key, time 0) as `None`.
    #[test]
    fn a_dump_in_parts_reads_as_one_device() {
        let (a, b) = (key(1), key(2));
        let (first, second) = if a < b { (b, a) } else { (a, b) };
        let messages = vec![
            message(vec![
                WireguardAttribute::IfIndex(7),
                WireguardAttribute::IfName("meshcrypt0".into()),
                WireguardAttribute::PrivateKey([9; 32]),
                WireguardAttribute::PublicKey(*key(9).as_bytes()),
                WireguardAttribute::ListenPort(51820),
                WireguardAttribute::Fwmark(0),
                WireguardAttribute::Peers(vec![
                    WireguardPeer(vec![
                        WireguardPeerAttribute::PublicKey(*first.as_bytes()),
                        WireguardPeerAttribute::PresharedKey([0; 32]),
                        WireguardPeerAttribute::PersistentKeepalive(0),
                        WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                            seconds: 0,
                            nano_seconds: 0,
                        }),
                        WireguardPeerAttribute::AllowedIps(vec![ip("10.244.1.0/24")]),
                    ]),
                    WireguardPeer(vec![
                        WireguardPeerAttribute::PublicKey(*second.as_bytes()),
                        WireguardPeerAttribute::PresharedKey([5; 32]),
                        WireguardPeerAttribute::PersistentKeepalive(25),
                        WireguardPeerAttribute::Endpoint("198.18.0.3:51820".parse().unwrap()),
                        WireguardPeerAttribute::LastHandshake(WireguardTimeSpec {
                            seconds: 100,
                            nano_seconds: 5,
                        }),
                        WireguardPeerAttribute::RxBytes(10),
                        WireguardPeerAttribute::TxBytes(20),
                        WireguardPeerAttribute::AllowedIps(vec![ip("10.244.2.0/24")]),
                    ]),
                ]),
            ]),
            message(vec![
                WireguardAttribute::IfIndex(7),
                WireguardAttribute::Peers(vec![WireguardPeer(vec![
                    WireguardPeerAttribute::PublicKey(*second.as_bytes()),
                    WireguardPeerAttribute::AllowedIps(vec![ip("198.18.0.3/32")]),
                ])]),
            ]),
        ];
        let state = device_state(messages).unwrap();
        assert_eq!(
            (state.ifname.as_str(), state.ifindex, state.listen_port, state.fwmark),
            ("meshcrypt0", 7, 51820, None)
        );
        assert_eq!(state.public_key, key(9));
        let keys: Vec<PublicKey> = state.peers.iter().map(|p| p.public_key).collect();
        assert_eq!(keys, [second, first], "sorted by key");
        let [lower, higher] = [&state.peers[0], &state.peers[1]];
        assert_eq!(
            lower.allowed_ips,
            ["10.244.2.0/24".parse::<IpNet>().unwrap(), "198.18.0.3/32".parse().unwrap()]
        );
        assert_eq!(lower.persistent_keepalive, Some(25));
        assert_eq!(lower.preshared_key, Some(PresharedKey::from_bytes([5; 32]).fingerprint()));
        assert_eq!(lower.last_handshake, Some(SystemTime::UNIX_EPOCH + Duration::new(100, 5)));
        assert_eq!((lower.rx_bytes, lower.tx_bytes), (10, 20));
        assert_eq!(lower.endpoint, Some("198.18.0.3:51820".parse().unwrap()));
        assert_eq!(
            (higher.persistent_keepalive, &higher.preshared_key, higher.last_handshake, higher.endpoint),
            (None, &None, None, None)
        );
    }

    /// What the kernel always sends, missing, is an error, not a device with holes.
    #[test]
    fn a_dump_without_a_key_is_an_error() {
        let cases = [
            (
                "no private key yet",
                vec![WireguardAttribute::IfIndex(7), WireguardAttribute::IfName("m".into())],
            ),
            (
                "no name",
                vec![WireguardAttribute::IfIndex(7), WireguardAttribute::PublicKey(*key(9).as_bytes())],
            ),
            (
                "a peer without a key",
                vec![
                    WireguardAttribute::IfIndex(7),
                    WireguardAttribute::IfName("m".into()),
                    WireguardAttribute::PublicKey(*key(9).as_bytes()),
                    WireguardAttribute::Peers(vec![WireguardPeer(vec![WireguardPeerAttribute::RxBytes(1)])]),
                ],
            ),
        ];
        for (what, attributes) in cases {
            assert!(
                matches!(device_state(vec![message(attributes)]), Err(Error::UnexpectedReply(_))),
                "{what}"
            );
        }
    }
}
