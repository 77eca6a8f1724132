//! What `--policy` names for the commands that judge offline (`fledge
//! simulate`, `fledge policy test`, `fledge policy replay`): a component
//! file, or the RolloutPolicy / ClusterRolloutPolicy a team will apply,
//! read as the operator reads it (builtin, config, capabilities, limits).
use anyhow::{bail, Context};
use fledge::api::policy::{validate_policy, Maximums, Source};
use fledge::api::yaml;
use fledge::operator::policies::bind;
use fledge::policy::{builtin_component, Policy, PolicyRuntime};
use std::path::Path;

/// Parses `KEY=VALUE` for `--policy-config`.
pub fn config_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Loads the policy `path` names. `extra` (`--policy-config`) is added to a
/// component file's config, or overrides entries of a policy object's.
pub fn load(
    runtime: &PolicyRuntime,
    path: &Path,
    extra: &[(String, String)],
) -> anyhow::Result<Policy> {
    let name = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {name}"))?;
    if bytes.starts_with(b"\0asm") {
        let policy = runtime
            .load(&bytes)
            .with_context(|| format!("{name}: cannot load the policy"))?;
        if policy.needs_metric_query() {
            eprintln!(
                "note: {name} asks for range queries of its own: its policy object needs \
                 spec.capabilities: [metric-query]"
            );
        }
        return Ok(policy.with_config(extra.iter().cloned().collect()));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!("{name}: neither a WebAssembly component nor a YAML policy object")
    })?;
    let doc: serde_json::Value =
        yaml::from_str(&text).map_err(|i| anyhow::anyhow!("{name}: {i}"))?;
    let kind = doc["kind"].as_str().unwrap_or_default();
    if kind != "RolloutPolicy" && kind != "ClusterRolloutPolicy" {
        bail!(
            "{name}: kind: `{kind}` is not a policy object; pass a RolloutPolicy or \
             ClusterRolloutPolicy, or a component file (.wasm)"
        );
    }
    let spec = yaml::typed(&doc["spec"]).map_err(|i| anyhow::anyhow!("{name}: spec.{i}"))?;
    let max = Maximums {
        deadline: std::time::Duration::from_secs(3600),
        memory: runtime.config().memory_limit,
    };
    let valid = validate_policy(&spec, max).map_err(|issues| {
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{name}: {}", text.join("; "))
    })?;
    let component = match &valid.source {
        Source::Builtin(b) => builtin_component(b).ok_or_else(|| {
            anyhow::anyhow!("{name}: spec.builtin: `{b}` is not a built-in policy")
        })?,
        Source::ConfigMap { .. } | Source::Url { .. } => bail!(
            "{name}: spec: the component comes from a ConfigMap or URL, which only the \
             operator fetches; pass the component file with --policy FILE.wasm and its \
             config with --policy-config KEY=VALUE"
        ),
    };
    let policy = runtime
        .load(component)
        .with_context(|| format!("{name}: cannot load the policy"))?;
    let mut valid = valid;
    valid.config.extend(extra.iter().cloned());
    bind(policy, &valid).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}
