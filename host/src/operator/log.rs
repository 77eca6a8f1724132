//! The operator's log lines: one JSON object per line with `ts`, `level`,
//! `msg` and the event's fields (`canary`, `namespace`, ...), so
//! `kubectl logs ... | jq .msg` reads like the guide; or the same as text.
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Formats events as `LogFormat` says.
pub struct Format(pub LogFormat);

/// Installs the process's log subscriber on stderr: `level` is a level
/// (`info`, with the HTTP and Kubernetes clients' chatter kept at `warn`) or
/// a full `tracing` filter; `--log-level` names the flag in the error.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let filter = match level {
        "error" | "warn" | "info" | "debug" | "trace" => {
            format!("{level},kube=warn,hyper=warn,tower=warn,reqwest=warn")
        }
        other => other.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .with_context(|| format!("--log-level {level}: not a level or filter"))?;
    tracing_subscriber::fmt()
        .event_format(Format(format))
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    Ok(())
}

#[derive(Default)]
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(name(field), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(name(field), Value::String(value.into()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(name(field), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(name(field), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(name(field), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(name(field), value.into());
    }
}

fn name(field: &Field) -> String {
    match field.name() {
        "message" => "msg".into(),
        other => other.into(),
    }
}

impl<S, N> FormatEvent<S, N> for Format
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let ts = format!("{:.3}", Timestamp::now());
        let msg = fields
            .0
            .remove("msg")
            .unwrap_or(Value::String(String::new()));
        match self.0 {
            LogFormat::Json => {
                let mut line = Map::new();
                line.insert("level".into(), level.into());
                line.insert("ts".into(), ts.into());
                line.insert("msg".into(), msg);
                line.append(&mut fields.0);
                writeln!(writer, "{}", Value::Object(line))
            }
            LogFormat::Text => {
                let msg = msg.as_str().unwrap_or_default().to_string();
                write!(writer, "{ts} {level:5} {msg}")?;
                for (k, v) in &fields.0 {
                    match v {
                        Value::String(s) => write!(writer, " {k}={s}")?,
                        other => write!(writer, " {k}={other}")?,
                    }
                }
                writeln!(writer)
            }
        }
    }
}
