//! RolloutPolicy and ClusterRolloutPolicy as the operator reads them. As with
//! Canaries the spec is kept as JSON and typed only to validate it, so a spec
//! the model cannot read becomes a condition rather than a watch that cannot
//! decode its list.
use crate::api::policy::{
    RolloutPolicySpec, CLUSTER_ROLLOUT_POLICY, POLICY_GROUP, POLICY_VERSION, ROLLOUT_POLICY,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{ClusterResourceScope, NamespaceResourceScope, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Spec {
    spec: RolloutPolicySpec,
}

pub fn typed_spec(spec: &Value) -> Result<RolloutPolicySpec, crate::api::Issue> {
    crate::api::yaml::typed::<Spec>(&serde_json::json!({ "spec": spec })).map(|s| s.spec)
}

macro_rules! policy_object {
    ($name:ident, $kind:expr, $plural:expr, $scope:ty) => {
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        pub struct $name {
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: Value,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<Value>,
        }

        impl Resource for $name {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(POLICY_GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(POLICY_VERSION)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl $name {
            /// The typed spec; an error names the field (`spec.mode`).
            pub fn typed_spec(&self) -> Result<RolloutPolicySpec, crate::api::Issue> {
                typed_spec(&self.spec)
            }
        }
    };
}

policy_object!(
    RolloutPolicyObject,
    ROLLOUT_POLICY,
    "rolloutpolicies",
    NamespaceResourceScope
);
policy_object!(
    ClusterRolloutPolicyObject,
    CLUSTER_ROLLOUT_POLICY,
    "clusterrolloutpolicies",
    ClusterResourceScope
);
