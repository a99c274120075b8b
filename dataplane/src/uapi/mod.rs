//! The cross-platform WireGuard UAPI (`get=1` / `set=1` over a unix socket), so `wg show` and
//! `wg set` work against a meshcrypt device.

mod get;
mod lines;
mod server;
mod set;

pub(crate) use get::write_get;
pub(crate) use server::Server;
pub(crate) use set::parse_set;

use meshcrypt_keyexchange::PublicKey;
use zeroize::Zeroizing;

use crate::state::PeerState;
use meshcrypt_keyexchange::PresharedKey;

/// Everything a `get=1` reply carries, secrets included (the socket is root-only).
pub(crate) struct Dump {
    /// The device's private key.
    pub private_key: Zeroizing<[u8; 32]>,
    /// The bound UDP port.
    pub listen_port: u16,
    /// The socket mark.
    pub fwmark: Option<u32>,
    /// Each peer with its pre-shared key.
    pub peers: Vec<(PeerState, Option<PresharedKey>)>,
}

impl std::fmt::Debug for Dump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&PublicKey> = self.peers.iter().map(|(p, _)| &p.public_key).collect();
        f.debug_struct("Dump")
            .field("listen_port", &self.listen_port)
            .field("peers", &keys)
            .finish_non_exhaustive()
    }
}
