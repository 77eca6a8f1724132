//! What the proxies are programmed with: accepted routes, our Gateways' proxies and the
//! backend Services' Ready pods.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde::Serialize;
use serde_json::json;

use super::HttpRoute;
use crate::mesh::{metric_labels, pod_ready, prometheus_label_name, selector_matches};

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
            labels: metric_labels(p),
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
