//! Parsing a UAPI `set=1` request into typed [`Change`]s: a pure function, so every rule is a
//! table test.

use std::net::SocketAddr;

use ipnet::IpNet;
use meshcrypt_keyexchange::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

use crate::config::{Change, PeerUpdate};
use crate::error::Error;
use meshcrypt_keyexchange::PresharedKey;

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidUapi(msg.into())
}

/// Parses the `key=value` lines that follow `set=1` (up to the blank line, which may be omitted).
/// Device keys must come before the first `public_key=`; every key after it belongs to that peer.
/// Errors are [`Error::InvalidUapi`] or [`Error::Key`], both answered with `errno=22` (EINVAL).
pub fn parse_set(body: &str) -> Result<Vec<Change>, Error> {
    let mut changes = Vec::new();
    let mut peer: Option<PeerUpdate> = None;
    for line in body.lines() {
        if line.is_empty() {
            break;
        }
        let (key, value) =
            line.split_once('=').ok_or_else(|| invalid(format!("line without '=': {line:?}")))?;
        match (key, peer.as_mut()) {
            ("public_key", _) => {
                changes.extend(peer.take().map(Change::UpdatePeer));
                peer = Some(PeerUpdate::new(PublicKey::from_bytes(*hex32(key, value)?)?));
            }
            ("private_key", None) => changes.push(Change::SetPrivateKey(private_key(value)?)),
            ("listen_port", None) => changes.push(Change::SetListenPort(number(key, value)?)),
            ("fwmark", None) => {
                let mark: u32 = number(key, value)?;
                changes.push(Change::SetFwmark((mark != 0).then_some(mark)));
            }
            ("replace_peers", None) => {
                flag(key, value)?;
                changes.push(Change::RemoveAllPeers);
            }
            ("remove", Some(p)) => p.remove = flag(key, value)?,
            ("update_only", Some(p)) => p.update_only = flag(key, value)?,
            ("preshared_key", Some(p)) => {
                let psk = PresharedKey::from_bytes(*hex32(key, value)?);
                p.preshared_key = Some((!psk.is_zero()).then_some(psk));
            }
            ("endpoint", Some(p)) => {
                let ep: SocketAddr = value.parse().map_err(|_| invalid(format!("bad endpoint {value:?}")))?;
                p.endpoint = Some(ep);
            }
            ("persistent_keepalive_interval", Some(p)) => {
                let k: u16 = number(key, value)?;
                p.persistent_keepalive = Some((k != 0).then_some(k));
            }
            ("replace_allowed_ips", Some(p)) => {
                p.replace_allowed_ips = flag(key, value)?;
                p.allowed_ips.clear();
            }
            ("allowed_ip", Some(p)) => {
                let net =
                    value.parse::<IpNet>().map_err(|e| invalid(format!("bad allowed_ip {value:?}: {e}")))?;
                p.allowed_ips.push(net.trunc());
            }
            ("protocol_version", Some(_)) => {
                if value != "1" {
                    return Err(invalid(format!("unsupported protocol_version {value:?}")));
                }
            }
            (key, Some(_)) => return Err(invalid(format!("unknown peer key {key:?}"))),
            (key, None) => return Err(invalid(format!("unknown device key {key:?}"))),
        }
    }
    changes.extend(peer.map(Change::UpdatePeer));
    Ok(changes)
}

fn hex32(key: &str, value: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(value, bytes.as_mut_slice())
        .map_err(|_| invalid(format!("{key} is not 64 hex digits")))?;
    Ok(bytes)
}

fn private_key(value: &str) -> Result<PrivateKey, Error> {
    let bytes = hex32("private_key", value)?;
    if bytes.iter().all(|b| *b == 0) {
        return Err(invalid("removing the private key is not supported"));
    }
    Ok(PrivateKey::from_bytes(bytes))
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, Error> {
    value.parse().map_err(|_| invalid(format!("bad number for {key}: {value:?}")))
}

fn flag(key: &str, value: &str) -> Result<bool, Error> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(format!("{key} must be true or false, not {value:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk() -> PublicKey {
        PrivateKey::generate().public_key()
    }

    fn hexkey(k: &PublicKey) -> String {
        hex::encode(k.as_bytes())
    }

    #[test]
    fn good_input() {
        let (a, b) = (pk(), pk());
        let sk = PrivateKey::generate();
        let body = format!(
            "private_key={}\nlisten_port=51821\nfwmark=0\nreplace_peers=true\n\
             public_key={}\npreshared_key={}\nendpoint=198.18.0.2:51820\n\
             persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=10.244.1.7/24\n\
             allowed_ip=fd00::/64\nprotocol_version=1\n\
             public_key={}\nremove=true\n\n",
            hex::encode(sk.to_bytes().as_slice()),
            hexkey(&a),
            "ab".repeat(32),
            hexkey(&b)
        );
        let changes = parse_set(&body).unwrap();
        assert_eq!(changes.len(), 6, "{changes:?}");
        assert!(matches!(&changes[0], Change::SetPrivateKey(k) if k.public_key() == sk.public_key()));
        assert!(matches!(changes[1], Change::SetListenPort(51821)));
        assert!(matches!(changes[2], Change::SetFwmark(None)));
        assert!(matches!(changes[3], Change::RemoveAllPeers));
        let Change::UpdatePeer(u) = &changes[4] else { panic!("{:?}", changes[4]) };
        assert_eq!(u.public_key, a);
        assert_eq!(u.endpoint, Some("198.18.0.2:51820".parse().unwrap()));
        assert_eq!(u.persistent_keepalive, Some(Some(25)));
        assert_eq!(u.preshared_key, Some(Some(PresharedKey::from_bytes([0xab; 32]))));
        assert!(u.replace_allowed_ips && !u.remove);
        // Host bits are masked, as WireGuard does.
        assert_eq!(
            u.allowed_ips,
            vec!["10.244.1.0/24".parse::<IpNet>().unwrap(), "fd00::/64".parse().unwrap()]
        );
        let Change::UpdatePeer(r) = &changes[5] else { panic!() };
        assert!(r.remove && r.public_key == b);
    }

    #[test]
    fn zero_values_clear() {
        let a = pk();
        let body = format!(
            "public_key={}\npreshared_key={}\npersistent_keepalive_interval=0\nendpoint=[fd00::1]:7\n",
            hexkey(&a),
            "00".repeat(32)
        );
        let changes = parse_set(&body).unwrap();
        let Change::UpdatePeer(u) = &changes[0] else { panic!() };
        assert_eq!(u.preshared_key, Some(None));
        assert_eq!(u.persistent_keepalive, Some(None));
        assert_eq!(u.endpoint, Some("[fd00::1]:7".parse().unwrap()));
        assert!(parse_set("").unwrap().is_empty());
    }

    #[test]
    fn bad_input_is_einval() {
        let a = hexkey(&pk());
        let low_order = {
            let mut one = [0u8; 32];
            one[0] = 1;
            hex::encode(one)
        };
        let cases = [
            "bogus=1".to_owned(),
            "listen_port=70000".to_owned(),
            "listen_port=x".to_owned(),
            "no equals sign".to_owned(),
            "private_key=zz".to_owned(),
            format!("private_key={}", "00".repeat(32)),
            format!("public_key={}", &a[..62]),
            format!("public_key={}", a.replace(&a[..2], "zz")),
            format!("public_key={}", "00".repeat(32)),
            format!("public_key={low_order}"),
            format!("public_key={a}\nendpoint=not-an-address"),
            format!("public_key={a}\nallowed_ip=10.0.0.0/33"),
            format!("public_key={a}\nremove=yes"),
            format!("public_key={a}\nprotocol_version=2"),
            format!("public_key={a}\nlisten_port=1"),
            format!("public_key={a}\nunknown=1"),
            "remove=true".to_owned(),
        ];
        for body in cases {
            let err = parse_set(&body).expect_err(&body);
            assert_eq!(err.errno(), libc::EINVAL, "{body}: {err}");
        }
    }
}
