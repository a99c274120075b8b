//! `meta.k8s.io/v1` Table responses, which kubectl asks for when it prints `get` output. As on a
//! real server every column is sent; kubectl shows those of priority 1 only with `-o wide`.

use serde_json::{Value, json};

use super::resources::{EVENTS, NODES, PODS, ResourceDef};
use super::versions::{storage, to_storage};

fn column(name: &str, kind: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0})
}

/// A column kubectl shows only with `-o wide`.
fn wide_column(name: &str, description: &str) -> Value {
    json!({"name": name, "type": "string", "format": "", "description": description, "priority": 1})
}

/// Seconds since the Unix epoch of an RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` timestamp.
fn parse_unix(ts: &str) -> Option<u64> {
    let b = ts.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

fn age(obj: &Value) -> String {
    since(obj.pointer("/metadata/creationTimestamp"))
}

/// How long ago a timestamp (RFC 3339, optionally with fractional seconds) was, as kubectl prints
/// ages; `<unknown>` when it is missing.
fn since(ts: Option<&Value>) -> String {
    let Some(created) = ts.and_then(Value::as_str).and_then(parse_unix) else {
        return "<unknown>".into();
    };
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let secs = now.saturating_sub(created);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn name(obj: &Value) -> Value {
    obj.pointer("/metadata/name").cloned().unwrap_or(json!(""))
}

/// A Table of the objects, with columns suited to the resource.
pub fn table(res: &ResourceDef, items: &[Value], metadata: Value) -> Value {
    let (columns, rows): (Vec<Value>, Vec<Value>) = if *res == NODES {
        node_table(items)
    } else if storage(res) == EVENTS {
        event_table(res, items)
    } else if *res == PODS {
        (
            vec![
                column("Name", "string", "name", "Name of the pod"),
                column("Status", "string", "", "Phase"),
                column("Node", "string", "", "Node name"),
                column("Age", "string", "", "Creation time"),
            ],
            items
                .iter()
                .map(|o| {
                    let phase = o.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
                    let node = o.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("<none>");
                    json!({"cells": [name(o), phase, node, age(o)], "object": o})
                })
                .collect(),
        )
    } else {
        (
            vec![column("Name", "string", "name", "Name"), column("Age", "string", "", "Creation time")],
            items.iter().map(|o| json!({"cells": [name(o), age(o)], "object": o})).collect(),
        )
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The columns and rows of Events (either version), from the stored core/v1 fields: when last and
/// first seen (the series, the deprecated timestamps or `eventTime`), the object it is about, who
/// reported it, and how often.
fn event_table(res: &ResourceDef, items: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let columns = vec![
        column("Last Seen", "string", "", "When the event was last observed"),
        column("Type", "string", "", "Normal or Warning"),
        column("Reason", "string", "", "Why the event happened"),
        column("Object", "string", "", "The object the event is about"),
        wide_column("Subobject", "The part of the object the event is about"),
        wide_column("Source", "The component (and host) that reported the event"),
        column("Message", "string", "", "A human-readable description"),
        wide_column("First Seen", "When the event was first observed"),
        wide_column("Count", "How many times the event was observed"),
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the event", "priority": 1}),
    ];
    let rows = items
        .iter()
        .map(|view| {
            let e = to_storage(res, view.clone());
            let text = |path: &str| e.pointer(path).and_then(Value::as_str).unwrap_or("").to_string();
            let first_seen = match e.get("firstTimestamp").filter(|t| !t.is_null()) {
                Some(t) => since(Some(t)),
                None => since(e.get("eventTime")),
            };
            let (last_seen, count) = match e.get("series").filter(|s| s.is_object()) {
                Some(series) => {
                    (since(series.get("lastObservedTime")), series["count"].as_i64().unwrap_or(1))
                }
                None => (
                    e.get("lastTimestamp")
                        .filter(|t| !t.is_null())
                        .map_or(first_seen.clone(), |t| since(Some(t))),
                    e.get("count").and_then(Value::as_i64).filter(|c| *c > 0).unwrap_or(1),
                ),
            };
            let kind = text("/involvedObject/kind").to_lowercase();
            let object = match text("/involvedObject/name") {
                name if name.is_empty() => kind,
                name => format!("{kind}/{name}"),
            };
            let component = Some(text("/source/component"))
                .filter(|c| !c.is_empty())
                .unwrap_or(text("/reportingComponent"));
            let instance =
                Some(text("/source/host")).filter(|h| !h.is_empty()).unwrap_or(text("/reportingInstance"));
            let source = if instance.is_empty() { component } else { format!("{component}, {instance}") };
            let cells = json!([
                last_seen,
                text("/type"),
                text("/reason"),
                object,
                text("/involvedObject/fieldPath"),
                source,
                text("/message").trim(),
                first_seen,
                count,
                name(&e),
            ]);
            json!({"cells": cells, "object": view})
        })
        .collect();
    (columns, rows)
}

/// The columns and rows of Nodes: readiness (and cordoning), roles from the role labels, the
/// kubelet version, and with `-o wide` the first internal and external address and what the node
/// runs.
fn node_table(items: &[Value]) -> (Vec<Value>, Vec<Value>) {
    let columns = vec![
        column("Name", "string", "name", "Name of the node"),
        column("Status", "string", "", "Ready condition, and whether scheduling is disabled"),
        column("Roles", "string", "", "Roles, from the node-role.kubernetes.io/ labels"),
        column("Age", "string", "", "Creation time"),
        column("Version", "string", "", "Kubelet version"),
        wide_column("Internal-IP", "The first InternalIP address"),
        wide_column("External-IP", "The first ExternalIP address"),
        wide_column("OS-Image", "Operating system image"),
        wide_column("Kernel-Version", "Kernel version"),
        wide_column("Container-Runtime", "Container runtime and version"),
    ];
    let rows = items
        .iter()
        .map(|o| {
            let mut status = vec![match o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            {
                Some(c) if c["status"] == "True" => "Ready",
                Some(_) => "NotReady",
                None => "Unknown",
            }];
            if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push("SchedulingDisabled");
            }
            let info = |field: &str| {
                o.pointer(&format!("/status/nodeInfo/{field}"))
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty())
                    .unwrap_or("<unknown>")
            };
            let address = |kind: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|a| a["type"] == kind))
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
            };
            let version = o.pointer("/status/nodeInfo/kubeletVersion").and_then(Value::as_str).unwrap_or("");
            let cells = json!([
                name(o),
                status.join(","),
                roles(o),
                age(o),
                version,
                address("InternalIP"),
                address("ExternalIP"),
                info("osImage"),
                info("kernelVersion"),
                info("containerRuntimeVersion"),
            ]);
            json!({"cells": cells, "object": o})
        })
        .collect();
    (columns, rows)
}

/// A Node's roles, sorted and comma-separated: the suffixes of its `node-role.kubernetes.io/`
/// labels and the value of a `kubernetes.io/role` label; `<none>` without any.
fn roles(node: &Value) -> String {
    let mut roles = std::collections::BTreeSet::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            match (key.strip_prefix("node-role.kubernetes.io/"), value.as_str()) {
                (Some(role), _) if !role.is_empty() => {
                    roles.insert(role.to_string());
                }
                (None, Some(role)) if key == "kubernetes.io/role" && !role.is_empty() => {
                    roles.insert(role.to_string());
                }
                _ => {}
            }
        }
    }
    if roles.is_empty() { "<none>".into() } else { roles.into_iter().collect::<Vec<_>>().join(",") }
}
