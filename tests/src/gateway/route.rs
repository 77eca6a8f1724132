//! HTTPRoutes as the proxies see them: rules, matches and backendRefs, parsed from the spec.

use anyhow::{bail, Context, Result};
use kube::api::DynamicObject;
use regex::Regex;
use serde::Serialize;
use serde_json::{json, Value};

/// A string match of a header or query parameter.
#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    fn parse(m: &Value, what: &str) -> Result<(String, ValueMatch)> {
        let name = m
            .get("name")
            .and_then(Value::as_str)
            .with_context(|| format!("{what} match without name"))?;
        let value = m.get("value").and_then(Value::as_str).unwrap_or_default();
        let vm = match m.get("type").and_then(Value::as_str).unwrap_or("Exact") {
            "Exact" => ValueMatch::Exact(value.to_string()),
            "RegularExpression" => ValueMatch::Regex(full_match(value)?),
            other => bail!("{what} {name}: match type {other} is not supported"),
        };
        Ok((name.to_string(), vm))
    }
}

/// Envoy's `safe_regex` matches the whole value.
fn full_match(re: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{re})$")).with_context(|| format!("bad regular expression {re:?}"))
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

/// One `matches[]` entry of a rule.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub method: Option<String>,
    pub headers: Vec<(String, ValueMatch)>,
    pub query: Vec<(String, ValueMatch)>,
}

impl RouteMatch {
    fn parse(m: &Value) -> Result<RouteMatch> {
        let path = match m.get("path") {
            None => PathMatch::Prefix("/".into()),
            Some(p) => {
                let value = p
                    .get("value")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_string();
                match p
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("PathPrefix")
                {
                    "Exact" => PathMatch::Exact(value),
                    "PathPrefix" => PathMatch::Prefix(value),
                    "RegularExpression" => PathMatch::Regex(full_match(&value)?),
                    other => bail!("path match type {other} is not supported"),
                }
            }
        };
        let list = |k: &str, what: &str| -> Result<Vec<(String, ValueMatch)>> {
            m.get(k)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|h| ValueMatch::parse(h, what))
                .collect()
        };
        Ok(RouteMatch {
            path,
            method: m.get("method").and_then(Value::as_str).map(str::to_string),
            headers: list("headers", "header")?,
            query: list("queryParams", "query parameter")?,
        })
    }
}

/// A backendRef of a rule.
#[derive(Debug, Clone, Serialize)]
pub struct BackendRef {
    /// Service `namespace/name`.
    pub service: String,
    pub port: Option<i32>,
    pub weight: u32,
    /// `group`/`kind` when they do not name a core Service.
    pub invalid_kind: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<BackendRef>,
}

/// An HTTPRoute, reduced to what decides acceptance and where a request goes.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    /// Creation time (seconds since the epoch), the first tie-break between routes.
    pub created: i64,
    pub hostnames: Vec<String>,
    pub parent_refs: Vec<Value>,
    pub rules: Vec<Rule>,
}

impl HttpRoute {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The Envoy cluster Envoy Gateway makes of rule `index`.
    pub fn cluster_name(&self, index: usize) -> String {
        format!("httproute/{}/{}/rule/{index}", self.namespace, self.name)
    }

    pub fn from_object(obj: &DynamicObject) -> Result<HttpRoute> {
        let namespace = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let null = Value::Null;
        let spec = obj.data.get("spec").unwrap_or(&null);
        Self::from_spec(
            &namespace,
            &name,
            obj.metadata.generation.unwrap_or(0),
            obj.metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            spec,
        )
    }

    pub fn from_spec(
        namespace: &str,
        name: &str,
        generation: i64,
        created: i64,
        spec: &Value,
    ) -> Result<HttpRoute> {
        let mut rules = Vec::new();
        for (i, r) in spec
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut matches = r
                .get("matches")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(RouteMatch::parse)
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("rules[{i}].matches"))?;
            if matches.is_empty() {
                // No matches: one match of every path.
                matches.push(RouteMatch::parse(&json!({}))?);
            }
            let backends = r
                .get("backendRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|b| {
                    let group = b.get("group").and_then(Value::as_str).unwrap_or("");
                    let kind = b.get("kind").and_then(Value::as_str).unwrap_or("Service");
                    BackendRef {
                        service: format!(
                            "{}/{}",
                            b.get("namespace")
                                .and_then(Value::as_str)
                                .unwrap_or(namespace),
                            b.get("name").and_then(Value::as_str).unwrap_or_default()
                        ),
                        port: b.get("port").and_then(Value::as_i64).map(|p| p as i32),
                        weight: b.get("weight").and_then(Value::as_u64).unwrap_or(1) as u32,
                        invalid_kind: (!(group.is_empty() || group == "core") || kind != "Service")
                            .then(|| format!("{group}/{kind}")),
                    }
                })
                .collect();
            rules.push(Rule { matches, backends });
        }
        Ok(HttpRoute {
            namespace: namespace.to_string(),
            name: name.to_string(),
            generation,
            created,
            hostnames: spec
                .get("hostnames")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect(),
            parent_refs: spec
                .get("parentRefs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            rules,
        })
    }
}
