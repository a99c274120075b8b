//! The Kubernetes client: from an explicit kubeconfig, or the in-cluster service account.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::AgentError;

/// A client for `kubeconfig` if given, else kube's default chain (in-cluster, then `$KUBECONFIG`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, AgentError> {
    Ok(kube::Client::try_from(config(kubeconfig).await?)?)
}

/// The client configuration [`client`] uses (its `cluster_url` names the API server).
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, AgentError> {
    Ok(match kubeconfig {
        Some(path) => {
            let file_error = |source| AgentError::KubeConfigFile { path: path.to_owned(), source };
            let file = Kubeconfig::read_from(path).map_err(file_error)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(file_error)?
        }
        None => kube::Config::infer().await.map_err(AgentError::KubeConfigInfer)?,
    })
}
