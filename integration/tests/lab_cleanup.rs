//! Whatever happens inside a lab scope, nothing of the run is left: not after a panic, not after an
//! explicit teardown, and a later lab removes the namespaces of a run that was killed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Duration;

use meshcrypt_netlab::lab::{Lab, leftovers, naming, netns};
use meshcrypt_netlab::wait::until as wait_until;

#[test]
fn a_panic_inside_a_lab_scope_leaves_nothing_behind() {
    let seen: Mutex<Option<(String, Vec<u32>)>> = Mutex::new(None);
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::builder().nodes(2).pods_per_node(1).build().expect("build lab");
        let pod = lab.pods()[0].namespace.clone();
        let p = lab.spawn(&pod, &["sleep", "600"]).expect("spawn");
        wait_until("sleep to run", Duration::from_secs(5), || netns::pids(&pod).contains(&p.pid));
        *seen.lock().unwrap() = Some((lab.prefix().to_string(), vec![p.pid]));
        panic!("scenario failed on purpose");
    }));
    assert!(result.is_err(), "the scope must have panicked");
    let (prefix, pids) = seen.lock().unwrap().take().expect("lab was built");
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
    assert_eq!(leftovers::root_links_with_lab_names(), Vec::<String>::new());
    for pid in pids {
        assert!(!leftovers::pid_alive(pid), "pid {pid} survived the panic");
    }
}

#[test]
fn a_panic_inside_run_in_propagates_and_the_lab_still_cleans_up() {
    let mut prefix = String::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::builder().nodes(1).pods_per_node(1).build().expect("build lab");
        prefix = lab.prefix().to_string();
        let ns = lab.pods()[0].namespace.clone();
        let _: () = lab.run_in(&ns, || panic!("inside the namespace")).unwrap();
    }));
    assert!(result.is_err());
    assert!(!prefix.is_empty());
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn explicit_teardown_is_complete_and_idempotent() {
    let mut lab = Lab::builder().nodes(2).pods_per_node(2).build().expect("build lab");
    let prefix = lab.prefix().to_string();
    let log_dir = lab.log_dir().to_path_buf();
    let p = lab.spawn(&lab.nodes()[1].namespace.clone(), &["sleep", "600"]).expect("spawn");
    lab.teardown().expect("teardown");
    lab.teardown().expect("second teardown is a no-op");
    assert_eq!(leftovers::namespaces_with_prefix(&prefix), Vec::<String>::new());
    assert!(!leftovers::pid_alive(p.pid));
    assert!(!log_dir.exists());
    assert!(lab.nodes().is_empty() && lab.pods().is_empty());
}

#[test]
fn a_new_lab_sweeps_namespaces_of_dead_runs() {
    // A pid that certainly no longer exists: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("reap");
    let stale = format!("{}{dead:x}-0-node-0", naming::NAME_PREFIX);
    assert_eq!(naming::owner_pid(&stale), Some(dead));
    netns::create(&stale).expect("create stale namespace");
    assert!(netns::exists(&stale));

    let lab = Lab::builder().nodes(1).pods_per_node(0).build().expect("build lab");
    let still_there = netns::exists(&stale);
    if still_there {
        let _ = netns::delete(&stale);
    }
    assert!(!still_there, "the stale namespace {stale} was not swept");
    // Namespaces of live runs (this one) are kept.
    assert!(netns::exists(lab.underlay_ns()));
}
