//! Single-stream TCP throughput through a meshcrypt tunnel between two namespaces, measured with
//! iperf3. Ignored by default (a measurement, not a check); run with
//! `cargo test --release -p meshcrypt-dataplane --test throughput -- --ignored --nocapture`.
//! `MESHCRYPT_BENCH_THREADS` sets the workers per direction (default 1). Needs iperf3.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::pair::Pair;
use common::{Netns, eventually, ping_eventually};

/// Runs a 5 s iperf3 test from `client` to an iperf3 server on 10.244.2.1 in `server`; bits/s.
fn iperf3(server: &Netns, client: &Netns) -> f64 {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &server.name, "iperf3", "-s", "-1", "-B", "10.244.2.1"])
        .stdout(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    let listening = eventually(Duration::from_secs(10), || {
        let out = server.exec(&["ss", "-Hltn", "sport", "= :5201"]);
        !out.stdout.is_empty()
    });
    assert!(listening, "iperf3 server listening");
    let out = client.exec(&["iperf3", "-c", "10.244.2.1", "-t", "5", "-J"]);
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("\"sum_received\"")
        .nth(1)
        .and_then(|s| s.split("\"bits_per_second\":").nth(1))
        .and_then(|s| s.split([',', '\n', '}']).next())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("iperf3 output: {text}"))
}

#[test]
#[ignore = "measurement: run explicitly in release mode"]
fn iperf3_single_stream() {
    let threads = std::env::var("MESHCRYPT_BENCH_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(1);
    let p = Pair::build(9, true, threads);
    assert!(ping_eventually(&p.net.a, "10.244.2.1"));
    let bps = iperf3(&p.net.b, &p.net.a);
    println!("meshcrypt single-stream TCP, {threads} worker(s)/direction: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 0.0);
}

/// The same measurement between two wireguard-go processes, as the baseline to compare with.
#[test]
#[ignore = "measurement: run explicitly"]
fn iperf3_single_stream_wireguard_go_baseline() {
    use common::wggo::GoProcess;
    use common::{Underlay, must, tunnel_addr, unique};
    use meshcrypt_dataplane::PrivateKey;

    let net = Underlay::new(10);
    let ifname = unique("mcb");
    let dir = tempfile::TempDir::new().unwrap();
    let keys = [PrivateKey::generate(), PrivateKey::generate()];
    let go_a = GoProcess::start(&net.a, &format!("{ifname}a"));
    let go_b = GoProcess::start(&net.b, &format!("{ifname}b"));
    let sides = [
        (&net.a, "a", &keys[0], &keys[1], net.b_ip, "10.244.2.0/24", "10.244.1.1/24"),
        (&net.b, "b", &keys[1], &keys[0], net.a_ip, "10.244.1.0/24", "10.244.2.1/24"),
    ];
    for (ns, side, own, peer, peer_ip, allowed, addr) in sides {
        let file = dir.path().join(side);
        std::fs::write(&file, own.to_base64().as_bytes()).unwrap();
        let dev = format!("{ifname}{side}");
        must(&[
            "wg",
            "set",
            &dev,
            "private-key",
            file.to_str().unwrap(),
            "listen-port",
            "51820",
            "peer",
            &peer.public_key().to_string(),
            "endpoint",
            &format!("{peer_ip}:51820"),
            "allowed-ips",
            allowed,
        ]);
        tunnel_addr(ns, &dev, addr);
    }
    assert!(ping_eventually(&net.a, "10.244.2.1"));
    let bps = iperf3(&net.b, &net.a);
    println!("wireguard-go single-stream TCP: {:.2} Gbit/s", bps / 1e9);
    drop((go_a, go_b));
}
