//! Dynatrace (`type: dynatrace`): the metrics API v2,
//! `GET <address>/api/v2/metrics/query?from=&metricSelector=&resolution=Inf&to=`
//! (milliseconds, ten metric intervals back) with
//! `Authorization: Api-Token <dynatrace_token>`. The address is required
//! (`https://<environment>.live.dynatrace.com`). The first value of the last
//! series of the first result is the value.
use super::{Answer, Call, Provider, Source};
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Dynatrace {
    address: String,
    token: String,
    /// Milliseconds before now the window starts.
    from_delta: i64,
}

pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    let address = super::address(source.spec).ok_or("dynatrace endpoint is not set")?;
    super::parse_url("dynatrace", address)?;
    let token = super::secret_text(source.secret, "dynatrace_token")
        .ok_or("dynatrace credentials does not contain dynatrace_token")?;
    Ok(Box::new(Dynatrace {
        address: address.trim_end_matches('/').to_string(),
        token,
        from_delta: 10 * source.interval.as_millis() as i64,
    }))
}

impl Provider for Dynatrace {
    fn kind(&self) -> &'static str {
        "dynatrace"
    }

    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            // Flagger's `to`: now in whole seconds, as milliseconds.
            let now = super::unix_seconds(call.now) * 1000;
            let url = format!("{}/api/v2/metrics/query", self.address);
            let mut url = match reqwest::Url::parse(&url) {
                Ok(u) => u,
                Err(e) => return Answer::Failed(format!("error http.NewRequest: {e}")),
            };
            url.query_pairs_mut()
                .append_pair("from", &(now - self.from_delta).to_string())
                .append_pair("metricSelector", query)
                .append_pair("resolution", "Inf")
                .append_pair("to", &now.to_string());
            let req = super::client(call, false).get(url).header(
                reqwest::header::AUTHORIZATION,
                format!("Api-Token {}", self.token),
            );
            super::ask_ok(req, TIMEOUT, parse).await
        })
    }
}

/// `result[0].data[last].values[0]`; anything missing or null is "no values".
pub fn parse(body: &str) -> Answer {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Answer::Failed(format!("error unmarshaling result: {e}, '{body}'")),
    };
    let value = v["result"]
        .get(0)
        .and_then(|r| r["data"].as_array())
        .and_then(|d| d.last())
        .and_then(|s| s["values"].get(0));
    match value {
        Some(Value::Number(n)) => Answer::Value(n.as_f64().unwrap_or(f64::NAN)),
        Some(Value::Null) | None => Answer::NoValues,
        Some(other) => Answer::Failed(format!("invalid response: value {other}: '{body}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{self, json};
    use super::*;

    const ANSWER: &str = r#"{
      "totalCount": 1, "nextPageKey": null,
      "result": [{"metricId": "builtin:host.cpu.usage", "data": [
        {"dimensions": ["HOST-0990886B7D39FE29"], "timestamps": [1589455320000], "values": [12.5]}]}]}"#;

    #[tokio::test]
    async fn asks_the_metrics_api_with_the_token_over_ten_intervals() {
        let server = testserver::serve(vec![
            json(200, ANSWER),
            json(
                200,
                r#"{"totalCount": 0, "nextPageKey": null, "result": [{"metricId": "x", "data": []}]}"#,
            ),
            json(
                401,
                r#"{"error":{"code":401,"message":"Token Authentication failed"}}"#,
            ),
        ]);
        let t = testserver::template(
            serde_json::json!({"type": "dynatrace", "address": server.url}),
            &[("dynatrace_token", "dt0c01.abc")],
        );
        let p = build(&t.source(Duration::from_secs(30))).unwrap();
        assert_eq!(p.kind(), "dynatrace");
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        let q = "builtin:host.cpu.usage:filter(eq(Host,HOST-0990886B7D39FE29))";
        assert_eq!(p.query(&call, q).await, Answer::Value(12.5));
        assert_eq!(p.query(&call, q).await, Answer::NoValues);
        match p.query(&call, q).await {
            Answer::Failed(e) => assert_eq!(
                e,
                r#"error response: 401 Unauthorized: {"error":{"code":401,"message":"Token Authentication failed"}}"#
            ),
            other => panic!("{other:?}"),
        }
        let seen = server.requests();
        let r = &seen[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/api/v2/metrics/query")
        );
        assert_eq!(
            r.query(),
            [
                ("from", "1589455020000"),
                ("metricSelector", q),
                ("resolution", "Inf"),
                ("to", "1589455320000"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(r.header("authorization"), Some("Api-Token dt0c01.abc"));
        assert_eq!(r.body, "");
    }

    #[test]
    fn the_address_and_the_token_are_required() {
        let t = testserver::template(
            serde_json::json!({"type": "dynatrace"}),
            &[("dynatrace_token", "t")],
        );
        let err = build(&t.source(Duration::from_secs(60))).err().unwrap();
        assert_eq!(err, "dynatrace endpoint is not set");
        let t = testserver::template(
            serde_json::json!({"type": "dynatrace", "address": "https://x.live.dynatrace.com"}),
            &[],
        );
        let err = build(&t.source(Duration::from_secs(60))).err().unwrap();
        assert_eq!(
            err,
            "dynatrace credentials does not contain dynatrace_token"
        );
    }
}
