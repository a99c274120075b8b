//! One stored object served in more than one version, as a real API server does for Events:
//! stored once as core/v1, also served as events.k8s.io/v1 with Kubernetes' field mapping, for
//! objects and field selectors alike.

use serde_json::{Map, Value, json};

use super::resources::{EVENTS, EVENTS_V1, ResourceDef};

/// The Event fields whose names differ, as (core/v1, events.k8s.io/v1). Every other field
/// (`eventTime`, `series`, `action`, `reason`, `related`, `type`, `reportingInstance`, `metadata`)
/// has the same name and meaning in both.
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("message", "note"),
    ("involvedObject", "regarding"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// The resource whose objects a served resource reads and writes (itself unless it is another
/// version of a stored resource).
pub fn storage(res: &ResourceDef) -> ResourceDef {
    if *res == EVENTS_V1 { EVENTS } else { *res }
}

/// Renames the top-level fields of `obj` from one side of `renames` to the other and drops the
/// other side's names (unknown fields in the target version), then sets `apiVersion` and `kind`.
fn convert(
    obj: Value,
    renames: impl Fn(&str) -> Option<&'static str>,
    foreign: impl Fn(&str) -> bool,
    to: &ResourceDef,
) -> Value {
    let Value::Object(fields) = obj else { return obj };
    let mut out = Map::new();
    for (k, v) in fields {
        match renames(&k) {
            Some(renamed) => {
                out.insert(renamed.to_string(), v);
            }
            None if foreign(&k) => {}
            None => {
                out.insert(k, v);
            }
        }
    }
    out.insert("apiVersion".into(), json!(to.api_version()));
    out.insert("kind".into(), json!(to.kind));
    Value::Object(out)
}

/// An object (or a partial one, such as an apply configuration) as `res` serves it, converted to
/// its storage version.
pub fn to_storage(res: &ResourceDef, obj: Value) -> Value {
    if *res != EVENTS_V1 {
        return obj;
    }
    let rename = |k: &str| EVENT_RENAMES.iter().find(|(_, new)| *new == k).map(|(core, _)| *core);
    let foreign = |k: &str| EVENT_RENAMES.iter().any(|(core, _)| *core == k);
    convert(obj, rename, foreign, &EVENTS)
}

/// A stored object as `res` serves it.
pub fn to_view(res: &ResourceDef, obj: Value) -> Value {
    if *res != EVENTS_V1 {
        return obj;
    }
    let rename = |k: &str| EVENT_RENAMES.iter().find(|(core, _)| *core == k).map(|(_, new)| *new);
    let foreign = |k: &str| EVENT_RENAMES.iter().any(|(_, new)| *new == k);
    convert(obj, rename, foreign, &EVENTS_V1)
}

/// The path in the stored object that a field selector label of `res` selects on: Kubernetes maps
/// events.k8s.io's `regarding.*` and `reportingController` to their core names, and an Event's
/// `source` selects `source.component`.
pub fn storage_field_path(res: &ResourceDef, label: &str) -> String {
    if storage(res) != EVENTS {
        return label.to_string();
    }
    let (first, rest) = label.split_once('.').map_or((label, None), |(f, r)| (f, Some(r)));
    let first = if *res == EVENTS_V1 {
        EVENT_RENAMES.iter().find(|(_, new)| *new == first).map_or(first, |(core, _)| core)
    } else {
        first
    };
    match (first, rest) {
        ("source", None) => "source.component".to_string(),
        (f, None) => f.to_string(),
        (f, Some(r)) => format!("{f}.{r}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_between_versions() {
        let new = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "default"},
            "eventTime": "2025-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2025-01-01T00:01:00.000000Z"},
            "reportingController": "meshcrypt", "reportingInstance": "node-a",
            "action": "Reconcile", "reason": "NoKey", "type": "Warning", "note": "why",
            "regarding": {"kind": "Node", "name": "node-a", "uid": "u"},
            "related": {"kind": "Pod", "name": "p"},
            "deprecatedSource": {"component": "c"}, "deprecatedCount": 1,
            "deprecatedFirstTimestamp": "2025-01-01T00:00:00Z", "deprecatedLastTimestamp": "2025-01-01T00:00:01Z",
        });
        let core = to_storage(&EVENTS_V1, new.clone());
        assert_eq!(
            core,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "e", "namespace": "default"},
                "eventTime": "2025-01-01T00:00:00.000000Z",
                "series": {"count": 2, "lastObservedTime": "2025-01-01T00:01:00.000000Z"},
                "reportingComponent": "meshcrypt", "reportingInstance": "node-a",
                "action": "Reconcile", "reason": "NoKey", "type": "Warning", "message": "why",
                "involvedObject": {"kind": "Node", "name": "node-a", "uid": "u"},
                "related": {"kind": "Pod", "name": "p"},
                "source": {"component": "c"}, "count": 1,
                "firstTimestamp": "2025-01-01T00:00:00Z", "lastTimestamp": "2025-01-01T00:00:01Z",
            })
        );
        assert_eq!(to_view(&EVENTS_V1, core.clone()), new);
        assert_eq!(to_view(&EVENTS, core.clone()), core, "core/v1 serves what it stores");
    }

    #[test]
    fn fields_of_the_other_version_are_unknown() {
        let sent = json!({"note": "kept", "message": "an unknown field in events.k8s.io/v1"});
        assert_eq!(
            to_storage(&EVENTS_V1, sent),
            json!({"apiVersion": "v1", "kind": "Event", "message": "kept"})
        );
    }

    #[test]
    fn field_selector_labels_map_to_stored_fields() {
        assert_eq!(storage_field_path(&EVENTS_V1, "regarding.uid"), "involvedObject.uid");
        assert_eq!(storage_field_path(&EVENTS_V1, "reportingController"), "reportingComponent");
        assert_eq!(storage_field_path(&EVENTS, "involvedObject.name"), "involvedObject.name");
        assert_eq!(storage_field_path(&EVENTS, "source"), "source.component");
        assert_eq!(storage_field_path(&EVENTS_V1, "source"), "source.component");
        assert_eq!(storage_field_path(&super::super::resources::PODS, "spec.nodeName"), "spec.nodeName");
    }
}
