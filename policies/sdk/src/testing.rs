//! Inputs for testing a policy natively: the App Mesh guide's Canary and its
//! two built-in metrics, ready to adjust with struct update syntax.
use crate::*;

/// The guide's Canary (interval 1m, threshold 5, maxWeight 50, stepWeight 5)
/// at the start of its analysis: Progressing, weight 0, both Deployments ready,
/// no checks gathered yet.
pub fn guide_input() -> PolicyInput {
    PolicyInput {
        canary: "podinfo.test".into(),
        strategy: Strategy::Canary,
        analysis: Analysis {
            interval_seconds: 60,
            threshold: 5,
            max_weight: Some(50),
            step_weight: Some(5),
            ..Analysis::default()
        },
        state: State {
            phase: Phase::Progressing,
            canary_weight: 0,
            primary_weight: 100,
            iteration: 0,
            failed_checks: 0,
            seconds_in_phase: 0,
        },
        metrics: vec![],
        webhooks: vec![],
        canary_ready: Readiness::Ready,
        primary_ready: Readiness::Ready,
    }
}

/// `request-success-rate` with the guide's `thresholdRange: {min: 99}`.
pub fn success_rate(percent: f64) -> MetricResult {
    MetricResult {
        name: "request-success-rate".into(),
        value: MetricValue::Value(percent),
        min: Some(99.0),
        max: None,
        unit: MetricUnit::Percent,
    }
}

/// `request-duration` (P99, ms) with the guide's `thresholdRange: {max: 500}`.
pub fn duration(ms: f64) -> MetricResult {
    MetricResult {
        name: "request-duration".into(),
        value: MetricValue::Value(ms),
        min: None,
        max: Some(500.0),
        unit: MetricUnit::Milliseconds,
    }
}

/// A webhook result.
pub fn webhook(name: &str, kind: WebhookKind, passed: bool) -> WebhookResult {
    WebhookResult {
        name: name.into(),
        kind,
        passed,
        message: if passed {
            "ok".into()
        } else {
            "exit status 1".into()
        },
    }
}
