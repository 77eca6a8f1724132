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
