//! Reads the user's Canary and the objects it refers to, and checks that the
//! simulation has everything it needs. Errors name the file, the field and the fix.
use super::world::SimDeployment;
use crate::api::{self, yaml, AlertProvider, Canary, Issue, MetricTemplate};
use crate::core::revision;
use crate::core::rollout::{MetricSource, Rollout};
use serde_json::Value;
use std::collections::BTreeMap;

/// The bundled example target: Flagger's podinfo Deployment and HPA.
pub const PODINFO_DEPLOYMENT: &str = include_str!("../../../examples/podinfo/deployment.yaml");
pub const PODINFO_HPA: &str = include_str!("../../../examples/podinfo/hpa.yaml");

pub use crate::api::ALERT_PROVIDERS;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not YAML, or not an object of the expected shape: the issue names the
    /// line (YAML) or the field path (shape).
    #[error("{file}: {issue}")]
    Parse { file: String, issue: Issue },
    #[error("{file}: the Canary is not valid:\n{}", list(.issues))]
    Invalid { file: String, issues: Vec<Issue> },
    #[error("{file}: {field}: {problem}; {fix}")]
    Object {
        file: String,
        field: String,
        problem: String,
        fix: String,
    },
}

fn list(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything a simulation starts from.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub canary: Canary,
    pub rollout: Rollout,
    pub warnings: Vec<Issue>,
    pub target: SimDeployment,
    pub hpa_min_replicas: Option<i32>,
    /// `configmap/<name>` / `secret/<name>` → checksum of the data the target uses.
    pub configs: BTreeMap<String, String>,
    pub templates: BTreeMap<(String, String), MetricTemplate>,
}

fn object_err(
    file: &str,
    field: &str,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> LoadError {
    LoadError::Object {
        file: file.to_string(),
        field: field.to_string(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Parses every YAML document of `text`.
fn documents(file: &str, text: &str) -> Result<Vec<Value>, LoadError> {
    let docs = yaml::documents(text).map_err(|issue| LoadError::Parse {
        file: file.to_string(),
        issue,
    })?;
    Ok(docs.into_iter().filter(|v| !v.is_null()).collect())
}

/// One typed object; `what` prefixes the field path when a file holds several.
fn typed<T: serde::de::DeserializeOwned>(
    file: &str,
    what: &str,
    doc: &Value,
) -> Result<T, LoadError> {
    yaml::typed(doc).map_err(|mut issue| {
        if !what.is_empty() {
            issue.field = format!("{what}: {}", issue.field);
        }
        LoadError::Parse {
            file: file.to_string(),
            issue,
        }
    })
}

/// Loads a Canary from `canary_file` (`canary_text`) and its objects from
/// `targets` (file name, text); without targets, the bundled podinfo
/// Deployment and HPA renamed to the Canary's targetRef.
pub fn load(
    canary_file: &str,
    canary_text: &str,
    targets: &[(String, String)],
) -> Result<Inputs, LoadError> {
    let docs = documents(canary_file, canary_text)?;
    let doc = docs
        .into_iter()
        .find(|d| d.get("kind").and_then(Value::as_str) == Some("Canary"))
        .ok_or_else(|| {
            object_err(
                canary_file,
                "kind",
                "no Canary in this file",
                "pass the file that holds your `kind: Canary` (apiVersion flagger.app/v1beta1)",
            )
        })?;
    let canary: Canary = typed(canary_file, "", &doc)?;
    let validated = api::validate(&canary).map_err(|issues| LoadError::Invalid {
        file: canary_file.to_string(),
        issues,
    })?;
    let rollout = validated.rollout;

    let bundled;
    let targets: &[(String, String)] = if targets.is_empty() {
        let rename =
            |text: &str, name: &str| text.replace("name: podinfo\n", &format!("name: {name}\n"));
        bundled = vec![
            (
                "examples/podinfo/deployment.yaml".to_string(),
                rename(PODINFO_DEPLOYMENT, &rollout.target),
            ),
            (
                "examples/podinfo/hpa.yaml".to_string(),
                rename(
                    PODINFO_HPA,
                    rollout.autoscaler.as_deref().unwrap_or(&rollout.target),
                ),
            ),
        ];
        &bundled
    } else {
        targets
    };

    let mut deployment = None;
    let mut hpa_min_replicas = None;
    let mut objects: BTreeMap<String, Value> = BTreeMap::new();
    let mut templates = BTreeMap::new();
    let mut providers = std::collections::BTreeSet::new();
    for (file, text) in targets {
        for doc in documents(file, text)? {
            let kind = doc
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let name = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match kind.as_str() {
                "Deployment" if name == rollout.target => deployment = Some((file.clone(), doc)),
                "HorizontalPodAutoscaler" if Some(&name) == rollout.autoscaler.as_ref() => {
                    hpa_min_replicas = Some(replicas(
                        file,
                        &doc,
                        &format!("HorizontalPodAutoscaler {name}: spec.minReplicas"),
                        "/spec/minReplicas",
                        1,
                    )?);
                }
                "MetricTemplate" => {
                    let t: MetricTemplate = typed(file, &format!("MetricTemplate {name}"), &doc)?;
                    let ns = t
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| rollout.namespace.clone());
                    let provider = t
                        .spec
                        .as_ref()
                        .and_then(|s| s.provider.as_ref())
                        .and_then(|p| p.type_.as_deref())
                        .unwrap_or("");
                    if !api::METRIC_PROVIDERS.contains(&provider) {
                        return Err(object_err(
                            file,
                            &format!("MetricTemplate {name}: spec.provider.type"),
                            format!("unknown provider `{provider}`"),
                            format!("use one of {}", api::METRIC_PROVIDERS.join(", ")),
                        ));
                    }
                    if let Some((_, instead)) =
                        crate::metrics::REFUSED.iter().find(|(k, _)| *k == provider)
                    {
                        return Err(object_err(
                            file,
                            &format!("MetricTemplate {name}: spec.provider.type"),
                            format!("`{provider}` is not supported by Fledge"),
                            *instead,
                        ));
                    }
                    templates.insert((ns, name), t);
                }
                "AlertProvider" => {
                    let p: AlertProvider = typed(file, &format!("AlertProvider {name}"), &doc)?;
                    let kind = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.type_.clone())
                        .unwrap_or_default();
                    if !ALERT_PROVIDERS.contains(&kind.as_str()) {
                        return Err(object_err(
                            file,
                            &format!("AlertProvider {name}: spec.type"),
                            format!("unknown type `{kind}`"),
                            format!("use one of {}", ALERT_PROVIDERS.join(", ")),
                        ));
                    }
                    let ns = p
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| rollout.namespace.clone());
                    providers.insert((ns, name));
                }
                "ConfigMap" => {
                    objects.insert(format!("configmap/{name}"), doc);
                }
                "Secret" => {
                    objects.insert(format!("secret/{name}"), doc);
                }
                _ => {}
            }
        }
    }
    let files = targets
        .iter()
        .map(|(f, _)| f.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let (dep_file, dep) = deployment.ok_or_else(|| {
        object_err(
            &files,
            "spec.targetRef.name",
            format!("no Deployment named `{}`", rollout.target),
            "pass the target Deployment with --target, or fix targetRef.name",
        )
    })?;
    if rollout.autoscaler.is_some() && hpa_min_replicas.is_none() {
        return Err(object_err(
            &files,
            "spec.autoscalerRef.name",
            format!(
                "no HorizontalPodAutoscaler named `{}`",
                rollout.autoscaler.as_deref().unwrap_or("")
            ),
            "pass the HPA with --target, or remove autoscalerRef",
        ));
    }
    for m in &rollout.metrics {
        if let MetricSource::Template { name, namespace } = &m.source {
            if !templates.contains_key(&(namespace.clone(), name.clone())) {
                return Err(object_err(
                    canary_file,
                    &format!("spec.analysis.metrics ({}).templateRef", m.name),
                    format!("MetricTemplate {name}.{namespace} not found"),
                    "pass the MetricTemplate with --target",
                ));
            }
        }
    }

    for (i, alert) in rollout.alerts.iter().enumerate() {
        let key = (alert.provider_namespace.clone(), alert.provider.clone());
        if !providers.contains(&key) {
            return Err(object_err(
                canary_file,
                &format!("spec.analysis.alerts[{i}].providerRef"),
                format!("AlertProvider {}.{} not found", key.1, key.0),
                "pass the AlertProvider with --target",
            ));
        }
    }

    let template = dep.pointer("/spec/template").cloned().ok_or_else(|| {
        object_err(
            &dep_file,
            "spec.template",
            "missing",
            "give the Deployment a pod template",
        )
    })?;
    let configs = tracked_configs(&dep_file, &template, &objects)?;
    let target = SimDeployment::new(
        &rollout.target,
        &rollout.namespace,
        template,
        replicas(&dep_file, &dep, "spec.replicas", "/spec/replicas", 0)?,
    );
    Ok(Inputs {
        canary,
        rollout,
        warnings: validated.warnings,
        target,
        hpa_min_replicas,
        configs,
        templates,
    })
}

/// A replica count at `pointer` (default 1), within Kubernetes' int32 range
/// and at least `min`.
fn replicas(
    file: &str,
    doc: &Value,
    field: &str,
    pointer: &str,
    min: i64,
) -> Result<i32, LoadError> {
    let Some(v) = doc.pointer(pointer) else {
        return Ok(1);
    };
    match v.as_i64() {
        Some(n) if (min..=i64::from(i32::MAX)).contains(&n) => Ok(n as i32),
        _ => Err(object_err(
            file,
            field,
            format!(
                "{} is not a replica count in {min}..={}",
                yaml::show(v),
                i32::MAX
            ),
            "use a whole number of replicas in that range",
        )),
    }
}

/// The ConfigMaps and Secrets the pod template uses, with checksums of their
/// data. A reference that is not optional must be among the objects.
fn tracked_configs(
    file: &str,
    template: &Value,
    objects: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, String>, LoadError> {
    let mut refs: Vec<(String, bool)> = Vec::new();
    let spec = template.get("spec").cloned().unwrap_or(Value::Null);
    let optional = |v: &Value| v.get("optional").and_then(Value::as_bool).unwrap_or(false);
    let name_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    for vol in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(cm) = vol.get("configMap") {
            if let Some(n) = name_of(cm, "name") {
                refs.push((format!("configmap/{n}"), optional(cm)));
            }
        }
        if let Some(s) = vol.get("secret") {
            if let Some(n) = name_of(s, "secretName") {
                refs.push((format!("secret/{n}"), optional(s)));
            }
        }
    }
    for key in ["containers", "initContainers"] {
        for c in spec
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for env in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                let from = env.get("valueFrom");
                if let Some(r) = from.and_then(|f| f.get("configMapKeyRef")) {
                    if let Some(n) = name_of(r, "name") {
                        refs.push((format!("configmap/{n}"), optional(r)));
                    }
                }
                if let Some(r) = from.and_then(|f| f.get("secretKeyRef")) {
                    if let Some(n) = name_of(r, "name") {
                        refs.push((format!("secret/{n}"), optional(r)));
                    }
                }
            }
            for env in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = env.get("configMapRef") {
                    if let Some(n) = name_of(r, "name") {
                        refs.push((format!("configmap/{n}"), optional(r)));
                    }
                }
                if let Some(r) = env.get("secretRef") {
                    if let Some(n) = name_of(r, "name") {
                        refs.push((format!("secret/{n}"), optional(r)));
                    }
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (key, optional) in refs {
        match objects.get(&key) {
            Some(obj) => {
                let data = obj.get("data").cloned().unwrap_or(Value::Null);
                out.insert(key, revision::config_checksum(&data));
            }
            None if optional => {}
            None => {
                return Err(object_err(
                    file,
                    "spec.template",
                    format!("uses {key}, which was not given"),
                    "pass it with --target, or mark the reference optional: true",
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
