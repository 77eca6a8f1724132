//! Graphite (`type: graphite`): the render API. The query is a render query
//! string (`target=sumSeries(app.http.*.count)&from=-1min`); Fledge adds
//! `format=json` and sends `GET <address>/render?<pairs sorted by key>`, with
//! basic auth from the Secret's `username` and `password` (both required when
//! the template has a `secretRef`). The last non-null datapoint of all
//! series is the value.
use super::{Answer, Call, Provider, Source};
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Graphite {
    address: String,
    basic: Option<(String, String)>,
    insecure: bool,
}

pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    let address = super::address(source.spec).unwrap_or_default();
    super::parse_url("graphite", address)?;
    let basic = if source.spec.secret_ref.is_some() {
        let user = super::secret_text(source.secret, "username")
            .ok_or("graphite credentials does not contain a username")?;
        let password = super::secret_text(source.secret, "password")
            .ok_or("graphite credentials does not contain a password")?;
        Some((user, password))
    } else {
        None
    };
    Ok(Box::new(Graphite {
        address: address.trim_end_matches('/').to_string(),
        basic,
        insecure: source.spec.insecure_skip_verify.unwrap_or(false),
    }))
}

impl Provider for Graphite {
    fn kind(&self) -> &'static str {
        "graphite"
    }

    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let url = match self.url(query) {
                Ok(u) => u,
                Err(e) => return Answer::Failed(e),
            };
            let mut req = super::client(call, self.insecure).get(url);
            if let Some((u, p)) = &self.basic {
                if !u.is_empty() && !p.is_empty() {
                    req = req.basic_auth(u, Some(p));
                }
            }
            match super::send(req, TIMEOUT).await {
                Ok((status, body)) if status.as_u16() >= 400 => {
                    Answer::Failed(format!("error response: {status}: {}", body.trim()))
                }
                Ok((_, body)) => parse(&body),
                Err(e) => Answer::Failed(e),
            }
        })
    }
}

impl Graphite {
    /// `<address>/render?` with the query's pairs and `format=json`, sorted
    /// by key as Go's `url.Values` encodes them.
    fn url(&self, query: &str) -> Result<reqwest::Url, String> {
        let parsed = reqwest::Url::parse(&format!("http://q/?{}", super::one_line(query)))
            .map_err(|e| format!("url.Parse failed: {e}"))?;
        let mut pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| k != "format")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        pairs.push(("format".into(), "json".into()));
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut url = reqwest::Url::parse(&format!("{}/render", self.address))
            .map_err(|e| format!("url.Parse failed: {e}"))?;
        url.query_pairs_mut().extend_pairs(pairs);
        Ok(url)
    }
}

/// The last datapoint with a value, across the series in order.
pub fn parse(body: &str) -> Answer {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Answer::Failed(format!("error unmarshaling result: {e}, '{body}'")),
    };
    let Some(series) = v.as_array() else {
        return Answer::Failed(format!("error unmarshaling result: not a list, '{body}'"));
    };
    let mut value = None;
    for point in series
        .iter()
        .flat_map(|s| s["datapoints"].as_array().into_iter().flatten())
    {
        match point.get(0) {
            Some(Value::Number(n)) => value = n.as_f64(),
            Some(Value::String(s)) => match s.parse::<f64>() {
                Ok(f) => value = Some(f),
                Err(e) => {
                    return Answer::Failed(format!("error unmarshaling result: {e}, '{body}'"))
                }
            },
            _ => {}
        }
    }
    value.map_or(Answer::NoValues, Answer::Value)
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{self, json};
    use super::*;

    const SERIES: &str = r#"[{"datapoints": [[10, 1621348400], [75, 1621348410], [100, 1621348420], [null, 1621348430]],
        "target": "sumSeries(app.http.*.*.count)",
        "tags": {"aggregatedBy": "sum", "name": "sumSeries(app.http.*.*.count)"}}]"#;

    #[tokio::test]
    async fn renders_the_query_as_json_with_basic_auth_and_reads_the_last_point() {
        let server = testserver::serve(vec![
            json(200, SERIES),
            json(
                200,
                r#"[{"datapoints": [[null, 1621348400]], "target": "x"}]"#,
            ),
            json(500, "render failed"),
        ]);
        let t = testserver::template(
            serde_json::json!({"type": "graphite", "address": format!("{}/graphite/", server.url),
                "secretRef": {"name": "graphite"}}),
            &[("username", "a-user"), ("password", "a-password")],
        );
        let p = build(&t.source(Duration::from_secs(60))).unwrap();
        assert_eq!(p.kind(), "graphite");
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        let q = "target=sumSeries(app.http.*.*.count)&from=-2min";
        assert_eq!(p.query(&call, q).await, Answer::Value(100.0));
        assert_eq!(p.query(&call, q).await, Answer::NoValues);
        match p.query(&call, q).await {
            Answer::Failed(e) => assert_eq!(
                e,
                "error response: 500 Internal Server Error: render failed"
            ),
            other => panic!("{other:?}"),
        }
        let seen = server.requests();
        let r = &seen[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/graphite/render")
        );
        assert_eq!(
            r.query(),
            [
                ("format", "json"),
                ("from", "-2min"),
                ("target", "sumSeries(app.http.*.*.count)")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // "a-user:a-password"
        assert_eq!(
            r.header("authorization"),
            Some("Basic YS11c2VyOmEtcGFzc3dvcmQ=")
        );
        assert_eq!(r.body, "");
    }

    #[test]
    fn the_address_is_required_and_a_secret_needs_both_credentials() {
        let t = testserver::template(serde_json::json!({"type": "graphite"}), &[]);
        let err = build(&t.source(Duration::from_secs(60))).err().unwrap();
        assert_eq!(err, "graphite address  is not a valid URL");
        let t = testserver::template(
            serde_json::json!({"type": "graphite", "address": "http://graphite", "secretRef": {"name": "s"}}),
            &[("username", "u")],
        );
        let err = build(&t.source(Duration::from_secs(60))).err().unwrap();
        assert_eq!(err, "graphite credentials does not contain a password");
    }
}
