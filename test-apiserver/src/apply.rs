//! Server-side apply: field ownership per manager (as sets of leaf paths) and `managedFields`.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::error::ApiServerError;
use super::timestamp::now_rfc3339;

/// A path of map keys from the object root to a leaf (a scalar or an atomic list).
pub type FieldPath = Vec<String>;

/// Whether a manager's fields were set by apply or by an ordinary write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Create, update or a non-apply patch.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "Apply",
            Self::Update => "Update",
        }
    }
}

/// The fields one manager owns through one kind of operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedEntry {
    /// Field manager name.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// `apiVersion` the manager wrote with.
    pub api_version: String,
    /// When the entry last changed.
    pub time: String,
    /// The owned leaf paths.
    pub fields: BTreeSet<FieldPath>,
}

/// Field ownership of one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedFields(pub Vec<ManagedEntry>);

/// Whether a path is identity or server-owned bookkeeping, never owned by a manager.
fn is_unowned(path: &[String]) -> bool {
    match path.first().map(String::as_str) {
        Some("apiVersion" | "kind") => true,
        Some("metadata") => matches!(
            path.get(1).map(String::as_str),
            Some(
                "name"
                    | "namespace"
                    | "resourceVersion"
                    | "uid"
                    | "creationTimestamp"
                    | "managedFields"
                    | "generation"
                    | "selfLink"
                    | "deletionTimestamp"
            )
        ),
        _ => false,
    }
}

/// The owned leaves of an object: scalars and lists, addressed by their map-key path.
pub fn leaves(value: &Value) -> Vec<(FieldPath, Value)> {
    fn walk(v: &Value, path: &mut FieldPath, out: &mut Vec<(FieldPath, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            other => {
                if !path.is_empty() && !is_unowned(path) {
                    out.push((path.clone(), other.clone()));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

/// The value at a path, if every step is a map key that exists.
pub fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |cur, k| cur.get(k))
}

/// Sets the value at a path, creating (or replacing non-map) intermediate maps.
pub fn set_path(value: &mut Value, path: &[String], new: Value) {
    let mut cur = value;
    for k in &path[..path.len() - 1] {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur
            .as_object_mut()
            .map(|m| m.entry(k.clone()).or_insert_with(|| Value::Object(Map::new())))
            .unwrap_or_else(|| unreachable!("just made an object"));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(m) = cur {
        m.insert(path[path.len() - 1].clone(), new);
    }
}

/// Removes the value at a path, then removes maps below the top level that became empty.
pub fn remove_path(value: &mut Value, path: &[String]) {
    fn rec(cur: &mut Value, path: &[String], depth: usize) {
        let Value::Object(m) = cur else { return };
        if path.len() == 1 {
            m.remove(&path[0]);
            return;
        }
        if let Some(child) = m.get_mut(&path[0]) {
            rec(child, &path[1..], depth + 1);
            if depth >= 1 && child.as_object().is_some_and(Map::is_empty) {
                m.remove(&path[0]);
            }
        }
    }
    if !path.is_empty() {
        rec(value, path, 0);
    }
}

impl ManagedFields {
    fn entry_mut(&mut self, manager: &str, op: Operation, api_version: &str) -> &mut ManagedEntry {
        let idx = match self.0.iter().position(|e| e.manager == manager && e.operation == op) {
            Some(i) => i,
            None => {
                self.0.push(ManagedEntry {
                    manager: manager.to_string(),
                    operation: op,
                    api_version: api_version.to_string(),
                    time: now_rfc3339(),
                    fields: BTreeSet::new(),
                });
                self.0.len() - 1
            }
        };
        let e = &mut self.0[idx];
        e.time = now_rfc3339();
        e.api_version = api_version.to_string();
        e
    }

    /// Records an ordinary write: the manager takes ownership of every leaf it added or changed
    /// (taking it from other managers); leaves that disappeared are owned by nobody.
    pub fn record_update(&mut self, manager: &str, api_version: &str, old: Option<&Value>, new: &Value) {
        let old_leaves: Vec<(FieldPath, Value)> = old.map(leaves).unwrap_or_default();
        let new_leaves = leaves(new);
        let new_paths: BTreeSet<&FieldPath> = new_leaves.iter().map(|(p, _)| p).collect();
        let changed: Vec<FieldPath> = new_leaves
            .iter()
            .filter(|(p, v)| !old_leaves.iter().any(|(op, ov)| op == p && ov == v))
            .map(|(p, _)| p.clone())
            .collect();
        for e in &mut self.0 {
            e.fields.retain(|p| new_paths.contains(p) && !changed.contains(p));
        }
        if !changed.is_empty() {
            let entry = self.entry_mut(manager, Operation::Update, api_version);
            entry.fields.extend(changed);
        }
        self.0.retain(|e| !e.fields.is_empty());
    }

    /// Server-side apply of `config` by `manager` onto `live` (an empty object when creating).
    /// Returns the new object. A leaf another manager owns with a different value is a conflict
    /// (409) unless `force`, which takes it over; conflicts on `allowed` leaves are taken over
    /// as if forced (the API server's client-side-apply upgrade path). Leaves this manager
    /// applied before and omits now are removed unless another manager also owns them.
    pub fn apply(
        &mut self,
        manager: &str,
        api_version: &str,
        live: &Value,
        config: &Value,
        force: bool,
        allowed: &BTreeSet<FieldPath>,
    ) -> Result<Value, ApiServerError> {
        let applied = leaves(config);
        let mut conflicts = Vec::new();
        for (path, value) in &applied {
            if get_path(live, path) == Some(value) {
                continue;
            }
            for e in &self.0 {
                if (e.manager == manager && e.operation == Operation::Apply) || !e.fields.contains(path) {
                    continue;
                }
                conflicts.push((e.manager.clone(), path.clone()));
            }
        }
        if !conflicts.is_empty() {
            let blocking: Vec<&(String, FieldPath)> =
                conflicts.iter().filter(|(_, p)| !allowed.contains(p)).collect();
            if !force && !blocking.is_empty() {
                let conflicts = blocking;
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|(m, p)| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with \"{m}\""),
                            "field": format!(".{}", p.join(".")),
                        })
                    })
                    .collect();
                let list: Vec<String> = conflicts
                    .iter()
                    .map(|(m, p)| format!("- conflict with \"{m}\": .{}", p.join(".")))
                    .collect();
                return Err(ApiServerError::Conflict {
                    message: format!(
                        "Apply failed with {} conflict{}: {}",
                        conflicts.len(),
                        if conflicts.len() == 1 { "" } else { "s" },
                        list.join("\n")
                    ),
                    causes,
                });
            }
            for (m, p) in &conflicts {
                for e in self.0.iter_mut().filter(|e| &e.manager == m) {
                    e.fields.remove(p);
                }
            }
        }
        let applied_paths: BTreeSet<FieldPath> = applied.iter().map(|(p, _)| p.clone()).collect();
        let previously: BTreeSet<FieldPath> = self
            .0
            .iter()
            .find(|e| e.manager == manager && e.operation == Operation::Apply)
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let mut out = live.clone();
        for path in previously.difference(&applied_paths) {
            let owned_elsewhere = self.0.iter().any(|e| {
                !(e.manager == manager && e.operation == Operation::Apply) && e.fields.contains(path)
            });
            if !owned_elsewhere {
                remove_path(&mut out, path);
            }
        }
        for (path, value) in applied {
            set_path(&mut out, &path, value);
        }
        let entry = self.entry_mut(manager, Operation::Apply, api_version);
        entry.fields = applied_paths;
        self.0.retain(|e| !e.fields.is_empty());
        Ok(out)
    }

    /// Reads `metadata.managedFields` as a client sent it (FieldsV1). Associative-list keys
    /// (`k:`, `v:`, `i:`) are read as ownership of the whole list, as this server models lists.
    pub fn parse(v: &Value) -> Option<Self> {
        fn walk(node: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
            let Some(m) = node.as_object() else { return };
            if m.is_empty() && !path.is_empty() {
                out.insert(path.clone());
            }
            for (k, child) in m {
                if let Some(field) = k.strip_prefix("f:") {
                    path.push(field.to_string());
                    walk(child, path, out);
                    path.pop();
                } else if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
        let mut entries = Vec::new();
        for e in v.as_array()? {
            let operation = match e.get("operation")?.as_str()? {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return None,
            };
            let mut fields = BTreeSet::new();
            if let Some(tree) = e.get("fieldsV1") {
                walk(tree, &mut Vec::new(), &mut fields);
            }
            entries.push(ManagedEntry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation,
                api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or("v1").to_string(),
                time: e.get("time").and_then(Value::as_str).map_or_else(now_rfc3339, str::to_string),
                fields,
            });
        }
        Some(Self(entries))
    }

    /// `metadata.managedFields` as a real server renders it (FieldsV1).
    pub fn render(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|e| {
                    let mut tree = Value::Object(Map::new());
                    for path in &e.fields {
                        let fpath: Vec<String> = path.iter().map(|k| format!("f:{k}")).collect();
                        set_path(&mut tree, &fpath, json!({}));
                    }
                    json!({
                        "manager": e.manager,
                        "operation": e.operation.as_str(),
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": tree,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(annotations: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "annotations": annotations}})
    }

    #[test]
    fn reapply_removes_omitted_and_keeps_others() {
        let mut mf = ManagedFields::default();
        let live = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
        let live =
            mf.apply("a", "v1", &live, &node(json!({"x": "1", "y": "2"})), false, &BTreeSet::new()).unwrap();
        let live = mf.apply("b", "v1", &live, &node(json!({"z": "3"})), false, &BTreeSet::new()).unwrap();
        let live = mf.apply("a", "v1", &live, &node(json!({"x": "1"})), false, &BTreeSet::new()).unwrap();
        assert_eq!(live["metadata"]["annotations"], json!({"x": "1", "z": "3"}));
        let err = mf.apply("b", "v1", &live, &node(json!({"x": "9"})), false, &BTreeSet::new()).unwrap_err();
        assert!(matches!(err, ApiServerError::Conflict { .. }));
        let live =
            mf.apply("b", "v1", &live, &node(json!({"x": "9", "z": "3"})), true, &BTreeSet::new()).unwrap();
        assert_eq!(live["metadata"]["annotations"], json!({"x": "9", "z": "3"}));
    }

    #[test]
    fn parses_what_it_renders() {
        let mut mf = ManagedFields::default();
        let empty = json!({"metadata": {"name": "n"}});
        mf.apply("a", "v1", &empty, &node(json!({"x": "1", "y": "2"})), false, &BTreeSet::new()).unwrap();
        let parsed = ManagedFields::parse(&mf.render()).unwrap();
        assert_eq!(parsed, mf);
    }

    #[test]
    fn update_takes_ownership() {
        let mut mf = ManagedFields::default();
        let empty = json!({"metadata": {"name": "n"}});
        let live = mf.apply("a", "v1", &empty, &node(json!({"x": "1"})), false, &BTreeSet::new()).unwrap();
        let mut changed = live.clone();
        changed["metadata"]["annotations"]["x"] = json!("2");
        mf.record_update("kubectl", "v1", Some(&live), &changed);
        assert!(mf.apply("a", "v1", &changed, &node(json!({"x": "1"})), false, &BTreeSet::new()).is_err());
    }
}
