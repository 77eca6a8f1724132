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
            let resp = client
                .post(self.url.clone())
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .body(body.to_string())
                .timeout(TIMEOUT)
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => return Answer::Failed(format!("error requesting stackdriver: {e}")),
            };
            let status = resp.status();
            let text = match resp.text().await {
                Ok(t) => t,
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
