//! The one way the agent watches the Kubernetes API: a reflector store fed by kube-runtime's
//! watcher, retried with a short capped backoff (a network agent should be back within seconds of
//! the API server, not the default 30 s), waking the reconcile loop on every change.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, ExponentialBackoff, watcher};
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
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).modify(trim)).backoff(backoff());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(e) => tracing::warn!(watch = %label, error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
    reader
}
