//! The CustomResourceDefinitions Fledge serves: `canaries`, `metrictemplates`
//! and `alertproviders` in `flagger.app/v1beta1`, with Flagger's names,
//! category, status subresource and printer columns.
//!
//! **Interim schema.** `spec` and `status` are open objects
//! (`x-kubernetes-preserve-unknown-fields: true`): the API server stores what
//! the user wrote and Fledge's validator judges it. This is to be replaced by
//! the schema generated from the typed `crate::api` model, which checks every
//! Flagger field at admission.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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

fn crd(kind: &str, plural: &str, columns: &[Column]) -> Value {
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
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
            "name": format!("{plural}.flagger.app"),
            "annotations": {"helm.sh/resource-policy": "keep"}
        },
        "spec": {
            "group": "flagger.app",
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_ascii_lowercase(),
                "categories": ["all"]
            },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1beta1",
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
                        "spec": open.clone(),
                        "status": open
                    }
                }}
            }]
        }
    })
}

/// Every CRD Fledge serves, in the order `fledge crds` prints them.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        crd("Canary", "canaries", CANARY_COLUMNS),
        crd(
            "MetricTemplate",
            "metrictemplates",
            &[("Provider", "string", ".spec.provider.type", 0)],
        ),
        crd(
            "AlertProvider",
            "alertproviders",
            &[("Type", "string", ".spec.type", 0)],
        ),
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
                "alertproviders.flagger.app"
            ]
        );
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

    /// `deploy/crds/` holds exactly what `fledge crds` prints.
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
        let mut present: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        present.sort();
        expected.sort();
        assert_eq!(
            present, expected,
            "deploy/crds/ has files fledge does not generate"
        );
    }
}
