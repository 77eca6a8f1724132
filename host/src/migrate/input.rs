//! The conversion's input: Canaries and MetricTemplates from YAML streams,
//! `kubectl get -o yaml` Lists, or objects read from a cluster.
use crate::api::{yaml, Canary, MetricTemplate, GROUP, VERSION};
use anyhow::{anyhow, bail};
use serde_json::Value;

#[derive(Debug, Clone, Default)]
pub struct Input {
    pub canaries: Vec<Canary>,
    pub templates: Vec<MetricTemplate>,
}

/// Metadata the API server writes: not part of what a user applies.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

impl Input {
    /// Adds every document of a YAML stream; `source` names it in errors.
    pub fn add_yaml(&mut self, text: &str, source: &str) -> anyhow::Result<()> {
        let docs = yaml::documents(text).map_err(|e| anyhow!("{source}: {e}"))?;
        for (i, doc) in docs.into_iter().enumerate() {
            let at = format!("{source} (document {})", i + 1);
            self.add_object(doc, &at)?;
        }
        Ok(())
    }

    /// Adds one object (a Canary, a MetricTemplate or a List of them).
    pub fn add_object(&mut self, mut doc: Value, at: &str) -> anyhow::Result<()> {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        if kind == "List" || kind.ends_with("List") {
            let items = doc["items"].as_array().cloned().unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                self.add_object(item, &format!("{at} items[{i}]"))?;
            }
            return Ok(());
        }
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        let want = format!("{GROUP}/{VERSION}");
        if kind != "Canary" && kind != "MetricTemplate" || api_version != want {
            let name = doc["metadata"]["name"].as_str().unwrap_or("");
            bail!(
                "{at}: kind: {api_version:?}/{kind:?} {name:?} is not a Canary: give only {want} \
                 Canaries and the MetricTemplates they refer to"
            );
        }
        strip_server_fields(&mut doc);
        if kind == "Canary" {
            let c: Canary = yaml::typed(&doc).map_err(|e| anyhow!("{at}: {e}"))?;
            self.canaries.push(c);
        } else {
            let t: MetricTemplate = yaml::typed(&doc).map_err(|e| anyhow!("{at}: {e}"))?;
            self.templates.push(t);
        }
        Ok(())
    }

    /// The MetricTemplate a Canary in `namespace` refers to by `name` and
    /// optional `ref_namespace`, when the input has it.
    pub fn template(
        &self,
        name: &str,
        ref_namespace: Option<&str>,
        namespace: &str,
    ) -> Option<&MetricTemplate> {
        let ns = ref_namespace.unwrap_or(namespace);
        self.templates.iter().find(|t| {
            t.metadata.name.as_deref() == Some(name)
                && t.metadata.namespace.as_deref().unwrap_or("default") == ns
        })
    }
}

/// Drops what the cluster adds (status, server metadata, the last-applied
/// copy), so the output is what a user would have written.
fn strip_server_fields(doc: &mut Value) {
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("status");
    }
    if let Some(meta) = doc["metadata"].as_object_mut() {
        for k in SERVER_METADATA {
            meta.remove(*k);
        }
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.remove(LAST_APPLIED);
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
}
