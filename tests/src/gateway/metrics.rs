//! The proxies' and backends' counters in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{GatewayEngine, APP_BUCKETS_S};
use crate::mesh::{render_labels, LATENCY_BUCKETS_MS};

impl GatewayEngine {
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
