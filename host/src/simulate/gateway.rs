//! The HTTPRoute of a `gatewayapi:v1` Canary in the simulated cluster: the
//! world writes it as the operator's router does ([`gateway_api::http_route`])
//! and reads the live weights back from it ([`gateway_api::read_routes`]).
//! The simulated Gateway accepts every route.
use crate::api::Canary;
use crate::core::{Rollout, Routes};
use crate::operator::router::{gateway_api, RouteTarget};
use fledge_policy::RoutePlan;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::Value;
use std::collections::BTreeMap;

pub struct HttpRouteModel {
    service: Value,
    annotations: BTreeMap<String, String>,
    owner: OwnerReference,
    /// The HTTPRoute as last written; `None` before the objects exist.
    pub route: Option<Value>,
}

impl HttpRouteModel {
    /// The model for `canary`, when its provider is `gatewayapi:v1`.
    pub fn for_canary(canary: &Canary, rollout: &Rollout) -> Option<HttpRouteModel> {
        if rollout.provider != gateway_api::PROVIDER {
            return None;
        }
        let service = canary
            .spec
            .as_ref()
            .map(|s| serde_json::to_value(&s.service).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        Some(HttpRouteModel {
            service,
            annotations: canary.metadata.annotations.clone().unwrap_or_default(),
            owner: OwnerReference {
                api_version: "flagger.app/v1beta1".into(),
                kind: "Canary".into(),
                name: rollout.name.clone(),
                uid: String::new(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            route: None,
        })
    }

    fn write(&mut self, r: &Rollout, routes: Routes, plan_rules: &[fledge_policy::MatchRule]) {
        let t = RouteTarget {
            rollout: r,
            service: &self.service,
            annotations: &self.annotations,
            label: ("app", r.target.as_str()),
            owner: self.owner.clone(),
        };
        let rules = if plan_rules.is_empty() {
            t.match_rules()
        } else {
            plan_rules
        };
        let route = gateway_api::http_route(&t, routes, rules);
        self.route = Some(route);
    }

    /// The router's reconcile: the route with the live weights kept.
    pub fn ensure(&mut self, r: &Rollout) {
        let live = self.routes(r).unwrap_or_default();
        self.write(r, live, &[]);
    }

    /// The router's set_routes.
    pub fn set(&mut self, r: &Rollout, plan: &RoutePlan) {
        let routes = Routes {
            primary: plan.primary_weight,
            canary: plan.canary_weight,
        };
        self.write(r, routes, &plan.match_rules);
    }

    /// The live weights, as the router's get_routes reads them.
    pub fn routes(&self, r: &Rollout) -> Option<Routes> {
        gateway_api::read_routes(self.route.as_ref()?, &r.apex)
    }
}
