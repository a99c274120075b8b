//! Writing a UAPI `get=1` reply.

use std::fmt::Write as _;
use std::io;
use std::time::UNIX_EPOCH;

use meshcrypt_keyexchange::SecretText;

use super::Dump;

/// Bytes of reply text formatted before they are written. The reply goes out in chunks of about
/// this size, so a get at 5,000 peers (about 2.5 MB of text, more in pod-IP mode) holds 64 KiB
/// of text at a time, not the whole reply.
const CHUNK: usize = 64 * 1024;

/// Writes the body of a `get=1` reply to `out`, `errno=0` and the blank line included, in chunks
/// of about [`CHUNK`] bytes formatted in a buffer that is zeroed after each write and when
/// dropped, since the text holds the private and pre-shared keys in hex.
///
/// # Errors
/// A failed write to `out` (the reply is then cut short; the client sees no `errno=` line).
pub fn write_get(dump: &Dump, out: &mut impl io::Write) -> io::Result<()> {
    let mut s = SecretText::with_capacity(CHUNK + 4096);
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
            send_full(&mut s, out)?;
        }
        send_full(&mut s, out)?;
    }
    s.push_str("errno=0\n\n");
    out.write_all(s.as_str().as_bytes())
}

/// Writes `text` to `out` and empties it (zeroed) once it holds [`CHUNK`] bytes or more.
fn send_full(text: &mut SecretText, out: &mut impl io::Write) -> io::Result<()> {
    if text.len() >= CHUNK {
        out.write_all(text.as_str().as_bytes())?;
        text.clear();
    }
    Ok(())
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
        let mut text = Vec::new();
        write_get(&dump, &mut text).unwrap();
        let expected = format!(
            "private_key={}\nlisten_port=51820\nfwmark=16\npublic_key={}\npreshared_key={}\n\
             protocol_version=1\nendpoint=198.18.0.2:51820\nlast_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=5\ntx_bytes=9\nrx_bytes=7\npersistent_keepalive_interval=25\n\
             allowed_ip=10.244.1.0/24\nerrno=0\n\n",
            "01".repeat(32),
            hex::encode(key.as_bytes()),
            "02".repeat(32)
        );
        assert_eq!(String::from_utf8(text).unwrap(), expected);
    }

    /// Records the size of each write.
    #[derive(Default)]
    struct Writes(Vec<u8>, Vec<usize>);

    impl io::Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(buf);
            self.1.push(buf.len());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// At 3,000 peers, and with one peer of 20,000 allowed IPs (pod-IP mode), the reply goes out
    /// whole, in writes of at most a chunk and a line, never as one buffer of the whole reply.
    #[test]
    fn a_large_reply_goes_out_in_chunks() {
        let peer = |n: u32, ips: u32| PeerState {
            public_key: PrivateKey::from_bytes(Zeroizing::new([(n % 251) as u8 + 1; 32])).public_key(),
            endpoint: None,
            allowed_ips: (0..ips)
                .map(|i| format!("10.{}.{}.{}/32", n % 200, i / 250, i % 250).parse().unwrap())
                .collect(),
            persistent_keepalive: None,
            preshared_key: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
        };
        for (what, peers) in [
            ("3,000 peers", (0..3000).map(|n| (peer(n, 1), None)).collect::<Vec<_>>()),
            ("one peer of 20,000 addresses", vec![(peer(0, 20_000), None)]),
        ] {
            let dump = Dump { private_key: Zeroizing::new([1; 32]), listen_port: 51820, fwmark: None, peers };
            let mut out = Writes::default();
            write_get(&dump, &mut out).unwrap();
            let text = String::from_utf8(out.0).unwrap();
            let peers = text.lines().filter(|l| l.starts_with("public_key=")).count();
            let ips = text.lines().filter(|l| l.starts_with("allowed_ip=")).count();
            let want_ips: usize = dump.peers.iter().map(|(p, _)| p.allowed_ips.len()).sum();
            assert_eq!((peers, ips), (dump.peers.len(), want_ips), "{what}");
            assert!(text.ends_with("errno=0\n\n"), "{what}");
            assert!(out.1.len() > 1, "{what}: {} bytes in one write", text.len());
            assert!(out.1.iter().all(|&n| n < CHUNK + 512), "{what}: {:?}", out.1);
        }
    }
}
