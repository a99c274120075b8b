//! The one way the agent watches the Kubernetes API: a reflector store fed by kube-runtime's
//! watcher, retried with a short capped backoff (a network agent should be back within seconds of
//! the API server, not the default 30 s), waking the reconcile loop on every change of what the
//! agent keeps of an object (its trimmed form): a kubelet's heartbeat or a Pod's readiness flip
//! changes nothing the agent reads, and at 5,000 nodes the heartbeats alone are 17 a second.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::{Hash, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, ExponentialBackoff, watcher};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// Retries after 200 ms, doubling up to 5 s, with jitter; back to 200 ms after a minute of calm.
fn backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(ExponentialBackoff::from(exponential), Duration::from_secs(60))
}

/// Watches `api` with `config` into a store; `trim` drops fields the agent never reads.
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    label: String,
    wake: Arc<Notify>,
    trim: fn(&mut K),
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).modify(trim)).backoff(backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut wakes = Wakes::new(wake);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => wakes.seen(event),
                Err(e) => tracing::warn!(watch = %label, error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
    reader
}

/// Watches `api` with `config` (objects trimmed by `trim`), retried with the same backoff as
/// [`reflect`], without a store: for a watcher that turns each event into something else.
pub fn events<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    watcher(api, config).modify(trim).backoff(backoff())
}

/// Wakes the loop for the events that change what a store keeps (see [`Changes`]).
pub struct Wakes {
    changes: Changes,
    wake: Arc<Notify>,
}

impl Wakes {
    /// Wakes `wake`.
    pub fn new(wake: Arc<Notify>) -> Self {
        Self { changes: Changes::default(), wake }
    }

    /// Takes an event the store has applied; wakes the loop if it changed what the store keeps.
    pub fn seen<K: Resource + Serialize>(&mut self, event: watcher::Event<K>) {
        if self.changes.wakes(&fingerprinted(event)) {
            self.wake.notify_one();
        }
    }
}

/// An object's identity and a hash of what the agent keeps of it, its resourceVersion left out
/// (it moves with every write, also of fields the trim dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    key: (Option<String>, Option<String>),
    hash: u64,
}

fn fingerprint<K: Resource + Serialize>(mut object: K) -> Fingerprint {
    let meta = object.meta_mut();
    meta.resource_version = None;
    let key = (meta.namespace.clone(), meta.name.clone());
    let mut hasher = std::hash::DefaultHasher::new();
    // Serializing a typed object cannot fail. A missed change (a failure, or a 2⁻⁶⁴ collision)
    // would only wait for the next resync pass.
    hasher.write(&serde_json::to_vec(&object).unwrap_or_default());
    Fingerprint { key, hash: hasher.finish() }
}

/// `event` with its object replaced by the object's fingerprint.
fn fingerprinted<K: Resource + Serialize>(event: watcher::Event<K>) -> watcher::Event<Fingerprint> {
    match event {
        watcher::Event::Apply(k) => watcher::Event::Apply(fingerprint(k)),
        watcher::Event::Delete(k) => watcher::Event::Delete(fingerprint(k)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(k) => watcher::Event::InitApply(fingerprint(k)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Which watch events change what the agent keeps: every deletion and every completed (re)list,
/// and an added or modified object only when its fingerprint is new.
#[derive(Debug, Default)]
struct Changes {
    seen: HashMap<(Option<String>, Option<String>), u64>,
    /// The objects of a relist under way (the others are gone once it completes).
    listed: Option<HashSet<(Option<String>, Option<String>)>>,
}

impl Changes {
    /// Whether `event` should wake the loop (the store has applied it already).
    fn wakes(&mut self, event: &watcher::Event<Fingerprint>) -> bool {
        match event {
            watcher::Event::Apply(f) => self.seen.insert(f.key.clone(), f.hash) != Some(f.hash),
            watcher::Event::Delete(f) => {
                self.seen.remove(&f.key);
                true
            }
            watcher::Event::Init => {
                self.listed = Some(HashSet::new());
                false
            }
            watcher::Event::InitApply(f) => {
                self.seen.insert(f.key.clone(), f.hash);
                self.listed.get_or_insert_default().insert(f.key.clone());
                false
            }
            watcher::Event::InitDone => {
                let listed = self.listed.take().unwrap_or_default();
                self.seen.retain(|key, _| listed.contains(key));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event;

    fn f(name: &str, hash: u64) -> Fingerprint {
        Fingerprint { key: (None, Some(name.to_owned())), hash }
    }

    #[test]
    fn only_changes_of_what_the_agent_keeps_wake_the_loop() {
        let mut changes = Changes::default();
        let steps: [(&str, Event<Fingerprint>, bool); 11] = [
            ("a relist starts", Event::Init, false),
            ("listed", Event::InitApply(f("a", 1)), false),
            ("listed", Event::InitApply(f("b", 1)), false),
            ("the list complete", Event::InitDone, true),
            ("a heartbeat: nothing kept changed", Event::Apply(f("a", 1)), false),
            ("a new key", Event::Apply(f("a", 2)), true),
            ("a new Node", Event::Apply(f("c", 1)), true),
            ("a deletion", Event::Delete(f("c", 1)), true),
            ("a relist after a gap: b is gone", Event::Init, false),
            ("only a is listed", Event::InitApply(f("a", 2)), false),
            ("the list complete", Event::InitDone, true),
        ];
        for (what, event, wakes) in steps {
            assert_eq!(changes.wakes(&event), wakes, "{what}");
        }
        assert!(changes.wakes(&Event::Apply(f("b", 1))), "b came back after it was dropped");
        assert!(!changes.wakes(&Event::Apply(f("a", 2))));
    }

    #[test]
    fn the_fingerprint_ignores_the_resource_version() {
        let node = |version: &str, ip: &str| -> k8s_openapi::api::core::v1::Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n1", "resourceVersion": version},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
            }))
            .unwrap()
        };
        assert_eq!(fingerprint(node("1", "198.18.0.10")), fingerprint(node("2", "198.18.0.10")));
        assert_ne!(fingerprint(node("1", "198.18.0.10")), fingerprint(node("1", "198.18.0.11")));
    }
}
