//! [`Change`]s as `WG_CMD_SET_DEVICE` messages for kernel WireGuard: in order, by delta (a peer
//! is added, changed or removed on its own, never by replacing every peer, which would reset
//! their sessions), split so no message outgrows what the kernel reads in one request.
//!
//! The kernel applies one message's device attributes (private key, port, fwmark, "replace
//! peers") before its peers (`wg_set_device`, drivers/net/wireguard/netlink.c), so a device change
//! after a peer change starts a new message: the list's order is kept.

use ipnet::IpNet;
use netlink_packet_core::Emitable;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute, WireguardCmd,
    WireguardDeviceFlags, WireguardMessage, WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};
use zeroize::Zeroize;

use crate::config::{Change, PeerConfig, PeerUpdate};

/// The most attribute bytes one message carries. wireguard-tools splits at its socket buffer
/// (`MNL_SOCKET_BUFFER_SIZE`, a page at most 8 KiB); the kernel takes more, but a bound keeps a
/// pass of 5,000 peers from becoming one request of megabytes.
pub(crate) const MAX_MESSAGE_BYTES: usize = 8192;

/// The messages that apply `changes` in order to the device with index `ifindex`. A peer with
/// more allowed IPs than fit one message continues in the next: the same key again, without
/// flags, so the kernel adds the rest to what the first part set.
pub(crate) fn set_device_messages(ifindex: u32, changes: &[Change]) -> Vec<WireguardMessage> {
    let mut plan = Plan { ifindex, done: Vec::new(), device: Vec::new(), peers: Vec::new(), bytes: 0 };
    for change in changes {
        match change {
            Change::SetPrivateKey(key) => plan.device(WireguardAttribute::PrivateKey(*key.to_bytes())),
            Change::SetListenPort(port) => plan.device(WireguardAttribute::ListenPort(*port)),
            Change::SetFwmark(mark) => plan.device(WireguardAttribute::Fwmark(mark.unwrap_or(0))),
            Change::RemoveAllPeers => {
                plan.device(WireguardAttribute::Flags(WireguardDeviceFlags::ReplacePeers))
            }
            Change::UpsertPeer(config) => plan.peer(upsert(config), &config.allowed_ips),
            Change::UpdatePeer(update) => plan.peer(update_attributes(update), &update.allowed_ips),
            Change::RemovePeer(key) => plan.peer(
                vec![
                    WireguardPeerAttribute::PublicKey(*key.as_bytes()),
                    WireguardPeerAttribute::Flags(WireguardPeerFlags::RemoveMe),
                ],
                &[],
            ),
            Change::ReplaceAllowedIps { public_key, allowed_ips } => plan.peer(
                vec![
                    WireguardPeerAttribute::PublicKey(*public_key.as_bytes()),
                    WireguardPeerAttribute::Flags(
                        WireguardPeerFlags::UpdateOnly | WireguardPeerFlags::ReplaceAllowedIps,
                    ),
                ],
                allowed_ips,
            ),
        }
    }
    plan.finish()
}

/// Zeroes the private and pre-shared keys a message holds (once it is sent or read).
pub(crate) fn zeroize_keys(message: &mut WireguardMessage) {
    for attribute in &mut message.attributes {
        match attribute {
            WireguardAttribute::PrivateKey(key) => key.zeroize(),
            WireguardAttribute::Peers(peers) => {
                for peer in peers {
                    for attribute in &mut peer.0 {
                        if let WireguardPeerAttribute::PresharedKey(key) = attribute {
                            key.zeroize();
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// A peer brought to exactly `config`: its allowed IPs replaced, its keepalive and pre-shared key
/// set or cleared (0 and the zero key are the kernel's "none"), its endpoint set if given.
fn upsert(config: &PeerConfig) -> Vec<WireguardPeerAttribute> {
    let mut attributes = vec![
        WireguardPeerAttribute::PublicKey(*config.public_key.as_bytes()),
        WireguardPeerAttribute::Flags(WireguardPeerFlags::ReplaceAllowedIps),
        WireguardPeerAttribute::PersistentKeepalive(config.persistent_keepalive.unwrap_or(0)),
        WireguardPeerAttribute::PresharedKey(
            config.preshared_key.as_ref().map_or([0; 32], |k| *k.as_bytes()),
        ),
    ];
    if let Some(endpoint) = config.endpoint {
        attributes.push(WireguardPeerAttribute::Endpoint(endpoint));
    }
    attributes
}

/// The fields `update` gives, with its flags.
fn update_attributes(update: &PeerUpdate) -> Vec<WireguardPeerAttribute> {
    let mut flags = WireguardPeerFlags::empty();
    if update.remove {
        flags |= WireguardPeerFlags::RemoveMe;
    }
    if update.update_only {
        flags |= WireguardPeerFlags::UpdateOnly;
    }
    if update.replace_allowed_ips {
        flags |= WireguardPeerFlags::ReplaceAllowedIps;
    }
    let mut attributes = vec![WireguardPeerAttribute::PublicKey(*update.public_key.as_bytes())];
    if !flags.is_empty() {
        attributes.push(WireguardPeerAttribute::Flags(flags));
    }
    if update.remove {
        return attributes;
    }
    if let Some(keepalive) = update.persistent_keepalive {
        attributes.push(WireguardPeerAttribute::PersistentKeepalive(keepalive.unwrap_or(0)));
    }
    if let Some(psk) = &update.preshared_key {
        attributes
            .push(WireguardPeerAttribute::PresharedKey(psk.as_ref().map_or([0; 32], |k| *k.as_bytes())));
    }
    if let Some(endpoint) = update.endpoint {
        attributes.push(WireguardPeerAttribute::Endpoint(endpoint));
    }
    attributes
}

/// One allowed IP as the kernel reads it: family, address, prefix length.
fn allowed_ip(net: &IpNet) -> WireguardAllowedIp {
    let family = match net {
        IpNet::V4(_) => WireguardAddressFamily::Ipv4,
        IpNet::V6(_) => WireguardAddressFamily::Ipv6,
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(net.addr()),
        WireguardAllowedIpAttr::Cidr(net.prefix_len()),
    ])
}

/// The messages being built: those done, and the open one's device attributes and peers.
struct Plan {
    ifindex: u32,
    done: Vec<WireguardMessage>,
    device: Vec<WireguardAttribute>,
    peers: Vec<WireguardPeer>,
    bytes: usize,
}

impl Plan {
    /// A device attribute: after a peer, or when the open message has it already, in a new message.
    fn device(&mut self, attribute: WireguardAttribute) {
        let kind = std::mem::discriminant(&attribute);
        if !self.peers.is_empty() || self.device.iter().any(|a| std::mem::discriminant(a) == kind) {
            self.close();
        }
        self.bytes += attribute.buffer_len();
        self.device.push(attribute);
    }

    /// A peer's attributes and its allowed IPs, over as many messages as they need.
    fn peer(&mut self, attributes: Vec<WireguardPeerAttribute>, allowed_ips: &[IpNet]) {
        let key = attributes[0].clone();
        let mut peer = WireguardPeer(attributes);
        let mut ips = Vec::new();
        let mut bytes = peer.buffer_len();
        if self.bytes + bytes > MAX_MESSAGE_BYTES {
            self.close();
        }
        for net in allowed_ips {
            let ip = allowed_ip(net);
            // The list's own header, once.
            let more = ip.buffer_len() + if ips.is_empty() { 4 } else { 0 };
            if self.bytes + bytes + more > MAX_MESSAGE_BYTES && !(ips.is_empty() && peer.0.len() == 1) {
                peer.0.push(WireguardPeerAttribute::AllowedIps(std::mem::take(&mut ips)));
                self.push(std::mem::replace(&mut peer, WireguardPeer(vec![key.clone()])));
                self.close();
                bytes = peer.buffer_len();
            }
            bytes += ip.buffer_len() + if ips.is_empty() { 4 } else { 0 };
            ips.push(ip);
        }
        if !ips.is_empty() {
            peer.0.push(WireguardPeerAttribute::AllowedIps(ips));
        }
        self.push(peer);
    }

    fn push(&mut self, peer: WireguardPeer) {
        self.bytes += peer.buffer_len();
        self.peers.push(peer);
    }

    /// Ends the open message, if it holds anything.
    fn close(&mut self) {
        if self.device.is_empty() && self.peers.is_empty() {
            return;
        }
        let mut attributes = vec![WireguardAttribute::IfIndex(self.ifindex)];
        attributes.append(&mut self.device);
        if !self.peers.is_empty() {
            attributes.push(WireguardAttribute::Peers(std::mem::take(&mut self.peers)));
        }
        self.done.push(WireguardMessage { cmd: WireguardCmd::SetDevice, attributes });
        self.bytes = 0;
    }

    fn finish(mut self) -> Vec<WireguardMessage> {
        self.close();
        std::mem::take(&mut self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshcrypt_keyexchange::{PresharedKey, PrivateKey};

    fn key(n: u8) -> meshcrypt_keyexchange::PublicKey {
        PrivateKey::from_bytes(zeroize::Zeroizing::new([n; 32])).public_key()
    }

    fn peer_config(n: u8, ips: &[&str]) -> PeerConfig {
        PeerConfig {
            public_key: key(n),
            endpoint: Some("198.18.0.2:51820".parse().unwrap()),
            allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            persistent_keepalive: None,
            preshared_key: None,
        }
    }

    /// A message's shape: its device attributes' kinds, and its peers as (flags, allowed IPs).
    type Shape = (Vec<&'static str>, Vec<(u32, usize)>);

    fn shape(messages: &[WireguardMessage]) -> Vec<Shape> {
        messages
            .iter()
            .map(|m| {
                assert!(matches!(m.attributes[0], WireguardAttribute::IfIndex(7)), "{m:?}");
                let mut device = Vec::new();
                let mut peers = Vec::new();
                for a in &m.attributes[1..] {
                    match a {
                        WireguardAttribute::PrivateKey(_) => device.push("key"),
                        WireguardAttribute::ListenPort(_) => device.push("port"),
                        WireguardAttribute::Fwmark(_) => device.push("fwmark"),
                        WireguardAttribute::Flags(_) => device.push("replace peers"),
                        WireguardAttribute::Peers(list) => {
                            for p in list {
                                let flags = p.0.iter().find_map(|a| match a {
                                    WireguardPeerAttribute::Flags(f) => Some(f.bits()),
                                    _ => None,
                                });
                                let ips = p.0.iter().find_map(|a| match a {
                                    WireguardPeerAttribute::AllowedIps(ips) => Some(ips.len()),
                                    _ => None,
                                });
                                peers.push((flags.unwrap_or(0), ips.unwrap_or(0)));
                            }
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                (device, peers)
            })
            .collect()
    }

    const REMOVE: u32 = 1;
    const REPLACE_IPS: u32 = 2;
    const UPDATE_ONLY: u32 = 4;

    /// Changes become messages in their order: device attributes first in a message, so one
    /// after a peer (or repeated) opens the next; each peer change its own flags.
    #[test]
    fn changes_become_messages_in_order() {
        let private = || PrivateKey::from_bytes(zeroize::Zeroizing::new([9; 32]));
        let mut update = PeerUpdate::new(key(3));
        update.update_only = true;
        update.endpoint = Some("198.18.0.3:51820".parse().unwrap());
        let cases: Vec<(&str, Vec<Change>, Vec<Shape>)> = vec![
            ("nothing", vec![], vec![]),
            (
                "the device's settings: one message",
                vec![Change::SetPrivateKey(private()), Change::SetListenPort(51820), Change::SetFwmark(None)],
                vec![(vec!["key", "port", "fwmark"], vec![])],
            ),
            (
                "a device change after a peer: a second message",
                vec![
                    Change::UpsertPeer(peer_config(1, &["10.244.1.0/24", "198.18.0.2/32"])),
                    Change::SetListenPort(1),
                ],
                vec![(vec![], vec![(REPLACE_IPS, 2)]), (vec!["port"], vec![])],
            ),
            (
                "the same device attribute twice: two messages",
                vec![Change::SetListenPort(1), Change::SetListenPort(2)],
                vec![(vec!["port"], vec![]), (vec!["port"], vec![])],
            ),
            (
                "peers by delta, in one message",
                vec![
                    Change::RemovePeer(key(2)),
                    Change::UpdatePeer(update),
                    Change::ReplaceAllowedIps {
                        public_key: key(4),
                        allowed_ips: vec!["10.244.4.0/24".parse().unwrap()],
                    },
                ],
                vec![(vec![], vec![(REMOVE, 0), (UPDATE_ONLY, 0), (UPDATE_ONLY | REPLACE_IPS, 1)])],
            ),
            (
                "every peer removed, then one added",
                vec![Change::RemoveAllPeers, Change::UpsertPeer(peer_config(1, &["10.244.1.0/24"]))],
                vec![(vec!["replace peers"], vec![(REPLACE_IPS, 1)])],
            ),
        ];
        for (what, changes, expected) in cases {
            assert_eq!(shape(&set_device_messages(7, &changes)), expected, "{what}");
        }
    }

    /// A peer with more allowed IPs than one message holds goes on in the next under its key
    /// alone; every message stays within the bound and no address is lost or repeated.
    #[test]
    fn a_long_allowed_ip_list_is_split() {
        let ips: Vec<String> = (0..2000).map(|i| format!("10.244.{}.{}/32", i / 250, i % 250)).collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let changes = [Change::UpsertPeer(peer_config(1, &ips)), Change::RemovePeer(key(2))];
        let messages = set_device_messages(7, &changes);
        assert!(messages.len() > 2, "{} messages", messages.len());
        let shapes = shape(&messages);
        assert_eq!(shapes[0].1, [(REPLACE_IPS, shapes[0].1[0].1)], "the first part replaces");
        let mut total = 0;
        for (i, (device, peers)) in shapes.iter().enumerate() {
            assert!(device.is_empty());
            total += peers.iter().map(|p| p.1).sum::<usize>();
            if i > 0 && i < shapes.len() - 1 {
                assert_eq!(peers, &[(0, peers[0].1)], "message {i}: a continuation adds, replaces nothing");
            }
            assert!(
                messages[i].buffer_len() <= MAX_MESSAGE_BYTES + 64,
                "message {i}: {}",
                messages[i].buffer_len()
            );
        }
        assert_eq!(total, 2000);
        assert_eq!(shapes.last().unwrap().1.last(), Some(&(REMOVE, 0)), "the removal follows, in order");
    }

    /// Keys in a message are zeroed by `zeroize_keys`.
    #[test]
    fn keys_are_zeroed() {
        let mut config = peer_config(1, &[]);
        config.preshared_key = Some(PresharedKey::from_bytes([5; 32]));
        let changes = [
            Change::SetPrivateKey(PrivateKey::from_bytes(zeroize::Zeroizing::new([9; 32]))),
            Change::UpsertPeer(config),
        ];
        let mut messages = set_device_messages(7, &changes);
        let secrets = |m: &WireguardMessage| {
            let mut found = Vec::new();
            for a in &m.attributes {
                match a {
                    WireguardAttribute::PrivateKey(k) => found.push(*k),
                    WireguardAttribute::Peers(peers) => {
                        for p in peers {
                            for a in &p.0 {
                                if let WireguardPeerAttribute::PresharedKey(k) = a {
                                    found.push(*k);
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            found
        };
        assert_eq!(messages.len(), 1);
        assert_eq!(secrets(&messages[0]).len(), 2);
        assert!(secrets(&messages[0]).iter().all(|k| k != &[0; 32]));
        zeroize_keys(&mut messages[0]);
        assert_eq!(secrets(&messages[0]), [[0; 32], [0; 32]]);
    }
}
