//! Metric checks: the builtin App Mesh queries over the Envoy series, inline
//! queries and MetricTemplates of provider `prometheus`, rendered with
//! Flagger's template variables and sent to the right Prometheus.
use super::webhooks::Clients;
use crate::api::{MetricProvider, MetricTemplate};
use crate::core::rollout::{MetricSource, MetricSpec, QueryOutcome, Rollout};
use fledge_policy::MetricResult;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Flagger's Prometheus client timeout.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// `1m`, `30s`, `1m30s`: a Prometheus range from a duration.
pub fn range(d: Duration) -> String {
    let s = d.as_secs().max(1);
    if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Flagger's builtin App Mesh `request-success-rate` (percent of non-5xx).
pub fn success_rate_query(namespace: &str, target: &str, interval: &str) -> String {
    format!(
        "sum(rate(envoy_cluster_upstream_rq{{ kubernetes_namespace=\"{namespace}\", \
         kubernetes_pod_name=~\"{target}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\", \
         envoy_response_code!~\"5.*\" }}[{interval}])) / \
         sum(rate(envoy_cluster_upstream_rq{{ kubernetes_namespace=\"{namespace}\", \
         kubernetes_pod_name=~\"{target}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\" }}[{interval}])) * 100"
    )
}

/// Flagger's builtin App Mesh `request-duration` (P99, milliseconds).
pub fn duration_query(namespace: &str, target: &str, interval: &str) -> String {
    format!(
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{{ \
         kubernetes_namespace=\"{namespace}\", \
         kubernetes_pod_name=~\"{target}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\" }}[{interval}])) by (le))"
    )
}

/// Renders a Flagger query template: `{{ name }}`, `{{ namespace }}`,
/// `{{ target }}`, `{{ service }}`, `{{ ingress }}`, `{{ route }}`,
/// `{{ interval }}` and `{{ variables.KEY }}`. Anything else is an error, as
/// Go's `missingkey=error` makes it.
pub fn render(
    template: &str,
    r: &Rollout,
    m: &MetricSpec,
    interval: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed action: `{{` without `}}`".to_string())?;
        let expr = after[..end].trim().trim_start_matches('.').trim();
        let value = match expr {
            "name" => r.name.clone(),
            "namespace" => r.namespace.clone(),
            "target" | "ingress" | "route" => r.target.clone(),
            "service" => r.apex.clone(),
            "interval" => interval.to_string(),
            v if v.starts_with("variables.") => {
                let key = &v["variables.".len()..];
                m.variables.get(key).cloned().ok_or_else(|| {
                    format!("map has no entry for key \"{key}\" in templateVariables")
                })?
            }
            other => return Err(format!("function \"{other}\" not defined")),
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// How to reach one Prometheus.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub address: String,
    pub bearer: Option<String>,
    pub basic: Option<(String, String)>,
    /// The provider's `headers`, sent with every query (before the credentials).
    pub headers: Vec<(String, String)>,
    /// The provider's `insecureSkipVerify`: its TLS certificate is not checked.
    pub insecure: bool,
}

impl Endpoint {
    /// A MetricTemplate provider's address (else `default`), headers and TLS
    /// setting; credentials come from its Secret.
    pub fn of_provider(provider: &MetricProvider, default: &str) -> Endpoint {
        Endpoint {
            address: provider
                .address
                .clone()
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| default.to_string()),
            headers: provider
                .headers
                .iter()
                .flatten()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                .collect(),
            insecure: provider.insecure_skip_verify.unwrap_or(false),
            ..Default::default()
        }
    }
}

/// What a query found.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Value(f64),
    NoValues,
    Failed(String),
}

/// `GET <address>/api/v1/query`: the last sample of the vector wins, as in
/// Flagger; an empty result or NaN is "no values". TLS is verified unless the
/// endpoint says `insecure`.
pub async fn query(http: &Clients, ep: &Endpoint, promql: &str) -> Answer {
    let http = if ep.insecure {
        &http.insecure
    } else {
        &http.verify
    };
    let url = format!("{}/api/v1/query", ep.address.trim_end_matches('/'));
    let mut url = match reqwest::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => return Answer::Failed(format!("metrics server `{}`: {e}", ep.address)),
    };
    url.query_pairs_mut().append_pair("query", promql);
    let mut req = http.get(url).timeout(QUERY_TIMEOUT);
    for (k, v) in &ep.headers {
        req = req.header(k, v);
    }
    if let Some(t) = &ep.bearer {
        req = req.bearer_auth(t);
    } else if let Some((u, p)) = &ep.basic {
        req = req.basic_auth(u, Some(p));
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Answer::Failed(format!("{e}")),
    };
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.as_u16() >= 400 {
        return Answer::Failed(format!("error response: Status {status}: {}", body.trim()));
    }
    parse(&body)
}

pub fn parse(body: &str) -> Answer {
    let v: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Answer::Failed(format!("decoding the response: {e}")),
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

/// Everything one metric check needs.
pub struct Checker<'a> {
    pub client: &'a Client,
    pub http: &'a Clients,
    /// `spec.metricsServer`, else `--metrics-server`.
    pub default_server: &'a str,
    pub telemetry: &'a super::telemetry::Telemetry,
}

impl Checker<'_> {
    /// Queries every metric of `r` in the core's order, stopping after the
    /// first result that stops the analysis; the core words the failures.
    pub async fn check_all(&self, r: &Rollout) -> Vec<MetricResult> {
        let mut out = Vec::new();
        for m in r.query_order() {
            let result = m.result(r, self.outcome(r, m).await);
            let stop = m.stops(&result);
            out.push(result);
            if stop {
                break;
            }
        }
        out
    }

    async fn outcome(&self, r: &Rollout, m: &MetricSpec) -> QueryOutcome {
        let interval = range(m.interval);
        let plain = Endpoint {
            address: self.default_server.to_string(),
            ..Default::default()
        };
        let (ep, q) = match &m.source {
            MetricSource::Builtin if m.name == "request-success-rate" => (
                plain,
                success_rate_query(&r.namespace, &r.target, &interval),
            ),
            MetricSource::Builtin => (plain, duration_query(&r.namespace, &r.target, &interval)),
            MetricSource::Query(q) => match render(q, r, m, &interval) {
                Ok(q) => (plain, q),
                Err(e) => return QueryOutcome::Failed(format!("query render error: {e}")),
            },
            MetricSource::Template { name, namespace } => {
                match self.template(r, m, name, namespace).await {
                    Ok(found) => found,
                    Err(e) => return QueryOutcome::Failed(e),
                }
            }
        };
        // Every query here goes to Prometheus: builtin, inline, and templates
        // (whose provider type is `prometheus`, checked above).
        let started = std::time::Instant::now();
        let answer = query(self.http, &ep, &q).await;
        self.telemetry
            .observe_query("prometheus", started.elapsed());
        match answer {
            Answer::Value(v) => QueryOutcome::Value(v),
            Answer::NoValues => QueryOutcome::NoValues("no values found".into()),
            Answer::Failed(e) => QueryOutcome::Failed(e),
        }
    }

    async fn template(
        &self,
        r: &Rollout,
        m: &MetricSpec,
        name: &str,
        namespace: &str,
    ) -> Result<(Endpoint, String), String> {
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("flagger.app", "v1beta1", "MetricTemplate"),
            "metrictemplates",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        let obj = api
            .get(name)
            .await
            .map_err(|e| format!("Metric template {name}.{namespace} error: {e}"))?;
        let doc = serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": obj.data.get("spec").cloned().unwrap_or_default(),
        });
        let t: MetricTemplate = crate::api::yaml::typed(&doc)
            .map_err(|e| format!("Metric template {name}.{namespace} error: {e}"))?;
        let spec = t.spec.unwrap_or_default();
        let provider = spec.provider.unwrap_or_default();
        let kind = provider.type_.clone().unwrap_or_default();
        if kind != "prometheus" {
            return Err(format!(
                "Metric template {name}.{namespace} provider {kind} error: not supported by this version of Fledge"
            ));
        }
        let mut ep = Endpoint::of_provider(&provider, self.default_server);
        if let Some(secret) = provider.secret_ref.as_ref().and_then(|s| s.name.clone()) {
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let s = secrets.get(&secret).await.map_err(|e| {
                format!("Metric template {name}.{namespace} secret {secret} error: {e}")
            })?;
            let data: BTreeMap<String, String> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).to_string()))
                .collect();
            if let Some(a) = data.get("address") {
                ep.address = a.clone();
            }
            if let Some(t) = data.get("token") {
                ep.bearer = Some(t.clone());
            } else if let (Some(u), Some(p)) = (data.get("username"), data.get("password")) {
                ep.basic = Some((u.clone(), p.clone()));
            } else {
                return Err(format!(
                    "Metric template {name}.{namespace} secret {secret} error: it needs `token`, or `username` and `password`"
                ));
            }
        }
        let q = render(&spec.query.unwrap_or_default(), r, m, &range(m.interval))
            .map_err(|e| format!("Metric template {name}.{namespace} query render error: {e}"))?;
        Ok((ep, q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api;
    use std::io::{Read, Write};
    use std::sync::Arc;

    /// An HTTPS server with a self-signed certificate that answers `conns`
    /// connections with a Prometheus vector of 42; returns its address and
    /// the requests it read.
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
                let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42"]}]}}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
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
        let provider: MetricProvider = serde_json::from_value(serde_json::json!({
            "type": "prometheus",
            "address": format!("https://{addr}"),
            "insecureSkipVerify": true,
            "headers": {"X-Scope-OrgID": ["tenant-a"]}
        }))
        .unwrap();
        let http = Clients::new().unwrap();
        let insecure = Endpoint::of_provider(&provider, "http://unused");
        assert!(insecure.insecure);
        let verified = Endpoint {
            insecure: false,
            ..insecure.clone()
        };
        match query(&http, &verified, "up").await {
            Answer::Failed(_) => {}
            other => panic!("a self-signed certificate must fail verification: {other:?}"),
        }
        assert_eq!(query(&http, &insecure, "up").await, Answer::Value(42.0));
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 1, "only the insecure query got through");
        assert!(seen[0].contains("x-scope-orgid: tenant-a"), "{}", seen[0]);

        // Without the field, and for the default server, TLS is verified.
        let plain: MetricProvider =
            serde_json::from_value(serde_json::json!({"type": "prometheus"})).unwrap();
        let ep = Endpoint::of_provider(&plain, "https://prometheus.istio-system:9090");
        assert!(!ep.insecure);
        assert_eq!(ep.address, "https://prometheus.istio-system:9090");
        assert!(ep.headers.is_empty());
    }

    fn guide() -> Rollout {
        let canary: api::Canary =
            api::yaml::from_str(include_str!("../../../examples/podinfo/canary.yaml")).unwrap();
        api::validate(&canary).unwrap().rollout
    }

    #[test]
    fn templates_render_flaggers_variables() {
        let r = guide();
        let mut m = r.metrics[0].clone();
        m.variables.insert("ingress".into(), "public".into());
        let q = render(
            "rate(x{ns=\"{{ namespace }}\", t=\"{{ target }}\", n=\"{{name}}\", i=\"{{ variables.ingress }}\"}[{{ interval }}])",
            &r,
            &m,
            "1m",
        )
        .unwrap();
        assert_eq!(
            q,
            "rate(x{ns=\"test\", t=\"podinfo\", n=\"podinfo\", i=\"public\"}[1m])"
        );
        assert!(render("{{ variables.nope }}", &r, &m, "1m")
            .unwrap_err()
            .contains("nope"));
        assert!(render("{{ canary }}", &r, &m, "1m")
            .unwrap_err()
            .contains("not defined"));
        assert!(render("{{ namespace", &r, &m, "1m").is_err());
    }

    #[test]
    fn answers_distinguish_values_no_values_and_failures() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{},"value":[1,"99.5"]}]}}"#;
        assert_eq!(parse(vector), Answer::Value(99.5));
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse(empty), Answer::NoValues);
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert_eq!(parse(nan), Answer::NoValues);
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"]]}]}}"#;
        assert!(matches!(parse(matrix), Answer::Failed(_)));
        assert_eq!(range(Duration::from_secs(60)), "1m");
        assert_eq!(range(Duration::from_secs(30)), "30s");
    }
}
