//! `fledge migrate appmesh-to-gateway-api`: App Mesh Canaries to Gateway API.
//!
//! A pure conversion: Canaries (and the MetricTemplates they refer to) in,
//! the converted Canaries, the MetricTemplates they now need and a report
//! out. Reading files or a cluster and printing belong to the command
//! (`cli/migrate.rs`); [`migrate_files`] is the whole path from files to
//! output for callers that have files.
//!
//! - [`canary`]: one Canary: provider, gatewayRefs, hosts, App Mesh-only
//!   fields, matches, builtin checks.
//! - [`templates`]: the MetricTemplates of each gateway kind.
//! - [`webhooks`]: load tests that must go through the gateway.
//! - [`input`]: multi-document YAML (and `List`s) to Canaries and templates.
mod canary;
pub mod input;
pub mod templates;
mod webhooks;

use crate::api::{Canary, MetricTemplate};
use anyhow::{bail, Context};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use input::Input;

/// The provider a converted Canary gets.
pub const GATEWAY_PROVIDER: &str = "gatewayapi:v1";

/// A Gateway the HTTPRoute attaches to: `NAMESPACE/NAME[/SECTION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
    pub section: Option<String>,
}

impl FromStr for GatewayRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            format!(
                "{s:?} is not NAMESPACE/NAME[/SECTION]: name the Gateway with its namespace, \
                 e.g. gateway-system/gateway or gateway-system/gateway/http"
            )
        };
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.trim().is_empty()) {
            return Err(bad());
        }
        Ok(GatewayRef {
            namespace: parts[0].to_string(),
            name: parts[1].to_string(),
            section: parts.get(2).map(|p| p.to_string()),
        })
    }
}

/// Which gateway serves the routes: it decides what the builtin checks become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    /// Envoy Gateway: Prometheus queries of its Envoy cluster-per-rule series.
    EnvoyGateway,
    /// Amazon VPC Lattice (AWS Gateway API controller): CloudWatch `AWS/VpcLattice`.
    VpcLattice,
}

impl GatewayKind {
    pub const NAMES: &'static [&'static str] = &["envoy-gateway", "vpc-lattice"];
}

impl FromStr for GatewayKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "envoy-gateway" => Ok(GatewayKind::EnvoyGateway),
            "vpc-lattice" => Ok(GatewayKind::VpcLattice),
            other => Err(format!(
                "unknown gateway kind {other:?}: use envoy-gateway or vpc-lattice"
            )),
        }
    }
}

impl fmt::Display for GatewayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GatewayKind::EnvoyGateway => "envoy-gateway",
            GatewayKind::VpcLattice => "vpc-lattice",
        })
    }
}

/// What the conversion is told.
#[derive(Debug, Clone)]
pub struct Options {
    /// `spec.service.gatewayRefs` of every converted Canary (at least one).
    pub gateways: Vec<GatewayRef>,
    /// `spec.service.hosts`; empty keeps a Canary's own, or derives one.
    pub hosts: Vec<String>,
    pub kind: GatewayKind,
    /// Where load tests reach the gateway, e.g. `http://gateway.gateway-system`.
    pub gateway_address: Option<String>,
    /// Where the new MetricTemplates go; default: each Canary's namespace.
    pub metrics_namespace: Option<String>,
    /// The AWS region of the VPC Lattice metrics (`vpc-lattice` only).
    pub region: Option<String>,
}

/// How a finding reads in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Dropped or left as it was: it has no Gateway API counterpart here, or
    /// needs a value only the user has.
    NotConverted,
    /// Converted, with a difference worth reading.
    Changed,
}

/// One line of the report: which Canary, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `namespace/name`.
    pub canary: String,
    pub field: String,
    pub severity: Severity,
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.canary, self.field, self.reason)
    }
}

/// The converted objects and what the user must know about them.
#[derive(Debug, Clone, Default)]
pub struct Migration {
    pub canaries: Vec<Canary>,
    pub templates: Vec<MetricTemplate>,
    pub findings: Vec<Finding>,
}

impl Migration {
    /// The objects as one YAML stream for `kubectl apply -f -`: the
    /// MetricTemplates first, so the Canaries' references resolve at once.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for t in &self.templates {
            out.push_str("---\n");
            out.push_str(&serde_saphyr::to_string(t).expect("a MetricTemplate serialises"));
        }
        for c in &self.canaries {
            out.push_str("---\n");
            out.push_str(&serde_saphyr::to_string(c).expect("a Canary serialises"));
        }
        out
    }

    pub fn not_converted(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::NotConverted)
    }

    /// The report for stderr: what was not converted, then what changed.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let section = |out: &mut String, title: &str, sev: Severity| {
            let items: Vec<&Finding> = self.findings.iter().filter(|f| f.severity == sev).collect();
            if items.is_empty() {
                return;
            }
            out.push_str(title);
            out.push('\n');
            for f in items {
                out.push_str(&format!("  {f}\n"));
            }
        };
        section(
            &mut out,
            "Not converted (act on each before switching):",
            Severity::NotConverted,
        );
        section(&mut out, "Converted with changes:", Severity::Changed);
        out.push_str(&format!(
            "{} Canary(s) and {} MetricTemplate(s) written; {} field(s) not converted.\n",
            self.canaries.len(),
            self.templates.len(),
            self.not_converted().count()
        ));
        out
    }
}

/// Converts every Canary of `input`. Bad input (not App Mesh, already
/// Gateway API, invalid as a Canary, no gateway) is an error naming the
/// Canary, the field and the fix, and nothing is converted.
pub fn migrate(input: &Input, opts: &Options) -> anyhow::Result<Migration> {
    if opts.gateways.is_empty() {
        bail!(
            "--gateway is required: name the Gateway the routes attach to as \
             NAMESPACE/NAME[/SECTION], e.g. --gateway gateway-system/gateway"
        );
    }
    if opts.kind == GatewayKind::VpcLattice
        && opts.region.as_deref().is_none_or(|r| r.trim().is_empty())
    {
        bail!(
            "--region is required with --gateway-kind vpc-lattice: the CloudWatch \
             MetricTemplates read the VPC Lattice metrics of that region, e.g. --region us-west-2"
        );
    }
    if let Some(a) = &opts.gateway_address {
        webhooks::check_address(a)?;
    }
    if input.canaries.is_empty() {
        bail!(
            "no Canary in the input: give flagger.app/v1beta1 Canaries (-f FILE, or the \
             cluster with --namespace / -A)"
        );
    }
    let mut out = Migration::default();
    let mut errors = Vec::new();
    for c in &input.canaries {
        match canary::convert(c, input, opts) {
            Ok(done) => {
                for t in done.templates {
                    let key = |m: &MetricTemplate| {
                        (m.metadata.namespace.clone(), m.metadata.name.clone())
                    };
                    if !out.templates.iter().any(|have| key(have) == key(&t)) {
                        out.templates.push(t);
                    }
                }
                out.canaries.push(done.canary);
                out.findings.extend(done.findings);
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(out)
}

/// Reads YAML files (multi-document; `-` is stdin) and converts them: the
/// whole command short of printing, for callers that have files.
pub fn migrate_files(paths: &[impl AsRef<Path>], opts: &Options) -> anyhow::Result<Migration> {
    let mut input = Input::default();
    for p in paths {
        let p = p.as_ref();
        let text = if p == Path::new("-") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("reading stdin")?;
            s
        } else {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        };
        input.add_yaml(&text, &p.display().to_string())?;
    }
    migrate(&input, opts)
}

#[cfg(test)]
mod tests;
