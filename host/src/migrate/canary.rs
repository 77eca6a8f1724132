//! One App Mesh Canary to `gatewayapi:v1`: what changes, what is dropped and
//! why; everything else is kept as written.
use super::templates::{self, DURATION, SUCCESS_RATE, TARGET_GROUP_VARIABLE};
use super::webhooks::{self, Rewrite};
use super::{Finding, GatewayKind, Input, Options, Severity, GATEWAY_PROVIDER};
use crate::api::{self, Canary, CanarySpec, MetricTemplate, NamespacedRef, ParentReference};

/// Providers of App Mesh Canaries (`appmesh` is Flagger's legacy name).
const APPMESH: &[&str] = &["appmesh:v1beta2", "appmesh"];
/// The Canary annotation App Mesh reads to turn on the VirtualNode's access log.
const ACCESS_LOG: &str = "appmesh.flagger.app/accesslog";

pub struct Converted {
    pub canary: Canary,
    pub templates: Vec<MetricTemplate>,
    pub findings: Vec<Finding>,
}

struct Report {
    canary: String,
    findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, field: impl Into<String>, severity: Severity, reason: impl Into<String>) {
        self.findings.push(Finding {
            canary: self.canary.clone(),
            field: field.into(),
            severity,
            reason: reason.into(),
        });
    }
}

/// Converts one Canary, or says which field stops it and how to fix it.
pub fn convert(c: &Canary, input: &Input, opts: &Options) -> Result<Converted, String> {
    let id = format!("{}/{}", c.namespace(), c.name());
    let provider = c.spec.as_ref().and_then(|s| s.provider.as_deref());
    match provider {
        Some(p) if p.starts_with("gatewayapi") => {
            return Err(format!(
                "Canary {id}: spec.provider: already {p:?}; it needs no migration: leave it out \
                 of the input"
            ))
        }
        Some(p) if !APPMESH.contains(&p) => {
            return Err(format!(
                "Canary {id}: spec.provider: {p:?} is not App Mesh; this command converts \
                 appmesh:v1beta2 Canaries: leave it out of the input"
            ))
        }
        _ => {}
    }
    if let Err(issues) = api::validate(c) {
        let lines: Vec<String> = issues.iter().map(|i| format!("Canary {id}: {i}")).collect();
        return Err(lines.join("\n"));
    }

    let mut r = Report {
        canary: id,
        findings: Vec::new(),
    };
    let mut out = c.clone();
    out.status = None;
    let namespace = c.namespace().to_string();
    let spec = out.spec.get_or_insert_with(CanarySpec::default);
    if provider.is_none() {
        r.add(
            "spec.provider",
            Severity::Changed,
            format!("unset (the operator's --mesh-provider, appmesh:v1beta2 by default) is now {GATEWAY_PROVIDER}"),
        );
    }
    spec.provider = Some(GATEWAY_PROVIDER.to_string());
    let target = spec
        .target_ref
        .as_ref()
        .and_then(|t| t.name.clone())
        .unwrap_or_default();
    let service = spec.service.get_or_insert_with(Default::default);
    let apex = service.name.clone().unwrap_or_else(|| target.clone());

    // Where the HTTPRoute attaches, and the names it answers to.
    if service.gateway_refs.as_ref().is_some_and(|g| !g.is_empty()) {
        r.add(
            "spec.service.gatewayRefs",
            Severity::Changed,
            "replaced by the --gateway given",
        );
    }
    service.gateway_refs = Some(
        opts.gateways
            .iter()
            .map(|g| ParentReference {
                name: Some(g.name.clone()),
                namespace: Some(g.namespace.clone()),
                section_name: g.section.clone(),
                ..Default::default()
            })
            .collect(),
    );
    if !opts.hosts.is_empty() {
        service.hosts = Some(opts.hosts.clone());
    } else if service.hosts.as_ref().is_none_or(|h| h.is_empty()) {
        let derived = format!("{apex}.{namespace}");
        r.add(
            "spec.service.hosts",
            Severity::Changed,
            format!(
                "none given: derived {derived}, the name App Mesh clients used; pass --host with \
                 the name clients send through the gateway"
            ),
        );
        service.hosts = Some(vec![derived]);
    }
    let host = service
        .hosts
        .as_ref()
        .and_then(|h| h.first().cloned())
        .unwrap_or_default();

    // App Mesh only.
    if let Some(mesh) = service.mesh_name.take() {
        r.add(
            "spec.service.meshName",
            Severity::NotConverted,
            format!(
                "the App Mesh mesh {mesh:?} has no Gateway API counterpart; the route attaches \
                 to --gateway instead (removed)"
            ),
        );
    }
    if let Some(backends) = service.backends.take() {
        r.add(
            "spec.service.backends",
            Severity::NotConverted,
            format!(
                "App Mesh egress to {} has no Gateway API counterpart: a gateway routes requests \
                 to the service, not the service's own calls; they go directly to those Services \
                 once the sidecars are gone (removed)",
                backends.join(", ")
            ),
        );
    }
    if let Some(retries) = service.retries.take() {
        let what = [
            retries.attempts.map(|a| format!("attempts {a}")),
            retries
                .per_try_timeout
                .map(|t| format!("perTryTimeout {t}")),
            retries.retry_on.map(|o| format!("retryOn {o}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        let instead = match opts.kind {
            GatewayKind::EnvoyGateway => {
                "set them on the gateway: an Envoy Gateway BackendTrafficPolicy (spec.retry) \
                 targeting the HTTPRoute"
            }
            GatewayKind::VpcLattice => "configure retries in the calling service",
        };
        r.add(
            "spec.service.retries",
            Severity::NotConverted,
            format!(
                "HTTPRoute retry ({what}) is not in Gateway API v1.6.3's standard channel \
                 (standard from v1.7.0) and the gatewayapi:v1 router writes none; {instead} \
                 (removed)"
            ),
        );
    }
    if let Some(t) = &service.timeout {
        r.add(
            "spec.service.timeout",
            Severity::Changed,
            format!(
                "kept: {t} becomes the HTTPRoute rule's timeouts.request, which bounds the whole \
                 request at the gateway"
            ),
        );
    }
    if let Some(rw) = service.rewrite.take() {
        let prefix = service
            .match_
            .as_ref()
            .and_then(|m| m.first())
            .and_then(|m| m.uri.as_ref())
            .and_then(|u| u.prefix.clone())
            .unwrap_or_else(|| "/".into());
        let no_op = rw.authority.is_none() && rw.uri.as_deref().is_none_or(|u| u == prefix);
        if no_op {
            r.add(
                "spec.service.rewrite",
                Severity::Changed,
                format!("removed: rewriting {prefix} to itself changes nothing"),
            );
        } else {
            r.add(
                "spec.service.rewrite",
                Severity::NotConverted,
                "the gatewayapi:v1 router writes no URLRewrite filter (as Flagger's); add the \
                 rewrite to the application or a gateway policy (removed)",
            );
        }
    }
    let annotations = out
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    if let Some(v) = annotations.remove(ACCESS_LOG) {
        let instead = match opts.kind {
            GatewayKind::EnvoyGateway => {
                "the gateway's access log (Envoy Gateway: EnvoyProxy spec.telemetry.accessLog)"
            }
            GatewayKind::VpcLattice => {
                "an AccessLogPolicy on the HTTPRoute (application-networking.k8s.aws/v1alpha1)"
            }
        };
        r.add(
            format!("metadata.annotations.{ACCESS_LOG}"),
            Severity::NotConverted,
            format!("{v:?} turned on the VirtualNode's access log; use {instead} (removed)"),
        );
    }
    if annotations.is_empty() {
        out.metadata.annotations = None;
    }

    let spec = out.spec.as_mut().expect("set above");
    let templates = analysis(spec, &mut r, input, opts, &namespace, &apex, &host);
    Ok(Converted {
        canary: out,
        templates,
        findings: r.findings,
    })
}

/// A/B matches, checks and webhooks; returns the templates the checks need.
fn analysis(
    spec: &mut CanarySpec,
    r: &mut Report,
    input: &Input,
    opts: &Options,
    namespace: &str,
    apex: &str,
    host: &str,
) -> Vec<MetricTemplate> {
    let Some(a) = spec.analysis.as_mut() else {
        return Vec::new();
    };
    for (i, m) in a.match_.iter().flatten().enumerate() {
        for (field, set) in [
            ("queryParams", m.query_params.is_some()),
            ("sourceLabels", m.source_labels.is_some()),
        ] {
            if set {
                r.add(
                    format!("spec.analysis.match[{i}].{field}"),
                    Severity::NotConverted,
                    "the gatewayapi:v1 router matches A/B traffic on headers only and refuses \
                     this condition (without it the A/B rule would match every request): \
                     replace it with a header match before applying (kept)",
                );
            }
        }
    }

    let templates_ns = opts
        .metrics_namespace
        .clone()
        .unwrap_or(namespace.to_string());
    let mut used = Vec::new();
    for (i, m) in a.metrics.iter_mut().flatten().enumerate() {
        let name = m.name.clone().unwrap_or_default();
        let field = format!("spec.analysis.metrics[{i}]");
        let builtin = m.template_ref.is_none()
            && m.query.is_none()
            && (name == SUCCESS_RATE || name == DURATION);
        if builtin {
            let template = templates::name(opts.kind, &name);
            m.template_ref = Some(NamespacedRef {
                name: Some(template.clone()),
                namespace: opts.metrics_namespace.clone(),
            });
            r.add(
                format!("{field} ({name})"),
                Severity::Changed,
                format!(
                    "the builtin App Mesh check now reads the gateway's view: templateRef \
                     {templates_ns}/{template} (thresholdRange and interval kept)"
                ),
            );
            if opts.kind == GatewayKind::VpcLattice {
                let vars = m.template_variables.get_or_insert_with(Default::default);
                if !vars.contains_key(TARGET_GROUP_VARIABLE) {
                    let prefix = format!("k8s-{namespace}-{apex}-canary-");
                    vars.insert(
                        TARGET_GROUP_VARIABLE.into(),
                        format!("SET-TO-THE-TARGET-GROUP-OF-{prefix}"),
                    );
                    r.add(
                        format!("{field}.templateVariables.{TARGET_GROUP_VARIABLE}"),
                        Severity::NotConverted,
                        format!(
                            "only known once the HTTPRoute exists: set it to the TargetGroup \
                             dimension of the canary's target group, named {prefix}*: \
                             `aws vpc-lattice list-target-groups --query \
                             \"items[?starts_with(name, '{prefix}')].id\"`; until then the check \
                             fails and the Canary does not promote"
                        ),
                    );
                }
            }
            if !used.contains(&name) {
                used.push(name);
            }
            continue;
        }
        let query = match &m.template_ref {
            Some(t) => input
                .template(
                    t.name.as_deref().unwrap_or_default(),
                    t.namespace.as_deref(),
                    namespace,
                )
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.query.clone()),
            None => m.query.clone(),
        };
        if query.is_some_and(|q| reads_sidecars(&q)) {
            r.add(
                format!("{field} ({name})"),
                Severity::NotConverted,
                "its query reads the App Mesh sidecars' Envoy series (kubernetes_pod_name), \
                 which stop with the mesh: rewrite it over the gateway's series",
            );
        }
    }

    for (i, w) in a.webhooks.iter_mut().flatten().enumerate() {
        let rollout = w
            .type_
            .as_deref()
            .is_none_or(|t| t.is_empty() || t == "rollout");
        let Some(cmd) = w.metadata.as_mut().and_then(|m| m.get_mut("cmd")) else {
            continue;
        };
        if !rollout {
            continue;
        }
        let field = format!(
            "spec.analysis.webhooks[{i}] ({}).metadata.cmd",
            w.name.as_deref().unwrap_or_default()
        );
        match webhooks::rewrite(cmd, apex, namespace, host, opts.gateway_address.as_deref()) {
            Rewrite::Unchanged => {}
            Rewrite::Rewritten(new) => {
                r.add(
                    field,
                    Severity::Changed,
                    format!("now calls the gateway: {new}"),
                );
                *cmd = new;
            }
            Rewrite::Report(why) => r.add(field, Severity::NotConverted, why),
        }
    }

    used.iter()
        .flat_map(|b| {
            templates::for_gateway(opts.kind, &templates_ns, opts.region.as_deref())
                .into_iter()
                .filter(move |t| t.metadata.name.as_deref() == Some(&templates::name(opts.kind, b)))
        })
        .collect()
}

/// Whether a query reads the per-pod Envoy series of App Mesh sidecars.
fn reads_sidecars(q: &str) -> bool {
    q.contains("envoy_") && q.contains("kubernetes_pod_name")
}
