//! The netlink executor against a real kernel: each test runs in a private, unnamed network
//! namespace (unshare on its own thread), with a persistent TUN device standing in for the WireGuard device.

use std::collections::BTreeSet;
use std::process::Command;

use ipnet::IpNet;
use meshcrypt_routing::desired::{FLOOR_METRIC, ROUTE_METRIC, RoutingInput, build};
use meshcrypt_routing::plan::plan;
use meshcrypt_routing::{Netlink, Route, RouteKind, Rule};

const TABLE: u32 = 2_000;
const PRIORITY: u32 = 100;

/// Runs `f` on a thread inside a fresh network namespace that vanishes with the thread.
fn in_private_netns<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): needs root");
        f();
    })
    .join()
    .expect("test thread panicked");
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `ip -batch` with `batch` (one `ip` command a line) on its standard input.
fn ip_batch(batch: &str) {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("ip -batch");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), batch.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "ip -batch failed");
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn input(peers: &[&str], strict: bool) -> RoutingInput {
    RoutingInput {
        ifname: "meshcrypt0".into(),
        mtu: 1440,
        addresses: vec![net("10.244.0.1/32")],
        table: TABLE,
        rule_priority: PRIORITY,
        pod_networks: vec![net("10.244.0.0/16"), net("fd00:10:244::/56")],
        local_prefixes: vec![net("10.244.0.0/24"), net("fd00:10:244::/64")],
        peer_prefixes: peers.iter().map(|p| net(p)).collect(),
        strict,
        peer_hosts: vec![],
        host_encryption: false,
        fwmark: Some(0x20_0000),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn apply_then_plan_is_empty_and_reapplying_is_harmless() {
    in_private_netns(|| {
        ip(&["tuntap", "add", "dev", "meshcrypt0", "mode", "tun"]);
        ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
        ip(&["link", "set", "eth0", "up"]);
        ip(&["addr", "add", "198.18.0.10/15", "dev", "eth0"]);
        let main_before = ip(&["route", "show", "table", "main"]);
        runtime().block_on(async {
            let nl = Netlink::connect().unwrap();
            let desired = build(&input(&["10.244.1.0/24", "fd00:10:244:1::/64"], true));
            assert_eq!(nl.mtu_of_address("198.18.0.10".parse().unwrap()).await.unwrap(), Some(1500));
            assert_eq!(nl.mtu_of_address("198.18.0.99".parse().unwrap()).await.unwrap(), None);
            let observed = nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap();
            let link = observed.link.as_ref().expect("TUN link observed");
            assert!(!link.up);
            let ops = plan(&desired, &observed);
            assert!(!ops.is_empty());
            nl.apply(Some(link.index), TABLE, &ops).await.unwrap();

            let after = nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap();
            assert_eq!(plan(&desired, &after), vec![], "observed after apply: {after:#?}");
            assert_eq!(after.routes, desired.routes);
            assert_eq!(after.rules, desired.rules);
            let link = after.link.unwrap();
            assert!(link.up);
            assert_eq!(link.mtu, 1440);
            assert_eq!(link.addresses, BTreeSet::from([net("10.244.0.1/32")]));

            // The same ops again: adds that exist and replaces are harmless.
            nl.apply(Some(link.index), TABLE, &ops).await.unwrap();
            assert_eq!(plan(&desired, &nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap()), vec![]);
        });
        // What `ip` sees: the device route, the floor, the rule; the main table untouched.
        let table = ip(&["route", "show", "table", &TABLE.to_string()]);
        assert!(table.contains("10.244.1.0/24 dev meshcrypt0"), "{table}");
        assert!(
            table.contains("blackhole 10.244.0.0/16") && table.contains(&format!("metric {FLOOR_METRIC}")),
            "{table}"
        );
        assert!(table.contains("throw 10.244.0.0/24"), "{table}");
        let rules = ip(&["rule", "show"]);
        assert!(
            rules.contains(&format!(
                "{PRIORITY}:\tfrom all to 10.244.0.0/16 fwmark 0/0x200000 lookup {TABLE}"
            )),
            "{rules}"
        );
        let rules6 = ip(&["-6", "rule", "show"]);
        assert!(
            rules6.contains(&format!(
                "{PRIORITY}:\tfrom all to fd00:10:244::/56 fwmark 0/0x200000 lookup {TABLE}"
            )),
            "{rules6}"
        );
        assert_eq!(ip(&["route", "show", "table", "main"]), main_before);
        // The kernel's own decision for a pod on another node: the mesh device.
        let get = ip(&["route", "get", "10.244.1.7"]);
        assert!(get.contains("dev meshcrypt0") && get.contains(&format!("table {TABLE}")), "{get}");
        let get = ip(&["route", "get", "10.244.9.7"]);
        assert!(
            get.contains("dev meshcrypt0"),
            "strict: no peer still goes to the device, never eth0: {get}"
        );
    });
}

#[test]
fn removing_a_peer_and_the_device_leaves_the_blackhole_floor() {
    in_private_netns(|| {
        ip(&["tuntap", "add", "dev", "meshcrypt0", "mode", "tun"]);
        runtime().block_on(async {
            let nl = Netlink::connect().unwrap();
            let apply = |peers: &'static [&'static str]| {
                let nl = nl.clone();
                async move {
                    let desired = build(&input(peers, true));
                    let observed = nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap();
                    let index = observed.link.as_ref().map(|l| l.index);
                    nl.apply(index, TABLE, &plan(&desired, &observed)).await.unwrap();
                    nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap()
                }
            };
            let with_peer = apply(&["10.244.1.0/24"]).await;
            let peer_route =
                Route { dst: net("10.244.1.0/24"), metric: ROUTE_METRIC, kind: RouteKind::Device };
            assert!(with_peer.routes.contains(&peer_route), "{with_peer:#?}");
            let without = apply(&[]).await;
            assert!(!without.routes.iter().any(|r| r.dst == net("10.244.1.0/24")));

            ip(&["link", "del", "meshcrypt0"]);
            let gone = nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap();
            assert!(gone.link.is_none());
            // The kernel dropped the device routes with the device; the floor and rules stay.
            assert!(gone.routes.contains(&Route {
                dst: net("10.244.0.0/16"),
                metric: FLOOR_METRIC,
                kind: RouteKind::Blackhole
            }));
            assert!(!gone.routes.iter().any(|r| r.kind == RouteKind::Device));
            assert!(gone.rules.contains(&Rule::to(PRIORITY, net("10.244.0.0/16"), Some(0x20_0000), TABLE)));
            assert!(gone.rules.contains(&Rule::from(PRIORITY, net("10.244.0.0/16"), Some(0x20_0000), TABLE)));
        });
        let get = Command::new("ip").args(["route", "get", "10.244.1.7"]).output().unwrap();
        assert!(!get.status.success(), "a pod address must be unroutable without the device");
    });
}

#[test]
fn routes_and_rules_of_others_are_never_touched() {
    in_private_netns(|| {
        ip(&["tuntap", "add", "dev", "meshcrypt0", "mode", "tun"]);
        ip(&["route", "add", "blackhole", "192.0.2.0/24", "table", "77"]);
        ip(&["rule", "add", "priority", "512", "to", "10.244.0.0/16", "lookup", "main"]);
        ip(&["rule", "add", "priority", "101", "to", "10.244.0.0/16", "lookup", "77"]);
        runtime().block_on(async {
            let nl = Netlink::connect().unwrap();
            let desired = build(&input(&[], false));
            let observed = nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap();
            assert!(observed.routes.is_empty() && observed.rules.is_empty(), "{observed:#?}");
            let index = observed.link.as_ref().map(|l| l.index);
            nl.apply(index, TABLE, &plan(&desired, &observed)).await.unwrap();
        });
        assert!(ip(&["route", "show", "table", "77"]).contains("blackhole 192.0.2.0/24"));
        let rules = ip(&["rule", "show"]);
        assert!(rules.contains("512:\tfrom all to 10.244.0.0/16 lookup main"), "{rules}");
        assert!(rules.contains("101:\tfrom all to 10.244.0.0/16 lookup 77"), "{rules}");
    });
}

/// Leftovers in meshcrypt's own table and priority, added by hand (`ip route` marks them protocol
/// "boot", ours are "static"; some in other scopes and kinds): one plan removes them all, and
/// the next plan is empty (a delete that cannot match would repeat on every pass).
#[test]
fn leftovers_in_our_table_are_removed_whoever_added_them() {
    in_private_netns(|| {
        ip(&["tuntap", "add", "dev", "meshcrypt0", "mode", "tun"]);
        ip(&["link", "set", "lo", "up"]);
        let table = TABLE.to_string();
        ip(&["route", "add", "blackhole", "10.99.0.0/16", "table", &table]);
        ip(&["route", "add", "unreachable", "10.98.0.0/16", "table", &table, "metric", "7"]);
        ip(&[
            "route",
            "add",
            "10.97.0.0/16",
            "dev",
            "lo",
            "table",
            &table,
            "proto",
            "kernel",
            "scope",
            "link",
        ]);
        ip(&["route", "add", "prohibit", "fd00:99::/64", "table", &table]);
        ip(&["rule", "add", "to", "10.99.0.0/16", "lookup", &table, "priority", &PRIORITY.to_string()]);
        runtime().block_on(async {
            let nl = Netlink::connect().unwrap();
            let desired = build(&input(&[], true));
            let observed = nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap();
            let index = observed.link.as_ref().map(|l| l.index);
            nl.apply(index, TABLE, &plan(&desired, &observed)).await.unwrap();
            let after = nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap();
            let left = plan(&desired, &after);
            assert!(left.is_empty(), "leftovers survived: {left:?}\n{after:#?}");
        });
        let routes = ip(&["route", "show", "table", &table]) + &ip(&["-6", "route", "show", "table", &table]);
        for stale in ["10.99.0.0/16", "10.98.0.0/16", "10.97.0.0/16", "fd00:99::/64"] {
            assert!(!routes.contains(stale), "{stale} left in the table:\n{routes}");
        }
    });
}

/// What `observe` reads of meshcrypt's table, given as a fresh connection's full dump sees it.
async fn as_a_dump_sees_it(nl: &Netlink, what: &str) -> BTreeSet<Route> {
    let kept = nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap().routes;
    let dumped = Netlink::connect().unwrap().observe("meshcrypt0", TABLE, PRIORITY).await.unwrap().routes;
    assert_eq!(kept, dumped, "{what}");
    kept
}

/// After its first read, `observe` keeps meshcrypt's table from the kernel's route notifications
/// instead of dumping it every pass. What it reads must equal a fresh dump after changes made by
/// others (adds in both families, a replace, a delete, another table's route), and it reads the
/// table whole again only when it must: after the device goes down (the kernel drops its IPv4
/// routes without a notification) and after more changes than the notification socket holds
/// (an overrun: notifications were lost).
#[test]
fn the_table_kept_from_route_notifications_equals_a_fresh_dump() {
    in_private_netns(|| {
        ip(&["tuntap", "add", "dev", "meshcrypt0", "mode", "tun"]);
        ip(&["link", "set", "meshcrypt0", "up"]);
        let table = TABLE.to_string();
        runtime().block_on(async {
            let nl = Netlink::connect().unwrap();
            assert!(as_a_dump_sees_it(&nl, "empty").await.is_empty());
            assert_eq!(nl.route_dumps(), 1, "the first read dumps");

            ip(&["route", "add", "10.244.1.0/24", "dev", "meshcrypt0", "table", &table]);
            ip(&["-6", "route", "add", "fd00:10:244:1::/64", "dev", "meshcrypt0", "table", &table]);
            ip(&["route", "add", "blackhole", "10.244.0.0/16", "table", &table, "metric", "4000"]);
            assert_eq!(as_a_dump_sees_it(&nl, "three added").await.len(), 3);
            ip(&["route", "replace", "throw", "10.244.1.0/24", "table", &table]);
            let routes = as_a_dump_sees_it(&nl, "replaced by a throw").await;
            assert!(routes.iter().any(|r| r.dst == net("10.244.1.0/24") && r.kind == RouteKind::Throw));
            ip(&["route", "del", "throw", "10.244.1.0/24", "table", &table]);
            ip(&["route", "add", "10.250.0.0/24", "dev", "meshcrypt0"]);
            assert_eq!(as_a_dump_sees_it(&nl, "one deleted, one in main").await.len(), 2);
            assert_eq!(nl.route_dumps(), 1, "every change came from notifications");

            ip(&["route", "add", "10.244.2.0/24", "dev", "meshcrypt0", "table", &table]);
            as_a_dump_sees_it(&nl, "before the device goes down").await;
            ip(&["link", "set", "meshcrypt0", "down"]);
            let routes = as_a_dump_sees_it(&nl, "the device down: its IPv4 routes gone").await;
            assert!(!routes.iter().any(|r| r.dst == net("10.244.2.0/24")), "{routes:?}");
            assert_eq!(nl.route_dumps(), 2, "a link change reads the table whole");

            ip(&["link", "set", "meshcrypt0", "up"]);
            as_a_dump_sees_it(&nl, "up again").await;
            let dumps = nl.route_dumps();
            // 20,000 routes in one batch, while nothing reads the socket (this runtime has one
            // thread, busy here): far more than its receive buffer holds.
            let batch: String = (0..20_000)
                .map(|i| {
                    format!("route add 10.{}.{}.0/24 dev meshcrypt0 table {table}\n", 100 + i / 256, i % 256)
                })
                .collect();
            ip_batch(&batch);
            let routes = as_a_dump_sees_it(&nl, "after an overrun").await;
            assert!(routes.len() > 20_000, "{}", routes.len());
            assert_eq!(nl.route_dumps(), dumps + 1, "lost notifications: the table read whole");
            as_a_dump_sees_it(&nl, "and kept again").await;
            assert_eq!(nl.route_dumps(), dumps + 1);
        });
    });
}

/// A dump of one table goes on the strict-checking socket, so the kernel walks that table alone:
/// it returns the table's routes whoever added them (`ip` marks its routes protocol "boot"; CNIs
/// and the kernel use others), none of another table's (here meshcrypt's, with a route per remote
/// pod as in pod-IP mode, and the local table's), and for a table that does not exist in a family
/// nothing, not the kernel's `ENOENT`.
#[test]
fn a_table_dump_reads_that_table_alone_and_a_missing_table_is_empty() {
    in_private_netns(|| {
        ip(&["tuntap", "add", "dev", "meshcrypt0", "mode", "tun"]);
        ip(&["link", "set", "meshcrypt0", "up"]);
        ip(&["link", "set", "lo", "up"]);
        ip(&["address", "add", "10.244.0.1/32", "dev", "meshcrypt0"]);
        ip(&["route", "add", "10.244.0.5/32", "dev", "meshcrypt0"]);
        ip(&["route", "add", "10.244.0.6/32", "dev", "meshcrypt0", "proto", "static"]);
        ip(&["-6", "route", "add", "fd00:10:244::5/128", "dev", "meshcrypt0", "proto", "kernel"]);
        let table = TABLE.to_string();
        let batch: String = (0..300)
            .map(|i| format!("route add 10.245.{}.{}/32 dev meshcrypt0 table {table}\n", i / 256, i % 256))
            .collect();
        ip_batch(&batch);
        runtime().block_on(async {
            let nl = Netlink::connect().unwrap();
            let main: BTreeSet<IpNet> =
                nl.host_routes(254).await.unwrap().into_iter().map(|r| r.dst).collect();
            let want: BTreeSet<IpNet> =
                ["10.244.0.5/32", "10.244.0.6/32", "fd00:10:244::5/128"].into_iter().map(net).collect();
            assert_eq!(main, want, "the main table's host routes, and only them");
            // meshcrypt's table exists in IPv4 only.
            let ours = nl.host_routes(TABLE).await.unwrap();
            assert_eq!(ours.len(), 300);
            assert!(ours.iter().all(|r| r.dst.addr().to_string().starts_with("10.245.")));
            assert_eq!(nl.observe("meshcrypt0", TABLE, PRIORITY).await.unwrap().routes.len(), 300);
            assert!(nl.host_routes(3_000).await.unwrap().is_empty(), "a table that exists in neither family");
        });
    });
}
