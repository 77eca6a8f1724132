//! The proxies' and backends' counters in Prometheus' text format.

use std::fmt::Write as _;

use super::GatewayEngine;
use crate::exposition::{family, render_labels, UpstreamFamilies};

impl GatewayEngine {
    /// The proxies' `envoy_cluster_upstream_rq*` samples, added to the mesh's families.
    pub fn render_envoy(&self, families: &mut UpstreamFamilies) {
        for ((gw, cluster), s) in &self.clusters {
            let mut labels = vec![("envoy_cluster_name".to_string(), cluster.clone())];
            labels.extend(self.proxy_labels(gw));
            families.add(&render_labels(&labels), s);
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
            family(&mut out, name, "counter", &body);
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
            s.write(
                &mut hist,
                "http_request_duration_seconds",
                &render_labels(&labels),
            );
        }
        family(
            &mut out,
            "http_request_duration_seconds",
            "histogram",
            &hist,
        );
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
        family(&mut out, "http_requests_total", "counter", &totals);
        out
    }
}
