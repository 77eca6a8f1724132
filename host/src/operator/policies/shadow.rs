//! Shadow mode: policies that judge every decision of the enforcing policy,
//! on the same [`PolicyInput`] and [`Context`], without ever changing what
//! is done.
//!
//! [`Shadowed`] is the [`Judge`] the core sees. Its decisions are the
//! enforcing judge's, unchanged; each shadow policy is asked after it, and
//! what it would have decided is kept as a [`Verdict`] for the shell to
//! report (an Event, a log line, a counter). A shadow that traps, times out
//! or returns an invalid decision is a verdict too, never a decision.
//!
//! Range queries (`metric-query`): [`Shadowed::queries`] asks the enforcing
//! policy's queries and then every shadow's, each shadow's renamed with a
//! prefix of its own, so the shell answers them all in one
//! `Request::Series`; [`Shadowed::decide`] then hands each policy only the
//! answers to its own queries, under the names it asked for.
use crate::core::agree::{agree, effective};
use crate::core::{Judge, JudgeError};
use crate::operator::status::PolicyInForce;
use fledge_policy::{Context, Decision, PolicyInput, RangeQuery, Series};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One shadow-mode policy.
pub struct Shadow<'a> {
    /// The `policy` label of its series on `/metrics`
    /// (`RolloutPolicy/<ns>/<name>` or `ClusterRolloutPolicy/<name>`).
    pub label: String,
    /// Its policy object and component, as its Events name them.
    pub record: PolicyInForce,
    pub judge: &'a (dyn Judge + Sync),
}

/// What a shadow policy would have decided for one step, beside what the
/// enforcing policy did.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub label: String,
    pub record: PolicyInForce,
    /// The enforcing policy's decision as the core takes it (a failed
    /// enforcing policy counts as the failed check the core makes of it).
    pub enforced: Decision,
    /// The shadow's decision, or why it gave none.
    pub shadow: Result<Decision, String>,
    /// How long the shadow's `decide` took.
    pub took: Duration,
}

impl Verdict {
    /// True when the shadow decided what was enforced ([`agree`]); a shadow
    /// that gave no decision never agrees.
    pub fn agrees(&self) -> bool {
        matches!(&self.shadow, Ok(d) if agree(&self.enforced, d))
    }

    /// The decision kind of the shadow: `advance`, `hold`, ... or `error`.
    pub fn shadow_kind(&self) -> &'static str {
        match &self.shadow {
            Ok(d) => kind(d),
            Err(_) => "error",
        }
    }

    pub fn enforced_kind(&self) -> &'static str {
        kind(&self.enforced)
    }

    /// The Event note of a disagreement, e.g. `shadow policy
    /// RolloutPolicy/strict-v2 would roll back (failed checks threshold
    /// reached 1); enforced: hold (success rate 69.17% < 99%)`.
    pub fn note(&self) -> String {
        let name = format!("{}/{}", self.record.kind, self.record.name);
        let would = match &self.shadow {
            Ok(d) => format!("would {}", describe(d)),
            Err(why) => format!("failed ({why})"),
        };
        format!(
            "shadow policy {name} {would}; enforced: {}",
            describe(&self.enforced)
        )
    }
}

/// The decision's case in the WIT contract.
fn kind(d: &Decision) -> &'static str {
    crate::operator::telemetry::decision(d)
}

fn describe(d: &Decision) -> String {
    match d {
        Decision::Advance(a) if a.route.match_rules.is_empty() => format!(
            "advance (canary weight {}, iteration {})",
            a.route.canary_weight, a.iteration
        ),
        Decision::Advance(a) => format!(
            "advance (canary weight {}, {} match rules, iteration {})",
            a.route.canary_weight,
            a.route.match_rules.len(),
            a.iteration
        ),
        Decision::Hold(h) if h.failed_check => format!("hold, a failed check ({})", h.reason),
        Decision::Hold(h) => format!("hold ({})", h.reason),
        Decision::Promote => "promote".into(),
        Decision::Rollback(why) => format!("roll back ({why})"),
        Decision::Wait(why) => format!("wait ({why})"),
    }
}

/// The names shadow `index`'s range queries are asked under.
fn prefix(index: usize) -> String {
    format!("shadow/{index}/")
}

/// The enforcing judge with shadow policies beside it.
pub struct Shadowed<'a> {
    enforcing: &'a (dyn Judge + Sync),
    shadows: Vec<Shadow<'a>>,
    /// Per shadow, from the last [`Judge::queries`]: the names its queries
    /// were asked under, or why it has none.
    asked: Mutex<Vec<Result<Vec<String>, String>>>,
    verdicts: Mutex<Vec<Verdict>>,
}

impl<'a> Shadowed<'a> {
    pub fn new(enforcing: &'a (dyn Judge + Sync), shadows: Vec<Shadow<'a>>) -> Shadowed<'a> {
        Shadowed {
            enforcing,
            shadows,
            asked: Mutex::default(),
            verdicts: Mutex::default(),
        }
    }

    /// The verdicts of the last decision (one per shadow), taken out.
    pub fn take_verdicts(&self) -> Vec<Verdict> {
        std::mem::take(&mut *self.verdicts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn shadow_queries(
        &self,
        index: usize,
        shadow: &Shadow<'_>,
        input: &PolicyInput,
        ctx: &Context,
        taken: &[RangeQuery],
    ) -> Result<Vec<RangeQuery>, String> {
        let own = shadow.judge.queries(input, ctx).map_err(|e| e.0)?;
        let prefix = prefix(index);
        let renamed: Vec<RangeQuery> = own
            .into_iter()
            .map(|q| RangeQuery {
                name: format!("{prefix}{}", q.name),
                ..q
            })
            .collect();
        // The enforcing policy's names are never shadowed: its answers stay its own.
        if let Some(q) = renamed
            .iter()
            .find(|q| taken.iter().any(|t| t.name == q.name))
        {
            return Err(format!(
                "its range query {} has the name of one of the enforcing policy's, so it was not asked",
                &q.name[prefix.len()..]
            ));
        }
        Ok(renamed)
    }
}

/// `series` named in `names`, under their names without `prefix`.
fn own_series(series: &[Series], names: &[String], prefix: &str) -> Vec<Series> {
    series
        .iter()
        .filter(|s| names.contains(&s.name))
        .map(|s| Series {
            name: s.name[prefix.len()..].to_string(),
            samples: s.samples.clone(),
        })
        .collect()
}

impl Judge for Shadowed<'_> {
    fn queries(&self, input: &PolicyInput, ctx: &Context) -> Result<Vec<RangeQuery>, JudgeError> {
        // The enforcing policy's failure is the step's, exactly as without shadows.
        let mut all = self.enforcing.queries(input, ctx)?;
        let mut asked = Vec::with_capacity(self.shadows.len());
        for (i, s) in self.shadows.iter().enumerate() {
            match self.shadow_queries(i, s, input, ctx, &all) {
                Ok(qs) => {
                    asked.push(Ok(qs.iter().map(|q| q.name.clone()).collect()));
                    all.extend(qs);
                }
                Err(why) => asked.push(Err(why)),
            }
        }
        *self.asked.lock().unwrap_or_else(|p| p.into_inner()) = asked;
        Ok(all)
    }

    fn decide(&self, input: &PolicyInput, ctx: &Context) -> Result<Decision, JudgeError> {
        // Without shadows the context is the enforcing policy's alone.
        if self.shadows.is_empty() {
            return self.enforcing.decide(input, ctx);
        }
        let asked = std::mem::take(&mut *self.asked.lock().unwrap_or_else(|p| p.into_inner()));
        let shadows_ask: Vec<&String> = asked.iter().flatten().flatten().collect();
        // Built field by field: `..ctx.clone()` would copy every series
        // only to drop them.
        let enforcing_ctx = Context {
            now: ctx.now,
            config: ctx.config.clone(),
            series: ctx
                .series
                .iter()
                .filter(|s| !shadows_ask.contains(&&s.name))
                .cloned()
                .collect(),
        };
        let decided = self.enforcing.decide(input, &enforcing_ctx);
        let enforced = effective(decided.as_ref().map_err(|e| e.0.as_str()));
        let mut verdicts = Vec::with_capacity(self.shadows.len());
        for (i, s) in self.shadows.iter().enumerate() {
            let started = Instant::now();
            let shadow = match asked.get(i) {
                Some(Err(why)) => Err(why.clone()),
                names => {
                    let names = names.and_then(|n| n.as_ref().ok());
                    let shadow_ctx = Context {
                        now: ctx.now,
                        config: ctx.config.clone(),
                        series: own_series(
                            &ctx.series,
                            names.map(Vec::as_slice).unwrap_or_default(),
                            &prefix(i),
                        ),
                    };
                    s.judge.decide(input, &shadow_ctx).map_err(|e| e.0)
                }
            };
            verdicts.push(Verdict {
                label: s.label.clone(),
                record: s.record.clone(),
                enforced: enforced.clone(),
                shadow,
                took: started.elapsed(),
            });
        }
        *self.verdicts.lock().unwrap_or_else(|p| p.into_inner()) = verdicts;
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Policy, PolicyRuntime, RuntimeConfig};
    use crate::simulate::{self, scenario};
    use fledge_policy::Sample;

    const GUIDE: &str = include_str!("../../../../examples/podinfo/canary.yaml");
    const PROMOTE: &str = include_str!("../../../../examples/scenarios/promote.yaml");
    const ROLLBACK: &str = include_str!("../../../../examples/scenarios/rollback.yaml");
    const STEP: &str = include_str!("../../../../examples/policies/step.json");

    fn fixture(runtime: &PolicyRuntime, name: &str) -> Policy {
        let path = std::path::Path::new(env!("FLEDGE_FIXTURE_DIR")).join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        runtime.load(&bytes).unwrap()
    }

    fn shadow<'a>(name: &str, judge: &'a (dyn Judge + Sync)) -> Shadow<'a> {
        Shadow {
            label: format!("RolloutPolicy/test/{name}"),
            record: PolicyInForce {
                kind: "RolloutPolicy".into(),
                name: name.into(),
                digest: format!("sha256:{name}"),
            },
            judge,
        }
    }

    /// Rolls back whatever it sees.
    struct Reckless;
    impl Judge for Reckless {
        fn decide(&self, _: &PolicyInput, _: &Context) -> Result<Decision, JudgeError> {
            Ok(Decision::Rollback("too careful by half".into()))
        }
    }

    /// Records what it was handed.
    #[derive(Default)]
    struct Asking {
        name: &'static str,
        seen: Mutex<Vec<Vec<(String, usize)>>>,
    }
    impl Judge for Asking {
        fn queries(&self, _: &PolicyInput, _: &Context) -> Result<Vec<RangeQuery>, JudgeError> {
            Ok(vec![
                RangeQuery::new("rate", format!("rate_of_{}", self.name), 60, 10),
                RangeQuery::new("errors", "errors", 60, 10),
            ])
        }
        fn decide(&self, _: &PolicyInput, ctx: &Context) -> Result<Decision, JudgeError> {
            let seen = ctx
                .series
                .iter()
                .map(|s| (s.name.clone(), s.samples.as_ref().map_or(0, Vec::len)))
                .collect();
            self.seen.lock().unwrap().push(seen);
            Ok(Decision::halt(self.name))
        }
    }

    fn run(judge: &dyn Judge, scenario: &str) -> simulate::Report {
        let inputs = simulate::load::load("canary.yaml", GUIDE, &[]).unwrap();
        simulate::run(&inputs, scenario::parse(scenario).unwrap(), judge)
    }

    #[test]
    fn shadows_never_change_what_is_done() {
        let runtime = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
        let builtin = runtime.builtin().unwrap();
        let panic = fixture(&runtime, "panic");
        let bad_weight = fixture(&runtime, "bad-weight");
        let endless = fixture(&runtime, "endless-loop");
        for scenario in [PROMOTE, ROLLBACK] {
            let alone = run(&builtin, scenario);
            let shadowed = Shadowed::new(
                &builtin,
                vec![
                    shadow("reckless", &Reckless),
                    shadow("panic", &panic),
                    shadow("bad-weight", &bad_weight),
                    shadow("endless-loop", &endless),
                ],
            );
            let beside = run(&shadowed, scenario);
            assert_eq!(beside.records, alone.records, "the same Events and weights");
            assert_eq!(beside.alerts, alone.alerts);
            assert_eq!((beside.phase, beside.steps), (alone.phase, alone.steps));
            let verdicts = shadowed.take_verdicts();
            assert_eq!(verdicts.len(), 4, "one verdict per shadow");
            assert!(verdicts.iter().all(|v| !v.agrees()), "{verdicts:#?}");
            assert_eq!(verdicts[0].shadow_kind(), "rollback");
            for v in &verdicts[1..] {
                assert_eq!(v.shadow_kind(), "error", "{v:?}");
            }
        }
    }

    #[test]
    fn a_shadow_that_agrees_is_told_apart_from_one_that_does_not() {
        let runtime = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
        let builtin = runtime.builtin().unwrap();
        let input: PolicyInput = serde_json::from_str(STEP).unwrap();
        let shadowed = Shadowed::new(
            &builtin,
            vec![shadow("same", &builtin), shadow("reckless", &Reckless)],
        );
        let ctx = Context::at(1_700_000_000);
        let decided = shadowed.decide(&input, &ctx).unwrap();
        assert_eq!(decided, builtin.evaluate_in(&input, &ctx).unwrap());
        let v = shadowed.take_verdicts();
        assert!(v[0].agrees(), "{v:?}");
        assert!(!v[1].agrees());
        assert_eq!(v[1].enforced_kind(), kind(&decided));
        let note = v[1].note();
        assert!(
            note.starts_with(
                "shadow policy RolloutPolicy/reckless would roll back (too careful by half); enforced: "
            ),
            "{note}"
        );
        assert!(shadowed.take_verdicts().is_empty(), "taken once");
    }

    #[test]
    fn each_policy_gets_the_answers_to_its_own_queries() {
        let enforcing = Asking {
            name: "enforcing",
            ..Default::default()
        };
        let (a, b) = (
            Asking {
                name: "a",
                ..Default::default()
            },
            Asking {
                name: "b",
                ..Default::default()
            },
        );
        let shadowed = Shadowed::new(&enforcing, vec![shadow("a", &a), shadow("b", &b)]);
        let input: PolicyInput = serde_json::from_str(STEP).unwrap();
        let ctx = Context::at(1_700_000_000);
        let asked = shadowed.queries(&input, &ctx).unwrap();
        let names: Vec<&str> = asked.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "rate",
                "errors",
                "shadow/0/rate",
                "shadow/0/errors",
                "shadow/1/rate",
                "shadow/1/errors"
            ]
        );
        assert_eq!(asked[2].query, "rate_of_a", "the shadow's own query text");
        // The answers, each with as many samples as its position, as the shell returns them.
        let mut answered = ctx.clone();
        for (i, q) in asked.iter().enumerate() {
            let samples = (0..=i as i64)
                .map(|t| Sample {
                    timestamp: t,
                    value: 1.0,
                })
                .collect();
            answered = answered.with_series(q.name.clone(), samples);
        }
        let decided = shadowed.decide(&input, &answered).unwrap();
        assert_eq!(decided, Decision::halt("enforcing"));
        let seen = |j: &Asking| j.seen.lock().unwrap().clone();
        let own =
            |r: usize, e: usize| vec![vec![("rate".to_string(), r), ("errors".to_string(), e)]];
        assert_eq!(seen(&enforcing), own(1, 2));
        assert_eq!(seen(&a), own(3, 4));
        assert_eq!(seen(&b), own(5, 6));
        let verdicts = shadowed.take_verdicts();
        assert!(verdicts
            .iter()
            .all(|v| v.shadow_kind() == "hold" && v.agrees()));
    }

    #[test]
    fn a_shadow_whose_queries_fail_is_an_error_and_the_enforcing_policy_decides() {
        let runtime = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
        let builtin = runtime.builtin().unwrap();
        /// Asks for more than the host allows.
        struct Greedy;
        impl Judge for Greedy {
            fn queries(&self, _: &PolicyInput, _: &Context) -> Result<Vec<RangeQuery>, JudgeError> {
                Err(JudgeError(
                    "17 range queries, at most 16 per decision".into(),
                ))
            }
            fn decide(&self, _: &PolicyInput, _: &Context) -> Result<Decision, JudgeError> {
                Ok(Decision::Promote)
            }
        }
        let shadowed = Shadowed::new(&builtin, vec![shadow("greedy", &Greedy)]);
        let input: PolicyInput = serde_json::from_str(STEP).unwrap();
        let ctx = Context::at(1_700_000_000);
        assert!(shadowed.queries(&input, &ctx).unwrap().is_empty());
        let decided = shadowed.decide(&input, &ctx).unwrap();
        assert_eq!(decided, builtin.evaluate_in(&input, &ctx).unwrap());
        let v = shadowed.take_verdicts();
        assert_eq!(v[0].shadow_kind(), "error");
        assert!(
            v[0].note().contains("failed (17 range queries"),
            "{}",
            v[0].note()
        );
    }
}
