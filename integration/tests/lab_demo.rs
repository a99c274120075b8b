//! The README's first command: `meshcrypt-lab` builds a lab with an agent per node, checks every
//! pod pair, shows each node's mesh and no plaintext, exits 0, and leaves nothing behind; with
//! `--no-agents` the same run shows the plaintext meshcrypt removes.

use std::process::Command;

use meshcrypt_netlab::lab::naming;

#[test]
fn the_demo_meshes_the_nodes_sees_no_plaintext_and_cleans_up() {
    let stdout = demo(&["--nodes", "3", "--pods-per-node", "2"]);
    assert!(stdout.contains("3 meshcrypt agents ready"), "{stdout}");
    assert!(stdout.contains("pod-0-0   pod-1-0"), "{stdout}");
    assert!(stdout.contains("plaintext pod packets seen = 0, other leaks = 0"), "{stdout}");
    for node in ["node-0", "node-1", "node-2"] {
        let row = stdout.lines().find(|l| l.starts_with(node) && l.contains("sha256:")).expect("mesh row");
        let peers: u32 = row.split_whitespace().nth(2).and_then(|p| p.parse().ok()).expect("peers column");
        assert_eq!(peers, 2, "{row}");
        assert!(row.contains("s ago"), "a handshake happened: {row}");
    }
    assert_cleaned_up(&stdout);
}

#[test]
fn without_agents_the_demo_shows_the_plaintext_baseline() {
    let stdout = demo(&["--nodes", "2", "--pods-per-node", "1", "--no-agents"]);
    assert!(stdout.contains("pod-0-0   pod-1-0"), "{stdout}");
    assert!(stdout.contains("plaintext-pod at outer"), "{stdout}");
    assert_cleaned_up(&stdout);
}

fn demo(args: &[&str]) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_meshcrypt-lab")).args(args).output().expect("run meshcrypt-lab");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("connectivity OK"), "{stdout}");
    stdout
}

fn assert_cleaned_up(stdout: &str) {
    // The demo's namespaces carry its pid, which has exited.
    let pid = out_pid(stdout).expect("the demo prints its lab prefix");
    let prefix = format!("{}{pid:x}-", naming::NAME_PREFIX);
    let left: Vec<String> =
        meshcrypt_netlab::lab::netns::list().into_iter().filter(|n| n.starts_with(&prefix)).collect();
    assert_eq!(left, Vec::<String>::new());
}

/// The pid in the demo's first line, `lab mclab-<pid hex>-0-: …`.
fn out_pid(stdout: &str) -> Option<u32> {
    let word = stdout.lines().next()?.split_whitespace().nth(1)?;
    naming::owner_pid(word)
}
