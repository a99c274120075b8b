//! The detector on live traffic: every frame is counted once, API-server traffic and WireGuard-shaped
//! traffic on the mesh port between nodes is allowed, anything else between nodes is reported.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use meshcrypt_netlab::lab::Lab;
use meshcrypt_netlab::leak::{LeakConfig, LeakDetector};

const TIMEOUT: Duration = Duration::from_secs(3);

/// Sends one UDP datagram from `from_ns` (bound to `from`) to `to` and waits until it arrives.
fn one_datagram(lab: &Lab, from_ns: &str, from: IpAddr, to_ns: &str, to: SocketAddr, payload: &[u8]) {
    let rx = lab.run_in(to_ns, || UdpSocket::bind(to)).unwrap().expect("bind receiver");
    rx.set_read_timeout(Some(TIMEOUT)).unwrap();
    let tx = lab.run_in(from_ns, || UdpSocket::bind((from, 0))).unwrap().expect("bind sender");
    tx.send_to(payload, to).expect("send");
    let mut buf = [0u8; 2048];
    let (n, _) = rx.recv_from(&mut buf).expect("datagram arrives");
    assert_eq!(&buf[..n], payload);
}

#[test]
fn live_traffic_is_classified_and_counted_once() {
    let lab = Lab::builder().nodes(2).pods_per_node(1).build().expect("build lab");
    let (n0, n1) = (lab.nodes()[0].clone(), lab.nodes()[1].clone());
    let (p0, p1) = (lab.pods()[0].clone(), lab.pods()[1].clone());
    let services: IpAddr = lab.services_addr().into();

    // An "API server" on the services address, in the underlay namespace.
    let api = lab.run_in(lab.underlay_ns(), || TcpListener::bind((services, 0))).unwrap().expect("bind api");
    let api_addr = api.local_addr().unwrap();
    let config = LeakConfig::for_lab(&lab).with_api_endpoint(api_addr);
    // Warm up ARP so that the counted traffic below is exactly what the test sends.
    for (ns, to) in [(&n0.namespace, n1.underlay_addr), (&n1.namespace, n0.underlay_addr)] {
        assert!(lab.ping_from(ns, to.into()).unwrap());
    }
    assert!(lab.ping(&p0, p1.address.into()).unwrap());

    let detector = LeakDetector::start_for_lab(&lab, config).expect("start");

    // 1. Exactly one plaintext pod datagram: counted exactly once, although it crosses two
    //    bridge ports.
    one_datagram(
        &lab,
        &p0.namespace,
        p0.address.into(),
        &p1.namespace,
        SocketAddr::new(p1.address.into(), 7000),
        b"pod",
    );
    // 2. A WireGuard-shaped datagram on the mesh port between nodes: allowed.
    let mut wg = vec![0u8; 64];
    wg[0] = 4;
    one_datagram(
        &lab,
        &n0.namespace,
        n0.underlay_addr.into(),
        &n1.namespace,
        SocketAddr::new(n1.underlay_addr.into(), 51820),
        &wg,
    );
    // 3. Plaintext on the mesh port: reported.
    one_datagram(
        &lab,
        &n1.namespace,
        n1.underlay_addr.into(),
        &n0.namespace,
        SocketAddr::new(n0.underlay_addr.into(), 51820),
        b"not wireguard",
    );
    // 4. A stray datagram between nodes on another port: reported.
    one_datagram(
        &lab,
        &n0.namespace,
        n0.underlay_addr.into(),
        &n1.namespace,
        SocketAddr::new(n1.underlay_addr.into(), 9999),
        b"stray",
    );
    // 5. TCP from a node to the API server and back: allowed, including the replies the bridge's
    //    own stack sends.
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            let (mut c, _) = api.accept().expect("accept");
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).expect("read");
            c.write_all(&buf).expect("echo");
        });
        let mut c = lab
            .run_in(&n0.namespace, || TcpStream::connect_timeout(&api_addr, TIMEOUT))
            .unwrap()
            .expect("connect api");
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        server.join().unwrap();
    });

    let report = detector.stop().expect("stop");
    println!("{report}");
    assert_eq!(report.pod_flow(p0.address.into(), p1.address.into()), 1, "{report}");
    assert_eq!(report.pod_flow(p1.address.into(), p0.address.into()), 0, "{report}");
    assert_eq!(report.pod_plaintext, 1, "{report}");
    assert_eq!(report.mesh_packets, 2, "{report}");
    assert_eq!(report.mesh_not_wireguard, 1, "{report}");
    assert_eq!(report.stray_underlay, 1, "{report}");
    assert!(report.api_packets >= 6, "handshake, data both ways: {report}");
    assert_eq!(report.leaking_packets, 3, "{report}");
    assert_eq!(report.kernel_drops, 0);
}
