//! Instant queries against the test Prometheus (`GET /api/v1/query`), and Flagger's builtin App
//! Mesh queries rendered the way Flagger renders them.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// One element of an instant vector.
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorElement {
    metric: std::collections::BTreeMap<String, String>,
    value: (f64, String),
}

/// Runs an instant query and returns the vector (a scalar result becomes one unlabeled sample).
pub fn query(prometheus: SocketAddr, promql: &str) -> Result<Vec<Sample>> {
    let path = format!(
        "/api/v1/query?query={}",
        crate::http::encode_component(promql)
    );
    let resp = crate::http::get(prometheus, &path)?;
    let env: Envelope = serde_json::from_str(&resp.body).with_context(|| {
        format!(
            "decoding Prometheus' answer (HTTP {}): {}",
            resp.status, resp.body
        )
    })?;
    if env.status != "success" {
        bail!(
            "Prometheus rejected {promql:?}: {}",
            env.error.unwrap_or_default()
        );
    }
    let data = env.data.context("Prometheus answered without data")?;
    match data.result_type.as_str() {
        "vector" => {
            let elems: Vec<VectorElement> = serde_json::from_value(data.result)?;
            elems
                .into_iter()
                .map(|e| {
                    Ok(Sample {
                        labels: e.metric,
                        value: e.value.1.parse().context("sample value")?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)?;
            Ok(vec![Sample {
                labels: Default::default(),
                value: v.parse()?,
            }])
        }
        other => bail!("unexpected result type {other} for {promql:?}"),
    }
}

/// The value of a query expected to return exactly one sample; `None` for an empty result or
/// NaN (Flagger's "no values found").
pub fn query_value(prometheus: SocketAddr, promql: &str) -> Result<Option<f64>> {
    let samples = query(prometheus, promql)?;
    match samples.as_slice() {
        [] => Ok(None),
        [one] if one.value.is_nan() => Ok(None),
        [one] => Ok(Some(one.value)),
        many => bail!("{promql:?} returned {} series, expected one", many.len()),
    }
}
