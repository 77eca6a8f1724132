//! What `provider: gatewayapi:v1` asks of a Canary beyond the common checks:
//! parent Gateways, matches an HTTPRoute can express, and which App Mesh
//! settings it ignores.
use super::{issue, Issue};
use crate::api::{Canary, CanaryService, CanarySpec};
use crate::operator::router::gateway_api;

/// Canary annotations only the App Mesh router reads.
const APPMESH_ANNOTATIONS: &[&str] = &["appmesh.flagger.app/accesslog"];

pub(super) fn check(
    canary: &Canary,
    spec: &CanarySpec,
    errors: &mut Vec<Issue>,
    warnings: &mut Vec<Issue>,
) {
    if let Some(svc) = &spec.service {
        let refs = svc.gateway_refs.as_deref().unwrap_or_default();
        if refs.is_empty() {
            errors.push(issue(
                "spec.service.gatewayRefs",
                "missing: provider gatewayapi:v1 attaches the HTTPRoute to Gateways",
                "list the Gateway (listener) to attach to, e.g. gatewayRefs: [{name: gateway, namespace: gateway-system}]",
            ));
        }
        for (i, r) in refs.iter().enumerate() {
            if r.name.as_deref().unwrap_or("").is_empty() {
                errors.push(issue(
                    format!("spec.service.gatewayRefs[{i}].name"),
                    "missing",
                    "set it to the name of the Gateway",
                ));
            }
            if let Some(p) = r.port.filter(|p| !(1..=65535).contains(p)) {
                errors.push(issue(
                    format!("spec.service.gatewayRefs[{i}].port"),
                    format!("{p} is not a port"),
                    "use the listener's port (1..=65535), or remove it",
                ));
            }
        }
        errors.extend(gateway_api::inexpressible(svc));
    }
    // A/B conditions the router does not carry would be dropped, and the
    // A/B rule would then match every request: refuse them.
    let matches = spec.analysis.as_ref().and_then(|a| a.match_.as_ref());
    for (i, m) in matches.into_iter().flatten().enumerate() {
        for (field, set) in [
            ("queryParams", m.query_params.is_some()),
            ("sourceLabels", m.source_labels.is_some()),
        ] {
            if set {
                errors.push(issue(
                    format!("spec.analysis.match[{i}].{field}"),
                    "Fledge's gatewayapi:v1 router matches A/B traffic on headers only; without this condition the A/B rule would match every request",
                    "match on a header (or on the cookie header with a regex) instead, and remove it",
                ));
            }
        }
    }
    let annotations = canary.metadata.annotations.clone().unwrap_or_default();
    for a in APPMESH_ANNOTATIONS {
        if annotations.contains_key(*a) {
            warnings.push(issue(
                format!("metadata.annotations.{a}"),
                "an App Mesh setting, not used with gatewayapi:v1",
                "it is ignored; remove it",
            ));
        }
    }
}

/// `spec.service` fields the gatewayapi:v1 router does not use, and whether set.
pub(super) fn ignored_service_fields(svc: &CanaryService) -> Vec<(&'static str, bool)> {
    vec![
        ("meshName", svc.mesh_name.is_some()),
        ("backends", svc.backends.is_some()),
        ("retries", svc.retries.is_some()),
        ("gateways", svc.gateways.is_some()),
        ("delegation", svc.delegation.is_some()),
        ("corsPolicy", svc.cors_policy.is_some()),
        ("trafficPolicy", svc.traffic_policy.is_some()),
        ("rewrite", svc.rewrite.is_some()),
        ("mirror", svc.mirror.is_some()),
    ]
}
