//! `/healthz`, `/readyz`, `/metrics` and `/version` on `--listen-address`.
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
        "serving /healthz, /readyz, /metrics and /version on {}",
        listener.local_addr()?
    );
    let ready = health;
    // The same facts as `fledge version --output json`, computed once.
    let version = serde_json::to_string(&crate::build_info::BuildInfo::current())
        .context("encoding the build information")?;
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
            "/version",
            get(move || {
                let body = version.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    async fn get(port: u16, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: fledge\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn version_and_build_info_tell_the_same_facts() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let telemetry = Arc::new(Telemetry::new("1.2.3", "appmesh:v1beta2"));
        let server = serve(
            &format!("127.0.0.1:{port}"),
            Arc::new(Health::default()),
            telemetry,
        )
        .await
        .unwrap();
        let server = tokio::spawn(server);

        let reply = get(port, "/version").await;
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let info = crate::build_info::BuildInfo::current();
        assert_eq!(v, serde_json::to_value(&info).unwrap());
        assert_eq!(v["crds"][0]["apiVersion"], "flagger.app/v1beta1");

        let metrics = get(port, "/metrics").await;
        let labels: Vec<String> = info
            .labels()
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        let series = format!("fledge_build_info{{{}}} 1", labels.join(","));
        assert!(
            metrics.contains(&series),
            "{series} missing from\n{metrics}"
        );
        assert!(
            metrics.contains("crd_versions=\"flagger.app/v1beta1,policies.fledge.dev/v1alpha1\"")
        );
        // Flagger's series is unchanged.
        assert!(
            metrics.contains("flagger_info{version=\"1.2.3\",mesh_provider=\"appmesh:v1beta2\"} 1")
        );
        server.abort();
    }
}
