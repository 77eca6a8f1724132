//! Metric checks: the builtin queries (App Mesh: the Envoy series;
//! gatewayapi:v1: the application's HTTP histogram) and
//! inline queries (sent to the Prometheus of `spec.metricsServer`), and
//! MetricTemplates of every provider type ([`crate::metrics`]), rendered with
//! Flagger's template variables.
use super::webhooks::Clients;
use crate::api::MetricTemplate;
use crate::core::rollout::{MetricSource, MetricSpec, QueryOutcome, Rollout};
use crate::metrics::{self, prometheus::Prometheus, Answer, Call, Provider, Source};
use fledge_policy::{MetricResult, RangeQuery, Series};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

/// `1m`, `30s`, `90s`: a Prometheus range from a duration.
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

/// Flagger's builtin `request-success-rate` for `gatewayapi:v1` (its HTTP
/// observer): the application's own `http_request_duration_seconds_count`,
/// percent of non-5xx.
pub fn http_success_rate_query(namespace: &str, target: &str, interval: &str) -> String {
    format!(
        "sum(rate(http_request_duration_seconds_count{{ kubernetes_namespace=\"{namespace}\", \
         kubernetes_pod_name=~\"{target}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\", \
         status!~\"5.*\" }}[{interval}])) / \
         sum(rate(http_request_duration_seconds_count{{ kubernetes_namespace=\"{namespace}\", \
         kubernetes_pod_name=~\"{target}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\" }}[{interval}])) * 100"
    )
}

/// Flagger's builtin `request-duration` for `gatewayapi:v1`: P99 of the
/// application's `http_request_duration_seconds_bucket`, in seconds
/// ([`builtin_value`] makes it milliseconds).
pub fn http_duration_query(namespace: &str, target: &str, interval: &str) -> String {
    format!(
        "histogram_quantile(0.99, sum(rate(http_request_duration_seconds_bucket{{ \
         kubernetes_namespace=\"{namespace}\", \
         kubernetes_pod_name=~\"{target}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\" }}[{interval}])) by (le))"
    )
}

/// The builtin query of `metric` (`request-success-rate` or
/// `request-duration`) for `provider`: the application's HTTP histogram under
/// gatewayapi:v1, the Envoy sidecars' statistics under App Mesh.
pub fn builtin_query(
    provider: &str,
    metric: &str,
    namespace: &str,
    target: &str,
    interval: &str,
) -> String {
    let gateway = provider == crate::operator::router::gateway_api::PROVIDER;
    match (gateway, metric == "request-success-rate") {
        (true, true) => http_success_rate_query(namespace, target, interval),
        (true, false) => http_duration_query(namespace, target, interval),
        (false, true) => success_rate_query(namespace, target, interval),
        (false, false) => duration_query(namespace, target, interval),
    }
}

/// A builtin query's answer in the metric's unit: the HTTP histogram counts
/// seconds, which Flagger truncates to whole milliseconds.
pub fn builtin_value(provider: &str, metric: &str, v: f64) -> f64 {
    if provider == crate::operator::router::gateway_api::PROVIDER && metric == "request-duration" {
        (v * 1000.0).trunc()
    } else {
        v
    }
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

/// How long a step's range queries may take together; they run at once.
pub const SERIES_DEADLINE: Duration = Duration::from_secs(10);

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
    /// Each query sent is timed in `fledge_metric_query_seconds{provider}`.
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

    /// Answers a policy's range queries (the `metric-query` capability) at
    /// the operator's metrics server, each over the window ending at `now`
    /// (Unix seconds), all at once and within [`SERIES_DEADLINE`]. The query
    /// text is rendered as a MetricTemplate's, with the analysis interval.
    pub async fn series(&self, r: &Rollout, queries: &[RangeQuery], now: i64) -> Vec<Series> {
        let server = Prometheus::at(self.default_server);
        let interval = range(Duration::from_secs(u64::from(r.analysis.interval_seconds)));
        // No metric of the Canary: `{{ variables.* }}` has nothing to read.
        let plain = MetricSpec {
            name: String::new(),
            interval: Duration::from_secs(u64::from(r.analysis.interval_seconds)),
            min: None,
            max: None,
            unit: fledge_policy::MetricUnit::None,
            source: MetricSource::Builtin,
            variables: BTreeMap::new(),
        };
        let call = Call {
            http: self.http,
            now: SystemTime::now(),
        };
        let asks = queries.iter().map(|q| {
            let (server, call, plain, interval) = (&server, &call, &plain, &interval);
            async move {
                let samples = match render(&q.query, r, plain, interval) {
                    Err(e) => Err(format!("query render error: {e}")),
                    Ok(promql) => {
                        let started = Instant::now();
                        let start = now - i64::from(q.window_seconds);
                        let answer = tokio::time::timeout(
                            SERIES_DEADLINE,
                            server.range(call, &promql, start, now, q.step_seconds),
                        )
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("no answer within {} s", SERIES_DEADLINE.as_secs()))
                        });
                        self.telemetry
                            .observe_query(server.kind(), started.elapsed());
                        answer
                    }
                };
                Series {
                    name: q.name.clone(),
                    samples,
                }
            }
        });
        futures::future::join_all(asks).await
    }

    async fn outcome(&self, r: &Rollout, m: &MetricSpec) -> QueryOutcome {
        let interval = range(m.interval);
        let server = Prometheus::at(self.default_server);
        let (provider, q): (&dyn Provider, String) = match &m.source {
            MetricSource::Builtin => {
                let q = builtin_query(&r.provider, &m.name, &r.namespace, &r.target, &interval);
                return match self.ask(&server, &q).await {
                    QueryOutcome::Value(v) => {
                        QueryOutcome::Value(builtin_value(&r.provider, &m.name, v))
                    }
                    other => other,
                };
            }
            MetricSource::Query(q) => match render(q, r, m, &interval) {
                Ok(q) => (&server, q),
                Err(e) => return QueryOutcome::Failed(format!("query render error: {e}")),
            },
            MetricSource::Template { name, namespace } => {
                return match self.template(r, m, name, namespace).await {
                    Ok((provider, q)) => self.ask(provider.as_ref(), &q).await,
                    Err(e) => QueryOutcome::Refused(e),
                };
            }
        };
        self.ask(provider, &q).await
    }

    async fn ask(&self, provider: &dyn Provider, q: &str) -> QueryOutcome {
        let call = Call {
            http: self.http,
            now: SystemTime::now(),
        };
        let started = Instant::now();
        let answer = provider.query(&call, q).await;
        self.telemetry
            .observe_query(provider.kind(), started.elapsed());
        match answer {
            Answer::Value(v) => QueryOutcome::Value(v),
            Answer::NoValues => QueryOutcome::NoValues("no values found".into()),
            Answer::Failed(e) => QueryOutcome::Failed(e),
        }
    }

    /// The template's provider, built from its spec and its Secret (in the
    /// template's namespace), and its rendered query; errors worded as
    /// Flagger's scheduler words them.
    async fn template(
        &self,
        r: &Rollout,
        m: &MetricSpec,
        name: &str,
        namespace: &str,
    ) -> Result<(Box<dyn Provider>, String), String> {
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
        let mut secret = BTreeMap::new();
        if let Some(s) = &provider.secret_ref {
            let secret_name = s.name.clone().unwrap_or_default();
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            let found = secrets.get(&secret_name).await.map_err(|e| {
                format!("Metric template {name}.{namespace} secret {secret_name} error: {e}")
            })?;
            secret = found
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
        }
        let source = Source {
            spec: &provider,
            secret: &secret,
            interval: m.interval,
            default_address: self.default_server,
        };
        let built = metrics::build(&source).map_err(|e| {
            format!(
                "Metric template {name}.{namespace} provider {} error: {e}",
                provider.type_.as_deref().unwrap_or_default()
            )
        })?;
        let q = render(&spec.query.unwrap_or_default(), r, m, &range(m.interval))
            .map_err(|e| format!("Metric template {name}.{namespace} query render error: {e}"))?;
        Ok((built, q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api;
    use crate::metrics::testserver;
    use crate::operator::telemetry::Telemetry;

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

    #[tokio::test]
    async fn gatewayapi_builtins_query_the_applications_http_histogram() {
        let canary: api::Canary = api::yaml::from_str(include_str!(
            "../../../examples/podinfo/canary-gatewayapi.yaml"
        ))
        .unwrap();
        let r = api::validate(&canary).unwrap().rollout;
        let vector = |v: &str| {
            format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{v}"]}}]}}}}"#
            )
        };
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let prom = testserver::serve(vec![
            testserver::json(200, &vector("99.5")),
            testserver::json(200, &vector("0.2504")),
            testserver::json(200, empty),
        ]);
        let http = testserver::clients();
        let telemetry = Telemetry::new("test", "gatewayapi:v1");
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let url = prom.url.clone();
        let checker = Checker {
            client: &client,
            http: &http,
            default_server: &url,
            telemetry: &telemetry,
        };
        let results = checker.check_all(&r).await;
        // No series: Flagger's words, naming the provider; nothing else is asked.
        let again = checker.check_all(&r).await;
        assert_eq!(results[0].value, fledge_policy::MetricValue::Value(99.5));
        // Seconds, truncated to whole milliseconds as Flagger does.
        assert_eq!(results[1].value, fledge_policy::MetricValue::Value(250.0));
        let fledge_policy::MetricValue::Error(e) = &again[0].value else {
            panic!("{:?}", again[0].value)
        };
        assert!(
            e.starts_with("Halt advancement no values found for gatewayapi:v1 metric request-success-rate probably podinfo.test is not receiving traffic"),
            "{e}"
        );
        let asked: Vec<String> = prom
            .requests()
            .iter()
            .filter_map(|q| {
                q.query()
                    .into_iter()
                    .find(|(k, _)| k == "query")
                    .map(|(_, v)| v)
            })
            .collect();
        assert_eq!(asked[0], http_success_rate_query("test", "podinfo", "1m"));
        assert!(asked[0].contains("http_request_duration_seconds_count{ kubernetes_namespace=\"test\", kubernetes_pod_name=~\"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)\", status!~\"5.*\" }[1m]"), "{}", asked[0]);
        assert_eq!(asked[1], http_duration_query("test", "podinfo", "30s"));
        assert!(
            asked[1].contains("http_request_duration_seconds_bucket{"),
            "{}",
            asked[1]
        );
        assert_eq!(asked.len(), 3);
    }

    /// A Kubernetes API server (one reply per request, in order) and a
    /// Checker on it; `rollout` keeps only a template metric `t` of
    /// `templates/tmpl`.
    fn kube(replies: Vec<testserver::Reply>) -> (testserver::Server, Client, Rollout) {
        let api = testserver::serve(replies);
        let mut config = kube::Config::new(api.url.parse().unwrap());
        config.default_namespace = "test".into();
        let client = Client::try_from(config).unwrap();
        let mut r = guide();
        let mut m = r.metrics[0].clone();
        m.name = "t".into();
        m.min = None;
        m.max = Some(50.0);
        m.source = MetricSource::Template {
            name: "tmpl".into(),
            namespace: "templates".into(),
        };
        r.metrics = vec![m];
        (api, client, r)
    }

    fn template_json(provider: serde_json::Value) -> String {
        serde_json::json!({
            "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
            "metadata": {"name": "tmpl", "namespace": "templates"},
            "spec": {"provider": provider, "query": "sum:errors{ns:{{ namespace }}}"},
        })
        .to_string()
    }

    #[tokio::test]
    async fn a_template_queries_its_provider_with_the_secret_of_its_namespace() {
        let datadog = testserver::serve(vec![testserver::json(
            200,
            r#"{"series":[{"pointlist":[[1,12.5]]}]}"#,
        )]);
        let secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "dd", "namespace": "templates"},
            // "k1", "k2"
            "data": {"datadog_api_key": "azE=", "datadog_application_key": "azI="},
        });
        let (api, client, r) = kube(vec![
            testserver::json(
                200,
                &template_json(serde_json::json!({
                    "type": "datadog", "address": datadog.url, "secretRef": {"name": "dd"}})),
            ),
            testserver::json(200, &secret.to_string()),
        ]);
        let http = testserver::clients();
        let telemetry = Telemetry::new("test", "appmesh");
        let checker = Checker {
            client: &client,
            http: &http,
            default_server: "http://prometheus.invalid:9090",
            telemetry: &telemetry,
        };
        let results = checker.check_all(&r).await;
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].name, "t");
        assert_eq!(results[0].value, fledge_policy::MetricValue::Value(12.5));
        assert!(
            telemetry
                .encode()
                .contains("fledge_metric_query_seconds_count{provider=\"datadog\"} 1"),
            "the query is timed under its provider"
        );
        let seen = api.requests();
        assert_eq!(
            seen.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            [
                "/apis/flagger.app/v1beta1/namespaces/templates/metrictemplates/tmpl",
                "/api/v1/namespaces/templates/secrets/dd",
            ]
        );
        let asked = datadog.requests();
        assert_eq!(asked[0].header("dd-api-key"), Some("k1"));
        assert!(
            asked[0]
                .query()
                .contains(&("query".into(), "sum:errors{ns:test}".into())),
            "{:?}",
            asked[0].query()
        );
    }

    #[tokio::test]
    async fn template_set_up_failures_read_as_flaggers_events_and_send_no_query() {
        let not_found = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"dd\" not found","reason":"NotFound","code":404}"#;
        let (api, client, r) = kube(vec![
            testserver::json(
                200,
                &template_json(serde_json::json!({"type": "datadog", "secretRef": {"name": "dd"}})),
            ),
            testserver::json(404, not_found),
            testserver::json(200, &template_json(serde_json::json!({"type": "keptn"}))),
            testserver::json(200, &template_json(serde_json::json!({"type": "datadog"}))),
        ]);
        let http = testserver::clients();
        let telemetry = Telemetry::new("test", "appmesh");
        let checker = Checker {
            client: &client,
            http: &http,
            default_server: "http://prometheus.invalid:9090",
            telemetry: &telemetry,
        };
        let error = |results: &[MetricResult]| match &results[0].value {
            fledge_policy::MetricValue::Error(e) => e.clone(),
            other => panic!("{other:?}"),
        };
        // Nothing is timed when no query was sent.
        let untimed = |telemetry: &Telemetry| {
            !telemetry
                .encode()
                .contains("fledge_metric_query_seconds_count{provider=\"datadog\"}")
        };
        let results = checker.check_all(&r).await;
        let e = error(&results);
        assert!(
            e.starts_with("Metric template tmpl.templates secret dd error: "),
            "{e}"
        );
        assert!(e.contains("not found"), "{e}");
        assert!(untimed(&telemetry));
        let results = checker.check_all(&r).await;
        let e = error(&results);
        assert!(
            e.starts_with("Metric template tmpl.templates provider keptn error: spec.provider.type: `keptn` is not supported by Fledge"),
            "{e}"
        );
        let results = checker.check_all(&r).await;
        assert_eq!(
            error(&results),
            "Metric template tmpl.templates provider datadog error: datadog credentials does not contain datadog_api_key"
        );
        assert!(untimed(&telemetry));
        assert_eq!(api.requests().len(), 4);
    }

    #[test]
    fn ranges_read_as_prometheus_writes_them() {
        assert_eq!(range(Duration::from_secs(60)), "1m");
        assert_eq!(range(Duration::from_secs(30)), "30s");
        assert_eq!(range(Duration::from_secs(90)), "90s");
    }
}
