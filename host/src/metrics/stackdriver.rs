//! `stackdriver`: Google Cloud Monitoring, Monitoring Query Language.
//!
//! As Flagger: the query is MQL, sent to `projects.timeSeries.query` for the
//! project in the Secret's `project` key (the query sets its own window);
//! the answer is the first value of the first point of the first series,
//! and no series or no point is "no values". The token is from the Secret's
//! `serviceAccountKey` when it has one, else from Application Default
//! Credentials ([`super::gcp`]): Workload Identity, the node's service
//! account, or `GOOGLE_APPLICATION_CREDENTIALS`.
//!
//! Flagger speaks gRPC; this speaks the same API's REST form
//! (`POST https://monitoring.googleapis.com/v3/projects/<p>/timeSeries:query`),
//! which needs no gRPC stack. `spec.provider.address`, which Flagger ignores
//! for this provider, replaces `https://monitoring.googleapis.com` when set
//! (a private endpoint, or a test server).
use super::gcp::{self, Tokens};
use super::{secret_text, Answer, Call, Provider, Source};
use futures::future::BoxFuture;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_BASE: &str = "https://monitoring.googleapis.com";
const TIMEOUT: Duration = Duration::from_secs(30);
/// Pages followed when a page holds no series but names a next one.
const MAX_PAGES: usize = 10;

pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    let auth = match source.secret.get("serviceAccountKey") {
        Some(key) => Auth::Fixed(gcp::shared_key(
            key,
            "the `serviceAccountKey` of the Secret of spec.provider.secretRef",
        )?),
        None => Auth::Adc,
    };
    Ok(Box::new(Stackdriver::new(source, auth)?))
}

#[derive(Debug)]
pub enum Auth {
    Fixed(Arc<Tokens>),
    /// The process's Application Default Credentials, found at query time.
    Adc,
}

#[derive(Debug)]
pub struct Stackdriver {
    url: reqwest::Url,
    project: String,
    insecure: bool,
    auth: Auth,
}

impl Stackdriver {
    pub fn new(source: &Source, auth: Auth) -> Result<Stackdriver, String> {
        if source.spec.secret_ref.is_none() {
            return Err(
                "spec.provider.secretRef is required for stackdriver: name a Secret whose \
                 `project` key holds the Google Cloud project id (and, without Workload \
                 Identity, whose `serviceAccountKey` holds a service-account key JSON)"
                    .into(),
            );
        }
        let project = secret_text(source.secret, "project")
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .ok_or(
                "the Secret of spec.provider.secretRef has no `project` key: stackdriver needs \
                 the Google Cloud project id there",
            )?;
        if !project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'))
        {
            return Err(format!(
                "the `project` of the Secret of spec.provider.secretRef is {project:?}: a \
                 Google Cloud project id holds only letters, digits, '-', '.' and ':'"
            ));
        }
        let base = source
            .spec
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .unwrap_or(DEFAULT_BASE)
            .trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}/v3/projects/{project}/timeSeries:query"))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| format!("spec.provider.address {base:?} is not an http(s) URL"))?;
        Ok(Stackdriver {
            url,
            project,
            insecure: source.spec.insecure_skip_verify.unwrap_or(false),
            auth,
        })
    }

    async fn run(&self, call: &Call<'_>, query: &str) -> Answer {
        let tokens = match &self.auth {
            Auth::Fixed(t) => t.clone(),
            Auth::Adc => match gcp::shared_adc() {
                Ok(t) => t,
                Err(e) => return Answer::Failed(format!("error requesting stackdriver: {e}")),
            },
        };
        let token = match tokens.token(&call.http.verify, call.now).await {
            Ok(t) => t,
            Err(e) => return Answer::Failed(format!("error requesting stackdriver: {e}")),
        };
        let client = if self.insecure {
            &call.http.insecure
        } else {
            &call.http.verify
        };
        let mut page_token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut body = serde_json::json!({ "query": query });
            if let Some(p) = &page_token {
                body["pageToken"] = p.clone().into();
            }
            let req = client
                .post(self.url.clone())
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.to_string());
            let (status, text) = match super::send(req, TIMEOUT).await {
                Ok(answer) => answer,
                Err(e) => return Answer::Failed(format!("error requesting stackdriver: {e}")),
            };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if !status.is_success() {
                return Answer::Failed(format!(
                    "error requesting stackdriver: {}",
                    google_error(status.as_u16(), &v, &text)
                ));
            }
            if v.is_null() {
                return Answer::Failed(format!(
                    "error requesting stackdriver: unreadable answer: {}",
                    clip(&text)
                ));
            }
            let series = v.get("timeSeriesData").and_then(Value::as_array);
            if let Some(first) = series.and_then(|s| s.first()) {
                return first_value(first);
            }
            match v.get("nextPageToken").and_then(Value::as_str) {
                Some(next) if !next.is_empty() => page_token = Some(next.to_string()),
                _ => return Answer::NoValues,
            }
        }
        Answer::NoValues
    }

    pub fn project(&self) -> &str {
        &self.project
    }
}

impl Provider for Stackdriver {
    fn kind(&self) -> &'static str {
        "stackdriver"
    }

    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(self.run(call, query))
    }
}

/// `pointData[0].values[0]` of one `TimeSeriesData`: a double, or an
/// int64 (a JSON string in the REST form).
fn first_value(series: &Value) -> Answer {
    let value = series
        .get("pointData")
        .and_then(Value::as_array)
        .and_then(|p| p.first())
        .and_then(|p| p.get("values"))
        .and_then(Value::as_array)
        .and_then(|v| v.first());
    let Some(value) = value else {
        return Answer::NoValues;
    };
    let number = if let Some(d) = value.get("doubleValue") {
        // Non-finite doubles are strings in protobuf's JSON.
        match d {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.as_str() {
                "NaN" => return Answer::NoValues,
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                s => s.parse().ok(),
            },
            _ => None,
        }
    } else if let Some(i) = value.get("int64Value") {
        match i {
            Value::String(s) => s.parse::<i64>().ok().map(|i| i as f64),
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    } else {
        None
    };
    match number {
        Some(n) if n.is_nan() => Answer::NoValues,
        Some(n) => Answer::Value(n),
        None => Answer::Failed(format!(
            "error requesting stackdriver: the first value is not a number: {value}"
        )),
    }
}

/// Google's error shape: `{"error": {"code", "message", "status"}}`.
fn google_error(status: u16, v: &Value, text: &str) -> String {
    let e = v.get("error");
    let message = e
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| clip(text));
    match e.and_then(|e| e.get("status")).and_then(Value::as_str) {
        Some(s) => format!("{s}: {message} (HTTP {status})"),
        None => format!("HTTP {status}: {message}"),
    }
}

fn clip(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MetricProvider;
    use crate::metrics::env::Env;
    use crate::metrics::gcp::tests::{at, key_json, NOW};
    use crate::metrics::testserver::{clients, Answering as Server};
    use std::collections::BTreeMap;

    /// Flagger's documented query.
    const QUERY: &str = "fetch k8s_container
| metric 'istio.io/service/server/response_latencies'
| filter (metric.destination_service_name == 'podinfo-canary' && metric.destination_service_namespace == 'test')
| align delta(1m)
| every 1m
| group_by [], [value_response_latencies_percentile: percentile(value.response_latencies, 99)]";

    const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

    /// One server for the metadata token and the Monitoring API: `answer`
    /// gives the API's answers in order, the last one repeating.
    fn google(answers: Vec<(u16, &'static str)>) -> Server {
        let next = std::sync::atomic::AtomicUsize::new(0);
        Server::start(move |req| {
            if req.target == TOKEN_PATH {
                return (
                    200,
                    r#"{"access_token":"ya29.metadata","expires_in":3599,"token_type":"Bearer"}"#
                        .into(),
                );
            }
            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, body) = answers[i.min(answers.len() - 1)];
            (status, body.into())
        })
    }

    fn secret(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn spec(address: &str) -> MetricProvider {
        serde_json::from_value(serde_json::json!({
            "type": "stackdriver",
            "address": address,
            "secretRef": {"name": "gcloud-sa"},
        }))
        .unwrap()
    }

    fn source<'a>(spec: &'a MetricProvider, secret: &'a BTreeMap<String, Vec<u8>>) -> Source<'a> {
        Source {
            spec,
            secret,
            interval: Duration::from_secs(60),
            default_address: "http://prometheus:9090",
        }
    }

    /// A provider on the metadata server of `server`.
    fn on_metadata(server: &Server) -> Stackdriver {
        let spec = spec(&server.base);
        let secret = secret(&[("project", "my-project\n")]);
        let host = server.base.trim_start_matches("http://");
        let tokens = Tokens::metadata(&Env::from_pairs([("GCE_METADATA_HOST", host)]));
        Stackdriver::new(&source(&spec, &secret), Auth::Fixed(Arc::new(tokens))).unwrap()
    }

    async fn ask(p: &dyn Provider, query: &str) -> Answer {
        let http = clients();
        let call = Call {
            http: &http,
            now: at(NOW),
        };
        p.query(&call, query).await
    }

    /// The documented `QueryTimeSeriesResponse` with one point.
    const ONE_POINT: &str = r#"{
      "timeSeriesDescriptor": {
        "labelDescriptors": [],
        "pointDescriptors": [{"key": "value_response_latencies_percentile", "valueType": "DOUBLE", "metricKind": "GAUGE", "unit": "ms"}]
      },
      "timeSeriesData": [{
        "labelValues": [],
        "pointData": [
          {"values": [{"doubleValue": 98.5}], "timeInterval": {"startTime": "2015-08-30T12:35:00Z", "endTime": "2015-08-30T12:35:00Z"}},
          {"values": [{"doubleValue": 12}], "timeInterval": {"startTime": "2015-08-30T12:34:00Z", "endTime": "2015-08-30T12:34:00Z"}}
        ]
      }]
    }"#;

    #[tokio::test]
    async fn a_value_is_the_first_point_of_the_first_series_of_a_bearer_request() {
        let server = google(vec![(200, ONE_POINT)]);
        let p = on_metadata(&server);
        assert_eq!(p.project(), "my-project");
        assert_eq!(ask(&p, QUERY).await, Answer::Value(98.5));
        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].target, TOKEN_PATH);
        assert_eq!(seen[0].header("metadata-flavor"), Some("Google"));
        let q = &seen[1];
        assert_eq!(
            (q.method.as_str(), q.target.as_str()),
            ("POST", "/v3/projects/my-project/timeSeries:query")
        );
        assert_eq!(q.header("authorization"), Some("Bearer ya29.metadata"));
        assert_eq!(q.header("content-type"), Some("application/json"));
        assert_eq!(
            serde_json::from_str::<Value>(&q.body).unwrap(),
            serde_json::json!({"query": QUERY})
        );

        // The token is reused by the next query.
        assert_eq!(ask(&p, QUERY).await, Answer::Value(98.5));
        assert_eq!(server.seen().len(), 3);
    }

    #[tokio::test]
    async fn int64_values_are_numbers_and_other_kinds_fail() {
        let server = google(vec![
            (
                200,
                r#"{"timeSeriesData":[{"pointData":[{"values":[{"int64Value":"42"}]}]}]}"#,
            ),
            (
                200,
                r#"{"timeSeriesData":[{"pointData":[{"values":[{"stringValue":"high"}]}]}]}"#,
            ),
        ]);
        let p = on_metadata(&server);
        assert_eq!(ask(&p, QUERY).await, Answer::Value(42.0));
        match ask(&p, QUERY).await {
            Answer::Failed(m) => assert!(
                m.contains("not a number: {\"stringValue\":\"high\"}"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn no_series_no_point_or_nan_is_no_values() {
        for answer in [
            "{}",
            r#"{"timeSeriesDescriptor":{"pointDescriptors":[]},"timeSeriesData":[]}"#,
            r#"{"timeSeriesData":[{"labelValues":[],"pointData":[]}]}"#,
            r#"{"timeSeriesData":[{"pointData":[{"values":[]}]}]}"#,
            r#"{"timeSeriesData":[{"pointData":[{"values":[{"doubleValue":"NaN"}]}]}]}"#,
        ] {
            let server = google(vec![(200, answer)]);
            assert_eq!(
                ask(&on_metadata(&server), QUERY).await,
                Answer::NoValues,
                "{answer}"
            );
        }
    }

    #[tokio::test]
    async fn an_empty_page_with_a_next_page_is_followed() {
        let server = google(vec![
            (200, r#"{"timeSeriesData":[],"nextPageToken":"page-2"}"#),
            (200, ONE_POINT),
        ]);
        assert_eq!(ask(&on_metadata(&server), QUERY).await, Answer::Value(98.5));
        let seen = server.seen();
        assert_eq!(
            serde_json::from_str::<Value>(&seen[2].body).unwrap(),
            serde_json::json!({"query": QUERY, "pageToken": "page-2"})
        );
    }

    #[tokio::test]
    async fn a_refusal_fails_with_googles_status_and_message() {
        let server = google(vec![(
            400,
            r#"{"error":{"code":400,"message":"Line 2, Col 9: metric 'istio.io/service/server/response_latencies' is not defined for k8s_container.","status":"INVALID_ARGUMENT"}}"#,
        )]);
        assert_eq!(
            ask(&on_metadata(&server), QUERY).await,
            Answer::Failed(
                "error requesting stackdriver: INVALID_ARGUMENT: Line 2, Col 9: metric \
                 'istio.io/service/server/response_latencies' is not defined for k8s_container. \
                 (HTTP 400)"
                    .into()
            )
        );
    }

    #[tokio::test]
    async fn the_secrets_service_account_key_is_used_when_present() {
        let server = Server::start(|req| match req.target.as_str() {
            "/token" => (
                200,
                r#"{"access_token":"ya29.from-secret","expires_in":3599,"token_type":"Bearer"}"#
                    .into(),
            ),
            _ => (200, ONE_POINT.into()),
        });
        let spec = spec(&server.base);
        let key = key_json(&format!("{}/token", server.base));
        let secret = secret(&[("project", "my-project"), ("serviceAccountKey", &key)]);
        let p = build(&source(&spec, &secret)).unwrap();
        assert_eq!(p.kind(), "stackdriver");
        assert_eq!(ask(p.as_ref(), QUERY).await, Answer::Value(98.5));
        let seen = server.seen();
        assert_eq!(seen[0].target, "/token");
        assert!(seen[0].body.contains("&assertion=ey"), "{}", seen[0].body);
        assert_eq!(
            seen[1].header("authorization"),
            Some("Bearer ya29.from-secret")
        );
    }

    fn build_error(source: &Source) -> String {
        match build(source) {
            Ok(_) => panic!("built"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_secret_and_its_project_are_required() {
        let none: MetricProvider =
            serde_json::from_value(serde_json::json!({"type": "stackdriver"})).unwrap();
        let empty = BTreeMap::new();
        let e = build_error(&source(&none, &empty));
        assert!(
            e.starts_with("spec.provider.secretRef is required for stackdriver"),
            "{e}"
        );

        let with_ref = spec("");
        let e = build_error(&source(&with_ref, &empty));
        assert!(e.contains("has no `project` key"), "{e}");

        let bad = secret(&[("project", "my project/../x")]);
        let e = build_error(&source(&with_ref, &bad));
        assert!(e.contains("Google Cloud project id holds only"), "{e}");

        let bad_key = secret(&[("project", "p"), ("serviceAccountKey", "{}")]);
        let e = build_error(&source(&with_ref, &bad_key));
        assert!(e.contains("`serviceAccountKey` of the Secret"), "{e}");

        // Without an address, the public endpoint.
        let ok = secret(&[("project", "my-project")]);
        let p = Stackdriver::new(&source(&with_ref, &ok), Auth::Adc).unwrap();
        assert_eq!(
            p.url.as_str(),
            "https://monitoring.googleapis.com/v3/projects/my-project/timeSeries:query"
        );
    }
}
