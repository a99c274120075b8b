//! Watch streams: one JSON event per line over a chunked 200 response, with history replay,
//! synthetic initial events, periodic bookmarks, `timeoutSeconds`, and 410 Expired in-stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::error::expired_status;
use super::resources::ResourceDef;
use super::selectors::Selectors;
use super::store::{Broadcast, EventType, Store, StoredEvent, WatchStart};
use super::table;
use super::versions::{storage, to_view};

/// What one watch request asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The watched resource.
    pub resource: ResourceDef,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// Label and field selectors.
    pub selectors: Selectors,
    /// Where to start.
    pub start: WatchStart,
    /// Whether to end the initial events with an `initial-events-end` bookmark.
    pub initial_events_end: bool,
    /// Whether periodic bookmarks were asked for.
    pub bookmarks: bool,
    /// How often to send bookmarks.
    pub bookmark_interval: Duration,
    /// When to end the stream.
    pub timeout: Duration,
    /// Send each object as a one-row `meta.k8s.io/v1` Table (kubectl `get -w`).
    pub as_table: bool,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

fn bookmark(res: &ResourceDef, rv: u64, initial_events_end: bool) -> Bytes {
    let mut obj = json!({
        "kind": res.kind,
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
    });
    if initial_events_end {
        obj["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &obj)
}

/// The line to send for an event under this request's filters, if any: a modification that moves
/// an object into or out of the selection becomes ADDED or DELETED; the object is sent as the
/// watched version serves it.
fn event_line(req: &WatchRequest, ev: &StoredEvent) -> Option<Bytes> {
    if ev.resource != storage(&req.resource) {
        return None;
    }
    if let Some(ns) = &req.namespace
        && req.resource.namespaced
        && &ev.namespace != ns
    {
        return None;
    }
    let now = req.selectors.matches(&ev.object);
    let kind = match ev.kind {
        EventType::Added | EventType::Deleted => now.then_some(ev.kind)?,
        EventType::Modified => {
            let before = ev.previous.as_ref().is_some_and(|p| req.selectors.matches(p));
            match (before, now) {
                (true, true) => EventType::Modified,
                (false, true) => EventType::Added,
                (true, false) => EventType::Deleted,
                (false, false) => return None,
            }
        }
    };
    let object = to_view(&req.resource, ev.object.clone());
    if req.as_table {
        let t = table::table(&req.resource, std::slice::from_ref(&object), json!({}));
        return Some(line(kind.as_str(), &t));
    }
    Some(line(kind.as_str(), &object))
}

/// A single ERROR event with a 410 Expired Status, as sent for a too-old resourceVersion.
pub fn expired_line(message: &str) -> Bytes {
    line("ERROR", &expired_status(message))
}

/// Starts a watch and returns the body stream; the stream ends at the timeout, on shutdown, on
/// compaction (after a 410 ERROR) or when the client goes away.
pub fn start(
    store: Arc<Store>,
    req: WatchRequest,
    mut shutdown: watch::Receiver<bool>,
) -> ReceiverStream<Result<Bytes, Infallible>> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    tokio::spawn(async move {
        let begin = match store.begin_watch(&req.resource, req.namespace.as_deref(), req.start) {
            Ok(b) => b,
            Err(floor) => {
                let rv = match req.start {
                    WatchStart::After(rv) => rv,
                    WatchStart::Snapshot => 0,
                };
                let _ = tx.send(Ok(expired_line(&format!("too old resource version: {rv} ({floor})")))).await;
                return;
            }
        };
        let mut live = begin.live;
        let mut last_rv = begin.rv;
        for ev in &begin.initial {
            if let Some(l) = event_line(&req, ev)
                && tx.send(Ok(l)).await.is_err()
            {
                return;
            }
        }
        if req.initial_events_end && tx.send(Ok(bookmark(&req.resource, last_rv, true))).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(req.timeout);
        tokio::pin!(deadline);
        let period = req.bookmark_interval.max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                biased;
                msg = live.recv() => match msg {
                    Ok(Broadcast::Event(ev)) => {
                        last_rv = ev.rv;
                        if let Some(l) = event_line(&req, &ev)
                            && tx.send(Ok(l)).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(Broadcast::Compacted) => {
                        let _ = tx.send(Ok(expired_line(&format!(
                            "too old resource version: {last_rv} (history compacted)"
                        )))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Ok(expired_line("watch fell too far behind"))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = shutdown.changed() => return,
                _ = &mut deadline => return,
                _ = ticker.tick() => {
                    if req.bookmarks && tx.send(Ok(bookmark(&req.resource, last_rv, false))).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    ReceiverStream::new(rx)
}
