//! The MetricTemplates that replace App Mesh's builtin checks, per gateway.
//!
//! Under App Mesh, `request-success-rate` and `request-duration` read the
//! Envoy sidecars of the canary's pods. Behind a gateway the requests that
//! are split are the gateway's, so the checks read the gateway's view:
//!
//! - Envoy Gateway makes one Envoy cluster per HTTPRoute rule,
//!   `httproute/<namespace>/<route>/rule/<n>`; the route is named after the
//!   apex Service, and rule 0 is the one the canary is weighted (or, in an
//!   A/B test, matched) into.
//! - VPC Lattice publishes per-target-group CloudWatch metrics; the canary
//!   Service has a target group of its own
//!   (`examples/gatewayapi/vpc-lattice/metric-templates.yaml`).
use super::GatewayKind;
use crate::api::{yaml, MetricTemplate};

/// The builtin checks and what each becomes.
pub const SUCCESS_RATE: &str = "request-success-rate";
pub const DURATION: &str = "request-duration";

/// The shipped VPC Lattice templates (region and namespace are set per use).
pub const VPC_LATTICE_YAML: &str =
    include_str!("../../../examples/gatewayapi/vpc-lattice/metric-templates.yaml");

/// The template variable naming the canary's VPC Lattice target group.
pub const TARGET_GROUP_VARIABLE: &str = "targetGroup";

const ENVOY_CLUSTER: &str = "envoy_cluster_name=\"httproute/{{ namespace }}/{{ service }}/rule/0\"";

/// The template name a builtin check is rewritten to (the names of
/// `examples/gatewayapi/`: `envoy-gateway-success-rate`, `vpc-lattice-latency-p99`).
pub fn name(kind: GatewayKind, builtin: &str) -> String {
    let prefix = match kind {
        GatewayKind::EnvoyGateway => "envoy-gateway",
        GatewayKind::VpcLattice => "vpc-lattice",
    };
    let what = if builtin == SUCCESS_RATE {
        "success-rate"
    } else {
        "latency-p99"
    };
    format!("{prefix}-{what}")
}

/// The two templates of `kind` in `namespace`.
pub fn for_gateway(
    kind: GatewayKind,
    namespace: &str,
    region: Option<&str>,
) -> Vec<MetricTemplate> {
    let mut out = match kind {
        GatewayKind::EnvoyGateway => envoy_gateway(),
        GatewayKind::VpcLattice => vpc_lattice(),
    };
    for t in &mut out {
        t.metadata.namespace = Some(namespace.to_string());
        if let (Some(r), Some(p)) = (region, t.spec.as_mut().and_then(|s| s.provider.as_mut())) {
            if p.type_.as_deref() == Some("cloudwatch") {
                p.region = Some(r.to_string());
            }
        }
    }
    out
}

fn envoy_gateway() -> Vec<MetricTemplate> {
    let success = format!(
        "sum(rate(envoy_cluster_upstream_rq{{{ENVOY_CLUSTER}, envoy_response_code!~\"5.*\"}}[{{{{ interval }}}}])) / \
         sum(rate(envoy_cluster_upstream_rq{{{ENVOY_CLUSTER}}}[{{{{ interval }}}}])) * 100"
    );
    let duration = format!(
        "histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{{{ENVOY_CLUSTER}}}[{{{{ interval }}}}])) by (le))"
    );
    [(SUCCESS_RATE, success), (DURATION, duration)]
        .into_iter()
        .map(|(builtin, query)| {
            let doc = serde_json::json!({
                "apiVersion": "flagger.app/v1beta1",
                "kind": "MetricTemplate",
                "metadata": {"name": name(GatewayKind::EnvoyGateway, builtin)},
                // No address: the Prometheus of the Canary's metricsServer
                // (or the operator's --metrics-server), which scrapes the gateway.
                "spec": {"provider": {"type": "prometheus"}, "query": query},
            });
            yaml::typed(&doc).expect("the Envoy Gateway templates are MetricTemplates")
        })
        .collect()
}

fn vpc_lattice() -> Vec<MetricTemplate> {
    yaml::documents(VPC_LATTICE_YAML)
        .expect("the shipped VPC Lattice templates parse")
        .iter()
        .map(|d| yaml::typed(d).expect("the shipped VPC Lattice templates are MetricTemplates"))
        .collect()
}
