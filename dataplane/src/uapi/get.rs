//! Formatting a UAPI `get=1` reply.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use meshcrypt_keyexchange::SecretText;

use super::Dump;

/// The body of a `get=1` reply, `errno=0` and the blank line included. Zeroized when dropped,
/// since it holds the private key in hex.
pub fn format_get(dump: &Dump) -> SecretText {
    let mut out = SecretText::with_capacity(256 + 256 * dump.peers.len());
    let s = &mut out;
    // Keys go in as hex straight into the zeroized text, never through a temporary string.
    s.push_str("private_key=");
    s.push_hex(dump.private_key.as_slice());
    s.push_str("\n");
    let _ = writeln!(s, "listen_port={}", dump.listen_port);
    if let Some(mark) = dump.fwmark.filter(|m| *m != 0) {
        let _ = writeln!(s, "fwmark={mark}");
    }
    for (peer, psk) in &dump.peers {
        let _ = writeln!(s, "public_key={}", hex::encode(peer.public_key.as_bytes()));
        if let Some(psk) = psk {
            s.push_str("preshared_key=");
            s.push_hex(psk.as_bytes());
            s.push_str("\n");
        }
        let _ = writeln!(s, "protocol_version=1");
        if let Some(ep) = peer.endpoint {
            let _ = writeln!(s, "endpoint={ep}");
        }
        let (sec, nsec) = peer
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        let _ = writeln!(s, "last_handshake_time_sec={sec}");
        let _ = writeln!(s, "last_handshake_time_nsec={nsec}");
        let _ = writeln!(s, "tx_bytes={}", peer.tx_bytes);
        let _ = writeln!(s, "rx_bytes={}", peer.rx_bytes);
        let _ = writeln!(s, "persistent_keepalive_interval={}", peer.persistent_keepalive.unwrap_or(0));
        for net in &peer.allowed_ips {
            let _ = writeln!(s, "allowed_ip={net}");
        }
    }
    s.push_str("errno=0\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PeerState;
    use meshcrypt_keyexchange::PresharedKey;
    use meshcrypt_keyexchange::PrivateKey;
    use std::time::Duration;
    use zeroize::Zeroizing;

    #[test]
    fn formats_device_and_peers() {
        let key = PrivateKey::generate().public_key();
        let peer = PeerState {
            public_key: key,
            endpoint: Some("198.18.0.2:51820".parse().unwrap()),
            allowed_ips: vec!["10.244.1.0/24".parse().unwrap()],
            persistent_keepalive: Some(25),
            preshared_key: Some("sha256:0000000000000000".into()),
            last_handshake: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)),
            rx_bytes: 7,
            tx_bytes: 9,
        };
        let dump = Dump {
            private_key: Zeroizing::new([1; 32]),
            listen_port: 51820,
            fwmark: Some(0x10),
            peers: vec![(peer, Some(PresharedKey::from_bytes([2; 32])))],
        };
        let text = format_get(&dump);
        let expected = format!(
            "private_key={}\nlisten_port=51820\nfwmark=16\npublic_key={}\npreshared_key={}\n\
             protocol_version=1\nendpoint=198.18.0.2:51820\nlast_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=5\ntx_bytes=9\nrx_bytes=7\npersistent_keepalive_interval=25\n\
             allowed_ip=10.244.1.0/24\nerrno=0\n\n",
            "01".repeat(32),
            hex::encode(key.as_bytes()),
            "02".repeat(32)
        );
        assert_eq!(text.as_str(), expected);
    }
}
