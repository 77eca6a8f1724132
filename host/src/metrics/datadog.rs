//! Datadog (`type: datadog`): `GET <address>/api/v1/query?from=&query=&to=`
//! with the `DD-API-KEY` and `DD-APPLICATION-KEY` headers, from the Secret's
//! `datadog_api_key` and `datadog_application_key`. The window reaches ten
//! metric intervals back; the first point of the first series is the value
//! (the newest bucket is usually incomplete).
use super::{Answer, Call, Provider, Source};
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;

pub const DEFAULT_ADDRESS: &str = "https://api.datadoghq.com";
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Datadog {
    address: String,
    api_key: String,
    application_key: String,
    /// Seconds before now the window starts.
    from_delta: i64,
}

pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    let address = super::address(source.spec).unwrap_or(DEFAULT_ADDRESS);
    super::parse_url("datadog", address)?;
    let api_key = super::secret_text(source.secret, "datadog_api_key")
        .ok_or("datadog credentials does not contain datadog_api_key")?;
    let application_key = super::secret_text(source.secret, "datadog_application_key")
        .ok_or("datadog credentials does not contain datadog_application_key")?;
    Ok(Box::new(Datadog {
        address: address.trim_end_matches('/').to_string(),
        api_key,
        application_key,
        from_delta: 10 * source.interval.as_secs() as i64,
    }))
}

impl Provider for Datadog {
    fn kind(&self) -> &'static str {
        "datadog"
    }

    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let now = super::unix_seconds(call.now);
            let mut url = match reqwest::Url::parse(&format!("{}/api/v1/query", self.address)) {
                Ok(u) => u,
                Err(e) => return Answer::Failed(format!("error http.NewRequest: {e}")),
            };
            url.query_pairs_mut()
                .append_pair("from", &(now - self.from_delta).to_string())
                .append_pair("query", query)
                .append_pair("to", &now.to_string());
            let req = super::client(call, false)
                .get(url)
                .header("DD-API-KEY", &self.api_key)
                .header("DD-APPLICATION-KEY", &self.application_key);
            match super::send(req, TIMEOUT).await {
                Ok((status, body)) if status == reqwest::StatusCode::OK => parse(&body),
                Ok((status, body)) => {
                    Answer::Failed(format!("error response: {}: {status}", body.trim()))
                }
                Err(e) => Answer::Failed(e),
            }
        })
    }
}

/// `series[0].pointlist[0][1]`; no series or no point is "no values".
pub fn parse(body: &str) -> Answer {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Answer::Failed(format!("error unmarshaling result: {e}, '{body}'")),
    };
    let point = v["series"]
        .get(0)
        .and_then(|s| s["pointlist"].get(0))
        .and_then(|p| p.as_array());
    match point {
        None => Answer::NoValues,
        Some(p) => match p.get(1) {
            Some(Value::Number(n)) => Answer::Value(n.as_f64().unwrap_or(f64::NAN)),
            // Datadog writes a missing value as null.
            Some(Value::Null) | None => Answer::NoValues,
            Some(other) => Answer::Failed(format!("invalid response: value {other}: '{body}'")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{self, json};
    use super::*;

    #[tokio::test]
    async fn asks_with_both_keys_over_ten_intervals_and_reads_the_first_point() {
        let server = testserver::serve(vec![
            json(
                200,
                r#"{"series": [{"pointlist": [[1577232000000,29325.1],[1577318400000,56294.4]]}]}"#,
            ),
            json(200, r#"{"series": [{"pointlist": []}]}"#),
            json(403, r#"{"errors": ["Forbidden"]}"#),
        ]);
        let t = testserver::template(
            serde_json::json!({"type": "datadog", "address": server.url}),
            &[
                ("datadog_api_key", "api-key"),
                ("datadog_application_key", "app-key"),
            ],
        );
        let p = build(&t.source(Duration::from_secs(60))).unwrap();
        assert_eq!(p.kind(), "datadog");
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        let q = "avg:system.cpu.user{*}by{host}";
        assert_eq!(p.query(&call, q).await, Answer::Value(29325.1));
        assert_eq!(p.query(&call, q).await, Answer::NoValues);
        match p.query(&call, q).await {
            Answer::Failed(e) => assert_eq!(
                e,
                r#"error response: {"errors": ["Forbidden"]}: 403 Forbidden"#
            ),
            other => panic!("{other:?}"),
        }
        let seen = server.requests();
        assert_eq!(seen.len(), 3);
        let r = &seen[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/api/v1/query")
        );
        assert_eq!(
            r.raw_query,
            "from=1589454720&query=avg%3Asystem.cpu.user%7B*%7Dby%7Bhost%7D&to=1589455320"
        );
        assert_eq!(r.header("dd-api-key"), Some("api-key"));
        assert_eq!(r.header("dd-application-key"), Some("app-key"));
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.body, "");
    }

    #[test]
    fn both_keys_are_required() {
        let t = testserver::template(
            serde_json::json!({"type": "datadog"}),
            &[("datadog_api_key", "k")],
        );
        let err = build(&t.source(Duration::from_secs(60))).err().unwrap();
        assert_eq!(
            err,
            "datadog credentials does not contain datadog_application_key"
        );
        let t = testserver::template(serde_json::json!({"type": "datadog"}), &[]);
        let err = build(&t.source(Duration::from_secs(60))).err().unwrap();
        assert_eq!(err, "datadog credentials does not contain datadog_api_key");
    }

    #[test]
    fn a_null_point_is_no_value() {
        assert_eq!(
            parse(r#"{"series":[{"pointlist":[[1,null]]}]}"#),
            Answer::NoValues
        );
        assert_eq!(parse(r#"{"series":[]}"#), Answer::NoValues);
    }
}
