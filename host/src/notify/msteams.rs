//! Microsoft Teams incoming webhooks: a legacy `MessageCard`.
use super::{Endpoint, Message, Notifier};
use crate::core::rollout::Severity;
use serde_json::{json, Value};

#[derive(Debug)]
pub struct MsTeams {
    pub endpoint: Endpoint,
}

impl Notifier for MsTeams {
    fn kind(&self) -> &'static str {
        "msteams"
    }
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn payload(&self, m: &Message) -> Value {
        let color = if m.severity == Severity::Error {
            "FF0000"
        } else {
            "0076D7"
        };
        let facts: Vec<Value> = m
            .fields
            .iter()
            .map(|f| json!({"name": f.name, "value": f.value}))
            .collect();
        json!({
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": color,
            "summary": m.id(),
            "sections": [{
                "activityTitle": m.text,
                "activitySubtitle": m.id(),
                "facts": facts,
            }],
        })
    }
}
