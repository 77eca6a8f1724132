//! `cloudwatch`: Amazon CloudWatch `GetMetricData`.
//!
//! As Flagger: the query is a JSON array of `MetricDataQuery`; the window is
//! the ten metric intervals before now, at most 20 data points; the answer
//! is the first value of the first result (CloudWatch returns the newest
//! first), and no result or no value is "no values". The region comes from
//! `spec.provider.region`, credentials from the AWS default chain
//! ([`super::aws`]), never from a Secret.
//!
//! The request uses CloudWatch's JSON protocol (awsJson1.0,
//! `X-Amz-Target: GraniteServiceVersion20100801.GetMetricData`) rather than
//! the query protocol: the template's query already is the JSON shape of
//! `MetricDataQuery`, so it is sent as written instead of being flattened
//! into `MetricDataQueries.member.N.…` form fields, and the answer is JSON
//! rather than XML.
use super::aws::{self, Chain};
use super::{Answer, Call, Provider, Source};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Flagger's window: ten metric intervals.
const WINDOW_INTERVALS: u32 = 10;
const MAX_DATAPOINTS: u64 = 20;
const TIMEOUT: Duration = Duration::from_secs(30);
const TARGET: &str = "GraniteServiceVersion20100801.GetMetricData";
/// CloudWatch's signing name.
const SERVICE: &str = "monitoring";

pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    Ok(Box::new(CloudWatch::new(source, Chain::shared())?))
}

#[derive(Debug)]
pub struct CloudWatch {
    region: String,
    url: reqwest::Url,
    window: Duration,
    insecure: bool,
    chain: Arc<Chain>,
}

impl CloudWatch {
    /// The endpoint is `spec.provider.address` when set, else
    /// `AWS_ENDPOINT_URL_CLOUDWATCH` or `AWS_ENDPOINT_URL` from the chain's
    /// environment, else `https://monitoring.<region>.amazonaws.com`.
    pub fn new(source: &Source, chain: Arc<Chain>) -> Result<CloudWatch, String> {
        let region = source
            .spec
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or(
                "spec.provider.region is required for cloudwatch: set it to the region of the \
                 metrics, e.g. us-east-1",
            )?
            .to_string();
        if source.interval.is_zero() {
            return Err(
                "the metric's interval must be positive for cloudwatch: it sets the \
                        query window (ten intervals)"
                    .into(),
            );
        }
        let address = source
            .spec
            .address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let (endpoint, from) = match address {
            Some(a) => (a.to_string(), "spec.provider.address"),
            None => match aws::endpoint_override(chain.env(), "CLOUDWATCH") {
                Some(e) => (e, "AWS_ENDPOINT_URL_CLOUDWATCH/AWS_ENDPOINT_URL"),
                None => (aws::regional_endpoint("monitoring", &region), "the region"),
            },
        };
        let url = reqwest::Url::parse(&endpoint)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                format!("cloudwatch endpoint {endpoint:?} (from {from}) is not an http(s) URL")
            })?;
        Ok(CloudWatch {
            region,
            url,
            window: source.interval * WINDOW_INTERVALS,
            insecure: source.spec.insecure_skip_verify.unwrap_or(false),
            chain,
        })
    }

    async fn run(&self, call: &Call<'_>, query: &str) -> Answer {
        let queries = match metric_data_queries(query) {
            Ok(q) => q,
            Err(e) => return Answer::Failed(format!("error unmarshaling query: {e}")),
        };
        let end = aws::unix_seconds(call.now);
        let start = end - self.window.as_secs() as i64;
        let body = serde_json::json!({
            "MetricDataQueries": queries,
            "StartTime": start,
            "EndTime": end,
            "MaxDatapoints": MAX_DATAPOINTS,
        })
        .to_string();
        let creds = match self
            .chain
            .credentials(&call.http.verify, &self.region, call.now)
            .await
        {
            Ok(c) => c,
            Err(e) => return Answer::Failed(format!("error requesting cloudwatch: {e}")),
        };
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", TARGET),
        ];
        let signed = aws::sign(
            &creds,
            &self.region,
            SERVICE,
            call.now,
            &aws::Request {
                method: "POST",
                url: &self.url,
                headers: &headers,
                body: body.as_bytes(),
            },
        );
        let client = if self.insecure {
            &call.http.insecure
        } else {
            &call.http.verify
        };
        let mut req = client.post(self.url.clone()).timeout(TIMEOUT);
        for (k, v) in headers.iter().map(|(k, v)| (*k, *v)) {
            req = req.header(k, v);
        }
        for (k, v) in &signed {
            req = req.header(k, v);
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => return Answer::Failed(format!("error requesting cloudwatch: {e}")),
        };
        let status = resp.status();
        let error_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return Answer::Failed(format!("error requesting cloudwatch: {e}")),
        };
        if !status.is_success() {
            return Answer::Failed(format!(
                "error requesting cloudwatch: {}",
                service_error(status.as_u16(), error_type.as_deref(), &text)
            ));
        }
        first_value(&text)
    }
}

impl Provider for CloudWatch {
    fn kind(&self) -> &'static str {
        "cloudwatch"
    }

    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(self.run(call, query))
    }
}

/// What one level of `MetricDataQuery` holds: each member, and what it is.
enum Shape {
    Leaf,
    Query,
    MetricStat,
    Metric,
    Dimensions,
}

fn members(shape: &Shape) -> &'static [(&'static str, Shape)] {
    match shape {
        Shape::Query => &[
            ("Id", Shape::Leaf),
            ("MetricStat", Shape::MetricStat),
            ("Expression", Shape::Leaf),
            ("Label", Shape::Leaf),
            ("ReturnData", Shape::Leaf),
            ("Period", Shape::Leaf),
            ("AccountId", Shape::Leaf),
        ],
        Shape::MetricStat => &[
            ("Metric", Shape::Metric),
            ("Period", Shape::Leaf),
            ("Stat", Shape::Leaf),
            ("Unit", Shape::Leaf),
        ],
        Shape::Metric => &[
            ("Namespace", Shape::Leaf),
            ("MetricName", Shape::Leaf),
            ("Dimensions", Shape::Dimensions),
        ],
        Shape::Dimensions => &[("Name", Shape::Leaf), ("Value", Shape::Leaf)],
        Shape::Leaf => &[],
    }
}

/// The query as CloudWatch's JSON protocol spells it. Flagger decodes it
/// with Go's `encoding/json`, which matches member names case-insensitively
/// and drops unknown ones; the service matches exactly, so names are
/// rewritten to their canonical case and unknown members dropped.
pub fn metric_data_queries(query: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(query).map_err(|e| e.to_string())?;
    let Value::Array(items) = v else {
        return Err("the query must be a JSON array of MetricDataQuery".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, q)| canonical(q, &Shape::Query, &format!("[{i}]")))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn canonical(v: &Value, shape: &Shape, path: &str) -> Result<Value, String> {
    match (shape, v) {
        (Shape::Leaf, v) => Ok(v.clone()),
        (_, Value::Null) => Ok(Value::Null),
        (Shape::Dimensions, Value::Array(dims)) => dims
            .iter()
            .enumerate()
            .map(|(i, d)| canonical_object(d, members(shape), &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Shape::Dimensions, _) => Err(format!("{path} must be an array of {{Name, Value}}")),
        (_, v) => canonical_object(v, members(shape), path),
    }
}

fn canonical_object(
    v: &Value,
    members: &[(&'static str, Shape)],
    path: &str,
) -> Result<Value, String> {
    let Value::Object(obj) = v else {
        return Err(format!("{path} must be an object"));
    };
    let mut out = Map::new();
    for (name, shape) in members {
        // An exact match wins over a case-insensitive one, as in Go.
        let found = obj.get(*name).or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        });
        if let Some(v) = found {
            out.insert(
                name.to_string(),
                canonical(v, shape, &format!("{path}.{name}"))?,
            );
        }
    }
    Ok(Value::Object(out))
}

/// The first value of the first `MetricDataResults` entry.
fn first_value(text: &str) -> Answer {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Answer::Failed(format!(
                "error requesting cloudwatch: unreadable answer ({e}): {}",
                clip(text)
            ))
        }
    };
    let first = v
        .get("MetricDataResults")
        .and_then(Value::as_array)
        .and_then(|r| r.first());
    let Some(first) = first else {
        return Answer::NoValues;
    };
    match first
        .get("Values")
        .and_then(Value::as_array)
        .and_then(|vs| vs.first())
    {
        None => Answer::NoValues,
        Some(x) => match x.as_f64() {
            Some(n) => Answer::Value(n),
            None => Answer::Failed(format!(
                "error requesting cloudwatch: the first value is not a number: {x}"
            )),
        },
    }
}

/// An awsJson1.0 error: `{"__type": "…#Code", "message": "…"}`.
fn service_error(status: u16, header_type: Option<&str>, text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let code = v
        .get("__type")
        .or_else(|| v.get("code"))
        .and_then(Value::as_str)
        .or(header_type)
        .map(|t| {
            // `aws.protocols#Code:http://…` → `Code`.
            let t = t.rsplit('#').next().unwrap_or(t);
            t.split(':').next().unwrap_or(t).to_string()
        });
    let message = v
        .get("message")
        .or_else(|| v.get("Message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| clip(text));
    match code {
        Some(c) => format!("{c}: {message} (HTTP {status})"),
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
    use crate::metrics::testserver::{clients, Answering as Server, Request as Seen};
    use ring::hmac;
    use std::collections::BTreeMap;
    use std::time::UNIX_EPOCH;

    /// 2015-08-30T12:36:00Z.
    const NOW: i64 = 1_440_938_160;

    /// Flagger's documented query, with the member names in the mixed case
    /// Go's decoder accepts and a member CloudWatch does not know.
    const QUERY: &str = r#"[
        {"Id": "e1", "Expression": "m1 / m2", "Label": "ErrorRate"},
        {"id": "m1", "metricStat": {"metric": {"namespace": "MyKubernetesCluster",
            "metricName": "ErrorCount", "dimensions": [{"name": "appName", "value": "podinfo.test"}]},
            "period": 60, "stat": "Sum", "unit": "Count"}, "returnData": false, "comment": "dropped"},
        {"Id": "m2", "MetricStat": {"Metric": {"Namespace": "MyKubernetesCluster",
            "MetricName": "RequestCount", "Dimensions": [{"Name": "appName", "Value": "podinfo.test"}]},
            "Period": 60, "Stat": "Sum", "Unit": "Count"}, "ReturnData": false}
    ]"#;

    fn spec(v: serde_json::Value) -> MetricProvider {
        serde_json::from_value(v).unwrap()
    }

    fn provider(spec: &MetricProvider, env: Env) -> Result<CloudWatch, String> {
        let secret = BTreeMap::new();
        CloudWatch::new(
            &Source {
                spec,
                secret: &secret,
                interval: Duration::from_secs(60),
                default_address: "http://prometheus:9090",
            },
            Arc::new(Chain::new(env)),
        )
    }

    fn env(endpoint: &str) -> Env {
        Env::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
            ("AWS_SESSION_TOKEN", "session-token"),
            ("AWS_ENDPOINT_URL_CLOUDWATCH", endpoint),
        ])
    }

    async fn ask(cw: &CloudWatch, query: &str) -> Answer {
        let http = clients();
        let call = Call {
            http: &http,
            now: UNIX_EPOCH + Duration::from_secs(NOW as u64),
        };
        cw.query(&call, query).await
    }

    /// Checks the signature as CloudWatch would: from the request as it
    /// arrived, over the headers it says it signed.
    fn verify_signature(req: &Seen, secret: &str) {
        let auth = req.header("authorization").expect("signed");
        let rest = auth.strip_prefix("AWS4-HMAC-SHA256 Credential=").unwrap();
        let (credential, rest) = rest.split_once(", SignedHeaders=").unwrap();
        let (signed, signature) = rest.split_once(", Signature=").unwrap();
        let scope = credential.split_once('/').unwrap().1;
        let parts: Vec<&str> = scope.split('/').collect();
        let headers: Vec<(String, String)> = signed
            .split(';')
            .map(|h| (h.to_string(), req.header(h).unwrap().to_string()))
            .collect();
        let url = reqwest::Url::parse(&format!(
            "http://{}{}",
            req.header("host").unwrap(),
            req.target
        ))
        .unwrap();
        let (creq, _) = aws::canonical_request(&req.method, &url, &headers, req.body.as_bytes());
        let sts = aws::string_to_sign(req.header("x-amz-date").unwrap(), scope, &creq);
        let key = hmac::Key::new(
            hmac::HMAC_SHA256,
            &aws::signing_key(secret, parts[0], parts[1], parts[2]),
        );
        assert_eq!(
            signature,
            hex::encode(hmac::sign(&key, sts.as_bytes()).as_ref()),
            "signature over {creq}"
        );
    }

    #[tokio::test]
    async fn a_value_is_the_first_value_of_the_first_result_of_a_signed_request() {
        let server = Server::start(|_| {
            (
                200,
                r#"{"MetricDataResults":[
                    {"Id":"e1","Label":"ErrorRate","StatusCode":"Complete","Timestamps":[1440938100,1440938040],"Values":[0.25,0.5]},
                    {"Id":"e2","Label":"Other","StatusCode":"Complete","Timestamps":[1440938100],"Values":[9]}
                ],"Messages":[]}"#
                    .into(),
            )
        });
        let cw = provider(
            &spec(serde_json::json!({"type": "cloudwatch", "region": "ap-northeast-1"})),
            env(&server.base),
        )
        .unwrap();
        assert_eq!(ask(&cw, QUERY).await, Answer::Value(0.25));

        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/"));
        assert_eq!(
            req.header("content-type"),
            Some("application/x-amz-json-1.0")
        );
        assert_eq!(
            req.header("x-amz-target"),
            Some("GraniteServiceVersion20100801.GetMetricData")
        );
        assert_eq!(req.header("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(req.header("x-amz-security-token"), Some("session-token"));
        let auth = req.header("authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/ap-northeast-1/monitoring/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature="
            ),
            "{auth}"
        );
        verify_signature(req, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");

        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        let dims = serde_json::json!([{"Name": "appName", "Value": "podinfo.test"}]);
        assert_eq!(
            body,
            serde_json::json!({
                "MetricDataQueries": [
                    {"Id": "e1", "Expression": "m1 / m2", "Label": "ErrorRate"},
                    {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "MyKubernetesCluster",
                        "MetricName": "ErrorCount", "Dimensions": dims},
                        "Period": 60, "Stat": "Sum", "Unit": "Count"}, "ReturnData": false},
                    {"Id": "m2", "MetricStat": {"Metric": {"Namespace": "MyKubernetesCluster",
                        "MetricName": "RequestCount", "Dimensions": dims},
                        "Period": 60, "Stat": "Sum", "Unit": "Count"}, "ReturnData": false}
                ],
                // Ten intervals of 1m before the call.
                "StartTime": NOW - 600,
                "EndTime": NOW,
                "MaxDatapoints": 20
            })
        );
    }

    #[tokio::test]
    async fn no_result_or_no_value_is_no_values() {
        for answer in [
            r#"{"MetricDataResults":[],"Messages":[]}"#,
            r#"{"MetricDataResults":[{"Id":"e1","Label":"ErrorRate","StatusCode":"Complete","Timestamps":[],"Values":[]}],"Messages":[]}"#,
            r#"{"Messages":[]}"#,
        ] {
            let server = Server::start(move |_| (200, answer.into()));
            let cw = provider(
                &spec(serde_json::json!({"type": "cloudwatch", "region": "us-east-1"})),
                env(&server.base),
            )
            .unwrap();
            assert_eq!(ask(&cw, QUERY).await, Answer::NoValues, "{answer}");
        }
    }

    #[tokio::test]
    async fn a_refusal_fails_with_the_services_code_and_message() {
        let server = Server::start(|_| {
            (
                400,
                r#"{"__type":"com.amazonaws.cloudwatch#InvalidParameterValueException","message":"The value m3 for parameter MetricDataQueries is not valid."}"#
                    .into(),
            )
        });
        let cw = provider(
            &spec(serde_json::json!({"type": "cloudwatch", "region": "us-east-1"})),
            env(&server.base),
        )
        .unwrap();
        assert_eq!(
            ask(&cw, QUERY).await,
            Answer::Failed(
                "error requesting cloudwatch: InvalidParameterValueException: The value m3 for \
                 parameter MetricDataQueries is not valid. (HTTP 400)"
                    .into()
            )
        );

        let denied = Server::start(|_| {
            (
                403,
                r#"{"__type":"AccessDeniedException","Message":"User: arn:aws:sts::123456789012:assumed-role/flagger is not authorized to perform: cloudwatch:GetMetricData"}"#
                    .into(),
            )
        });
        let cw = provider(
            &spec(serde_json::json!({"type": "cloudwatch", "region": "us-east-1"})),
            env(&denied.base),
        )
        .unwrap();
        match ask(&cw, QUERY).await {
            Answer::Failed(m) => assert!(
                m.contains("AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/flagger is not authorized")
                    && m.contains("(HTTP 403)"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_query_that_is_not_an_array_of_queries_fails_without_a_request() {
        let server = Server::start(|_| (200, "{}".into()));
        let cw = provider(
            &spec(serde_json::json!({"type": "cloudwatch", "region": "us-east-1"})),
            env(&server.base),
        )
        .unwrap();
        for bad in [
            "{\"Id\": \"e1\"}",
            "[1]",
            "not json",
            r#"[{"Id":"m1","MetricStat":{"Metric":{"Dimensions":{"Name":"a"}}}}]"#,
        ] {
            match ask(&cw, bad).await {
                Answer::Failed(m) => assert!(m.starts_with("error unmarshaling query: "), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(server.seen().is_empty());
    }

    #[tokio::test]
    async fn no_credentials_fail_the_query_and_say_how_to_give_them() {
        let server = Server::start(|_| (200, "{}".into()));
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL", server.base.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]);
        let cw = provider(
            &spec(serde_json::json!({"type": "cloudwatch", "region": "us-east-1"})),
            env,
        )
        .unwrap();
        match ask(&cw, QUERY).await {
            Answer::Failed(m) => assert!(
                m.contains("no AWS credentials: set AWS_ACCESS_KEY_ID"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(server.seen().is_empty());
    }

    #[test]
    fn the_region_is_required_and_picks_the_endpoint() {
        let e = provider(
            &spec(serde_json::json!({"type": "cloudwatch"})),
            Env::default(),
        )
        .unwrap_err();
        assert!(
            e.starts_with("spec.provider.region is required for cloudwatch"),
            "{e}"
        );
        let cw = provider(
            &spec(serde_json::json!({"type": "cloudwatch", "region": "eu-west-1"})),
            Env::default(),
        )
        .unwrap();
        assert_eq!(
            cw.url.as_str(),
            "https://monitoring.eu-west-1.amazonaws.com/"
        );
        assert_eq!(cw.window, Duration::from_secs(600));
        // The template's address wins over the environment's override.
        let cw = provider(
            &spec(serde_json::json!({"type": "cloudwatch", "region": "eu-west-1", "address": "https://vpce-1.monitoring.eu-west-1.vpce.amazonaws.com"})),
            env("http://127.0.0.1:4566"),
        )
        .unwrap();
        assert_eq!(
            cw.url.as_str(),
            "https://vpce-1.monitoring.eu-west-1.vpce.amazonaws.com/"
        );
        let e = provider(
            &spec(serde_json::json!({"type": "cloudwatch", "region": "eu-west-1", "address": "monitoring"})),
            Env::default(),
        )
        .unwrap_err();
        assert!(e.contains("spec.provider.address"), "{e}");
    }
}
