//! Writes to existing objects: update (PUT), the patch types, server-side apply (with the
//! client-side-apply upgrade path kubectl relies on), and the status subresource's scoping.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::super::apply::{FieldPath, ManagedFields, leaves};
use super::super::error::ApiServerError;
use super::super::patch::{self, PatchKind};
use super::super::resources::ResourceDef;
use super::super::versions::{storage, to_storage, to_view};
use super::{Change, EventType, Inner, Key, Store, key, meta_str, not_found, object_name};

/// The leaves a `kubectl apply --server-side` may take over without force: those recorded in the
/// client-side apply annotation (how a real API server lets kubectl upgrade from client-side to
/// server-side apply).
fn csa_upgrade_fields(manager: &str, live: &Value) -> BTreeSet<FieldPath> {
    if manager != "kubectl" {
        return BTreeSet::new();
    }
    live.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .map(|v| leaves(&v).into_iter().map(|(p, _)| p).collect())
        .unwrap_or_default()
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// After `kubectl apply --server-side`, a real API server rewrites an existing client-side apply
/// annotation to the applied configuration, so later client-side applies diff correctly.
fn sync_last_applied(manager: &str, config: &Value, new: &mut Value) {
    if manager != "kubectl"
        || new.pointer("/metadata/annotations").and_then(|a| a.get(LAST_APPLIED)).is_none()
    {
        return;
    }
    let mut last = config.clone();
    if let Some(a) = last.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        a.remove(LAST_APPLIED);
    }
    new["metadata"]["annotations"][LAST_APPLIED] = json!(last.to_string());
}

/// Who is writing and how, for field management.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// The field manager name.
    pub manager: String,
    /// The subresource written (`status`), if any.
    pub subresource: Option<String>,
    /// A server-side dry run (`dryRun=All`): validated and answered as if done, nothing stored.
    pub dry_run: bool,
}

impl WriteContext {
    /// A write to the main resource by this manager.
    pub fn manager(name: &str) -> Self {
        Self { manager: name.to_string(), subresource: None, dry_run: false }
    }
}

/// Keeps the parts of `new` a write may change: for the status subresource only `status`, for the
/// main resource of a type with a status subresource everything but `status`.
fn scope_write(res: &ResourceDef, sub: Option<&str>, old: &Value, new: Value) -> Value {
    match sub {
        Some("status") => {
            let mut out = old.clone();
            match new.get("status") {
                Some(s) => out["status"] = s.clone(),
                None => {
                    if let Some(m) = out.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            out
        }
        _ if res.has_status => {
            let mut out = new;
            if let Some(m) = out.as_object_mut() {
                match old.get("status") {
                    Some(s) => {
                        m.insert("status".into(), s.clone());
                    }
                    None => {
                        m.remove("status");
                    }
                }
            }
            out
        }
        _ => new,
    }
}

impl Store {
    /// Replaces an object (PUT). A `metadata.resourceVersion` that is not the current one → 409.
    pub fn update(
        &self,
        res: &ResourceDef,
        ns: &str,
        name: &str,
        obj: Value,
        ctx: &WriteContext,
    ) -> Result<Value, ApiServerError> {
        let mut inner = self.lock();
        let (obj, body_name) = self.normalize_new(&mut inner, res, ns, obj)?;
        let obj = to_storage(res, obj);
        if body_name != name {
            return Err(ApiServerError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let k = key(res, ns, name);
        let Some(stored) = inner.objects.get(&k) else {
            return Err(not_found(res, ns, name));
        };
        if let Some(rv) = meta_str(&obj, "resourceVersion")
            && !rv.is_empty()
            && Some(rv) != meta_str(&stored.object, "resourceVersion")
        {
            return Err(ApiServerError::Conflict {
                message: format!(
                    "Operation cannot be fulfilled on {}: the object has been modified; please apply your changes to the latest version and try again",
                    object_name(res, ns, name)
                ),
                causes: Vec::new(),
            });
        }
        let old = stored.object.clone();
        let managed = stored.managed.clone();
        let updated = self.write_existing(&mut inner, &storage(res), k, old, obj, managed, ctx)?;
        Ok(to_view(res, updated))
    }

    #[allow(clippy::too_many_arguments)]
    fn write_existing(
        &self,
        inner: &mut Inner,
        res: &ResourceDef,
        k: Key,
        old: Value,
        new: Value,
        mut managed: ManagedFields,
        ctx: &WriteContext,
    ) -> Result<Value, ApiServerError> {
        let mut new = scope_write(res, ctx.subresource.as_deref(), &old, new);
        // Identity and server-owned metadata always come from the stored object.
        for field in ["uid", "creationTimestamp", "name", "namespace", "generation", "deletionTimestamp"] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        // Field ownership a client changed explicitly is taken as given (`[]` changes nothing,
        // `[{}]` resets it and the write is then recorded), as a real server does.
        let sent = new["metadata"].get("managedFields").cloned();
        let mut track = true;
        match sent {
            Some(Value::Array(list))
                if !list.is_empty()
                    && old["metadata"].get("managedFields") != Some(&Value::Array(list.clone())) =>
            {
                if list.len() == 1 && list[0].as_object().is_some_and(|o| o.is_empty()) {
                    managed = ManagedFields::default();
                } else if let Some(parsed) = ManagedFields::parse(&Value::Array(list)) {
                    managed = parsed;
                    track = false;
                } else {
                    return Err(ApiServerError::Invalid("metadata.managedFields: Invalid value".into()));
                }
            }
            _ => {}
        }
        if let Some(m) = new["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        new["kind"] = json!(res.kind);
        new["apiVersion"] = json!(res.api_version());
        if new.get("spec") != old.get("spec") {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        let mut comparable_old = old.clone();
        let mut comparable_new = new.clone();
        for v in [&mut comparable_old, &mut comparable_new] {
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("resourceVersion");
                m.remove("managedFields");
            }
        }
        let ownership_changed =
            !track || old["metadata"].get("managedFields").cloned().unwrap_or(json!([])) != managed.render();
        if comparable_old == comparable_new && !ownership_changed {
            // A no-op write does not bump the resourceVersion (like a real server).
            return Ok(old);
        }
        if track {
            managed.record_update(&ctx.manager, &res.api_version(), Some(&comparable_old), &comparable_new);
        }
        self.commit(
            inner,
            res,
            k,
            Change {
                kind: EventType::Modified,
                object: new,
                managed,
                previous: Some(old),
                dry_run: ctx.dry_run,
            },
        )
    }

    /// Patches an object with a JSON, merge or strategic merge patch, or server-side applies
    /// (`force` only matters for apply; apply creates a missing object). The patch is made to the
    /// object as `res` serves it.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &self,
        res: &ResourceDef,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        force: bool,
        ctx: &WriteContext,
    ) -> Result<Value, ApiServerError> {
        let patched = self.patch_stored(res, ns, name, kind, body, force, ctx)?;
        Ok(to_view(res, patched))
    }

    /// [`Store::patch`], answering with the stored object.
    #[allow(clippy::too_many_arguments)]
    fn patch_stored(
        &self,
        view: &ResourceDef,
        ns: &str,
        name: &str,
        kind: PatchKind,
        body: &[u8],
        force: bool,
        ctx: &WriteContext,
    ) -> Result<Value, ApiServerError> {
        let res = &storage(view);
        let mut inner = self.lock();
        let k = key(res, ns, name);
        if kind == PatchKind::Apply {
            let config: Value = yaml_serde::from_slice(body)
                .map_err(|e| ApiServerError::BadRequest(format!("invalid apply configuration: {e}")))?;
            if !config.is_object() {
                return Err(ApiServerError::BadRequest("an apply configuration must be an object".into()));
            }
            if let Some(n) = meta_str(&config, "name")
                && n != name
            {
                return Err(ApiServerError::BadRequest(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            if config.get("apiVersion").and_then(Value::as_str) != Some(view.api_version().as_str())
                || config.get("kind").and_then(Value::as_str) != Some(view.kind)
            {
                return Err(ApiServerError::BadRequest(format!(
                    "an apply configuration for {} needs apiVersion {:?} and kind {:?}",
                    view.plural,
                    view.api_version(),
                    view.kind
                )));
            }
            let config = to_storage(view, config);
            let config = match ctx.subresource.as_deref() {
                Some("status") => json!({"status": config.get("status").cloned().unwrap_or(json!({}))}),
                _ => {
                    let mut c = config;
                    if res.has_status
                        && let Some(m) = c.as_object_mut()
                    {
                        m.remove("status");
                    }
                    c
                }
            };
            if let Some(rv) = meta_str(&config, "resourceVersion")
                && Some(rv) != inner.objects.get(&k).and_then(|s| meta_str(&s.object, "resourceVersion"))
            {
                return Err(ApiServerError::Conflict {
                    message: format!(
                        "Operation cannot be fulfilled on {}: the object has been modified; please apply your changes to the latest version and try again",
                        object_name(view, ns, name)
                    ),
                    causes: Vec::new(),
                });
            }
            return match inner.objects.get(&k) {
                Some(stored) => {
                    let old = stored.object.clone();
                    let mut managed = stored.managed.clone();
                    let mut base = old.clone();
                    if let Some(m) = base["metadata"].as_object_mut() {
                        m.remove("managedFields");
                    }
                    let allowed = csa_upgrade_fields(&ctx.manager, &old);
                    let mut new =
                        managed.apply(&ctx.manager, &res.api_version(), &base, &config, force, &allowed)?;
                    sync_last_applied(&ctx.manager, &config, &mut new);
                    // Field ownership was already updated by `apply`.
                    self.write_applied(&mut inner, res, k, old, new, managed, ctx)
                }
                None => {
                    if ctx.subresource.is_some() {
                        return Err(not_found(view, ns, name));
                    }
                    self.check_namespace(&inner, res, ns)?;
                    let mut managed = ManagedFields::default();
                    let mut base = json!({"metadata": {"name": name}});
                    if res.namespaced {
                        base["metadata"]["namespace"] = json!(ns);
                    }
                    let new = managed.apply(
                        &ctx.manager,
                        &res.api_version(),
                        &base,
                        &config,
                        force,
                        &BTreeSet::new(),
                    )?;
                    let (mut new, _) = self.normalize_new(&mut inner, res, ns, new)?;
                    self.finish_create(&mut inner, res, &mut new);
                    self.commit(
                        &mut inner,
                        res,
                        k,
                        Change {
                            kind: EventType::Added,
                            object: new,
                            managed,
                            previous: None,
                            dry_run: ctx.dry_run,
                        },
                    )
                }
            };
        }
        let Some(stored) = inner.objects.get(&k) else {
            return Err(not_found(view, ns, name));
        };
        let old = stored.object.clone();
        let managed = stored.managed.clone();
        let mut doc = to_view(view, old.clone());
        match kind {
            PatchKind::Json => patch::apply_json_patch(&mut doc, body)?,
            PatchKind::Merge => patch::apply_merge_patch(&mut doc, body)?,
            PatchKind::Strategic => patch::apply_strategic_patch(&mut doc, body)?,
            PatchKind::Apply => unreachable!("handled above"),
        }
        let doc = to_storage(view, doc);
        if let Some(rv) = meta_str(&doc, "resourceVersion")
            && Some(rv) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiServerError::Conflict {
                message: format!(
                    "Operation cannot be fulfilled on {}: the object has been modified; please apply your changes to the latest version and try again",
                    object_name(view, ns, name)
                ),
                causes: Vec::new(),
            });
        }
        self.write_existing(&mut inner, res, k, old, doc, managed, ctx)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_applied(
        &self,
        inner: &mut Inner,
        res: &ResourceDef,
        k: Key,
        old: Value,
        new: Value,
        managed: ManagedFields,
        ctx: &WriteContext,
    ) -> Result<Value, ApiServerError> {
        let mut new = scope_write(res, ctx.subresource.as_deref(), &old, new);
        for field in ["uid", "creationTimestamp", "name", "namespace", "generation"] {
            if let Some(v) = old["metadata"].get(field) {
                new["metadata"][field] = v.clone();
            }
        }
        new["kind"] = json!(res.kind);
        new["apiVersion"] = json!(res.api_version());
        if new.get("spec") != old.get("spec") {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        let mut a = old.clone();
        let mut b = new.clone();
        for v in [&mut a, &mut b] {
            if let Some(m) = v["metadata"].as_object_mut() {
                m.remove("resourceVersion");
                m.remove("managedFields");
            }
        }
        let stored_managed = &inner.objects.get(&k).map(|s| s.managed.clone()).unwrap_or_default();
        if a == b
            && stored_managed
                .0
                .iter()
                .map(|e| (&e.manager, &e.fields))
                .eq(managed.0.iter().map(|e| (&e.manager, &e.fields)))
        {
            return Ok(old);
        }
        self.commit(
            inner,
            res,
            k,
            Change {
                kind: EventType::Modified,
                object: new,
                managed,
                previous: Some(old),
                dry_run: ctx.dry_run,
            },
        )
    }
}
