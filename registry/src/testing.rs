//! Test support (feature `test-support`): moto's Secrets Manager server on a free loopback port
//! and a client for it with explicit region, endpoint and credentials (never the default chain);
//! an in-memory store whose answers can be lost ([`MemoryStore`]); and bundle nodes to fill
//! bundles with.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::net::IpAddr;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use meshcrypt_keyexchange::PrivateKey;

use crate::bundle::BundleNode;
pub use crate::memory_store::MemoryStore;

/// The region the test client uses.
pub const REGION: &str = "eu-west-1";
/// The access key id and secret the test client (and a registry under test) present.
pub const CREDENTIALS: (&str, &str) = ("testing", "testing");

/// A moto server, stopped on drop. Its program is `$MOTO_SERVER`, or `.venv/bin/moto_server` at
/// the workspace root (`scripts/setup.sh` installs it there).
pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl MotoServer {
    /// Starts one and waits (up to 30 s) until it listens.
    ///
    /// # Panics
    /// When the program is missing or does not listen in time (a test cannot go on without it).
    pub fn start() -> Self {
        let bin = std::env::var_os("MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server"));
        assert!(
            bin.exists(),
            "{} is missing: run `bash scripts/setup.sh` (it installs moto[server])",
            bin.display()
        );
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("a free port")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {addr} within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, url: format!("http://{addr}") }
    }

    /// The server's process id (to stop it with SIGSTOP, say: an endpoint that accepts connections
    /// and never answers).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A Secrets Manager client for this server.
    pub fn client(&self) -> aws_sdk_secretsmanager::Client {
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.url)
            .credentials_provider(Credentials::new(
                CREDENTIALS.0,
                CREDENTIALS.1,
                None,
                None,
                "meshcrypt-tests",
            ))
            .build();
        aws_sdk_secretsmanager::Client::from_conf(config)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `count` nodes (10.1.x.y at port 51820, fresh keys), each with `prefixes` /30 prefixes in
/// 100.0.0.0/8, sorted by name.
pub fn nodes(count: u32, prefixes: u32) -> Vec<BundleNode> {
    let mut out: Vec<BundleNode> = (0..count)
        .map(|i| {
            let ip = Ipv4Addr::from(0x0a01_0000 + i);
            BundleNode {
                name: format!("ip-{}.eu-west-1.compute.internal", ip.to_string().replace('.', "-")),
                public_key: PrivateKey::generate().public_key(),
                key_epoch: u64::from(i % 3),
                endpoint: SocketAddr::new(IpAddr::V4(ip), 51820),
                allowed_ips: (0..prefixes)
                    .map(|p| {
                        ipnet::IpNet::new(IpAddr::V4(Ipv4Addr::from(0x6400_0000 + (i * 64 + p) * 4)), 30)
                            .unwrap()
                    })
                    .collect(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
