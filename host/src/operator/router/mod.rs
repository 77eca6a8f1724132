//! Routers: the mesh objects that split traffic between the primary and the
//! canary. One trait, one implementation per provider; the rest of the
//! operator speaks only of [`Router`], [`RouteTarget`] and [`RoutePlan`].
//!
//! Each call sets the world to a value derived from the Canary and the plan,
//! so calling it twice is the same as calling it once.
pub mod appmesh;
pub mod gateway_api;

use crate::api::Issue;
use crate::core::{Rollout, Routes};
use anyhow::Result;
use fledge_policy::{MatchRule, RoutePlan};
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ApiResource;
use serde_json::Value;

/// What a router needs to know about one Canary.
pub struct RouteTarget<'a> {
    pub rollout: &'a Rollout,
    /// `spec.service` as written (timeout, retries, match, backends, apex metadata).
    pub service: &'a Value,
    /// The Canary's annotations (App Mesh reads `appmesh.flagger.app/accesslog`).
    pub annotations: &'a std::collections::BTreeMap<String, String>,
    /// The target's selector label: key and value.
    pub label: (&'a str, &'a str),
    pub owner: OwnerReference,
}

impl RouteTarget<'_> {
    pub fn namespace(&self) -> &str {
        &self.rollout.namespace
    }
    pub fn apex(&self) -> &str {
        &self.rollout.apex
    }
    /// The match rules of the Canary's A/B analysis (empty for weighted canaries).
    pub fn match_rules(&self) -> &[MatchRule] {
        &self.rollout.analysis.match_rules
    }
}

pub trait Router: Send + Sync {
    /// The provider names this router serves (`spec.provider`, `--mesh-provider`).
    fn providers(&self) -> &'static [&'static str];

    /// Kinds the router writes, for the controller to watch (owned objects
    /// map back to their Canary) and to check for at start-up.
    fn kinds(&self) -> Vec<ApiResource>;

    /// Hands the router the stores of its kinds, to read instead of GETs and
    /// to skip applies that would change nothing.
    fn use_cache(&self, _cache: std::sync::Arc<super::cache::Cache>) {}

    /// Creates or updates the router's objects, keeping the current weights.
    fn reconcile<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<()>>;

    /// The live split; `None` when the router's objects do not exist yet.
    fn get_routes<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Option<Routes>>>;

    /// Applies `plan`. Match rules in the plan replace the Canary's for the
    /// matched route; an empty list keeps the Canary's own.
    fn set_routes<'a>(
        &'a self,
        t: &'a RouteTarget<'a>,
        plan: &'a RoutePlan,
    ) -> BoxFuture<'a, Result<()>>;

    /// Undoes what the router did when the Canary is deleted with
    /// `revertOnDeletion` (the generated objects go with the Canary).
    fn finalize<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<()>>;

    /// What the Canary's spec lacks for this router (checked before traffic
    /// moves to it from another router). Nothing by default.
    fn needs(&self, _t: &RouteTarget<'_>) -> Vec<Issue> {
        Vec::new()
    }

    /// Whether the router's objects carry traffic: by default, once
    /// [`Router::get_routes`] reads a split from them.
    fn ready<'a>(&'a self, t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Ready>> {
        async move {
            Ok(match self.get_routes(t).await {
                Ok(Some(_)) => Ready::Yes,
                Ok(None) => Ready::No("its objects do not exist yet".into()),
                Err(e) => Ready::No(format!("{e:#}")),
            })
        }
        .boxed()
    }

    /// Removes the objects this router made for the Canary once another
    /// router carries its traffic. Called again on later reconciles until
    /// [`Retirement::done`]. Nothing to do by default.
    fn retire<'a>(&'a self, _t: &'a RouteTarget<'a>) -> BoxFuture<'a, Result<Retirement>> {
        async { Ok(Retirement::default()) }.boxed()
    }
}

/// Whether a router's objects carry traffic, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    Yes,
    No(String),
}

/// A router's objects that are not yet in effect: the reconcile halts (no
/// traffic changes) and looks again after `retry`. Returned by
/// [`Router::get_routes`] wrapped in an `anyhow::Error`; the controller tells
/// it apart from a failure by downcasting, so a wait that ends by itself in a
/// moment is neither logged as a failure nor retried at the error back-off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NotReady {
    pub message: String,
    /// How soon to look again.
    pub retry: std::time::Duration,
    /// The wait is expected to end by itself (a controller catching up),
    /// as opposed to one that needs a person (a refused route).
    pub transient: bool,
}

impl NotReady {
    /// The [`NotReady`] anywhere in `err`'s chain.
    pub fn find(err: &anyhow::Error) -> Option<&NotReady> {
        err.chain().find_map(|e| e.downcast_ref::<NotReady>())
    }
}

/// What one [`Router::retire`] call did and left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retirement {
    /// Objects deleted by this call, as `Kind name`.
    pub deleted: Vec<String>,
    /// Objects that must stay for now, as `Kind name`.
    pub kept: Vec<String>,
    /// Why they stay and what makes them go (empty when nothing is kept).
    pub why: String,
}

impl Retirement {
    pub fn done(&self) -> bool {
        self.kept.is_empty()
    }
}

/// Whether two routers are the same one (`appmesh` and `appmesh:v1beta2`
/// name one router).
pub fn same(a: &dyn Router, b: &dyn Router) -> bool {
    std::ptr::addr_eq(a as *const dyn Router, b as *const dyn Router)
}

/// The split and match rules a plan asks for: its rules replace the
/// Canary's, an empty list keeps the Canary's own.
pub fn planned<'a>(t: &'a RouteTarget<'a>, plan: &'a RoutePlan) -> (Routes, &'a [MatchRule]) {
    let routes = Routes {
        primary: plan.primary_weight,
        canary: plan.canary_weight,
    };
    let rules = if plan.match_rules.is_empty() {
        t.match_rules()
    } else {
        &plan.match_rules
    };
    (routes, rules)
}

/// The router for `provider`, if Fledge has one.
pub fn for_provider<'r>(routers: &'r [Box<dyn Router>], provider: &str) -> Option<&'r dyn Router> {
    routers
        .iter()
        .find(|r| r.providers().contains(&provider))
        .map(|r| r.as_ref())
}
