//! Slack incoming webhooks, or `chat.postMessage` with a bot token.
use super::{Endpoint, Message, Notifier, Poster};
use crate::core::rollout::Severity;
use serde_json::Value;

#[derive(Debug)]
pub struct Slack {
    pub endpoint: Endpoint,
    pub poster: Poster,
}

impl Notifier for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn payload(&self, m: &Message) -> Value {
        let color = if m.severity == Severity::Error {
            "danger"
        } else {
            "good"
        };
        super::slack_payload(&self.poster, m, color)
    }
}
