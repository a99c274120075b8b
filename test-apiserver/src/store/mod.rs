//! The object store: generic JSON objects per resource, one global resourceVersion, a bounded
//! event history for watches, and a broadcast of live events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::apply::ManagedFields;
use super::error::ApiServerError;
use super::resources::{self, ResourceDef};
use super::timestamp::now_rfc3339;
use super::validation::validate;
use super::versions::{storage, to_storage, to_view};

mod listing;
mod updates;

pub use updates::WriteContext;

/// Kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl EventType {
    /// The watch `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change to one object, as kept in the history and broadcast to watches.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The resourceVersion of this change.
    pub rv: u64,
    /// The resource the object belongs to.
    pub resource: ResourceDef,
    /// The object's namespace (empty when cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for a delete, the last state with the deletion's RV).
    pub object: Value,
    /// The object before the change, for modifications and deletions.
    pub previous: Option<Value>,
}

/// A message on the live broadcast.
#[derive(Debug, Clone)]
pub enum Broadcast {
    /// A change.
    Event(Arc<StoredEvent>),
    /// The history was compacted: open watches end with 410 Expired.
    Compacted,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Synthetic ADDED events for every existing object, then live events.
    Snapshot,
    /// Replay of the history after this resourceVersion, then live events.
    After(u64),
}

/// What a watch needs to begin: events to send first, the RV they bring the client to, and the
/// live receiver subscribed atomically with them.
pub struct WatchBegin {
    /// Events to send before live ones.
    pub initial: Vec<Arc<StoredEvent>>,
    /// The global resourceVersion at subscription time.
    pub rv: u64,
    /// Live events after `rv`.
    pub live: broadcast::Receiver<Broadcast>,
}

/// A page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// The objects on this page.
    pub items: Vec<Value>,
    /// The list's resourceVersion.
    pub rv: u64,
    /// The token for the next page, if there is one.
    pub continue_token: Option<String>,
    /// How many matching objects follow this page.
    pub remaining: usize,
}

type Key = (&'static str, &'static str, String, String);

/// One change about to be committed.
struct Change {
    kind: EventType,
    object: Value,
    managed: ManagedFields,
    previous: Option<Value>,
    /// A server-side dry run (`dryRun=All`): validate and answer, store nothing.
    dry_run: bool,
}

struct Stored {
    object: Value,
    managed: ManagedFields,
}

struct Inner {
    rv: u64,
    uid_counter: u64,
    objects: BTreeMap<Key, Stored>,
    /// The uids of the stored objects.
    uids: HashSet<String>,
    /// Owner uid → the objects naming it in `metadata.ownerReferences` (the garbage collector's
    /// index: a deletion looks up its dependents instead of scanning every object).
    dependents: HashMap<String, BTreeSet<Key>>,
    history: VecDeque<Arc<StoredEvent>>,
    /// Watches may start from any RV >= this one.
    floor: u64,
}

/// The shared store.
pub struct Store {
    inner: Mutex<Inner>,
    history_limit: usize,
    tx: broadcast::Sender<Broadcast>,
}

/// The key of an object of `res` (or of another version of its stored resource).
fn key(res: &ResourceDef, ns: &str, name: &str) -> Key {
    let stored = storage(res);
    let ns = if stored.namespaced { ns } else { "" };
    (stored.group, stored.plural, ns.to_string(), name.to_string())
}

fn object_name(res: &ResourceDef, _ns: &str, name: &str) -> String {
    if res.group.is_empty() {
        format!("{} \"{}\"", res.plural, name)
    } else {
        format!("{}.{} \"{}\"", res.plural, res.group, name)
    }
}

fn not_found(res: &ResourceDef, ns: &str, name: &str) -> ApiServerError {
    ApiServerError::NotFound(format!("{} not found", object_name(res, ns, name)))
}

/// The uids of an object's owners.
fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid")?.as_str().map(str::to_owned))
        .collect()
}

impl Inner {
    /// Adds the object stored at `key` to the uid and owner indexes.
    fn index(&mut self, key: &Key, object: &Value) {
        if let Some(uid) = meta_str(object, "uid") {
            self.uids.insert(uid.to_owned());
        }
        for owner in owner_uids(object) {
            self.dependents.entry(owner).or_default().insert(key.clone());
        }
    }

    /// Removes the object stored at `key`, if any, from the indexes.
    fn unindex(&mut self, key: &Key) {
        let Some(stored) = self.objects.get(key) else { return };
        let (uid, owners) = (meta_str(&stored.object, "uid").map(str::to_owned), owner_uids(&stored.object));
        if let Some(uid) = uid {
            self.uids.remove(&uid);
        }
        for owner in owners {
            if let Some(keys) = self.dependents.get_mut(&owner) {
                keys.remove(key);
                if keys.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Parses a resourceVersion string, 400 if it is not a number.
pub fn parse_rv(rv: &str) -> Result<u64, ApiServerError> {
    rv.parse::<u64>().map_err(|_| ApiServerError::BadRequest(format!("invalid resource version: {rv:?}")))
}

impl Store {
    /// An empty store keeping at most `history_limit` events for watches.
    pub fn new(history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(65_536);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                uid_counter: 0,
                objects: BTreeMap::new(),
                uids: HashSet::new(),
                dependents: HashMap::new(),
                history: VecDeque::new(),
                floor: 1,
            }),
            history_limit: history_limit.max(1),
            tx,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// Drops the whole watch history: watches from any RV before now get 410 Expired, and open
    /// watches end with 410 Expired.
    pub fn compact(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        inner.floor = inner.rv;
        let _ = self.tx.send(Broadcast::Compacted);
        tracing::info!(rv = inner.rv, "compacted watch history");
    }

    /// Stores a change (unless the object it leaves is invalid: then nothing changes), records it
    /// in the history and tells the watches. A dry run only answers with what would be stored: a
    /// new object without a resourceVersion, a changed or deleted one with its current one.
    fn commit(
        &self,
        inner: &mut Inner,
        res: &ResourceDef,
        key: Key,
        change: Change,
    ) -> Result<Value, ApiServerError> {
        let Change { kind, mut object, managed, previous, dry_run } = change;
        if kind != EventType::Deleted {
            validate(&object)?;
        }
        let rendered = managed.render();
        if rendered.as_array().is_some_and(|a| !a.is_empty()) {
            object["metadata"]["managedFields"] = rendered;
        } else if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
        if dry_run {
            match previous.as_ref().and_then(|p| meta_str(p, "resourceVersion")) {
                Some(rv) => object["metadata"]["resourceVersion"] = json!(rv),
                None => {
                    if let Some(m) = object["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                }
            }
            return Ok(object);
        }
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.unindex(&key);
        if kind == EventType::Deleted {
            inner.objects.remove(&key);
        } else {
            inner.index(&key, &object);
            inner.objects.insert(key.clone(), Stored { object: object.clone(), managed });
        }
        let event = Arc::new(StoredEvent {
            rv,
            resource: storage(res),
            namespace: key.2,
            kind,
            object: object.clone(),
            previous,
        });
        inner.history.push_back(event.clone());
        while inner.history.len() > self.history_limit {
            if let Some(old) = inner.history.pop_front() {
                inner.floor = old.rv;
            }
        }
        let _ = self.tx.send(Broadcast::Event(event));
        tracing::debug!(rv, kind = kind.as_str(), resource = res.plural, "stored change");
        Ok(object)
    }

    fn normalize_new(
        &self,
        inner: &mut Inner,
        res: &ResourceDef,
        ns: &str,
        mut obj: Value,
    ) -> Result<(Value, String), ApiServerError> {
        if !obj.is_object() {
            return Err(ApiServerError::BadRequest("the object must be a JSON object".into()));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != res.kind
        {
            return Err(ApiServerError::BadRequest(format!(
                "the kind {kind:?} does not match the resource {:?}",
                res.plural
            )));
        }
        obj["kind"] = json!(res.kind);
        obj["apiVersion"] = json!(res.api_version());
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        if res.namespaced {
            match meta_str(&obj, "namespace") {
                Some(given) if !given.is_empty() && given != ns => {
                    return Err(ApiServerError::BadRequest(format!(
                        "the namespace of the provided object ({given}) does not match the namespace sent on the request ({ns})"
                    )));
                }
                _ => obj["metadata"]["namespace"] = json!(ns),
            }
        } else if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        let name = match meta_str(&obj, "name") {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta_str(&obj, "generateName") {
                Some(prefix) if !prefix.is_empty() => {
                    inner.uid_counter += 1;
                    let n = format!("{prefix}{:05x}", inner.uid_counter);
                    obj["metadata"]["name"] = json!(n);
                    n
                }
                _ => {
                    return Err(ApiServerError::Invalid(format!(
                        "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                        res.kind
                    )));
                }
            },
        };
        if !valid_name(&name) {
            return Err(ApiServerError::Invalid(format!(
                "{} {name:?} is invalid: metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
                res.kind
            )));
        }
        Ok((obj, name))
    }

    fn check_namespace(&self, inner: &Inner, res: &ResourceDef, ns: &str) -> Result<(), ApiServerError> {
        if res.namespaced && !inner.objects.contains_key(&key(&resources::NAMESPACES, "", ns)) {
            return Err(ApiServerError::NotFound(format!("namespaces \"{ns}\" not found")));
        }
        Ok(())
    }

    /// Ensures a namespace exists (creating it if not).
    pub fn ensure_namespace(&self, ns: &str) -> Result<(), ApiServerError> {
        if self.lock().objects.contains_key(&key(&resources::NAMESPACES, "", ns)) {
            return Ok(());
        }
        match self.create(
            &resources::NAMESPACES,
            "",
            json!({"metadata": {"name": ns}}),
            &WriteContext::manager("test-apiserver"),
        ) {
            Ok(_) | Err(ApiServerError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn finish_create(&self, inner: &mut Inner, res: &ResourceDef, obj: &mut Value) {
        inner.uid_counter += 1;
        let n = inner.uid_counter;
        obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", n));
        obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("managedFields");
            m.remove("deletionTimestamp");
        }
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = json!(1);
        }
        if *res == resources::PODS && obj.get("status").is_none() {
            obj["status"] = json!({"phase": "Pending"});
        }
        if *res == resources::NAMESPACES && obj.get("status").is_none() {
            obj["status"] = json!({"phase": "Active"});
        }
        if *res == resources::SECRETS && obj.get("type").is_none() {
            obj["type"] = json!("Opaque");
        }
    }

    /// Creates an object (409 AlreadyExists if it exists).
    pub fn create(
        &self,
        res: &ResourceDef,
        ns: &str,
        obj: Value,
        ctx: &WriteContext,
    ) -> Result<Value, ApiServerError> {
        let mut inner = self.lock();
        let (obj, name) = self.normalize_new(&mut inner, res, ns, obj)?;
        let mut obj = to_storage(res, obj);
        let stored = storage(res);
        self.check_namespace(&inner, &stored, ns)?;
        let k = key(res, ns, &name);
        if inner.objects.contains_key(&k) {
            return Err(ApiServerError::AlreadyExists(format!(
                "{} already exists",
                object_name(res, ns, &name)
            )));
        }
        self.finish_create(&mut inner, &stored, &mut obj);
        let mut managed = ManagedFields::default();
        managed.record_update(&ctx.manager, &stored.api_version(), None, &obj);
        let created = self.commit(
            &mut inner,
            &stored,
            k,
            Change { kind: EventType::Added, object: obj, managed, previous: None, dry_run: ctx.dry_run },
        )?;
        Ok(to_view(res, created))
    }

    /// Gets an object.
    pub fn get(&self, res: &ResourceDef, ns: &str, name: &str) -> Result<Value, ApiServerError> {
        self.lock()
            .objects
            .get(&key(res, ns, name))
            .map(|s| to_view(res, s.object.clone()))
            .ok_or_else(|| not_found(res, ns, name))
    }

    /// Deletes an object, returning its last state (with the deletion's resourceVersion). A
    /// `precondition_rv` that does not match → 409. A `dry_run` deletes nothing.
    pub fn delete(
        &self,
        res: &ResourceDef,
        ns: &str,
        name: &str,
        precondition_rv: Option<&str>,
        dry_run: bool,
    ) -> Result<Value, ApiServerError> {
        let mut inner = self.lock();
        let k = key(res, ns, name);
        let Some(stored) = inner.objects.get(&k) else {
            return Err(not_found(res, ns, name));
        };
        if let Some(rv) = precondition_rv
            && Some(rv) != meta_str(&stored.object, "resourceVersion")
        {
            return Err(ApiServerError::Conflict {
                message: format!(
                    "Operation cannot be fulfilled on {}: the ResourceVersion in the precondition ({rv}) does not match the ResourceVersion in record",
                    object_name(res, ns, name)
                ),
                causes: Vec::new(),
            });
        }
        let old = stored.object.clone();
        let managed = stored.managed.clone();
        let deleted = self.commit(
            &mut inner,
            &storage(res),
            k,
            Change { kind: EventType::Deleted, object: old.clone(), managed, previous: Some(old), dry_run },
        )?;
        if !dry_run && let Some(uid) = meta_str(&deleted, "uid") {
            self.collect_dependents(&mut inner, uid);
        }
        Ok(to_view(res, deleted))
    }

    /// The garbage collector's background cascade, done at once: every object whose owners
    /// (`metadata.ownerReferences`, by uid) are all gone after `uid`'s object went, and then
    /// their dependents in turn. Kubernetes' collector does this shortly after the owner's
    /// deletion, with the same Deleted watch events.
    fn collect_dependents(&self, inner: &mut Inner, uid: &str) {
        let mut gone = vec![uid.to_owned()];
        while let Some(owner) = gone.pop() {
            let orphans: Vec<Key> = inner
                .dependents
                .get(&owner)
                .into_iter()
                .flatten()
                .filter(|k| {
                    let owners = inner.objects.get(*k).map(|s| owner_uids(&s.object)).unwrap_or_default();
                    owners.iter().all(|o| !inner.uids.contains(o))
                })
                .cloned()
                .collect();
            for k in orphans {
                let Some(res) = resources::ALL.iter().find(|r| r.group == k.0 && r.plural == k.1) else {
                    continue;
                };
                let Some(stored) = inner.objects.get(&k) else { continue };
                let (object, managed) = (stored.object.clone(), stored.managed.clone());
                gone.extend(meta_str(&object, "uid").map(str::to_owned));
                let change = Change {
                    kind: EventType::Deleted,
                    object: object.clone(),
                    managed,
                    previous: Some(object),
                    dry_run: false,
                };
                // A deletion stores nothing that could be invalid.
                let _ = self.commit(inner, res, k, change);
            }
        }
    }

    /// Every stored object of a resource (all namespaces).
    pub fn all(&self, res: &ResourceDef) -> Vec<Value> {
        let stored = storage(res);
        self.lock()
            .objects
            .iter()
            .filter(|((g, p, _, _), _)| *g == stored.group && *p == stored.plural)
            .map(|(_, s)| to_view(res, s.object.clone()))
            .collect()
    }
}
