//! Go duration strings (`1m`, `30s`, `1m30s`, `500ms`), as Kubernetes and
//! Flagger write them.
use std::time::Duration;

/// Longest duration [`parse`] accepts at all; fields state their own, smaller
/// bounds. Far below what `Duration` can hold, so no input can overflow it.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a Go duration string. Errors say what was expected.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("`{s}` has a number without a unit (use e.g. `30s` or `1m`)"))?;
        if num_len == 0 {
            return Err(format!(
                "`{s}` is not a duration (use e.g. `30s`, `1m` or `1m30s`)"
            ));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("`{s}` has a malformed number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(format!(
                    "`{s}` has an unknown unit `{other}` (use ms, s, m or h)"
                ))
            }
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    // A long run of digits parses to a huge or infinite f64; refuse it before
    // it reaches `Duration`, which would panic.
    if !total.is_finite() || total > MAX.as_secs_f64() {
        return Err(format!("`{s}` is longer than {}", format(MAX)));
    }
    Ok(Duration::from_secs_f64(total))
}

/// A duration as a limit is stated: `24h`, `1h`, `90s`, `500ms`.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if secs != 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs != 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::{format, parse, MAX};
    use std::time::Duration;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse("1 minute").is_err());
        assert!(parse("60").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn durations_too_long_for_duration_are_errors_not_panics() {
        let huge = format!("{}h", "9".repeat(400));
        assert_eq!(parse(&huge), Err(format!("`{huge}` is longer than 8760h")));
        assert!(parse("99999999999999999999h").is_err());
        assert!(parse("8761h").is_err());
        assert_eq!(parse("8760h"), Ok(MAX));
        assert_eq!(format(Duration::from_secs(86400)), "24h");
        assert_eq!(format(Duration::from_secs(90)), "90s");
    }
}
