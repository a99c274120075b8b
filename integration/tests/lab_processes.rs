//! Processes the lab starts: they run inside their namespace, log to a file, can have private
//! directories (the per-node `/run/wireguard` agents need), and are stopped with everything they forked.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use meshcrypt_netlab::lab::{Lab, SpawnOptions, leftovers};

fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    meshcrypt_netlab::wait::poll(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            Ok(text)
        } else {
            Err(format!("{} never said {needle:?}: {text:?}", path.display()))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn processes_run_in_their_namespace_with_private_dirs_and_are_stopped() {
    let lab = Lab::builder().nodes(2).pods_per_node(0).build().expect("build lab");
    let (n0, n1) = (lab.nodes()[0].clone(), lab.nodes()[1].clone());
    let dir = PathBuf::from("/run/wireguard");
    let private = SpawnOptions { private_dirs: vec![dir.clone()] };
    let marker = format!("{}-marker", lab.prefix());

    // Node 0 writes a marker into its private /run/wireguard and reports its address.
    let script =
        format!("echo $$ > /run/wireguard/{marker}; ip -o -4 addr show eth0; echo ready; exec sleep 600");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).env("MESHCRYPT_LAB_TEST", "1");
    let p0 = lab.spawn_with(&n0.namespace, &cmd, &private).expect("spawn on node 0");
    let log0 = wait_for_log(&p0.log, "ready");
    assert!(log0.contains(&n0.underlay_addr.to_string()), "runs in node 0's namespace: {log0}");

    // Node 1 must not see node 0's marker, and neither must the host.
    let script = format!(
        "if [ -e /run/wireguard/{marker} ]; then echo shared; else echo private; fi; echo $MESHCRYPT_LAB_TEST; exec sleep 600"
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]).env("MESHCRYPT_LAB_TEST", "env-passed");
    let p1 = lab.spawn_with(&n1.namespace, &cmd, &private).expect("spawn on node 1");
    let log1 = wait_for_log(&p1.log, "env-passed");
    assert!(log1.contains("private"), "{log1}");
    assert!(!dir.join(&marker).exists(), "the marker leaked to the host");

    assert!(lab.process_running(p0.pid) && lab.process_running(p1.pid));
    assert_eq!(lab.processes().len(), 2);
    lab.stop_process(p1.pid).expect("stop");
    assert!(!leftovers::pid_alive(p1.pid));
    assert_eq!(lab.processes().len(), 1);
    assert!(lab.stop_process(p1.pid).is_err(), "already stopped");

    // A process that ignores SIGTERM is killed after the grace period.
    let stubborn = lab
        .spawn(&n1.namespace, &["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"])
        .unwrap();
    wait_for_log(&stubborn.log, "ready");
    let started = Instant::now();
    lab.stop_process(stubborn.pid).expect("stop stubborn");
    assert!(!leftovers::pid_alive(stubborn.pid));
    assert!(started.elapsed() < Duration::from_secs(5));

    let prefix = lab.prefix().to_string();
    drop(lab);
    assert!(!leftovers::pid_alive(p0.pid));
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
}
