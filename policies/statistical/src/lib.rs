//! The built-in `statistical` rollout policy: Flagger's analysis, plus a
//! comparison of the canary with the primary instead of fixed thresholds,
//! with a Mann-Whitney U test per metric as Kayenta's judge does.
//!
//! Everything Flagger judges stays Flagger's judgement
//! (`fledge-policy-flagger`): step weights, webhooks, readiness, the
//! Canary's own metric checks, promotion, rollback at the threshold. When that
//! judgement would move the analysis forward (advance the weight or promote,
//! in phase Progressing or WaitingPromotion), this policy first compares a
//! range query over the canary's pods with the same query over the
//! primary's, for each configured metric, and may hold or roll back instead.
//! The first step (weight 0, before the canary has traffic) is not compared:
//! there is nothing to compare yet, as the host runs no metric checks then.
//!
//! # Config (`spec.config`, all strings)
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `metrics` | (required) | comma list of metric names (letters, digits, `-`, `_`; at most 8) |
//! | `<m>.query` | (required) | PromQL of metric `<m>`; `{{ workload }}` is replaced by the canary's Deployment (`{{ target }}`, the Canary's `targetRef`) for the canary series and by `{{ target }}-primary` for the primary series; the host then renders `{{ target }}` and the other MetricTemplate variables (`{{ namespace }}`, `{{ interval }}`, ...) |
//! | `<m>.direction` | `increase` | `increase`: higher is worse; `decrease`: lower is worse; `either` |
//! | `<m>.weight` | `1` | the metric's share of the score (a positive number) |
//! | `<m>.critical` | `false` | `true`: a failing verdict rolls back at once |
//! | `<m>.effect-size` | `1.0` | ratio of canary mean to primary mean that passes even when the difference is significant (at least 1): High needs ratio > effect-size, Low needs ratio < 1 / effect-size; `1.1` allows 10 % more (about 9 % less) |
//! | `confidence` | `0.95` | a difference is significant when p < 1 - confidence |
//! | `window` | `300` | seconds of each range query, ending at the step |
//! | `step` | `10` | seconds between samples |
//! | `pass-score` | `95` | score at or above which Flagger's decision stands |
//! | `marginal-score` | `75` | score at or above which (and below pass-score) the step holds as a failed check; below it, rollback |
//! | `workload` | `{{ target }}` | the name put for `{{ workload }}` in the canary series (`<workload>-primary` in the primary's) |
//!
//! # Verdicts
//!
//! Per metric: `NoData` (either series failed, is empty, or has no finite
//! sample), `Pass`, `High` or `Low`. The two-sided Mann-Whitney p-value
//! (normal approximation, tie and continuity corrected) says whether the
//! series differ; the Hodges-Lehmann shift (the median of differences canary
//! − primary, over at most 100 quantiles of each series) says which way. A
//! significant higher canary whose mean ratio exceeds the effect size is
//! `High`; `Low` is symmetric. `High` fails an `increase` or `either`
//! metric, `Low` a `decrease` or `either` one.
//!
//! Score = 100 × (weights of passing metrics) / (weights of metrics with
//! data). All `NoData`: hold without a failed check. A failing critical metric
//! or a score below `marginal-score`: rollback. Below `pass-score`: hold as a
//! failed check. Otherwise Flagger's decision stands. Bad config holds as a
//! failed check naming the key.
#![forbid(unsafe_code)]

pub mod config;
pub mod stats;

use config::{Config, Direction, Metric};
use fledge_policy::{Context, Decision, Phase, PolicyInput, RangeQuery, Sample};

#[cfg(feature = "component")]
fledge_policy::export_policy!(decide, queries = queries);

/// The range queries of this step: a canary and a primary series per
/// metric, only when Flagger's judgement would move the analysis forward.
pub fn queries(input: &PolicyInput, ctx: &Context) -> Vec<RangeQuery> {
    if !compared(input, &fledge_policy_flagger::decide(input)) {
        return Vec::new();
    }
    // Bad config asks for nothing; `decide` says what is wrong.
    let Ok(config) = Config::parse(ctx) else {
        return Vec::new();
    };
    let (canary, primary) = workloads(&config);
    config
        .metrics
        .iter()
        .flat_map(|m| {
            [(&canary, "canary"), (&primary, "primary")].map(|(workload, side)| {
                RangeQuery::new(
                    series_name(&m.name, side),
                    with_workload(&m.query, workload),
                    config.window,
                    config.step,
                )
            })
        })
        .collect()
}

/// Judges one analysis step.
pub fn decide(input: &PolicyInput, ctx: &Context) -> Decision {
    let flagger = fledge_policy_flagger::decide(input);
    if !moves_forward(input, &flagger) {
        return flagger;
    }
    let config = match Config::parse(ctx) {
        Ok(c) => c,
        Err(e) => return Decision::failed_check(format!("statistical policy: {e}")),
    };
    if first_step(input) {
        return flagger;
    }
    let verdicts: Vec<(&Metric, Verdict)> = config
        .metrics
        .iter()
        .map(|m| (m, verdict(m, ctx, config.confidence)))
        .collect();
    judge(&config, &verdicts).unwrap_or(flagger)
}

/// Whether `d` moves the analysis forward: an advance or promotion while
/// the analysis runs (not the traffic shift of a promotion under way).
fn moves_forward(input: &PolicyInput, d: &Decision) -> bool {
    matches!(
        input.state.phase,
        Phase::Progressing | Phase::WaitingPromotion
    ) && matches!(d, Decision::Advance(_) | Decision::Promote)
}

/// Before the first advance the canary has had no traffic to compare.
fn first_step(input: &PolicyInput) -> bool {
    input.state.canary_weight == 0 && input.state.iteration == 0
}

fn compared(input: &PolicyInput, d: &Decision) -> bool {
    moves_forward(input, d) && !first_step(input)
}

/// The canary's Deployment and the primary's: the Canary's `targetRef`
/// (`{{ target }}`, which the host renders) unless `workload` names it.
fn workloads(config: &Config) -> (String, String) {
    let canary = config.workload.as_deref().unwrap_or("{{ target }}");
    (canary.to_string(), format!("{canary}-primary"))
}

fn series_name(metric: &str, side: &str) -> String {
    format!("{metric}/{side}")
}

/// Whether `query` has a `{{ workload }}`.
pub fn has_workload(query: &str) -> bool {
    with_workload(query, "\u{0}") != query
}

/// `query` with each `{{ workload }}` (spaces and a leading dot optional,
/// as in the host's templates) replaced by `workload`; other actions are
/// left for the host.
pub fn with_workload(query: &str, workload: &str) -> String {
    let mut out = String::with_capacity(query.len() + workload.len());
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            break;
        };
        let expr = after[..end].trim().trim_start_matches('.').trim();
        out.push_str(&rest[..start]);
        if expr == "workload" {
            out.push_str(workload);
        } else {
            out.push_str(&rest[start..start + 2 + end + 2]);
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// One metric's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A series failed or had no finite sample: why.
    NoData(String),
    /// p-value and ratio of canary mean to primary mean.
    Pass {
        p: f64,
        ratio: f64,
    },
    High {
        p: f64,
        ratio: f64,
    },
    Low {
        p: f64,
        ratio: f64,
    },
}

impl Verdict {
    /// Whether this verdict counts against the canary for `direction`.
    pub fn fails(&self, direction: Direction) -> bool {
        match self {
            Verdict::High { .. } => direction != Direction::Decrease,
            Verdict::Low { .. } => direction != Direction::Increase,
            Verdict::NoData(_) | Verdict::Pass { .. } => false,
        }
    }

    fn describe(&self, name: &str) -> String {
        let (word, p, ratio) = match self {
            Verdict::NoData(why) => return format!("{name} NoData ({why})"),
            Verdict::Pass { p, ratio } => ("Pass", p, ratio),
            Verdict::High { p, ratio } => ("High", p, ratio),
            Verdict::Low { p, ratio } => ("Low", p, ratio),
        };
        let p = if *p >= 0.001 {
            format!("{p:.3}")
        } else {
            format!("{p:.1e}")
        };
        format!("{name} {word} (p={p}, ratio {ratio:.2})")
    }
}

/// The finite values of one series of metric `m`, or why there are none.
fn values(ctx: &Context, m: &Metric, side: &str) -> Result<Vec<f64>, String> {
    let samples: &[Sample] = ctx.series(&series_name(&m.name, side))?;
    let values: Vec<f64> = samples
        .iter()
        .map(|s| s.value)
        .filter(|v| v.is_finite())
        .collect();
    if values.is_empty() {
        return Err(format!("no {side} samples"));
    }
    Ok(values)
}

/// Compares the canary's series of `m` with the primary's.
pub fn verdict(m: &Metric, ctx: &Context, confidence: f64) -> Verdict {
    let (canary, primary) = match (values(ctx, m, "canary"), values(ctx, m, "primary")) {
        (Ok(c), Ok(p)) => (c, p),
        (Err(why), _) | (_, Err(why)) => return Verdict::NoData(why),
    };
    compare(&canary, &primary, confidence, m.effect_size)
}

/// The verdict on two non-empty samples of finite values.
pub fn compare(canary: &[f64], primary: &[f64], confidence: f64, effect_size: f64) -> Verdict {
    let test = stats::mann_whitney(canary, primary);
    let ratio = mean_ratio(stats::mean(canary), stats::mean(primary));
    let p = test.p;
    if p >= 1.0 - confidence {
        return Verdict::Pass { p, ratio };
    }
    let mut shift = stats::hodges_lehmann(canary, primary);
    if shift == 0.0 {
        shift = stats::median(canary) - stats::median(primary);
    }
    // A ratio that means nothing (a primary mean of 0 or below) cannot
    // excuse a significant difference.
    let beyond = |allowed: bool| !ratio.is_finite() || allowed;
    if shift > 0.0 && beyond(ratio > effect_size) {
        Verdict::High { p, ratio }
    } else if shift < 0.0 && beyond(ratio < 1.0 / effect_size) {
        Verdict::Low { p, ratio }
    } else {
        Verdict::Pass { p, ratio }
    }
}

/// Canary mean over primary mean: 1 when both are 0, not finite when the
/// primary's is 0 or below.
fn mean_ratio(canary: f64, primary: f64) -> f64 {
    if primary > 0.0 {
        canary / primary
    } else if primary == 0.0 && canary == 0.0 {
        1.0
    } else {
        f64::NAN
    }
}

/// The decision the verdicts call for, or `None` when Flagger's stands.
fn judge(config: &Config, verdicts: &[(&Metric, Verdict)]) -> Option<Decision> {
    let summary = verdicts
        .iter()
        .map(|(m, v)| v.describe(&m.name))
        .collect::<Vec<_>>()
        .join(", ");
    let with_data: Vec<&(&Metric, Verdict)> = verdicts
        .iter()
        .filter(|(_, v)| !matches!(v, Verdict::NoData(_)))
        .collect();
    if with_data.is_empty() {
        let why: Vec<String> = verdicts
            .iter()
            .map(|(m, v)| match v {
                Verdict::NoData(why) => format!("{} ({why})", m.name),
                _ => m.name.clone(),
            })
            .collect();
        return Some(Decision::halt(format!("no data for {}", why.join(", "))));
    }
    if let Some((m, _)) = with_data
        .iter()
        .find(|(m, v)| m.critical && v.fails(m.direction))
    {
        return Some(Decision::Rollback(format!(
            "critical metric {} failed: {summary}",
            m.name
        )));
    }
    let total = with_data.iter().fold(0.0, |a, (m, _)| a + m.weight);
    let passing: f64 = with_data
        .iter()
        .filter(|(m, v)| !v.fails(m.direction))
        .map(|(m, _)| m.weight)
        .fold(0.0, |a, w| a + w);
    let score = 100.0 * passing / total;
    // Rounded down to one decimal: a score just below a bar never prints as the bar.
    let shown = (score * 10.0).floor() / 10.0;
    if score < config.marginal_score {
        Some(Decision::Rollback(format!(
            "statistical score {shown} < marginal {}: {summary}",
            config.marginal_score
        )))
    } else if score < config.pass_score {
        Some(Decision::failed_check(format!(
            "statistical score {shown} < pass {}: {summary}",
            config.pass_score
        )))
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
