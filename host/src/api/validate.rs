//! Turns a Canary into a [`Rollout`], or explains precisely what is wrong.
//!
//! Every error names the field and the fix. Fields of Flagger's schema that
//! App Mesh does not use are accepted; a warning says so where they would have
//! changed behaviour with another provider.
use super::{duration, Canary, CanaryAnalysis, StringMatchSpec};
use crate::core::rollout::{AlertSpec, MetricSource, MetricSpec, Rollout, Severity, WebhookSpec};
use fledge_policy::{Analysis, HeaderMatch, MatchRule, MetricUnit, StringMatch, WebhookKind};
use std::fmt;
use std::time::Duration;

/// One finding: the field (`spec.analysis.stepWeight`), what is wrong, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.field, self.problem, self.fix)
    }
}

fn issue(field: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Issue {
    Issue {
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// A valid Canary and the warnings about it.
#[derive(Debug, Clone)]
pub struct Validated {
    pub rollout: Rollout,
    pub warnings: Vec<Issue>,
}

/// Providers that select the App Mesh v1beta2 router. `appmesh` is Flagger's
/// legacy v1beta1 provider; Fledge serves it with the v1beta2 objects.
const APPMESH_PROVIDERS: &[&str] = &["appmesh:v1beta2", "appmesh"];
/// Providers Flagger knows that Fledge does not route (yet).
const OTHER_FLAGGER_PROVIDERS: &[&str] = &[
    "apisix",
    "contour",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "gloo",
    "istio",
    "knative",
    "kubernetes",
    "kuma",
    "linkerd",
    "nginx",
    "osm",
    "skipper",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "traefik",
];

/// Checks a Canary. `Err` holds every error found, not just the first.
pub fn validate(canary: &Canary) -> Result<Validated, Vec<Issue>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let spec = &canary.spec;

    let name = canary.metadata.name.clone().unwrap_or_default();
    if name.is_empty() {
        errors.push(issue("metadata.name", "missing", "give the Canary a name"));
    }
    let namespace = canary.namespace().to_string();

    let target = match &spec.target_ref {
        None => {
            errors.push(issue(
                "spec.targetRef",
                "missing",
                "set targetRef to the Deployment to roll out: {apiVersion: apps/v1, kind: Deployment, name: <deployment>}",
            ));
            String::new()
        }
        Some(t) => {
            if t.name.is_empty() {
                errors.push(issue(
                    "spec.targetRef.name",
                    "missing",
                    "set it to the name of the Deployment to roll out",
                ));
            }
            if t.kind != "Deployment" {
                errors.push(issue(
                    "spec.targetRef.kind",
                    format!("`{}` is not supported", t.kind),
                    "Fledge rolls out Deployments: set kind: Deployment",
                ));
            }
            t.name.clone()
        }
    };

    let provider = spec
        .provider
        .clone()
        .unwrap_or_else(|| "appmesh:v1beta2".to_string());
    if !APPMESH_PROVIDERS.contains(&provider.as_str()) {
        if OTHER_FLAGGER_PROVIDERS.contains(&provider.as_str()) {
            errors.push(issue(
                "spec.provider",
                format!("`{provider}` is not supported by Fledge"),
                "use provider: appmesh:v1beta2",
            ));
        } else {
            errors.push(issue(
                "spec.provider",
                format!("unknown provider `{provider}`"),
                "use provider: appmesh:v1beta2",
            ));
        }
    } else if provider == "appmesh" {
        warnings.push(issue(
            "spec.provider",
            "`appmesh` is the legacy App Mesh v1beta1 provider",
            "Fledge manages appmesh.k8s.aws/v1beta2 objects; write provider: appmesh:v1beta2",
        ));
    }

    let mut apex = target.clone();
    let mut service_port = 0;
    match &spec.service {
        None => errors.push(issue(
            "spec.service",
            "missing",
            "set service.port to the container port the mesh routes to",
        )),
        Some(svc) => {
            if let Some(n) = svc.name.as_ref().filter(|n| !n.is_empty()) {
                apex = n.clone();
            }
            match svc.port {
                Some(p) if (1..=65535).contains(&p) => service_port = p,
                Some(p) => errors.push(issue(
                    "spec.service.port",
                    format!("{p} is not a port"),
                    "use a port number between 1 and 65535",
                )),
                None => errors.push(issue(
                    "spec.service.port",
                    "missing",
                    "set it to the container port the mesh routes to",
                )),
            }
            if let Some(t) = &svc.timeout {
                if let Err(e) = duration::parse(t) {
                    errors.push(issue(
                        "spec.service.timeout",
                        e,
                        "use a duration such as 15s",
                    ));
                }
            }
            let ignored: [(&str, bool); 8] = [
                ("hosts", !svc.hosts.is_empty()),
                ("gateways", !svc.gateways.is_empty()),
                ("gatewayRefs", !svc.gateway_refs.is_empty()),
                ("delegation", svc.delegation.is_some()),
                ("corsPolicy", svc.cors_policy.is_some()),
                ("trafficPolicy", svc.traffic_policy.is_some()),
                ("headers", svc.headers.is_some()),
                ("rewrite", svc.rewrite.is_some()),
            ];
            for (field, set) in ignored {
                if set {
                    warnings.push(issue(
                        format!("spec.service.{field}"),
                        "not used with App Mesh",
                        "it is ignored; remove it or keep it for other providers",
                    ));
                }
            }
        }
    }

    let progress_deadline = match spec.progress_deadline_seconds {
        None => Duration::from_secs(600),
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        Some(s) => {
            errors.push(issue(
                "spec.progressDeadlineSeconds",
                format!("{s} is not a positive number of seconds"),
                "use e.g. 600, or remove it for the default",
            ));
            Duration::from_secs(600)
        }
    };

    let analysis_spec = spec.analysis.as_ref().or(spec.canary_analysis.as_ref());
    if spec.analysis.is_none() && spec.canary_analysis.is_some() {
        warnings.push(issue(
            "spec.canaryAnalysis",
            "deprecated",
            "rename it to spec.analysis",
        ));
    }
    let default_analysis = CanaryAnalysis::default();
    let a = analysis_spec.unwrap_or(&default_analysis);
    let skip_analysis = spec.skip_analysis || analysis_spec.is_none();

    let analysis = analysis(a, analysis_spec.is_some(), &mut errors, &mut warnings);
    let strategy = analysis.strategy();
    let metrics = metrics(a, &namespace, &mut errors);
    let webhooks = webhooks(a, &mut errors);
    let alerts = alerts(a, &namespace, &mut errors);
    let canary_ready_threshold = percent(
        a.canary_ready_threshold,
        "spec.analysis.canaryReadyThreshold",
        &mut errors,
    );
    let primary_ready_threshold = percent(
        a.primary_ready_threshold,
        "spec.analysis.primaryReadyThreshold",
        &mut errors,
    );

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Validated {
        rollout: Rollout {
            name,
            namespace,
            target,
            apex,
            provider,
            autoscaler: spec
                .autoscaler_ref
                .as_ref()
                .map(|r| r.name.clone())
                .filter(|n| !n.is_empty()),
            service_port,
            analysis,
            strategy,
            metrics,
            webhooks,
            alerts,
            progress_deadline,
            skip_analysis,
            suspend: spec.suspend,
            canary_ready_threshold,
            primary_ready_threshold,
        },
        warnings,
    })
}

fn percent(v: Option<i64>, field: &str, errors: &mut Vec<Issue>) -> u32 {
    match v {
        None | Some(0) => 100,
        Some(p) if (1..=100).contains(&p) => p as u32,
        Some(p) => {
            errors.push(issue(
                field,
                format!("{p} is outside 1..=100"),
                "use a percentage between 1 and 100",
            ));
            100
        }
    }
}

/// A weight field: 0 means unset (as in Flagger), 1..=100 is a percentage.
fn weight(v: Option<i64>, field: &str, errors: &mut Vec<Issue>) -> Option<u32> {
    match v {
        None | Some(0) => None,
        Some(w) if (1..=100).contains(&w) => Some(w as u32),
        Some(w) => {
            errors.push(issue(
                field,
                format!("{w} is outside 1..=100"),
                "use a percentage of traffic between 1 and 100",
            ));
            None
        }
    }
}

fn analysis(
    a: &CanaryAnalysis,
    present: bool,
    errors: &mut Vec<Issue>,
    warnings: &mut Vec<Issue>,
) -> Analysis {
    let mut interval_seconds = 60;
    if let Some(i) = &a.interval {
        match duration::parse(i) {
            Ok(d) if d.as_secs() < 10 => {
                warnings.push(issue(
                    "spec.analysis.interval",
                    format!("`{i}` is below the 10s minimum"),
                    "it is raised to 10s",
                ));
                interval_seconds = 10;
            }
            Ok(d) => interval_seconds = d.as_secs().min(u64::from(u32::MAX)) as u32,
            Err(e) => errors.push(issue(
                "spec.analysis.interval",
                e,
                "use a duration such as 1m or 30s",
            )),
        }
    }
    let threshold = match a.threshold {
        None | Some(0) => 1,
        Some(t) if t > 0 => t.min(i64::from(u32::MAX)) as u32,
        Some(t) => {
            errors.push(issue(
                "spec.analysis.threshold",
                format!("{t} is negative"),
                "set the number of failed checks that trigger a rollback, e.g. 5",
            ));
            1
        }
    };
    let max_weight = weight(a.max_weight, "spec.analysis.maxWeight", errors);
    let step_weight = weight(a.step_weight, "spec.analysis.stepWeight", errors);
    let step_weight_promotion = weight(
        a.step_weight_promotion,
        "spec.analysis.stepWeightPromotion",
        errors,
    );
    let mut step_weights = Vec::new();
    for (i, w) in a.step_weights.iter().enumerate() {
        let field = format!("spec.analysis.stepWeights[{i}]");
        if let Some(w) = weight(Some(*w), &field, errors) {
            if step_weights.last().is_some_and(|prev| *prev >= w) {
                errors.push(issue(
                    field,
                    format!("{w} is not above the previous step"),
                    "list stepWeights in increasing order, e.g. [1, 5, 10, 20, 50]",
                ));
            }
            step_weights.push(w);
        } else if *w == 0 {
            errors.push(issue(
                field,
                "0 is not a step",
                "list weights between 1 and 100 in increasing order",
            ));
        }
    }
    let iterations = match a.iterations {
        None | Some(0) => None,
        Some(n) if n > 0 => Some(n.min(i64::from(u32::MAX)) as u32),
        Some(n) => {
            errors.push(issue(
                "spec.analysis.iterations",
                format!("{n} is negative"),
                "set the number of analysis iterations, e.g. 10",
            ));
            None
        }
    };
    if iterations.is_some() && (step_weight.is_some() || !step_weights.is_empty()) {
        errors.push(issue(
            "spec.analysis.iterations",
            "set together with stepWeight/stepWeights",
            "use iterations for A/B and blue/green, or stepWeight/stepWeights for a weighted canary, not both",
        ));
    }
    if step_weight.is_some() && !step_weights.is_empty() {
        warnings.push(issue(
            "spec.analysis.stepWeights",
            "set together with stepWeight",
            "stepWeight wins, as in Flagger; remove one of them",
        ));
    }
    let set = |v: Option<i64>| v.is_some_and(|v| v != 0);
    if present && !set(a.iterations) && !set(a.step_weight) && a.step_weights.is_empty() {
        errors.push(issue(
            "spec.analysis",
            "no stepWeight, stepWeights or iterations",
            "set stepWeight (and maxWeight) for a weighted canary, or iterations (with match for A/B testing)",
        ));
    }
    if a.mirror {
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

    let mut match_rules = Vec::new();
    for (i, m) in a.match_.iter().enumerate() {
        let mut headers = Vec::new();
        for (name, sm) in &m.headers {
            let field = format!("spec.analysis.match[{i}].headers.{name}");
            if let Some(matcher) = string_match(sm, &field, errors) {
                headers.push(HeaderMatch {
                    name: name.to_ascii_lowercase(),
                    matcher,
                });
            }
        }
        if !m.query_params.is_empty() || !m.source_labels.is_empty() {
            warnings.push(issue(
                format!("spec.analysis.match[{i}]"),
                "queryParams and sourceLabels are not used with App Mesh",
                "they are ignored; match on headers or cookies instead",
            ));
        }
        if headers.is_empty() {
            if m.query_params.is_empty() && m.source_labels.is_empty() {
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
    if let StringMatch::Regex(r) = &m {
        if let Err(e) = regex::Regex::new(r) {
            errors.push(issue(
                format!("{field}.regex"),
                format!("`{r}` does not compile: {e}"),
                "fix the regular expression (RE2 syntax)",
            ));
            return None;
        }
    }
    Some(m)
}

fn metrics(a: &CanaryAnalysis, namespace: &str, errors: &mut Vec<Issue>) -> Vec<MetricSpec> {
    let mut out = Vec::new();
    for (i, m) in a.metrics.iter().enumerate() {
        let field = format!("spec.analysis.metrics[{i}]");
        if m.name.is_empty() {
            errors.push(issue(format!("{field}.name"), "missing", "name the metric"));
            continue;
        }
        let field = format!("{field} ({})", m.name);
        let builtin = m.name == "request-success-rate" || m.name == "request-duration";
        let source = if let Some(t) = &m.template_ref {
            if t.name.is_empty() {
                errors.push(issue(
                    format!("{field}.templateRef.name"),
                    "missing",
                    "name the MetricTemplate",
                ));
                continue;
            }
            MetricSource::Template {
                name: t.name.clone(),
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
        let (min, max) = match (&m.threshold_range, m.threshold) {
            (Some(r), _) if r.min.is_some() || r.max.is_some() => (r.min, r.max),
            (_, Some(t)) if m.name == "request-success-rate" => (Some(t), None),
            (_, Some(t)) => (None, Some(t)),
            _ => {
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
            Some(s) => match duration::parse(s) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(issue(
                        format!("{field}.interval"),
                        e,
                        "use a duration such as 1m",
                    ));
                    continue;
                }
            },
        };
        let unit = match (&source, m.name.as_str()) {
            (MetricSource::Builtin, "request-success-rate") => MetricUnit::Percent,
            (MetricSource::Builtin, _) => MetricUnit::Milliseconds,
            _ => MetricUnit::None,
        };
        out.push(MetricSpec {
            name: m.name.clone(),
            interval,
            min,
            max,
            unit,
            source,
            variables: m.template_variables.clone(),
        });
    }
    out
}

fn webhooks(a: &CanaryAnalysis, errors: &mut Vec<Issue>) -> Vec<WebhookSpec> {
    let mut out = Vec::new();
    for (i, w) in a.webhooks.iter().enumerate() {
        let field = format!("spec.analysis.webhooks[{i}]");
        if w.name.is_empty() {
            errors.push(issue(
                format!("{field}.name"),
                "missing",
                "name the webhook",
            ));
            continue;
        }
        let field = format!("{field} ({})", w.name);
        let Some(kind) = WebhookKind::parse(&w.type_) else {
            errors.push(issue(
                format!("{field}.type"),
                format!("unknown type `{}`", w.type_),
                "use one of confirm-rollout, pre-rollout, rollout, confirm-traffic-increase, confirm-promotion, post-rollout, rollback, event",
            ));
            continue;
        };
        if w.url.is_empty() {
            errors.push(issue(
                format!("{field}.url"),
                "missing",
                "set the URL to POST to",
            ));
            continue;
        }
        // Flagger replaces timeouts shorter than two characters with its default.
        let timeout = match w.timeout.as_deref() {
            None => Duration::from_secs(10),
            Some(t) if t.len() < 2 => Duration::from_secs(10),
            Some(t) => match duration::parse(t) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(issue(
                        format!("{field}.timeout"),
                        e,
                        "use a duration such as 30s",
                    ));
                    continue;
                }
            },
        };
        out.push(WebhookSpec {
            name: w.name.clone(),
            kind,
            url: w.url.clone(),
            timeout,
            retries: w.retries.unwrap_or(0).clamp(0, 100) as u32,
            mute_alert: w.mute_alert,
            disable_tls: w.disable_tls,
            metadata: w.metadata.clone(),
        });
    }
    out
}

fn alerts(a: &CanaryAnalysis, namespace: &str, errors: &mut Vec<Issue>) -> Vec<AlertSpec> {
    let mut out = Vec::new();
    for (i, al) in a.alerts.iter().enumerate() {
        let field = format!("spec.analysis.alerts[{i}]");
        // An empty severity means info (Flagger sends nothing for it, which
        // nobody wants).
        let severity = match al.severity.as_str() {
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
        if al.provider_ref.name.is_empty() {
            errors.push(issue(
                format!("{field}.providerRef.name"),
                "missing",
                "name the AlertProvider",
            ));
            continue;
        }
        out.push(AlertSpec {
            name: al.name.clone(),
            severity,
            provider: al.provider_ref.name.clone(),
            provider_namespace: al
                .provider_ref
                .namespace
                .clone()
                .unwrap_or_else(|| namespace.to_string()),
        });
    }
    out
}

#[cfg(test)]
mod tests;
