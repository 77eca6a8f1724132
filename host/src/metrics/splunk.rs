//! Splunk Observability (`type: splunk`, SignalFx): a SignalFlow program,
//! run over SignalFlow's HTTP API:
//! `POST <stream address>/v2/signalflow/execute?start=&stop=&immediate=true`
//! with `X-SF-Token: <sf_token_key>` and the program as the body; the answer
//! is a Server-Sent Events stream. The window reaches ten metric intervals
//! back (milliseconds). The address is required: the API address
//! (`https://api.<realm>.signalfx.com`) or the stream one; either becomes
//! `https://stream.<realm>.signalfx.com`. The newest data point is the
//! value; data from more than one time series is an error.
//!
//! Flagger speaks SignalFlow over a WebSocket; the HTTP API runs the same
//! computation and answers with the same messages.
use super::{Answer, Call, Provider, Source};
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Splunk {
    endpoint: reqwest::Url,
    token: String,
    /// Milliseconds before now the window starts.
    from_delta: i64,
}

pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    let address = super::address(source.spec).ok_or("splunk endpoint is not set")?;
    let token = super::secret_text(source.secret, "sf_token_key")
        .ok_or("splunk credentials does not contain sf_token_key")?;
    Ok(Box::new(Splunk {
        endpoint: stream_endpoint(address)?,
        token,
        from_delta: 10 * source.interval.as_millis() as i64,
    }))
}

/// `https://api.<realm>.signalfx.com` or `wss://stream.<realm>.signalfx.com`
/// to `https://stream.<realm>.signalfx.com/v2/signalflow/execute`.
fn stream_endpoint(address: &str) -> Result<reqwest::Url, String> {
    let url = super::parse_url("splunk", address)?;
    let scheme = match url.scheme() {
        "ws" | "http" => "http",
        "wss" | "https" => "https",
        other => {
            return Err(format!(
                "splunk address {address}: unsupported scheme {other}"
            ))
        }
    };
    let host = url.host_str().unwrap_or_default();
    let host = match host.strip_prefix("api.") {
        Some(rest) => format!("stream.{rest}"),
        None => host.to_string(),
    };
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/v2/signalflow").unwrap_or(path);
    reqwest::Url::parse(&format!(
        "{scheme}://{host}{port}{path}/v2/signalflow/execute"
    ))
    .map_err(|e| format!("splunk address {address} is not a valid URL: {e}"))
}

impl Provider for Splunk {
    fn kind(&self) -> &'static str {
        "splunk"
    }

    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let now = call
                .now
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let mut url = self.endpoint.clone();
            url.query_pairs_mut()
                .append_pair("start", &(now - self.from_delta).to_string())
                .append_pair("stop", &now.to_string())
                .append_pair("immediate", "true");
            let req = super::client(call, false)
                .post(url)
                .header("X-SF-Token", &self.token)
                .header(reqwest::header::CONTENT_TYPE, "text/plain")
                .body(query.to_string());
            match super::send(req, TIMEOUT).await {
                Ok((status, body)) if status.is_success() => parse(&body),
                Ok((status, body)) => {
                    Answer::Failed(format!("error executing query: {status}: {}", body.trim()))
                }
                Err(e) => Answer::Failed(format!("error executing query: {e}")),
            }
        })
    }
}

/// The events of a SignalFlow stream: `(event, data)`, data lines joined.
fn events(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut event, mut data) = (String::new(), Vec::new());
    for line in body.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if !data.is_empty() || !event.is_empty() {
                out.push((std::mem::take(&mut event), data.join("\n")));
                data.clear();
            }
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
        }
    }
    out
}

/// The newest non-null point of the one time series in the stream.
pub fn parse(body: &str) -> Answer {
    let mut points: Vec<(String, f64)> = Vec::new();
    for (event, data) in events(body) {
        match event.as_str() {
            "data" => {
                let v: Value = match serde_json::from_str(&data) {
                    Ok(v) => v,
                    Err(e) => return Answer::Failed(format!("error executing query: {e}: {data}")),
                };
                for p in v["data"].as_array().into_iter().flatten() {
                    if let Some(f) = p["value"].as_f64() {
                        let ts = p["tsId"].as_str().unwrap_or_default().to_string();
                        points.push((ts, f));
                    }
                }
            }
            "error" => return Answer::Failed(format!("error executing query: {data}")),
            _ => {}
        }
    }
    let mut series: Vec<&str> = points.iter().map(|(t, _)| t.as_str()).collect();
    series.sort_unstable();
    series.dedup();
    if series.len() > 1 {
        return Answer::Failed("invalid response: query returned multiple values".into());
    }
    points
        .last()
        .map_or(Answer::NoValues, |(_, v)| Answer::Value(*v))
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{self, reply};
    use super::*;

    /// A stream as SignalFlow's HTTP API sends it: JSON spread over `data:` lines.
    const STREAM: &str = "event: control-message\ndata: {\ndata:   \"event\" : \"STREAM_START\",\ndata:   \"timestampMs\" : 1589455320100\ndata: }\n\n\
event: metadata\ndata: {\ndata:   \"tsId\" : \"AAAAAKk1PrI\",\ndata:   \"properties\" : { \"sf_metric\" : \"service.request.count\" }\ndata: }\n\n\
event: data\ndata: {\ndata:   \"data\" : [ {\ndata:     \"tsId\" : \"AAAAAKk1PrI\",\ndata:     \"value\" : 40.0\ndata:   } ],\ndata:   \"logicalTimestampMs\" : 1589455260000\ndata: }\n\n\
event: data\ndata: {\ndata:   \"data\" : [ {\ndata:     \"tsId\" : \"AAAAAKk1PrI\",\ndata:     \"value\" : 60\ndata:   } ],\ndata:   \"logicalTimestampMs\" : 1589455320000\ndata: }\n\n\
event: control-message\ndata: {\ndata:   \"event\" : \"END_OF_CHANNEL\",\ndata:   \"timestampMs\" : 1589455320200\ndata: }\n\n";

    const EMPTY: &str = "event: control-message\ndata: {\"event\":\"STREAM_START\"}\n\n\
event: data\ndata: {\"data\":[],\"logicalTimestampMs\":1589455320000}\n\n\
event: control-message\ndata: {\"event\":\"END_OF_CHANNEL\"}\n\n";

    #[tokio::test]
    async fn posts_the_program_with_the_token_and_reads_the_newest_point() {
        let server = testserver::serve(vec![
            reply(200, "text/event-stream", STREAM),
            reply(200, "text/event-stream", EMPTY),
            reply(
                400,
                "application/json",
                r#"{"code":400,"message":"Invalid SignalFlow program"}"#,
            ),
        ]);
        let t = testserver::template(
            serde_json::json!({"type": "splunk", "address": server.url}),
            &[("sf_token_key", "sf-token")],
        );
        let p = build(&t.source(Duration::from_secs(60))).unwrap();
        assert_eq!(p.kind(), "splunk");
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        let q = "data('service.request.count', filter=filter('service.name', 'myservice')).sum().publish()";
        assert_eq!(p.query(&call, q).await, Answer::Value(60.0));
        assert_eq!(p.query(&call, q).await, Answer::NoValues);
        match p.query(&call, q).await {
            Answer::Failed(e) => assert_eq!(
                e,
                r#"error executing query: 400 Bad Request: {"code":400,"message":"Invalid SignalFlow program"}"#
            ),
            other => panic!("{other:?}"),
        }
        let seen = server.requests();
        let r = &seen[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/v2/signalflow/execute")
        );
        assert_eq!(
            r.raw_query,
            "start=1589454720000&stop=1589455320000&immediate=true"
        );
        assert_eq!(r.header("x-sf-token"), Some("sf-token"));
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.body, q);
    }

    #[test]
    fn the_api_or_stream_address_becomes_the_stream_endpoint() {
        for a in [
            "https://api.us1.signalfx.com",
            "wss://stream.us1.signalfx.com",
            "wss://stream.us1.signalfx.com/v2/signalflow",
        ] {
            assert_eq!(
                stream_endpoint(a).unwrap().as_str(),
                "https://stream.us1.signalfx.com/v2/signalflow/execute",
                "{a}"
            );
        }
        assert!(stream_endpoint("ftp://api.us1.signalfx.com").is_err());
    }

    #[test]
    fn several_time_series_or_an_error_event_fail() {
        let two = "event: data\ndata: {\"data\":[{\"tsId\":\"A\",\"value\":1},{\"tsId\":\"B\",\"value\":2}]}\n\n";
        assert!(matches!(parse(two), Answer::Failed(e) if e.contains("multiple values")));
        let err = "event: error\ndata: {\"error\":400,\"message\":\"unknown function\"}\n\n";
        assert!(matches!(parse(err), Answer::Failed(e) if e.contains("unknown function")));
        let nulls = "event: data\ndata: {\"data\":[{\"tsId\":\"A\",\"value\":null}]}\n\n";
        assert_eq!(parse(nulls), Answer::NoValues);
    }
}
