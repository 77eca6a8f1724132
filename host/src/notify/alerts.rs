//! The alerts of a step, from the operator to the providers.
//!
//! [`Alerts::post`] is called while a recorded step is carried out. It only
//! builds the message and queues it: AlertProviders and their Secrets are
//! read, and payloads sent, by a background task, so an alert can neither
//! delay nor fail a rollout. A reference that cannot be resolved is a
//! Warning Event on the Canary (reason `Alert`) naming the field and the fix.
//!
//! Once per step: a step's alerts are handed over once per operator process
//! (remembered by Canary uid, step time and position in the step). After a
//! restart, a step found unfinished in `status.pendingStep` hands its alerts
//! over again: delivery is at-least-once. A crash between sending a step's
//! alerts and clearing its record repeats them; it never loses them.
//! Alerts still queued when the process ends are lost.
use super::delivery::{Delivery, Post};
use super::{Endpoint, Field, Message, Notifier, Poster};
use crate::api::{AlertProviderSpec, ALERT_PROVIDERS};
use crate::core::rollout::{AlertSpec, Rollout, Severity};
use crate::operator::events::{self, Recorder};
use crate::operator::resource::CanaryObject;
use crate::operator::status::{AlertSeverity, PendingAlert};
use crate::operator::Notifiers;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::Client;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Alerts waiting to be resolved to providers.
const QUEUE: usize = 256;

/// The operator's side: cheap to call, never waits.
pub struct Alerts {
    tx: mpsc::Sender<Job>,
    once: Once,
    cluster: Option<String>,
}

/// One alert of one Canary, before its providers are looked up.
struct Job {
    canary: CanaryObject,
    alerts: Vec<AlertSpec>,
    message: Message,
}

impl Alerts {
    /// Starts the background task. `global` receives the alerts of Canaries
    /// without `analysis.alerts`; `cluster` is added to every alert.
    pub fn start(
        client: Client,
        recorder: Recorder,
        global: Option<Arc<dyn Notifier>>,
        cluster: Option<String>,
        delivery: Delivery,
    ) -> Alerts {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        tokio::spawn(async move {
            let r = Resolver {
                client,
                recorder,
                global,
                delivery,
            };
            while let Some(job) = rx.recv().await {
                r.handle(job).await;
            }
        });
        Alerts {
            tx,
            once: Once::default(),
            cluster: cluster.filter(|c| !c.is_empty()),
        }
    }

    /// Queues the alert at `index` of the recorded `step` of `obj`, unless
    /// it is muted or this process handed it over already.
    pub fn post(
        &self,
        obj: &CanaryObject,
        r: &Rollout,
        step: &str,
        index: usize,
        alert: &PendingAlert,
        standing: Standing,
    ) {
        if alert.muted {
            // Flagger sends nothing for a webhook with `muteAlert`.
            return;
        }
        let uid = obj.metadata.uid.as_deref().unwrap_or("");
        if !self
            .once
            .first(uid, step, &format!("{index}/{}", alert.message))
        {
            tracing::debug!(canary = %r.id(), namespace = %r.namespace, step, "alert of this step already sent: {}", alert.message);
            return;
        }
        let kind = obj
            .spec
            .pointer("/targetRef/kind")
            .and_then(|k| k.as_str())
            .filter(|k| !k.is_empty())
            .unwrap_or("Deployment");
        let job = Job {
            canary: obj.clone(),
            alerts: r.alerts.clone(),
            message: message(r, kind, self.cluster.as_deref(), alert, standing),
        };
        if let Err(e) = self.tx.try_send(job) {
            let e = match e {
                mpsc::error::TrySendError::Full(_) => "the alert queue is full",
                mpsc::error::TrySendError::Closed(_) => "the alert task has stopped",
            };
            tracing::warn!(canary = %r.id(), namespace = %r.namespace, "alert dropped, {e}: {}", alert.message);
        }
    }
}

/// Where the Canary stands when an alert is sent: the phase and canary
/// weight its step left it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub phase: fledge_policy::Phase,
    pub canary_weight: u32,
}

/// The message Flagger's `alert` builds (`Cluster` first, then the Canary's
/// settings for initialization and new revisions), then the phase and the
/// canary's weight, which Flagger's alerts leave out.
pub fn message(
    r: &Rollout,
    kind: &str,
    cluster: Option<&str>,
    alert: &PendingAlert,
    standing: Standing,
) -> Message {
    let mut fields = Vec::new();
    if let Some(c) = cluster {
        fields.push(Field::new("Cluster", c));
    }
    if super::has_metadata(&alert.message) {
        fields.extend(super::metadata(r, kind));
    }
    fields.push(Field::new("Phase", standing.phase.as_str()));
    fields.push(Field::new(
        "Canary weight",
        format!("{}%", standing.canary_weight),
    ));
    Message {
        workload: r.name.clone(),
        namespace: r.namespace.clone(),
        text: alert.message.clone(),
        fields,
        severity: match alert.severity {
            AlertSeverity::Info => Severity::Info,
            AlertSeverity::Warn => Severity::Warn,
            AlertSeverity::Error => Severity::Error,
        },
    }
}

/// Which alerts of which step this process handed over: the current step
/// of each Canary only, so it stays as small as the number of Canaries.
#[derive(Default)]
pub struct Once {
    seen: Mutex<HashMap<String, (String, HashSet<String>)>>,
}

impl Once {
    /// True the first time `key` of `step` of Canary `uid` is asked about.
    pub fn first(&self, uid: &str, step: &str, key: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let entry = seen
            .entry(uid.to_string())
            .or_insert_with(|| (step.to_string(), HashSet::new()));
        if entry.0 != step {
            *entry = (step.to_string(), HashSet::new());
        }
        entry.1.insert(key.to_string())
    }
}

/// The global notifier of `--msteams-url` (which wins, as in Flagger) or
/// `--slack-url`; an error names the flag and the fix.
pub fn global(n: &Notifiers) -> anyhow::Result<Option<Arc<dyn Notifier>>> {
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let poster = Poster {
        username: set(&n.slack_user).unwrap_or_else(|| "flagger".into()),
        channel: set(&n.slack_channel).unwrap_or_default(),
    };
    if let Some(url) = set(&n.msteams_url) {
        let endpoint = Endpoint {
            url,
            ..Default::default()
        };
        let t = super::notifier("msteams", endpoint, poster)
            .map_err(|e| anyhow::anyhow!("--msteams-url: {e}; pass the Teams webhook URL"))?;
        return Ok(Some(Arc::from(t)));
    }
    let Some(url) = set(&n.slack_url) else {
        return Ok(None);
    };
    if poster.channel.is_empty() {
        anyhow::bail!("--slack-channel: missing; --slack-url needs the channel to post to");
    }
    let endpoint = Endpoint {
        url,
        token: None,
        proxy: set(&n.slack_proxy_url),
    };
    let t = super::notifier("slack", endpoint, poster).map_err(|e| {
        anyhow::anyhow!("--slack-url/--slack-proxy-url: {e}; pass the Slack webhook URL")
    })?;
    Ok(Some(Arc::from(t)))
}

/// Why an alert was not sent to one provider.
#[derive(Debug)]
struct Refusal {
    field: String,
    problem: String,
    fix: String,
}

fn refusal(field: impl Into<String>, problem: impl Into<String>, fix: &str) -> Refusal {
    Refusal {
        field: field.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

struct Resolver {
    client: Client,
    recorder: Recorder,
    global: Option<Arc<dyn Notifier>>,
    delivery: Delivery,
}

impl Resolver {
    async fn handle(&self, job: Job) {
        let m = &job.message;
        let id = m.id();
        if job.alerts.is_empty() {
            if let Some(n) = &self.global {
                self.queue(n.clone(), m, &id, format!("global {}", n.kind()));
            }
            return;
        }
        for (i, spec) in job.alerts.iter().enumerate() {
            if !super::reaches(m.severity, spec.severity) {
                continue;
            }
            match self.resolve(i, spec).await {
                Ok((n, label)) => self.queue(Arc::from(n), m, &id, label),
                Err(r) => {
                    let text = format!(
                        "Alert `{}` not sent: {}: {}; {}",
                        m.text, r.field, r.problem, r.fix
                    );
                    events::log(&job.canary, true, &text);
                    self.recorder
                        .publish(&job.canary, true, "Alert", &text)
                        .await;
                }
            }
        }
    }

    fn queue(&self, n: Arc<dyn Notifier>, m: &Message, id: &str, provider: String) {
        let body = n.payload(m);
        self.delivery.enqueue(Post {
            notifier: n,
            body,
            canary: id.to_string(),
            provider,
        });
    }

    /// The notifier of `analysis.alerts[i]`, read as Flagger reads it: the
    /// AlertProvider in `providerRef.namespace` (default: the Canary's), its
    /// Secret's `address` (and `token`, `proxy`) over the spec's, username
    /// `flagger` and channel `general` unless set.
    async fn resolve(
        &self,
        i: usize,
        spec: &AlertSpec,
    ) -> Result<(Box<dyn Notifier>, String), Refusal> {
        let (name, ns) = (&spec.provider, &spec.provider_namespace);
        let at = format!("spec.analysis.alerts[{i}].providerRef");
        let ar = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("flagger.app", "v1beta1", "AlertProvider"),
            "alertproviders",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &ar);
        let obj =
            match api.get_opt(name).await {
                Ok(Some(o)) => o,
                Ok(None) => {
                    return Err(refusal(
                        at,
                        format!("AlertProvider {name}.{ns} not found"),
                        "create it, or correct providerRef.name and providerRef.namespace",
                    ))
                }
                Err(e) => return Err(refusal(
                    at,
                    format!("reading AlertProvider {name}.{ns}: {e}"),
                    "check that the alertproviders CRD is installed and readable by the operator",
                )),
            };
        let provider = format!("AlertProvider {name}.{ns}");
        let p: AlertProviderSpec = serde_json::from_value(obj.data["spec"].clone())
            .map_err(|e| refusal(format!("{provider} spec"), e.to_string(), "fix the spec"))?;
        let kind = p.type_.clone().unwrap_or_default();
        if !ALERT_PROVIDERS.contains(&kind.as_str()) {
            return Err(refusal(
                format!("{provider} spec.type"),
                if kind.is_empty() {
                    "missing".to_string()
                } else {
                    format!("`{kind}` is not a provider type")
                },
                &format!("use one of {}", ALERT_PROVIDERS.join(", ")),
            ));
        }
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let mut endpoint = Endpoint {
            url: set(&p.address).unwrap_or_default(),
            token: None,
            proxy: set(&p.proxy),
        };
        let mut url_field = format!("{provider} spec.address");
        let mut proxy_field = format!("{provider} spec.proxy");
        if let Some(secret) = p.secret_ref.as_ref().and_then(|s| set(&s.name)) {
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            let s = match secrets.get_opt(&secret).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    return Err(refusal(
                        format!("{provider} spec.secretRef.name"),
                        format!("Secret {secret}.{ns} not found"),
                        "create it with the webhook URL under `address`",
                    ))
                }
                Err(e) => {
                    return Err(refusal(
                        format!("{provider} spec.secretRef.name"),
                        format!("reading Secret {secret}.{ns}: {e}"),
                        "let the operator read Secrets in this namespace",
                    ))
                }
            };
            let key = |k: &str| {
                s.data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map(|v| String::from_utf8_lossy(&v.0).trim().to_string())
                    .filter(|v| !v.is_empty())
            };
            let Some(url) = key("address") else {
                return Err(refusal(
                    format!("{provider} spec.secretRef.name"),
                    format!("Secret {secret}.{ns} has no `address` key"),
                    "put the webhook URL under `address`",
                ));
            };
            endpoint.url = url;
            endpoint.token = key("token");
            url_field = format!("Secret {secret}.{ns} key address");
            if let Some(proxy) = key("proxy") {
                endpoint.proxy = Some(proxy);
                proxy_field = format!("Secret {secret}.{ns} key proxy");
            }
        }
        if endpoint.url.is_empty() {
            return Err(refusal(
                url_field,
                "empty, and there is no spec.secretRef",
                "set spec.address, or spec.secretRef to a Secret with an `address` key",
            ));
        }
        if let Some(proxy) = &endpoint.proxy {
            if let Err(e) = reqwest::Proxy::all(proxy.as_str()) {
                return Err(refusal(
                    proxy_field,
                    format!("not a proxy URL: {e}"),
                    "use http://host:port",
                ));
            }
        }
        let poster = Poster {
            username: set(&p.username).unwrap_or_else(|| "flagger".into()),
            channel: set(&p.channel).unwrap_or_else(|| "general".into()),
        };
        let n = super::notifier(&kind, endpoint, poster)
            .map_err(|e| refusal(url_field, e, "use the provider's webhook URL"))?;
        Ok((n, format!("{kind} {provider}")))
    }
}
