//! Test-only lab helpers: named network namespaces removed on drop (even on panic), running code
//! inside one, two namespaces joined by a veth, and polling with deadlines.
//!
//! A stand-in for `meshcrypt-integration`'s `lab::netns` until the two are merged.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

pub mod pair;
pub mod wggo;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A short name unique to this process and call: `<tag><pid>x<n>` (≤ 15 bytes for tags ≤ 4).
pub fn unique(tag: &str) -> String {
    format!("{tag}{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command, returning its output; panics if it cannot start.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command and panics unless it succeeds.
pub fn must(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("mcdp-{}", unique(tag));
        must(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> …`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        must(&full)
    }

    /// `ip netns exec <ns> …`.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs `f` on a thread inside the namespace; sockets and TUNs it creates stay there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// One ping, true if answered within a second.
    pub fn ping(&self, dst: &str) -> bool {
        self.exec(&["ping", "-n", "-q", "-c", "1", "-W", "1", dst]).status.success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "delete", &self.name]);
    }
}

/// Two namespaces joined by a veth pair: `a` has 198.18.`subnet`.1/24, `b` has .2.
pub struct Underlay {
    pub a: Netns,
    pub b: Netns,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
}

impl Underlay {
    pub fn new(subnet: u8) -> Self {
        let a = Netns::new("a");
        let b = Netns::new("b");
        let va = unique("va");
        let vb = unique("vb");
        must(&[
            "ip", "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns", &b.name,
        ]);
        let a_ip = Ipv4Addr::new(198, 18, subnet, 1);
        let b_ip = Ipv4Addr::new(198, 18, subnet, 2);
        a.ip(&["addr", "add", &format!("{a_ip}/24"), "dev", &va]);
        b.ip(&["addr", "add", &format!("{b_ip}/24"), "dev", &vb]);
        a.ip(&["link", "set", &va, "up"]);
        b.ip(&["link", "set", &vb, "up"]);
        Self { a, b, a_ip, b_ip }
    }
}

/// Gives `ifname` in `ns` the address `cidr`, a route to 10.244.0.0/16, MTU 1420, and brings it up.
pub fn tunnel_addr(ns: &Netns, ifname: &str, cidr: &str) {
    ns.ip(&["addr", "add", cidr, "dev", ifname]);
    ns.ip(&["link", "set", ifname, "mtu", "1420", "up"]);
    ns.ip(&["route", "add", "10.244.0.0/16", "dev", ifname]);
}

/// Polls `f` every 50 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Pings until answered (the first packets wait for the handshake).
pub fn ping_eventually(ns: &Netns, dst: &str) -> bool {
    eventually(Duration::from_secs(15), || ns.ping(dst))
}

/// Starts a TCP echo server in `server` on `ip:port` and sends `len` bytes through it from
/// `client`, checking they come back unchanged.
pub fn tcp_echo(server: &Netns, ip: &str, port: u16, client: &Netns, len: usize) {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let listener = server.run(move || TcpListener::bind(addr).expect("bind echo server"));
    let echo = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => conn.write_all(&buf[..n]).expect("echo write"),
            }
        }
    });
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let back = client.run(move || {
        let mut s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect through tunnel");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reader = s.try_clone().unwrap();
        let expected = data.len();
        let r = std::thread::spawn(move || {
            let mut got = Vec::with_capacity(expected);
            let mut buf = vec![0u8; 16 * 1024];
            while got.len() < expected {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        });
        s.write_all(&data).expect("write through tunnel");
        let got = r.join().unwrap();
        s.shutdown(std::net::Shutdown::Both).ok();
        (data, got)
    });
    echo.join().unwrap();
    assert_eq!(back.1.len(), back.0.len(), "echoed length");
    assert!(back.0 == back.1, "echoed bytes differ");
}
