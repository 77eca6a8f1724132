//! How a simulation is printed: log lines (`text`), Kubernetes Events
//! (`events`), or one JSON object per line (`json`).
use super::{Record, Report, SentAlert};
use crate::core::rollout::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The `msg` of each log line, as `kubectl logs deploy/flagger | jq .msg` shows.
    Text,
    /// The Event notes, as `kubectl describe canary` lists them.
    Events,
    /// One JSON object per line with ts, msg, phase, canaryWeight, failedChecks, iteration.
    Json,
}

/// The lines of `report` in `format`; bootstrap lines only if asked for.
/// JSON also carries the alerts that would have been sent, where they occur.
pub fn render(report: &Report, format: Format, bootstrap: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut alerts = report.alerts.iter().peekable();
    for (i, r) in report.records.iter().enumerate() {
        if format == Format::Json {
            while let Some(a) = alerts.next_if(|a| a.after <= i) {
                if bootstrap || !a.bootstrap {
                    out.push(alert_line(&report.canary, a));
                }
            }
        }
        if !bootstrap && r.bootstrap {
            continue;
        }
        out.push(match format {
            Format::Text => r.msg.clone(),
            Format::Events => r.event.clone(),
            Format::Json => json_line(&report.canary, r),
        });
    }
    if format == Format::Json {
        out.extend(
            alerts
                .filter(|a| bootstrap || !a.bootstrap)
                .map(|a| alert_line(&report.canary, a)),
        );
    }
    out
}

fn alert_line(canary: &str, a: &SentAlert) -> String {
    serde_json::json!({
        "ts": rfc3339(a.ts),
        "level": "info",
        "msg": format!("alert sent to {}", a.provider),
        "canary": canary,
        "alert": {
            "provider": a.provider,
            "severity": match a.severity {
                Severity::Info => "info",
                Severity::Warn => "warn",
                Severity::Error => "error",
            },
            "message": a.message,
        },
    })
    .to_string()
}

fn json_line(canary: &str, r: &Record) -> String {
    serde_json::json!({
        "ts": rfc3339(r.ts),
        "level": if r.warning { "warn" } else { "info" },
        "msg": r.msg,
        "canary": canary,
        "phase": r.phase.as_str(),
        "canaryWeight": r.canary_weight,
        "failedChecks": r.failed_checks,
        "iteration": r.iteration,
    })
    .to_string()
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = fledge_policy::calendar::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_the_simulation_epoch() {
        assert_eq!(super::rfc3339(super::super::START), "2026-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_827_696), "2000-02-29T12:34:56Z");
    }
}
