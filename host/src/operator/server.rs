//! `/healthz`, `/readyz` and `/metrics` on `--listen-address`.
use super::telemetry::{Telemetry, CONTENT_TYPE};
use super::Health;
use anyhow::{Context as _, Result};
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `:8080` means every interface, as Go's listeners read it.
pub fn socket_address(listen: &str) -> String {
    match listen.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => listen.to_string(),
    }
}

/// Binds now (so a busy port fails at start-up) and returns the server to run.
pub async fn serve(
    listen: &str,
    health: Arc<Health>,
    telemetry: Arc<Telemetry>,
) -> Result<impl Future<Output = ()>> {
    let addr = socket_address(listen);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on --listen-address {listen}"))?;
    tracing::info!(
        "serving /healthz, /readyz and /metrics on {}",
        listener.local_addr()?
    );
    let ready = health;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let h = ready.clone();
                async move {
                    if h.ready.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ok".to_string())
                    } else {
                        let why = h.reason.lock().map(|r| r.clone()).unwrap_or_default();
                        (StatusCode::SERVICE_UNAVAILABLE, why)
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let telemetry = telemetry.clone();
                async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], telemetry.encode()) }
            }),
        );
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the health server stopped");
        }
    })
}
