//! Where sealed bundles live: [`SecretStore`], implemented over AWS Secrets Manager by
//! [`SecretsManager`]. Secret values are binary (`SecretBinary`); a version is addressed by its
//! staging label, AWSCURRENT or AWSPREVIOUS, which Secrets Manager moves on every new version.

use std::future::Future;
use std::time::SystemTime;

use aws_sdk_secretsmanager::primitives::Blob;

use crate::error::Error;

/// A secret version by staging label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `AWSCURRENT`: the latest version.
    Current,
    /// `AWSPREVIOUS`: the one before it.
    Previous,
}

impl Stage {
    /// The staging label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Current => "AWSCURRENT",
            Self::Previous => "AWSPREVIOUS",
        }
    }
}

/// What the exchange needs of a secret store.
pub trait SecretStore: Send + Sync {
    /// The version id of the secret's current version (cheap: no value is read); `None` when the
    /// secret does not exist.
    fn current_version(&self, name: &str) -> impl Future<Output = Result<Option<String>, Error>> + Send;

    /// The value at `stage`; `None` when the secret or that stage does not exist.
    fn get(&self, name: &str, stage: Stage) -> impl Future<Output = Result<Option<Vec<u8>>, Error>> + Send;

    /// When each of the secret's versions was created, deprecated ones included (Secrets Manager
    /// keeps every version younger than 24 hours); empty when the secret does not exist.
    fn version_dates(&self, name: &str) -> impl Future<Output = Result<Vec<SystemTime>, Error>> + Send;

    /// Stores `value` as the secret's new current version, creating the secret if needed.
    /// `token` (32–64 characters) makes a retried write a no-op instead of a second version.
    fn put(&self, name: &str, value: &[u8], token: &str) -> impl Future<Output = Result<(), Error>> + Send;
}

/// AWS Secrets Manager, through the SDK's client (its region, endpoint and credentials are the
/// client's).
#[derive(Debug, Clone)]
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
    kms_key_id: Option<String>,
}

impl SecretsManager {
    /// A store over `client`; secrets it creates use the account's default key
    /// (`aws/secretsmanager`).
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        Self { client, kms_key_id: None }
    }

    /// Secrets this store creates are encrypted with KMS key `key` (id, ARN or alias), when
    /// given: a peer in another account can read them only under a customer-managed key.
    pub fn with_kms_key(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }
}

pub(crate) fn failed(
    op: &'static str,
    name: &str,
    source: impl Into<aws_sdk_secretsmanager::Error>,
) -> Error {
    Error::SecretsManager { op, name: name.to_owned(), source: Box::new(source.into()) }
}

impl SecretStore for SecretsManager {
    async fn current_version(&self, name: &str) -> Result<Option<String>, Error> {
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(out) => Ok(out.version_ids_to_stages().and_then(|versions| {
                versions
                    .iter()
                    .find(|(_, stages)| stages.iter().any(|s| s == Stage::Current.label()))
                    .map(|(id, _)| id.clone())
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(failed("DescribeSecret", name, e)),
        }
    }

    async fn version_dates(&self, name: &str) -> Result<Vec<SystemTime>, Error> {
        let mut pages = self
            .client
            .list_secret_version_ids()
            .secret_id(name)
            .include_deprecated(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => out.extend(
                    page.versions()
                        .iter()
                        .filter_map(|v| v.created_date())
                        .filter_map(|d| SystemTime::try_from(*d).ok()),
                ),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(failed("ListSecretVersionIds", name, e)),
            }
        }
        Ok(out)
    }

    async fn get(&self, name: &str, stage: Stage) -> Result<Option<Vec<u8>>, Error> {
        let request = self.client.get_secret_value().secret_id(name).version_stage(stage.label());
        match request.send().await {
            Ok(out) => Ok(out
                .secret_binary()
                .map(|b| b.as_ref().to_vec())
                .or_else(|| out.secret_string().map(|s| s.as_bytes().to_vec()))),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(failed("GetSecretValue", name, e)),
        }
    }

    async fn put(&self, name: &str, value: &[u8], token: &str) -> Result<(), Error> {
        let put = self
            .client
            .put_secret_value()
            .secret_id(name)
            .secret_binary(Blob::new(value))
            .client_request_token(token)
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => self
                .client
                .create_secret()
                .name(name)
                .secret_binary(Blob::new(value))
                .client_request_token(token)
                .set_kms_key_id(self.kms_key_id.clone())
                .description("meshcrypt cross-cluster bundle (written by the meshcrypt registry)")
                .send()
                .await
                .map(|_| ())
                .map_err(|e| failed("CreateSecret", name, e)),
            Err(e) => Err(failed("PutSecretValue", name, e)),
        }
    }
}
