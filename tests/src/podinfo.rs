//! A podinfo stand-in on loopback with the endpoints the guide's acceptance and load tests
//! call: `GET /`, `POST /token` (JSON with a `token`), `/status/{code}` and
//! `/delay/{seconds}`. It counts requests by path and by `Host` header.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{json, Value};

#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub total: u64,
    pub paths: BTreeMap<String, u64>,
    pub hosts: BTreeMap<String, u64>,
    /// Bodies of `POST /token`.
    pub token_bodies: Vec<String>,
}

/// A running stand-in; it stops when the runtime that started it ends.
#[derive(Clone)]
pub struct Podinfo {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

type Shared = Arc<Mutex<Seen>>;
type Json = ([(header::HeaderName, &'static str); 1], String);

fn json_body(v: Value) -> Json {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string())
}

fn record(seen: &Shared, uri: &Uri, headers: &HeaderMap) {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let mut s = seen.lock().unwrap();
    s.total += 1;
    *s.paths.entry(uri.path().to_string()).or_default() += 1;
    *s.hosts.entry(host).or_default() += 1;
}

async fn root(State(s): State<Shared>, uri: Uri, headers: HeaderMap) -> Json {
    record(&s, &uri, &headers);
    json_body(
        json!({"hostname": "podinfo-stand-in", "version": "6.0.0", "message": "greetings from podinfo"}),
    )
}

async fn token(State(s): State<Shared>, uri: Uri, headers: HeaderMap, body: String) -> Json {
    record(&s, &uri, &headers);
    s.lock().unwrap().token_bodies.push(body);
    json_body(
        json!({"token": "eyJhbGciOiJIUzI1NiJ9.stand-in", "expires_at": "2030-01-01T00:00:00Z"}),
    )
}

async fn status(
    State(s): State<Shared>,
    Path(code): Path<u16>,
    uri: Uri,
    headers: HeaderMap,
) -> (StatusCode, Json) {
    record(&s, &uri, &headers);
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (code, json_body(json!({"status": code.as_u16()})))
}

async fn delay(
    State(s): State<Shared>,
    Path(seconds): Path<u64>,
    uri: Uri,
    headers: HeaderMap,
) -> Json {
    record(&s, &uri, &headers);
    tokio::time::sleep(Duration::from_secs(seconds.min(60))).await;
    json_body(json!({"delay": seconds}))
}

impl Podinfo {
    pub async fn start() -> Result<Podinfo> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the podinfo stand-in")?;
        let addr = listener.local_addr()?;
        let seen: Shared = Arc::default();
        let app = Router::new()
            .route("/", get(root))
            .route("/token", post(token))
            .route("/status/{code}", any(status))
            .route("/delay/{seconds}", any(delay))
            .with_state(seen.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Podinfo { addr, seen })
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self, path: &str) -> u64 {
        self.seen().paths.get(path).copied().unwrap_or(0)
    }
}
