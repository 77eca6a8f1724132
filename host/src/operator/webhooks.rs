//! Webhooks as Flagger calls them: `POST` of a JSON payload with the
//! Canary's name, namespace, phase and checksum, one timeout per webhook,
//! retries for connection errors, 429 and 5xx (not 501). A status of 202 or
//! below passes; anything else fails with the response body as the reason.
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

/// POSTs `body` to `url`: `Ok(())` when the final answer is 202 or below.
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
    let mut attempt = 0;
    let mut backoff = Duration::from_secs(1);
    loop {
        let outcome = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(timeout)
            .send()
            .await;
        let retry = match &outcome {
            Err(_) => true,
            Ok(r) => {
                let s = r.status().as_u16();
                s == 429 || (s >= 500 && s != 501)
            }
        };
        if retry && attempt < retries {
            attempt += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            continue;
        }
        return match outcome {
            Err(e) if retries > 0 => Err(format!(
                "POST {url} giving up after {} attempt(s): {e}",
                attempt + 1
            )),
            Err(e) => Err(format!("POST {url}: {e}")),
            Ok(r) if r.status().as_u16() <= 202 => Ok(()),
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
