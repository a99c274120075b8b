//! The AWS SDK configuration every AWS client of meshcrypt is built from (the registry's Secrets
//! Manager, `meshcrypt check aws`'s EC2): every call bounded in time.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region, SharedCredentialsProvider};

use crate::error::AgentError;

/// How long one AWS call may take, retries included (an unreachable endpoint must not stall a
/// loop or a command).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one attempt of a call may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// The configuration for `region` (`None`: the SDK's default region): the SDK's default credential
/// chain (IRSA, EKS Pod Identity, a profile), unless `endpoint` names another endpoint (moto in
/// tests), which takes its credentials from the environment's AWS_ACCESS_KEY_ID and
/// AWS_SECRET_ACCESS_KEY only (and `us-east-1` when no region is named). Either way a call gives
/// up after [`OPERATION_TIMEOUT`]: the SDK sets none by default, so an endpoint that accepts
/// connections but never answers would stall the caller.
pub async fn sdk_config(region: Option<&str>, endpoint: Option<&str>) -> Result<SdkConfig, AgentError> {
    let Some(endpoint) = endpoint else {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts());
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_owned()));
        }
        return Ok(loader.load().await);
    };
    let var = |name: &'static str| std::env::var(name).map_err(|_| AgentError::MissingEnv { name });
    let credentials =
        Credentials::new(var("AWS_ACCESS_KEY_ID")?, var("AWS_SECRET_ACCESS_KEY")?, None, None, "environment");
    Ok(endpoint_config(region, endpoint, credentials))
}

/// The configuration for `endpoint` (moto in tests) with `credentials`, in `region` (default
/// `us-east-1`), every call bounded by [`OPERATION_TIMEOUT`].
pub fn endpoint_config(region: Option<&str>, endpoint: &str, credentials: Credentials) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.unwrap_or("us-east-1").to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(credentials))
        .timeout_config(timeouts())
        .build()
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_timeout(OPERATION_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build()
}

/// An AWS error's code and message as the service gave them (an SDK error's Display is only
/// "service error"), else its Display.
pub fn error_detail(e: &(impl aws_sdk_ec2::error::ProvideErrorMetadata + std::fmt::Display)) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => e.to_string(),
    }
}
