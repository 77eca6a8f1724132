//! Reason texts in the words Flagger users know from their events and logs.

/// Formats a number the way Go's `%v` prints a float64 in the ranges that
/// thresholds use: `99`, `99.5`, `0.5`.
pub fn number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Whether `value` lies within `[min, max]`, both bounds inclusive and
/// optional. A value that is not a finite number (NaN, ±infinity) lies within
/// no range: a measurement that broke never passes a check.
pub fn within(value: f64, min: Option<f64>, max: Option<f64>) -> bool {
    value.is_finite() && min.is_none_or(|min| value >= min) && max.is_none_or(|max| value <= max)
}

/// `success rate 69.17% < 99%` / `request duration 1.20s > 0.5s` /
/// `<name> 3.14 > 2`: why `value` is outside `[min, max]`, or `None` when inside.
/// `unit` decides the wording; `name` is the metric's name.
pub fn threshold_violation(
    name: &str,
    unit: crate::MetricUnit,
    value: f64,
    min: Option<f64>,
    max: Option<f64>,
) -> Option<String> {
    use crate::MetricUnit;
    if within(value, min, max) {
        return None;
    }
    if !value.is_finite() {
        return Some(format!("{name} returned no finite number ({value})"));
    }
    let (op, bound) = match (min, max) {
        (Some(min), _) if value < min => ("<", min),
        // Finite and outside the range: above the maximum.
        (_, Some(max)) => (">", max),
        (_, None) => return None,
    };
    Some(match unit {
        MetricUnit::Percent => {
            let label = if name == "request-success-rate" {
                "success rate"
            } else {
                name
            };
            format!("{label} {value:.2}% {op} {}%", number(bound))
        }
        MetricUnit::Milliseconds => {
            let label = if name == "request-duration" {
                "request duration"
            } else {
                name
            };
            format!(
                "{label} {:.2}s {op} {}s",
                value / 1000.0,
                number(bound / 1000.0)
            )
        }
        MetricUnit::None => format!("{name} {value:.2} {op} {}", number(bound)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricUnit;

    #[test]
    fn reason_texts_match_the_guide() {
        assert_eq!(
            threshold_violation(
                "request-success-rate",
                MetricUnit::Percent,
                69.17,
                Some(99.0),
                None
            )
            .as_deref(),
            Some("success rate 69.17% < 99%")
        );
        assert_eq!(
            threshold_violation(
                "request-duration",
                MetricUnit::Milliseconds,
                1200.0,
                None,
                Some(500.0)
            )
            .as_deref(),
            Some("request duration 1.20s > 0.5s")
        );
        assert_eq!(
            threshold_violation("error-rate", MetricUnit::None, 3.25159, None, Some(2.0))
                .as_deref(),
            Some("error-rate 3.25 > 2")
        );
    }

    #[test]
    fn bounds_are_inclusive_and_values_that_are_not_finite_fail() {
        assert_eq!(
            threshold_violation("m", MetricUnit::None, 99.0, Some(99.0), Some(100.0)),
            None
        );
        assert_eq!(
            threshold_violation("m", MetricUnit::None, 100.0, Some(99.0), Some(100.0)),
            None
        );
        assert!(threshold_violation("m", MetricUnit::None, f64::NAN, Some(1.0), None).is_some());
        // Infinity is above every minimum: it must still fail.
        assert_eq!(
            threshold_violation(
                "request-success-rate",
                MetricUnit::Percent,
                f64::INFINITY,
                Some(99.0),
                None
            )
            .as_deref(),
            Some("request-success-rate returned no finite number (inf)")
        );
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(!within(v, None, None), "{v} must not pass");
        }
    }
}
