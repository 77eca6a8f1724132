//! The generated host bindings of `fledge:policy/rollout-policy-with-queries`
//! (which includes `rollout-policy`) and the conversions between them and the
//! plain `fledge_policy` types. Nothing else in the crate names a generated type.
use super::limits::PolicyState;
use wasmtime::component::{ComponentExportIndex, InstancePre};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "fledge:policy/rollout-policy-with-queries",
});

pub use self::fledge::policy::host::LogLevel;
use self::fledge::policy::types as w;
pub use w::{Decision as WitDecision, PolicyInput as WitInput, RangeQuery as WitRangeQuery};

impl self::fledge::policy::types::Host for PolicyState {}

impl self::fledge::policy::host::Host for PolicyState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.record(level, &message);
    }
}

impl self::fledge::policy::config::Host for PolicyState {
    fn get(&mut self, key: String) -> Option<String> {
        self.step.config.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.step
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl self::fledge::policy::clock::Host for PolicyState {
    fn now(&mut self) -> i64 {
        self.step.now
    }
}

impl self::fledge::policy::metric_query::Host for PolicyState {
    fn answers(&mut self) -> Vec<w::Series> {
        self.step
            .series
            .iter()
            .map(|s| w::Series {
                name: s.name.clone(),
                samples: s.samples.as_ref().map_err(Clone::clone).map(|points| {
                    points
                        .iter()
                        .map(|p| w::Sample {
                            timestamp: p.timestamp,
                            value: p.value,
                        })
                        .collect()
                }),
            })
            .collect()
    }
}

/// Registers the host's imports: `host`, `config`, `clock` and
/// `metric-query` (which only components granted the capability may
/// import; see `PolicyRuntime::load`). No WASI.
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<PolicyState>,
) -> wasmtime::Result<()> {
    RolloutPolicyWithQueries::add_to_linker::<PolicyState, wasmtime::component::HasSelf<PolicyState>>(
        linker,
        |state| state,
    )
}

/// Where a linked component's exports are: `decide` always, `queries` when
/// the component has it. Both are type-checked when the component is linked.
#[derive(Clone, Copy)]
pub struct Exports {
    pub decide: ComponentExportIndex,
    pub queries: Option<ComponentExportIndex>,
}

impl Exports {
    pub fn find(pre: &InstancePre<PolicyState>) -> wasmtime::Result<Exports> {
        use wasmtime::component::types::ComponentItem;
        let component = pre.component();
        let ty = pre.instance_type();
        let func = |name: &str| match component.get_export(None, name) {
            Some((ComponentItem::ComponentFunc(f), index)) => Ok(Some((f, index))),
            Some(_) => Err(wasmtime::format_err!("export `{name}` is not a function")),
            None => Ok(None),
        };
        let (f, decide) =
            func("decide")?.ok_or_else(|| wasmtime::format_err!("no export `decide` found"))?;
        wasmtime::error::Context::context(
            f.typecheck::<(&w::PolicyInput,), (w::Decision,)>(&ty),
            "type-checking export func `decide`",
        )?;
        let queries = match func("queries")? {
            Some((f, index)) => {
                wasmtime::error::Context::context(
                    f.typecheck::<(&w::PolicyInput,), (Vec<w::RangeQuery>,)>(&ty),
                    "type-checking export func `queries`",
                )?;
                Some(index)
            }
            None => None,
        };
        Ok(Exports { decide, queries })
    }
}

pub fn range_query_from_wit(q: w::RangeQuery) -> fledge_policy::RangeQuery {
    fledge_policy::RangeQuery {
        name: q.name,
        query: q.query,
        window_seconds: q.window_seconds,
        step_seconds: q.step_seconds,
    }
}

fn rules_to_wit(rules: &[fledge_policy::MatchRule]) -> Vec<w::MatchRule> {
    rules
        .iter()
        .map(|r| w::MatchRule {
            headers: r
                .headers
                .iter()
                .map(|h| w::HeaderMatch {
                    name: h.name.clone(),
                    match_: match &h.matcher {
                        fledge_policy::StringMatch::Exact(s) => w::StringMatch::Exact(s.clone()),
                        fledge_policy::StringMatch::Prefix(s) => w::StringMatch::Prefix(s.clone()),
                        fledge_policy::StringMatch::Suffix(s) => w::StringMatch::Suffix(s.clone()),
                        fledge_policy::StringMatch::Regex(s) => w::StringMatch::Regex(s.clone()),
                    },
                })
                .collect(),
        })
        .collect()
}

fn rules_from_wit(rules: Vec<w::MatchRule>) -> Vec<fledge_policy::MatchRule> {
    rules
        .into_iter()
        .map(|r| fledge_policy::MatchRule {
            headers: r
                .headers
                .into_iter()
                .map(|h| fledge_policy::HeaderMatch {
                    name: h.name,
                    matcher: match h.match_ {
                        w::StringMatch::Exact(s) => fledge_policy::StringMatch::Exact(s),
                        w::StringMatch::Prefix(s) => fledge_policy::StringMatch::Prefix(s),
                        w::StringMatch::Suffix(s) => fledge_policy::StringMatch::Suffix(s),
                        w::StringMatch::Regex(s) => fledge_policy::StringMatch::Regex(s),
                    },
                })
                .collect(),
        })
        .collect()
}

fn readiness_to_wit(r: &fledge_policy::Readiness) -> w::Readiness {
    match r {
        fledge_policy::Readiness::Ready => w::Readiness::Ready,
        fledge_policy::Readiness::NotReady(s) => w::Readiness::NotReady(s.clone()),
        fledge_policy::Readiness::DeadlineExceeded(s) => w::Readiness::DeadlineExceeded(s.clone()),
    }
}

pub fn input_to_wit(i: &fledge_policy::PolicyInput) -> w::PolicyInput {
    use fledge_policy as f;
    let a = &i.analysis;
    let s = &i.state;
    w::PolicyInput {
        canary: i.canary.clone(),
        strategy: match i.strategy {
            f::Strategy::Canary => w::Strategy::Canary,
            f::Strategy::BlueGreen => w::Strategy::BlueGreen,
            f::Strategy::AbTesting => w::Strategy::AbTesting,
        },
        analysis: w::Analysis {
            interval_seconds: a.interval_seconds,
            threshold: a.threshold,
            max_weight: a.max_weight,
            step_weight: a.step_weight,
            step_weights: a.step_weights.clone(),
            step_weight_promotion: a.step_weight_promotion,
            iterations: a.iterations,
            match_rules: rules_to_wit(&a.match_rules),
            mirror: a.mirror,
            mirror_weight: a.mirror_weight,
        },
        state: w::State {
            phase: match s.phase {
                f::Phase::Initializing => w::Phase::Initializing,
                f::Phase::Initialized => w::Phase::Initialized,
                f::Phase::Waiting => w::Phase::Waiting,
                f::Phase::Progressing => w::Phase::Progressing,
                f::Phase::WaitingPromotion => w::Phase::WaitingPromotion,
                f::Phase::Promoting => w::Phase::Promoting,
                f::Phase::Finalising => w::Phase::Finalising,
                f::Phase::Succeeded => w::Phase::Succeeded,
                f::Phase::Failed => w::Phase::Failed,
                f::Phase::Terminating => w::Phase::Terminating,
                f::Phase::Terminated => w::Phase::Terminated,
            },
            canary_weight: s.canary_weight,
            primary_weight: s.primary_weight,
            iteration: s.iteration,
            failed_checks: s.failed_checks,
            seconds_in_phase: s.seconds_in_phase,
        },
        metrics: i
            .metrics
            .iter()
            .map(|m| w::MetricResult {
                name: m.name.clone(),
                value: match &m.value {
                    f::MetricValue::Value(v) => Ok(*v),
                    f::MetricValue::Error(e) => Err(e.clone()),
                },
                min: m.min,
                max: m.max,
                unit: match m.unit {
                    f::MetricUnit::Percent => w::MetricUnit::Percent,
                    f::MetricUnit::Milliseconds => w::MetricUnit::Milliseconds,
                    f::MetricUnit::None => w::MetricUnit::None,
                },
            })
            .collect(),
        webhooks: i
            .webhooks
            .iter()
            .map(|h| w::WebhookResult {
                name: h.name.clone(),
                kind: match h.kind {
                    f::WebhookKind::ConfirmRollout => w::WebhookKind::ConfirmRollout,
                    f::WebhookKind::PreRollout => w::WebhookKind::PreRollout,
                    f::WebhookKind::Rollout => w::WebhookKind::Rollout,
                    f::WebhookKind::ConfirmTrafficIncrease => {
                        w::WebhookKind::ConfirmTrafficIncrease
                    }
                    f::WebhookKind::ConfirmPromotion => w::WebhookKind::ConfirmPromotion,
                    f::WebhookKind::PostRollout => w::WebhookKind::PostRollout,
                    f::WebhookKind::Rollback => w::WebhookKind::Rollback,
                    f::WebhookKind::Event => w::WebhookKind::Event,
                },
                passed: h.passed,
                message: h.message.clone(),
            })
            .collect(),
        canary_ready: readiness_to_wit(&i.canary_ready),
        primary_ready: readiness_to_wit(&i.primary_ready),
    }
}

pub fn decision_from_wit(d: w::Decision) -> fledge_policy::Decision {
    use fledge_policy as f;
    match d {
        w::Decision::Advance(a) => f::Decision::Advance(f::Advance {
            route: f::RoutePlan {
                primary_weight: a.route.primary_weight,
                canary_weight: a.route.canary_weight,
                match_rules: rules_from_wit(a.route.match_rules),
            },
            iteration: a.iteration,
        }),
        w::Decision::Hold(h) => f::Decision::Hold(f::Hold {
            reason: h.reason,
            failed_check: h.failed_check,
        }),
        w::Decision::Promote => f::Decision::Promote,
        w::Decision::Rollback(r) => f::Decision::Rollback(r),
        w::Decision::Wait(r) => f::Decision::Wait(r),
    }
}
