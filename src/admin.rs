//! The admin HTTP server: `/livez` (the process serves requests), `/readyz` (caches are synced
//! and, with leader election, this replica leads) and `/metrics` (Prometheus text format).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Shared readiness flag; cloned into whatever decides readiness.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the operator ready or not ready.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the operator is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

/// The admin server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on admin address {address}")]
pub struct BindAdmin {
    address: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds the admin address; the returned future serves until `shutdown` resolves.
pub async fn serve(
    address: SocketAddr,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = std::io::Result<()>>, BindAdmin> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| BindAdmin { address, source })?;
    let local = listener.local_addr().unwrap_or(address);
    tracing::info!(address = %local, "admin server listening");
    let app = router(AdminState { readiness, metrics });
    Ok(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await })
}

fn router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
