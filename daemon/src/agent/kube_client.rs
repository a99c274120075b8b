//! The Kubernetes client: from an explicit kubeconfig, or the in-cluster service account.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::AgentError;

/// A client for `kubeconfig` if given, else kube's default chain (in-cluster, then `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, AgentError> {
    let config = match kubeconfig {
        Some(path) => {
            let file_error = |source| AgentError::KubeConfigFile { path: path.to_owned(), source };
            let file = Kubeconfig::read_from(path).map_err(file_error)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(file_error)?
        }
        None => kube::Config::infer().await.map_err(AgentError::KubeConfigInfer)?,
    };
    Ok(kube::Client::try_from(config)?)
}
