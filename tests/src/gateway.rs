//! Gateway simulator: a Gateway API controller for GatewayClass `fledge-sim` and the traffic its
//! Envoy Gateway-like proxies would see, for a cluster that has neither.
//!
//! [`Controller::sync`] plays the controller `fledge.dev/gateway-sim`: it accepts the
//! GatewayClasses naming it, accepts and programs their Gateways, and writes each attached
//! HTTPRoute's `status.parents[]` entry (conditions `Accepted` and `ResolvedRefs`, with the
//! route's generation as `observedGeneration`). Parents of other controllers are left alone.
//! A new route generation is accepted only [`GatewayConfig::accept_delay_secs`] after it was
//! first seen, and until then the proxies keep routing by the last accepted one, as a real data
//! plane does while the control plane catches up.
//!
//! [`GatewayEngine`] sends configurable synthetic requests through every accepted route,
//! chooses the rule by Gateway API precedence ([`select`]), a backendRef by weight (smooth
//! weighted round robin, so 80/20 is exact over every 5 requests), then a Ready pod of that
//! Service, answers as the backend's [`Behaviour`] says, and counts what Envoy Gateway v1.10
//! and podinfo would export, in Prometheus' text format:
//!
//! * per proxy (one per Gateway, `kubernetes_namespace="envoy-gateway-system"`, Envoy Gateway's
//!   pod labels) and rule cluster (`envoy_cluster_name="httproute/<ns>/<route>/rule/<i>"`):
//!   `envoy_cluster_upstream_rq{envoy_response_code}`, `_rq_xx{envoy_response_code_class}`,
//!   `_rq_total`, `_rq_time_{bucket,sum,count}` (milliseconds, Envoy's buckets), and the
//!   per-endpoint `envoy_cluster_endpoint_rq_{total,success,error}{envoy_endpoint_address}`
//!   (Envoy Gateway's `enablePerEndpointStats`);
//! * per backend pod (its namespace, name and labels as Prometheus' pod relabeling gives them):
//!   podinfo's `http_request_duration_seconds_{bucket,sum,count}{method, path, status}` (seconds,
//!   Prometheus' default buckets) and `http_requests_total{status}`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::Client;
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::mesh::{
    pod_ready, prometheus_label_name, render_labels, sample_latency, selector_matches,
    BackendTotals, Behaviour, RequestClass, RouterTraffic, Series, SimConfig, Wrr,
    LATENCY_BUCKETS_MS, RESERVED_LABELS,
};

/// The controller name GatewayClass `fledge-sim` names.
pub const CONTROLLER_NAME: &str = "fledge.dev/gateway-sim";
/// Where Envoy Gateway runs its proxies (its own namespace, not the Gateway's).
pub const PROXY_NAMESPACE: &str = "envoy-gateway-system";
/// Prometheus' default histogram buckets (seconds), which podinfo's histogram uses.
pub const APP_BUCKETS_S: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const GROUP: &str = "gateway.networking.k8s.io";

/// The gateway part of [`SimConfig`] (`"gateway": {...}` in `PUT /config`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Requests per second sent at each accepted HTTPRoute without an entry in `routes` (as if
    /// its clients addressed only it, so routes of tests running at once do not compete).
    pub default_rps: f64,
    /// Per-route traffic, keyed by HTTPRoute `namespace/name`.
    pub routes: BTreeMap<String, RouterTraffic>,
    /// Traffic into a Gateway (keyed `namespace/name`), routed across every route attached to
    /// it with the precedence between routes (hostnames, then matches, then age and name).
    pub gateways: BTreeMap<String, RouterTraffic>,
    /// The request mix sent at routes without their own (weights are relative).
    pub requests: Vec<RequestClass>,
    /// Seconds between first seeing a route generation and accepting it (writing its status
    /// and routing by it).
    pub accept_delay_secs: f64,
    /// Per-route acceptance delay, keyed by HTTPRoute `namespace/name`.
    pub accept_delay: BTreeMap<String, f64>,
}

/// Where synthetic requests come from: a label, requests per second, the request mix, the routes
/// they are matched against, and the Gateway they enter (None: straight at one route).
type Source<'a> = (
    String,
    f64,
    &'a [RequestClass],
    Vec<&'a HttpRoute>,
    Option<&'a str>,
);

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            default_rps: 50.0,
            routes: BTreeMap::new(),
            gateways: BTreeMap::new(),
            requests: vec![RequestClass::default()],
            accept_delay_secs: 0.0,
            accept_delay: BTreeMap::new(),
        }
    }
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<()> {
        if self.default_rps < 0.0
            || self
                .routes
                .values()
                .chain(self.gateways.values())
                .any(|t| t.rps < 0.0)
        {
            bail!("gateway: rps must not be negative");
        }
        if self.accept_delay_secs < 0.0 || self.accept_delay.values().any(|d| *d < 0.0) {
            bail!("gateway: accept_delay_secs and accept_delay must not be negative");
        }
        for (key, t) in &self.routes {
            if key.split('/').count() != 2 {
                bail!("gateway.routes: {key:?} is not namespace/name");
            }
            if t.requests.as_ref().is_some_and(|r| r.is_empty()) {
                bail!("gateway.routes.{key}.requests: give at least one request class");
            }
        }
        Ok(())
    }

    fn delay(&self, route: &str) -> f64 {
        self.accept_delay
            .get(route)
            .copied()
            .unwrap_or(self.accept_delay_secs)
    }
}

/// A string match of a header or query parameter.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn parse(m: &Value, what: &str) -> Result<(String, ValueMatch)> {
        let name = m
            .get("name")
            .and_then(Value::as_str)
            .with_context(|| format!("{what} match without name"))?;
        let value = m.get("value").and_then(Value::as_str).unwrap_or_default();
        let vm = match m.get("type").and_then(Value::as_str).unwrap_or("Exact") {
            "Exact" => ValueMatch::Exact(value.to_string()),
            "RegularExpression" => ValueMatch::Regex(full_match(value)?),
            other => bail!("{what} {name}: match type {other} is not supported"),
        };
        Ok((name.to_string(), vm))
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatch::Exact(e) => v == e,
            ValueMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// Envoy's `safe_regex` matches the whole value.
fn full_match(re: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{re})$")).with_context(|| format!("bad regular expression {re:?}"))
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(e) => path == e,
            // Element-wise: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`.
            PathMatch::Prefix(p) => {
                let p = p.trim_end_matches('/');
                p.is_empty()
                    || path == p
                    || (path.starts_with(p) && path[p.len()..].starts_with('/'))
            }
            PathMatch::Regex(r) => r.is_match(path),
        }
    }
}

/// One `matches[]` entry of a rule.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub method: Option<String>,
    pub headers: Vec<(String, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
}

impl RouteMatch {
    fn parse(m: &Value) -> Result<RouteMatch> {
        let path = match m.get("path") {
            None => PathMatch::Prefix("/".into()),
            Some(p) => {
                let value = p
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_string();
                match p
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("PathPrefix")
                {
                    "Exact" => PathMatch::Exact(value),
                    "PathPrefix" => PathMatch::Prefix(value),
                    "RegularExpression" => PathMatch::Regex(full_match(&value)?),
                    other => bail!("path match type {other} is not supported"),
                }
            }
        };
        let list = |k: &str, what: &str| -> Result<Vec<(String, ValueMatch)>> {
            m.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|h| ValueMatch::parse(h, what))
                .collect()
        };
        Ok(RouteMatch {
            path,
            method: m.get("method").and_then(Value::as_str).map(str::to_string),
            headers: list("headers", "header")?,
            query: list("queryParams", "query parameter")?,
        })
    }

    fn matches(&self, req: &RequestClass) -> bool {
        self.path.matches(&req.path)
            && self.method.as_deref().is_none_or(|m| m == req.method)
            && self.headers.iter().all(|(name, vm)| {
                req.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .is_some_and(|(_, v)| vm.matches(v))
            })
            && self
                .query
                .iter()
                .all(|(name, vm)| req.query.get(name).is_some_and(|v| vm.matches(v)))
    }

    /// The spec's match precedence, largest first: Exact path, then (Envoy Gateway's choice for
    /// what the spec leaves to implementations) RegularExpression, then the longest prefix;
    /// then a method match, the number of header matches, the number of query matches.
    fn rank(&self) -> (u8, usize, bool, usize, usize) {
        let (kind, len) = match &self.path {
            PathMatch::Exact(p) => (2, p.len()),
            PathMatch::Regex(_) => (1, 0),
            PathMatch::Prefix(p) => (0, p.len()),
        };
        (
            kind,
            len,
            self.method.is_some(),
            self.headers.len(),
            self.query.len(),
        )
    }
}

/// A backendRef of a rule.
#[derive(Debug, Clone, Serialize)]
pub struct BackendRef {
    /// Service `namespace/name`.
    pub service: String,
    pub port: Option<i32>,
    pub weight: u32,
    /// `group`/`kind` when they do not name a core Service.
    pub invalid_kind: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<BackendRef>,
}

/// An HTTPRoute, reduced to what decides acceptance and where a request goes.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    /// Creation time (seconds since the epoch), the first tie-break between routes.
    pub created: i64,
    pub hostnames: Vec<String>,
    pub parent_refs: Vec<Value>,
    pub rules: Vec<Rule>,
}

impl HttpRoute {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The Envoy cluster Envoy Gateway makes of rule `index`.
    pub fn cluster_name(&self, index: usize) -> String {
        format!("httproute/{}/{}/rule/{index}", self.namespace, self.name)
    }

    pub fn from_object(obj: &DynamicObject) -> Result<HttpRoute> {
        let namespace = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let null = Value::Null;
        let spec = obj.data.get("spec").unwrap_or(&null);
        Self::from_spec(
            &namespace,
            &name,
            obj.metadata.generation.unwrap_or(0),
            obj.metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            spec,
        )
    }

    pub fn from_spec(
        namespace: &str,
        name: &str,
        generation: i64,
        created: i64,
        spec: &Value,
    ) -> Result<HttpRoute> {
        let mut rules = Vec::new();
        for (i, r) in spec
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut matches = r
                .get("matches")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(RouteMatch::parse)
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("rules[{i}].matches"))?;
            if matches.is_empty() {
                // No matches: one match of every path.
                matches.push(RouteMatch::parse(&json!({}))?);
            }
            let backends = r
                .get("backendRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|b| {
                    let group = b.get("group").and_then(Value::as_str).unwrap_or("");
                    let kind = b.get("kind").and_then(Value::as_str).unwrap_or("Service");
                    BackendRef {
                        service: format!(
                            "{}/{}",
                            b.get("namespace")
                                .and_then(Value::as_str)
                                .unwrap_or(namespace),
                            b.get("name").and_then(Value::as_str).unwrap_or_default()
                        ),
                        port: b.get("port").and_then(Value::as_i64).map(|p| p as i32),
                        weight: b.get("weight").and_then(Value::as_u64).unwrap_or(1) as u32,
                        invalid_kind: (!(group.is_empty() || group == "core") || kind != "Service")
                            .then(|| format!("{group}/{kind}")),
                    }
                })
                .collect();
            rules.push(Rule { matches, backends });
        }
        Ok(HttpRoute {
            namespace: namespace.to_string(),
            name: name.to_string(),
            generation,
            created,
            hostnames: spec
                .get("hostnames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect(),
            parent_refs: spec
                .get("parentRefs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            rules,
        })
    }

    /// How well the request's host matches the route's hostnames: (characters of the matching
    /// non-wildcard hostname, characters of the matching hostname); `None` when none matches.
    /// A route without hostnames matches every host, least specifically.
    fn host_rank(&self, host: &str) -> Option<(usize, usize)> {
        if self.hostnames.is_empty() {
            return Some((0, 0));
        }
        let host = host.to_ascii_lowercase();
        self.hostnames
            .iter()
            .filter_map(|h| match h.strip_prefix('*') {
                // `*.example.com` matches `a.example.com` and `a.b.example.com`, not `example.com`.
                Some(suffix) => {
                    (host.ends_with(suffix) && host.len() > suffix.len()).then_some((0, h.len()))
                }
                None => (*h == host).then_some((h.len(), h.len())),
            })
            .max()
    }
}

/// The rule of `routes` a request goes to, by Gateway API precedence: hostname, then the
/// match's rank, then the oldest route, then `namespace/name`, then the first rule and match.
/// `None` is Envoy's 404.
pub fn select<'a>(routes: &[&'a HttpRoute], req: &RequestClass) -> Option<(&'a HttpRoute, usize)> {
    type Key = ((usize, usize), (u8, usize, bool, usize, usize));
    let mut best: Option<(Key, &HttpRoute, usize)> = None;
    for &route in routes {
        let Some(host) = route.host_rank(&req.host) else {
            continue;
        };
        for (ri, rule) in route.rules.iter().enumerate() {
            for m in rule.matches.iter().filter(|m| m.matches(req)) {
                let key = (host, m.rank());
                let better = match &best {
                    None => true,
                    Some((bk, br, _)) => {
                        key > *bk
                            || (key == *bk && (route.created, route.key()) < (br.created, br.key()))
                    }
                };
                if better {
                    best = Some((key, route, ri));
                }
            }
        }
    }
    best.map(|(_, r, i)| (r, i))
}

/// A Service's Ready pods and the port requests reach them on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceBackend {
    pub namespace: String,
    pub name: String,
    pub endpoints: Vec<ServiceEndpoint>,
    /// `servicePort → targetPort` (numeric target ports; named ones keep the service port).
    pub ports: BTreeMap<i32, i32>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceEndpoint {
    pub pod: String,
    pub ip: String,
    /// Pod labels as Prometheus' `labelmap` names them.
    pub labels: BTreeMap<String, String>,
}

/// The proxy of one of our Gateways.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Proxy {
    pub pod: String,
    pub labels: BTreeMap<String, String>,
}

impl Proxy {
    /// Envoy Gateway's proxy Deployment `envoy-<ns>-<name>-<hash>` and its pod labels.
    pub fn for_gateway(namespace: &str, name: &str) -> Proxy {
        let h = fnv(&format!("{namespace}/{name}"));
        let alnum = |mut v: u64, n: usize| {
            const A: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
            (0..n)
                .map(|_| {
                    let c = A[(v % A.len() as u64) as usize] as char;
                    v /= A.len() as u64;
                    c
                })
                .collect::<String>()
        };
        let pod = format!(
            "envoy-{namespace}-{name}-{:08x}-{}-{}",
            h as u32,
            alnum(h >> 8, 10),
            alnum(h >> 20, 5)
        );
        let labels = [
            ("app.kubernetes.io/name", "envoy"),
            ("app.kubernetes.io/component", "proxy"),
            ("app.kubernetes.io/managed-by", "envoy-gateway"),
            ("gateway.envoyproxy.io/owning-gateway-name", name),
            ("gateway.envoyproxy.io/owning-gateway-namespace", namespace),
        ]
        .into_iter()
        .map(|(k, v)| (prometheus_label_name(k), v.to_string()))
        .collect();
        Proxy { pod, labels }
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A route as last accepted, with the Gateways (`namespace/name`) that accepted it.
#[derive(Debug, Clone)]
pub struct AcceptedRoute {
    pub route: HttpRoute,
    pub gateways: Vec<String>,
}

/// What the proxies are programmed with.
#[derive(Debug, Clone, Default)]
pub struct GatewayModel {
    /// Our Gateways (`namespace/name`) and their proxies.
    pub gateways: BTreeMap<String, Proxy>,
    /// Accepted routes by `namespace/name`.
    pub routes: BTreeMap<String, AcceptedRoute>,
    /// Services the accepted routes reference, by `namespace/name` (missing ones are absent).
    pub services: BTreeMap<String, ServiceBackend>,
}

/// `GET /state`'s `gateway`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct GatewayState {
    /// Accepted route → its generation and, per rule, `[(Service, weight)]`.
    pub routes: BTreeMap<String, RouteView>,
    /// Requests and 5xx answers per backend Service `namespace/name`.
    pub services: BTreeMap<String, BackendTotals>,
    /// Service → Ready pods behind it.
    pub endpoints: BTreeMap<String, Vec<String>>,
    /// Requests no rule matched (Envoy's 404).
    pub unmatched: u64,
    /// Requests to a rule without a usable backend: no weight, a missing Service or a
    /// non-Service kind (Envoy Gateway's 500).
    pub no_backend: u64,
    /// Requests to a Service without (warm) Ready pods.
    pub no_endpoints: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RouteView {
    pub generation: i64,
    pub gateways: Vec<String>,
    pub rules: Vec<Vec<(String, u32)>>,
}

#[derive(Debug, Clone, Default)]
struct EndpointCounts {
    total: u64,
    success: u64,
    error: u64,
}

#[derive(Debug, Clone, Default)]
struct AppSeries {
    buckets: Vec<u64>,
    sum_s: f64,
    count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct AppKey {
    namespace: String,
    pod: String,
    method: String,
    path: String,
    status: u16,
}

/// podinfo's `path` label: the path with every run of other characters than `[a-zA-Z0-9]` made
/// one `_`, trimmed and lower-cased; `root` for `/`.
pub fn podinfo_path_label(path: &str) -> String {
    let mut out = String::new();
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let out = out.trim_matches('_').to_string();
    if out.is_empty() {
        "root".into()
    } else {
        out
    }
}

/// Traffic and counters of the gateway proxies and their backends.
#[derive(Default)]
pub struct GatewayEngine {
    model: GatewayModel,
    now: f64,
    due: BTreeMap<String, f64>,
    class_wrr: BTreeMap<String, Wrr>,
    backend_wrr: BTreeMap<(String, usize), Wrr>,
    pod_rr: BTreeMap<String, usize>,
    error_acc: BTreeMap<String, f64>,
    latency_seq: BTreeMap<String, u64>,
    /// (Gateway, cluster) → the proxy's upstream series of that cluster.
    clusters: BTreeMap<(String, String), Series>,
    /// (Gateway, cluster, `ip:port`) → per-endpoint counters.
    endpoint_stats: BTreeMap<(String, String, String), EndpointCounts>,
    app: BTreeMap<AppKey, AppSeries>,
    app_total: BTreeMap<(String, String, u16), u64>,
    /// Engine time each cluster (`gw|cluster`) and pod (`ns/pod`) was first exported.
    born: BTreeMap<String, f64>,
    totals: BTreeMap<String, BackendTotals>,
    unmatched: u64,
    no_backend: u64,
    no_endpoints: u64,
}

fn behaviour<'a>(config: &'a SimConfig, service: &str) -> &'a Behaviour {
    config
        .backends
        .get(service)
        .unwrap_or(&config.default_backend)
}

impl GatewayEngine {
    pub fn set_model(&mut self, model: GatewayModel, config: &SimConfig) {
        self.model = model;
        self.ensure_series(config);
    }

    /// The request classes sent at a route.
    fn classes<'a>(config: &'a SimConfig, route: &str) -> &'a [RequestClass] {
        config
            .gateway
            .routes
            .get(route)
            .and_then(|t| t.requests.as_deref())
            .unwrap_or(&config.gateway.requests)
    }

    /// Zero-valued series for every accepted rule's cluster (with the error codes of its
    /// backends) and for every backend pod and request class that can reach it, so rates over
    /// a window start together; series of gone clusters and pods are dropped.
    pub fn ensure_series(&mut self, config: &SimConfig) {
        let mut clusters = BTreeMap::new();
        let mut pods = BTreeMap::new();
        for (key, ar) in &self.model.routes {
            let mut classes: Vec<&RequestClass> = Self::classes(config, key).iter().collect();
            for gw in &ar.gateways {
                if let Some(t) = config.gateway.gateways.get(gw) {
                    classes.extend(t.requests.as_deref().unwrap_or(&config.gateway.requests));
                }
            }
            for (i, rule) in ar.route.rules.iter().enumerate() {
                let mut codes = BTreeSet::from([200u16]);
                for b in &rule.backends {
                    let beh = behaviour(config, &b.service);
                    if beh.error_ratio > 0.0 {
                        codes.insert(beh.error_code);
                    }
                    let Some(svc) = self.model.services.get(&b.service) else {
                        continue;
                    };
                    for ep in &svc.endpoints {
                        let entry = pods
                            .entry((svc.namespace.clone(), ep.pod.clone()))
                            .or_insert_with(BTreeSet::new);
                        for c in &classes {
                            entry.insert((c.method.clone(), podinfo_path_label(&c.path), 200u16));
                            if beh.error_ratio > 0.0 {
                                entry.insert((
                                    c.method.clone(),
                                    podinfo_path_label(&c.path),
                                    beh.error_code,
                                ));
                            }
                        }
                    }
                }
                for gw in &ar.gateways {
                    clusters.insert((gw.clone(), ar.route.cluster_name(i)), codes.clone());
                }
            }
        }
        for ((gw, cluster), codes) in &clusters {
            self.born
                .entry(format!("{gw}|{cluster}"))
                .or_insert(self.now);
            let s = self
                .clusters
                .entry((gw.clone(), cluster.clone()))
                .or_insert_with(|| Series {
                    buckets: vec![0; LATENCY_BUCKETS_MS.len()],
                    ..Series::default()
                });
            for c in codes {
                s.by_code.entry(*c).or_insert(0);
            }
        }
        for ((ns, pod), keys) in &pods {
            self.born.entry(format!("{ns}/{pod}")).or_insert(self.now);
            for (method, path, status) in keys {
                self.app
                    .entry(AppKey {
                        namespace: ns.clone(),
                        pod: pod.clone(),
                        method: method.clone(),
                        path: path.clone(),
                        status: *status,
                    })
                    .or_insert_with(|| AppSeries {
                        buckets: vec![0; APP_BUCKETS_S.len()],
                        ..AppSeries::default()
                    });
                self.app_total
                    .entry((ns.clone(), pod.clone(), *status))
                    .or_insert(0);
            }
        }
        self.clusters.retain(|k, _| clusters.contains_key(k));
        self.endpoint_stats
            .retain(|(gw, c, _), _| clusters.contains_key(&(gw.clone(), c.clone())));
        self.app
            .retain(|k, _| pods.contains_key(&(k.namespace.clone(), k.pod.clone())));
        self.app_total
            .retain(|(ns, pod, _), _| pods.contains_key(&(ns.clone(), pod.clone())));
        self.born.retain(|k, _| match k.split_once('|') {
            Some((gw, c)) => clusters.contains_key(&(gw.to_string(), c.to_string())),
            None => k
                .split_once('/')
                .is_some_and(|(ns, p)| pods.contains_key(&(ns.to_string(), p.to_string()))),
        });
    }

    fn warm(&self, born_key: &str, config: &SimConfig) -> bool {
        self.born
            .get(born_key)
            .is_some_and(|b| self.now - b >= config.endpoint_warmup_secs)
    }

    /// Sends `dt_secs` worth of traffic at every accepted route and every configured Gateway.
    pub fn advance(&mut self, dt_secs: f64, config: &SimConfig) {
        self.now += dt_secs;
        let model = std::mem::take(&mut self.model);
        let mut sources: Vec<Source<'_>> = Vec::new();
        for (key, ar) in &model.routes {
            let rps = config
                .gateway
                .routes
                .get(key)
                .map_or(config.gateway.default_rps, |t| t.rps);
            sources.push((
                format!("route {key}"),
                rps,
                Self::classes(config, key),
                vec![&ar.route],
                None,
            ));
        }
        for (gw, t) in &config.gateway.gateways {
            if !model.gateways.contains_key(gw) {
                continue;
            }
            let routes = model
                .routes
                .values()
                .filter(|ar| ar.gateways.contains(gw))
                .map(|ar| &ar.route)
                .collect();
            sources.push((
                format!("gateway {gw}"),
                t.rps,
                t.requests.as_deref().unwrap_or(&config.gateway.requests),
                routes,
                Some(gw.as_str()),
            ));
        }
        for (source, rps, classes, routes, gateway) in sources {
            let due = self.due.entry(source.clone()).or_insert(0.0);
            *due += rps * dt_secs;
            let n = due.floor();
            *due -= n;
            for _ in 0..n as u64 {
                self.one_request(&model, config, &source, classes, &routes, gateway);
            }
        }
        self.model = model;
    }

    fn one_request(
        &mut self,
        model: &GatewayModel,
        config: &SimConfig,
        source: &str,
        classes: &[RequestClass],
        routes: &[&HttpRoute],
        gateway: Option<&str>,
    ) {
        let weights: Vec<f64> = classes.iter().map(|c| c.weight.max(0.0)).collect();
        let Some(ci) = self
            .class_wrr
            .entry(source.to_string())
            .or_default()
            .pick(&weights)
        else {
            return;
        };
        // Traffic sent at one route addresses its host: a class without a host gets the
        // route's first hostname (wildcards as `www.`), as the route's clients would send.
        let addressed;
        let mut req = &classes[ci];
        if gateway.is_none() && req.host.is_empty() {
            if let Some(h) = routes.first().and_then(|r| r.hostnames.first()) {
                let mut r = req.clone();
                r.host = h.replacen("*.", "www.", 1);
                addressed = r;
                req = &addressed;
            }
        }
        let Some((route, ri)) = select(routes, req) else {
            self.unmatched += 1;
            return;
        };
        let key = route.key();
        // The proxy of the Gateway the request came through (a route's first one otherwise).
        let Some(gw) = gateway.map(str::to_string).or_else(|| {
            model
                .routes
                .get(&key)
                .and_then(|a| a.gateways.first().cloned())
        }) else {
            return;
        };
        let cluster = route.cluster_name(ri);
        if !self.warm(&format!("{gw}|{cluster}"), config) {
            self.no_endpoints += 1;
            return;
        }
        let rule = &route.rules[ri];
        let bw: Vec<f64> = rule.backends.iter().map(|b| b.weight as f64).collect();
        let Some(bi) = self
            .backend_wrr
            .entry((key.clone(), ri))
            .or_default()
            .pick(&bw)
        else {
            self.no_backend += 1;
            return;
        };
        let backend = &rule.backends[bi];
        let Some(svc) = model
            .services
            .get(&backend.service)
            .filter(|_| backend.invalid_kind.is_none())
        else {
            self.no_backend += 1;
            return;
        };
        let warm: Vec<&ServiceEndpoint> = svc
            .endpoints
            .iter()
            .filter(|ep| self.warm(&format!("{}/{}", svc.namespace, ep.pod), config))
            .collect();
        if warm.is_empty() {
            self.no_endpoints += 1;
            return;
        }
        let rr = self.pod_rr.entry(backend.service.clone()).or_insert(0);
        let ep = warm[*rr % warm.len()];
        *rr = rr.wrapping_add(1);
        let beh = behaviour(config, &backend.service);

        // Errors and latencies are spread per pod, as in the mesh.
        let pod_key = format!("{}/{}", svc.namespace, ep.pod);
        let acc = self.error_acc.entry(pod_key.clone()).or_insert(0.0);
        *acc += beh.error_ratio;
        let code = if *acc >= 1.0 - 1e-9 {
            *acc -= 1.0;
            beh.error_code
        } else {
            200
        };
        let seq = self.latency_seq.entry(pod_key).or_insert(0);
        *seq += 1;
        let latency_ms = sample_latency(&beh.latency, *seq);

        let totals = self.totals.entry(backend.service.clone()).or_default();
        totals.requests += 1;
        if code >= 500 {
            totals.errors += 1;
        }
        let s = self
            .clusters
            .entry((gw.clone(), cluster.clone()))
            .or_insert_with(|| Series {
                buckets: vec![0; LATENCY_BUCKETS_MS.len()],
                ..Series::default()
            });
        *s.by_code.entry(code).or_insert(0) += 1;
        for (i, le) in LATENCY_BUCKETS_MS.iter().enumerate() {
            if latency_ms <= *le {
                s.buckets[i] += 1;
            }
        }
        s.sum_ms += latency_ms;
        s.count += 1;

        let port = backend
            .port
            .map(|p| svc.ports.get(&p).copied().unwrap_or(p))
            .unwrap_or(80);
        let es = self
            .endpoint_stats
            .entry((gw, cluster, format!("{}:{port}", ep.ip)))
            .or_default();
        es.total += 1;
        if code >= 500 {
            es.error += 1;
        } else {
            es.success += 1;
        }

        let latency_s = latency_ms / 1000.0;
        let a = self
            .app
            .entry(AppKey {
                namespace: svc.namespace.clone(),
                pod: ep.pod.clone(),
                method: req.method.clone(),
                path: podinfo_path_label(&req.path),
                status: code,
            })
            .or_insert_with(|| AppSeries {
                buckets: vec![0; APP_BUCKETS_S.len()],
                ..AppSeries::default()
            });
        for (i, le) in APP_BUCKETS_S.iter().enumerate() {
            if latency_s <= *le {
                a.buckets[i] += 1;
            }
        }
        a.sum_s += latency_s;
        a.count += 1;
        *self
            .app_total
            .entry((svc.namespace.clone(), ep.pod.clone(), code))
            .or_insert(0) += 1;
    }

    pub fn state(&self) -> GatewayState {
        GatewayState {
            routes: self
                .model
                .routes
                .iter()
                .map(|(k, ar)| {
                    (
                        k.clone(),
                        RouteView {
                            generation: ar.route.generation,
                            gateways: ar.gateways.clone(),
                            rules: ar
                                .route
                                .rules
                                .iter()
                                .map(|r| {
                                    r.backends
                                        .iter()
                                        .map(|b| (b.service.clone(), b.weight))
                                        .collect()
                                })
                                .collect(),
                        },
                    )
                })
                .collect(),
            services: self.totals.clone(),
            endpoints: self
                .model
                .services
                .iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        s.endpoints.iter().map(|e| e.pod.clone()).collect(),
                    )
                })
                .collect(),
            unmatched: self.unmatched,
            no_backend: self.no_backend,
            no_endpoints: self.no_endpoints,
        }
    }

    fn proxy_labels(&self, gw: &str) -> Vec<(String, String)> {
        let proxy = self.model.gateways.get(gw).cloned().unwrap_or_else(|| {
            let (ns, name) = gw.split_once('/').unwrap_or(("", gw));
            Proxy::for_gateway(ns, name)
        });
        let mut labels = vec![
            (
                "kubernetes_namespace".to_string(),
                PROXY_NAMESPACE.to_string(),
            ),
            ("kubernetes_pod_name".to_string(), proxy.pod),
        ];
        labels.extend(proxy.labels);
        labels
    }

    /// The proxies' `envoy_cluster_upstream_rq*` lines, added to the mesh's families.
    pub fn render_envoy(
        &self,
        rq: &mut String,
        xx: &mut String,
        total: &mut String,
        hist: &mut String,
    ) {
        for ((gw, cluster), s) in &self.clusters {
            let mut labels = vec![("envoy_cluster_name".to_string(), cluster.clone())];
            labels.extend(self.proxy_labels(gw));
            let base = render_labels(&labels);
            let mut classes: BTreeMap<u16, u64> = BTreeMap::new();
            for (code, n) in &s.by_code {
                let _ = writeln!(
                    rq,
                    "envoy_cluster_upstream_rq{{envoy_response_code=\"{code}\",{base}}} {n}"
                );
                *classes.entry(code / 100).or_insert(0) += n;
            }
            for (class, n) in classes {
                let _ = writeln!(
                    xx,
                    "envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"{class}\",{base}}} {n}"
                );
            }
            let _ = writeln!(
                total,
                "envoy_cluster_upstream_rq_total{{{base}}} {}",
                s.by_code.values().sum::<u64>()
            );
            for (le, n) in LATENCY_BUCKETS_MS.iter().zip(&s.buckets) {
                let _ = writeln!(
                    hist,
                    "envoy_cluster_upstream_rq_time_bucket{{{base},le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                hist,
                "envoy_cluster_upstream_rq_time_bucket{{{base},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                hist,
                "envoy_cluster_upstream_rq_time_sum{{{base}}} {}",
                s.sum_ms
            );
            let _ = writeln!(
                hist,
                "envoy_cluster_upstream_rq_time_count{{{base}}} {}",
                s.count
            );
        }
    }

    /// The per-endpoint Envoy families and the backends' application families.
    pub fn render_own(&self) -> String {
        let mut out = String::new();
        let mut ep_total = String::new();
        let mut ep_success = String::new();
        let mut ep_error = String::new();
        for ((gw, cluster, addr), c) in &self.endpoint_stats {
            let mut labels = vec![
                ("envoy_cluster_name".to_string(), cluster.clone()),
                ("envoy_endpoint_address".to_string(), addr.clone()),
            ];
            labels.extend(self.proxy_labels(gw));
            let base = render_labels(&labels);
            let _ = writeln!(
                ep_total,
                "envoy_cluster_endpoint_rq_total{{{base}}} {}",
                c.total
            );
            let _ = writeln!(
                ep_success,
                "envoy_cluster_endpoint_rq_success{{{base}}} {}",
                c.success
            );
            let _ = writeln!(
                ep_error,
                "envoy_cluster_endpoint_rq_error{{{base}}} {}",
                c.error
            );
        }
        for (name, body) in [
            ("envoy_cluster_endpoint_rq_total", ep_total),
            ("envoy_cluster_endpoint_rq_success", ep_success),
            ("envoy_cluster_endpoint_rq_error", ep_error),
        ] {
            if !body.is_empty() {
                let _ = write!(out, "# TYPE {name} counter\n{body}");
            }
        }

        let pod_labels = |ns: &str, pod: &str| -> Vec<(String, String)> {
            let mut labels = vec![
                ("kubernetes_namespace".to_string(), ns.to_string()),
                ("kubernetes_pod_name".to_string(), pod.to_string()),
            ];
            if let Some(ep) = self
                .model
                .services
                .values()
                .filter(|s| s.namespace == ns)
                .flat_map(|s| &s.endpoints)
                .find(|e| e.pod == pod)
            {
                labels.extend(
                    ep.labels
                        .iter()
                        .filter(|(k, _)| !["method", "path", "status"].contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            labels
        };
        let mut hist = String::new();
        for (k, s) in &self.app {
            let mut labels = pod_labels(&k.namespace, &k.pod);
            labels.push(("method".into(), k.method.clone()));
            labels.push(("path".into(), k.path.clone()));
            labels.push(("status".into(), k.status.to_string()));
            let base = render_labels(&labels);
            for (le, n) in APP_BUCKETS_S.iter().zip(&s.buckets) {
                let _ = writeln!(
                    hist,
                    "http_request_duration_seconds_bucket{{{base},le=\"{le}\"}} {n}"
                );
            }
            let _ = writeln!(
                hist,
                "http_request_duration_seconds_bucket{{{base},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                hist,
                "http_request_duration_seconds_sum{{{base}}} {}",
                s.sum_s
            );
            let _ = writeln!(
                hist,
                "http_request_duration_seconds_count{{{base}}} {}",
                s.count
            );
        }
        if !hist.is_empty() {
            let _ = write!(
                out,
                "# TYPE http_request_duration_seconds histogram\n{hist}"
            );
        }
        let mut totals = String::new();
        for ((ns, pod, status), n) in &self.app_total {
            let mut labels = pod_labels(ns, pod);
            labels.push(("status".into(), status.to_string()));
            let _ = writeln!(
                totals,
                "http_requests_total{{{}}} {n}",
                render_labels(&labels)
            );
        }
        if !totals.is_empty() {
            let _ = write!(out, "# TYPE http_requests_total counter\n{totals}");
        }
        out
    }
}

// ---- the controller: statuses ----

fn gateway_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", kind))
}

/// A condition as `metav1.Condition`.
pub fn condition(type_: &str, ok: bool, reason: &str, message: &str, generation: i64) -> Value {
    json!({
        "type": type_,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now_rfc3339(),
    })
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Keeps a condition's `lastTransitionTime` when its status did not change, so unchanged
/// statuses compare equal and are not written again.
fn keep_transition_times(new: &mut [Value], old: &[Value]) {
    for c in new {
        if let Some(o) = old.iter().find(|o| o["type"] == c["type"]) {
            if o["status"] == c["status"] {
                c["lastTransitionTime"] = o["lastTransitionTime"].clone();
            }
        }
    }
}

/// A listener of one of our Gateways.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub port: i64,
    pub hostname: Option<String>,
    /// `Same` (default), `All`, or `Selector` with its selector.
    pub from: String,
    pub selector: Value,
}

impl Listener {
    fn parse(l: &Value) -> Listener {
        let ns = l.pointer("/allowedRoutes/namespaces");
        Listener {
            name: l["name"].as_str().unwrap_or_default().to_string(),
            port: l["port"].as_i64().unwrap_or(0),
            hostname: l["hostname"].as_str().map(str::to_ascii_lowercase),
            from: ns
                .and_then(|n| n["from"].as_str())
                .unwrap_or("Same")
                .to_string(),
            selector: ns.map(|n| n["selector"].clone()).unwrap_or(Value::Null),
        }
    }

    fn allows(
        &self,
        gateway_ns: &str,
        route_ns: &str,
        ns_labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        match self.from.as_str() {
            "All" => true,
            "Selector" => selector_matches(&self.selector, ns_labels),
            _ => gateway_ns == route_ns,
        }
    }

    /// Whether the listener's hostname and the route's intersect (either absent: yes).
    fn hostname_intersects(&self, route: &HttpRoute) -> bool {
        let Some(lh) = &self.hostname else {
            return true;
        };
        if route.hostnames.is_empty() {
            return true;
        }
        let covers = |wild: &str, h: &str| {
            wild.strip_prefix('*')
                .is_some_and(|suffix| h.ends_with(suffix) && h.len() > suffix.len())
        };
        route
            .hostnames
            .iter()
            .any(|rh| rh == lh || covers(lh, rh) || covers(rh, lh))
    }
}

/// One of our Gateways.
#[derive(Debug, Clone)]
pub struct OurGateway {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub listeners: Vec<Listener>,
}

/// The status entry our controller writes for one parentRef of a route, and the listeners the
/// route attached to (empty when not accepted).
pub fn parent_status(
    route: &HttpRoute,
    parent_ref: &Value,
    gateway: &OurGateway,
    ns_labels: Option<&BTreeMap<String, String>>,
    services: &BTreeSet<String>,
) -> (Value, Vec<String>) {
    let g = route.generation;
    let section = parent_ref["sectionName"].as_str();
    let port = parent_ref["port"].as_i64();
    let candidates: Vec<&Listener> = gateway
        .listeners
        .iter()
        .filter(|l| section.is_none_or(|s| s == l.name) && port.is_none_or(|p| p == l.port))
        .collect();
    let allowed: Vec<&Listener> = candidates
        .iter()
        .copied()
        .filter(|l| l.allows(&gateway.namespace, &route.namespace, ns_labels))
        .collect();
    let attached: Vec<&Listener> = allowed
        .iter()
        .copied()
        .filter(|l| l.hostname_intersects(route))
        .collect();
    let accepted = if candidates.is_empty() {
        condition(
            "Accepted",
            false,
            "NoMatchingParent",
            "no listener matches the parentRef's sectionName/port",
            g,
        )
    } else if allowed.is_empty() {
        condition(
            "Accepted",
            false,
            "NotAllowedByListeners",
            &format!(
                "no listener allows routes from namespace {}",
                route.namespace
            ),
            g,
        )
    } else if attached.is_empty() {
        condition(
            "Accepted",
            false,
            "NoMatchingListenerHostname",
            "no listener hostname intersects the route's hostnames",
            g,
        )
    } else {
        condition("Accepted", true, "Accepted", "Route is accepted", g)
    };
    let mut problems = Vec::new();
    let mut reason = "ResolvedRefs";
    for b in route.rules.iter().flat_map(|r| &r.backends) {
        if let Some(kind) = &b.invalid_kind {
            reason = "InvalidKind";
            problems.push(format!(
                "backendRef {} is a {kind}, not a Service",
                b.service
            ));
        } else if !services.contains(&b.service) {
            if reason == "ResolvedRefs" {
                reason = "BackendNotFound";
            }
            problems.push(format!("Service {} not found", b.service));
        }
    }
    let resolved = if problems.is_empty() {
        condition(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "Resolved all the Object references for the Route",
            g,
        )
    } else {
        condition("ResolvedRefs", false, reason, &problems.join("; "), g)
    };
    let ok = accepted["status"] == "True";
    (
        json!({
            "parentRef": parent_ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": [accepted, resolved],
        }),
        if ok {
            attached.iter().map(|l| l.name.clone()).collect()
        } else {
            Vec::new()
        },
    )
}

/// The Gateway a parentRef names (`namespace/name`), when it names a Gateway at all.
fn parent_gateway(parent_ref: &Value, route_ns: &str) -> Option<String> {
    let group = parent_ref["group"].as_str().unwrap_or(GROUP);
    let kind = parent_ref["kind"].as_str().unwrap_or("Gateway");
    if group != GROUP || kind != "Gateway" {
        return None;
    }
    Some(format!(
        "{}/{}",
        parent_ref["namespace"].as_str().unwrap_or(route_ns),
        parent_ref["name"].as_str()?
    ))
}

/// The controller's memory between syncs.
#[derive(Default)]
pub struct Controller {
    /// Route → (generation, when it was first seen).
    seen: BTreeMap<String, (i64, Instant)>,
    accepted: BTreeMap<String, AcceptedRoute>,
}

async fn list(client: &Client, kind: &str) -> Result<Option<Vec<DynamicObject>>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &gateway_resource(kind));
    match api.list(&ListParams::default()).await {
        Ok(l) => Ok(Some(l.items)),
        // The Gateway API CRDs are not installed: nothing to do.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e).with_context(|| format!("listing {kind}s")),
    }
}

async fn patch_status(
    client: &Client,
    kind: &str,
    obj: &DynamicObject,
    status: Value,
) -> Result<()> {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let ar = gateway_resource(kind);
    let api: Api<DynamicObject> = match &obj.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    // The resourceVersion makes this a compare-and-swap: a route changed meanwhile is
    // reconsidered on the next sync instead of getting a status for a spec it never had.
    let patch = json!({
        "metadata": {"resourceVersion": obj.metadata.resource_version},
        "status": status,
    });
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("writing the status of {kind} {name}")),
    }
}

impl Controller {
    /// One pass: statuses of our GatewayClasses, Gateways and attached HTTPRoutes, and the
    /// model the proxies route by.
    pub async fn sync(&mut self, client: &Client, config: &SimConfig) -> Result<GatewayModel> {
        let Some(classes) = list(client, "GatewayClass").await? else {
            return Ok(GatewayModel::default());
        };
        let mut our_classes = BTreeSet::new();
        for c in &classes {
            if c.data["spec"]["controllerName"] != CONTROLLER_NAME {
                continue;
            }
            let name = c.metadata.name.clone().unwrap_or_default();
            our_classes.insert(name);
            let g = c.metadata.generation.unwrap_or(0);
            let old = c.data["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds = vec![condition(
                "Accepted",
                true,
                "Accepted",
                "Accepted by the Fledge gateway simulator",
                g,
            )];
            keep_transition_times(&mut conds, &old);
            if old != conds {
                patch_status(client, "GatewayClass", c, json!({"conditions": conds})).await?;
            }
        }

        let gateways = list(client, "Gateway").await?.unwrap_or_default();
        let ours: BTreeMap<String, (OurGateway, &DynamicObject)> = gateways
            .iter()
            .filter(|g| {
                g.data["spec"]["gatewayClassName"]
                    .as_str()
                    .is_some_and(|c| our_classes.contains(c))
            })
            .map(|g| {
                let ns = g.metadata.namespace.clone().unwrap_or_default();
                let name = g.metadata.name.clone().unwrap_or_default();
                let og = OurGateway {
                    namespace: ns.clone(),
                    name: name.clone(),
                    generation: g.metadata.generation.unwrap_or(0),
                    listeners: g.data["spec"]["listeners"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(Listener::parse)
                        .collect(),
                };
                (format!("{ns}/{name}"), (og, g))
            })
            .collect();

        let routes = list(client, "HTTPRoute").await?.unwrap_or_default();
        let services: Vec<Service> = Api::<Service>::all(client.clone())
            .list(&ListParams::default())
            .await
            .context("listing services")?
            .items;
        let service_keys: BTreeSet<String> = services
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s.metadata.namespace.as_deref().unwrap_or_default(),
                    s.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect();
        let needs_ns_labels = ours
            .values()
            .any(|(g, _)| g.listeners.iter().any(|l| l.from == "Selector"));
        let ns_labels: BTreeMap<String, BTreeMap<String, String>> = if needs_ns_labels {
            Api::<Namespace>::all(client.clone())
                .list(&ListParams::default())
                .await
                .context("listing namespaces")?
                .items
                .into_iter()
                .map(|n| {
                    (
                        n.metadata.name.unwrap_or_default(),
                        n.metadata.labels.unwrap_or_default(),
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };

        let now = Instant::now();
        let mut live = BTreeSet::new();
        // (Gateway, listener) → attached routes.
        let mut attached: BTreeMap<(String, String), usize> = BTreeMap::new();
        for obj in &routes {
            let route = match HttpRoute::from_object(obj) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "mesh-sim: ignoring HTTPRoute {}/{}: {e:#}",
                        obj.metadata.namespace.as_deref().unwrap_or_default(),
                        obj.metadata.name.as_deref().unwrap_or_default()
                    );
                    continue;
                }
            };
            let key = route.key();
            live.insert(key.clone());
            let old_parents: Vec<Value> = obj.data["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ours_refs: Vec<(&Value, &OurGateway)> = route
                .parent_refs
                .iter()
                .filter_map(|p| {
                    let gw = parent_gateway(p, &route.namespace)?;
                    ours.get(&gw).map(|(g, _)| (p, g))
                })
                .collect();
            if ours_refs.is_empty() {
                self.accepted.remove(&key);
                self.seen.remove(&key);
                // Drop entries we wrote for parents the route no longer names.
                if old_parents
                    .iter()
                    .any(|p| p["controllerName"] == CONTROLLER_NAME)
                {
                    let others: Vec<Value> = old_parents
                        .into_iter()
                        .filter(|p| p["controllerName"] != CONTROLLER_NAME)
                        .collect();
                    patch_status(client, "HTTPRoute", obj, json!({"parents": others})).await?;
                }
                continue;
            }
            let seen = self
                .seen
                .entry(key.clone())
                .or_insert((route.generation, now));
            if seen.0 != route.generation {
                *seen = (route.generation, now);
            }
            let due = now.duration_since(seen.1).as_secs_f64() >= config.gateway.delay(&key);
            if !due {
                // Not yet: the proxies keep the last accepted generation; its attachments count.
                if let Some(ar) = self.accepted.get(&key) {
                    for gw in &ar.gateways {
                        if let Some((g, _)) = ours.get(gw) {
                            for l in &g.listeners {
                                *attached.entry((gw.clone(), l.name.clone())).or_insert(0) += 1;
                            }
                        }
                    }
                }
                continue;
            }
            let mut parents = Vec::new();
            let mut accepted_by = Vec::new();
            for (p, g) in &ours_refs {
                let (mut status, listeners) =
                    parent_status(&route, p, g, ns_labels.get(&route.namespace), &service_keys);
                if let Some(old) = old_parents
                    .iter()
                    .find(|o| o["controllerName"] == CONTROLLER_NAME && o["parentRef"] == **p)
                {
                    let old_conds = old["conditions"].as_array().cloned().unwrap_or_default();
                    if let Some(conds) = status["conditions"].as_array_mut() {
                        keep_transition_times(conds, &old_conds);
                    }
                }
                let gw = format!("{}/{}", g.namespace, g.name);
                if !listeners.is_empty() && !accepted_by.contains(&gw) {
                    accepted_by.push(gw.clone());
                }
                for l in listeners {
                    *attached.entry((gw.clone(), l)).or_insert(0) += 1;
                }
                parents.push(status);
            }
            let mut all: Vec<Value> = old_parents
                .iter()
                .filter(|p| p["controllerName"] != CONTROLLER_NAME)
                .cloned()
                .collect();
            all.extend(parents);
            if all != old_parents {
                patch_status(client, "HTTPRoute", obj, json!({"parents": all})).await?;
            }
            if accepted_by.is_empty() {
                self.accepted.remove(&key);
            } else {
                self.accepted.insert(
                    key,
                    AcceptedRoute {
                        route,
                        gateways: accepted_by,
                    },
                );
            }
        }
        self.accepted.retain(|k, _| live.contains(k));
        self.seen.retain(|k, _| live.contains(k));

        for (key, (g, obj)) in &ours {
            let old = &obj.data["status"];
            let gen = g.generation;
            let proxy = Proxy::for_gateway(&g.namespace, &g.name);
            let mut conds = vec![
                condition(
                    "Accepted",
                    true,
                    "Accepted",
                    "The Gateway has been scheduled by the Fledge gateway simulator",
                    gen,
                ),
                condition(
                    "Programmed",
                    true,
                    "Programmed",
                    &format!("Simulated proxy {PROXY_NAMESPACE}/{}", proxy.pod),
                    gen,
                ),
            ];
            keep_transition_times(
                &mut conds,
                old["conditions"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
            );
            let listeners: Vec<Value> = g
                .listeners
                .iter()
                .map(|l| {
                    let old_l = old["listeners"]
                        .as_array()
                        .and_then(|ls| ls.iter().find(|o| o["name"] == l.name.as_str()))
                        .and_then(|o| o["conditions"].as_array().cloned())
                        .unwrap_or_default();
                    let mut lc = vec![
                        condition("Accepted", true, "Accepted", "Listener is accepted", gen),
                        condition("Programmed", true, "Programmed", "Listener is programmed", gen),
                        condition("ResolvedRefs", true, "ResolvedRefs", "Listener references are resolved", gen),
                    ];
                    keep_transition_times(&mut lc, &old_l);
                    json!({
                        "name": l.name,
                        "supportedKinds": [{"group": GROUP, "kind": "HTTPRoute"}],
                        "attachedRoutes": attached.get(&(key.clone(), l.name.clone())).copied().unwrap_or(0),
                        "conditions": lc,
                    })
                })
                .collect();
            let status = json!({"conditions": conds, "listeners": listeners});
            if old["conditions"] != status["conditions"] || old["listeners"] != status["listeners"]
            {
                patch_status(client, "Gateway", obj, status).await?;
            }
        }

        // The Services of accepted routes, with their Ready pods.
        let wanted: BTreeSet<&String> = self
            .accepted
            .values()
            .flat_map(|a| a.route.rules.iter().flat_map(|r| &r.backends))
            .map(|b| &b.service)
            .collect();
        let pods: Vec<Pod> = if wanted.is_empty() {
            Vec::new()
        } else {
            Api::<Pod>::all(client.clone())
                .list(&ListParams::default())
                .await
                .context("listing pods")?
                .items
        };
        let model_services = services
            .iter()
            .filter_map(|s| {
                let key = format!(
                    "{}/{}",
                    s.metadata.namespace.as_deref().unwrap_or_default(),
                    s.metadata.name.as_deref().unwrap_or_default()
                );
                wanted
                    .contains(&key)
                    .then(|| (key, service_backend(s, &pods)))
            })
            .collect();
        Ok(GatewayModel {
            gateways: ours
                .values()
                .map(|(g, _)| {
                    (
                        format!("{}/{}", g.namespace, g.name),
                        Proxy::for_gateway(&g.namespace, &g.name),
                    )
                })
                .collect(),
            routes: self.accepted.clone(),
            services: model_services,
        })
    }
}

/// A Service's Ready pods (by its `spec.selector`; none without one) and port mapping.
pub fn service_backend(s: &Service, pods: &[Pod]) -> ServiceBackend {
    let namespace = s.metadata.namespace.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone();
    let mut endpoints: Vec<ServiceEndpoint> = pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|p| pod_ready(p))
        .filter(|p| {
            selector.as_ref().is_some_and(|sel| {
                !sel.is_empty()
                    && selector_matches(&json!({ "matchLabels": sel }), p.metadata.labels.as_ref())
            })
        })
        .map(|p| ServiceEndpoint {
            pod: p.metadata.name.clone().unwrap_or_default(),
            ip: p
                .status
                .as_ref()
                .and_then(|st| st.pod_ip.clone())
                .unwrap_or_default(),
            labels: p
                .metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (prometheus_label_name(k), v.clone()))
                .filter(|(k, _)| !RESERVED_LABELS.contains(&k.as_str()))
                .collect(),
        })
        .collect();
    endpoints.sort_by(|a, b| a.pod.cmp(&b.pod));
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let target = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => *t,
                _ => p.port,
            };
            (p.port, target)
        })
        .collect();
    ServiceBackend {
        namespace,
        name: s.metadata.name.clone().unwrap_or_default(),
        endpoints,
        ports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::Engine;

    fn route(ns: &str, name: &str, created: i64, spec: Value) -> HttpRoute {
        HttpRoute::from_spec(ns, name, 3, created, &spec).unwrap()
    }

    fn req(path: &str) -> RequestClass {
        RequestClass {
            path: path.into(),
            ..RequestClass::default()
        }
    }

    fn with_headers(mut r: RequestClass, h: &[(&str, &str)]) -> RequestClass {
        r.headers = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    }

    /// `(route name, rule index)` the request selects.
    fn pick(routes: &[&HttpRoute], r: &RequestClass) -> Option<(String, usize)> {
        select(routes, r).map(|(rt, i)| (rt.name.clone(), i))
    }

    fn to(svc: &str) -> Value {
        json!([{"name": svc, "port": 9898}])
    }

    #[test]
    fn path_precedence_exact_then_regex_then_longest_prefix() {
        let r = route(
            "t",
            "r",
            0,
            json!({"rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}], "backendRefs": to("root")},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api/"}}], "backendRefs": to("api")},
                {"matches": [{"path": {"type": "RegularExpression", "value": "/api/v[0-9]+"}}], "backendRefs": to("re")},
                {"matches": [{"path": {"type": "Exact", "value": "/api/v1"}}], "backendRefs": to("exact")}
            ]}),
        );
        let rs = [&r];
        assert_eq!(pick(&rs, &req("/api/v1")), Some(("r".into(), 3)));
        assert_eq!(pick(&rs, &req("/api/v2")), Some(("r".into(), 2)));
        assert_eq!(pick(&rs, &req("/api/v2/x")), Some(("r".into(), 1)));
        assert_eq!(
            pick(&rs, &req("/api")),
            Some(("r".into(), 1)),
            "trailing slash ignored"
        );
        assert_eq!(
            pick(&rs, &req("/apix")),
            Some(("r".into(), 0)),
            "element-wise prefix"
        );
        assert_eq!(pick(&rs, &req("/")), Some(("r".into(), 0)));
    }

    #[test]
    fn method_then_header_count_then_query_count_then_rule_order() {
        let r = route(
            "t",
            "r",
            0,
            json!({"rules": [
                {"backendRefs": to("plain")},
                {"matches": [{"headers": [{"name": "x-a", "value": "1"}]}], "backendRefs": to("one-header")},
                {"matches": [{"headers": [{"name": "x-a", "value": "1"}, {"name": "x-b", "type": "RegularExpression", "value": "b+"}]}], "backendRefs": to("two-headers")},
                {"matches": [{"method": "POST"}], "backendRefs": to("post")},
                {"matches": [{"queryParams": [{"name": "q", "value": "1"}]}], "backendRefs": to("query")},
                {"matches": [{"queryParams": [{"name": "q", "value": "1"}]}], "backendRefs": to("query-again")}
            ]}),
        );
        let rs = [&r];
        assert_eq!(pick(&rs, &req("/")), Some(("r".into(), 0)));
        let a = with_headers(req("/"), &[("X-A", "1")]);
        assert_eq!(
            pick(&rs, &a),
            Some(("r".into(), 1)),
            "header names are case-insensitive"
        );
        let ab = with_headers(req("/"), &[("x-a", "1"), ("x-b", "bbb")]);
        assert_eq!(pick(&rs, &ab), Some(("r".into(), 2)));
        let a_bad_regex = with_headers(req("/"), &[("x-a", "1"), ("x-b", "bbc")]);
        assert_eq!(
            pick(&rs, &a_bad_regex),
            Some(("r".into(), 1)),
            "regex matches the whole value"
        );
        // A method match outranks any number of header matches.
        let mut post = ab.clone();
        post.method = "POST".into();
        assert_eq!(pick(&rs, &post), Some(("r".into(), 3)));
        let mut q = req("/");
        q.query.insert("q".into(), "1".into());
        assert_eq!(
            pick(&rs, &q),
            Some(("r".into(), 4)),
            "first rule wins a tie"
        );
        // A header match outranks a query match.
        let mut aq = a.clone();
        aq.query.insert("q".into(), "1".into());
        assert_eq!(pick(&rs, &aq), Some(("r".into(), 1)));
    }

    #[test]
    fn hostnames_then_age_then_name_across_routes() {
        let any = route("t", "any", 10, json!({"rules": [{"backendRefs": to("a")}]}));
        let wild = route(
            "t",
            "wild",
            10,
            json!({"hostnames": ["*.example.com"], "rules": [{"backendRefs": to("w")}]}),
        );
        let exact = route(
            "t",
            "exact",
            10,
            json!({"hostnames": ["app.example.com"], "rules": [{"backendRefs": to("e")}]}),
        );
        let rs = [&any, &wild, &exact];
        let host = |h: &str| RequestClass {
            host: h.into(),
            ..RequestClass::default()
        };
        assert_eq!(pick(&rs, &host("app.example.com")).unwrap().0, "exact");
        assert_eq!(pick(&rs, &host("APP.Example.com")).unwrap().0, "exact");
        assert_eq!(pick(&rs, &host("other.example.com")).unwrap().0, "wild");
        assert_eq!(pick(&rs, &host("a.b.example.com")).unwrap().0, "wild");
        assert_eq!(pick(&rs, &host("example.com")).unwrap().0, "any");
        assert_eq!(pick(&[&wild, &exact], &host("example.org")), None, "404");
        // A more specific path beats an older route only after hostnames tie.
        let older = route(
            "t",
            "zz-older",
            5,
            json!({"rules": [{"backendRefs": to("o")}]}),
        );
        let newer = route(
            "t",
            "aa-newer",
            9,
            json!({"rules": [{"backendRefs": to("n")}]}),
        );
        assert_eq!(pick(&[&newer, &older], &req("/")).unwrap().0, "zz-older");
        let same_age = route(
            "t",
            "aa-same",
            5,
            json!({"rules": [{"backendRefs": to("s")}]}),
        );
        assert_eq!(pick(&[&older, &same_age], &req("/")).unwrap().0, "aa-same");
        let longer = route(
            "t",
            "longer",
            9,
            json!({"rules": [{"matches": [{"path": {"value": "/x"}}], "backendRefs": to("l")}]}),
        );
        assert_eq!(pick(&[&older, &longer], &req("/x/y")).unwrap().0, "longer");
    }

    #[test]
    fn bad_regex_is_an_error_naming_the_rule() {
        let err = HttpRoute::from_spec(
            "t",
            "r",
            1,
            0,
            &json!({"rules": [{}, {"matches": [{"path": {"type": "RegularExpression", "value": "("}}]}]}),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("rules[1].matches"), "{err:#}");
    }

    fn gateway(from: &str, hostname: Option<&str>) -> OurGateway {
        OurGateway {
            namespace: "gateway-system".into(),
            name: "gateway".into(),
            generation: 1,
            listeners: vec![Listener::parse(&json!({
                "name": "http", "port": 80, "protocol": "HTTP", "hostname": hostname,
                "allowedRoutes": {"namespaces": {"from": from}}
            }))],
        }
    }

    fn cond<'a>(status: &'a Value, t: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .unwrap()
    }

    #[test]
    fn parent_status_conditions_carry_the_generation() {
        let r = route(
            "app",
            "podinfo",
            0,
            json!({
                "parentRefs": [{"name": "gateway", "namespace": "gateway-system"}],
                "rules": [{"backendRefs": [
                    {"name": "podinfo-primary", "port": 9898, "weight": 80},
                    {"name": "podinfo-canary", "port": 9898, "weight": 20}
                ]}]
            }),
        );
        let pref = r.parent_refs[0].clone();
        let both = BTreeSet::from([
            "app/podinfo-primary".to_string(),
            "app/podinfo-canary".to_string(),
        ]);
        let (st, listeners) = parent_status(&r, &pref, &gateway("All", None), None, &both);
        assert_eq!(listeners, ["http"]);
        assert_eq!(st["controllerName"], CONTROLLER_NAME);
        assert_eq!(st["parentRef"], pref);
        for t in ["Accepted", "ResolvedRefs"] {
            assert_eq!(cond(&st, t)["status"], "True", "{st}");
            assert_eq!(cond(&st, t)["observedGeneration"], 3);
        }

        let one = BTreeSet::from(["app/podinfo-primary".to_string()]);
        let (st, listeners) = parent_status(&r, &pref, &gateway("All", None), None, &one);
        assert_eq!(
            listeners,
            ["http"],
            "a missing backend does not detach the route"
        );
        let rr = cond(&st, "ResolvedRefs");
        assert_eq!(
            (rr["status"].as_str(), rr["reason"].as_str()),
            (Some("False"), Some("BackendNotFound"))
        );
        assert!(
            rr["message"]
                .as_str()
                .unwrap()
                .contains("app/podinfo-canary"),
            "{rr}"
        );

        let (st, listeners) = parent_status(&r, &pref, &gateway("Same", None), None, &both);
        assert!(listeners.is_empty());
        assert_eq!(cond(&st, "Accepted")["reason"], "NotAllowedByListeners");

        let mut wrong_section = pref.clone();
        wrong_section["sectionName"] = json!("https");
        let (st, _) = parent_status(&r, &wrong_section, &gateway("All", None), None, &both);
        assert_eq!(cond(&st, "Accepted")["reason"], "NoMatchingParent");

        let hosted = route(
            "app",
            "h",
            0,
            json!({"hostnames": ["a.example.org"], "rules": []}),
        );
        let (st, _) = parent_status(
            &hosted,
            &pref,
            &gateway("All", Some("*.example.com")),
            None,
            &both,
        );
        assert_eq!(
            cond(&st, "Accepted")["reason"],
            "NoMatchingListenerHostname"
        );
        let hosted = route(
            "app",
            "h",
            0,
            json!({"hostnames": ["a.example.com"], "rules": []}),
        );
        let (st, _) = parent_status(
            &hosted,
            &pref,
            &gateway("All", Some("*.example.com")),
            None,
            &both,
        );
        assert_eq!(cond(&st, "Accepted")["status"], "True");

        let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
        let mut sel = gateway("Selector", None);
        sel.listeners[0].selector = json!({"matchLabels": {"team": "a"}});
        assert_eq!(
            parent_status(&r, &pref, &sel, Some(&labels), &both).1,
            ["http"]
        );
        assert!(parent_status(&r, &pref, &sel, None, &both).1.is_empty());
    }

    #[test]
    fn transition_times_survive_unchanged_statuses() {
        let mut old = vec![condition("Accepted", true, "Accepted", "ok", 1)];
        old[0]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        let mut same = vec![condition("Accepted", true, "Accepted", "ok", 1)];
        keep_transition_times(&mut same, &old);
        assert_eq!(same, old);
        let mut flipped = vec![condition(
            "Accepted",
            false,
            "NotAllowedByListeners",
            "no",
            1,
        )];
        keep_transition_times(&mut flipped, &old);
        assert_ne!(
            flipped[0]["lastTransitionTime"],
            old[0]["lastTransitionTime"]
        );
    }

    fn service(ns: &str, name: &str, pods: &[(&str, &str)]) -> ServiceBackend {
        ServiceBackend {
            namespace: ns.into(),
            name: name.into(),
            endpoints: pods
                .iter()
                .map(|(p, ip)| ServiceEndpoint {
                    pod: p.to_string(),
                    ip: ip.to_string(),
                    labels: BTreeMap::from([("app".to_string(), name.to_string())]),
                })
                .collect(),
            ports: BTreeMap::from([(9898, 9898)]),
        }
    }

    fn engine_with(spec: Value, config: SimConfig) -> Engine {
        let mut engine = Engine::new(config).unwrap();
        let r = route("app", "podinfo", 0, spec);
        let mut model = GatewayModel::default();
        model.gateways.insert(
            "gateway-system/gateway".into(),
            Proxy::for_gateway("gateway-system", "gateway"),
        );
        model.routes.insert(
            r.key(),
            AcceptedRoute {
                route: r,
                gateways: vec!["gateway-system/gateway".into()],
            },
        );
        for (svc, pods) in [
            (
                "podinfo-primary",
                vec![("podinfo-primary-7c9b4d8f5-klmno", "10.244.0.5")],
            ),
            (
                "podinfo-canary",
                vec![
                    ("podinfo-5d8f7c9b4-abcde", "10.244.0.6"),
                    ("podinfo-5d8f7c9b4-fghij", "10.244.0.7"),
                ],
            ),
        ] {
            model
                .services
                .insert(format!("app/{svc}"), service("app", svc, &pods));
        }
        engine.set_gateway_model(model);
        engine
    }

    fn quiet_config() -> SimConfig {
        let mut c = SimConfig {
            endpoint_warmup_secs: 0.0,
            ..SimConfig::default()
        };
        c.gateway.default_rps = 1000.0;
        c
    }

    #[test]
    fn weights_split_exactly_and_metrics_render() {
        let mut config = quiet_config();
        config.backends.insert(
            "app/podinfo-canary".into(),
            Behaviour {
                error_ratio: 0.1,
                ..Behaviour::default()
            },
        );
        let mut engine = engine_with(
            json!({"rules": [{"backendRefs": [
                {"name": "podinfo-primary", "port": 9898, "weight": 80},
                {"name": "podinfo-canary", "port": 9898, "weight": 20}
            ]}]}),
            config,
        );
        engine.advance(1.0);
        let st = engine.state().gateway;
        assert_eq!(st.services["app/podinfo-primary"].requests, 800);
        assert_eq!(st.services["app/podinfo-canary"].requests, 200);
        assert_eq!(st.services["app/podinfo-canary"].errors, 20);
        assert_eq!(
            st.routes["app/podinfo"].rules[0][1],
            ("app/podinfo-canary".to_string(), 20)
        );

        let text = engine.render();
        let proxy = Proxy::for_gateway("gateway-system", "gateway");
        let base = format!(
            "envoy_cluster_name=\"httproute/app/podinfo/rule/0\",kubernetes_namespace=\"envoy-gateway-system\",\
             kubernetes_pod_name=\"{}\",app_kubernetes_io_component=\"proxy\",app_kubernetes_io_managed_by=\"envoy-gateway\",\
             app_kubernetes_io_name=\"envoy\",gateway_envoyproxy_io_owning_gateway_name=\"gateway\",\
             gateway_envoyproxy_io_owning_gateway_namespace=\"gateway-system\"",
            proxy.pod
        );
        for line in [
            format!("envoy_cluster_upstream_rq{{envoy_response_code=\"200\",{base}}} 980"),
            format!("envoy_cluster_upstream_rq{{envoy_response_code=\"500\",{base}}} 20"),
            format!("envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"5\",{base}}} 20"),
            format!("envoy_cluster_upstream_rq_total{{{base}}} 1000"),
            format!("envoy_cluster_upstream_rq_time_bucket{{{base},le=\"+Inf\"}} 1000"),
        ] {
            assert!(text.contains(&line), "missing {line}\n{text}");
        }
        // One TYPE line per family: the gateway's series join the mesh's.
        assert_eq!(
            text.matches("# TYPE envoy_cluster_upstream_rq counter")
                .count(),
            1
        );
        assert!(text.contains(
            "http_request_duration_seconds_count{kubernetes_namespace=\"app\",kubernetes_pod_name=\"podinfo-5d8f7c9b4-abcde\",\
             app=\"podinfo-canary\",method=\"GET\",path=\"root\",status=\"500\"} 10"
        ), "{text}");
        assert!(text.contains(
            "http_request_duration_seconds_count{kubernetes_namespace=\"app\",kubernetes_pod_name=\"podinfo-primary-7c9b4d8f5-klmno\",\
             app=\"podinfo-primary\",method=\"GET\",path=\"root\",status=\"200\"} 800"
        ), "{text}");
        assert!(text.contains("http_request_duration_seconds_bucket{kubernetes_namespace=\"app\""));
        assert!(text.contains(&format!(
            "envoy_cluster_endpoint_rq_error{{envoy_cluster_name=\"httproute/app/podinfo/rule/0\",envoy_endpoint_address=\"10.244.0.6:9898\",\
             kubernetes_namespace=\"envoy-gateway-system\",kubernetes_pod_name=\"{}\"",
            proxy.pod
        )), "{text}");
        assert!(text.contains("envoy_cluster_endpoint_rq_total{"));
        assert!(text.contains("http_requests_total{kubernetes_namespace=\"app\""));
    }

    #[test]
    fn ab_rule_sends_only_matching_requests_to_the_canary() {
        let mut config = quiet_config();
        config.gateway.default_rps = 100.0;
        config.gateway.requests = vec![
            RequestClass {
                weight: 3.0,
                ..RequestClass::default()
            },
            with_headers(RequestClass::default(), &[("X-Canary", "insider")]),
        ];
        let mut engine = engine_with(
            json!({"rules": [
                {"matches": [{"headers": [{"name": "x-canary", "type": "RegularExpression", "value": ".*insider.*"}]}],
                 "backendRefs": [{"name": "podinfo-canary", "port": 9898}]},
                {"backendRefs": [{"name": "podinfo-primary", "port": 9898}]}
            ]}),
            config,
        );
        engine.advance(1.0);
        let st = engine.state().gateway;
        assert_eq!(st.services["app/podinfo-canary"].requests, 25);
        assert_eq!(st.services["app/podinfo-primary"].requests, 75);
        let text = engine.render();
        assert!(text.contains("httproute/app/podinfo/rule/1"));
    }

    #[test]
    fn missing_backends_and_zero_weights_get_no_upstream_requests() {
        let mut engine = engine_with(
            json!({"rules": [{"backendRefs": [
                {"name": "podinfo-primary", "port": 9898, "weight": 1},
                {"name": "gone", "port": 9898, "weight": 1}
            ]}, {"matches": [{"path": {"value": "/zero"}}], "backendRefs": [{"name": "podinfo-primary", "weight": 0}]}]}),
            quiet_config(),
        );
        engine.advance(1.0);
        let st = engine.state().gateway;
        assert_eq!(st.services["app/podinfo-primary"].requests, 500);
        assert_eq!(st.no_backend, 500);
    }

    #[test]
    fn new_routes_get_traffic_after_warmup() {
        let mut config = quiet_config();
        config.endpoint_warmup_secs = 1.0;
        config.gateway.default_rps = 100.0;
        let mut engine = engine_with(
            json!({"rules": [{"backendRefs": [{"name": "podinfo-primary", "port": 9898}]}]}),
            config,
        );
        engine.advance(0.5);
        assert!(engine.state().gateway.services.is_empty());
        assert!(engine.render().contains(
            "envoy_cluster_upstream_rq_total{envoy_cluster_name=\"httproute/app/podinfo/rule/0\""
        ));
        engine.advance(0.5);
        assert_eq!(
            engine.state().gateway.services["app/podinfo-primary"].requests,
            50
        );
    }

    #[test]
    fn podinfo_path_labels() {
        assert_eq!(podinfo_path_label("/"), "root");
        assert_eq!(podinfo_path_label("/api/info"), "api_info");
        assert_eq!(podinfo_path_label("/Delay/1/"), "delay_1");
    }

    #[test]
    fn proxy_names_look_like_envoy_gateways() {
        let p = Proxy::for_gateway("gateway-system", "gateway");
        assert!(
            Regex::new("^envoy-gateway-system-gateway-[0-9a-f]{8}-[a-z0-9]{10}-[a-z0-9]{5}$")
                .unwrap()
                .is_match(&p.pod),
            "{}",
            p.pod
        );
        assert_eq!(p, Proxy::for_gateway("gateway-system", "gateway"));
    }

    #[test]
    fn config_rejects_negative_delays() {
        let mut c = SimConfig::default();
        c.gateway.accept_delay_secs = -1.0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("accept_delay"));
        let parsed: SimConfig = serde_json::from_value(
            json!({"gateway": {"accept_delay_secs": 3, "routes": {"a/b": {"rps": 10}}}}),
        )
        .unwrap();
        assert_eq!(parsed.gateway.accept_delay_secs, 3.0);
        assert_eq!(parsed.gateway.default_rps, 50.0);
    }
}
