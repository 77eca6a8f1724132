//! Turns a Canary into a [`Rollout`], or explains precisely what is wrong.
//!
//! Every error names the field and the fix. Fields of Flagger's schema that
//! App Mesh does not use are accepted; a warning says so where they would have
//! changed behaviour with another provider. Every number is checked against a
//! stated range and every list against a stated length, so no Canary can make
//! the rollout or its policy input unbounded.
use super::{duration, Canary, CanaryAnalysis, CanarySpec};
use crate::core::rollout::Rollout;
use crate::core::validate::{
    MAX_HEADERS_PER_RULE, MAX_HEADER_NAME_BYTES, MAX_MATCH_RULES, MAX_MATCH_VALUE_BYTES,
};
use serde_json::Number;
use std::fmt;
use std::time::Duration;

/// Longest analysis or metric interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest request timeout (service, retry and webhook timeouts).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest `progressDeadlineSeconds`: seven days.
pub const MAX_PROGRESS_DEADLINE_SECONDS: i64 = 7 * 24 * 3600;
/// Most failed checks before rollback, and most iterations, one may ask for.
pub const MAX_THRESHOLD: i64 = 10_000;
pub const MAX_ITERATIONS: i64 = 10_000;
/// Most retries of one webhook call, and of one request (`service.retries.attempts`).
pub const MAX_RETRIES: i64 = 100;
/// Most metrics, webhooks and alerts of one analysis.
pub const MAX_METRICS: usize = 64;
pub const MAX_WEBHOOKS: usize = 64;
pub const MAX_ALERTS: usize = 64;
/// Longest metric or webhook name (a Kubernetes object name).
pub const MAX_NAME_BYTES: usize = 253;

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
/// The provider of the Gateway API router (HTTPRoute `gateway.networking.k8s.io/v1`).
pub const GATEWAY_API_PROVIDER: &str = "gatewayapi:v1";
/// Providers Flagger knows that Fledge does not route (yet).
const OTHER_FLAGGER_PROVIDERS: &[&str] = &[
    "apisix",
    "contour",
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
const SUPPORTED: &str = "use provider: appmesh:v1beta2 or provider: gatewayapi:v1";

/// Checks a Canary. `Err` holds every error found, not just the first.
pub fn validate(canary: &Canary) -> Result<Validated, Vec<Issue>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let default_spec = CanarySpec::default();
    let spec = match &canary.spec {
        Some(spec) => spec,
        None => {
            errors.push(issue(
                "spec",
                "missing",
                "give the Canary a spec with targetRef, service and analysis",
            ));
            &default_spec
        }
    };

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
            let name = t.name.clone().unwrap_or_default();
            if name.is_empty() {
                errors.push(issue(
                    "spec.targetRef.name",
                    "missing",
                    "set it to the name of the Deployment to roll out",
                ));
            }
            let kind = t.kind.as_deref().unwrap_or("");
            if kind != "Deployment" {
                errors.push(issue(
                    "spec.targetRef.kind",
                    format!("`{kind}` is not supported"),
                    "Fledge rolls out Deployments: set kind: Deployment",
                ));
            }
            name
        }
    };

    let provider = spec
        .provider
        .clone()
        .unwrap_or_else(|| "appmesh:v1beta2".to_string());
    let gateway = provider == GATEWAY_API_PROVIDER;
    if gateway {
        // Checked with spec.service below.
    } else if provider == "gatewayapi:v1beta1" || provider == "gatewayapi" {
        errors.push(issue(
            "spec.provider",
            format!("`{provider}` is not supported by Fledge"),
            "Fledge writes HTTPRoutes of gateway.networking.k8s.io/v1: write provider: gatewayapi:v1",
        ));
    } else if !APPMESH_PROVIDERS.contains(&provider.as_str()) {
        if OTHER_FLAGGER_PROVIDERS.contains(&provider.as_str()) {
            errors.push(issue(
                "spec.provider",
                format!("`{provider}` is not supported by Fledge"),
                SUPPORTED,
            ));
        } else {
            errors.push(issue(
                "spec.provider",
                format!("unknown provider `{provider}`"),
                SUPPORTED,
            ));
        }
    } else if provider == "appmesh" {
        warnings.push(issue(
            "spec.provider",
            "`appmesh` is the legacy App Mesh v1beta1 provider",
            "Fledge manages appmesh.k8s.aws/v1beta2 objects; write provider: appmesh:v1beta2",
        ));
    }
    if gateway {
        gateway::check(canary, spec, &mut errors, &mut warnings);
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
                Some(p) if (1..=65535).contains(&p) => service_port = p as i32,
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
                bounded_duration("spec.service.timeout", t, MAX_TIMEOUT, "15s", &mut errors);
            }
            if let Some(r) = &svc.retries {
                if let Some(t) = &r.per_try_timeout {
                    bounded_duration(
                        "spec.service.retries.perTryTimeout",
                        t,
                        MAX_TIMEOUT,
                        "5s",
                        &mut errors,
                    );
                }
                if let Some(a) = r.attempts {
                    in_range(
                        "spec.service.retries.attempts",
                        a,
                        0,
                        MAX_RETRIES,
                        "retries of one request",
                        &mut errors,
                    );
                }
            }
            let ignored: Vec<(&str, bool)> = if gateway {
                gateway::ignored_service_fields(svc)
            } else {
                vec![
                ("hosts", svc.hosts.is_some()),
                ("gateways", svc.gateways.is_some()),
                ("gatewayRefs", svc.gateway_refs.is_some()),
                ("delegation", svc.delegation.is_some()),
                ("corsPolicy", svc.cors_policy.is_some()),
                ("trafficPolicy", svc.traffic_policy.is_some()),
                ("headers", svc.headers.is_some()),
                ("rewrite", svc.rewrite.is_some()),
                ]
            };
            let with = if gateway { "gatewayapi:v1" } else { "App Mesh" };
            for (field, set) in ignored {
                if set {
                    warnings.push(issue(
                        format!("spec.service.{field}"),
                        format!("not used with {with}"),
                        "it is ignored; remove it or keep it for other providers",
                    ));
                }
            }
        }
    }

    let progress_deadline = match spec.progress_deadline_seconds {
        None => Duration::from_secs(600),
        Some(s) if (1..=MAX_PROGRESS_DEADLINE_SECONDS).contains(&s) => {
            Duration::from_secs(s as u64)
        }
        Some(s) => {
            errors.push(issue(
                "spec.progressDeadlineSeconds",
                format!("{s} is outside 1..={MAX_PROGRESS_DEADLINE_SECONDS} (seven days)"),
                "use a number of seconds in that range, e.g. 600, or remove it for the default",
            ));
            Duration::from_secs(600)
        }
    };

    let analysis_spec = spec.analysis.as_ref();
    let default_analysis = CanaryAnalysis::default();
    let a = analysis_spec.unwrap_or(&default_analysis);
    let skip_analysis = spec.skip_analysis.unwrap_or(false) || analysis_spec.is_none();

    let analysis = analysis(a, analysis_spec.is_some(), &mut errors, &mut warnings);
    if gateway {
        // The A/B conditions the HTTPRoute cannot carry are errors (above);
        // the other notes speak of the router in use.
        warnings.retain(|w| !(w.field.starts_with("spec.analysis.match[") && w.problem.contains("App Mesh")));
        for w in warnings.iter_mut().filter(|w| w.field.starts_with("spec.analysis")) {
            w.problem = w.problem.replace("App Mesh", "Fledge's gatewayapi:v1 router");
        }
    }
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
    if let Some(r) = spec
        .autoscaler_ref
        .as_ref()
        .and_then(|r| r.primary_scaler_replicas.as_ref())
    {
        for (field, v) in [
            ("minReplicas", r.min_replicas),
            ("maxReplicas", r.max_replicas),
        ] {
            if let Some(v) = v {
                in_range(
                    &format!("spec.autoscalerRef.primaryScalerReplicas.{field}"),
                    v,
                    1,
                    i64::from(i32::MAX),
                    "replicas",
                    &mut errors,
                );
            }
        }
    }

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
                .and_then(|r| r.name.clone())
                .filter(|n| !n.is_empty()),
            service_port,
            analysis,
            strategy,
            metrics,
            webhooks,
            alerts,
            progress_deadline,
            skip_analysis,
            suspend: spec.suspend.unwrap_or(false),
            canary_ready_threshold,
            primary_ready_threshold,
        },
        warnings,
    })
}

/// `v` must lie in `lo..=hi`; `what` says what the number counts.
fn in_range(field: &str, v: i64, lo: i64, hi: i64, what: &str, errors: &mut Vec<Issue>) -> bool {
    if (lo..=hi).contains(&v) {
        return true;
    }
    errors.push(issue(
        field,
        format!("{v} is outside {lo}..={hi}"),
        format!("use a number of {what} in that range"),
    ));
    false
}

/// A Go duration no longer than `max`; `None` (with an error) otherwise.
fn bounded_duration(
    field: &str,
    text: &str,
    max: Duration,
    example: &str,
    errors: &mut Vec<Issue>,
) -> Option<Duration> {
    let limit = duration::format(max);
    match duration::parse(text) {
        Ok(d) if d <= max => Some(d),
        Ok(_) => {
            errors.push(issue(
                field,
                format!("`{text}` is longer than the {limit} maximum"),
                format!("use a duration between 0s and {limit}, such as {example}"),
            ));
            None
        }
        Err(e) => {
            errors.push(issue(
                field,
                e,
                format!("use a duration such as {example} (at most {limit})"),
            ));
            None
        }
    }
}

/// A finite threshold, as f64.
fn threshold(v: &Option<Number>, field: &str, errors: &mut Vec<Issue>) -> Option<f64> {
    let n = v.as_ref()?;
    match n.as_f64().filter(|f| f.is_finite()) {
        Some(f) => Some(f),
        None => {
            errors.push(issue(
                field,
                format!("{n} is not a finite number"),
                "use a finite number; NaN and infinities are not accepted",
            ));
            None
        }
    }
}

/// A list no longer than `max`.
fn bounded_list<T>(
    list: &Option<Vec<T>>,
    field: &str,
    max: usize,
    errors: &mut Vec<Issue>,
) -> usize {
    let n = list.as_ref().map_or(0, Vec::len);
    if n > max {
        errors.push(issue(
            field,
            format!("{n} entries, more than the {max} allowed"),
            format!("list at most {max}"),
        ));
    }
    n.min(max)
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

mod analysis;
mod gateway;
use analysis::{alerts, analysis, metrics, webhooks};

#[cfg(test)]
mod tests;
