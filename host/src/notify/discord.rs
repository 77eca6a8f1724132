//! Discord webhooks through their Slack-compatible endpoint (`<hook>/slack`).
use super::{Endpoint, Message, Notifier, Poster};
use crate::core::rollout::Severity;
use serde_json::Value;

#[derive(Debug)]
pub struct Discord {
    endpoint: Endpoint,
    poster: Poster,
}

impl Discord {
    /// Appends `/slack` to the hook's path unless the URL already ends with
    /// it, as Flagger does; Discord takes no token.
    pub fn new(mut endpoint: Endpoint, poster: Poster) -> Discord {
        if !endpoint.url.ends_with("/slack") {
            if let Ok(mut url) = reqwest::Url::parse(&endpoint.url) {
                let path = format!("{}/slack", url.path().trim_end_matches('/'));
                url.set_path(&path);
                endpoint.url = url.to_string();
            }
        }
        endpoint.token = None;
        Discord { endpoint, poster }
    }
}

impl Notifier for Discord {
    fn kind(&self) -> &'static str {
        "discord"
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
