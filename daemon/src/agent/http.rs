//! The health and metrics endpoint: `/healthz` (the loop is alive), `/readyz` (the latest pass
//! programmed the device, peers and routes) and `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// The latest pass succeeded: the device is programmed, every peer with a valid key is
    /// configured on it (handshakes start with traffic), and the routes and rules are in place. False until the first such pass, and again after a failed one.
    ready: AtomicBool,
    /// Why the agent is (not) ready, as `/readyz` says it.
    reason: Mutex<String>,
    /// Unix seconds of the loop's latest pass, successful or not.
    pub last_pass: AtomicU64,
}

impl Health {
    /// Records readiness and its reason; returns the readiness before.
    pub fn set_ready(&self, ready: bool, reason: String) -> bool {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = reason;
        self.ready.swap(ready, Ordering::Relaxed)
    }

    /// Readiness and its reason (empty before the first pass).
    pub fn readiness(&self) -> (bool, String) {
        let reason = self.reason.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (self.ready.load(Ordering::Relaxed), reason)
    }

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
    match s.health.readiness() {
        (true, reason) => (StatusCode::OK, format!("ready: {reason}\n")),
        (false, reason) if reason.is_empty() => {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: the mesh is not programmed yet\n".to_owned())
        }
        (false, reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
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
