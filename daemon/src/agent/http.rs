//! The health and metrics endpoint: `/healthz` (the loop is alive), `/readyz` (the device and
//! routes are programmed) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::error::AgentError;

/// What the probes read, written by the reconcile loop.
#[derive(Debug, Default)]
pub struct Health {
    /// The device and routes have been programmed.
    pub ready: AtomicBool,
    /// Unix seconds of the loop's latest pass, successful or not.
    pub last_pass: AtomicU64,
}

impl Health {
    /// Records that the loop ran a pass now.
    pub fn tick(&self) {
        self.last_pass.store(unix_now(), Ordering::Relaxed);
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

struct Served {
    health: Arc<Health>,
    registry: Registry,
    stale_after: Duration,
}

/// Binds `addr` and serves until the process ends.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    registry: Registry,
    stale_after: Duration,
) -> Result<tokio::task::JoinHandle<()>, AgentError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Io { what: format!("bind the metrics address {addr}"), source })?;
    tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    let served = Arc::new(Served { health, registry, stale_after });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(served);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}

async fn healthz(State(s): State<Arc<Served>>) -> impl IntoResponse {
    let last = s.health.last_pass.load(Ordering::Relaxed);
    let age = unix_now().saturating_sub(last);
    if last == 0 || age <= s.stale_after.as_secs() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("reconcile loop stalled for {age}s\n"))
    }
}

async fn readyz(State(s): State<Arc<Served>>) -> impl IntoResponse {
    if s.health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "mesh not programmed yet\n")
    }
}

async fn metrics(State(s): State<Arc<Served>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &s.registry) {
        Ok(()) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
