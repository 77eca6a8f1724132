//! New Relic (`type: newrelic`): the Insights query API,
//! `GET <address>/v1/accounts/<newrelic_account_id>/query?nrql=<query> SINCE <interval> seconds ago`
//! with `X-Query-Key: <newrelic_query_key>`. The one result's `result` is the
//! value.
use super::{Answer, Call, Provider, Source};
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;

pub const DEFAULT_ADDRESS: &str = "https://insights-api.newrelic.com";
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct NewRelic {
    endpoint: String,
    query_key: String,
    /// The window: seconds before now.
    since: u64,
}

pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    let address = super::address(source.spec).unwrap_or(DEFAULT_ADDRESS);
    super::parse_url("newrelic", address)?;
    let account = super::secret_text(source.secret, "newrelic_account_id")
        .ok_or("newrelic credentials does not contain the key 'newrelic_account_id'")?;
    let query_key = super::secret_text(source.secret, "newrelic_query_key")
        .ok_or("newrelic credentials does not contain the key 'newrelic_query_key'")?;
    Ok(Box::new(NewRelic {
        endpoint: format!(
            "{}/v1/accounts/{account}/query",
            address.trim_end_matches('/')
        ),
        query_key,
        since: source.interval.as_secs(),
    }))
}

impl Provider for NewRelic {
    fn kind(&self) -> &'static str {
        "newrelic"
    }

    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let mut url = match reqwest::Url::parse(&self.endpoint) {
                Ok(u) => u,
                Err(e) => return Answer::Failed(format!("error http.NewRequest: {e}")),
            };
            url.query_pairs_mut()
                .append_pair("nrql", &format!("{query} SINCE {} seconds ago", self.since));
            let req = super::client(call, false)
                .get(url)
                .header("X-Query-Key", &self.query_key);
            super::ask_ok(req, TIMEOUT, parse).await
        })
    }
}

/// `results[0].result` of exactly one result; none, several or null is "no
/// values".
pub fn parse(body: &str) -> Answer {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Answer::Failed(format!("error unmarshaling result: {e}, '{body}'")),
    };
    let Some(results) = v["results"].as_array() else {
        return Answer::Failed(format!("invalid response: '{body}'"));
    };
    if results.len() != 1 {
        return Answer::NoValues;
    }
    match &results[0]["result"] {
        Value::Number(n) => Answer::Value(n.as_f64().unwrap_or(f64::NAN)),
        Value::Null => Answer::NoValues,
        other => Answer::Failed(format!("invalid response: result {other}: '{body}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{self, json};
    use super::*;

    #[tokio::test]
    async fn asks_insights_with_the_query_key_since_one_interval() {
        let server = testserver::serve(vec![
            json(200, r#"{"results":[{"result": 99.25}]}"#),
            json(200, r#"{"results": []}"#),
            json(400, r#"{"error":"NRQL Syntax Error"}"#),
        ]);
        let t = testserver::template(
            serde_json::json!({"type": "newrelic", "address": server.url}),
            &[("newrelic_query_key", "qk"), ("newrelic_account_id", "51")],
        );
        let p = build(&t.source(Duration::from_secs(60))).unwrap();
        assert_eq!(p.kind(), "newrelic");
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        let q =
            "SELECT sum(nginx_ingress_controller_requests) / 1 FROM Metric WHERE status = '200'";
        assert_eq!(p.query(&call, q).await, Answer::Value(99.25));
        assert_eq!(p.query(&call, q).await, Answer::NoValues);
        match p.query(&call, q).await {
            Answer::Failed(e) => {
                assert_eq!(
                    e,
                    r#"error response: 400 Bad Request: {"error":"NRQL Syntax Error"}"#
                )
            }
            other => panic!("{other:?}"),
        }
        let seen = server.requests();
        let r = &seen[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/v1/accounts/51/query")
        );
        assert_eq!(
            r.query(),
            vec![(
                "nrql".to_string(),
                "SELECT sum(nginx_ingress_controller_requests) / 1 FROM Metric WHERE status = '200' SINCE 60 seconds ago".to_string()
            )]
        );
        assert_eq!(r.header("x-query-key"), Some("qk"));
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.body, "");
    }

    #[test]
    fn the_account_and_the_key_are_required() {
        let t = testserver::template(
            serde_json::json!({"type": "newrelic"}),
            &[("newrelic_query_key", "qk")],
        );
        let err = build(&t.source(Duration::from_secs(60))).err().unwrap();
        assert!(err.contains("'newrelic_account_id'"), "{err}");
        let t = testserver::template(
            serde_json::json!({"type": "newrelic"}),
            &[("newrelic_account_id", "1")],
        );
        let err = build(&t.source(Duration::from_secs(60))).err().unwrap();
        assert!(err.contains("'newrelic_query_key'"), "{err}");
    }

    #[test]
    fn a_null_result_is_no_value() {
        assert_eq!(parse(r#"{"results":[{"result":null}]}"#), Answer::NoValues);
        assert_eq!(
            parse(r#"{"results":[{"result":1},{"result":2}]}"#),
            Answer::NoValues
        );
    }
}
