//! Rocket.Chat incoming webhooks: Slack's payload with hex colours.
use super::{Endpoint, Message, Notifier, Poster};
use crate::core::rollout::Severity;
use serde_json::Value;

#[derive(Debug)]
pub struct Rocket {
    pub endpoint: Endpoint,
    pub poster: Poster,
}

impl Notifier for Rocket {
    fn kind(&self) -> &'static str {
        "rocket"
    }
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    fn payload(&self, m: &Message) -> Value {
        let color = if m.severity == Severity::Error {
            "#FF0000"
        } else {
            "#0076D7"
        };
        super::slack_payload(&self.poster, m, color)
    }
}
