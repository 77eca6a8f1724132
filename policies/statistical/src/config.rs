//! The policy object's `spec.config`, read and checked: every error names
//! the key and says what it accepts.
use fledge_policy::Context;

/// Metrics one policy compares at most: two range queries each, within the
/// host's 16 queries per decision.
pub const MAX_METRICS: usize = 8;
/// The host's bounds on range query answers (`policy::check_queries`).
const MAX_POINTS_PER_QUERY: u64 = 1_100;
const MAX_POINTS_PER_DECISION: u64 = 11_000;

/// Keys of one metric, `<metric>.<key>`.
const METRIC_KEYS: &[&str] = &["query", "direction", "weight", "critical", "effect-size"];
/// Keys of the whole policy.
const POLICY_KEYS: &[&str] = &[
    "metrics",
    "confidence",
    "window",
    "step",
    "pass-score",
    "marginal-score",
    "workload",
];

/// Which way of a significant difference counts against the canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Higher is worse (latency, errors).
    Increase,
    /// Lower is worse (throughput, success rate).
    Decrease,
    /// Any significant difference is worse.
    Either,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub name: String,
    /// PromQL with `{{ workload }}` where the Deployment's name goes.
    pub query: String,
    pub direction: Direction,
    pub weight: f64,
    /// A failing verdict rolls back at once.
    pub critical: bool,
    /// The ratio of canary mean to primary mean that passes even when the
    /// difference is significant (its reciprocal for a decrease).
    pub effect_size: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub metrics: Vec<Metric>,
    pub confidence: f64,
    pub window: u32,
    pub step: u32,
    pub pass_score: f64,
    pub marginal_score: f64,
    /// The canary's Deployment, when it is not named like the Canary.
    pub workload: Option<String>,
}

impl Config {
    pub fn parse(ctx: &Context) -> Result<Config, String> {
        let list = ctx.config("metrics").ok_or(
            "config metrics: missing; list the metrics to compare, e.g. metrics: latency,errors",
        )?;
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Err("config metrics: empty; list the metrics to compare, e.g. latency".into());
        }
        if names.len() > MAX_METRICS {
            return Err(format!(
                "config metrics: {} metrics, more than the {MAX_METRICS} allowed (two range queries each)",
                names.len()
            ));
        }
        for (i, n) in names.iter().enumerate() {
            if !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "config metrics: `{n}` is not a metric name; use letters, digits, - and _"
                ));
            }
            if names[..i].contains(n) {
                return Err(format!("config metrics: `{n}` is listed twice"));
            }
        }
        for key in ctx.config.keys() {
            let known = match key.split_once('.') {
                Some((m, k)) => names.contains(&m) && METRIC_KEYS.contains(&k),
                None => POLICY_KEYS.contains(&key.as_str()),
            };
            if !known {
                return Err(format!(
                    "config {key}: unknown key; the keys are {}, and <metric>.{} for each of metrics",
                    POLICY_KEYS.join(", "),
                    METRIC_KEYS.join("|")
                ));
            }
        }
        let metrics = names
            .iter()
            .map(|n| metric(ctx, n))
            .collect::<Result<Vec<_>, _>>()?;
        let confidence = number(ctx, "confidence", 0.95)?;
        if !(confidence > 0.0 && confidence < 1.0) {
            return Err(format!(
                "config confidence: {confidence} is not between 0 and 1; use e.g. 0.95"
            ));
        }
        let window = whole(ctx, "window", 300)?;
        let step = whole(ctx, "step", 10)?;
        if step == 0 || window < step {
            return Err(format!(
                "config step: {step} s does not fit the window of {window} s; use at least 1 and at most window"
            ));
        }
        let points = u64::from(window) / u64::from(step) + 1;
        if points > MAX_POINTS_PER_QUERY {
            return Err(format!(
                "config window: {window} s at a step of {step} s is {points} samples per series, \
                 more than the {MAX_POINTS_PER_QUERY} allowed; shorten window or lengthen step"
            ));
        }
        let total = points * 2 * metrics.len() as u64;
        if total > MAX_POINTS_PER_DECISION {
            return Err(format!(
                "config window: {total} samples for {} metrics, more than the {MAX_POINTS_PER_DECISION} \
                 allowed per decision; shorten window or lengthen step",
                metrics.len()
            ));
        }
        let pass_score = score(ctx, "pass-score", 95.0)?;
        let marginal_score = score(ctx, "marginal-score", 75.0)?;
        if marginal_score > pass_score {
            return Err(format!(
                "config marginal-score: {marginal_score} is above pass-score {pass_score}; \
                 use at most pass-score"
            ));
        }
        let workload = match ctx.config("workload").map(str::trim) {
            Some("") => return Err("config workload: empty; name the canary's Deployment".into()),
            w => w.map(str::to_string),
        };
        Ok(Config {
            metrics,
            confidence,
            window,
            step,
            pass_score,
            marginal_score,
            workload,
        })
    }
}

fn metric(ctx: &Context, name: &str) -> Result<Metric, String> {
    let key = |k: &str| format!("{name}.{k}");
    let query = ctx
        .config(&key("query"))
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .ok_or_else(|| {
            format!(
                "config {}: missing; give the PromQL of metric {name}, with {{{{ workload }}}} \
                 where the Deployment's name goes",
                key("query")
            )
        })?;
    if !super::has_workload(query) {
        return Err(format!(
            "config {}: no {{{{ workload }}}} in the query, so canary and primary would read \
             the same series; put {{{{ workload }}}} where the Deployment's name goes",
            key("query")
        ));
    }
    let direction = match ctx.config(&key("direction")).map(str::trim) {
        None | Some("increase") => Direction::Increase,
        Some("decrease") => Direction::Decrease,
        Some("either") => Direction::Either,
        Some(other) => {
            return Err(format!(
                "config {}: `{other}` is not a direction; use increase (higher is worse, the \
                 default), decrease or either",
                key("direction")
            ))
        }
    };
    let weight = number(ctx, &key("weight"), 1.0)?;
    if !(weight > 0.0 && weight.is_finite()) {
        return Err(format!(
            "config {}: {weight} is not a positive number; use e.g. 1",
            key("weight")
        ));
    }
    let critical = match ctx.config(&key("critical")).map(str::trim) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(format!(
                "config {}: `{other}` is not true or false",
                key("critical")
            ))
        }
    };
    let effect_size = number(ctx, &key("effect-size"), 1.0)?;
    if !(effect_size >= 1.0 && effect_size.is_finite()) {
        return Err(format!(
            "config {}: {effect_size} is below 1; use the ratio of canary to primary mean \
             that still passes, e.g. 1.1 for 10 %",
            key("effect-size")
        ));
    }
    Ok(Metric {
        name: name.to_string(),
        query: query.to_string(),
        direction,
        weight,
        critical,
        effect_size,
    })
}

fn number(ctx: &Context, key: &str, default: f64) -> Result<f64, String> {
    match ctx.config(key).map(str::trim) {
        None => Ok(default),
        Some(v) => match v.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(n),
            _ => Err(format!(
                "config {key}: `{v}` is not a number; use e.g. {default}"
            )),
        },
    }
}

fn whole(ctx: &Context, key: &str, default: u32) -> Result<u32, String> {
    match ctx.config(key).map(str::trim) {
        None => Ok(default),
        Some(v) => v.parse::<u32>().map_err(|_| {
            format!("config {key}: `{v}` is not a whole number of seconds; use e.g. {default}")
        }),
    }
}

fn score(ctx: &Context, key: &str, default: f64) -> Result<f64, String> {
    let s = number(ctx, key, default)?;
    if !(0.0..=100.0).contains(&s) {
        return Err(format!(
            "config {key}: {s} is outside 0..=100; use e.g. {default}"
        ));
    }
    Ok(s)
}
