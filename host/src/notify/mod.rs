//! Alerts to chat services, with Flagger's payloads (`pkg/notifier`).
//!
//! - [`Notifier`]: one provider type's payload and where it goes; one module
//!   per type ([`slack`], [`msteams`], [`discord`], [`rocket`], [`gchat`]).
//! - [`delivery`]: the background queue that sends them (timeouts, retries,
//!   one lane per destination so a dead receiver only delays itself).
//! - [`alerts`]: what the operator calls: the Canary's `analysis.alerts`
//!   resolved to AlertProviders (or the global notifier), once per step.
pub mod alerts;
pub mod delivery;
pub mod discord;
pub mod gchat;
pub mod msteams;
pub mod rocket;
pub mod slack;
#[cfg(test)]
mod tests;

use crate::core::rollout::{Rollout, Severity};
use fledge_policy::Strategy;
use serde_json::Value;

pub use alerts::Alerts;

/// One line of an alert's details (`Cluster`, `Target`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub value: String,
}

impl Field {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Field {
        Field {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// What an alert says, whatever the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The Canary's name.
    pub workload: String,
    pub namespace: String,
    /// The alert text (the reason).
    pub text: String,
    pub fields: Vec<Field>,
    pub severity: Severity,
}

impl Message {
    /// `<name>.<namespace>`, as every payload names the Canary.
    pub fn id(&self) -> String {
        format!("{}.{}", self.workload, self.namespace)
    }
}

/// Where a payload is POSTed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` (Slack only, as in Flagger).
    pub token: Option<String>,
    /// An HTTP(S) proxy for this endpoint.
    pub proxy: Option<String>,
}

/// A provider type: the JSON it sends and where.
pub trait Notifier: Send + Sync + std::fmt::Debug {
    /// `spec.type` of the AlertProvider (`slack`, `msteams`, ...).
    fn kind(&self) -> &'static str;
    fn endpoint(&self) -> &Endpoint;
    /// The body Flagger sends for `m`.
    fn payload(&self, m: &Message) -> Value;
}

/// Who posts (`spec.username`) and where (`spec.channel`), for the types
/// that name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poster {
    pub username: String,
    pub channel: String,
}

/// A notifier of type `kind`, checked as Flagger's factory checks it: an
/// absolute http(s) URL, and a username and channel where the type has them.
/// The error says what is wrong, without the field (the caller knows it)
/// and without the URL.
pub fn notifier(
    kind: &str,
    mut endpoint: Endpoint,
    poster: Poster,
) -> Result<Box<dyn Notifier>, String> {
    if kind != "slack" {
        // Flagger sends a token to Slack only.
        endpoint.token = None;
    }
    // The URL is not repeated: webhook URLs carry their credentials.
    let url = reqwest::Url::parse(&endpoint.url).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("not an http(s) URL (scheme `{}`)", url.scheme()));
    }
    if let Some(p) = &endpoint.proxy {
        reqwest::Proxy::all(p.as_str()).map_err(|e| format!("proxy: {e}"))?;
    }
    let named = |what: &str, v: &str| {
        if v.is_empty() {
            Err(format!("empty {kind} {what}"))
        } else {
            Ok(())
        }
    };
    Ok(match kind {
        "slack" | "discord" | "rocket" => {
            named("username", &poster.username)?;
            named("channel", &poster.channel)?;
            match kind {
                "slack" => Box::new(slack::Slack { endpoint, poster }),
                "discord" => Box::new(discord::Discord::new(endpoint, poster)),
                _ => Box::new(rocket::Rocket { endpoint, poster }),
            }
        }
        "msteams" => Box::new(msteams::MsTeams { endpoint }),
        "gchat" => Box::new(gchat::GChat { endpoint }),
        other => {
            return Err(format!(
                "`{other}` is not a provider type; use one of {}",
                crate::api::ALERT_PROVIDERS.join(", ")
            ))
        }
    })
}

/// Whether an alert of `severity` goes to an alert whose `severity` is
/// `wanted` (Flagger: info receives everything, warn receives warn and
/// error, error receives error only).
pub fn reaches(severity: Severity, wanted: Severity) -> bool {
    severity >= wanted
}

pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warn => "warn",
        Severity::Error => "error",
    }
}

/// Flagger attaches the Canary's settings to two alerts only: initialization
/// and a new revision (`metadata = true` in its `alert` calls).
pub fn has_metadata(text: &str) -> bool {
    use crate::core::messages::alert;
    text == alert::INITIALIZED || text == alert::NEW_REVISION
}

/// Flagger's `alertMetadata`: target, threshold, deadline, traffic routing.
pub fn metadata(r: &Rollout, target_kind: &str) -> Vec<Field> {
    let a = &r.analysis;
    let mut out = vec![
        Field::new(
            "Target",
            format!("{target_kind}/{}.{}", r.target, r.namespace),
        ),
        Field::new("Failed checks threshold", a.threshold.to_string()),
        Field::new(
            "Progress deadline",
            format!("{}s", r.progress_deadline.as_secs()),
        ),
    ];
    let max = a.max_weight.unwrap_or(0);
    let routing = match r.strategy {
        Strategy::AbTesting => Some("A/B Testing".to_string()),
        Strategy::BlueGreen => Some("Blue/Green".to_string()),
        Strategy::Canary => match a.step_weight.filter(|s| *s > 0) {
            Some(step) => Some(format!("Weight step: {step} max: {max}")),
            None if !a.step_weights.is_empty() => {
                let steps: Vec<String> = a.step_weights.iter().map(u32::to_string).collect();
                Some(format!("Weight steps: {} max: {max}", steps.join(",")))
            }
            None => None,
        },
    };
    if let Some(routing) = routing {
        out.push(Field::new("Traffic routing", routing));
    }
    out
}

/// Flagger's `SlackPayload` with one attachment: `author_name` is
/// `name.namespace`, `text` the alert, `fields` its details. Discord and
/// Rocket.Chat take the same payload (they differ in colours and URL).
pub(crate) fn slack_payload(poster: &Poster, m: &Message, color: &str) -> Value {
    use serde::Serialize;
    #[derive(Serialize)]
    struct Payload<'a> {
        channel: &'a str,
        username: &'a str,
        icon_url: &'a str,
        icon_emoji: &'a str,
        attachments: [Attachment<'a>; 1],
    }
    #[derive(Serialize)]
    struct Attachment<'a> {
        color: &'a str,
        author_name: String,
        text: &'a str,
        mrkdwn_in: [&'a str; 1],
        fields: Vec<SlackField<'a>>,
    }
    #[derive(Serialize)]
    struct SlackField<'a> {
        title: &'a str,
        value: &'a str,
        short: bool,
    }
    let p = Payload {
        channel: &poster.channel,
        username: &poster.username,
        icon_url: "",
        icon_emoji: ":rocket:",
        attachments: [Attachment {
            color,
            author_name: m.id(),
            text: &m.text,
            mrkdwn_in: ["text"],
            fields: m
                .fields
                .iter()
                .map(|f| SlackField {
                    title: &f.name,
                    value: &f.value,
                    short: false,
                })
                .collect(),
        }],
    };
    serde_json::to_value(p).unwrap_or(Value::Null)
}
