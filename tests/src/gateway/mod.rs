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
//! Service, answers as the backend's [`Behaviour`](crate::mesh::Behaviour) says, and counts
//! what Envoy Gateway v1.10 and podinfo would export, in Prometheus' text format:
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

mod config;
mod controller;
mod engine;
mod matching;
mod metrics;
mod model;
mod route;
mod status;
#[cfg(test)]
mod tests;

pub use config::GatewayConfig;
pub use controller::Controller;
pub use engine::{podinfo_path_label, GatewayEngine, GatewayState, RouteView};
pub use matching::select;
pub use model::{
    service_backend, AcceptedRoute, GatewayModel, Proxy, ServiceBackend, ServiceEndpoint,
};
pub use route::{BackendRef, HttpRoute, PathMatch, RouteMatch, Rule, ValueMatch};
pub use status::{condition, parent_status, Listener, OurGateway};

/// The controller name GatewayClass `fledge-sim` names.
pub const CONTROLLER_NAME: &str = "fledge.dev/gateway-sim";
/// Where Envoy Gateway runs its proxies (its own namespace, not the Gateway's).
pub const PROXY_NAMESPACE: &str = "envoy-gateway-system";
/// Prometheus' default histogram buckets (seconds), which podinfo's histogram uses.
pub const APP_BUCKETS_S: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const GROUP: &str = "gateway.networking.k8s.io";
