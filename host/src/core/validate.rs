//! Checks a policy's decision against the step it answers, before the core acts
//! on it. A policy is untrusted code: whatever it returns must describe a route
//! the mesh can apply and a move the rollout may make.
//!
//! Pure: no wasmtime, no I/O. The judges (native and Wasm) validate with it,
//! and the state machine checks every decision with it again whatever judged
//! it, so the rules live in one place.
use fledge_policy::{Decision, MatchRule, Phase, PolicyInput, Strategy, StringMatch};

/// Longest reason text (hold, rollback, wait) a decision may carry; it ends up
/// in a Kubernetes event, which has its own limits.
pub const MAX_REASON_BYTES: usize = 1024;
/// Most match rules one route plan may carry.
pub const MAX_MATCH_RULES: usize = 32;
/// Most header conditions one match rule may carry.
pub const MAX_HEADERS_PER_RULE: usize = 16;
/// Longest header name (HTTP/2 implementations commonly cap header lists far
/// above this; a name this long is a bug, not a header).
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Longest match value or regex source.
pub const MAX_MATCH_VALUE_BYTES: usize = 1024;
/// Compiled-size cap for a match regex, so a hostile pattern cannot make the
/// validator itself expensive.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a decision was refused. Each message names the offending value and the
/// rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDecision {
    #[error("{which} weight {weight} is outside 0..=100")]
    WeightOutOfRange { which: &'static str, weight: u32 },
    #[error("weights do not add up to 100: primary {primary} + canary {canary}")]
    WeightsDoNotAddUp { primary: u32, canary: u32 },
    #[error("canary weight {weight} is above the maximum weight {max} of this analysis")]
    AboveMaxWeight { weight: u32, max: u32 },
    #[error(
        "promotion refused: {failed_checks} failed checks reached the threshold of {threshold}"
    )]
    PromoteOverThreshold { failed_checks: u32, threshold: u32 },
    #[error("iteration {got} is neither the current iteration {current} nor the next one")]
    Iteration { got: u32, current: u32 },
    #[error("match rule {rule}: {problem}")]
    MatchRule { rule: usize, problem: String },
    #[error("match rules are for A/B tests; a {strategy} rollout routes by weight alone")]
    MatchRulesWithoutAbTest { strategy: &'static str },
    #[error("canary weight {weight} is above the {current} it had when promotion began: promotion only moves traffic to the primary")]
    PromotionRaisesCanary { weight: u32, current: u32 },
    #[error("{count} match rules is more than the {MAX_MATCH_RULES} allowed")]
    TooManyMatchRules { count: usize },
    #[error("{kind} reason is empty")]
    EmptyReason { kind: &'static str },
    #[error("{kind} reason is {len} bytes, more than the {MAX_REASON_BYTES} allowed")]
    ReasonTooLong { kind: &'static str, len: usize },
}

/// Accepts `decision` as an answer to `input`, or says why not.
pub fn validate_decision(input: &PolicyInput, decision: &Decision) -> Result<(), InvalidDecision> {
    match decision {
        Decision::Advance(advance) => {
            let route = &advance.route;
            for (which, weight) in [
                ("primary", route.primary_weight),
                ("canary", route.canary_weight),
            ] {
                if weight > 100 {
                    return Err(InvalidDecision::WeightOutOfRange { which, weight });
                }
            }
            if route.primary_weight + route.canary_weight != 100 {
                return Err(InvalidDecision::WeightsDoNotAddUp {
                    primary: route.primary_weight,
                    canary: route.canary_weight,
                });
            }
            // The maximum bounds the analysis only; promotion and blue/green
            // cut-over legitimately route everything.
            let analysing = matches!(
                input.state.phase,
                Phase::Progressing | Phase::WaitingPromotion
            );
            let max = input.analysis.effective_max_weight();
            if input.strategy == Strategy::Canary && analysing && route.canary_weight > max {
                return Err(InvalidDecision::AboveMaxWeight {
                    weight: route.canary_weight,
                    max,
                });
            }
            if input.state.phase == Phase::Promoting
                && route.canary_weight > input.state.canary_weight
            {
                return Err(InvalidDecision::PromotionRaisesCanary {
                    weight: route.canary_weight,
                    current: input.state.canary_weight,
                });
            }
            // A weighted or blue/green rollout has no header routes to keep
            // the rest of the traffic on the primary: rules there would be
            // silently dropped by the router, or worse, honoured by one mesh only.
            if !route.match_rules.is_empty() && input.strategy != Strategy::AbTesting {
                return Err(InvalidDecision::MatchRulesWithoutAbTest {
                    strategy: match input.strategy {
                        Strategy::Canary => "weighted canary",
                        Strategy::BlueGreen => "blue/green",
                        Strategy::AbTesting => "A/B",
                    },
                });
            }
            let current = input.state.iteration;
            if advance.iteration != current && Some(advance.iteration) != current.checked_add(1) {
                return Err(InvalidDecision::Iteration {
                    got: advance.iteration,
                    current,
                });
            }
            validate_match_rules(&route.match_rules)
        }
        Decision::Promote => {
            let threshold = input.analysis.threshold.max(1);
            if input.state.failed_checks >= threshold {
                return Err(InvalidDecision::PromoteOverThreshold {
                    failed_checks: input.state.failed_checks,
                    threshold,
                });
            }
            Ok(())
        }
        Decision::Hold(hold) => validate_reason("hold", &hold.reason),
        Decision::Rollback(reason) => validate_reason("rollback", reason),
        Decision::Wait(reason) => validate_reason("wait", reason),
    }
}

fn validate_reason(kind: &'static str, reason: &str) -> Result<(), InvalidDecision> {
    if reason.trim().is_empty() {
        return Err(InvalidDecision::EmptyReason { kind });
    }
    if reason.len() > MAX_REASON_BYTES {
        return Err(InvalidDecision::ReasonTooLong {
            kind,
            len: reason.len(),
        });
    }
    Ok(())
}

/// Rules the mesh can express: every rule has at least one condition (an empty
/// rule would match every request), names are real header names, and regexes compile.
pub fn validate_match_rules(rules: &[MatchRule]) -> Result<(), InvalidDecision> {
    if rules.len() > MAX_MATCH_RULES {
        return Err(InvalidDecision::TooManyMatchRules { count: rules.len() });
    }
    for (rule, r) in rules.iter().enumerate() {
        let bad = |problem: String| InvalidDecision::MatchRule { rule, problem };
        if r.headers.is_empty() {
            return Err(bad(
                "no header conditions (it would match every request)".into()
            ));
        }
        if r.headers.len() > MAX_HEADERS_PER_RULE {
            return Err(bad(format!(
                "{} header conditions, more than the {MAX_HEADERS_PER_RULE} allowed",
                r.headers.len()
            )));
        }
        for h in &r.headers {
            if h.name.is_empty() {
                return Err(bad("a header name is empty".into()));
            }
            if h.name.len() > MAX_HEADER_NAME_BYTES {
                return Err(bad(format!(
                    "header name is {} bytes, more than the {MAX_HEADER_NAME_BYTES} allowed",
                    h.name.len()
                )));
            }
            // RFC 9110 token characters; the mesh rejects anything else.
            if let Some(c) = h.name.chars().find(|c| !is_token_char(*c)) {
                return Err(bad(format!(
                    "header name {:?} contains {c:?}, which is not allowed in a header name",
                    h.name
                )));
            }
            let (kind, value) = match &h.matcher {
                StringMatch::Exact(v) => ("exact", v),
                StringMatch::Prefix(v) => ("prefix", v),
                StringMatch::Suffix(v) => ("suffix", v),
                StringMatch::Regex(v) => ("regex", v),
            };
            if value.len() > MAX_MATCH_VALUE_BYTES {
                return Err(bad(format!(
                    "{kind} value for header {} is {} bytes, more than the {MAX_MATCH_VALUE_BYTES} allowed",
                    h.name,
                    value.len()
                )));
            }
            if let StringMatch::Regex(pattern) = &h.matcher {
                regex::RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        bad(format!(
                            "regex {pattern:?} for header {} does not compile: {e}",
                            h.name
                        ))
                    })?;
            }
        }
    }
    Ok(())
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_policy::*;

    /// The guide's Canary at weight 10, iteration 3.
    fn input() -> PolicyInput {
        let mut input = testing::guide_input();
        input.state.canary_weight = 10;
        input.state.primary_weight = 90;
        input.state.iteration = 3;
        input
    }

    fn advance(canary: u32, primary: u32, iteration: u32) -> Decision {
        Decision::Advance(Advance {
            route: RoutePlan {
                primary_weight: primary,
                canary_weight: canary,
                match_rules: vec![],
            },
            iteration,
        })
    }

    fn header(name: &str, m: StringMatch) -> MatchRule {
        MatchRule {
            headers: vec![HeaderMatch {
                name: name.into(),
                matcher: m,
            }],
        }
    }

    #[test]
    fn accepts_a_normal_step() {
        assert_eq!(validate_decision(&input(), &advance(15, 85, 3)), Ok(()));
        assert_eq!(validate_decision(&input(), &advance(15, 85, 4)), Ok(()));
        assert_eq!(validate_decision(&input(), &Decision::Promote), Ok(()));
        assert_eq!(
            validate_decision(
                &input(),
                &Decision::failed_check("success rate 69.17% < 99%")
            ),
            Ok(())
        );
    }

    #[test]
    fn rejects_weights_out_of_range_or_not_adding_up() {
        assert_eq!(
            validate_decision(&input(), &advance(150, 0, 3)),
            Err(InvalidDecision::WeightOutOfRange {
                which: "canary",
                weight: 150
            })
        );
        assert_eq!(
            validate_decision(&input(), &advance(20, 70, 3)),
            Err(InvalidDecision::WeightsDoNotAddUp {
                primary: 70,
                canary: 20
            })
        );
        // u32 overflow must not wrap into a sum of 100.
        assert!(validate_decision(&input(), &advance(u32::MAX, 101, 3)).is_err());
    }

    #[test]
    fn max_weight_binds_the_canary_analysis_only() {
        assert_eq!(
            validate_decision(&input(), &advance(55, 45, 3)),
            Err(InvalidDecision::AboveMaxWeight {
                weight: 55,
                max: 50
            })
        );
        // Blue/green promotes from 100 % on the canary.
        let mut promoting = input();
        promoting.state.phase = Phase::Promoting;
        promoting.state.canary_weight = 100;
        promoting.state.primary_weight = 0;
        assert_eq!(validate_decision(&promoting, &advance(100, 0, 3)), Ok(()));
        let mut blue_green = input();
        blue_green.strategy = Strategy::BlueGreen;
        blue_green.analysis.iterations = Some(10);
        assert_eq!(validate_decision(&blue_green, &advance(100, 0, 4)), Ok(()));
        // stepWeights wins over maxWeight.
        let mut steps = input();
        steps.analysis.step_weights = vec![1, 2, 80];
        assert_eq!(validate_decision(&steps, &advance(80, 20, 3)), Ok(()));
    }

    #[test]
    fn refuses_promotion_at_the_threshold() {
        let mut failing = input();
        failing.state.failed_checks = 5;
        let err = validate_decision(&failing, &Decision::Promote).unwrap_err();
        assert_eq!(
            err.to_string(),
            "promotion refused: 5 failed checks reached the threshold of 5"
        );
        failing.state.failed_checks = 4;
        assert_eq!(validate_decision(&failing, &Decision::Promote), Ok(()));
    }

    #[test]
    fn iteration_moves_by_at_most_one() {
        assert_eq!(
            validate_decision(&input(), &advance(15, 85, 5)),
            Err(InvalidDecision::Iteration { got: 5, current: 3 })
        );
        assert!(validate_decision(&input(), &advance(15, 85, 2)).is_err());
        let mut at_max = input();
        at_max.state.iteration = u32::MAX;
        assert_eq!(
            validate_decision(&at_max, &advance(15, 85, u32::MAX)),
            Ok(())
        );
    }

    #[test]
    fn reasons_are_non_empty_and_bounded() {
        assert_eq!(
            validate_decision(&input(), &Decision::Rollback("  ".into())),
            Err(InvalidDecision::EmptyReason { kind: "rollback" })
        );
        assert_eq!(
            validate_decision(&input(), &Decision::Wait("x".repeat(2000))),
            Err(InvalidDecision::ReasonTooLong {
                kind: "wait",
                len: 2000
            })
        );
        assert!(validate_decision(&input(), &Decision::halt("")).is_err());
    }

    #[test]
    fn match_rules_must_be_well_formed() {
        let guide = [
            header("x-canary", StringMatch::Exact("insider".into())),
            header(
                "cookie",
                StringMatch::Regex("^(.*?;)?(canary=insider)(;.*)?$".into()),
            ),
        ];
        assert_eq!(validate_match_rules(&guide), Ok(()));

        let err = validate_match_rules(&[header("", StringMatch::Exact("a".into()))]);
        assert!(matches!(
            err,
            Err(InvalidDecision::MatchRule { rule: 0, .. })
        ));
        let err = validate_match_rules(&[header("x a", StringMatch::Exact("a".into()))]);
        assert!(err.is_err());
        let err = validate_match_rules(&[MatchRule::default()]).unwrap_err();
        assert!(err.to_string().contains("match every request"), "{err}");
        let err = validate_match_rules(&[
            guide[0].clone(),
            header("cookie", StringMatch::Regex("(unclosed".into())),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("match rule 1: regex \"(unclosed\""),
            "{err}"
        );
        let many = vec![guide[0].clone(); MAX_MATCH_RULES + 1];
        assert!(matches!(
            validate_match_rules(&many),
            Err(InvalidDecision::TooManyMatchRules { .. })
        ));
        let long = header(
            "x",
            StringMatch::Prefix("a".repeat(MAX_MATCH_VALUE_BYTES + 1)),
        );
        assert!(validate_match_rules(&[long]).is_err());
    }

    #[test]
    fn match_rules_belong_to_ab_tests_only() {
        let rule = header("x-canary", StringMatch::Exact("insider".into()));
        let mut d = advance(20, 80, 3);
        if let Decision::Advance(a) = &mut d {
            a.route.match_rules = vec![rule];
        }
        assert_eq!(
            validate_decision(&input(), &d),
            Err(InvalidDecision::MatchRulesWithoutAbTest {
                strategy: "weighted canary"
            })
        );
        let mut ab = input();
        ab.strategy = Strategy::AbTesting;
        assert_eq!(validate_decision(&ab, &d), Ok(()));
    }

    #[test]
    fn promotion_never_raises_the_canary_share() {
        let mut promoting = input();
        promoting.state.phase = Phase::Promoting;
        assert_eq!(
            validate_decision(&promoting, &advance(20, 80, 3)),
            Err(InvalidDecision::PromotionRaisesCanary {
                weight: 20,
                current: 10
            })
        );
        assert_eq!(validate_decision(&promoting, &advance(5, 95, 3)), Ok(()));
    }
}
