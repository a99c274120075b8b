//! JSON patch, JSON merge patch and strategic merge patch over generic JSON objects.

use serde_json::{Map, Value};

use super::error::ApiServerError;

/// The patch types of the `Content-Type` header (server-side apply is handled in `apply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchKind {
    /// The patch type of a `Content-Type` value, or 415.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiServerError> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiServerError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

/// How a list field merges under strategic merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListStrategy {
    /// Items are objects merged by this key.
    MergeKey(&'static str),
    /// Items are scalars, merged as a set union.
    MergePrimitive,
}

/// The list fields we know strategic merge keys for (a path of field names, list indexes omitted).
fn list_strategy(path: &[String]) -> Option<ListStrategy> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let s = match p.as_slice() {
        ["status", "addresses"] | ["status", "conditions"] => ListStrategy::MergeKey("type"),
        ["spec", "podCIDRs"] | ["metadata", "finalizers"] => ListStrategy::MergePrimitive,
        ["metadata", "ownerReferences"] => ListStrategy::MergeKey("uid"),
        ["spec", "containers" | "initContainers" | "ephemeralContainers"] => ListStrategy::MergeKey("name"),
        ["spec", "volumes"] => ListStrategy::MergeKey("name"),
        ["spec", "containers" | "initContainers", "env"] => ListStrategy::MergeKey("name"),
        ["spec", "containers" | "initContainers", "ports"] => ListStrategy::MergeKey("containerPort"),
        ["spec", "containers" | "initContainers", "volumeMounts"] => ListStrategy::MergeKey("mountPath"),
        ["status", "podIPs"] | ["spec", "podIPs"] => ListStrategy::MergeKey("ip"),
        _ => return None,
    };
    Some(s)
}

/// Applies an RFC 6902 JSON patch.
pub fn apply_json_patch(doc: &mut Value, body: &[u8]) -> Result<(), ApiServerError> {
    let patch: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiServerError::BadRequest(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(doc, &patch.0)
        .map_err(|e| ApiServerError::Invalid(format!("the JSON patch could not be applied: {e}")))
}

/// Applies an RFC 7386 JSON merge patch.
pub fn apply_merge_patch(doc: &mut Value, body: &[u8]) -> Result<(), ApiServerError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiServerError::BadRequest(format!("invalid merge patch: {e}")))?;
    if !patch.is_object() {
        return Err(ApiServerError::BadRequest("a merge patch must be a JSON object".into()));
    }
    json_patch::merge(doc, &patch);
    Ok(())
}

/// Applies a strategic merge patch: maps merge (null deletes), lists with a known merge key merge
/// by that key (`$patch: delete` removes an item), other lists are replaced; `$`-directives we do
/// not model (`$setElementOrder/…`, `$retainKeys`) are ignored.
pub fn apply_strategic_patch(doc: &mut Value, body: &[u8]) -> Result<(), ApiServerError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiServerError::BadRequest(format!("invalid strategic merge patch: {e}")))?;
    let Value::Object(patch) = patch else {
        return Err(ApiServerError::BadRequest("a strategic merge patch must be a JSON object".into()));
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Value::Object(target) = doc {
        strategic_merge_map(target, &patch, &mut Vec::new());
    }
    Ok(())
}

fn strategic_merge_map(target: &mut Map<String, Value>, patch: &Map<String, Value>, path: &mut Vec<String>) {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        target.clear();
        for (k, v) in patch {
            if !k.starts_with('$') {
                target.insert(k.clone(), strip_directives(v));
            }
        }
        return;
    }
    for (key, pv) in patch {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(del)) = (target.get_mut(field), pv) {
                items.retain(|i| !del.contains(i));
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        path.push(key.clone());
        match pv {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(pm) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(key);
                } else {
                    let entry = target.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                    if !entry.is_object() {
                        *entry = Value::Object(Map::new());
                    }
                    if let Value::Object(tm) = entry {
                        strategic_merge_map(tm, pm, path);
                    }
                }
            }
            Value::Array(items) => {
                let merged = match (list_strategy(path), target.get(key)) {
                    (Some(strategy), Some(Value::Array(existing))) => {
                        merge_list(existing, items, strategy, path)
                    }
                    _ => items.iter().filter(|i| i.get("$patch").is_none()).map(strip_directives).collect(),
                };
                target.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                target.insert(key.clone(), scalar.clone());
            }
        }
        path.pop();
    }
}

fn merge_list(
    existing: &[Value],
    patch: &[Value],
    strategy: ListStrategy,
    path: &mut Vec<String>,
) -> Vec<Value> {
    let mut out = existing.to_vec();
    match strategy {
        ListStrategy::MergePrimitive => {
            for item in patch {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
        }
        ListStrategy::MergeKey(key) => {
            for item in patch {
                let Some(kv) = item.get(key) else {
                    out.push(strip_directives(item));
                    continue;
                };
                let pos = out.iter().position(|e| e.get(key) == Some(kv));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        if let (Value::Object(tm), Value::Object(pm)) = (&mut out[i], item) {
                            strategic_merge_map(tm, pm, path);
                        }
                    }
                    (None, false) => out.push(strip_directives(item)),
                }
            }
        }
    }
    out
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_addresses_by_type() {
        let mut doc = json!({"status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "Hostname", "address": "n1"}
        ]}, "metadata": {"annotations": {"a": "1", "b": "2"}}});
        let patch = json!({"status": {"addresses": [
            {"type": "InternalIP", "address": "10.0.0.2"},
            {"type": "ExternalIP", "address": "1.2.3.4"},
            {"type": "Hostname", "$patch": "delete"}
        ]}, "metadata": {"annotations": {"a": null, "c": "3"}}});
        apply_strategic_patch(&mut doc, patch.to_string().as_bytes()).unwrap();
        assert_eq!(
            doc,
            json!({"status": {"addresses": [
                {"type": "InternalIP", "address": "10.0.0.2"},
                {"type": "ExternalIP", "address": "1.2.3.4"}
            ]}, "metadata": {"annotations": {"b": "2", "c": "3"}}})
        );
    }

    #[test]
    fn strategic_replaces_unknown_lists() {
        let mut doc = json!({"spec": {"taints": [{"key": "a"}]}});
        apply_strategic_patch(&mut doc, br#"{"spec":{"taints":[{"key":"b"}]}}"#).unwrap();
        assert_eq!(doc, json!({"spec": {"taints": [{"key": "b"}]}}));
    }
}
