//! Mesh traffic simulator: what the Envoy sidecars of an App Mesh would report, for a cluster
//! that has no Envoys.
//!
//! The simulator reads `VirtualRouter`s, `VirtualNode`s and `Pod`s from the API server, sends a
//! configurable request rate into every router, picks a route the way the router's spec says
//! (priority, prefix/path/method/header matches) and a weighted target of that route, serves the
//! request from one of the Ready pods selected by the target virtual node's `podSelector`, and
//! decides its response code and latency from the behaviour configured for that backend. It
//! counts everything as the receiving pod's Envoy would, and renders the counters in
//! Prometheus' text format:
//!
//! * `envoy_cluster_upstream_rq{envoy_response_code, envoy_cluster_name, kubernetes_namespace,
//!   kubernetes_pod_name, <pod labels>}` (counter),
//! * `envoy_cluster_upstream_rq_xx{envoy_response_code_class, ...}` and
//!   `envoy_cluster_upstream_rq_total{...}` (counters),
//! * `envoy_cluster_upstream_rq_time_bucket{le, ...}`, `_sum`, `_count` (histogram, milliseconds,
//!   Envoy's default buckets).
//!
//! Weighted choices are deterministic (smooth weighted round robin and error accumulators), so
//! a 90/10 split with 5 % errors is exactly that over every window of a few hundred requests,
//! which keeps tests on these numbers free of sampling noise.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exposition::{render_labels, UpstreamFamilies, UpstreamSeries};
use crate::gateway::{GatewayConfig, GatewayEngine, GatewayModel, GatewayState};

/// Envoy's default histogram bucket bounds, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Everything a test can change at run time (`PUT /config`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Requests per second sent into each virtual router without an entry in `routers`.
    pub default_rps: f64,
    /// Per-router traffic, keyed `namespace/name`.
    pub routers: BTreeMap<String, RouterTraffic>,
    /// The mix of requests sent into routers (weights are relative).
    pub requests: Vec<RequestClass>,
    /// Per-backend behaviour, keyed by virtual node `namespace/name`.
    pub backends: BTreeMap<String, Behaviour>,
    /// Behaviour of backends without an entry in `backends`.
    pub default_backend: Behaviour,
    /// Mesh name used in cluster names when a virtual node has no `meshRef`.
    pub mesh: String,
    /// Only look at these namespaces (all when empty).
    pub namespaces: Vec<String>,
    /// A new pod gets traffic only after its counters have existed this long, as a real pod's
    /// Envoy is up (and scraped, at zero) before the endpoint reaches its callers. This also lets
    /// every series of a pod start from zero, so rates over a window compare exactly.
    pub endpoint_warmup_secs: f64,
    /// The gateway simulator: traffic through HTTPRoutes, acceptance delay
    /// ([`crate::gateway`]). Its backends' behaviour is `backends` too, keyed by Service.
    pub gateway: GatewayConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            default_rps: 50.0,
            routers: BTreeMap::new(),
            requests: vec![RequestClass::default()],
            backends: BTreeMap::new(),
            default_backend: Behaviour::default(),
            mesh: "global".to_string(),
            namespaces: Vec::new(),
            endpoint_warmup_secs: 2.0,
            gateway: GatewayConfig::default(),
        }
    }
}

/// Traffic for one router.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouterTraffic {
    pub rps: f64,
    /// Overrides the global request mix for this router.
    pub requests: Option<Vec<RequestClass>>,
}

impl Default for RouterTraffic {
    fn default() -> Self {
        RouterTraffic {
            rps: 50.0,
            requests: None,
        }
    }
}

/// A kind of request (like one `hey` invocation of the guide).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RequestClass {
    pub weight: f64,
    pub method: String,
    /// The path, without a query string.
    pub path: String,
    /// Request headers (names are case-insensitive).
    pub headers: BTreeMap<String, String>,
    /// The Host header (without a port) for HTTPRoute `hostnames`; empty: no Host, which only
    /// routes without hostnames match. App Mesh routes ignore it.
    pub host: String,
    /// Query parameters, for HTTPRoute `queryParams` matches. App Mesh routes ignore them.
    pub query: BTreeMap<String, String>,
}

impl Default for RequestClass {
    fn default() -> Self {
        RequestClass {
            weight: 1.0,
            method: "GET".to_string(),
            path: "/".to_string(),
            headers: BTreeMap::new(),
            host: String::new(),
            query: BTreeMap::new(),
        }
    }
}

/// How a backend answers: like `hey .../status/500` (errors) and `/delay/1` (latency).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Fraction (0..=1) of requests answered with `error_code`.
    pub error_ratio: f64,
    pub error_code: u16,
    /// Latency distribution: bands picked by weight, uniform within a band.
    pub latency: Vec<LatencyBand>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            error_ratio: 0.0,
            error_code: 500,
            latency: vec![LatencyBand {
                weight: 1.0,
                min_ms: 2.0,
                max_ms: 20.0,
            }],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LatencyBand {
    pub weight: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl SimConfig {
    pub fn validate(&self) -> Result<()> {
        for (key, b) in self.backends.iter().chain(std::iter::once((
            &"default_backend".to_string(),
            &self.default_backend,
        ))) {
            if !(0.0..=1.0).contains(&b.error_ratio) {
                bail!("{key}: error_ratio must be within 0..=1");
            }
            if !(100..=599).contains(&b.error_code) {
                bail!("{key}: error_code must be an HTTP status");
            }
            if b.latency.is_empty()
                || b.latency
                    .iter()
                    .any(|l| l.weight < 0.0 || l.min_ms < 0.0 || l.max_ms < l.min_ms)
            {
                bail!("{key}: latency needs bands with weight >= 0 and 0 <= min_ms <= max_ms");
            }
        }
        if self.endpoint_warmup_secs < 0.0 {
            bail!("endpoint_warmup_secs must not be negative");
        }
        if self.default_rps < 0.0 || self.routers.values().any(|r| r.rps < 0.0) {
            bail!("rps must not be negative");
        }
        self.gateway.validate()
    }
}

/// A header match of a route.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderRule {
    pub name: String,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    #[serde(skip)]
    pub regex: Option<Regex>,
    pub regex_text: Option<String>,
    pub range: Option<(i64, i64)>,
    pub invert: bool,
}

impl HeaderRule {
    fn matches(&self, headers: &BTreeMap<String, String>) -> bool {
        let value = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&self.name))
            .map(|(_, v)| v.as_str());
        let hit = match value {
            None => false,
            Some(v) => {
                self.exact.as_deref().is_none_or(|e| v == e)
                    && self.prefix.as_deref().is_none_or(|p| v.starts_with(p))
                    && self.suffix.as_deref().is_none_or(|s| v.ends_with(s))
                    && self.regex.as_ref().is_none_or(|r| r.is_match(v))
                    && self.range.is_none_or(|(start, end)| {
                        v.parse::<i64>().is_ok_and(|n| n >= start && n < end)
                    })
            }
        };
        hit != self.invert
    }
}

/// One route of a virtual router, reduced to what decides where a request goes.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub name: String,
    pub priority: Option<i64>,
    pub prefix: Option<String>,
    pub path_exact: Option<String>,
    #[serde(skip)]
    pub path_regex: Option<Regex>,
    pub method: Option<String>,
    pub headers: Vec<HeaderRule>,
    /// `(virtual node namespace/name, weight)`.
    pub targets: Vec<(String, u32)>,
}

impl Route {
    fn matches(&self, req: &RequestClass) -> bool {
        let path_ok = match (&self.prefix, &self.path_exact, &self.path_regex) {
            (Some(p), _, _) => req.path.starts_with(p.as_str()),
            (None, Some(e), _) => &req.path == e,
            (None, None, Some(r)) => r.is_match(&req.path),
            (None, None, None) => true,
        };
        path_ok
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(&req.method))
            && self.headers.iter().all(|h| h.matches(&req.headers))
    }
}

/// A virtual router: routes in evaluation order.
#[derive(Debug, Clone, Serialize)]
pub struct Router {
    pub namespace: String,
    pub name: String,
    pub routes: Vec<Route>,
}

impl Router {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Builds the routing model from a `VirtualRouter` spec. HTTP, HTTP/2 and TCP routes take
    /// part (gRPC routes need gRPC requests, which the simulator does not send). Routes are
    /// tried by ascending `priority` (routes without one last), then in spec order.
    pub fn from_spec(namespace: &str, name: &str, spec: &Value) -> Result<Router> {
        let mut routes = Vec::new();
        for (i, r) in spec
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let route_name = r
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("route-{i}"));
            let priority = r.get("priority").and_then(Value::as_i64);
            let (body, http) = if let Some(b) = r.get("httpRoute").or_else(|| r.get("http2Route")) {
                (b, true)
            } else if let Some(b) = r.get("tcpRoute") {
                (b, false)
            } else {
                continue;
            };
            let m = body.get("match").cloned().unwrap_or(Value::Null);
            let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            let mut headers = Vec::new();
            if http {
                for h in m
                    .get("headers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let hm = h.get("match").cloned().unwrap_or(Value::Null);
                    let regex_text = s(&hm, "regex");
                    headers.push(HeaderRule {
                        name: s(h, "name").context("header match without name")?,
                        exact: s(&hm, "exact"),
                        prefix: s(&hm, "prefix"),
                        suffix: s(&hm, "suffix"),
                        regex: regex_text
                            .as_deref()
                            .map(|r| Regex::new(&format!("^(?:{r})$")))
                            .transpose()
                            .with_context(|| format!("route {route_name}: bad header regex"))?,
                        regex_text,
                        range: hm.get("range").map(|r| {
                            (
                                r.get("start").and_then(Value::as_i64).unwrap_or(i64::MIN),
                                r.get("end").and_then(Value::as_i64).unwrap_or(i64::MAX),
                            )
                        }),
                        invert: h.get("invert").and_then(Value::as_bool).unwrap_or(false),
                    });
                }
            }
            let path = m.get("path").cloned().unwrap_or(Value::Null);
            let mut targets = Vec::new();
            for t in body
                .pointer("/action/weightedTargets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(vn) = t.pointer("/virtualNodeRef/name").and_then(Value::as_str) else {
                    continue; // ARN targets point outside the cluster
                };
                let vn_ns = t
                    .pointer("/virtualNodeRef/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(namespace);
                let weight = t.get("weight").and_then(Value::as_u64).unwrap_or(0);
                targets.push((format!("{vn_ns}/{vn}"), weight.min(100) as u32));
            }
            routes.push(Route {
                name: route_name,
                priority,
                prefix: if http { s(&m, "prefix") } else { None },
                path_exact: if http { s(&path, "exact") } else { None },
                path_regex: if http {
                    s(&path, "regex")
                        .map(|r| Regex::new(&format!("^(?:{r})$")))
                        .transpose()
                        .context("bad path regex")?
                } else {
                    None
                },
                method: if http { s(&m, "method") } else { None },
                headers,
                targets,
            });
        }
        routes.sort_by_key(|r| r.priority.unwrap_or(i64::MAX));
        Ok(Router {
            namespace: namespace.to_string(),
            name: name.to_string(),
            routes,
        })
    }
}

/// A pod behind a virtual node.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Endpoint {
    pub pod: String,
    /// Pod labels, renamed the way Prometheus' `labelmap` renames them.
    pub labels: BTreeMap<String, String>,
}

/// A virtual node with the Ready pods its `podSelector` selects.
#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    pub namespace: String,
    pub name: String,
    /// Name of the Envoy cluster that receives the node's inbound traffic.
    pub cluster_name: String,
    pub endpoints: Vec<Endpoint>,
}

/// Builds a backend from a `VirtualNode` spec and the pods of its namespace.
pub fn backend_from_spec(
    namespace: &str,
    name: &str,
    spec: &Value,
    pods: &[Pod],
    default_mesh: &str,
) -> Backend {
    let mesh = spec
        .pointer("/meshRef/name")
        .and_then(Value::as_str)
        .unwrap_or(default_mesh);
    let listener = spec.pointer("/listeners/0/portMapping");
    let cluster_name = match listener {
        Some(pm) => format!(
            "cds_ingress_{mesh}_{name}_{namespace}_{}_{}",
            pm.get("protocol").and_then(Value::as_str).unwrap_or("http"),
            pm.get("port").and_then(Value::as_u64).unwrap_or(0)
        ),
        None => format!("cds_ingress_{mesh}_{name}_{namespace}"),
    };
    let selector = spec.get("podSelector");
    let mut endpoints: Vec<Endpoint> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| pod_ready(p))
        .filter(|p| selector.is_some_and(|s| selector_matches(s, p.metadata.labels.as_ref())))
        .map(|p| Endpoint {
            pod: p.metadata.name.clone().unwrap_or_default(),
            labels: metric_labels(p),
        })
        .collect();
    endpoints.sort_by(|a, b| a.pod.cmp(&b.pod));
    Backend {
        namespace: namespace.to_string(),
        name: name.to_string(),
        cluster_name,
        endpoints,
    }
}

pub(crate) const RESERVED_LABELS: [&str; 7] = [
    "envoy_cluster_name",
    "envoy_response_code",
    "envoy_response_code_class",
    "kubernetes_namespace",
    "kubernetes_pod_name",
    "le",
    "job",
];

/// A pod's labels as Prometheus' pod relabeling exports them: renamed by `labelmap`, without
/// the names the exporters set themselves.
pub(crate) fn metric_labels(p: &Pod) -> BTreeMap<String, String> {
    p.metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (prometheus_label_name(k), v.clone()))
        .filter(|(k, _)| !RESERVED_LABELS.contains(&k.as_str()))
        .collect()
}

pub(crate) fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Label-selector semantics of a Kubernetes `LabelSelector` (absent selector: nothing).
pub fn selector_matches(selector: &Value, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let match_labels_ok = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let exprs_ok = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let v = labels.get(key).map(String::as_str);
            match e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => v.is_some_and(|v| values.contains(&v)),
                "NotIn" => v.is_none_or(|v| !values.contains(&v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        });
    match_labels_ok && exprs_ok
}

/// Prometheus' `labelmap` renaming of a Kubernetes label (`app.kubernetes.io/name` →
/// `app_kubernetes_io_name`).
pub fn prometheus_label_name(k8s_label: &str) -> String {
    let mut out: String = k8s_label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Smooth weighted round robin: over any `sum(weights)` consecutive picks each item is picked
/// exactly `weight` times, spread evenly.
#[derive(Debug, Default, Clone)]
pub(crate) struct Wrr {
    current: Vec<f64>,
}

impl Wrr {
    pub(crate) fn pick(&mut self, weights: &[f64]) -> Option<usize> {
        if self.current.len() != weights.len() {
            self.current = vec![0.0; weights.len()];
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            return None;
        }
        for (c, w) in self.current.iter_mut().zip(weights) {
            *c += w;
        }
        let best = (0..weights.len())
            .filter(|&i| weights[i] > 0.0)
            .max_by(|&a, &b| self.current[a].total_cmp(&self.current[b]).then(b.cmp(&a)))?;
        self.current[best] -= total;
        Some(best)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    namespace: String,
    pod: String,
    cluster: String,
}

/// Per-backend totals, for tests that want the simulator's own view (`GET /state`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BackendTotals {
    pub requests: u64,
    pub errors: u64,
}

/// The simulator's state: model, accumulators and counters.
#[derive(Default)]
pub struct Engine {
    config: SimConfig,
    routers: Vec<Router>,
    backends: BTreeMap<String, Backend>,
    due: BTreeMap<String, f64>,
    class_wrr: BTreeMap<String, Wrr>,
    target_wrr: BTreeMap<(String, String), Wrr>,
    pod_rr: BTreeMap<String, usize>,
    answers: PodAnswers,
    series: BTreeMap<SeriesKey, UpstreamSeries>,
    /// Engine time (seconds of simulated traffic) at which each series appeared.
    born: BTreeMap<SeriesKey, f64>,
    now: f64,
    pod_labels: BTreeMap<(String, String), BTreeMap<String, String>>,
    totals: BTreeMap<String, BackendTotals>,
    unmatched: u64,
    no_endpoints: u64,
    gateway: GatewayEngine,
}

/// `GET /state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateView {
    /// Router key → route name → `[(virtual node, weight)]`.
    pub routers: BTreeMap<String, BTreeMap<String, Vec<(String, u32)>>>,
    /// Virtual node key → pod names.
    pub backends: BTreeMap<String, Vec<String>>,
    pub totals: BTreeMap<String, BackendTotals>,
    pub unmatched: u64,
    pub no_endpoints: u64,
    /// The gateway simulator: accepted HTTPRoutes and requests per backend Service.
    #[serde(default)]
    pub gateway: GatewayState,
}

impl Engine {
    pub fn new(config: SimConfig) -> Result<Engine> {
        config.validate()?;
        Ok(Engine {
            config,
            ..Engine::default()
        })
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: SimConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        self.ensure_series();
        self.gateway.ensure_series(&self.config);
        Ok(())
    }

    pub fn set_backend(&mut self, key: &str, behaviour: Behaviour) -> Result<()> {
        let mut config = self.config.clone();
        config.backends.insert(key.to_string(), behaviour);
        self.set_config(config)
    }

    /// Replaces the routing model (after reading the API server).
    pub fn set_model(&mut self, routers: Vec<Router>, backends: Vec<Backend>) {
        self.routers = routers;
        self.backends = backends
            .into_iter()
            .map(|b| (format!("{}/{}", b.namespace, b.name), b))
            .collect();
        self.ensure_series();
    }

    /// Replaces the gateway model (after the gateway controller's sync).
    pub fn set_gateway_model(&mut self, model: GatewayModel) {
        self.gateway.set_model(model, &self.config);
    }

    fn behaviour(&self, backend: &str) -> &Behaviour {
        self.config
            .backends
            .get(backend)
            .unwrap_or(&self.config.default_backend)
    }

    /// Creates zero-valued series for every endpoint (and its error code, when errors are
    /// configured) so that rates over a window start together, and drops series of pods that
    /// are gone (as their Envoy would be).
    fn ensure_series(&mut self) {
        let mut live = BTreeSet::new();
        let mut wanted = Vec::new();
        let mut labels = Vec::new();
        for (key, b) in &self.backends {
            let behaviour = self.behaviour(key).clone();
            for ep in &b.endpoints {
                let sk = SeriesKey {
                    namespace: b.namespace.clone(),
                    pod: ep.pod.clone(),
                    cluster: b.cluster_name.clone(),
                };
                live.insert(sk.clone());
                labels.push(((b.namespace.clone(), ep.pod.clone()), ep.labels.clone()));
                let mut codes = vec![200];
                if behaviour.error_ratio > 0.0 {
                    codes.push(behaviour.error_code);
                }
                wanted.push((sk, codes));
            }
        }
        self.pod_labels.extend(labels);
        for (sk, codes) in wanted {
            self.born.entry(sk.clone()).or_insert(self.now);
            let s = self
                .series
                .entry(sk)
                .or_insert_with(|| UpstreamSeries::new(&LATENCY_BUCKETS_MS));
            for c in codes {
                s.by_code.entry(c).or_insert(0);
            }
        }
        self.series.retain(|k, _| live.contains(k));
        self.born.retain(|k, _| live.contains(k));
        let pods: BTreeSet<(String, String)> = live
            .iter()
            .map(|k| (k.namespace.clone(), k.pod.clone()))
            .collect();
        self.pod_labels.retain(|k, _| pods.contains(k));
    }

    /// Sends `dt_secs` worth of traffic through every router.
    pub fn advance(&mut self, dt_secs: f64) {
        self.now += dt_secs;
        let routers = std::mem::take(&mut self.routers);
        for router in &routers {
            let key = router.key();
            let traffic = self.config.routers.get(&key);
            let rps = traffic.map_or(self.config.default_rps, |t| t.rps);
            let classes = traffic
                .and_then(|t| t.requests.clone())
                .unwrap_or_else(|| self.config.requests.clone());
            let due = self.due.entry(key.clone()).or_insert(0.0);
            *due += rps * dt_secs;
            let n = due.floor();
            *due -= n;
            for _ in 0..n as u64 {
                self.one_request(router, &classes);
            }
        }
        self.routers = routers;
        self.gateway.advance(dt_secs, &self.config);
    }

    fn one_request(&mut self, router: &Router, classes: &[RequestClass]) {
        let key = router.key();
        let weights: Vec<f64> = classes.iter().map(|c| c.weight.max(0.0)).collect();
        let Some(ci) = self
            .class_wrr
            .entry(key.clone())
            .or_default()
            .pick(&weights)
        else {
            return;
        };
        let req = &classes[ci];
        let Some(route) = router.routes.iter().find(|r| r.matches(req)) else {
            self.unmatched += 1;
            return;
        };
        let tw: Vec<f64> = route.targets.iter().map(|(_, w)| *w as f64).collect();
        let Some(ti) = self
            .target_wrr
            .entry((key, route.name.clone()))
            .or_default()
            .pick(&tw)
        else {
            self.unmatched += 1;
            return;
        };
        let backend_key = route.targets[ti].0.clone();
        let Some(backend) = self.backends.get(&backend_key) else {
            self.no_endpoints += 1;
            return;
        };
        let warm: Vec<&Endpoint> = backend
            .endpoints
            .iter()
            .filter(|ep| {
                let sk = SeriesKey {
                    namespace: backend.namespace.clone(),
                    pod: ep.pod.clone(),
                    cluster: backend.cluster_name.clone(),
                };
                self.born
                    .get(&sk)
                    .is_some_and(|b| self.now - b >= self.config.endpoint_warmup_secs)
            })
            .collect();
        if warm.is_empty() {
            self.no_endpoints += 1;
            return;
        }
        let rr = self.pod_rr.entry(backend_key.clone()).or_insert(0);
        let ep = warm[*rr % warm.len()];
        *rr = rr.wrapping_add(1);
        let sk = SeriesKey {
            namespace: backend.namespace.clone(),
            pod: ep.pod.clone(),
            cluster: backend.cluster_name.clone(),
        };
        let behaviour = self.behaviour(&backend_key).clone();

        // Errors and latencies are spread per pod, so every pod of a backend behaves the same.
        let pod_key = format!("{backend_key}/{}", ep.pod);
        let (code, latency) = self.answers.next(&pod_key, &behaviour);

        let totals = self.totals.entry(backend_key).or_default();
        totals.requests += 1;
        if code >= 500 {
            totals.errors += 1;
        }
        self.series
            .entry(sk)
            .or_insert_with(|| UpstreamSeries::new(&LATENCY_BUCKETS_MS))
            .record(code, latency);
    }

    pub fn state(&self) -> StateView {
        StateView {
            routers: self
                .routers
                .iter()
                .map(|r| {
                    (
                        r.key(),
                        r.routes
                            .iter()
                            .map(|route| (route.name.clone(), route.targets.clone()))
                            .collect(),
                    )
                })
                .collect(),
            backends: self
                .backends
                .iter()
                .map(|(k, b)| {
                    (
                        k.clone(),
                        b.endpoints.iter().map(|e| e.pod.clone()).collect(),
                    )
                })
                .collect(),
            totals: self.totals.clone(),
            unmatched: self.unmatched,
            no_endpoints: self.no_endpoints,
            gateway: self.gateway.state(),
        }
    }

    /// The counters in Prometheus' text exposition format: the mesh's Envoy series, the
    /// gateway proxies' (same families) and the gateway backends' application series.
    pub fn render(&self) -> String {
        let mut upstream = UpstreamFamilies::default();
        self.gateway.render_envoy(&mut upstream);
        for (k, s) in &self.series {
            let mut labels = vec![
                ("envoy_cluster_name".to_string(), k.cluster.clone()),
                ("kubernetes_namespace".to_string(), k.namespace.clone()),
                ("kubernetes_pod_name".to_string(), k.pod.clone()),
            ];
            if let Some(pl) = self.pod_labels.get(&(k.namespace.clone(), k.pod.clone())) {
                labels.extend(pl.iter().map(|(a, b)| (a.clone(), b.clone())));
            }
            upstream.add(&render_labels(&labels), s);
        }
        format!("{}{}", upstream.finish(), self.gateway.render_own())
    }
}

/// How pods answer: errors spread evenly at their backend's error ratio, latencies drawn from
/// its bands in a fixed sequence, each pod counting on its own.
#[derive(Debug, Default)]
pub(crate) struct PodAnswers {
    error_acc: BTreeMap<String, f64>,
    latency_seq: BTreeMap<String, u64>,
}

impl PodAnswers {
    /// The status code and latency (ms) of the next answer of `pod`.
    pub(crate) fn next(&mut self, pod: &str, behaviour: &Behaviour) -> (u16, f64) {
        let acc = self.error_acc.entry(pod.to_string()).or_insert(0.0);
        *acc += behaviour.error_ratio;
        let code = if *acc >= 1.0 - 1e-9 {
            *acc -= 1.0;
            behaviour.error_code
        } else {
            200
        };
        let seq = self.latency_seq.entry(pod.to_string()).or_insert(0);
        *seq += 1;
        (code, sample_latency(&behaviour.latency, *seq))
    }
}

/// A deterministic, evenly spread latency sample: the n-th points of two low-discrepancy
/// sequences pick the band (by weight) and the position inside it.
pub(crate) fn sample_latency(bands: &[LatencyBand], n: u64) -> f64 {
    let frac = |x: f64| x - x.floor();
    let u = frac(n as f64 * 0.618_033_988_749_895);
    let v = frac(n as f64 * 0.754_877_666_246_693);
    let total: f64 = bands.iter().map(|b| b.weight).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let mut acc = 0.0;
    for b in bands {
        acc += b.weight / total;
        if u < acc {
            return b.min_ms + v * (b.max_ms - b.min_ms);
        }
    }
    let last = bands.last().expect("non-empty bands");
    last.min_ms + v * (last.max_ms - last.min_ms)
}

fn appmesh_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("appmesh.k8s.aws", "v1beta2", kind))
}

async fn list_dynamic(
    client: &Client,
    kind: &str,
    namespaces: &[String],
) -> Result<Vec<DynamicObject>> {
    let ar = appmesh_resource(kind);
    let mut out = Vec::new();
    let apis: Vec<Api<DynamicObject>> = if namespaces.is_empty() {
        vec![Api::all_with(client.clone(), &ar)]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced_with(client.clone(), ns, &ar))
            .collect()
    };
    for api in apis {
        match api.list(&ListParams::default()).await {
            Ok(list) => out.extend(list.items),
            // The App Mesh CRDs are not installed (yet): no mesh, no traffic.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("listing {kind}s")),
        }
    }
    Ok(out)
}

/// Reads routers, virtual nodes and pods from the API server and builds the routing model.
pub async fn read_model(
    client: &Client,
    config: &SimConfig,
) -> Result<(Vec<Router>, Vec<Backend>)> {
    let routers = list_dynamic(client, "VirtualRouter", &config.namespaces).await?;
    let nodes = list_dynamic(client, "VirtualNode", &config.namespaces).await?;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing pods")?
        .items;
    let empty = Value::Null;
    let mut model_routers = Vec::new();
    for r in &routers {
        let ns = r.metadata.namespace.clone().unwrap_or_default();
        let name = r.metadata.name.clone().unwrap_or_default();
        match Router::from_spec(&ns, &name, r.data.get("spec").unwrap_or(&empty)) {
            Ok(router) => model_routers.push(router),
            Err(e) => eprintln!("mesh-sim: ignoring VirtualRouter {ns}/{name}: {e:#}"),
        }
    }
    let backends = nodes
        .iter()
        .map(|n| {
            backend_from_spec(
                n.metadata.namespace.as_deref().unwrap_or_default(),
                n.metadata.name.as_deref().unwrap_or_default(),
                n.data.get("spec").unwrap_or(&empty),
                &pods,
                &config.mesh,
            )
        })
        .collect();
    Ok((model_routers, backends))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canary_router() -> Router {
        Router::from_spec(
            "test",
            "podinfo",
            &json!({
                "listeners": [{"portMapping": {"port": 9898, "protocol": "http"}}],
                "routes": [{
                    "name": "podinfo",
                    "httpRoute": {
                        "match": {"prefix": "/"},
                        "action": {"weightedTargets": [
                            {"virtualNodeRef": {"name": "podinfo-canary"}, "weight": 10},
                            {"virtualNodeRef": {"name": "podinfo-primary"}, "weight": 90}
                        ]}
                    }
                }]
            }),
        )
        .unwrap()
    }

    fn backend(name: &str, pods: &[&str]) -> Backend {
        Backend {
            namespace: "test".into(),
            name: name.into(),
            cluster_name: format!("cds_ingress_global_{name}_test_http_9898"),
            endpoints: pods
                .iter()
                .map(|p| Endpoint {
                    pod: p.to_string(),
                    labels: BTreeMap::from([("app".to_string(), name.to_string())]),
                })
                .collect(),
        }
    }

    #[test]
    fn weights_and_error_ratio_are_exact() {
        let mut engine = Engine::new(SimConfig {
            default_rps: 1000.0,
            endpoint_warmup_secs: 0.0,
            ..SimConfig::default()
        })
        .unwrap();
        engine
            .set_backend(
                "test/podinfo-canary",
                Behaviour {
                    error_ratio: 0.05,
                    ..Behaviour::default()
                },
            )
            .unwrap();
        engine.set_model(
            vec![canary_router()],
            vec![
                backend(
                    "podinfo-canary",
                    &["podinfo-5d8f7c9b4-abcde", "podinfo-5d8f7c9b4-fghij"],
                ),
                backend("podinfo-primary", &["podinfo-primary-7c9b4d8f5-klmno"]),
            ],
        );
        engine.advance(2.0);
        let st = engine.state();
        assert_eq!(st.totals["test/podinfo-canary"].requests, 200);
        assert_eq!(st.totals["test/podinfo-canary"].errors, 10);
        assert_eq!(st.totals["test/podinfo-primary"].requests, 1800);
        assert_eq!(st.totals["test/podinfo-primary"].errors, 0);
        let text = engine.render();
        assert!(text.contains(
            "envoy_cluster_upstream_rq{envoy_response_code=\"500\",envoy_cluster_name=\"cds_ingress_global_podinfo-canary_test_http_9898\",\
             kubernetes_namespace=\"test\",kubernetes_pod_name=\"podinfo-5d8f7c9b4-abcde\",app=\"podinfo-canary\"} 5"
        ), "{text}");
        assert!(text.contains("envoy_cluster_upstream_rq_time_bucket{"));
    }

    #[test]
    fn new_pods_get_traffic_after_warmup() {
        let mut engine = Engine::new(SimConfig {
            default_rps: 100.0,
            endpoint_warmup_secs: 2.0,
            ..SimConfig::default()
        })
        .unwrap();
        engine.set_model(
            vec![canary_router()],
            vec![
                backend("podinfo-canary", &["podinfo-1-a"]),
                backend("podinfo-primary", &["podinfo-primary-1-a"]),
            ],
        );
        engine.advance(1.0);
        assert!(engine.state().totals.is_empty());
        assert_eq!(engine.state().no_endpoints, 100);
        // Counters exist (at zero) before any traffic arrives.
        assert!(engine
            .render()
            .contains("kubernetes_pod_name=\"podinfo-1-a\",app=\"podinfo-canary\"} 0"));
        engine.advance(1.0);
        assert_eq!(engine.state().totals["test/podinfo-canary"].requests, 10);
    }

    #[test]
    fn header_routes_take_priority() {
        let router = Router::from_spec(
            "test",
            "podinfo",
            &json!({"routes": [
                {"name": "podinfo-b", "priority": 20, "httpRoute": {"match": {"prefix": "/"},
                    "action": {"weightedTargets": [{"virtualNodeRef": {"name": "podinfo-primary"}, "weight": 100}]}}},
                {"name": "podinfo-a", "priority": 10, "httpRoute": {"match": {"prefix": "/",
                    "headers": [{"name": "x-canary", "match": {"exact": "insider"}}]},
                    "action": {"weightedTargets": [{"virtualNodeRef": {"name": "podinfo-canary"}, "weight": 100}]}}}
            ]}),
        )
        .unwrap();
        assert_eq!(router.routes[0].name, "podinfo-a");
        let mut engine = Engine::new(SimConfig {
            default_rps: 100.0,
            endpoint_warmup_secs: 0.0,
            requests: vec![
                RequestClass {
                    weight: 1.0,
                    ..RequestClass::default()
                },
                RequestClass {
                    weight: 3.0,
                    headers: BTreeMap::from([("X-Canary".to_string(), "insider".to_string())]),
                    ..RequestClass::default()
                },
            ],
            ..SimConfig::default()
        })
        .unwrap();
        engine.set_model(
            vec![router],
            vec![
                backend("podinfo-canary", &["podinfo-1-a"]),
                backend("podinfo-primary", &["podinfo-primary-1-a"]),
            ],
        );
        engine.advance(1.0);
        let st = engine.state();
        assert_eq!(st.totals["test/podinfo-canary"].requests, 75);
        assert_eq!(st.totals["test/podinfo-primary"].requests, 25);
    }

    #[test]
    fn selectors_and_label_names() {
        let labels = BTreeMap::from([("app".to_string(), "podinfo".to_string())]);
        assert!(selector_matches(
            &json!({"matchLabels": {"app": "podinfo"}}),
            Some(&labels)
        ));
        assert!(!selector_matches(
            &json!({"matchLabels": {"app": "other"}}),
            Some(&labels)
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["podinfo"]}]}),
            Some(&labels)
        ));
        assert_eq!(
            prometheus_label_name("app.kubernetes.io/name"),
            "app_kubernetes_io_name"
        );
        assert_eq!(
            prometheus_label_name("pod-template-hash"),
            "pod_template_hash"
        );
    }

    #[test]
    fn latency_bands_are_respected() {
        let bands = vec![
            LatencyBand {
                weight: 0.9,
                min_ms: 1.0,
                max_ms: 10.0,
            },
            LatencyBand {
                weight: 0.1,
                min_ms: 1000.0,
                max_ms: 1200.0,
            },
        ];
        let slow = (1..=1000)
            .filter(|n| sample_latency(&bands, *n) >= 1000.0)
            .count();
        assert!((95..=105).contains(&slow), "{slow}");
    }
}
