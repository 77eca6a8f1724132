//! `"gateway": {...}` of the simulator's configuration.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::mesh::{RequestClass, RouterTraffic};

/// The gateway part of [`SimConfig`](crate::mesh::SimConfig) (`"gateway": {...}` in
/// `PUT /config`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Requests per second sent at each accepted HTTPRoute without an entry in `routes` (as if
    /// its clients addressed only it, so routes of tests running at once do not compete).
    pub default_rps: f64,
    /// Per-route traffic, keyed by HTTPRoute `namespace/name`.
    pub routes: BTreeMap<String, RouterTraffic>,
    /// Traffic into a Gateway (keyed `namespace/name`), routed across every route attached to
    /// it with the precedence between routes (hostnames, then matches, then age and name).
    pub gateways: BTreeMap<String, RouterTraffic>,
    /// The request mix sent at routes without their own (weights are relative).
    pub requests: Vec<RequestClass>,
    /// Seconds between first seeing a route generation and accepting it (writing its status
    /// and routing by it).
    pub accept_delay_secs: f64,
    /// Per-route acceptance delay, keyed by HTTPRoute `namespace/name`.
    pub accept_delay: BTreeMap<String, f64>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            default_rps: 50.0,
            routes: BTreeMap::new(),
            gateways: BTreeMap::new(),
            requests: vec![RequestClass::default()],
            accept_delay_secs: 0.0,
            accept_delay: BTreeMap::new(),
        }
    }
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<()> {
        if self.default_rps < 0.0
            || self
                .routes
                .values()
                .chain(self.gateways.values())
                .any(|t| t.rps < 0.0)
        {
            bail!("gateway: rps must not be negative");
        }
        if self.accept_delay_secs < 0.0 || self.accept_delay.values().any(|d| *d < 0.0) {
            bail!("gateway: accept_delay_secs and accept_delay must not be negative");
        }
        for (key, t) in &self.routes {
            if key.split('/').count() != 2 {
                bail!("gateway.routes: {key:?} is not namespace/name");
            }
            if t.requests.as_ref().is_some_and(|r| r.is_empty()) {
                bail!("gateway.routes.{key}.requests: give at least one request class");
            }
        }
        Ok(())
    }

    pub(super) fn delay(&self, route: &str) -> f64 {
        self.accept_delay
            .get(route)
            .copied()
            .unwrap_or(self.accept_delay_secs)
    }
}
