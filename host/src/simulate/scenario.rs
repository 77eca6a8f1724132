//! The scripted world of a simulation: what changes, how fast Deployments
//! roll out, what webhooks answer and what metrics read.
//!
//! [`parse`] reads a scenario and [`Scenario::check`] holds it against the
//! loaded target: every error names the field, the accepted forms or range, and
//! the fix, before a step runs.
use super::load::Inputs;
use super::world::World;
use crate::api::{yaml, Issue};
use crate::core::revision;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Default and largest `maxSteps`.
pub const DEFAULT_MAX_STEPS: u32 = 1000;
pub const MAX_STEPS: u32 = 100_000;
/// Most `updates`, and most entries of one webhook or metric script.
pub const MAX_UPDATES: usize = 1000;
pub const MAX_SCRIPT_ENTRIES: usize = 10_000;

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
    /// By range query name (a policy with the `metric-query` capability):
    /// `{mean, spread}` for samples around `mean`, or `error` / `nodata`.
    #[serde(default)]
    pub series: BTreeMap<String, super::series::SeriesScript>,
    /// Further changes of the target, each after a number of steps since the trigger.
    #[serde(default)]
    pub updates: Vec<Update>,
    /// Upper bound on analysis steps after the trigger (default 1000).
    #[serde(default)]
    pub max_steps: Option<u32>,
    /// When the run starts on the virtual clock: an RFC 3339 time such as
    /// `2026-12-05T08:00:00Z` (default [`super::START`], 2026-01-01T00:00:00Z).
    #[serde(default)]
    pub start: Option<String>,
}

/// Reads a scenario. Errors name the field and list the accepted forms.
pub fn parse(text: &str) -> Result<Scenario, Issue> {
    let scenario = yaml::from_str::<Scenario>(text).map_err(|mut issue| {
        explain_script(&mut issue, text);
        issue
    })?;
    scenario.start_time()?;
    Ok(scenario)
}

/// For a webhook answer or metric reading that is none of the accepted forms:
/// point at the list entry at fault, and say what is accepted.
fn explain_script(issue: &mut Issue, text: &str) {
    let (section, forms) = if issue.field.starts_with("webhooks.") {
        let words = quoted(&words_of::<Answer>());
        (
            "webhooks",
            format!(
                "{}, or a list of those (one per call, the last repeats)",
                yaml::or_list(&words).replace(" or ", ", ")
            ),
        )
    } else if issue.field.starts_with("metrics.") {
        let words = quoted(&words_of::<Word>());
        (
            "metrics",
            format!(
                "a number, {}, or a list of those (one per query, the last repeats)",
                words.join(", ")
            ),
        )
    } else {
        return;
    };
    let name = &issue.field[section.len() + 1..];
    if name.contains('[') || name.contains('.') {
        return;
    }
    let doc = yaml::documents(text)
        .ok()
        .and_then(|d| d.into_iter().next());
    let value = doc
        .as_ref()
        .and_then(|d| d.get(section))
        .and_then(|s| s.get(name));
    if let Some(Value::Array(items)) = value {
        let bad = items.iter().position(|v| match section {
            "webhooks" => serde_json::from_value::<Answer>(v.clone()).is_err(),
            _ => !(v.is_number() || serde_json::from_value::<Word>(v.clone()).is_ok()),
        });
        if let Some(i) = bad {
            issue.field = format!("{}[{i}]", issue.field);
            issue.problem = format!("{} is not accepted", yaml::show(&items[i]));
        }
    } else if let Some(v) = value {
        issue.problem = format!("{} is not accepted", yaml::show(v));
    }
    issue.fix = format!("use {forms}");
}

/// The words a unit-variant enum accepts, as serde lists them.
fn words_of<T: serde::de::DeserializeOwned>() -> Vec<String> {
    match serde_json::from_value::<T>(Value::String(String::new())) {
        Ok(_) => Vec::new(),
        Err(e) => yaml::backticked(&e.to_string())
            .into_iter()
            .skip(1)
            .collect(),
    }
}

fn quoted(words: &[String]) -> Vec<String> {
    words.iter().map(|w| format!("`{w}`")).collect()
}

fn issue(field: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Issue {
    Issue {
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

impl Scenario {
    /// Unix seconds at which the run starts.
    pub fn start_time(&self) -> Result<i64, Issue> {
        let Some(text) = &self.start else {
            return Ok(super::START);
        };
        let bad = |problem: String| {
            issue(
                "start",
                problem,
                "write an RFC 3339 time, e.g. 2026-12-05T08:00:00Z (UTC) or 2026-12-05T09:00:00+01:00",
            )
        };
        let t = crate::metrics::aws::parse_time(text)
            .map_err(|_| bad(format!("`{text}` is not an RFC 3339 time")))?;
        let secs = crate::metrics::aws::unix_seconds(t);
        // The virtual clock runs on from here; keep it well inside the calendar.
        if !(0..=253_402_300_799).contains(&secs) {
            return Err(bad(format!("`{text}` is before 1970 or after 9999")));
        }
        Ok(secs)
    }

    /// The step bound of this scenario.
    pub fn step_bound(&self) -> u32 {
        self.max_steps.unwrap_or(DEFAULT_MAX_STEPS)
    }

    /// Holds the scenario against the loaded target: numbers within their
    /// ranges, lists within their lengths, and every change naming a
    /// container and config the target has and actually changing its revision.
    pub fn check(&self, inputs: &Inputs) -> Result<(), Issue> {
        let bound = self.step_bound();
        if !(1..=MAX_STEPS).contains(&bound) {
            return Err(issue(
                "maxSteps",
                format!("{bound} is outside 1..={MAX_STEPS}"),
                format!("use a number of steps in that range (default {DEFAULT_MAX_STEPS})"),
            ));
        }
        for (field, v) in [
            ("rollout.canaryReadyAfter", self.rollout.canary_ready_after),
            (
                "rollout.primaryReadyAfter",
                self.rollout.primary_ready_after,
            ),
        ] {
            if v > bound {
                return Err(issue(
                    field,
                    format!("{v} is outside 0..={bound} (maxSteps)"),
                    "use a number of steps up to maxSteps",
                ));
            }
        }
        if self.updates.len() > MAX_UPDATES {
            return Err(issue(
                "updates",
                format!(
                    "{} entries, more than the {MAX_UPDATES} allowed",
                    self.updates.len()
                ),
                format!("list at most {MAX_UPDATES} updates"),
            ));
        }
        let scripts = self
            .webhooks
            .iter()
            .map(|(n, s)| (format!("webhooks.{n}"), s.len()))
            .chain(
                self.metrics
                    .iter()
                    .map(|(n, s)| (format!("metrics.{n}"), s.len())),
            );
        for (field, len) in scripts {
            if len > MAX_SCRIPT_ENTRIES {
                return Err(issue(
                    field,
                    format!("{len} entries, more than the {MAX_SCRIPT_ENTRIES} allowed"),
                    "shorten the list: its last entry repeats for every further call",
                ));
            }
        }
        for (name, script) in &self.series {
            script.check(name)?;
        }
        if self.trigger.is_empty() {
            return Err(issue(
                "trigger",
                "no change to roll out",
                "set trigger.image (or env, configMaps, secrets)",
            ));
        }
        // Apply the changes in the order the run applies them, each to the
        // state the previous ones left.
        let mut changes: Vec<(String, u32, &Trigger)> =
            vec![("trigger".to_string(), 0, &self.trigger)];
        for (i, u) in self.updates.iter().enumerate() {
            let field = format!("updates[{i}]");
            if u.after_step >= bound {
                return Err(issue(
                    format!("{field}.afterStep"),
                    format!(
                        "{} is outside 0..={} (below maxSteps)",
                        u.after_step,
                        bound - 1
                    ),
                    "apply the update before the run's step bound, or raise maxSteps",
                ));
            }
            if u.change.is_empty() {
                return Err(issue(
                    field,
                    "changes nothing",
                    "set image, env, configMaps or secrets",
                ));
            }
            changes.push((field, u.after_step + 1, &u.change));
        }
        changes.sort_by_key(|(_, at, _)| *at);
        let mut world = World::new(
            inputs.target.clone(),
            inputs.hpa_min_replicas,
            inputs.configs.clone(),
            self.clone(),
        );
        let containers = container_names(&inputs.target.template);
        for (field, _, change) in changes {
            if let Some(name) = &change.container {
                if !containers.contains(name) {
                    return Err(issue(
                        format!("{field}.container"),
                        format!("the target has no container `{name}`"),
                        format!("name one of its containers: {}", containers.join(", ")),
                    ));
                }
            } else if containers.is_empty() && (change.image.is_some() || !change.env.is_empty()) {
                return Err(issue(
                    field,
                    "the target's pod template has no containers",
                    "give the target Deployment a container",
                ));
            }
            for key in change.config_keys() {
                if !inputs.configs.contains_key(&key) {
                    return Err(issue(
                        field,
                        format!("the target does not use {key}"),
                        "change a ConfigMap or Secret its pod template refers to (pass it with --target)",
                    ));
                }
            }
            let before = revision::revision(&world.target.template, &world.configs);
            world.change_target(change);
            if revision::revision(&world.target.template, &world.configs) == before {
                return Err(issue(
                    field,
                    "changes nothing: the target already runs this",
                    "change the image, env or config data to something the target does not have yet",
                ));
            }
        }
        Ok(())
    }
}

fn container_names(template: &Value) -> Vec<String> {
    template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
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
#[serde(from = "UpdateSpec")]
pub struct Update {
    /// Steps after the trigger at which this change is applied.
    pub after_step: u32,
    pub change: Trigger,
}

/// An `updates[]` entry as written: `afterStep` beside the fields of a trigger.
/// Spelled out (not flattened) so that unknown fields are refused by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UpdateSpec {
    after_step: u32,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    container: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    config_maps: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    secrets: BTreeMap<String, BTreeMap<String, String>>,
}

impl From<UpdateSpec> for Update {
    fn from(u: UpdateSpec) -> Update {
        Update {
            after_step: u.after_step,
            change: Trigger {
                image: u.image,
                container: u.container,
                env: u.env,
                config_maps: u.config_maps,
                secrets: u.secrets,
            },
        }
    }
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

impl<T> Script<T> {
    /// How many entries the script lists.
    pub fn len(&self) -> usize {
        match self {
            Script::One(_) => 1,
            Script::Many(vs) => vs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
        let s: Scenario = parse(
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
    fn start_places_the_run_in_time() {
        let at = |text: &str| parse(text).map(|s| s.start_time().unwrap());
        assert_eq!(at("trigger: {image: x}"), Ok(super::super::START));
        // Fri 2026-12-04 16:30 UTC, written in UTC and with an offset.
        assert_eq!(at("start: 2026-12-04T16:30:00Z"), Ok(1_796_401_800));
        assert_eq!(at("start: '2026-12-04T17:30:00+01:00'"), Ok(1_796_401_800));
        for bad in [
            "start: tomorrow",
            "start: 2026-13-04T16:30:00Z",
            "start: 1969-12-31T00:00:00Z",
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.field, "start", "{bad}");
            assert!(e.fix.contains("2026-12-05T08:00:00Z"), "{bad}: {e}");
        }
        assert!(parse("start: tomorrow")
            .unwrap_err()
            .to_string()
            .starts_with("start: `tomorrow` is not an RFC 3339 time"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = parse("rollouts: {}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "rollouts: unknown field; did you mean rollout?"
        );
    }
}
