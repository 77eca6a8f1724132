//! The controller loop: lists our GatewayClasses, Gateways and HTTPRoutes, writes their
//! statuses, and builds the model the proxies route by.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::Client;
use serde_json::{json, Value};

use super::status::{keep_transition_times, parent_gateway};
use super::{
    condition, parent_status, service_backend, AcceptedRoute, GatewayModel, HttpRoute, Listener,
    OurGateway, Proxy, CONTROLLER_NAME, GROUP, PROXY_NAMESPACE,
};
use crate::mesh::SimConfig;

fn gateway_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1", kind))
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
