//! What this binary is: its version, the git revision it was built from (when
//! the build sets `FLEDGE_GIT_REVISION`), the API versions of the CRDs it
//! serves and the policy contract (WIT package) it implements. `fledge
//! version`, the operator's `/version` and `fledge_build_info` show these.
use serde::Serialize;

/// The workspace version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git revision, when the build passed one (the image build does).
pub const REVISION: Option<&str> = option_env!("FLEDGE_GIT_REVISION");

/// The policy contract's package, `fledge:policy@X.Y.Z`, read from the
/// `package` line of `wit/fledge-policy.wit` when compiling, so it follows
/// the contract; a contract without that line fails the build.
pub const WIT_PACKAGE: &str = wit_package(include_str!("../../wit/fledge-policy.wit"));

/// The name in a WIT file's `package NAME;` line (at the start of a line).
const fn wit_package(wit: &str) -> &str {
    const KEYWORD: &[u8] = b"package ";
    let bytes = wit.as_bytes();
    let mut i = 0;
    while i + KEYWORD.len() <= bytes.len() {
        let line_start = i == 0 || bytes[i - 1] == b'\n';
        if line_start && starts_with_at(bytes, i, KEYWORD) {
            let start = i + KEYWORD.len();
            let mut end = start;
            while end < bytes.len() && bytes[end] != b';' && bytes[end] != b'\n' {
                end += 1;
            }
            if end == bytes.len() || bytes[end] != b';' || end == start {
                panic!("wit/fledge-policy.wit: the `package` line must read `package fledge:policy@X.Y.Z;`");
            }
            let (_, rest) = bytes.split_at(start);
            let (name, _) = rest.split_at(end - start);
            return match std::str::from_utf8(name) {
                Ok(name) => name,
                Err(_) => panic!("wit/fledge-policy.wit: the package name is not UTF-8"),
            };
        }
        i += 1;
    }
    panic!("wit/fledge-policy.wit has no `package fledge:policy@X.Y.Z;` line")
}

const fn starts_with_at(bytes: &[u8], at: usize, prefix: &[u8]) -> bool {
    let mut j = 0;
    while j < prefix.len() {
        if bytes[at + j] != prefix[j] {
            return false;
        }
        j += 1;
    }
    true
}

/// One API version of the CRDs Fledge serves, with its kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServedApi {
    /// `group/version`, e.g. `flagger.app/v1beta1`.
    pub api_version: String,
    pub kinds: Vec<String>,
}

/// Everything `fledge version` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The served versions of [`crate::operator::crd::all`], in its order.
    pub crds: Vec<ServedApi>,
    /// The WIT package of the policy contract, `fledge:policy@X.Y.Z`.
    pub wit: String,
}

impl BuildInfo {
    /// This binary's facts; the CRD versions come from the CRDs it serves.
    pub fn current() -> BuildInfo {
        let mut crds: Vec<ServedApi> = Vec::new();
        for crd in crate::operator::crd::all() {
            let kind = crd.spec.names.kind;
            for v in crd.spec.versions.iter().filter(|v| v.served) {
                let api_version = format!("{}/{}", crd.spec.group, v.name);
                match crds.iter_mut().find(|s| s.api_version == api_version) {
                    Some(s) => s.kinds.push(kind.clone()),
                    None => crds.push(ServedApi {
                        api_version,
                        kinds: vec![kind.clone()],
                    }),
                }
            }
        }
        BuildInfo {
            version: VERSION.to_string(),
            revision: REVISION.map(str::to_string),
            crds,
            wit: WIT_PACKAGE.to_string(),
        }
    }

    /// `fledge 0.1.0 (git abc123)`, then the served APIs and the contract.
    pub fn text(&self) -> String {
        let mut out = format!("fledge {}", self.version);
        if let Some(rev) = &self.revision {
            out.push_str(&format!(" (git {rev})"));
        }
        out.push('\n');
        out.push_str("CRDs served:\n");
        for api in &self.crds {
            out.push_str(&format!(
                "  {}: {}\n",
                api.api_version,
                api.kinds.join(", ")
            ));
        }
        out.push_str(&format!("policy contract (WIT): {}\n", self.wit));
        out
    }

    /// The served API versions joined by commas, for a metric label.
    pub fn api_versions(&self) -> String {
        self.crds
            .iter()
            .map(|a| a.api_version.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The labels of `fledge_build_info`: version, revision (when known),
    /// CRD API versions, WIT package.
    pub fn labels(&self) -> Vec<(String, String)> {
        let mut labels = vec![("version".to_string(), self.version.clone())];
        if let Some(rev) = &self.revision {
            labels.push(("revision".to_string(), rev.clone()));
        }
        labels.push(("crd_versions".to_string(), self.api_versions()));
        labels.push(("wit".to_string(), self.wit.clone()));
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::{
        CLUSTER_ROLLOUT_POLICY, POLICY_GROUP, POLICY_VERSION, ROLLOUT_POLICY,
    };

    #[test]
    fn the_wit_package_is_the_contracts_package_line() {
        let wit = include_str!("../../wit/fledge-policy.wit");
        let line = wit
            .lines()
            .find(|l| l.starts_with("package "))
            .expect("a package line");
        assert_eq!(line, format!("package {WIT_PACKAGE};"));
        assert!(WIT_PACKAGE.starts_with("fledge:policy@"), "{WIT_PACKAGE}");
        // The world the runtime demands is of the same package version.
        let version = WIT_PACKAGE.rsplit('@').next().unwrap();
        assert!(
            crate::policy::WORLD.ends_with(&format!("@{version}")),
            "WORLD {} is not of {WIT_PACKAGE}",
            crate::policy::WORLD
        );
    }

    #[test]
    fn the_package_line_is_found_only_at_a_line_start() {
        let wit = "/// a package of interfaces\n/// package not-this;\npackage a:b@1.2.3;\n";
        assert_eq!(wit_package(wit), "a:b@1.2.3");
        assert_eq!(wit_package("package x:y@0.0.1;"), "x:y@0.0.1");
    }

    #[test]
    fn the_crds_are_grouped_by_api_version_in_serving_order() {
        let info = BuildInfo::current();
        let flagger = format!("{}/{}", crate::api::GROUP, crate::api::VERSION);
        let policies = format!("{POLICY_GROUP}/{POLICY_VERSION}");
        assert_eq!(
            info.crds,
            vec![
                ServedApi {
                    api_version: flagger.clone(),
                    kinds: vec![
                        "Canary".into(),
                        "MetricTemplate".into(),
                        "AlertProvider".into()
                    ],
                },
                ServedApi {
                    api_version: policies.clone(),
                    kinds: vec![ROLLOUT_POLICY.into(), CLUSTER_ROLLOUT_POLICY.into()],
                },
            ]
        );
        assert_eq!(info.api_versions(), format!("{flagger},{policies}"));
    }

    #[test]
    fn text_and_labels_carry_every_fact() {
        let info = BuildInfo {
            version: "1.2.3".into(),
            revision: Some("abc1234".into()),
            crds: vec![
                ServedApi {
                    api_version: "a.example/v1".into(),
                    kinds: vec!["One".into(), "Two".into()],
                },
                ServedApi {
                    api_version: "b.example/v2".into(),
                    kinds: vec!["Three".into()],
                },
            ],
            wit: "x:y@4.5.6".into(),
        };
        assert_eq!(
            info.text(),
            "fledge 1.2.3 (git abc1234)\nCRDs served:\n  a.example/v1: One, Two\n  \
             b.example/v2: Three\npolicy contract (WIT): x:y@4.5.6\n"
        );
        let labels = info.labels();
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("version", "1.2.3"),
                ("revision", "abc1234"),
                ("crd_versions", "a.example/v1,b.example/v2"),
                ("wit", "x:y@4.5.6"),
            ]
        );
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["crds"][0]["apiVersion"], "a.example/v1");
        assert_eq!(json["crds"][1]["kinds"][0], "Three");
        assert_eq!(json["revision"], "abc1234");
        let unversioned = BuildInfo {
            revision: None,
            ..info
        };
        assert!(unversioned.text().starts_with("fledge 1.2.3\n"));
        assert!(serde_json::to_value(&unversioned)
            .unwrap()
            .get("revision")
            .is_none());
        assert!(!unversioned.labels().iter().any(|(k, _)| k == "revision"));
    }
}
