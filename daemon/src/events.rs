//! Kubernetes Events (`events.k8s.io/v1`) as meshcrypt publishes them, for the agent and the
//! registry: a repeat of an Event is one object whose series counts the repeats and whose note is
//! the latest cause.
//!
//! kube-runtime's `Recorder` folds repeats the same way but keeps the first note, so a
//! `ReconcileFailed` that changed cause would go on showing the old one. This recorder keys an
//! Event by (type, reason, regarding object, action) like the Kubernetes event broadcaster's
//! isomorphic series, and patches `note` together with `series` (count, lastObservedTime) on each
//! repeat. A series lasts [`SERIES_WINDOW`] from its latest repeat (kube-runtime's and client-go's
//! 6 minutes); after that, or when the Event is gone (the API server keeps Events one hour by
//! default), the next repeat creates a new Event. Regarding references carry the object's uid when
//! it is known: `kubectl describe node` selects a Node's Events by `involvedObject.uid`.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};

/// How long a series of repeats stays one Event after its latest repeat: 6 minutes, as in
/// kube-runtime's `Recorder` and client-go's `tools/events` (`maxTriesPerEvent`/series window).
pub const SERIES_WINDOW: jiff::SignedDuration = jiff::SignedDuration::from_secs(6 * 60);

/// The longest note the API server accepts: `events.k8s.io/v1` validation refuses a `note`
/// over 1 kB (`NoteLengthLimit = 1024` in kubernetes `pkg/apis/core/validation/events.go`).
pub const NOTE_LIMIT: usize = 1024;

/// An Event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something went as it should (a milestone).
    Normal,
    /// Something an operator should look at.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// What makes two Events one series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    type_: EventType,
    reason: String,
    action: String,
    /// (apiVersion, kind, namespace, name, uid) of the regarding object.
    regarding: [Option<String>; 5],
}

/// An Event already written: its name and namespace, how often it happened, when it last did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    name: String,
    namespace: String,
    count: i32,
    last: jiff::Timestamp,
}

/// What to do with an Event at `now`, given the series it belongs to (if one was written).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    /// A new Event object.
    Create,
    /// A repeat: patch this Event's note and series to `count`.
    Repeat { count: i32 },
}

/// The decision: a repeat within [`SERIES_WINDOW`] of the series' latest occurrence patches it,
/// anything else creates an Event.
fn next_write(written: Option<&Written>, now: jiff::Timestamp) -> Write {
    match written {
        Some(w) if now.duration_since(w.last) <= SERIES_WINDOW => {
            Write::Repeat { count: w.count.saturating_add(1) }
        }
        _ => Write::Create,
    }
}

/// `note` cut to at most [`NOTE_LIMIT`] bytes, on a character boundary, marked with `…` if cut.
fn bounded_note(note: &str) -> String {
    if note.len() <= NOTE_LIMIT {
        return note.to_owned();
    }
    let marker = "…";
    let mut end = NOTE_LIMIT - marker.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &note[..end])
}

/// Publishes Events as one reporting controller and instance (`meshcrypt` and the node, or
/// `meshcrypt-registry` and the replica).
pub struct EventRecorder {
    client: kube::Client,
    controller: String,
    instance: String,
    series: Mutex<HashMap<SeriesKey, Written>>,
}

impl EventRecorder {
    /// A recorder reporting as `controller` (the Event's `reportingController`) from `instance`
    /// (its `reportingInstance`).
    pub fn new(client: kube::Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes an Event about `regarding` with `action` (e.g. `Reconcile`) at `now`. Events go
    /// to the regarding object's namespace, `default` for a cluster-scoped one. A failure is
    /// logged (WARN) and otherwise ignored: Events are evidence, never a reason to stop.
    pub async fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
        now: jiff::Timestamp,
    ) {
        let key = SeriesKey {
            type_,
            reason: reason.to_owned(),
            action: action.to_owned(),
            regarding: [
                regarding.api_version.clone(),
                regarding.kind.clone(),
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ],
        };
        let note = bounded_note(note);
        let written = self.lock().get(&key).cloned();
        let outcome = match (next_write(written.as_ref(), now), written) {
            (Write::Repeat { count }, Some(w)) => match self.repeat(&w, count, &note, now).await {
                Ok(()) => Ok(Written { count, last: now, ..w }),
                // Gone (expired or deleted): the repeat starts a new Event.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    self.create(&regarding, type_, reason, action, &note, now).await
                }
                Err(e) => Err(e),
            },
            _ => self.create(&regarding, type_, reason, action, &note, now).await,
        };
        match outcome {
            Ok(written) => {
                let mut series = self.lock();
                series.retain(|_, w| now.duration_since(w.last) <= SERIES_WINDOW);
                series.insert(key, written);
            }
            Err(e) => {
                tracing::warn!(error = %e, object = ?regarding.name, reason, "cannot publish a Kubernetes Event")
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SeriesKey, Written>> {
        self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn create(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
        now: jiff::Timestamp,
    ) -> Result<Written, kube::Error> {
        let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let subject = regarding.name.as_deref().unwrap_or(&self.controller);
        let name = format!("{subject}.{:x}", now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(type_.as_str().to_owned()),
            reason: Some(reason.to_owned()),
            action: Some(action.to_owned()),
            note: Some(note.to_owned()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        Ok(Written { name, namespace, count: 1, last: now })
    }

    async fn repeat(
        &self,
        w: &Written,
        count: i32,
        note: &str,
        now: jiff::Timestamp,
    ) -> Result<(), kube::Error> {
        let series = EventSeries { count, last_observed_time: MicroTime(now) };
        let patch = serde_json::json!({ "note": note, "series": series });
        let api: Api<Event> = Api::namespaced(self.client.clone(), &w.namespace);
        api.patch(&w.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_write_table() {
        let t0 = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let written = |count, last| Written { name: "n".into(), namespace: "default".into(), count, last };
        let after = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        for (case, previous, now, want) in [
            ("first", None, t0, Write::Create),
            ("repeat at once", Some(written(1, t0)), t0, Write::Repeat { count: 2 }),
            ("repeat at the window's end", Some(written(4, t0)), after(360), Write::Repeat { count: 5 }),
            ("after the window", Some(written(4, t0)), after(361), Write::Create),
            ("count saturates", Some(written(i32::MAX, t0)), after(1), Write::Repeat { count: i32::MAX }),
        ] {
            assert_eq!(next_write(previous.as_ref(), now), want, "{case}");
        }
    }

    #[test]
    fn notes_are_cut_to_the_api_limit_on_a_character_boundary() {
        assert_eq!(bounded_note("short"), "short");
        let exact = "a".repeat(NOTE_LIMIT);
        assert_eq!(bounded_note(&exact), exact);
        let long = "é".repeat(NOTE_LIMIT);
        let cut = bounded_note(&long);
        assert!(cut.len() <= NOTE_LIMIT && cut.ends_with('…'), "{} bytes", cut.len());
    }
}

#[cfg(test)]
mod api_tests {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::ListParams;
    use meshcrypt_test_apiserver::{ApiServerConfig, TestApiServer};

    use super::*;
    use crate::test_support::client;

    /// A repeat is one Event with its count and the latest note; a Node reference keeps its uid.
    #[tokio::test]
    async fn a_repeated_event_counts_and_tells_the_latest_cause() {
        let server = TestApiServer::start(ApiServerConfig::default()).await.expect("test API server");
        server.create(TestApiServer::node_object("node-1", "10.244.1.0/24", "198.18.0.1")).unwrap();
        let client = client(&server).await;
        let node = Api::<Node>::all(client.clone()).get("node-1").await.unwrap();
        let regarding = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some("node-1".into()),
            uid: node.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        let recorder = EventRecorder::new(client.clone(), "meshcrypt", "node-1");
        let t0 = jiff::Timestamp::now();
        let later = |s| t0 + jiff::SignedDuration::from_secs(s);
        for (at, note) in [(0, "first cause"), (10, "second cause"), (20, "third cause")] {
            recorder
                .publish(
                    regarding.clone(),
                    EventType::Warning,
                    "ReconcileFailed",
                    "Reconcile",
                    note,
                    later(at),
                )
                .await;
        }
        let events = Api::<Event>::namespaced(client.clone(), "default");
        let list = events.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(list.len(), 1, "{list:?}");
        let event = &list[0];
        assert_eq!(event.note.as_deref(), Some("third cause"));
        assert_eq!(event.series.as_ref().map(|s| s.count), Some(3));
        assert_eq!(event.regarding.as_ref().and_then(|r| r.uid.clone()), node.metadata.uid);
        assert_eq!(event.reporting_instance.as_deref(), Some("node-1"));

        // After the series window the same reason is a new Event.
        recorder
            .publish(regarding, EventType::Warning, "ReconcileFailed", "Reconcile", "again", later(400))
            .await;
        assert_eq!(events.list(&ListParams::default()).await.unwrap().items.len(), 2);
    }
}
