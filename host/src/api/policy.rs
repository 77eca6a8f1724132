//! The `policies.fledge.dev/v1alpha1` API: `RolloutPolicy` (namespaced) and
//! `ClusterRolloutPolicy` (cluster-scoped), which say where a policy
//! component comes from and how it may run. Both kinds share one spec.
//!
//! [`validate_policy`] checks a spec against the operator's maximums; every
//! error names the field and the fix. `config` reaches the policy through
//! the `config` import of `fledge:policy@0.1.1`.
use super::{duration, Issue};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub const POLICY_GROUP: &str = "policies.fledge.dev";
pub const POLICY_VERSION: &str = "v1alpha1";
pub const ROLLOUT_POLICY: &str = "RolloutPolicy";
pub const CLUSTER_ROLLOUT_POLICY: &str = "ClusterRolloutPolicy";

/// Built-in policies this version ships.
pub const BUILTINS: &[&str] = &["flagger", "statistical", "change-window"];
/// The capability that lets a policy ask for range queries of its own.
pub const METRIC_QUERY: &str = "metric-query";
/// Largest `config`: entries, and bytes of one key or value.
pub const MAX_CONFIG_ENTRIES: usize = 64;
pub const MAX_CONFIG_BYTES: usize = 4096;

/// `spec` of a RolloutPolicy or ClusterRolloutPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutPolicySpec {
    /// A policy built into the operator, by name (`flagger`, `statistical`,
    /// `change-window`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// A component held in a ConfigMap of the policy's namespace (the
    /// operator's namespace for a ClusterRolloutPolicy), as a binaryData entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// A component fetched over http or https; `sha256` is required with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The component's sha256, 64 hex digits: required with `url`, checked
    /// against a ConfigMap's bytes when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Settings the policy reads (the `config` import of the policy
    /// contract): a string map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<PolicyLimits>,
    /// Host capabilities the policy may use: `metric-query` lets it ask for
    /// range queries of its own, answered before each decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// `enforce` (the default): decisions are acted on. `shadow`: the policy
    /// judges beside the enforcing one, its disagreements are recorded, and
    /// it never changes traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The key of the `binaryData` entry holding the component.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyLimits {
    /// Wall-clock time one decision may take (`50ms`); at most the operator's
    /// `--policy-deadline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Linear memory one decision may use (`16Mi`, `1048576`); at most the
    /// operator's memory limit, at least 1Mi.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// `status` of a policy object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicyStatus {
    /// `sha256:<hex>` of the component in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<PolicyCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Where a valid policy's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Builtin(String),
    ConfigMap {
        name: String,
        key: String,
        sha256: Option<String>,
    },
    Url {
        url: String,
        sha256: String,
    },
}

/// The operator's bounds on what a policy object may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maximums {
    pub deadline: Duration,
    pub memory: u64,
}

/// A policy spec that passed [`validate_policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPolicy {
    pub source: Source,
    /// Per-decision bounds, each within the operator's.
    pub deadline: Option<Duration>,
    pub memory: Option<u64>,
    /// `spec.config`, empty when not set.
    pub config: BTreeMap<String, String>,
    /// `spec.capabilities` grants `metric-query`.
    pub metric_query: bool,
    /// `spec.mode: shadow`.
    pub shadow: bool,
}

fn issue(field: &str, problem: impl Into<String>, fix: impl Into<String>) -> Issue {
    Issue {
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A sha256 as written (`abc…` or `sha256:abc…`), lower-cased without the prefix.
pub fn normalise_sha256(s: &str) -> Option<String> {
    let hex = s.trim().strip_prefix("sha256:").unwrap_or(s.trim());
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Parses a memory size: bytes, or a Kubernetes binary quantity (`Ki`, `Mi`, `Gi`).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, factor) = match s {
        _ if s.ends_with("Ki") => (&s[..s.len() - 2], 1u64 << 10),
        _ if s.ends_with("Mi") => (&s[..s.len() - 2], 1 << 20),
        _ if s.ends_with("Gi") => (&s[..s.len() - 2], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("`{s}` is not a memory size (use e.g. `16Mi` or a number of bytes)"))
}

/// Checks a policy spec; all problems at once.
pub fn validate_policy(spec: &RolloutPolicySpec, max: Maximums) -> Result<ValidPolicy, Vec<Issue>> {
    let mut issues = Vec::new();
    let sha256 = match nonempty(&spec.sha256) {
        None => None,
        Some(s) => match normalise_sha256(s) {
            Some(h) => Some(h),
            None => {
                issues.push(issue(
                    "spec.sha256",
                    format!("`{s}` is not a sha256"),
                    "write the component's sha256 as 64 hex digits (`sha256sum policy.wasm`)",
                ));
                None
            }
        },
    };
    let given: Vec<&str> = [
        ("builtin", spec.builtin.is_some()),
        ("configMap", spec.config_map.is_some()),
        ("url", spec.url.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, set)| set.then_some(f))
    .collect();
    let source = match given.as_slice() {
        [] => {
            issues.push(issue(
                "spec",
                "no module source",
                "set exactly one of spec.builtin, spec.configMap or spec.url",
            ));
            None
        }
        [_] => source(spec, sha256.clone(), &mut issues),
        many => {
            issues.push(issue(
                "spec",
                format!("{} are all set", many.join(" and ")),
                "set exactly one of spec.builtin, spec.configMap or spec.url",
            ));
            None
        }
    };
    if spec.builtin.is_some() && spec.sha256.is_some() {
        issues.push(issue(
            "spec.sha256",
            "a built-in policy has no sha256 to check",
            "remove spec.sha256, or use spec.configMap or spec.url",
        ));
    }
    if let Some(config) = &spec.config {
        if config.len() > MAX_CONFIG_ENTRIES {
            issues.push(issue(
                "spec.config",
                format!("{} entries, more than {MAX_CONFIG_ENTRIES}", config.len()),
                format!("keep at most {MAX_CONFIG_ENTRIES} entries"),
            ));
        }
        for (k, v) in config {
            if k.len() > MAX_CONFIG_BYTES || v.len() > MAX_CONFIG_BYTES {
                issues.push(issue(
                    &format!("spec.config.{k}"),
                    format!("longer than {MAX_CONFIG_BYTES} bytes"),
                    "shorten the key and its value",
                ));
            }
        }
    }
    let mut metric_query = false;
    if let Some(caps) = &spec.capabilities {
        for (i, c) in caps.iter().enumerate() {
            if c == METRIC_QUERY {
                metric_query = true;
            } else {
                issues.push(issue(
                    &format!("spec.capabilities[{i}]"),
                    format!("`{c}` is not a capability"),
                    format!("remove it (the only capability is {METRIC_QUERY})"),
                ));
            }
        }
    }
    let shadow = match spec.mode.as_deref() {
        None | Some("enforce") => false,
        Some("shadow") => true,
        Some(other) => {
            issues.push(issue(
                "spec.mode",
                format!("`{other}` is not a mode"),
                "set spec.mode to enforce or shadow",
            ));
            false
        }
    };
    let mut deadline = None;
    let mut memory = None;
    if let Some(l) = &spec.limits {
        if let Some(d) = nonempty(&l.deadline) {
            match duration::parse(d) {
                Ok(d) if d.is_zero() => issues.push(issue(
                    "spec.limits.deadline",
                    "zero",
                    "give a deadline above zero, e.g. 50ms",
                )),
                Ok(d) if d > max.deadline => issues.push(issue(
                    "spec.limits.deadline",
                    format!(
                        "{} is above the operator's maximum of {}",
                        duration::format(d),
                        duration::format(max.deadline)
                    ),
                    format!(
                        "set at most {}, or raise the operator's --policy-deadline",
                        duration::format(max.deadline)
                    ),
                )),
                Ok(d) => deadline = Some(d),
                Err(e) => issues.push(issue("spec.limits.deadline", e, "write e.g. 50ms")),
            }
        }
        if let Some(m) = nonempty(&l.memory) {
            match parse_memory(m) {
                Ok(m) if m < 1 << 20 => issues.push(issue(
                    "spec.limits.memory",
                    format!("{m} bytes is below 1Mi"),
                    "set at least 1Mi",
                )),
                Ok(m) if m > max.memory => issues.push(issue(
                    "spec.limits.memory",
                    format!(
                        "{m} bytes is above the operator's maximum of {}",
                        max.memory
                    ),
                    format!("set at most {}Mi", max.memory >> 20),
                )),
                Ok(m) => memory = Some(m),
                Err(e) => issues.push(issue("spec.limits.memory", e, "write e.g. 16Mi")),
            }
        }
    }
    match source {
        Some(source) if issues.is_empty() => Ok(ValidPolicy {
            source,
            deadline,
            memory,
            config: spec.config.clone().unwrap_or_default(),
            metric_query,
            shadow,
        }),
        _ => Err(issues),
    }
}

/// The one source `spec` sets.
fn source(
    spec: &RolloutPolicySpec,
    sha256: Option<String>,
    issues: &mut Vec<Issue>,
) -> Option<Source> {
    if let Some(b) = &spec.builtin {
        if BUILTINS.contains(&b.as_str()) {
            return Some(Source::Builtin(b.clone()));
        }
        issues.push(issue(
            "spec.builtin",
            format!("`{b}` is not a built-in policy"),
            format!("use one of: {}", BUILTINS.join(", ")),
        ));
        return None;
    }
    if let Some(cm) = &spec.config_map {
        let name = nonempty(&cm.name);
        let key = nonempty(&cm.key);
        if name.is_none() {
            issues.push(issue(
                "spec.configMap.name",
                "missing",
                "name the ConfigMap that holds the component",
            ));
        }
        if key.is_none() {
            issues.push(issue(
                "spec.configMap.key",
                "missing",
                "name the binaryData key that holds the component (e.g. policy.wasm)",
            ));
        }
        return Some(Source::ConfigMap {
            name: name?.to_string(),
            key: key?.to_string(),
            sha256,
        });
    }
    let url = nonempty(&spec.url)?;
    let ok_scheme = url.starts_with("http://") || url.starts_with("https://");
    if !ok_scheme || reqwest::Url::parse(url).is_err() {
        issues.push(issue(
            "spec.url",
            format!("`{url}` is not an http or https URL"),
            "write an http:// or https:// URL of the component",
        ));
        return None;
    }
    match sha256 {
        Some(sha256) => Some(Source::Url {
            url: url.to_string(),
            sha256,
        }),
        None => {
            if spec.sha256.is_none() {
                issues.push(issue(
                    "spec.sha256",
                    "missing: a fetched component must be pinned",
                    "add the component's sha256 (64 hex digits, `sha256sum policy.wasm`)",
                ));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Maximums = Maximums {
        deadline: Duration::from_millis(100),
        memory: 32 << 20,
    };
    const SHA: &str = "5f0c6a1e0a4c2b3d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d";

    fn spec(yaml: &str) -> RolloutPolicySpec {
        let doc = crate::api::yaml::documents(yaml).unwrap().remove(0);
        crate::api::yaml::typed(&doc).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(yaml: &str) -> Vec<String> {
        validate_policy(&spec(yaml), MAX)
            .expect_err("invalid")
            .iter()
            .map(Issue::to_string)
            .collect()
    }

    #[test]
    fn each_source_reads_as_what_it_says() {
        assert_eq!(
            validate_policy(&spec("builtin: flagger"), MAX)
                .unwrap()
                .source,
            Source::Builtin("flagger".into())
        );
        assert_eq!(
            validate_policy(
                &spec(&format!(
                    "configMap: {{name: p, key: policy.wasm}}\nsha256: sha256:{}",
                    SHA.to_uppercase()
                )),
                MAX
            )
            .unwrap()
            .source,
            Source::ConfigMap {
                name: "p".into(),
                key: "policy.wasm".into(),
                sha256: Some(SHA.into())
            }
        );
        let v = validate_policy(
            &spec(&format!(
                "url: https://example.test/p.wasm\nsha256: {SHA}\nlimits: {{deadline: 50ms, memory: 16Mi}}\nmode: enforce\nconfig: {{a: b}}"
            )),
            MAX,
        )
        .unwrap();
        assert_eq!(
            v,
            ValidPolicy {
                source: Source::Url {
                    url: "https://example.test/p.wasm".into(),
                    sha256: SHA.into()
                },
                deadline: Some(Duration::from_millis(50)),
                memory: Some(16 << 20),
                config: [("a".to_string(), "b".to_string())].into(),
                metric_query: false,
                shadow: false,
            }
        );
        let v = validate_policy(
            &spec("builtin: flagger\nmode: shadow\ncapabilities: [metric-query]"),
            MAX,
        )
        .unwrap();
        assert!(v.shadow && v.metric_query && v.config.is_empty(), "{v:?}");
    }

    #[test]
    fn exactly_one_source() {
        assert_eq!(
            errors("mode: enforce"),
            ["spec: no module source; set exactly one of spec.builtin, spec.configMap or spec.url"]
        );
        let e = errors(&format!(
            "builtin: flagger\nurl: https://x.test/p.wasm\nsha256: {SHA}"
        ));
        assert!(
            e.iter()
                .any(|e| e.starts_with("spec: builtin and url are all set")),
            "{e:?}"
        );
    }

    #[test]
    fn a_url_needs_a_well_formed_sha256() {
        assert_eq!(
            errors("url: https://x.test/p.wasm"),
            ["spec.sha256: missing: a fetched component must be pinned; add the component's sha256 (64 hex digits, `sha256sum policy.wasm`)"]
        );
        let e = errors("url: https://x.test/p.wasm\nsha256: abc");
        assert!(
            e[0].starts_with("spec.sha256: `abc` is not a sha256"),
            "{e:?}"
        );
        let e = errors(&format!("url: ftp://x.test/p.wasm\nsha256: {SHA}"));
        assert!(
            e[0].starts_with("spec.url: `ftp://x.test/p.wasm` is not an http or https URL"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_builtins_modes_and_capabilities_are_refused_by_name() {
        for b in ["statistical", "change-window"] {
            assert_eq!(
                validate_policy(&spec(&format!("builtin: {b}")), MAX)
                    .unwrap()
                    .source,
                Source::Builtin(b.into())
            );
        }
        assert_eq!(
            errors("builtin: nope"),
            ["spec.builtin: `nope` is not a built-in policy; use one of: flagger, statistical, change-window"]
        );
        assert!(errors("builtin: flagger\nmode: loud")[0]
            .starts_with("spec.mode: `loud` is not a mode"));
        assert_eq!(
            errors("builtin: flagger\ncapabilities: [metric-query, time-travel]"),
            ["spec.capabilities[1]: `time-travel` is not a capability; remove it (the only capability is metric-query)"]
        );
        assert!(errors(&format!("builtin: flagger\nsha256: {SHA}"))[0]
            .starts_with("spec.sha256: a built-in policy has no sha256"));
    }

    #[test]
    fn limits_stay_within_the_operators_maximums() {
        assert!(errors("builtin: flagger\nlimits: {deadline: 1s}")[0]
            .starts_with("spec.limits.deadline: 1s is above the operator's maximum of 100ms"));
        assert!(errors("builtin: flagger\nlimits: {deadline: 0s}")[0]
            .starts_with("spec.limits.deadline: zero"));
        assert!(errors("builtin: flagger\nlimits: {memory: 64Mi}")[0]
            .starts_with("spec.limits.memory: 67108864 bytes is above the operator's maximum"));
        assert!(errors("builtin: flagger\nlimits: {memory: 512Ki}")[0].contains("below 1Mi"));
        assert!(
            errors("builtin: flagger\nlimits: {memory: lots}")[0].contains("is not a memory size")
        );
    }

    #[test]
    fn missing_configmap_fields_are_named() {
        let e = errors("configMap: {name: p}");
        assert_eq!(
            e,
            ["spec.configMap.key: missing; name the binaryData key that holds the component (e.g. policy.wasm)"]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let doc = crate::api::yaml::documents("builtin: flagger\nsha: x")
            .unwrap()
            .remove(0);
        assert!(crate::api::yaml::typed::<RolloutPolicySpec>(&doc).is_err());
    }
}
