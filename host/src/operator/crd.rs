//! The CustomResourceDefinitions Fledge serves: `canaries`, `metrictemplates`
//! and `alertproviders` in `flagger.app/v1beta1`, with Flagger's names,
//! category, status subresource and printer columns; and Fledge's own
//! `rolloutpolicies` and `clusterrolloutpolicies` in `policies.fledge.dev/v1alpha1`.
//!
//! The schemas are generated from the typed model in [`crate::api`] (and the
//! status Fledge writes), so the API server checks every Flagger field at
//! admission: a misspelled field is refused under strict field validation
//! instead of being pruned, and a number written as a string is refused
//! instead of reaching the validator.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::schema::{OptionalEnum, OptionalIntOrString, StructuralSchemaRewriter};
use schemars::generate::SchemaSettings;
use schemars::transform::AddNullable;
use schemars::JsonSchema;
use serde_json::{json, Value};

/// `(name, type, jsonPath, priority)` of a printer column.
type Column = (&'static str, &'static str, &'static str, u8);

const CANARY_COLUMNS: &[Column] = &[
    ("Status", "string", ".status.phase", 0),
    ("Weight", "string", ".status.canaryWeight", 0),
    ("Suspended", "boolean", ".spec.suspend", 1),
    ("FailedChecks", "string", ".status.failedChecks", 1),
    ("Interval", "string", ".spec.analysis.interval", 1),
    ("Mirror", "boolean", ".spec.analysis.mirror", 1),
    ("StepWeight", "string", ".spec.analysis.stepWeight", 1),
    ("StepWeights", "string", ".spec.analysis.stepWeights", 1),
    ("MaxWeight", "string", ".spec.analysis.maxWeight", 1),
    (
        "LastTransitionTime",
        "string",
        ".status.lastTransitionTime",
        0,
    ),
];

/// The structural OpenAPI v3 schema of `T`, as kube-derive generates it for a
/// `CustomResource`: subschemas inlined, no `$schema`, `Option` as nullable.
pub fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(AddNullable::default())
        .with_transform(StructuralSchemaRewriter)
        .with_transform(OptionalEnum)
        .with_transform(OptionalIntOrString)
        .into_generator();
    let mut v = generator.into_root_schema_for::<T>().to_value();
    if let Some(o) = v.as_object_mut() {
        // The root's title is the Rust type's name; a CRD has no use for it.
        o.remove("title");
    }
    strip_defaults(&mut v);
    v
}

/// Removes the `default`s schemars derives from `#[serde(default)]`: the API
/// server would write them into stored objects, and Fledge never injects
/// values the user did not write.
fn strip_defaults(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("default");
            for (k, child) in o.iter_mut() {
                // `properties` maps field names (one may be called `default`)
                // to schemas; recurse into the schemas only.
                if k == "properties" {
                    if let Value::Object(props) = child {
                        props.values_mut().for_each(strip_defaults);
                    }
                } else {
                    strip_defaults(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_defaults),
        _ => {}
    }
}

/// The stored status: what Fledge writes, and Flagger's fields it does not,
/// so a Canary moved from Flagger keeps them.
fn canary_status_schema() -> Value {
    let mut ours = schema_of::<super::status::CanaryStatus>();
    let flaggers = schema_of::<crate::api::CanaryStatus>();
    if let (Some(dst), Some(src)) = (
        ours["properties"].as_object_mut(),
        flaggers["properties"].as_object(),
    ) {
        for (k, v) in src {
            dst.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    ours
}

fn crd(kind: &str, plural: &str, columns: &[Column], spec: Value, status: Value) -> Value {
    let mut v = crd_in(
        (crate::api::GROUP, crate::api::VERSION),
        "Namespaced",
        kind,
        plural,
        columns,
        spec,
        status,
    );
    v["spec"]["names"]["categories"] = json!(["all"]);
    v["metadata"]["annotations"] = json!({"helm.sh/resource-policy": "keep"});
    v
}

const POLICY_COLUMNS: &[Column] = &[
    ("Builtin", "string", ".spec.builtin", 0),
    ("Digest", "string", ".status.digest", 0),
    (
        "Ready",
        "string",
        ".status.conditions[?(@.type==\"Ready\")].status",
        0,
    ),
    ("URL", "string", ".spec.url", 1),
];

/// A policy kind of `policies.fledge.dev/v1alpha1`.
fn policy_crd(kind: &str, plural: &str, scope: &str) -> Value {
    crd_in(
        (
            crate::api::policy::POLICY_GROUP,
            crate::api::policy::POLICY_VERSION,
        ),
        scope,
        kind,
        plural,
        POLICY_COLUMNS,
        schema_of::<crate::api::policy::RolloutPolicySpec>(),
        schema_of::<crate::api::policy::RolloutPolicyStatus>(),
    )
}

fn crd_in(
    (group, version): (&str, &str),
    scope: &str,
    kind: &str,
    plural: &str,
    columns: &[Column],
    spec: Value,
    status: Value,
) -> Value {
    let columns: Vec<Value> = columns
        .iter()
        .map(|(name, type_, path, priority)| {
            let mut c = json!({"name": name, "type": type_, "jsonPath": path});
            if *priority > 0 {
                c["priority"] = json!(priority);
            }
            c
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{plural}.{group}"),
        },
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_ascii_lowercase(),
            },
            "scope": scope,
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status
                    }
                }}
            }]
        }
    })
}

/// Every CRD Fledge serves, in the order `fledge crds` prints them.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        crd(
            "Canary",
            "canaries",
            CANARY_COLUMNS,
            schema_of::<crate::api::CanarySpec>(),
            canary_status_schema(),
        ),
        crd(
            "MetricTemplate",
            "metrictemplates",
            &[("Provider", "string", ".spec.provider.type", 0)],
            schema_of::<crate::api::MetricTemplateSpec>(),
            // Flagger's MetricTemplate and AlertProvider have no status; keep
            // whatever another tool writes there.
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        ),
        crd(
            "AlertProvider",
            "alertproviders",
            &[("Type", "string", ".spec.type", 0)],
            schema_of::<crate::api::AlertProviderSpec>(),
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        ),
        policy_crd("RolloutPolicy", "rolloutpolicies", "Namespaced"),
        policy_crd("ClusterRolloutPolicy", "clusterrolloutpolicies", "Cluster"),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).expect("the CRD literals are well formed"))
    .collect()
}

/// The file name of a CRD under `deploy/crds/`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("crd"))
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    serde_saphyr::to_string(crd).expect("a CRD serialises to YAML")
}

/// All CRDs as multi-document YAML.
pub fn all_yaml() -> String {
    all()
        .iter()
        .map(|c| format!("---\n{}", to_yaml(c)))
        .collect::<String>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canaries_have_flaggers_names_and_columns() {
        let crds = all();
        let names: Vec<_> = crds
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "canaries.flagger.app",
                "metrictemplates.flagger.app",
                "alertproviders.flagger.app",
                "rolloutpolicies.policies.fledge.dev",
                "clusterrolloutpolicies.policies.fledge.dev",
            ]
        );
        assert_eq!(crds[3].spec.scope, "Namespaced");
        assert_eq!(crds[4].spec.scope, "Cluster");
        assert_eq!(crds[4].spec.names.kind, "ClusterRolloutPolicy");
        let canary = &crds[0];
        assert_eq!(
            canary.spec.names.categories.as_deref(),
            Some(&["all".to_string()][..])
        );
        let v = &canary.spec.versions[0];
        assert!(v.served && v.storage && v.name == "v1beta1");
        assert!(v
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some());
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.priority.unwrap_or(0)))
            .collect();
        assert_eq!(cols[0], ("Status", 0));
        assert_eq!(cols[2], ("Suspended", 1));
        assert_eq!(cols.last(), Some(&("LastTransitionTime", 0)));
    }

    const KUSTOMIZATION: &str = "kustomization.yaml";

    /// `deploy/crds/` holds exactly what `fledge crds` prints, and a kustomization of it.
    #[test]
    fn deploy_crds_match_the_generated_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
        let mut expected: Vec<String> = Vec::new();
        for crd in all() {
            let path = dir.join(file_name(&crd));
            let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run `fledge crds --dir deploy/crds`",
                    path.display()
                )
            });
            assert_eq!(
                on_disk,
                to_yaml(&crd),
                "{} differs from `fledge crds`; run `fledge crds --dir deploy/crds`",
                path.display()
            );
            expected.push(file_name(&crd));
        }
        // The kustomization the install bases reference lists every CRD, and only those.
        let kustomization = std::fs::read_to_string(dir.join(KUSTOMIZATION)).unwrap();
        let mut listed: Vec<String> = kustomization
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .map(str::to_string)
            .collect();
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|f| f != KUSTOMIZATION)
            .collect();
        present.sort();
        listed.sort();
        expected.sort();
        assert_eq!(
            present, expected,
            "deploy/crds/ has files fledge does not generate"
        );
        assert_eq!(
            listed, expected,
            "deploy/crds/{KUSTOMIZATION} lists other files than fledge generates"
        );
    }
}
