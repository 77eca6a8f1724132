//! flagger-loadtester's routes and status codes: `/healthz`; `/gate/check`
//! (200 Approved or 403 Forbidden), `/gate/open` and `/gate/close` (202),
//! `/gate/approve` (always 200), `/gate/halt` (always 403); the same three
//! for `/rollback/...`; every other path runs a task (`POST /`). A body that
//! is not a webhook payload is 400; a namespace outside `--namespace-regexp`
//! is 403.
use super::gates::{gate_key, rollback_key};
use super::{resolve, Config, Loadtester, Payload};
use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::any;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

type Reply = (StatusCode, String);

pub fn router(state: Arc<Loadtester>) -> Router {
    Router::new()
        .route("/healthz", any(|| async { "OK" }))
        .route("/gate/approve", any(|| async { "OK" }))
        .route(
            "/gate/halt",
            any(|| async { (StatusCode::FORBIDDEN, "Forbidden") }),
        )
        .route("/gate/check", any(gate_check))
        .route("/gate/open", any(gate_open))
        .route("/gate/close", any(gate_close))
        .route("/rollback/check", any(rollback_check))
        .route("/rollback/open", any(rollback_open))
        .route("/rollback/close", any(rollback_close))
        .fallback(new_task)
        .with_state(state)
}

/// Binds `config.listen` (a busy port fails now), starts the `--resolve`
/// proxy if needed; the state, the bound address and the server to run.
pub async fn bind(
    config: Config,
) -> anyhow::Result<(Arc<Loadtester>, (SocketAddr, impl Future<Output = ()>))> {
    super::tls_provider();
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let proxy = if config.resolve.entries.is_empty() {
        None
    } else {
        let (proxy_addr, proxy) = resolve::proxy(config.resolve.clone()).await?;
        tokio::spawn(proxy);
        tracing::info!("shell commands get http_proxy=http://{proxy_addr} for --resolve");
        Some(proxy_addr)
    };
    let state = Loadtester::new(config, proxy);
    let app = router(state.clone());
    Ok((
        state,
        (addr, async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the loadtester API stopped");
            }
        }),
    ))
}

/// The payload, or the answer that refuses it.
fn payload(lt: &Loadtester, body: &[u8]) -> Result<Payload, Reply> {
    let p: Payload = serde_json::from_slice(body).map_err(|e| {
        tracing::error!(error = %e, "decoding the request body failed");
        (
            StatusCode::BAD_REQUEST,
            format!("decoding the request body failed: {e}"),
        )
    })?;
    if !lt.authorized(&p) {
        return Err((StatusCode::FORBIDDEN, "Forbidden".into()));
    }
    Ok(p)
}

fn check(lt: &Loadtester, body: &[u8], rollback: bool) -> Reply {
    let p = match payload(lt, body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let key = if rollback {
        rollback_key(&p.name, &p.namespace)
    } else {
        gate_key(&p.name, &p.namespace)
    };
    let approved = lt.gates.is_open(&key);
    let what = if rollback {
        "rollback check"
    } else {
        "gate check"
    };
    tracing::info!("{key} {what}: approved {approved}");
    if approved {
        (StatusCode::OK, "Approved".into())
    } else {
        (StatusCode::FORBIDDEN, "Forbidden".into())
    }
}

fn set(lt: &Loadtester, body: &[u8], rollback: bool, open: bool) -> Reply {
    let p = match payload(lt, body) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (key, what) = if rollback {
        (rollback_key(&p.name, &p.namespace), "rollback")
    } else {
        (gate_key(&p.name, &p.namespace), "gate")
    };
    tracing::info!("{key} {what} {}", if open { "opened" } else { "closed" });
    if open {
        lt.gates.open(key);
    } else {
        lt.gates.close(key);
    }
    (StatusCode::ACCEPTED, String::new())
}

async fn gate_check(State(lt): State<Arc<Loadtester>>, body: Bytes) -> Reply {
    check(&lt, &body, false)
}
async fn gate_open(State(lt): State<Arc<Loadtester>>, body: Bytes) -> Reply {
    set(&lt, &body, false, true)
}
async fn gate_close(State(lt): State<Arc<Loadtester>>, body: Bytes) -> Reply {
    set(&lt, &body, false, false)
}
async fn rollback_check(State(lt): State<Arc<Loadtester>>, body: Bytes) -> Reply {
    check(&lt, &body, true)
}
async fn rollback_open(State(lt): State<Arc<Loadtester>>, body: Bytes) -> Reply {
    set(&lt, &body, true, true)
}
async fn rollback_close(State(lt): State<Arc<Loadtester>>, body: Bytes) -> Reply {
    set(&lt, &body, true, false)
}

async fn new_task(State(lt): State<Arc<Loadtester>>, body: Bytes) -> Reply {
    match payload(&lt, &body) {
        Ok(p) => lt.task(p).await,
        Err(r) => r,
    }
}
