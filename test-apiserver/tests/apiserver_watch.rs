//! kube-rs's watcher and paged lists against the in-process test API server: list-watch and
//! streaming-list modes, updates, deletes, recovery from 410 Expired after compaction, and Events
//! watched through either of their two versions.

mod apiserver_support;

use std::collections::BTreeSet;
use std::time::Duration;

use apiserver_support::{DEADLINE, annotate, client, eventually, node};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use meshcrypt_test_apiserver::{ApiServerConfig, TestApiServer};
use serde_json::json;
use tokio::sync::mpsc;

/// What the test saw from the watcher, simplified.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Init,
    InitApply(String, Option<String>),
    InitDone,
    Apply(String, Option<String>),
    Delete(String),
    Error(String),
}

fn summary(n: &Node) -> (String, Option<String>) {
    let name = n.metadata.name.clone().unwrap_or_default();
    let ann = n.metadata.annotations.as_ref().and_then(|a| a.get("meshcrypt.dev/x")).cloned();
    (name, ann)
}

struct Watch {
    rx: mpsc::UnboundedReceiver<Seen>,
    seen: Vec<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(api: Api<Node>, config: watcher::Config) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, config).boxed();
            while let Some(item) = stream.next().await {
                let seen = match item {
                    Ok(watcher::Event::Init) => Seen::Init,
                    Ok(watcher::Event::InitApply(n)) => {
                        let (a, b) = summary(&n);
                        Seen::InitApply(a, b)
                    }
                    Ok(watcher::Event::InitDone) => Seen::InitDone,
                    Ok(watcher::Event::Apply(n)) => {
                        let (a, b) = summary(&n);
                        Seen::Apply(a, b)
                    }
                    Ok(watcher::Event::Delete(n)) => Seen::Delete(summary(&n).0),
                    Err(e) => Seen::Error(e.to_string()),
                };
                if tx.send(seen).is_err() {
                    return;
                }
            }
        });
        Self { rx, seen: Vec::new(), task }
    }

    /// Receives events until one satisfies `pred`; returns its index in `self.seen`.
    async fn until(&mut self, what: &str, pred: impl Fn(&Seen) -> bool) -> usize {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) => {
                    self.seen.push(ev.clone());
                    if pred(&ev) {
                        return self.seen.len() - 1;
                    }
                }
                Ok(None) => panic!("watcher ended while waiting for {what}; saw {:?}", self.seen),
                Err(_) => panic!("timed out waiting for {what}; saw {:?}", self.seen),
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watcher_follows_nodes(config: watcher::Config) {
    let server = TestApiServer::start(ApiServerConfig {
        bookmark_interval: Duration::from_millis(200),
        ..ApiServerConfig::default()
    })
    .await
    .unwrap();
    server.create(node("node-a", 1)).unwrap();
    server.create(node("node-b", 2)).unwrap();
    let api: Api<Node> = Api::all(client(&server, server.admin_token()).await);
    let mut w = Watch::start(api, config);

    let done = w.until("InitDone", |s| *s == Seen::InitDone).await;
    let initial: BTreeSet<String> = w.seen[..done]
        .iter()
        .filter_map(|s| match s {
            Seen::InitApply(n, _) => Some(n.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(initial, BTreeSet::from(["node-a".to_string(), "node-b".to_string()]));
    assert_eq!(w.seen[0], Seen::Init);

    // An annotation-only change arrives as an update.
    server.merge_patch("v1", "Node", None, "node-a", &annotate("meshcrypt.dev/x", "1"), false).unwrap();
    w.until("Apply of node-a with x=1", |s| *s == Seen::Apply("node-a".into(), Some("1".into()))).await;

    // A delete arrives as Delete.
    server.delete("v1", "Node", None, "node-b").unwrap();
    w.until("Delete of node-b", |s| *s == Seen::Delete("node-b".into())).await;

    // Drop the history: the open watch must end with 410 and the watcher relist.
    let before_compact = w.seen.len();
    server.compact();
    server.merge_patch("v1", "Node", None, "node-a", &annotate("meshcrypt.dev/x", "2"), false).unwrap();
    // The open watch ends with 410 Expired; the watcher relists (Init again) and then sees the
    // later state, either in the relist or as a following update.
    let relist = w.until("a relist after compaction", |s| *s == Seen::Init).await;
    assert!(relist >= before_compact);
    assert!(
        w.seen[before_compact..relist].iter().any(
            |s| matches!(s, Seen::Error(e) if e.contains("410") || e.to_lowercase().contains("expired"))
        ),
        "expected a 410 error before the relist, saw {:?}",
        &w.seen[before_compact..]
    );
    w.until(
        "node-a with x=2 after the relist",
        |s| matches!(s, Seen::InitApply(n, Some(x)) | Seen::Apply(n, Some(x)) if n == "node-a" && x == "2"),
    )
    .await;
    let after: Vec<&Seen> = w.seen[relist..].iter().collect();
    assert!(
        !after.iter().any(|s| matches!(s, Seen::InitApply(n, _) if n == "node-b")),
        "deleted node-b reappeared after relist: {after:?}"
    );
    // And the watch keeps working after the relist.
    server.create(node("node-c", 3)).unwrap();
    w.until(
        "node-c added after the relist",
        |s| matches!(s, Seen::Apply(n, _) | Seen::InitApply(n, _) if n == "node-c"),
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn watcher_list_watch_mode_sees_changes_and_recovers_from_410() {
    watcher_follows_nodes(watcher::Config::default()).await;
}

#[tokio::test]
async fn watcher_streaming_list_mode_sees_changes_and_recovers_from_410() {
    watcher_follows_nodes(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn list_pages_through_1200_nodes_with_continue_tokens() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    for i in 0..1200 {
        server.create(node(&format!("node-{i:04}"), i)).unwrap();
    }
    let api: Api<Node> = Api::all(client(&server, server.admin_token()).await);
    let mut names = BTreeSet::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    let mut rvs = BTreeSet::new();
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        // Changes while paging do not move the list's resourceVersion: every page reports the
        // first page's, so a watch from it replays what happened meanwhile.
        server
            .merge_patch(
                "v1",
                "Node",
                None,
                "node-0000",
                &annotate("meshcrypt.dev/x", &pages.to_string()),
                false,
            )
            .unwrap();
        rvs.insert(page.metadata.resource_version.clone().unwrap_or_default());
        assert!(page.items.len() <= 500);
        assert!(
            page.metadata.resource_version.as_deref().is_some_and(|rv| !rv.is_empty()),
            "a list carries a resourceVersion"
        );
        for n in &page.items {
            assert!(names.insert(n.metadata.name.clone().unwrap()), "duplicate across pages");
        }
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
        assert!(pages < 10, "paging does not terminate");
    }
    assert_eq!(names.len(), 1200);
    assert_eq!(pages, 3, "1200 nodes in pages of 500");
    assert_eq!(rvs.len(), 1, "all pages carry the first page's resourceVersion: {rvs:?}");

    // The watcher's paged initial list sees all of them too.
    let mut w = Watch::start(api, watcher::Config::default());
    let done = w.until("InitDone", |s| *s == Seen::InitDone).await;
    let listed = w.seen[..done].iter().filter(|s| matches!(s, Seen::InitApply(..))).count();
    assert_eq!(listed, 1200);
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_410_inside_a_200_stream() {
    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    let api: Api<Node> = Api::all(client(&server, server.admin_token()).await);
    let old_rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    server.merge_patch("v1", "Node", None, "node-a", &annotate("meshcrypt.dev/x", "1"), false).unwrap();

    // Before compaction the history replays the change after old_rv.
    let mut stream = api.watch(&WatchParams::default().timeout(5), &old_rv).await.unwrap().boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Modified(n))) => {
            assert_eq!(summary(&n), ("node-a".into(), Some("1".into())));
            let rv: u64 = n.metadata.resource_version.unwrap().parse().unwrap();
            assert!(rv > old_rv.parse::<u64>().unwrap());
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    drop(stream);

    server.compact();
    let mut stream = api.watch(&WatchParams::default().timeout(5), &old_rv).await.unwrap().boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected an ERROR 410 event, got {other:?}"),
    }
    assert!(stream.next().await.is_none(), "the stream ends after the 410");

    // timeoutSeconds is honoured: an idle watch ends on its own.
    let started = tokio::time::Instant::now();
    let rv = server.resource_version().to_string();
    let mut stream =
        api.watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv).await.unwrap().boxed();
    let next = tokio::time::timeout(DEADLINE, stream.next()).await.expect("watch ends");
    assert!(next.is_none(), "no events expected, got {next:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn events_are_one_resource_watched_and_selected_through_either_version() {
    use k8s_openapi::api::core::v1::Event as CoreEvent;
    use k8s_openapi::api::events::v1::Event as NewEvent;

    let server = TestApiServer::start(ApiServerConfig::default()).await.unwrap();
    let c = client(&server, server.admin_token()).await;
    let core: Api<CoreEvent> = Api::namespaced(c.clone(), "default");
    let new: Api<NewEvent> = Api::namespaced(c, "default");
    let rv = server.resource_version().to_string();
    let params = |fields: &str| WatchParams::default().fields(fields).timeout(10).disable_bookmarks();
    let mut core_watch = core.watch(&params("involvedObject.uid=uid-a"), &rv).await.unwrap().boxed();
    let mut new_watch = new.watch(&params("regarding.name=node-b"), &rv).await.unwrap().boxed();

    // Created through events.k8s.io/v1, seen through core/v1 with the core field names.
    let ev: NewEvent = serde_json::from_value(json!({
        "metadata": {"name": "node-a.1"},
        "eventTime": "2025-01-01T00:00:00.000000Z",
        "reportingController": "meshcrypt", "reportingInstance": "node-a", "action": "Reconcile",
        "reason": "NoKey", "type": "Warning", "note": "first",
        "regarding": {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "uid-a"},
    }))
    .unwrap();
    new.create(&PostParams::default(), &ev).await.unwrap();
    match tokio::time::timeout(DEADLINE, core_watch.next()).await.expect("an event") {
        Some(Ok(WatchEvent::Added(e))) => {
            assert_eq!(e.message.as_deref(), Some("first"));
            assert_eq!(e.involved_object.name.as_deref(), Some("node-a"));
            assert_eq!(e.reporting_component.as_deref(), Some("meshcrypt"));
            assert_eq!(e.reporting_instance.as_deref(), Some("node-a"));
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    // A patch through core/v1 (the core names) is the same object's next note.
    let patch = Patch::Merge(json!({"message": "second"}));
    core.patch("node-a.1", &PatchParams::default(), &patch).await.unwrap();
    match tokio::time::timeout(DEADLINE, core_watch.next()).await.expect("an event") {
        Some(Ok(WatchEvent::Modified(e))) => assert_eq!(e.message.as_deref(), Some("second")),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    assert_eq!(new.get("node-a.1").await.unwrap().note.as_deref(), Some("second"));

    // Created through core/v1, seen through events.k8s.io/v1 with its field names.
    let ev: CoreEvent = serde_json::from_value(json!({
        "metadata": {"name": "node-b.1"},
        "involvedObject": {"kind": "Node", "name": "node-b"},
        "reason": "Started", "message": "legacy", "type": "Normal", "count": 2,
        "source": {"component": "kubelet", "host": "node-b"},
        "firstTimestamp": "2025-01-01T00:00:00Z", "lastTimestamp": "2025-01-01T00:01:00Z",
    }))
    .unwrap();
    core.create(&PostParams::default(), &ev).await.unwrap();
    match tokio::time::timeout(DEADLINE, new_watch.next()).await.expect("an event") {
        Some(Ok(WatchEvent::Added(e))) => {
            assert_eq!(e.note.as_deref(), Some("legacy"));
            assert_eq!(e.regarding.and_then(|r| r.name).as_deref(), Some("node-b"));
            assert_eq!(e.deprecated_count, Some(2));
            assert_eq!(e.deprecated_source.and_then(|s| s.component).as_deref(), Some("kubelet"));
            assert!(e.deprecated_last_timestamp.is_some());
        }
        other => panic!("expected ADDED, got {other:?}"),
    }

    // Lists of both versions hold both, selected by each version's field labels.
    assert_eq!(core.list(&ListParams::default()).await.unwrap().items.len(), 2);
    assert_eq!(new.list(&ListParams::default()).await.unwrap().items.len(), 2);
    let names = |items: Vec<String>| items.join(",");
    let by_source = core.list(&ListParams::default().fields("source=kubelet")).await.unwrap();
    assert_eq!(names(by_source.items.into_iter().filter_map(|e| e.metadata.name).collect()), "node-b.1");
    let by_controller =
        new.list(&ListParams::default().fields("reportingController=meshcrypt")).await.unwrap();
    assert_eq!(names(by_controller.items.into_iter().filter_map(|e| e.metadata.name).collect()), "node-a.1");
    assert_eq!(server.list("v1", "Event").unwrap().len(), 2);

    // A delete through either version is seen through the other.
    new.delete("node-b.1", &Default::default()).await.unwrap();
    assert!(core.get_opt("node-b.1").await.unwrap().is_none());
}

/// The server counts each client's requests, response bytes and watch events as they are sent,
/// so a bench can state what an agent receives per change: a node's watch sees each change of a
/// Node once, the admin's list counts against the admin only.
#[tokio::test]
async fn traffic_is_counted_per_client_as_it_is_sent() {
    // No bookmark while the test runs: every watch event counted is a change.
    let config =
        ApiServerConfig { bookmark_interval: Duration::from_secs(600), ..ApiServerConfig::default() };
    let server = TestApiServer::start(config).await.unwrap();
    server.create(node("node-a", 1)).unwrap();
    let token = server.add_node_token("node-a");
    let api: Api<Node> = Api::all(client(&server, &token).await);
    let mut watch = Watch::start(api, watcher::Config::default());
    watch.until("the first list", |s| *s == Seen::InitDone).await;
    // The list, then the watch: two requests, whatever the watch brings later.
    let listed = eventually("the list and the watch", || {
        let now = server.traffic()["node:node-a"];
        async move { (now.requests == 2).then_some(now) }
    })
    .await;
    assert!(listed.bytes > 0, "{listed:?}");

    let admin: Api<Node> = Api::all(client(&server, server.admin_token()).await);
    admin
        .patch("node-a", &PatchParams::default(), &Patch::Merge(annotate("meshcrypt.dev/x", "1")))
        .await
        .unwrap();
    watch.until("the change", |s| *s == Seen::Apply("node-a".into(), Some("1".into()))).await;
    let after = eventually("the event counted", || {
        let now = server.traffic()["node:node-a"];
        async move { (now.watch_events > listed.watch_events).then_some(now) }
    })
    .await;
    assert_eq!(after.requests, listed.requests, "a watch event is no request");
    assert!(after.bytes > listed.bytes + 200, "the Node went out whole: {listed:?} → {after:?}");
    assert!(server.traffic()["admin"].requests >= 1);

    server.reset_traffic();
    assert!(server.traffic().is_empty());
}
