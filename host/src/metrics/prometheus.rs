//! Prometheus (`type: prometheus`): `GET <address>/api/v1/query?query=...`,
//! the last sample of the vector. The builtin App Mesh checks and inline
//! queries use it too, at `spec.metricsServer`.
//!
//! Credentials, as Flagger reads them when the template has a `secretRef`:
//! `token` (a bearer token) wins; otherwise `username` and `password` (basic
//! auth) are both required. Flagger reads no TLS settings from the Secret;
//! `insecureSkipVerify` on the provider turns certificate checks off.
use super::{Answer, Call, Provider, Source};
use futures::future::BoxFuture;
use serde_json::Value;
use std::time::Duration;

/// Flagger's Prometheus client timeout.
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

/// How to reach one Prometheus.
#[derive(Debug, Clone)]
pub struct Prometheus {
    address: String,
    headers: Vec<(String, String)>,
    auth: Auth,
    insecure: bool,
}

pub fn build(source: &Source) -> Result<Box<dyn Provider>, String> {
    Ok(Box::new(Prometheus::of_template(source)?))
}

impl Prometheus {
    /// The Prometheus at `address`, without credentials: `spec.metricsServer`.
    pub fn at(address: &str) -> Prometheus {
        Prometheus {
            address: address.to_string(),
            headers: Vec::new(),
            auth: Auth::None,
            insecure: false,
        }
    }

    /// A MetricTemplate's Prometheus: its address (else the Canary's metrics
    /// server), headers, TLS setting and the Secret's credentials.
    pub fn of_template(source: &Source) -> Result<Prometheus, String> {
        let spec = source.spec;
        let address = super::address(spec).unwrap_or(source.default_address);
        super::parse_url("prometheus", address)?;
        let auth = if spec.secret_ref.is_none() {
            Auth::None
        } else if let Some(token) = super::secret_text(source.secret, "token") {
            Auth::Bearer(token)
        } else {
            let user = super::secret_text(source.secret, "username")
                .ok_or("prometheus credentials does not contain a username")?;
            let password = super::secret_text(source.secret, "password")
                .ok_or("prometheus credentials does not contain a password")?;
            Auth::Basic(user, password)
        };
        Ok(Prometheus {
            address: address.to_string(),
            headers: super::headers(spec),
            auth,
            insecure: spec.insecure_skip_verify.unwrap_or(false),
        })
    }

    /// Whether TLS certificates go unchecked (`insecureSkipVerify`).
    pub fn insecure(&self) -> bool {
        self.insecure
    }

    /// Runs `promql`: an empty result or NaN is "no values".
    pub async fn run(&self, call: &Call<'_>, promql: &str) -> Answer {
        match self
            .get(call, "query", &[("query", super::one_line(promql))])
            .await
        {
            Ok(body) => parse(&body),
            Err(e) => Answer::Failed(e),
        }
    }

    /// Runs `promql` over `[start, end]`, one sample per `step` seconds
    /// (`GET <address>/api/v1/query_range`). The answer must be one series
    /// (or none); NaN samples are left out.
    pub async fn range(
        &self,
        call: &Call<'_>,
        promql: &str,
        start: i64,
        end: i64,
        step: u32,
    ) -> Result<Vec<fledge_policy::Sample>, String> {
        let params = [
            ("query", super::one_line(promql)),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", step.max(1).to_string()),
        ];
        parse_matrix(&self.get(call, "query_range", &params).await?)
    }

    /// `GET <address>/api/v1/<endpoint>?<params>` with the headers and
    /// credentials of this Prometheus; the body of a response below 400.
    async fn get(
        &self,
        call: &Call<'_>,
        endpoint: &str,
        params: &[(&str, String)],
    ) -> Result<String, String> {
        let url = format!("{}/api/v1/{endpoint}", self.address.trim_end_matches('/'));
        let mut url = reqwest::Url::parse(&url)
            .map_err(|e| format!("metrics server `{}`: {e}", self.address))?;
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (k, v)));
        let mut req = super::client(call, self.insecure).get(url);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        // Flagger sends an empty token or password as no credentials at all.
        match &self.auth {
            Auth::Bearer(t) if !t.is_empty() => req = req.bearer_auth(t),
            Auth::Basic(u, p) if !u.is_empty() && !p.is_empty() => req = req.basic_auth(u, Some(p)),
            _ => {}
        }
        let (status, body) = super::send(req, TIMEOUT).await?;
        if status.as_u16() >= 400 {
            return Err(format!("error response: Status {status}: {}", body.trim()));
        }
        Ok(body)
    }
}

/// The samples of a range query's answer: a matrix of at most one series.
pub fn parse_matrix(body: &str) -> Result<Vec<fledge_policy::Sample>, String> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| format!("error unmarshaling result: {e}, '{body}'"))?;
    if v["data"]["resultType"].as_str() != Some("matrix") {
        return Err(format!("unexpected response (not a matrix): {body}"));
    }
    let series = v["data"]["result"]
        .as_array()
        .ok_or_else(|| format!("unexpected response: {body}"))?;
    match series.len() {
        0 => return Ok(Vec::new()),
        1 => {}
        n => {
            return Err(format!(
                "query returned {n} series; aggregate it to one (e.g. with sum or max)"
            ))
        }
    }
    let values = series[0]["values"]
        .as_array()
        .ok_or_else(|| format!("unexpected response: {body}"))?;
    let mut out = Vec::with_capacity(values.len());
    for point in values {
        let timestamp = point[0]
            .as_f64()
            .ok_or_else(|| format!("unexpected sample {point}"))?;
        let value: f64 = point[1]
            .as_str()
            .ok_or_else(|| format!("unexpected sample {point}"))?
            .parse()
            .map_err(|e| format!("parsing the value: {e}"))?;
        if value.is_nan() {
            continue;
        }
        out.push(fledge_policy::Sample {
            timestamp: timestamp.round() as i64,
            value,
        });
    }
    Ok(out)
}

impl Provider for Prometheus {
    fn kind(&self) -> &'static str {
        "prometheus"
    }

    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(self.run(call, query))
    }
}

/// The value of a query answer: the last sample of a vector, or a scalar.
pub fn parse(body: &str) -> Answer {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Answer::Failed(format!("error unmarshaling result: {e}, '{body}'")),
    };
    let result = &v["data"]["result"];
    let values: Vec<&Value> = match v["data"]["resultType"].as_str() {
        Some("scalar") => vec![&result[1]],
        _ => {
            let Some(items) = result.as_array() else {
                return Answer::Failed(format!("unexpected response: {body}"));
            };
            if items.iter().any(|i| i.get("values").is_some()) {
                return Answer::Failed("query returned multiple values".into());
            }
            items.iter().map(|i| &i["value"][1]).collect()
        }
    };
    match values
        .last()
        .and_then(|v| v.as_str())
        .map(str::parse::<f64>)
    {
        Some(Ok(f)) if f.is_nan() => Answer::NoValues,
        Some(Ok(f)) => Answer::Value(f),
        Some(Err(e)) => Answer::Failed(format!("parsing the value: {e}")),
        None => Answer::NoValues,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testserver::{self, json};
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Arc;

    const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42"]}]}}"#;

    #[tokio::test]
    async fn sends_the_headers_then_the_credentials_and_reads_the_last_sample() {
        let server = testserver::serve(vec![
            json(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"pod":"a"},"value":[1,"99.5"]},{"metric":{"pod":"b"},"value":[1,"97.25"]}]}}"#,
            ),
            json(
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            ),
            json(
                422,
                r#"{"status":"error","errorType":"execution","error":"query timed out"}"#,
            ),
        ]);
        let t = testserver::template(
            serde_json::json!({"type": "prometheus", "address": format!("{}/prom/", server.url),
                "headers": {"X-Scope-OrgID": ["tenant-a", "tenant-b"]},
                "secretRef": {"name": "prom"}}),
            &[("username", "u"), ("password", "p\n")],
        );
        let p = build(&t.source(Duration::from_secs(60))).unwrap();
        assert_eq!(p.kind(), "prometheus");
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        let q = "sum(rate(x[1m]))\n  /\n  sum(rate(y[1m]))";
        assert_eq!(p.query(&call, q).await, Answer::Value(97.25));
        assert_eq!(p.query(&call, q).await, Answer::NoValues);
        match p.query(&call, q).await {
            Answer::Failed(e) => assert_eq!(
                e,
                r#"error response: Status 422 Unprocessable Entity: {"status":"error","errorType":"execution","error":"query timed out"}"#
            ),
            other => panic!("{other:?}"),
        }
        let seen = server.requests();
        let r = &seen[0];
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/prom/api/v1/query")
        );
        assert_eq!(
            r.query(),
            vec![(
                "query".to_string(),
                "sum(rate(x[1m])) / sum(rate(y[1m]))".to_string()
            )]
        );
        assert_eq!(r.header_all("x-scope-orgid"), ["tenant-a", "tenant-b"]);
        // "u:p": the Secret's trailing newline is not part of the password.
        assert_eq!(r.header("authorization"), Some("Basic dTpw"));
        assert_eq!(r.body, "");
    }

    #[tokio::test]
    async fn range_queries_ask_for_the_window_and_read_one_series() {
        let server = testserver::serve(vec![
            json(
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[700,"1.5"],[730,"NaN"],[760,"2"]]}]}}"#,
            ),
            json(
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"1"},"values":[]},{"metric":{"a":"2"},"values":[]}]}}"#,
            ),
            json(400, r#"{"status":"error","error":"bad"}"#),
        ]);
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        let prom = Prometheus::at(&server.url);
        let points = prom
            .range(&call, "up{a=\"b\"}\n", 700, 760, 30)
            .await
            .unwrap();
        assert_eq!(
            points,
            [
                fledge_policy::Sample {
                    timestamp: 700,
                    value: 1.5
                },
                fledge_policy::Sample {
                    timestamp: 760,
                    value: 2.0
                }
            ]
        );
        let many = prom.range(&call, "up", 700, 760, 30).await.unwrap_err();
        assert!(many.contains("2 series; aggregate it to one"), "{many}");
        let refused = prom.range(&call, "up", 700, 760, 30).await.unwrap_err();
        assert!(
            refused.starts_with("error response: Status 400"),
            "{refused}"
        );
        let sent = server.requests();
        assert_eq!(sent[0].path, "/api/v1/query_range");
        let expected = [
            ("query", "up{a=\"b\"}"),
            ("start", "700"),
            ("end", "760"),
            ("step", "30"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(sent[0].query(), expected);
    }

    #[tokio::test]
    async fn a_token_wins_over_username_and_password() {
        let server = testserver::serve(vec![json(200, VECTOR)]);
        let t = testserver::template(
            serde_json::json!({"type": "prometheus", "address": server.url, "secretRef": {"name": "prom"}}),
            &[("token", "t0k"), ("username", "u"), ("password", "p")],
        );
        let p = build(&t.source(Duration::from_secs(60))).unwrap();
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        assert_eq!(p.query(&call, "up").await, Answer::Value(42.0));
        let seen = server.requests();
        assert_eq!(seen[0].header_all("authorization"), ["Bearer t0k"]);
    }

    #[test]
    fn credentials_follow_flaggers_rules() {
        let build_with = |spec: serde_json::Value, secret: &[(&str, &str)]| {
            let t = testserver::template(spec, secret);
            Prometheus::of_template(&t.source(Duration::from_secs(60))).map(|p| p.auth)
        };
        let with_ref = serde_json::json!({"type": "prometheus", "address": "http://p:9090", "secretRef": {"name": "s"}});
        assert_eq!(
            build_with(with_ref.clone(), &[("username", "u")]).unwrap_err(),
            "prometheus credentials does not contain a password"
        );
        assert_eq!(
            build_with(with_ref.clone(), &[("password", "p")]).unwrap_err(),
            "prometheus credentials does not contain a username"
        );
        // Without a secretRef there is no Secret, so no credentials.
        let no_ref = serde_json::json!({"type": "prometheus", "address": "http://p:9090"});
        assert_eq!(build_with(no_ref, &[]).unwrap(), Auth::None);
        // No address: the Canary's metrics server.
        let t = testserver::template(serde_json::json!({"type": "prometheus"}), &[]);
        let p = Prometheus::of_template(&t.source(Duration::from_secs(60))).unwrap();
        assert_eq!(p.address, "http://prometheus.default.invalid:9090");
        assert!(!p.insecure());
        let t = testserver::template(
            serde_json::json!({"type": "prometheus", "address": "not a url"}),
            &[],
        );
        assert_eq!(
            Prometheus::of_template(&t.source(Duration::from_secs(60))).unwrap_err(),
            "prometheus address not a url is not a valid URL"
        );
    }

    #[test]
    fn answers_distinguish_values_no_values_and_failures() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1,"99.5"]}]}}"#;
        assert_eq!(parse(vector), Answer::Value(99.5));
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(parse(scalar), Answer::Value(3.0));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert_eq!(parse(nan), Answer::NoValues);
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#;
        assert_eq!(
            parse(matrix),
            Answer::Failed("query returned multiple values".into())
        );
        assert!(
            matches!(parse("<html>"), Answer::Failed(e) if e.starts_with("error unmarshaling result"))
        );
    }

    /// An HTTPS server with a self-signed certificate that answers `conns`
    /// connections with a vector of 42; returns its address and the requests
    /// it read.
    fn self_signed_prometheus(
        conns: usize,
    ) -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        let config = Arc::new(config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for stream in listener.incoming().take(conns) {
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream.unwrap());
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                // A client that refuses the certificate ends the handshake here.
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.is_empty() {
                    continue;
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{VECTOR}",
                    VECTOR.len()
                );
                let _ = tls.write_all(resp.as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
                seen.push(String::from_utf8_lossy(&req).to_lowercase());
            }
            seen
        });
        (addr, handle)
    }

    #[tokio::test]
    async fn insecure_skip_verify_skips_tls_verification_for_that_provider_only() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (addr, server) = self_signed_prometheus(2);
        let insecure = testserver::template(
            serde_json::json!({"type": "prometheus", "address": format!("https://{addr}"),
                "insecureSkipVerify": true, "headers": {"X-Scope-OrgID": ["tenant-a"]}}),
            &[],
        );
        let insecure = Prometheus::of_template(&insecure.source(Duration::from_secs(60))).unwrap();
        assert!(insecure.insecure());
        let verified = Prometheus {
            insecure: false,
            ..insecure.clone()
        };
        let http = testserver::clients();
        let call = Call {
            http: &http,
            now: testserver::now(),
        };
        match verified.run(&call, "up").await {
            Answer::Failed(e) => assert!(e.starts_with("request failed: "), "{e}"),
            other => panic!("a self-signed certificate must fail verification: {other:?}"),
        }
        assert_eq!(insecure.run(&call, "up").await, Answer::Value(42.0));
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 1, "only the insecure query got through");
        assert!(seen[0].contains("x-scope-orgid: tenant-a"), "{}", seen[0]);
        // The metrics server of the Canary is verified.
        assert!(!Prometheus::at("https://prometheus.istio-system:9090").insecure());
    }
}
