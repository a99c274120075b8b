//! Flow records on the lab: with `flow-records` on, TCP between pods on two nodes shows in each
//! node's flow log as an encrypted flow naming the pods, their namespace and labels, and the
//! nodes; pings to a node without a key (strict mode) show as dropped (`no_peer`) naming the pod
//! that sent them and the node it tried to reach; every line is valid against
//! docs/flow-record.schema.json. Turned off live, the records stop.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshcrypt_integration::cluster::{AgentOptions, Cluster, poll};
use serde_json::Value;

/// The lines of `path` so far, each parsed (a line that is not JSON fails the test).
fn lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

fn schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/flow-record.schema.json");
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the schema")).expect("JSON");
    jsonschema::options().should_validate_formats(true).build(&schema).expect("a valid schema")
}

/// The first line of `path` that `matches`, waiting up to `deadline` for the agent to write it.
fn record(path: &Path, deadline: Duration, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
    poll(deadline, || lines(path).into_iter().find(|r| matches(r)).ok_or_else(|| format!("no {what} yet")))
        .unwrap_or_else(|e| panic!("{e} in {}", path.display()))
}

#[test]
fn pod_traffic_is_recorded_encrypted_and_strict_drops_name_the_pod() {
    let mut options = AgentOptions::new().expect("meshcrypt binary");
    let binary = options.binary.clone();
    options.config_map = Some(
        [("flow-records", "true"), ("flow-interval", "10s"), ("flow-labels", "app")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
    );
    let mut cluster = Cluster::start(2, 1, options).expect("cluster");
    cluster.wait_ready(Duration::from_secs(30)).expect("ready");
    cluster.wait_converged(Duration::from_secs(30)).expect("complete mesh");
    let (client, server) =
        (cluster.lab.pods_on("node-0")[0].clone(), cluster.lab.pods_on("node-1")[0].clone());
    for pod in [&client, &server] {
        cluster.register_pod(pod).expect("Pod object");
    }
    // A node that never runs an agent: no key, so strict mode drops what is sent to its pods.
    let keyless = cluster.lab.add_node().expect("add node").name.clone();
    cluster.register_node(&keyless).expect("Node object");
    let keyless_pod = cluster.lab.pods_on(&keyless)[0].clone();

    // Pod objects reach the agents' watches: wait until a flow names them, sending as we go.
    let (log0, log1) = (cluster.flow_log("node-0"), cluster.flow_log("node-1"));
    let is_tcp_to_server = |r: &Value| {
        r["kind"] == "flow" && r["protocol"] == "tcp" && r["destination"]["ip"] == server.address.to_string()
    };
    let outbound = poll(Duration::from_secs(60), || {
        cluster.lab.tcp_exchange(&client, &server, &[5u8; 64 << 10]).map_err(|e| e.to_string())?;
        assert!(
            !cluster.lab.ping(&client, keyless_pod.address.into()).expect("ping"),
            "reached a keyless node"
        );
        lines(&log0)
            .into_iter()
            .find(|r| {
                is_tcp_to_server(r)
                    && r["direction"] == "outbound"
                    && r["source"]["pod"] == client.name.as_str()
            })
            .ok_or_else(|| "no outbound record naming the client pod yet".to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.agent_logs_tail(30)));
    assert_eq!(outbound["node"], "node-0");
    assert_eq!(outbound["encrypted"], true, "{outbound}");
    assert_eq!(outbound["source"]["namespace"], "default");
    assert_eq!(outbound["source"]["labels"]["app"], client.name.as_str());
    assert_eq!(outbound["source"]["node"], "node-0");
    assert_eq!(outbound["destination"]["node"], "node-1");
    assert_eq!(outbound["peer"]["node"], "node-1");
    assert!(
        outbound["packets"].as_u64() > Some(0) && outbound["bytes"].as_u64() > Some(64 << 10),
        "{outbound}"
    );

    // The server's node records the same flow coming in, naming its own pod.
    let inbound = record(&log1, Duration::from_secs(30), "inbound record", |r| {
        is_tcp_to_server(r) && r["direction"] == "inbound" && r["destination"]["pod"] == server.name.as_str()
    });
    assert_eq!((inbound["encrypted"].clone(), inbound["node"].clone()), (Value::Bool(true), "node-1".into()));
    assert_eq!(inbound["destination"]["labels"]["app"], server.name.as_str());
    assert_eq!(inbound["source"]["node"], "node-0");
    assert_eq!(inbound["peer"]["node"], "node-0");

    // Strict mode's drop: which pod tried to reach which address, and the node it belongs to.
    let dropped = record(&log0, Duration::from_secs(30), "dropped record", |r| {
        r["destination"]["ip"] == keyless_pod.address.to_string()
            && r["source"]["pod"] == client.name.as_str()
    });
    assert_eq!(dropped["encrypted"], false, "{dropped}");
    assert_eq!(dropped["dropReason"], "no_peer");
    assert_eq!(dropped["protocol"], "icmp");
    assert_eq!(dropped["destination"]["node"], keyless.as_str());
    assert!(dropped.get("peer").is_none(), "{dropped}");

    // Every line written is a valid record.
    let validator = schema();
    for path in [&log0, &log1] {
        for line in lines(path) {
            let errors: Vec<String> = validator.iter_errors(&line).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{line}: {errors:?}");
        }
    }

    // Off, live: node-1 counts nothing; on again, it counts at once.
    let setting_on_node1 = |want: &str| {
        let state_dir = cluster.state_dir("node-1");
        poll(Duration::from_secs(30), || {
            let out = Command::new(&binary)
                .args(["status", "-o", "json", "--state-dir"])
                .arg(&state_dir)
                .output()
                .map_err(|e| e.to_string())?;
            let doc: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let settings = doc["settings"].as_array().cloned().unwrap_or_default();
            let value = settings.iter().find(|s| s["key"] == "flow-records").map(|s| s["value"].clone());
            if value == Some(want.into()) {
                Ok(())
            } else {
                Err(format!("flow-records on node-1: {value:?}"))
            }
        })
        .expect("node-1 follows the ConfigMap");
    };
    cluster.set_config(&[("flow-records", "false")]).expect("ConfigMap");
    setting_on_node1("false");
    for _ in 0..3 {
        assert!(
            !cluster.lab.ping(&server, keyless_pod.address.into()).expect("ping"),
            "reached a keyless node"
        );
    }
    cluster.set_config(&[("flow-records", "true")]).expect("ConfigMap");
    setting_on_node1("true");
    let after = poll(Duration::from_secs(30), || {
        assert!(cluster.lab.ping(&server, client.address.into()).expect("ping"), "server → client");
        let records = lines(&log1);
        let new = records.iter().any(|r| {
            r["protocol"] == "icmp"
                && r["direction"] == "outbound"
                && r["destination"]["ip"] == client.address.to_string()
        });
        if new { Ok(records) } else { Err("no record of the ping after turning records on".to_owned()) }
    })
    .expect("records again");
    let while_off: Vec<&Value> =
        after.iter().filter(|r| r["destination"]["ip"] == keyless_pod.address.to_string()).collect();
    assert!(while_off.is_empty(), "counted while off: {while_off:?}");
}
