//! The registry's Secrets Manager clients: one per region its secrets live in, every call bounded
//! in time.

use crate::error::AgentError;

pub use crate::aws::OPERATION_TIMEOUT;

/// A Secrets Manager client for `region` from [`crate::aws::sdk_config`] (the default credential
/// chain, or with `endpoint` the environment's keys; every call bounded by [`OPERATION_TIMEOUT`]).
pub async fn client(
    region: Option<&str>,
    endpoint: Option<&str>,
) -> Result<aws_sdk_secretsmanager::Client, AgentError> {
    Ok(aws_sdk_secretsmanager::Client::new(&crate::aws::sdk_config(region, endpoint).await?))
}
