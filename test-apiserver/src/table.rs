//! `meta.k8s.io/v1` Table responses, which kubectl asks for when it prints `get` output.

use serde_json::{Value, json};

use super::resources::{NODES, PODS, ResourceDef};

fn column(name: &str, kind: &str, format: &str, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0})
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
    let Some(created) =
        obj.pointer("/metadata/creationTimestamp").and_then(Value::as_str).and_then(parse_unix)
    else {
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
        (
            vec![
                column("Name", "string", "name", "Name of the node"),
                column("Status", "string", "", "Ready condition"),
                column("Roles", "string", "", "Roles"),
                column("Age", "string", "", "Creation time"),
                column("Version", "string", "", "Kubelet version"),
            ],
            items
                .iter()
                .map(|o| {
                    let ready = o
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                        .map(|c| if c["status"] == "True" { "Ready" } else { "NotReady" })
                        .unwrap_or("Unknown");
                    let version =
                        o.pointer("/status/nodeInfo/kubeletVersion").and_then(Value::as_str).unwrap_or("");
                    json!({"cells": [name(o), ready, "<none>", age(o), version], "object": o})
                })
                .collect(),
        )
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
