//! The Canary as the operator reads it from the API server.
//!
//! The spec is kept as JSON and turned into [`crate::api::Canary`] only to
//! validate it, so a Canary the typed model cannot read (a string where a
//! number belongs, say) becomes a condition and a Warning Event naming the
//! field, rather than a watch that cannot decode its list.
use crate::api;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::core::{NamespaceResourceScope, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

pub const KIND: &str = "Canary";
pub const PLURAL: &str = "canaries";
pub const API_VERSION: &str = "flagger.app/v1beta1";

/// A `canaries.flagger.app/v1beta1` object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CanaryObject {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl Resource for CanaryObject {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(KIND)
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(api::GROUP)
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(api::VERSION)
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed(PLURAL)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CanaryObject {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }
    /// `<name>.<namespace>`, as logs and messages name a Canary.
    pub fn id(&self) -> String {
        format!("{}.{}", self.name(), self.namespace())
    }

    /// The typed Canary, or the field that does not fit the model.
    pub fn to_api(&self) -> Result<api::Canary, api::Issue> {
        let doc = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": self.metadata.name,
                "namespace": self.metadata.namespace,
                "annotations": self.metadata.annotations,
                "labels": self.metadata.labels,
            },
            "spec": self.spec,
        });
        api::yaml::typed(&doc)
    }

    /// The ownerReference every generated object carries, so the garbage
    /// collector removes it with the Canary and the controller maps its
    /// changes back to the Canary.
    pub fn owner_reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            name: self.name().into(),
            uid: self.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Whether `refs` name this Canary as their controller.
    pub fn owns(&self, refs: Option<&Vec<OwnerReference>>) -> bool {
        let uid = self.metadata.uid.as_deref().unwrap_or("");
        refs.into_iter()
            .flatten()
            .any(|r| r.kind == KIND && r.uid == uid && r.controller == Some(true))
    }

    /// `spec.targetRef.name`, read without the typed model (for watch mappers).
    pub fn target_name(&self) -> Option<&str> {
        self.spec.pointer("/targetRef/name").and_then(Value::as_str)
    }
}
