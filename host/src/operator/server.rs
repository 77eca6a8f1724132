//! `/healthz`, `/readyz` and `/metrics` on `--listen-address`.
use super::{Context, Health};
use anyhow::{Context as _, Result};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

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
    ctx: Arc<OnceLock<Arc<Context>>>,
    mesh_provider: String,
) -> Result<impl Future<Output = ()>> {
    let addr = socket_address(listen);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on --listen-address {listen}"))?;
    tracing::info!(
        "serving /healthz, /readyz and /metrics on {}",
        listener.local_addr()?
    );
    let ready = health.clone();
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
                let ctx = ctx.clone();
                let health = health.clone();
                let provider = mesh_provider.clone();
                async move { metrics_text(ctx.get(), &health, &provider) }
            }),
        );
    Ok(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the health server stopped");
        }
    })
}

fn metrics_text(ctx: Option<&Arc<Context>>, health: &Health, provider: &str) -> String {
    let mut out = String::new();
    out.push_str("# TYPE fledge_info gauge\n");
    out.push_str(&format!(
        "fledge_info{{version=\"{}\",mesh_provider=\"{provider}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    ));
    out.push_str("# TYPE fledge_leader gauge\n");
    out.push_str(&format!(
        "fledge_leader {}\n",
        u8::from(health.leader.load(Ordering::SeqCst))
    ));
    if let Some(ctx) = ctx {
        for (name, v) in [
            ("fledge_reconciles_total", &ctx.stats.reconciles),
            ("fledge_analysis_steps_total", &ctx.stats.steps),
            ("fledge_reconcile_errors_total", &ctx.stats.errors),
        ] {
            out.push_str(&format!(
                "# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
    }
    out
}
