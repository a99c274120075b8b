//! What each client asked of the server and what it was sent: requests and response bytes (watch
//! streams included, as they are sent) per identity, so a test or a bench can state the API load
//! an agent puts on a control plane.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use tokio_stream::StreamExt as _;

use super::auth::Identity;

/// One client's traffic since the server started (or since [`TrafficLog::reset`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Requests received (a watch is one, however long it runs).
    pub requests: u64,
    /// Response body bytes sent, watch events and bookmarks included (no HTTP or TLS framing).
    pub bytes: u64,
    /// Watch events sent (each a line of a watch stream: an object's change or a bookmark).
    pub watch_events: u64,
}

/// Traffic per client: `admin`, `reader`, `node:NAME` or `anonymous`.
#[derive(Debug, Clone, Default)]
pub struct TrafficLog(Arc<Mutex<HashMap<String, Traffic>>>);

impl TrafficLog {
    /// The name a client's traffic is kept under.
    pub fn client(identity: Option<&Identity>) -> String {
        match identity {
            Some(Identity::Admin) => "admin".into(),
            Some(Identity::Reader) => "reader".into(),
            Some(Identity::Node(node)) => format!("node:{node}"),
            None => "anonymous".into(),
        }
    }

    /// Counts one request from `client`.
    pub fn request(&self, client: &str) {
        self.update(client, |t| t.requests += 1);
    }

    /// Counts `body`'s bytes (and, for a watch, its events) against `client` as they are sent.
    pub fn count_body(&self, client: String, body: Body, watch: bool) -> Body {
        let log = self.clone();
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            if let Ok(bytes) = &chunk {
                let len = bytes.len() as u64;
                log.update(&client, |t| {
                    t.bytes += len;
                    t.watch_events += u64::from(watch);
                });
            }
            chunk
        }))
    }

    /// Every client's traffic so far.
    pub fn snapshot(&self) -> BTreeMap<String, Traffic> {
        self.0.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default()
    }

    /// Forgets everything counted so far.
    pub fn reset(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }

    fn update(&self, client: &str, f: impl FnOnce(&mut Traffic)) {
        if let Ok(mut m) = self.0.lock() {
            match m.get_mut(client) {
                Some(t) => f(t),
                None => f(m.entry(client.to_owned()).or_default()),
            }
        }
    }
}
