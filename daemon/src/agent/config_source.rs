//! The live settings: a watch on the cluster ConfigMap, parsed by the strict parser over the
//! flags' values. A rejected ConfigMap leaves the last good settings in force.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::Notify;

use crate::config::settings::{KeyError, Settings};
use crate::error::AgentError;

/// Where the agent's settings come from.
pub struct ConfigSource {
    /// The flags' settings, used for absent keys (and for everything without a ConfigMap).
    base: Settings,
    /// The watched ConfigMap, if one is configured.
    watched: Option<(Store<ConfigMap>, String)>,
}

/// The outcome of reading the ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Settings to apply.
    Valid(Settings),
    /// The ConfigMap was rejected; the errors name each key.
    Rejected(Vec<KeyError>),
}

impl ConfigSource {
    /// Settings from flags only.
    pub fn flags_only(base: Settings) -> Self {
        Self { base, watched: None }
    }

    /// Watches ConfigMap `name` in `namespace`, waking the loop on every change.
    pub fn watch(
        client: kube::Client,
        namespace: &str,
        name: &str,
        base: Settings,
        wake: Arc<Notify>,
    ) -> Self {
        let api: Api<ConfigMap> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let label = format!("configmap {namespace}/{name}");
        let reader = super::watch::reflect(api, config, label, wake, |cm| cm.metadata.managed_fields = None);
        Self { base, watched: Some((reader, name.to_owned())) }
    }

    /// Waits for the first complete read of the ConfigMap (immediate without one).
    pub async fn ready(&self) -> Result<(), AgentError> {
        match &self.watched {
            Some((store, _)) => store
                .wait_until_ready()
                .await
                .map_err(|source| AgentError::StoreClosed { what: "configmap", source }),
            None => Ok(()),
        }
    }

    /// The flags' settings (what an absent key means).
    pub fn base(&self) -> &Settings {
        &self.base
    }

    /// The watched ConfigMap's data as the watch has it now (`None` without one, or before it is
    /// seen).
    pub fn data(&self) -> Option<BTreeMap<String, String>> {
        let (store, name) = self.watched.as_ref()?;
        let state = store.state();
        let cm = state.iter().find(|cm| cm.metadata.name.as_deref() == Some(name.as_str()))?;
        Some(cm.data.clone().unwrap_or_default())
    }

    /// The settings as of now.
    pub fn read(&self) -> Reading {
        let data: BTreeMap<String, String> = match &self.watched {
            Some((store, name)) => store
                .state()
                .iter()
                .find(|cm| cm.metadata.name.as_deref() == Some(name.as_str()))
                .and_then(|cm| cm.data.clone())
                .unwrap_or_default(),
            None => BTreeMap::new(),
        };
        match Settings::parse(&self.base, &data) {
            Ok(settings) => Reading::Valid(settings),
            Err(errors) => Reading::Rejected(errors),
        }
    }
}
