//! Hostile values in every numeric and duration field of a Canary and of a
//! scenario: loading answers Ok or an error naming that field, and never
//! panics; what loads also simulates to an end within its bound.
use super::*;
use crate::policy::NativeJudge;
use crate::simulate::{run, scenario};
use proptest::prelude::*;
use serde_json::json;

const GUIDE: &str = include_str!("../../../../examples/podinfo/canary.yaml");
const SCENARIO: &str = "trigger: {image: podinfo:2}\nrollout: {canaryReadyAfter: 1, primaryReadyAfter: 1}\nupdates: [{afterStep: 3, image: podinfo:3}]\nwebhooks: {load-test: pass}\nmetrics: {request-success-rate: 99.9}\nmaxSteps: 200\n";

/// Canary fields (JSON pointer) with the texts an error about them may carry.
const CANARY_FIELDS: &[(&str, &[&str])] = &[
    (
        "/spec/progressDeadlineSeconds",
        &["spec.progressDeadlineSeconds"],
    ),
    ("/spec/service/port", &["spec.service.port"]),
    ("/spec/service/timeout", &["spec.service.timeout"]),
    (
        "/spec/service/retries/attempts",
        &["spec.service.retries.attempts"],
    ),
    (
        "/spec/service/retries/perTryTimeout",
        &["spec.service.retries.perTryTimeout"],
    ),
    ("/spec/analysis/interval", &["spec.analysis.interval"]),
    ("/spec/analysis/threshold", &["spec.analysis.threshold"]),
    ("/spec/analysis/maxWeight", &["spec.analysis.maxWeight"]),
    (
        "/spec/analysis/stepWeight",
        &["spec.analysis.stepWeight", "no stepWeight"],
    ),
    (
        "/spec/analysis/stepWeightPromotion",
        &["spec.analysis.stepWeightPromotion"],
    ),
    ("/spec/analysis/iterations", &["spec.analysis.iterations"]),
    (
        "/spec/analysis/mirrorWeight",
        &["spec.analysis.mirrorWeight"],
    ),
    (
        "/spec/analysis/canaryReadyThreshold",
        &["spec.analysis.canaryReadyThreshold"],
    ),
    (
        "/spec/analysis/primaryReadyThreshold",
        &["spec.analysis.primaryReadyThreshold"],
    ),
    (
        "/spec/analysis/metrics/0/interval",
        &[
            "metrics[0].interval",
            "metrics[0] (request-success-rate).interval",
        ],
    ),
    (
        "/spec/analysis/metrics/0/thresholdRange/min",
        &[
            "metrics[0].thresholdRange.min",
            "metrics[0] (request-success-rate)",
        ],
    ),
    (
        "/spec/analysis/metrics/1/thresholdRange/max",
        &[
            "metrics[1].thresholdRange.max",
            "metrics[1] (request-duration)",
        ],
    ),
    (
        "/spec/analysis/metrics/1/threshold",
        &[
            "metrics[1].threshold",
            "metrics[1] (request-duration).threshold",
        ],
    ),
    (
        "/spec/analysis/webhooks/0/timeout",
        &[
            "webhooks[0].timeout",
            "webhooks[0] (acceptance-test).timeout",
        ],
    ),
    (
        "/spec/analysis/webhooks/0/retries",
        &[
            "webhooks[0].retries",
            "webhooks[0] (acceptance-test).retries",
        ],
    ),
    (
        "/spec/analysis/sessionAffinity/maxAge",
        &["spec.analysis.sessionAffinity"],
    ),
    (
        "/spec/autoscalerRef/primaryScalerReplicas/minReplicas",
        &["primaryScalerReplicas.minReplicas"],
    ),
];

const SCENARIO_FIELDS: &[(&str, &[&str])] = &[
    ("/rollout/canaryReadyAfter", &["rollout.canaryReadyAfter"]),
    ("/rollout/primaryReadyAfter", &["rollout.primaryReadyAfter"]),
    ("/maxSteps", &["maxSteps"]),
    (
        "/updates/0/afterStep",
        &["updates[0].afterStep", "updates[0]"],
    ),
    (
        "/metrics/request-success-rate",
        &["metrics.request-success-rate"],
    ),
    ("/webhooks/load-test", &["webhooks.load-test"]),
];

/// YAML scalars (and a few collections) a careless or hostile user might write.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..200).prop_map(|n| n.to_string()),
        Just("99999999999999999999999999".to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just(".nan".to_string()),
        Just(".inf".to_string()),
        Just("-.inf".to_string()),
        (
            "[0-9]{1,30}",
            prop::sample::select(vec!["ns", "ms", "s", "m", "h"])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        Just("\"1 minute\"".to_string()),
        "[a-z]{1,8}".prop_map(|s| format!("\"{s}\"")),
        Just("{a: {b: 1}}".to_string()),
        Just("[1, [2]]".to_string()),
        Just("~".to_string()),
        Just("true".to_string()),
    ]
}

/// `doc` with the value at `pointer` replaced by the YAML text `value`
/// (creating missing mappings on the way), as YAML text.
fn with_value(doc: &Value, pointer: &str, value: &str) -> String {
    let mut doc = doc.clone();
    let mut at = &mut doc;
    let keys: Vec<&str> = pointer.split('/').skip(1).collect();
    for (i, key) in keys.iter().enumerate() {
        let last = i + 1 == keys.len();
        at = match at {
            Value::Array(items) => &mut items[key.parse::<usize>().expect("index")],
            Value::Object(map) => map.entry(key.to_string()).or_insert_with(|| {
                if last {
                    Value::Null
                } else {
                    json!({})
                }
            }),
            _ => unreachable!("pointer through a scalar"),
        };
    }
    *at = Value::String("@@VALUE@@".into());
    // JSON is YAML: put the raw YAML text where the marker string is.
    serde_json::to_string(&doc)
        .expect("json")
        .replace("\"@@VALUE@@\"", value)
}

fn names_the_field(err: &str, names: &[&str]) -> bool {
    names.iter().any(|n| err.contains(n))
}

fn simulate_if_valid(
    canary: &str,
    scenario_text: &str,
    names: &[&str],
) -> Result<(), TestCaseError> {
    let loaded = load("canary.yaml", canary, &[]);
    let inputs = match loaded {
        Ok(inputs) => inputs,
        Err(e) => {
            let e = e.to_string();
            prop_assert!(
                names_the_field(&e, names),
                "error does not name {names:?}: {e}"
            );
            return Ok(());
        }
    };
    let scenario = match scenario::parse(scenario_text) {
        Ok(s) => s,
        Err(e) => {
            let e = e.to_string();
            prop_assert!(
                names_the_field(&e, names),
                "error does not name {names:?}: {e}"
            );
            return Ok(());
        }
    };
    if let Err(e) = scenario.check(&inputs) {
        let e = e.to_string();
        prop_assert!(
            names_the_field(&e, names),
            "error does not name {names:?}: {e}"
        );
        return Ok(());
    }
    let report = run(&inputs, scenario.clone(), &NativeJudge);
    prop_assert!(report.steps <= scenario.step_bound());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hostile_canary_values_load_or_name_their_field(
        field in prop::sample::select(CANARY_FIELDS),
        value in hostile(),
    ) {
        let doc = yaml::documents(GUIDE).expect("guide").remove(0);
        let canary = with_value(&doc, field.0, &value);
        simulate_if_valid(&canary, SCENARIO, field.1)?;
    }

    #[test]
    fn hostile_scenario_values_load_or_name_their_field(
        field in prop::sample::select(SCENARIO_FIELDS),
        value in hostile(),
    ) {
        let doc = yaml::documents(SCENARIO).expect("scenario").remove(0);
        let scenario = with_value(&doc, field.0, &value);
        simulate_if_valid(GUIDE, &scenario, field.1)?;
    }
}
