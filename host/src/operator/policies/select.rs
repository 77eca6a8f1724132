//! Which policy object judges a Canary, most specific first: the Canary's
//! `spec.policy`; else the RolloutPolicy `default` of its namespace; else the
//! ClusterRolloutPolicy `default`; else the built-in `flagger` policy.
//! Objects in shadow mode never enforce: the ladder passes over them, and
//! [`shadows`] says which of them judge beside the enforcing policy.
use crate::api::policy::{CLUSTER_ROLLOUT_POLICY, ROLLOUT_POLICY};
use crate::api::{Issue, PolicyRef};
use std::fmt;

/// The name of the policy objects a namespace or the cluster defaults to.
pub const DEFAULT: &str = "default";
/// `status.policy.kind` when no policy object applies.
pub const BUILTIN_KIND: &str = "Builtin";
/// The policy that applies when no policy object does.
pub const BUILTIN_NAME: &str = "flagger";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    RolloutPolicy,
    ClusterRolloutPolicy,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::RolloutPolicy => ROLLOUT_POLICY,
            PolicyKind::ClusterRolloutPolicy => CLUSTER_ROLLOUT_POLICY,
        }
    }
}

/// One policy object: a RolloutPolicy has a namespace, a ClusterRolloutPolicy none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyKey {
    pub fn namespaced(ns: &str, name: &str) -> PolicyKey {
        PolicyKey {
            kind: PolicyKind::RolloutPolicy,
            namespace: Some(ns.into()),
            name: name.into(),
        }
    }
    pub fn cluster(name: &str) -> PolicyKey {
        PolicyKey {
            kind: PolicyKind::ClusterRolloutPolicy,
            namespace: None,
            name: name.into(),
        }
    }
}

impl fmt::Display for PolicyKey {
    /// `RolloutPolicy/<ns>/<name>` or `ClusterRolloutPolicy/<name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}", self.kind.as_str(), self.name),
            None => write!(f, "{}/{}", self.kind.as_str(), self.name),
        }
    }
}

/// A policy object's `spec.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Shadow,
}

/// What [`select`] chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selected {
    Object(PolicyKey),
    /// No policy object applies: the built-in `flagger` policy.
    Builtin,
}

fn issue(field: &str, problem: String, fix: &str) -> Issue {
    Issue {
        field: field.into(),
        problem,
        fix: fix.into(),
    }
}

/// The policy of a Canary in `namespace` with `spec.policy` = `reference`,
/// given the `mode` of each policy object that exists (`None`: it does not).
/// A `default` in shadow mode does not enforce, so the ladder goes on. A
/// reference to an object that does not exist, to another namespace's
/// RolloutPolicy, or to an object in shadow mode is an error naming
/// `spec.policy`.
pub fn select(
    namespace: &str,
    reference: Option<&PolicyRef>,
    mode: impl Fn(&PolicyKey) -> Option<Mode>,
) -> Result<Selected, Issue> {
    let Some(r) = reference else {
        let ns_default = PolicyKey::namespaced(namespace, DEFAULT);
        if mode(&ns_default) == Some(Mode::Enforce) {
            return Ok(Selected::Object(ns_default));
        }
        let cluster_default = PolicyKey::cluster(DEFAULT);
        if mode(&cluster_default) == Some(Mode::Enforce) {
            return Ok(Selected::Object(cluster_default));
        }
        return Ok(Selected::Builtin);
    };
    let Some(name) = r.name.as_deref().filter(|n| !n.is_empty()) else {
        return Err(issue(
            "spec.policy.name",
            "missing".into(),
            "name a RolloutPolicy of the Canary's namespace or a ClusterRolloutPolicy, or remove spec.policy to use the default",
        ));
    };
    let key = match r.kind.as_deref() {
        None | Some(ROLLOUT_POLICY) => {
            if let Some(ns) = r.namespace.as_deref().filter(|ns| *ns != namespace) {
                return Err(issue(
                    "spec.policy.namespace",
                    format!(
                        "RolloutPolicy `{name}` is in namespace `{ns}`: a Canary cannot use another namespace's RolloutPolicy"
                    ),
                    "create the RolloutPolicy in the Canary's namespace, or use a ClusterRolloutPolicy (kind: ClusterRolloutPolicy)",
                ));
            }
            PolicyKey::namespaced(namespace, name)
        }
        Some(CLUSTER_ROLLOUT_POLICY) => {
            if r.namespace.is_some() {
                return Err(issue(
                    "spec.policy.namespace",
                    "a ClusterRolloutPolicy has no namespace".into(),
                    "remove spec.policy.namespace",
                ));
            }
            PolicyKey::cluster(name)
        }
        Some(other) => {
            return Err(issue(
                "spec.policy.kind",
                format!("`{other}` is not a policy kind"),
                "set kind to RolloutPolicy or ClusterRolloutPolicy",
            ))
        }
    };
    match mode(&key) {
        Some(Mode::Enforce) => Ok(Selected::Object(key)),
        Some(Mode::Shadow) => Err(issue(
            "spec.policy",
            format!(
                "{} `{name}` is in shadow mode: it never enforces",
                key.kind.as_str()
            ),
            "set the policy object's spec.mode to enforce, or name another policy",
        )),
        None => {
            let problem = match &key.namespace {
                Some(ns) => format!("RolloutPolicy `{name}` does not exist in namespace `{ns}`"),
                None => format!("ClusterRolloutPolicy `{name}` does not exist"),
            };
            Err(issue(
                "spec.policy.name",
                problem,
                "create it, or remove spec.policy to use the default policy",
            ))
        }
    }
}

/// The shadow-mode objects among `objects` that judge beside the enforcing
/// policy of a Canary in `namespace`: every RolloutPolicy of its namespace
/// and every ClusterRolloutPolicy in shadow mode, in a stable order
/// (RolloutPolicies first, each kind by name).
pub fn shadows<'a>(
    namespace: &str,
    objects: impl IntoIterator<Item = (&'a PolicyKey, Mode)>,
) -> Vec<PolicyKey> {
    let mut out: Vec<PolicyKey> = objects
        .into_iter()
        .filter(|(k, m)| {
            *m == Mode::Shadow
                && match &k.namespace {
                    Some(ns) => ns == namespace,
                    None => true,
                }
        })
        .map(|(k, _)| k.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, kind: Option<&str>, ns: Option<&str>) -> PolicyRef {
        PolicyRef {
            name: Some(name.into()),
            kind: kind.map(Into::into),
            namespace: ns.map(Into::into),
        }
    }

    fn world(keys: &[PolicyKey]) -> impl Fn(&PolicyKey) -> Option<Mode> + '_ {
        move |k| keys.contains(k).then_some(Mode::Enforce)
    }

    fn shadowed<'a>(
        enforce: &'a [PolicyKey],
        shadow: &'a [PolicyKey],
    ) -> impl Fn(&PolicyKey) -> Option<Mode> + 'a {
        move |k| {
            if shadow.contains(k) {
                Some(Mode::Shadow)
            } else {
                enforce.contains(k).then_some(Mode::Enforce)
            }
        }
    }

    #[test]
    fn a_shadow_default_does_not_enforce_and_the_ladder_goes_on() {
        let ns_default = PolicyKey::namespaced("a", "default");
        let cluster_default = PolicyKey::cluster("default");
        // The namespace's default shadows: the cluster's enforces.
        assert_eq!(
            select(
                "a",
                None,
                shadowed(
                    std::slice::from_ref(&cluster_default),
                    std::slice::from_ref(&ns_default)
                )
            ),
            Ok(Selected::Object(cluster_default.clone()))
        );
        // Both shadow: the built-in policy.
        assert_eq!(
            select(
                "a",
                None,
                shadowed(&[], &[ns_default.clone(), cluster_default.clone()])
            ),
            Ok(Selected::Builtin)
        );
    }

    #[test]
    fn naming_a_shadow_policy_is_refused_naming_spec_policy() {
        let strict = PolicyKey::namespaced("a", "strict-v2");
        let e = select(
            "a",
            Some(&reference("strict-v2", None, None)),
            shadowed(&[], &[strict]),
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.policy");
        assert!(
            e.problem
                .contains("RolloutPolicy `strict-v2` is in shadow mode"),
            "{e}"
        );
        assert!(e.fix.contains("spec.mode to enforce"), "{e}");
        let e = select(
            "a",
            Some(&reference("wide", Some("ClusterRolloutPolicy"), None)),
            shadowed(&[], &[PolicyKey::cluster("wide")]),
        )
        .unwrap_err();
        assert!(
            e.problem
                .starts_with("ClusterRolloutPolicy `wide` is in shadow mode"),
            "{e}"
        );
    }

    #[test]
    fn shadows_are_the_namespaces_and_the_clusters_in_shadow_mode() {
        let mine = PolicyKey::namespaced("a", "strict-v2");
        let enforcing = PolicyKey::namespaced("a", "default");
        let theirs = PolicyKey::namespaced("b", "strict-v2");
        let wide = PolicyKey::cluster("canary-v3");
        let objects = [
            (&wide, Mode::Shadow),
            (&theirs, Mode::Shadow),
            (&enforcing, Mode::Enforce),
            (&mine, Mode::Shadow),
        ];
        assert_eq!(shadows("a", objects), [mine.clone(), wide.clone()]);
        assert_eq!(shadows("c", objects), std::slice::from_ref(&wide));
    }

    #[test]
    fn every_rung_of_the_ladder() {
        let own = PolicyKey::namespaced("a", "strict");
        let ns_default = PolicyKey::namespaced("a", "default");
        let other_ns_default = PolicyKey::namespaced("b", "default");
        let cluster_default = PolicyKey::cluster("default");
        let all = [
            own.clone(),
            ns_default.clone(),
            other_ns_default.clone(),
            cluster_default.clone(),
        ];
        // 1. The Canary's own reference wins over every default.
        assert_eq!(
            select("a", Some(&reference("strict", None, None)), world(&all)),
            Ok(Selected::Object(own.clone()))
        );
        // 2. Then its namespace's default.
        assert_eq!(
            select("a", None, world(&all)),
            Ok(Selected::Object(ns_default))
        );
        // 3. Another namespace's default is not this one's: the cluster's.
        assert_eq!(
            select("c", None, world(&all)),
            Ok(Selected::Object(cluster_default.clone()))
        );
        // 4. Nothing at all: the built-in policy.
        assert_eq!(select("c", None, world(&[own])), Ok(Selected::Builtin));
        // A ClusterRolloutPolicy by name.
        assert_eq!(
            select(
                "a",
                Some(&reference("default", Some("ClusterRolloutPolicy"), None)),
                world(&all)
            ),
            Ok(Selected::Object(cluster_default))
        );
    }

    #[test]
    fn another_namespaces_policy_is_refused_naming_spec_policy() {
        let theirs = [PolicyKey::namespaced("b", "strict")];
        let e = select(
            "a",
            Some(&reference("strict", Some("RolloutPolicy"), Some("b"))),
            world(&theirs),
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.policy.namespace");
        assert!(
            e.problem
                .contains("cannot use another namespace's RolloutPolicy"),
            "{e}"
        );
        // Its own namespace written out is fine.
        let mine = [PolicyKey::namespaced("a", "strict")];
        assert!(select(
            "a",
            Some(&reference("strict", None, Some("a"))),
            world(&mine)
        )
        .is_ok());
        // A name that exists only elsewhere is not found here.
        let e = select("a", Some(&reference("strict", None, None)), world(&theirs)).unwrap_err();
        assert_eq!(e.field, "spec.policy.name");
        assert!(e.problem.contains("does not exist in namespace `a`"), "{e}");
    }

    #[test]
    fn bad_references_name_their_field() {
        let e = select("a", Some(&PolicyRef::default()), world(&[])).unwrap_err();
        assert_eq!(e.field, "spec.policy.name");
        let e = select("a", Some(&reference("x", Some("Policy"), None)), world(&[])).unwrap_err();
        assert_eq!(e.field, "spec.policy.kind");
        let e = select(
            "a",
            Some(&reference("x", Some("ClusterRolloutPolicy"), Some("a"))),
            world(&[PolicyKey::cluster("x")]),
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.policy.namespace");
        let e = select(
            "a",
            Some(&reference("x", Some("ClusterRolloutPolicy"), None)),
            world(&[]),
        )
        .unwrap_err();
        assert!(e
            .problem
            .contains("ClusterRolloutPolicy `x` does not exist"));
    }
}
