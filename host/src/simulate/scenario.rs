//! The scripted world of a simulation: what changes, how fast Deployments
//! roll out, what webhooks answer and what metrics read.
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    /// The change that starts a rollout (what `kubectl set image` does).
    #[serde(default)]
    pub trigger: Trigger,
    #[serde(default)]
    pub rollout: RolloutSpeed,
    /// By webhook name: `pass`, `fail`, or a list with one entry per call (the last repeats).
    #[serde(default)]
    pub webhooks: BTreeMap<String, Script<Answer>>,
    /// By metric name: a number, `error`, or a list with one entry per query
    /// of that metric (the last repeats).
    #[serde(default)]
    pub metrics: BTreeMap<String, Script<Reading>>,
    /// Further changes of the target, each after a number of steps since the trigger.
    #[serde(default)]
    pub updates: Vec<Update>,
    /// Upper bound on analysis steps after the trigger (default 1000).
    #[serde(default)]
    pub max_steps: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Trigger {
    /// New image of the target's container.
    #[serde(default)]
    pub image: Option<String>,
    /// Which container (default: the first).
    #[serde(default)]
    pub container: Option<String>,
    /// Environment variables to set on the container (a template change).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// New `data` of ConfigMaps the target uses, by name.
    #[serde(default)]
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// New `data` of Secrets the target uses, by name (values base64, as in a Secret).
    #[serde(default)]
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

impl Trigger {
    pub fn is_empty(&self) -> bool {
        self.image.is_none()
            && self.env.is_empty()
            && self.config_maps.is_empty()
            && self.secrets.is_empty()
    }

    /// The tracked-config keys (`configmap/<name>`, `secret/<name>`) this change rewrites.
    pub fn config_keys(&self) -> impl Iterator<Item = String> + '_ {
        self.config_maps
            .keys()
            .map(|n| format!("configmap/{n}"))
            .chain(self.secrets.keys().map(|n| format!("secret/{n}")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Update {
    /// Steps after the trigger at which this change is applied.
    pub after_step: u32,
    #[serde(flatten)]
    pub change: Trigger,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RolloutSpeed {
    /// Steps before the scaled-up canary's replicas are available (default 0).
    #[serde(default)]
    pub canary_ready_after: u32,
    /// Steps before the primary's new replicas are available (default 0).
    #[serde(default)]
    pub primary_ready_after: u32,
    /// Steps before the primary's replicas are available after a promotion
    /// copied the new revision to it (default: `primaryReadyAfter`).
    #[serde(default)]
    pub promotion_ready_after: Option<u32>,
}

/// A value, or a list of values used one per call, the last repeating.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Script<T> {
    One(T),
    Many(Vec<T>),
}

impl<T: Clone> Script<T> {
    /// The answer to the `n`th call (0-based).
    pub fn nth(&self, n: usize) -> Option<T> {
        match self {
            Script::One(v) => Some(v.clone()),
            Script::Many(vs) => vs.get(n.min(vs.len().saturating_sub(1))).cloned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Answer {
    Pass,
    Fail,
}

/// A metric reading: a number, `error` for a failed query, or `nodata` for a
/// query that returns no sample (the canary gets no traffic).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Reading {
    Value(f64),
    Word(Word),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Word {
    Error,
    NoData,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_scenario() {
        let s: Scenario = serde_yaml::from_str(
            r#"
trigger:
  image: ghcr.io/stefanprodan/podinfo:6.0.1
rollout:
  canaryReadyAfter: 1
  primaryReadyAfter: 1
webhooks:
  acceptance-test: pass
  load-test: [pass, fail]
metrics:
  request-success-rate: [99.9, 99.8, 69.17, error, 100]
  request-duration: 120
"#,
        )
        .expect("parses");
        assert_eq!(s.rollout.canary_ready_after, 1);
        assert_eq!(s.webhooks["load-test"].nth(5), Some(Answer::Fail));
        assert_eq!(
            s.metrics["request-success-rate"].nth(3),
            Some(Reading::Word(Word::Error))
        );
        assert_eq!(
            s.metrics["request-duration"].nth(9),
            Some(Reading::Value(120.0))
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_yaml::from_str::<Scenario>("rollouts: {}").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `rollouts`"),
            "{err}"
        );
    }
}
