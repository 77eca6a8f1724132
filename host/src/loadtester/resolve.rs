//! `--resolve HOST:PORT=ADDR`: requests for `HOST:PORT` go to `ADDR`, as with
//! curl's `--resolve`. The built-in hey connects to `ADDR` itself; shell
//! commands reach it through a plain-HTTP forward proxy on loopback that is
//! given to them as `http_proxy`/`HTTP_PROXY`.
use anyhow::{bail, Context as _, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest request or response body the proxy relays (it buffers them).
const PROXY_BODY_LIMIT: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lower case, as hosts compare.
    pub host: String,
    pub port: u16,
    pub addr: SocketAddr,
}

impl std::str::FromStr for Entry {
    type Err = String;
    /// `HOST:PORT=IP:PORT`, or `HOST:PORT=IP` for the same port.
    fn from_str(s: &str) -> Result<Entry, String> {
        let hint = "expected HOST:PORT=ADDR, e.g. podinfo-canary.test:9898=127.0.0.1:8080";
        let (from, to) = s.split_once('=').ok_or_else(|| format!("{s:?}: {hint}"))?;
        let (host, port) = from
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: {from:?} has no port; {hint}"))?;
        if host.is_empty() || host.contains(['/', '@', ' ']) {
            return Err(format!("{s:?}: {host:?} is not a host name; {hint}"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: {port:?} is not a port; {hint}"))?;
        let addr = to
            .parse::<SocketAddr>()
            .or_else(|_| {
                to.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, port))
            })
            .map_err(|_| format!("{s:?}: {to:?} is not IP:PORT or an IP address; {hint}"))?;
        Ok(Entry {
            host: host.trim_matches(['[', ']']).to_ascii_lowercase(),
            port,
            addr,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Resolve {
    pub entries: Vec<Entry>,
}

/// Where the built-in hey sends a URL's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub url: reqwest::Url,
    /// The original authority, when the URL was rewritten to an address.
    pub host_header: Option<String>,
    /// For https: the address the host resolves to (the URL's port is kept).
    pub tls_resolve: Option<(String, SocketAddr)>,
}

impl Resolve {
    pub fn lookup(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        self.entries
            .iter()
            .find(|e| e.host == host && e.port == port)
            .map(|e| e.addr)
    }

    /// A plain-HTTP URL to a resolved host is rewritten to the address with the
    /// original `Host`; an https one keeps its URL (so TLS names the host) and
    /// only its IP is overridden, which needs the same port.
    pub fn target(&self, url: &str) -> Result<Target> {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("URL {url:?}"))?;
        let host = parsed.host_str().unwrap_or_default().to_string();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let Some(addr) = self.lookup(&host, port) else {
            return Ok(Target {
                url: parsed,
                host_header: None,
                tls_resolve: None,
            });
        };
        if parsed.scheme() == "https" {
            if addr.port() != port {
                bail!(
                    "--resolve {host}:{port}={addr}: an https URL keeps its port {port} (TLS names \
                     the host), so the address must use port {port} too"
                );
            }
            return Ok(Target {
                url: parsed,
                host_header: None,
                tls_resolve: Some((host, addr)),
            });
        }
        let authority = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut rewritten = parsed.clone();
        rewritten
            .set_ip_host(addr.ip())
            .map_err(|()| anyhow::anyhow!("URL {url:?}: cannot point it at {addr}"))?;
        rewritten
            .set_port(Some(addr.port()))
            .map_err(|()| anyhow::anyhow!("URL {url:?}: cannot point it at {addr}"))?;
        Ok(Target {
            url: rewritten,
            host_header: Some(authority),
            tls_resolve: None,
        })
    }
}

struct Proxy {
    resolve: Resolve,
    client: reqwest::Client,
}

/// Starts the forward proxy on an ephemeral loopback port: its address and
/// the server to run.
pub async fn proxy(resolve: Resolve) -> Result<(SocketAddr, impl Future<Output = ()>)> {
    super::tls_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("listening for the --resolve proxy")?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Proxy {
        resolve,
        client: reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
    });
    let app = axum::Router::new().fallback(forward).with_state(state);
    Ok((addr, async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the --resolve proxy stopped");
        }
    }))
}

/// Headers of one hop, not passed on (RFC 9110 7.6.1).
fn hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

fn end_to_end(h: &HeaderMap) -> HeaderMap {
    h.iter()
        .filter(|(k, _)| !hop_by_hop(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let fail = |status: StatusCode, text: String| (status, text).into_response();
    let uri = req.uri().clone();
    if req.method() == axum::http::Method::CONNECT {
        return fail(
            StatusCode::NOT_IMPLEMENTED,
            "fledge loadtester's proxy relays plain http:// requests only (no CONNECT)\n".into(),
        );
    }
    if uri.scheme_str() != Some("http") {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("fledge loadtester's proxy takes absolute http:// URLs, not {uri}\n"),
        );
    }
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let (connect, host_header) = match p.resolve.lookup(&host, port) {
        Some(addr) => (
            format!("http://{addr}{path}"),
            Some(uri.authority().map(|a| a.to_string()).unwrap_or(host)),
        ),
        None => (uri.to_string(), None),
    };
    let method = req.method().clone();
    let mut headers = end_to_end(req.headers());
    if let Some(h) = host_header.and_then(|h| h.parse().ok()) {
        headers.insert(header::HOST, h);
    }
    let body = match axum::body::to_bytes(req.into_body(), PROXY_BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("reading the request: {e}\n"),
            )
        }
    };
    let answer = p
        .client
        .request(method, &connect)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let resp = match answer {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_GATEWAY, format!("{uri}: {e}\n")),
    };
    let status = resp.status();
    let headers = end_to_end(resp.headers());
    match resp.bytes().await {
        Ok(b) => {
            let mut out = Response::new(Body::from(b));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            out
        }
        Err(e) => fail(StatusCode::BAD_GATEWAY, format!("{uri}: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(entries: &[&str]) -> Resolve {
        Resolve {
            entries: entries.iter().map(|e| e.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn entries_parse_and_errors_say_the_form() {
        let e: Entry = "Podinfo-Canary.test:9898=127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.addr.to_string().as_str()),
            ("podinfo-canary.test", 9898, "127.0.0.1:4000")
        );
        let same_port: Entry = "a.test:80=10.0.0.1".parse().unwrap();
        assert_eq!(same_port.addr.to_string(), "10.0.0.1:80");
        for bad in [
            "a.test=1.2.3.4",
            "a.test:x=1.2.3.4",
            "a.test:80=nowhere",
            "a.test:80",
        ] {
            let err = bad.parse::<Entry>().unwrap_err();
            assert!(err.contains("HOST:PORT=ADDR"), "{bad}: {err}");
        }
    }

    #[test]
    fn http_urls_are_rewritten_with_their_host_kept() {
        let t = r(&["podinfo-canary.test:9898=127.0.0.1:4000"])
            .target("http://podinfo-canary.test:9898/status/500?x=1")
            .unwrap();
        assert_eq!(t.url.as_str(), "http://127.0.0.1:4000/status/500?x=1");
        assert_eq!(t.host_header.as_deref(), Some("podinfo-canary.test:9898"));
        let other = r(&["podinfo-canary.test:9898=127.0.0.1:4000"])
            .target("http://podinfo.test:9898/")
            .unwrap();
        assert_eq!(other.url.as_str(), "http://podinfo.test:9898/");
        assert_eq!(other.host_header, None);
    }

    #[test]
    fn https_keeps_the_url_and_needs_the_same_port() {
        let t = r(&["a.test:443=127.0.0.1:443"])
            .target("https://a.test/")
            .unwrap();
        assert_eq!(t.url.as_str(), "https://a.test/");
        assert_eq!(
            t.tls_resolve,
            Some(("a.test".into(), "127.0.0.1:443".parse().unwrap()))
        );
        let err = r(&["a.test:443=127.0.0.1:8443"])
            .target("https://a.test/")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must use port 443"), "{err}");
    }
}
