//! The in-memory cluster of a simulation: the target Deployment and HPA, the
//! objects Fledge creates, the live routes, and the scripted answers of
//! webhooks and metric queries.
use super::scenario::{Answer, Reading, RolloutSpeed, Scenario, Trigger, Word};
use crate::core::readiness::{self, DeploymentView};
use crate::core::rollout::{MetricSpec, QueryOutcome, Rollout};
use crate::core::{self, revision, Action, Observations, Request, Routes};
use fledge_policy::{MetricResult, MetricUnit, Readiness, RoutePlan, WebhookKind, WebhookResult};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// A Deployment as far as a rollout cares.
#[derive(Debug, Clone)]
pub struct SimDeployment {
    pub name: String,
    pub namespace: String,
    pub template: Value,
    pub replicas: i32,
    pub generation: i64,
    progress: Option<Progress>,
}

/// A rollout in flight: started at `started`, observed `seen` times,
/// available after `needed` observations.
#[derive(Debug, Clone, Copy)]
struct Progress {
    started: i64,
    seen: u32,
    needed: u32,
    /// Scaled up from zero (pods come one at a time), rather than a template
    /// change of running pods (one pod unavailable at a time).
    from_zero: bool,
}

impl SimDeployment {
    pub fn new(name: &str, namespace: &str, template: Value, replicas: i32) -> SimDeployment {
        SimDeployment {
            name: name.to_string(),
            namespace: namespace.to_string(),
            template,
            replicas,
            generation: 1,
            progress: None,
        }
    }

    fn start(&mut self, now: i64, needed: u32, from_zero: bool) {
        self.generation += 1;
        self.progress = Some(Progress {
            started: now,
            seen: 0,
            needed,
            from_zero,
        });
    }

    /// Readiness now, advancing the rollout by one observation.
    fn observe(&mut self, now: i64, threshold: u32, deadline: Duration) -> Readiness {
        let mut view = DeploymentView {
            id: format!("{}.{}", self.name, self.namespace),
            name: self.name.clone(),
            generation: self.generation,
            observed_generation: self.generation,
            replicas: self.replicas,
            updated_replicas: self.replicas,
            available_replicas: self.replicas,
            total_replicas: self.replicas,
            ..Default::default()
        };
        if let Some(p) = &mut self.progress {
            if p.seen < p.needed && self.replicas > 0 {
                let r = self.replicas;
                if p.from_zero {
                    let updated = ((i64::from(r) * i64::from(p.seen + 1)) / i64::from(p.needed + 1))
                        .max(1) as i32;
                    view.updated_replicas = updated;
                    view.total_replicas = updated;
                    view.available_replicas = updated - 1;
                } else {
                    view.available_replicas = r - 1;
                }
                view.unavailable_for = Some(Duration::from_secs((now - p.started).max(0) as u64));
                p.seen += 1;
            } else {
                self.progress = None;
            }
        }
        readiness::assess(&view, threshold, deadline)
    }
}

/// Calls and queries made, for reports and tests.
#[derive(Debug, Clone, Default)]
pub struct Calls {
    pub webhooks: BTreeMap<String, usize>,
    pub metrics: BTreeMap<String, usize>,
}

pub struct World {
    pub target: SimDeployment,
    pub primary: Option<SimDeployment>,
    pub hpa_min_replicas: Option<i32>,
    pub configs: BTreeMap<String, String>,
    pub routes: RoutePlan,
    pub speed: RolloutSpeed,
    pub calls: Calls,
    /// The HTTPRoute of a gatewayapi:v1 Canary, which holds the live weights.
    pub gateway: Option<super::gateway::HttpRouteModel>,
    scenario: Scenario,
}

impl World {
    pub fn new(
        target: SimDeployment,
        hpa_min_replicas: Option<i32>,
        configs: BTreeMap<String, String>,
        scenario: Scenario,
    ) -> World {
        World {
            target,
            primary: None,
            hpa_min_replicas,
            configs,
            routes: RoutePlan::weighted(0),
            speed: scenario.rollout,
            calls: Calls::default(),
            gateway: None,
            scenario,
        }
    }

    /// Applies a change of the target's pod template.
    pub fn change_target(&mut self, change: &Trigger) {
        let data = change
            .config_maps
            .iter()
            .map(|(n, d)| (format!("configmap/{n}"), d))
            .chain(
                change
                    .secrets
                    .iter()
                    .map(|(n, d)| (format!("secret/{n}"), d)),
            );
        for (key, data) in data {
            if let Some(sum) = self.configs.get_mut(&key) {
                *sum = revision::config_checksum(&serde_json::json!(data));
            }
        }
        let Some(containers) = self
            .target
            .template
            .pointer_mut("/spec/containers")
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        let container = match &change.container {
            Some(name) => containers
                .iter_mut()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(name)),
            None => containers.first_mut(),
        };
        let Some(container) = container.and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(image) = &change.image {
            container.insert("image".into(), Value::String(image.clone()));
        }
        if !change.env.is_empty() {
            let env = container
                .entry("env")
                .or_insert_with(|| Value::Array(vec![]));
            if let Some(env) = env.as_array_mut() {
                for (k, v) in &change.env {
                    env.retain(|e| e.get("name").and_then(Value::as_str) != Some(k));
                    env.push(serde_json::json!({"name": k, "value": v}));
                }
            }
        }
        self.target.generation += 1;
    }

    /// What the operator would observe now.
    pub fn observe(&mut self, r: &Rollout, now: i64) -> Observations {
        let deadline = r.progress_deadline;
        let canary_ready = self.target.observe(now, r.canary_ready_threshold, deadline);
        let primary_ready = match &mut self.primary {
            Some(p) => p.observe(now, r.primary_ready_threshold, deadline),
            None => {
                crate::core::readiness::not_created_yet(&format!("{}.{}", r.primary(), r.namespace))
            }
        };
        Observations {
            now,
            revision: revision::revision(&self.target.template, &self.configs),
            canary_ready,
            primary_ready,
            routes: match &self.gateway {
                Some(g) => g.routes(r).unwrap_or_default(),
                None => Routes {
                    primary: self.routes.primary_weight,
                    canary: self.routes.canary_weight,
                },
            },
            webhooks: BTreeMap::new(),
            metrics: None,
            series: None,
            decision: None,
        }
    }

    /// Answers a request of the core, recording the answer in `obs`.
    pub fn answer(&mut self, r: &Rollout, request: &Request, obs: &mut Observations) {
        match request {
            Request::Webhooks { kind, .. } => {
                let results = self.call_webhooks(r, *kind);
                obs.webhooks.insert(*kind, results);
            }
            Request::Gate { kind, decision, .. } => {
                let results = self.call_webhooks(r, *kind);
                obs.webhooks.insert(*kind, results);
                obs.decision = Some(decision.clone());
            }
            Request::Metrics => {
                let mut results = Vec::new();
                for spec in r.query_order() {
                    let result = self.query(r, spec);
                    let stop = spec.stops(&result);
                    results.push(result);
                    if stop {
                        break;
                    }
                }
                obs.metrics = Some(results);
            }
            Request::Series(queries) => {
                let now = obs.now;
                let answers = queries
                    .iter()
                    .map(|q| match self.scenario.series.get(&q.name) {
                        Some(script) => script.answer(q, now),
                        None => super::series::unscripted(q),
                    })
                    .collect();
                obs.series = Some(answers);
            }
        }
    }

    /// Calls the webhooks of `kind` in spec order until [`core::hooks_stop`].
    pub fn call_webhooks(&mut self, r: &Rollout, kind: WebhookKind) -> Vec<WebhookResult> {
        let mut out = Vec::new();
        for hook in r.webhooks_of(kind) {
            let n = self.calls.webhooks.entry(hook.name.clone()).or_default();
            let answer = self
                .scenario
                .webhooks
                .get(&hook.name)
                .and_then(|s| s.nth(*n))
                .unwrap_or(Answer::Pass);
            *n += 1;
            let passed = answer == Answer::Pass;
            let result = WebhookResult {
                name: hook.name.clone(),
                kind,
                passed,
                message: if passed {
                    String::new()
                } else {
                    format!("POST {} returned 500 Internal Server Error", hook.url)
                },
            };
            let stop = core::hooks_stop(kind, &result);
            out.push(result);
            if stop {
                break;
            }
        }
        out
    }

    fn query(&mut self, r: &Rollout, spec: &MetricSpec) -> MetricResult {
        let n = self.calls.metrics.entry(spec.name.clone()).or_default();
        let reading = self
            .scenario
            .metrics
            .get(&spec.name)
            .and_then(|s| s.nth(*n));
        *n += 1;
        let outcome = match reading {
            Some(Reading::Value(v)) => QueryOutcome::Value(v),
            Some(Reading::Word(Word::Error)) => QueryOutcome::Failed(
                "Get \"http://prometheus:9090/api/v1/query\": dial tcp: connection refused"
                    .to_string(),
            ),
            Some(Reading::Word(Word::NoData)) => QueryOutcome::NoValues("no values found".into()),
            None => QueryOutcome::Value(healthy(spec)),
        };
        spec.result(r, outcome)
    }

    /// Carries out one action of the core.
    pub fn execute(&mut self, r: &Rollout, action: &Action, now: i64) {
        match action {
            Action::EnsureObjects => {
                if let Some(g) = &mut self.gateway {
                    g.ensure(r);
                }
                if self.primary.is_none() {
                    let replicas = self.hpa_min_replicas.unwrap_or(self.target.replicas).max(1);
                    let mut primary = SimDeployment::new(
                        &r.primary(),
                        &r.namespace,
                        self.target.template.clone(),
                        replicas,
                    );
                    primary.start(now, self.speed.primary_ready_after, true);
                    self.primary = Some(primary);
                }
            }
            Action::SetRoutes(plan) => {
                if let Some(g) = &mut self.gateway {
                    g.set(r, plan);
                }
                self.routes = plan.clone();
            }
            Action::ScaleCanaryUp => {
                // With an HPA, one replica: the autoscaler takes it from there.
                let replicas = match self.hpa_min_replicas {
                    Some(_) => 1,
                    None => self.primary.as_ref().map_or(1, |p| p.replicas.max(1)),
                };
                self.target.replicas = replicas;
                let needed = self.speed.canary_ready_after;
                self.target.start(now, needed, true);
            }
            Action::ScaleCanaryToZero => {
                self.target.replicas = 0;
                self.target.progress = None;
            }
            Action::PromoteToPrimary => {
                let template = self.target.template.clone();
                let needed = self
                    .speed
                    .promotion_ready_after
                    .unwrap_or(self.speed.primary_ready_after);
                if let Some(p) = &mut self.primary {
                    p.template = template;
                    p.start(now, needed, false);
                }
            }
            Action::Event(_) => {
                // Every event is forwarded to the `event` webhooks.
                let _ = self.call_webhooks(r, WebhookKind::Event);
            }
            Action::Alert(_) => {}
        }
    }
}

/// A reading inside the metric's range, for metrics the scenario leaves out.
fn healthy(spec: &MetricSpec) -> f64 {
    let preferred = match spec.unit {
        MetricUnit::Percent => 100.0,
        MetricUnit::Milliseconds => spec.max.map_or(100.0, |m| m / 2.0),
        MetricUnit::None => match (spec.min, spec.max) {
            (Some(lo), Some(hi)) => (lo + hi) / 2.0,
            (Some(lo), None) => lo,
            (None, Some(hi)) => hi / 2.0,
            (None, None) => 0.0,
        },
    };
    let lo = spec.min.unwrap_or(f64::MIN);
    let hi = spec.max.unwrap_or(f64::MAX);
    preferred.clamp(lo, hi.max(lo))
}
