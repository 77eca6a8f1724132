//! InfluxDB 2 (`type: influxdb`): a Flux query,
//! `POST <address>/api/v2/query?org=<org>` with `Authorization: Token <token>`
//! and the JSON body Influx's Go client sends (query, type `flux`, the
//! annotated CSV dialect). `token` and `org` come from the Secret, both
//! required when the template has a `secretRef`. The `_value` of the first
//! record is the value; it must be a `double` (use `toFloat()` in Flux).
use super::{Answer, Call, Provider, Source};
use futures::future::BoxFuture;
use std::time::Duration;

/// Flagger's InfluxDB query timeout.
const TIMEOUT: Duration = Duration::from_secs(15);

pub struct Influxdb {
    address: String,
    token: Option<String>,
    org: String,
}

pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    let address = super::address(source.spec).unwrap_or_default();
    super::parse_url("influxdb", address)?;
    let (token, org) = if source.spec.secret_ref.is_some() {
        let token = super::secret_text(source.secret, "token")
            .ok_or("influxdb credentials does not contain an authentication token")?;
        let org = super::secret_text(source.secret, "org")
            .ok_or("influxdb credentials does not contain an organisation")?;
        (Some(token), org)
    } else {
        (None, String::new())
    };
    Ok(Box::new(Influxdb {
        address: address.trim_end_matches('/').to_string(),
        token,
        org,
    }))
}

impl Provider for Influxdb {
    fn kind(&self) -> &'static str {
        "influxdb"
    }

    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let mut url = match reqwest::Url::parse(&format!("{}/api/v2/query", self.address)) {
                Ok(u) => u,
                Err(e) => {
                    return Answer::Failed(format!("error accessing influxdb query api: {e}"))
                }
            };
            url.query_pairs_mut().append_pair("org", &self.org);
            let body = serde_json::json!({
                "query": query,
                "type": "flux",
                "dialect": {
                    "annotations": ["datatype", "group", "default"],
                    "delimiter": ",",
                    "header": true,
                },
            });
            let mut req = super::client(call, false)
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some(t) = self.token.as_ref().filter(|t| !t.is_empty()) {
                req = req.header(reqwest::header::AUTHORIZATION, format!("Token {t}"));
            }
            match super::send(req, TIMEOUT).await {
                Ok((status, body)) if status.is_success() => parse(&body),
                Ok((status, body)) => Answer::Failed(format!(
                    "error accessing influxdb query api: {status}: {}",
                    body.trim()
                )),
                Err(e) => Answer::Failed(format!("error accessing influxdb query api: {e}")),
            }
        })
    }
}

/// The `_value` of the first record of an annotated CSV answer.
pub fn parse(body: &str) -> Answer {
    let mut types: Vec<String> = Vec::new();
    let mut defaults: Vec<String> = Vec::new();
    let mut names: Option<Vec<String>> = None;
    let mut error_table = false;
    for row in csv_rows(body) {
        if row.len() <= 1 {
            // A blank line ends a table; the next one starts with annotations.
            names = None;
            continue;
        }
        match row[0].as_str() {
            "#datatype" => {
                types = row[1..].to_vec();
                names = None;
                continue;
            }
            "#default" => {
                defaults = row[1..].to_vec();
                continue;
            }
            s if s.starts_with('#') => continue,
            _ => {}
        }
        if names.is_none() {
            // The header row of a table; Flux reports errors as a table too.
            error_table = row.get(1).map(String::as_str) == Some("error");
            names = Some(row[1..].to_vec());
            continue;
        }
        let cols = names.as_deref().unwrap_or_default();
        if error_table {
            let message = row.get(1).filter(|m| !m.is_empty()).cloned();
            let reference = row.get(2).filter(|r| !r.is_empty());
            return Answer::Failed(format!(
                "query error: {}{}",
                message.unwrap_or_else(|| "unknown query error".into()),
                reference.map(|r| format!(",{r}")).unwrap_or_default()
            ));
        }
        let Some(i) = cols.iter().position(|c| c == "_value") else {
            return Answer::Failed(format!(
                "invalid response: no _value column: {}",
                row.join(",")
            ));
        };
        let raw = match row.get(i + 1).map(String::as_str) {
            Some("") | None => defaults.get(i).map(String::as_str).unwrap_or(""),
            Some(v) => v,
        };
        if raw.is_empty() {
            return Answer::NoValues;
        }
        return match types.get(i).map(String::as_str) {
            Some("double") => match raw.parse::<f64>() {
                Ok(f) => Answer::Value(f),
                Err(e) => Answer::Failed(format!("invalid response: _value {raw}: {e}")),
            },
            other => Answer::Failed(format!(
                "invalid response: _value {raw} is of type {}, not double",
                other.unwrap_or("unknown")
            )),
        };
    }
    // Flagger reads an answer without records as 0; it is no value.
    Answer::NoValues
}

/// RFC 4180 rows: quoted fields may hold commas, quotes (`""`) and newlines.
fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{self, reply};
    use super::*;

    const TABLE: &str = "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string,string,string\r
#group,false,false,true,true,false,false,true,true,true,true\r
#default,_result,,,,,,,,,\r
,result,table,_start,_stop,_time,_value,_field,_measurement,a,b\r
,,0,2020-02-17T22:19:49.747562847Z,2020-02-18T22:19:49.747562847Z,2020-02-18T10:34:08.135814545Z,1.4,f,test,1,adsfasdf\r
,,0,2020-02-17T22:19:49.747562847Z,2020-02-18T22:19:49.747562847Z,2020-02-18T22:08:44.850214724Z,6.6,f,test,1,adsfasdf\r
\r
";

    #[tokio::test]
    async fn posts_flux_with_the_token_and_org_and_reads_the_first_record() {
        let server = testserver::serve(vec![
            reply(200, "text/csv; charset=utf-8", TABLE),
            reply(200, "text/csv; charset=utf-8", "\r\n"),
            reply(
                400,
                "application/json",
                r#"{"code":"invalid","message":"compilation failed: error at @1:1-1:5: undefined identifier frum"}"#,
            ),
        ]);
        let t = testserver::template(
            serde_json::json!({"type": "influxdb", "address": server.url, "secretRef": {"name": "influx"}}),
            &[("token", "x"), ("org", "test-org")],
        );
        let p = build(&t.source(Duration::from_secs(60))).unwrap();
        assert_eq!(p.kind(), "influxdb");
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        let q = r#"from(bucket: "default") |> range(start: -2h)"#;
        assert_eq!(p.query(&call, q).await, Answer::Value(1.4));
        assert_eq!(p.query(&call, q).await, Answer::NoValues);
        match p.query(&call, q).await {
            Answer::Failed(e) => assert!(
                e.contains("400 Bad Request") && e.contains("undefined identifier frum"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
        let seen = server.requests();
        let r = &seen[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v2/query")
        );
        assert_eq!(r.raw_query, "org=test-org");
        assert_eq!(r.header("authorization"), Some("Token x"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"query": q, "type": "flux", "dialect": {
                "annotations": ["datatype", "group", "default"], "delimiter": ",", "header": true}})
        );
    }

    #[test]
    fn records_flux_errors_nulls_and_other_types() {
        let error = "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,\"failed to execute query, bucket \"\"x\"\" not found\",897\n";
        assert_eq!(
            parse(error),
            Answer::Failed(
                "query error: failed to execute query, bucket \"x\" not found,897".into()
            )
        );
        let null = "#datatype,string,long,double\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,\n";
        assert_eq!(parse(null), Answer::NoValues);
        let long = "#datatype,string,long,long\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,12\n";
        assert!(matches!(parse(long), Answer::Failed(e) if e.contains("long")));
    }

    #[test]
    fn a_secret_needs_the_token_and_the_org() {
        let t = testserver::template(
            serde_json::json!({"type": "influxdb", "address": "http://influx:8086", "secretRef": {"name": "s"}}),
            &[("token", "x")],
        );
        let err = build(&t.source(Duration::from_secs(60))).err().unwrap();
        assert_eq!(err, "influxdb credentials does not contain an organisation");
    }
}
