//! Google Chat incoming webhooks: one card, a section per line.
use super::{Endpoint, Message, Notifier};
use serde_json::{json, Value};

#[derive(Debug)]
pub struct GChat {
    pub endpoint: Endpoint,
}

fn paragraph(text: String) -> Value {
    json!({"widgets": [{"textParagraph": {"text": text}}]})
}

impl Notifier for GChat {
    fn kind(&self) -> &'static str {
        "gchat"
    }
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    /// Flagger's card, header included (it has no colour for severity).
    fn payload(&self, m: &Message) -> Value {
        let mut sections = vec![paragraph(format!(
            "<font color=#848484><strong>{}</strong></font>",
            m.text
        ))];
        sections.extend(m.fields.iter().map(|f| {
            paragraph(format!(
                "{}<br><font color=#848484><strong>{}</strong></font>",
                f.name, f.value
            ))
        }));
        json!({
            "cards": [{
                "header": {
                    "title": "Flagger",
                    "subtitle": m.id(),
                    "imageUrl": "https://flagger.app/favicon.png",
                },
                "sections": sections,
            }],
        })
    }
}
