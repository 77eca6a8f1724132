//! `spec.analysis`: timing, weights, match rules, metrics, webhooks, alerts.
use super::{
    bounded_duration, bounded_list, in_range, issue, threshold, weight, Issue, MAX_ALERTS,
    MAX_HEADERS_PER_RULE, MAX_HEADER_NAME_BYTES, MAX_INTERVAL, MAX_ITERATIONS, MAX_MATCH_RULES,
    MAX_MATCH_VALUE_BYTES, MAX_METRICS, MAX_NAME_BYTES, MAX_RETRIES, MAX_THRESHOLD, MAX_TIMEOUT,
    MAX_WEBHOOKS,
};
use crate::api::{CanaryAnalysis, StringMatchSpec};
use crate::core::rollout::{AlertSpec, MetricSource, MetricSpec, Severity, WebhookSpec};
use fledge_policy::{Analysis, HeaderMatch, MatchRule, MetricUnit, StringMatch, WebhookKind};
use std::time::Duration;

pub(super) fn analysis(
    a: &CanaryAnalysis,
    present: bool,
    errors: &mut Vec<Issue>,
    warnings: &mut Vec<Issue>,
) -> Analysis {
    let mut interval_seconds = 60;
    if let Some(i) = &a.interval {
        match bounded_duration(
            "spec.analysis.interval",
            i,
            MAX_INTERVAL,
            "1m or 30s",
            errors,
        ) {
            Some(d) if d.as_secs() < 10 => {
                warnings.push(issue(
                    "spec.analysis.interval",
                    format!("`{i}` is below the 10s minimum"),
                    "it is raised to 10s",
                ));
                interval_seconds = 10;
            }
            Some(d) => interval_seconds = d.as_secs() as u32,
            None => {}
        }
    }
    let threshold = match a.threshold {
        None | Some(0) => 1,
        Some(t)
            if in_range(
                "spec.analysis.threshold",
                t,
                0,
                MAX_THRESHOLD,
                "failed checks that trigger a rollback (e.g. 5)",
                errors,
            ) =>
        {
            t as u32
        }
        Some(_) => 1,
    };
    let max_weight = weight(a.max_weight, "spec.analysis.maxWeight", errors);
    let step_weight = weight(a.step_weight, "spec.analysis.stepWeight", errors);
    let step_weight_promotion = weight(
        a.step_weight_promotion,
        "spec.analysis.stepWeightPromotion",
        errors,
    );
    let listed_steps = a.step_weights.as_deref().unwrap_or_default();
    let mut step_weights = Vec::new();
    for (i, w) in listed_steps.iter().enumerate() {
        let field = format!("spec.analysis.stepWeights[{i}]");
        if let Some(w) = weight(Some(*w), &field, errors) {
            if step_weights.last().is_some_and(|prev| *prev >= w) {
                errors.push(issue(
                    field,
                    format!("{w} is not above the previous step"),
                    "list stepWeights in increasing order, e.g. [1, 5, 10, 20, 50]",
                ));
                // Increasing weights in 1..=100 are at most 100 entries; stop at the first error.
                break;
            }
            step_weights.push(w);
        } else if *w == 0 {
            errors.push(issue(
                field,
                "0 is not a step",
                "list weights between 1 and 100 in increasing order",
            ));
            break;
        } else {
            break;
        }
    }
    let iterations = match a.iterations {
        None | Some(0) => None,
        Some(n)
            if in_range(
                "spec.analysis.iterations",
                n,
                0,
                MAX_ITERATIONS,
                "analysis iterations (e.g. 10)",
                errors,
            ) =>
        {
            Some(n as u32)
        }
        Some(_) => None,
    };
    if let Some(m) = a.mirror_weight {
        in_range(
            "spec.analysis.mirrorWeight",
            m,
            0,
            100,
            "percent of traffic",
            errors,
        );
    }
    if iterations.is_some() && (step_weight.is_some() || !listed_steps.is_empty()) {
        errors.push(issue(
            "spec.analysis.iterations",
            "set together with stepWeight/stepWeights",
            "use iterations for A/B and blue/green, or stepWeight/stepWeights for a weighted canary, not both",
        ));
    }
    if step_weight.is_some() && !listed_steps.is_empty() {
        warnings.push(issue(
            "spec.analysis.stepWeights",
            "set together with stepWeight",
            "stepWeight wins, as in Flagger; remove one of them",
        ));
    }
    let set = |v: Option<i64>| v.is_some_and(|v| v != 0);
    if present && !set(a.iterations) && !set(a.step_weight) && listed_steps.is_empty() {
        errors.push(issue(
            "spec.analysis",
            "no stepWeight, stepWeights or iterations",
            "set stepWeight (and maxWeight) for a weighted canary, or iterations (with match for A/B testing)",
        ));
    }
    if a.mirror == Some(true) {
        warnings.push(issue(
            "spec.analysis.mirror",
            "App Mesh cannot mirror traffic",
            "the setting is ignored; remove it",
        ));
    }
    if a.session_affinity.is_some() {
        warnings.push(issue(
            "spec.analysis.sessionAffinity",
            "not used with App Mesh",
            "it is ignored; use a cookie match for sticky A/B tests",
        ));
    }

    let rules = a.match_.as_deref().unwrap_or_default();
    let n = bounded_list(&a.match_, "spec.analysis.match", MAX_MATCH_RULES, errors);
    let mut match_rules = Vec::new();
    for (i, m) in rules.iter().take(n).enumerate() {
        let headers_spec = m.headers.clone().unwrap_or_default();
        if headers_spec.len() > MAX_HEADERS_PER_RULE {
            errors.push(issue(
                format!("spec.analysis.match[{i}].headers"),
                format!(
                    "{} headers, more than the {MAX_HEADERS_PER_RULE} allowed",
                    headers_spec.len()
                ),
                format!("match on at most {MAX_HEADERS_PER_RULE} headers per rule"),
            ));
            continue;
        }
        let mut headers = Vec::new();
        for (name, sm) in &headers_spec {
            let field = format!("spec.analysis.match[{i}].headers.{name}");
            if name.len() > MAX_HEADER_NAME_BYTES {
                errors.push(issue(
                    format!("spec.analysis.match[{i}].headers"),
                    format!("a header name of {} bytes", name.len()),
                    format!("header names are at most {MAX_HEADER_NAME_BYTES} bytes"),
                ));
                continue;
            }
            if let Some(matcher) = string_match(sm, &field, errors) {
                headers.push(HeaderMatch {
                    name: name.to_ascii_lowercase(),
                    matcher,
                });
            }
        }
        let other = m.query_params.is_some() || m.source_labels.is_some();
        if other {
            warnings.push(issue(
                format!("spec.analysis.match[{i}]"),
                "queryParams and sourceLabels are not used with App Mesh",
                "they are ignored; match on headers or cookies instead",
            ));
        }
        if headers.is_empty() {
            if !other && headers_spec.is_empty() {
                errors.push(issue(
                    format!("spec.analysis.match[{i}]"),
                    "has no headers",
                    "add a header condition, e.g. headers: {x-canary: {exact: insider}}",
                ));
            }
            continue;
        }
        match_rules.push(MatchRule { headers });
    }

    Analysis {
        interval_seconds,
        threshold,
        max_weight,
        step_weight,
        step_weights,
        step_weight_promotion,
        iterations,
        match_rules,
        mirror: false,
        mirror_weight: None,
    }
}

fn string_match(sm: &StringMatchSpec, field: &str, errors: &mut Vec<Issue>) -> Option<StringMatch> {
    let set: Vec<StringMatch> = [
        sm.exact.clone().map(StringMatch::Exact),
        sm.prefix.clone().map(StringMatch::Prefix),
        sm.suffix.clone().map(StringMatch::Suffix),
        sm.regex.clone().map(StringMatch::Regex),
    ]
    .into_iter()
    .flatten()
    .collect();
    if set.len() != 1 {
        errors.push(issue(
            field,
            format!("has {} comparisons", set.len()),
            "give exactly one of exact, prefix, suffix or regex",
        ));
        return None;
    }
    let m = set.into_iter().next()?;
    let (StringMatch::Exact(v) | StringMatch::Prefix(v) | StringMatch::Suffix(v)) = &m else {
        let StringMatch::Regex(r) = &m else {
            return None;
        };
        if r.len() > MAX_MATCH_VALUE_BYTES {
            errors.push(issue(
                format!("{field}.regex"),
                format!("{} bytes long", r.len()),
                format!("a regular expression is at most {MAX_MATCH_VALUE_BYTES} bytes"),
            ));
            return None;
        }
        if let Err(e) = regex::Regex::new(r) {
            errors.push(issue(
                format!("{field}.regex"),
                format!("`{r}` does not compile: {e}"),
                "fix the regular expression (RE2 syntax)",
            ));
            return None;
        }
        return Some(m);
    };
    if v.len() > MAX_MATCH_VALUE_BYTES {
        errors.push(issue(
            field,
            format!("a value of {} bytes", v.len()),
            format!("match values are at most {MAX_MATCH_VALUE_BYTES} bytes"),
        ));
        return None;
    }
    Some(m)
}

/// A metric or webhook name: present and no longer than a Kubernetes name.
fn name_of(
    name: &Option<String>,
    field: &str,
    what: &str,
    errors: &mut Vec<Issue>,
) -> Option<String> {
    match name.as_deref() {
        None | Some("") => {
            errors.push(issue(
                format!("{field}.name"),
                "missing",
                format!("name the {what}"),
            ));
            None
        }
        Some(n) if n.len() > MAX_NAME_BYTES => {
            errors.push(issue(
                format!("{field}.name"),
                format!("{} bytes long", n.len()),
                format!("use a name of at most {MAX_NAME_BYTES} bytes"),
            ));
            None
        }
        Some(n) => Some(n.to_string()),
    }
}

pub(super) fn metrics(
    a: &CanaryAnalysis,
    namespace: &str,
    errors: &mut Vec<Issue>,
) -> Vec<MetricSpec> {
    let mut out = Vec::new();
    let n = bounded_list(&a.metrics, "spec.analysis.metrics", MAX_METRICS, errors);
    for (i, m) in a.metrics.iter().flatten().take(n).enumerate() {
        let field = format!("spec.analysis.metrics[{i}]");
        let Some(name) = name_of(&m.name, &field, "metric", errors) else {
            continue;
        };
        let field = format!("{field} ({name})");
        let builtin = name == "request-success-rate" || name == "request-duration";
        let source = if let Some(t) = &m.template_ref {
            let Some(tname) = t.name.clone().filter(|n| !n.is_empty()) else {
                errors.push(issue(
                    format!("{field}.templateRef.name"),
                    "missing",
                    "name the MetricTemplate",
                ));
                continue;
            };
            MetricSource::Template {
                name: tname,
                namespace: t.namespace.clone().unwrap_or_else(|| namespace.to_string()),
            }
        } else if let Some(q) = m.query.as_ref().filter(|q| !q.trim().is_empty()) {
            MetricSource::Query(q.clone())
        } else if builtin {
            MetricSource::Builtin
        } else {
            errors.push(issue(
                field,
                "has no templateRef or query",
                "reference a MetricTemplate with templateRef, or use a built-in metric (request-success-rate, request-duration)",
            ));
            continue;
        };
        let range = m.threshold_range.as_ref();
        let before = errors.len();
        let lo =
            range.and_then(|r| threshold(&r.min, &format!("{field}.thresholdRange.min"), errors));
        let hi =
            range.and_then(|r| threshold(&r.max, &format!("{field}.thresholdRange.max"), errors));
        let single = threshold(&m.threshold, &format!("{field}.threshold"), errors);
        if errors.len() > before {
            continue;
        }
        let (min, max) = match (
            range.is_some_and(|r| r.min.is_some() || r.max.is_some()),
            single,
        ) {
            (true, _) => (lo, hi),
            (false, Some(t)) if name == "request-success-rate" => (Some(t), None),
            (false, Some(t)) => (None, Some(t)),
            (false, None) => {
                errors.push(issue(
                    field,
                    "has no threshold",
                    "add thresholdRange with min and/or max, e.g. thresholdRange: {min: 99}",
                ));
                continue;
            }
        };
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                errors.push(issue(
                    format!("{field}.thresholdRange"),
                    format!("min {lo} is above max {hi}"),
                    "swap them",
                ));
            }
        }
        let interval = match &m.interval {
            None => Duration::from_secs(60),
            Some(s) => {
                match bounded_duration(&format!("{field}.interval"), s, MAX_INTERVAL, "1m", errors)
                {
                    Some(d) => d,
                    None => continue,
                }
            }
        };
        let unit = match (&source, name.as_str()) {
            (MetricSource::Builtin, "request-success-rate") => MetricUnit::Percent,
            (MetricSource::Builtin, _) => MetricUnit::Milliseconds,
            _ => MetricUnit::None,
        };
        out.push(MetricSpec {
            name,
            interval,
            min,
            max,
            unit,
            source,
            variables: m.template_variables.clone().unwrap_or_default(),
        });
    }
    out
}

pub(super) fn webhooks(a: &CanaryAnalysis, errors: &mut Vec<Issue>) -> Vec<WebhookSpec> {
    let mut out = Vec::new();
    let n = bounded_list(&a.webhooks, "spec.analysis.webhooks", MAX_WEBHOOKS, errors);
    for (i, w) in a.webhooks.iter().flatten().take(n).enumerate() {
        let field = format!("spec.analysis.webhooks[{i}]");
        let Some(name) = name_of(&w.name, &field, "webhook", errors) else {
            continue;
        };
        let field = format!("{field} ({name})");
        let type_ = w.type_.as_deref().unwrap_or("");
        let Some(kind) = WebhookKind::parse(type_) else {
            errors.push(issue(
                format!("{field}.type"),
                format!("unknown type `{type_}`"),
                "use one of confirm-rollout, pre-rollout, rollout, confirm-traffic-increase, confirm-promotion, post-rollout, rollback, event",
            ));
            continue;
        };
        let Some(url) = w.url.clone().filter(|u| !u.is_empty()) else {
            errors.push(issue(
                format!("{field}.url"),
                "missing",
                "set the URL to POST to",
            ));
            continue;
        };
        // Flagger replaces timeouts shorter than two characters with its default.
        let timeout = match w.timeout.as_deref() {
            None => Duration::from_secs(10),
            Some(t) if t.len() < 2 => Duration::from_secs(10),
            Some(t) => {
                match bounded_duration(&format!("{field}.timeout"), t, MAX_TIMEOUT, "30s", errors) {
                    Some(d) => d,
                    None => continue,
                }
            }
        };
        let retries = w.retries.unwrap_or(0);
        if !in_range(
            &format!("{field}.retries"),
            retries,
            0,
            MAX_RETRIES,
            "retries",
            errors,
        ) {
            continue;
        }
        out.push(WebhookSpec {
            name,
            kind,
            url,
            timeout,
            retries: retries as u32,
            mute_alert: w.mute_alert.unwrap_or(false),
            disable_tls: w.disable_tls.unwrap_or(false),
            metadata: w.metadata.clone().unwrap_or_default(),
        });
    }
    out
}

pub(super) fn alerts(
    a: &CanaryAnalysis,
    namespace: &str,
    errors: &mut Vec<Issue>,
) -> Vec<AlertSpec> {
    let mut out = Vec::new();
    let n = bounded_list(&a.alerts, "spec.analysis.alerts", MAX_ALERTS, errors);
    for (i, al) in a.alerts.iter().flatten().take(n).enumerate() {
        let field = format!("spec.analysis.alerts[{i}]");
        // An empty severity means info (Flagger sends nothing for it, which
        // nobody wants).
        let severity = match al.severity.as_deref().unwrap_or("") {
            "" | "info" => Severity::Info,
            "warn" => Severity::Warn,
            "error" => Severity::Error,
            other => {
                errors.push(issue(
                    format!("{field}.severity"),
                    format!("unknown severity `{other}`"),
                    "use info, warn or error",
                ));
                continue;
            }
        };
        let provider_ref = al.provider_ref.clone().unwrap_or_default();
        let Some(provider) = provider_ref.name.filter(|n| !n.is_empty()) else {
            errors.push(issue(
                format!("{field}.providerRef.name"),
                "missing",
                "name the AlertProvider",
            ));
            continue;
        };
        out.push(AlertSpec {
            name: al.name.clone().unwrap_or_default(),
            severity,
            provider,
            provider_namespace: provider_ref
                .namespace
                .unwrap_or_else(|| namespace.to_string()),
        });
    }
    out
}
