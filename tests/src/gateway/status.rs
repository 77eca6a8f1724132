//! The statuses our controller writes: conditions, listeners and a route's parent entries.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{HttpRoute, CONTROLLER_NAME, GROUP};
use crate::mesh::selector_matches;

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
pub(super) fn keep_transition_times(new: &mut [Value], old: &[Value]) {
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
    pub(super) fn parse(l: &Value) -> Listener {
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
pub(super) fn parent_gateway(parent_ref: &Value, route_ns: &str) -> Option<String> {
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
