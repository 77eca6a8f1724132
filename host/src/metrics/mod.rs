//! Metric providers of `MetricTemplate`s (`spec.provider.type`): one module
//! per provider behind [`Provider`]. A provider turns a rendered query into
//! one number, or says there was none, or why it failed; the core words what
//! that means for the check. "No data" and errors never pass a check.
//!
//! The operator builds a provider per query from the template's provider
//! spec and its Secret ([`Source`]) with [`build`]; the builtin App Mesh
//! checks and inline `query`s go to the Prometheus of `spec.metricsServer`.
use crate::api::MetricProvider;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The HTTP clients every provider shares: one verifying TLS, one not
/// (`insecureSkipVerify`).
pub use crate::operator::webhooks::Clients;

/// What a query found.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Value(f64),
    /// The query ran and found no data (an empty result, NaN, no points).
    NoValues,
    /// The provider could not be asked, or refused: the reason, for the
    /// check's failure message.
    Failed(String),
}

/// Everything a provider is built from.
pub struct Source<'a> {
    /// The template's `spec.provider` (type, address, headers, region,
    /// insecureSkipVerify).
    pub spec: &'a MetricProvider,
    /// The data of `spec.provider.secretRef`, empty without one.
    pub secret: &'a BTreeMap<String, Vec<u8>>,
    /// The metric's `interval` in the Canary (the query window).
    pub interval: Duration,
    /// `spec.metricsServer` or `--metrics-server`: Prometheus' address when
    /// the template has none.
    pub default_address: &'a str,
}

/// One query's surroundings: the shared clients and the time it is asked
/// at (a parameter, so a request's exact shape is testable).
pub struct Call<'a> {
    pub http: &'a Clients,
    pub now: SystemTime,
}

/// A metric provider.
pub trait Provider: Send + Sync {
    /// `spec.provider.type`, e.g. `datadog`: the `provider` label of
    /// `fledge_metric_query_seconds`.
    fn kind(&self) -> &'static str;

    /// Runs `query` and reduces its answer to one number.
    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer>;
}

/// A Secret value as text.
pub fn secret_text(secret: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<String> {
    secret.get(key).map(|v| {
        String::from_utf8_lossy(v)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    })
}

pub mod aws;
pub mod cloudwatch;
pub mod datadog;
pub mod dynatrace;
pub mod env;
pub mod gcp;
pub mod graphite;
pub mod influxdb;
pub mod newrelic;
pub mod prometheus;
pub mod splunk;
pub mod stackdriver;
#[cfg(test)]
pub(crate) mod testserver;

/// Provider types Flagger knows that Fledge refuses, with what to use instead.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "keptn",
        "query the backend the KeptnMetric or AnalysisDefinition reads (prometheus, datadog, dynatrace, ...) with that provider type",
    ),
    (
        "externalmetrics",
        "query the backend the external metrics adapter serves (prometheus, datadog, cloudwatch, ...) with that provider type",
    ),
];

/// Why `kind` is refused, naming the field and what to use instead; `None`
/// for a type Fledge serves.
pub fn refusal(kind: &str) -> Option<String> {
    REFUSED
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(k, instead)| {
            format!("spec.provider.type: `{k}` is not supported by Fledge; {instead}")
        })
}

/// Builds the provider `source.spec.type` names, or says why it cannot be.
pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    let kind = source.spec.type_.as_deref().unwrap_or_default();
    if let Some(why) = refusal(kind) {
        return Err(why);
    }
    match kind {
        "prometheus" => prometheus::build(source),
        "datadog" => datadog::build(source),
        "newrelic" => newrelic::build(source),
        "graphite" => graphite::build(source),
        "influxdb" => influxdb::build(source),
        "dynatrace" => dynatrace::build(source),
        "splunk" => splunk::build(source),
        "cloudwatch" => cloudwatch::build(source),
        "stackdriver" => stackdriver::build(source),
        "" => Err(
            "spec.provider.type is missing; set it to the metrics backend, e.g. prometheus".into(),
        ),
        other => Err(format!(
            "spec.provider.type: unknown provider `{other}`; use one of {}",
            crate::api::METRIC_PROVIDERS.join(", ")
        )),
    }
}

/// `spec.provider.address`, when set and not empty.
pub(crate) fn address(spec: &MetricProvider) -> Option<&str> {
    spec.address.as_deref().filter(|a| !a.is_empty())
}

/// `spec.provider.headers`, one pair per value.
pub(crate) fn headers(spec: &MetricProvider) -> Vec<(String, String)> {
    spec.headers
        .iter()
        .flatten()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
        .collect()
}

/// The client for `insecureSkipVerify` (`true`: the certificate is not checked).
pub(crate) fn client<'a>(call: &'a Call<'a>, insecure: bool) -> &'a reqwest::Client {
    if insecure {
        &call.http.insecure
    } else {
        &call.http.verify
    }
}

/// Sends `req` with `timeout`: the status and body, or why nothing came back.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<(reqwest::StatusCode, String), String> {
    let resp = req
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("request failed: {}", chain(&e)))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("error reading body: {}", chain(&e)))?;
    Ok((status, body))
}

/// Sends `req`; a 200 answer is read with `parse`, any other status fails
/// with the status and body (New Relic's and Dynatrace's wording).
pub(crate) async fn ask_ok(
    req: reqwest::RequestBuilder,
    timeout: Duration,
    parse: fn(&str) -> Answer,
) -> Answer {
    match send(req, timeout).await {
        Ok((status, body)) if status == reqwest::StatusCode::OK => parse(&body),
        Ok((status, body)) => Answer::Failed(format!("error response: {status}: {}", body.trim())),
        Err(e) => Answer::Failed(e),
    }
}

/// An error with its causes: reqwest's own text omits them ("error sending
/// request" without "connection refused").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Collapses runs of whitespace to one space, as Flagger does before
/// putting a query in a URL.
pub(crate) fn one_line(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A URL from a provider's address, or Flagger's error for it.
pub(crate) fn parse_url(kind: &str, address: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(address)
        .ok()
        .filter(|u| u.has_host())
        .ok_or_else(|| format!("{kind} address {address} is not a valid URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(spec: serde_json::Value, secret: &[(&str, &str)]) -> Result<&'static str, String> {
        let t = testserver::template(spec, secret);
        build(&t.source(Duration::from_secs(60))).map(|p| p.kind())
    }

    #[test]
    fn build_dispatches_on_the_type_and_refuses_what_fledge_does_not_serve() {
        let ok = [
            (serde_json::json!({"type": "prometheus"}), vec![]),
            (
                serde_json::json!({"type": "datadog"}),
                vec![("datadog_api_key", "a"), ("datadog_application_key", "b")],
            ),
            (
                serde_json::json!({"type": "newrelic"}),
                vec![("newrelic_query_key", "a"), ("newrelic_account_id", "1")],
            ),
            (
                serde_json::json!({"type": "graphite", "address": "http://g"}),
                vec![],
            ),
            (
                serde_json::json!({"type": "influxdb", "address": "http://i"}),
                vec![],
            ),
            (
                serde_json::json!({"type": "dynatrace", "address": "https://d"}),
                vec![("dynatrace_token", "t")],
            ),
            (
                serde_json::json!({"type": "splunk", "address": "https://api.us1.signalfx.com"}),
                vec![("sf_token_key", "t")],
            ),
        ];
        for (spec, secret) in ok {
            let want = spec["type"].as_str().unwrap().to_string();
            assert_eq!(kind_of(spec, &secret).unwrap(), want);
        }
        for kind in ["keptn", "externalmetrics"] {
            let err = kind_of(serde_json::json!({"type": kind}), &[])
                .err()
                .unwrap();
            assert!(
                err.starts_with(&format!(
                    "spec.provider.type: `{kind}` is not supported by Fledge; query the backend"
                )),
                "{err}"
            );
        }
        // The cloud providers' own build errors name what they lack.
        assert_eq!(
            kind_of(
                serde_json::json!({"type": "cloudwatch", "region": "eu-west-1"}),
                &[]
            )
            .unwrap(),
            "cloudwatch"
        );
        let err = kind_of(serde_json::json!({"type": "cloudwatch"}), &[])
            .err()
            .unwrap();
        assert!(err.contains("spec.provider.region"), "{err}");
        assert_eq!(
            kind_of(
                serde_json::json!({"type": "stackdriver", "secretRef": {"name": "gcm"}}),
                &[("project", "my-project")]
            )
            .unwrap(),
            "stackdriver"
        );
        let err = kind_of(serde_json::json!({"type": "stackdriver"}), &[])
            .err()
            .unwrap();
        assert!(err.contains("spec.provider.secretRef"), "{err}");
        let err = kind_of(serde_json::json!({"type": "graphit"}), &[])
            .err()
            .unwrap();
        assert!(
            err.starts_with(
                "spec.provider.type: unknown provider `graphit`; use one of prometheus"
            ),
            "{err}"
        );
        let err = kind_of(serde_json::json!({}), &[]).err().unwrap();
        assert!(err.starts_with("spec.provider.type is missing"), "{err}");
    }
}
