//! Synthetic traffic through the accepted routes, and the counters it leaves.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    select, GatewayModel, HttpRoute, Proxy, ServiceEndpoint, APP_BUCKETS_S, PROXY_NAMESPACE,
};
use crate::exposition::{Histogram, UpstreamSeries};
use crate::mesh::{
    BackendTotals, Behaviour, PodAnswers, RequestClass, SimConfig, Wrr, LATENCY_BUCKETS_MS,
};

/// Where synthetic requests come from: a label, requests per second, the request mix, the routes
/// they are matched against, and the Gateway they enter (None: straight at one route).
type Source<'a> = (
    String,
    f64,
    &'a [RequestClass],
    Vec<&'a HttpRoute>,
    Option<&'a str>,
);

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
pub(super) struct EndpointCounts {
    pub(super) total: u64,
    pub(super) success: u64,
    pub(super) error: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct AppKey {
    pub(super) namespace: String,
    pub(super) pod: String,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) status: u16,
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
    pub(super) model: GatewayModel,
    now: f64,
    due: BTreeMap<String, f64>,
    class_wrr: BTreeMap<String, Wrr>,
    backend_wrr: BTreeMap<(String, usize), Wrr>,
    pod_rr: BTreeMap<String, usize>,
    answers: PodAnswers,
    /// (Gateway, cluster) → the proxy's upstream series of that cluster.
    pub(super) clusters: BTreeMap<(String, String), UpstreamSeries>,
    /// (Gateway, cluster, `ip:port`) → per-endpoint counters.
    pub(super) endpoint_stats: BTreeMap<(String, String, String), EndpointCounts>,
    pub(super) app: BTreeMap<AppKey, Histogram>,
    pub(super) app_total: BTreeMap<(String, String, u16), u64>,
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
                .or_insert_with(|| UpstreamSeries::new(&LATENCY_BUCKETS_MS));
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
                    .or_insert_with(|| Histogram::new(&APP_BUCKETS_S));
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
        let (code, latency_ms) = self.answers.next(&pod_key, beh);

        let totals = self.totals.entry(backend.service.clone()).or_default();
        totals.requests += 1;
        if code >= 500 {
            totals.errors += 1;
        }
        self.clusters
            .entry((gw.clone(), cluster.clone()))
            .or_insert_with(|| UpstreamSeries::new(&LATENCY_BUCKETS_MS))
            .record(code, latency_ms);

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

        self.app
            .entry(AppKey {
                namespace: svc.namespace.clone(),
                pod: ep.pod.clone(),
                method: req.method.clone(),
                path: podinfo_path_label(&req.path),
                status: code,
            })
            .or_insert_with(|| Histogram::new(&APP_BUCKETS_S))
            .observe(latency_ms / 1000.0);
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

    pub(super) fn proxy_labels(&self, gw: &str) -> Vec<(String, String)> {
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
}
