//! Metric providers of `MetricTemplate`s (`spec.provider.type`): one module
//! per provider behind [`Provider`]. A provider turns a rendered query into
//! one number, or says there was none, or why it failed; the core words what
//! that means for the check. "No data" and errors never pass a check.
//!
//! The operator builds a provider per query from the template's provider
//! spec and its Secret ([`Source`]) with [`build`]; the builtin App Mesh
//! checks and inline `query`s go to the Prometheus of `spec.metricsServer`.
use crate::api::MetricProvider;
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The HTTP clients every provider shares: one verifying TLS, one not
/// (`insecureSkipVerify`).
pub use crate::operator::webhooks::Clients;

/// What a query found.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Value(f64),
    /// The query ran and found no data (an empty result, NaN, no points).
    NoValues,
    /// The provider could not be asked, or refused: the reason, for the
    /// check's failure message.
    Failed(String),
}

/// Everything a provider is built from.
pub struct Source<'a> {
    /// The template's `spec.provider` (type, address, headers, region,
    /// insecureSkipVerify).
    pub spec: &'a MetricProvider,
    /// The data of `spec.provider.secretRef`, empty without one.
    pub secret: &'a BTreeMap<String, Vec<u8>>,
    /// The metric's `interval` in the Canary (the query window).
    pub interval: Duration,
    /// `spec.metricsServer` or `--metrics-server`: Prometheus' address when
    /// the template has none.
    pub default_address: &'a str,
}

/// One query's surroundings: the shared clients and the time it is asked
/// at (a parameter, so a request's exact shape is testable).
pub struct Call<'a> {
    pub http: &'a Clients,
    pub now: SystemTime,
}

/// A metric provider.
pub trait Provider: Send + Sync {
    /// `spec.provider.type`, e.g. `datadog`: the `provider` label of
    /// `fledge_metric_query_seconds`.
    fn kind(&self) -> &'static str;

    /// Runs `query` and reduces its answer to one number.
    fn query<'a>(&'a self, call: &'a Call<'a>, query: &'a str) -> BoxFuture<'a, Answer>;
}

/// A Secret value as text.
pub fn secret_text(secret: &BTreeMap<String, Vec<u8>>, key: &str) -> Option<String> {
    secret.get(key).map(|v| {
        String::from_utf8_lossy(v)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    })
}

pub mod aws;
pub mod cloudwatch;
pub mod env;
pub mod gcp;
#[cfg(test)]
mod local_http;
pub mod stackdriver;
