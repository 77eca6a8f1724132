//! How big a policy input is where it matters: in the guest's linear memory,
//! where the host writes it (canonical ABI) before `decide` runs. Counted
//! before the call, so an input too large for the sandbox is refused as the
//! input's fault instead of surfacing as the policy running out of memory.
use fledge_policy::{PolicyInput, Readiness, StringMatch};

/// Canonical-ABI sizes of the WIT types, in bytes (see wit/fledge-policy.wit).
/// A `string` or `list` is a pointer and a length, plus its contents.
const STRING_OR_LIST: usize = 8;
/// `policy-input` without the contents of its strings and lists.
const INPUT: usize = 160;
/// `metric-result`: name, `result<f64, string>`, two `option<f64>`, unit.
const METRIC: usize = 64;
/// `webhook-result`: name, kind, passed, message.
const WEBHOOK: usize = 20;
/// `match-rule`: its list of headers.
const RULE: usize = STRING_OR_LIST;
/// `header-match`: name and `string-match`.
const HEADER: usize = 20;
/// A step weight, `u32`.
const STEP: usize = 4;

/// Bytes `input` takes in the guest's memory: fixed parts plus every string
/// and list element.
pub fn encoded_len(input: &PolicyInput) -> usize {
    let mut len = INPUT + input.canary.len();
    len = len.saturating_add(input.analysis.step_weights.len().saturating_mul(STEP));
    for rule in &input.analysis.match_rules {
        len = len.saturating_add(RULE);
        for header in &rule.headers {
            let value = match &header.matcher {
                StringMatch::Exact(v)
                | StringMatch::Prefix(v)
                | StringMatch::Suffix(v)
                | StringMatch::Regex(v) => v,
            };
            len = len
                .saturating_add(HEADER)
                .saturating_add(header.name.len())
                .saturating_add(value.len());
        }
    }
    for metric in &input.metrics {
        let error = match &metric.value {
            fledge_policy::MetricValue::Error(e) => e.len(),
            fledge_policy::MetricValue::Value(_) => 0,
        };
        len = len
            .saturating_add(METRIC)
            .saturating_add(metric.name.len())
            .saturating_add(error);
    }
    for hook in &input.webhooks {
        len = len
            .saturating_add(WEBHOOK)
            .saturating_add(hook.name.len())
            .saturating_add(hook.message.len());
    }
    for ready in [&input.canary_ready, &input.primary_ready] {
        if let Readiness::NotReady(why) | Readiness::DeadlineExceeded(why) = ready {
            len = len.saturating_add(why.len());
        }
    }
    len
}

/// `series`: name and `result<list<sample>, string>`; `sample`: s64 and f64.
const SERIES: usize = 20;
const SAMPLE: usize = 16;

/// Bytes the answers to a policy's range queries take in its memory.
pub fn series_len(series: &[fledge_policy::Series]) -> usize {
    series.iter().fold(0usize, |len, s| {
        let body = match &s.samples {
            Ok(points) => points.len().saturating_mul(SAMPLE),
            Err(why) => why.len(),
        };
        len.saturating_add(SERIES)
            .saturating_add(s.name.len())
            .saturating_add(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_policy::testing;

    #[test]
    fn every_string_and_element_counts() {
        let base = testing::guide_input();
        let empty = encoded_len(&base);
        assert!(empty >= INPUT, "{empty}");
        let mut more = base.clone();
        more.metrics.push(testing::success_rate(99.0));
        more.webhooks.push(testing::webhook(
            "load-test",
            fledge_policy::WebhookKind::Rollout,
            true,
        ));
        more.canary_ready = Readiness::NotReady("waiting".into());
        assert_eq!(
            encoded_len(&more),
            empty
                + METRIC
                + "request-success-rate".len()
                + WEBHOOK
                + "load-test".len()
                + more.webhooks[more.webhooks.len() - 1].message.len()
                + "waiting".len()
        );
    }
}
