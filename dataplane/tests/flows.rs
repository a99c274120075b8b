//! Flow accounting on two real devices: TCP between them shows as one encrypted flow at each end
//! with the right 5-tuple, peer and bytes; a destination no peer covers, and a spoofed inner
//! source, show as dropped flows with their reasons; with accounting off nothing is counted.
//! Needs root, `ip` (iproute2) and `ping` (iputils-ping).

mod common;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use common::{IFNAME, Pair, ping_eventually};
use meshcrypt_dataplane::{DropReason, Flow, FlowDirection, FlowOutcome};
use meshcrypt_netlab::wait::poll;

const TCP_TIMEOUT: Duration = Duration::from_secs(20);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The flows of `flows` from `src` to `dst` with `protocol`, going `direction`.
fn matching(flows: &[Flow], direction: FlowDirection, protocol: u8, src: &str, dst: &str) -> Vec<Flow> {
    flows
        .iter()
        .filter(|f| {
            f.key.direction == direction
                && f.key.protocol == protocol
                && f.key.src == ip(src)
                && f.key.dst == ip(dst)
        })
        .cloned()
        .collect()
}

#[test]
fn tcp_shows_as_an_encrypted_flow_at_both_ends_and_drops_show_their_reason() {
    let p = Pair::new();
    let (na, nb) = (&p.node_a.namespace, &p.node_b.namespace);
    ping_eventually(&p.lab, na, "10.244.20.1").expect("a → b ping");

    // Off (the default): nothing is counted.
    p.lab.tcp_exchange_ns(na, nb, ip("10.244.20.1"), &[7u8; 4096], TCP_TIMEOUT).expect("a → b TCP");
    assert!(p.a.take_flows().flows.is_empty() && p.b.take_flows().flows.is_empty(), "accounting is off");

    p.a.set_flow_accounting(Some(1024));
    p.b.set_flow_accounting(Some(1024));
    let started = SystemTime::now();
    let payload = vec![9u8; 1 << 20];
    p.lab.tcp_exchange_ns(na, nb, ip("10.244.20.1"), &payload, TCP_TIMEOUT).expect("a → b TCP");
    let (at_a, at_b) = (p.a.take_flows(), p.b.take_flows());

    // The client's flow: out of A and into B, one 5-tuple, encrypted, naming the other side (the
    // first connection's last packets may still be on their way: a second, small flow).
    let big = |flows: Vec<Flow>| -> Vec<Flow> { flows.into_iter().filter(|f| f.bytes > 1 << 19).collect() };
    let out_a = big(matching(&at_a.flows, FlowDirection::Outbound, 6, "10.244.10.1", "10.244.20.1"));
    let [sent] = out_a.as_slice() else { panic!("one outbound TCP flow at A: {out_a:#?}") };
    assert_eq!((sent.outcome, sent.peer), (FlowOutcome::Encrypted, Some(p.key_b)));
    assert!(sent.bytes > payload.len() as u64, "{sent:?}: the echo's payload and headers");
    assert!(started.duration_since(sent.first_seen).unwrap_or_default() < Duration::from_secs(1));
    assert!(sent.first_seen <= sent.last_seen);
    let in_b = big(matching(&at_b.flows, FlowDirection::Inbound, 6, "10.244.10.1", "10.244.20.1"));
    let [received] = in_b.as_slice() else { panic!("one inbound TCP flow at B: {in_b:#?}") };
    assert_eq!(received.key.src_port, sent.key.src_port);
    assert_eq!(received.key.dst_port, sent.key.dst_port);
    assert_eq!((received.outcome, received.peer), (FlowOutcome::Encrypted, Some(p.key_a)));
    assert!(received.packets <= sent.packets && received.bytes > payload.len() as u64, "{received:?}");
    // The echo, the other way.
    let back = big(matching(&at_b.flows, FlowDirection::Outbound, 6, "10.244.20.1", "10.244.10.1"));
    assert_eq!(back.len(), 1, "{back:#?}");
    assert_eq!((at_a.overflow_packets, at_b.overflow_packets), (0, 0));

    // No peer covers 10.244.77.1: dropped at A, counted as such.
    assert!(!p.ping(&p.node_a, "10.244.77.1"));
    let dropped = poll(Duration::from_secs(5), || {
        let got = matching(&p.a.take_flows().flows, FlowDirection::Outbound, 1, "10.244.10.1", "10.244.77.1");
        got.into_iter().next().ok_or_else(|| "no flow for the unrouted ping yet".to_owned())
    })
    .unwrap();
    assert_eq!((dropped.outcome, dropped.peer), (FlowOutcome::Dropped(DropReason::NoPeer), None));

    // B sends from an address outside its allowed IPs: A drops it as a bad source.
    p.lab.exec(nb, &["ip", "addr", "add", "10.244.90.1/24", "dev", IFNAME]).unwrap();
    let ping = ["ping", "-n", "-q", "-c", "1", "-W", "1", "-I", "10.244.90.1", "10.244.10.1"];
    assert!(!p.lab.exec_output(nb, &ping).unwrap().status.success());
    let spoofed = poll(Duration::from_secs(5), || {
        let got = matching(&p.a.take_flows().flows, FlowDirection::Inbound, 1, "10.244.90.1", "10.244.10.1");
        got.into_iter().next().ok_or_else(|| "no flow for the spoofed ping yet".to_owned())
    })
    .unwrap();
    assert_eq!((spoofed.outcome, spoofed.peer), (FlowOutcome::Dropped(DropReason::BadSource), Some(p.key_b)));
}
