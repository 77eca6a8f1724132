//! Webhooks as Flagger calls them: `POST` of a JSON payload with the
//! Canary's name, namespace, phase and checksum, one timeout per attempt,
//! retries for connection errors, 429 and 5xx (not 501) with Flagger's
//! backoff. A status of 202 or below passes; see [`post`] for the reasons.
use crate::core::rollout::WebhookSpec;
use fledge_policy::{Phase, WebhookResult};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The payload Flagger sends.
pub fn payload(
    name: &str,
    namespace: &str,
    phase: Phase,
    checksum: &str,
    metadata: &BTreeMap<String, String>,
) -> Value {
    let mut p = json!({"name": name, "namespace": namespace, "phase": phase.as_str(), "checksum": checksum});
    if !metadata.is_empty() {
        p["metadata"] = json!(metadata);
    }
    p
}

/// The metadata of an `event` webhook call for one Event.
pub fn event_metadata(
    hook: &BTreeMap<String, String>,
    message: &str,
    warning: bool,
    unix_ms: i64,
) -> BTreeMap<String, String> {
    let mut m = hook.clone();
    m.insert("eventMessage".into(), message.into());
    m.insert(
        "eventType".into(),
        if warning { "Warning" } else { "Normal" }.into(),
    );
    m.insert("timestamp".into(), unix_ms.to_string());
    m
}

/// The two clients a webhook may need: verifying TLS, and not (`disableTLS`).
#[derive(Clone)]
pub struct Clients {
    pub verify: reqwest::Client,
    pub insecure: reqwest::Client,
}

impl Clients {
    pub fn new() -> anyhow::Result<Clients> {
        Ok(Clients {
            verify: reqwest::Client::builder().build()?,
            insecure: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()?,
        })
    }
}

/// Longest wait between two attempts, and the cap of a `Retry-After`.
const RETRY_WAIT_MAX: Duration = Duration::from_secs(30);
const RETRY_WAIT_MIN: Duration = Duration::from_secs(1);

/// POSTs `body` to `url`: `Ok(())` when the final answer is 202 or below.
/// As Flagger's client (go-retryablehttp) does: connection errors, 429 and
/// 5xx but 501 are tried again up to `retries` times, waiting 1 s, 2 s, 4 s
/// ... (at most 30 s) or a 429/503's `Retry-After`; a redirect loop, a bad
/// URL or an untrusted certificate is not. The reason of a failure is the
/// response body of a final status that is not retried, else
/// `POST <url> giving up after N attempt(s)[: <error>]`.
pub async fn post(
    clients: &Clients,
    url: &str,
    body: &Value,
    timeout: Duration,
    retries: u32,
    disable_tls: bool,
) -> Result<(), String> {
    let client = if disable_tls {
        &clients.insecure
    } else {
        &clients.verify
    };
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let outcome = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(timeout)
            .send()
            .await;
        let retry = match &outcome {
            Err(e) => !permanent(e),
            Ok(r) => retried_status(r.status().as_u16()),
        };
        if retry && attempt <= retries {
            let wait = match &outcome {
                Ok(r) => retry_after(r).unwrap_or_else(|| backoff(attempt - 1)),
                Err(_) => backoff(attempt - 1),
            };
            tracing::debug!(url = %redacted(url), attempt, "webhook retrying in {wait:?}");
            tokio::time::sleep(wait).await;
            continue;
        }
        let giving_up = format!(
            "POST {} giving up after {attempt} attempt(s)",
            redacted(url)
        );
        return match outcome {
            Err(e) => Err(format!("{giving_up}: {}", go_error(url, &e))),
            Ok(r) if r.status().as_u16() <= 202 => Ok(()),
            Ok(r) if retry => {
                // Flagger's reason names no status; the log keeps the answer.
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tracing::warn!(url = %redacted(url), %status, body = %text.trim(), "webhook failed");
                Err(giving_up)
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let text = text.trim();
                Err(if text.is_empty() {
                    format!("{status}")
                } else {
                    text.to_string()
                })
            }
        };
    }
}

/// 429, and 5xx but 501 (Not Implemented will not change).
fn retried_status(s: u16) -> bool {
    s == 429 || (s >= 500 && s != 501)
}

/// `min * 2^n`, at most [`RETRY_WAIT_MAX`].
fn backoff(n: u32) -> Duration {
    RETRY_WAIT_MIN
        .checked_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
        .unwrap_or(RETRY_WAIT_MAX)
        .min(RETRY_WAIT_MAX)
}

/// The `Retry-After` of a 429 or 503, in seconds or as an HTTP date.
fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    if !matches!(r.status().as_u16(), 429 | 503) {
        return None;
    }
    let v = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    parse_retry_after(v, k8s_openapi::jiff::Timestamp::now()).map(|d| d.min(RETRY_WAIT_MAX))
}

fn parse_retry_after(v: &str, now: k8s_openapi::jiff::Timestamp) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = k8s_openapi::jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    Some(at.duration_since(now).try_into().unwrap_or(Duration::ZERO))
}

/// Errors that another attempt cannot fix: a redirect loop, a request that
/// cannot be built (bad URL or scheme), an untrusted certificate.
fn permanent(e: &reqwest::Error) -> bool {
    if e.is_redirect() || e.is_builder() {
        return true;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(cause) = src {
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        // The connector may wrap rustls' error where it cannot be downcast;
        // its text says the same (as Flagger's client matches texts too).
        if matches!(tls, Some(rustls::Error::InvalidCertificate(_)))
            || cause.to_string().starts_with("invalid peer certificate")
        {
            return true;
        }
        src = cause.source();
    }
    false
}

/// `Post "<url>": <causes>`, as Go words a client error.
fn go_error(url: &str, e: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(cause) = src {
        let text = cause.to_string();
        if causes.last() != Some(&text) {
            causes.push(text);
        }
        src = cause.source();
    }
    if e.is_timeout() {
        causes.push("timeout exceeded".into());
    }
    if causes.is_empty() {
        causes.push(e.to_string());
    }
    format!("Post \"{}\": {}", redacted(url), causes.join(": "))
}

/// The URL with its password shown as `xxxxx`, as Go's `url.Redacted`.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("xxxxx"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Calls `hooks` of `kind` in order, stopping where the core says
/// ([`crate::core::hooks_stop`]: gates and checks at the first failure,
/// rollback hooks at the first that signals a rollback).
pub async fn call_all<'a>(
    clients: &Clients,
    kind: fledge_policy::WebhookKind,
    hooks: impl Iterator<Item = &'a WebhookSpec>,
    name: &str,
    namespace: &str,
    phase: Phase,
    checksum: &str,
) -> Vec<WebhookResult> {
    let mut out = Vec::new();
    for h in hooks {
        let body = payload(name, namespace, phase, checksum, &h.metadata);
        let result = post(clients, &h.url, &body, h.timeout, h.retries, h.disable_tls).await;
        let r = WebhookResult {
            name: h.name.clone(),
            kind: h.kind,
            passed: result.is_ok(),
            message: result.err().unwrap_or_default(),
        };
        let stop = crate::core::hooks_stop(kind, &r);
        out.push(r);
        if stop {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answering each request with the next of `script` (the last
    /// one repeats): status, `Retry-After`, body. Returns its URL and the
    /// number of requests it got.
    async fn scripted(
        script: Vec<(u16, Option<&'static str>, &'static str)>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        let app = axum::Router::new().fallback(move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let (status, retry_after, body) = script[n.min(script.len() - 1)];
            async move {
                let mut r = axum::response::IntoResponse::into_response(body);
                *r.status_mut() = axum::http::StatusCode::from_u16(status).unwrap();
                if let Some(v) = retry_after {
                    r.headers_mut().insert("retry-after", v.parse().unwrap());
                }
                r
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, count)
    }

    async fn call(url: &str, retries: u32) -> Result<(), String> {
        let clients = Clients::new().unwrap();
        post(
            &clients,
            url,
            &json!({}),
            Duration::from_secs(5),
            retries,
            false,
        )
        .await
    }

    fn hits(c: &std::sync::atomic::AtomicUsize) -> usize {
        c.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_retried_status_that_stays_gives_up_in_flaggers_words() {
        let (url, n) = scripted(vec![(500, None, "boom")]).await;
        assert_eq!(
            call(&url, 0).await,
            Err(format!("POST {url} giving up after 1 attempt(s)"))
        );
        assert_eq!(hits(&n), 1, "retries: 0 is one attempt");
        let (url, n) = scripted(vec![(503, Some("0"), "busy")]).await;
        assert_eq!(
            call(&url, 2).await,
            Err(format!("POST {url} giving up after 3 attempt(s)"))
        );
        assert_eq!(
            hits(&n),
            3,
            "a 503's Retry-After: 0 is waited, not the backoff"
        );
    }

    #[tokio::test]
    async fn retries_end_at_the_first_pass() {
        let started = std::time::Instant::now();
        let (url, n) = scripted(vec![(502, None, ""), (200, None, "ok")]).await;
        assert_eq!(call(&url, 3).await, Ok(()));
        assert_eq!(hits(&n), 2);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "the first backoff is 1 s"
        );
        let (url, n) = scripted(vec![(429, Some("0"), ""), (202, None, "")]).await;
        assert_eq!(call(&url, 1).await, Ok(()));
        assert_eq!(hits(&n), 2, "429 is retried");
    }

    #[tokio::test]
    async fn statuses_that_are_not_retried_fail_with_the_body() {
        for status in [400, 403, 404, 501] {
            let (url, n) = scripted(vec![(status, None, "  Forbidden\n")]).await;
            assert_eq!(call(&url, 3).await, Err("Forbidden".into()), "{status}");
            assert_eq!(hits(&n), 1, "{status} is not retried");
        }
        let (url, _) = scripted(vec![(409, None, "")]).await;
        assert_eq!(call(&url, 0).await, Err("409 Conflict".into()));
    }

    #[tokio::test]
    async fn connection_errors_are_retried_and_worded_as_go_does() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let started = std::time::Instant::now();
        let err = call(&url, 1).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_secs(1), "one backoff");
        let prefix = format!("POST {url} giving up after 2 attempt(s): Post \"{url}\": ");
        assert!(err.starts_with(&prefix), "{err}");
    }

    #[tokio::test]
    async fn redirect_loops_and_untrusted_certificates_are_not_retried() {
        // A Location back to itself, every time.
        let looping = {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new().fallback(move || async move {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", format!("http://{addr}/again"))],
                )
            });
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{addr}/")
        };
        let err = call(&looping, 3).await.unwrap_err();
        assert!(
            err.starts_with(&format!("POST {looping} giving up after 1 attempt(s): ")),
            "{err}"
        );

        // A TLS server whose certificate nobody signed: one attempt, however many retries.
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        );
        let config = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap(),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = handshakes.clone();
        std::thread::spawn(move || {
            use std::io::Read as _;
            for stream in listener.incoming() {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream.unwrap());
                let _ = tls.read(&mut [0u8; 64]);
            }
        });
        let url = format!("https://{addr}/");
        let err = call(&url, 3).await.unwrap_err();
        assert!(
            err.starts_with(&format!("POST {url} giving up after 1 attempt(s): ")),
            "{err}"
        );
        assert!(err.contains("certificate"), "{err}");
        assert_eq!(hits(&handshakes), 1);
    }

    #[test]
    fn backoff_doubles_from_one_second_to_thirty() {
        let waits: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(200), RETRY_WAIT_MAX);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now: k8s_openapi::jiff::Timestamp = "1999-12-31T23:59:49Z".parse().unwrap();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 1999 23:59:00 GMT", now),
            Some(Duration::ZERO),
            "a past date is no wait"
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted("https://user:secret@hooks.test/x"),
            "https://user:xxxxx@hooks.test/x"
        );
        assert_eq!(redacted("http://hooks.test/x"), "http://hooks.test/x");
    }

    #[test]
    fn payload_is_flaggers() {
        let mut md = BTreeMap::new();
        assert_eq!(
            payload("podinfo", "test", Phase::Progressing, "abc", &md),
            json!({"name": "podinfo", "namespace": "test", "phase": "Progressing", "checksum": "abc"})
        );
        md.insert("cmd".into(), "hey".into());
        assert_eq!(
            payload("podinfo", "test", Phase::Progressing, "abc", &md)["metadata"],
            json!({"cmd": "hey"})
        );
        let ev = event_metadata(&md, "Advance podinfo.test canary weight 5", false, 7);
        assert_eq!(ev["eventType"], "Normal");
        assert_eq!(ev["timestamp"], "7");
        assert_eq!(ev["cmd"], "hey");
    }
}
