//! Asks a policy again for every decision of a [`journal`](super::journal),
//! with the recorded input and context (and the policy's own config), and
//! finds where it would have judged differently ([`crate::core::agree`]).
use super::journal::{self, Line, Record, Truncated};
use crate::core::agree::{agree, effective};
use crate::core::Judge;
use fledge_policy::{Context, Decision};
use std::collections::BTreeMap;
use std::io::BufRead;

/// One recorded decision the replayed policy would have made differently.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// 1-based line of the record in the journal.
    pub line: usize,
    pub canary: String,
    /// The step's time, Unix seconds.
    pub now: i64,
    pub recorded: Result<Decision, String>,
    pub replayed: Result<Decision, String>,
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    /// Records re-judged.
    pub decisions: usize,
    pub differences: Vec<Difference>,
    /// Lines that are not journal records (log lines, blank lines).
    pub skipped: usize,
    /// Records that cannot be re-judged: their input was dropped to fit the
    /// line bound, or their series were and the replayed policy asks for some.
    pub not_replayed: usize,
}

/// Replays every record of `journal` with `judge`, whose config is `config`
/// (it replaces the recorded `context.config`). An unreadable record is an
/// error naming its line.
pub fn replay(
    journal: impl BufRead,
    judge: &dyn Judge,
    config: &BTreeMap<String, String>,
) -> Result<Replay, String> {
    let mut out = Replay::default();
    for (i, line) in journal.split(b'\n').enumerate() {
        let n = i + 1;
        let line = line.map_err(|e| format!("line {n}: cannot read: {e}"))?;
        let text = String::from_utf8_lossy(&line);
        let record = match journal::parse(&text).map_err(|e| format!("line {n}: {e}"))? {
            Line::Record(r) => r,
            Line::Other => {
                out.skipped += 1;
                continue;
            }
        };
        match rejudge(&record, judge, config) {
            None => out.not_replayed += 1,
            Some(replayed) => {
                out.decisions += 1;
                let recorded = record.outcome();
                let same = agree(
                    &effective(recorded),
                    &effective(replayed.as_ref().map_err(String::as_str)),
                );
                if !same {
                    out.differences.push(Difference {
                        line: n,
                        canary: record.canary.clone(),
                        now: record.context.now,
                        recorded: recorded.cloned().map_err(str::to_string),
                        replayed,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The answer of `judge` to the step `record` holds, as the core would ask
/// for it: range queries first (with no series yet), then the decision with
/// the recorded answers. `None` when the record cannot be re-judged.
pub fn rejudge(
    record: &Record,
    judge: &dyn Judge,
    config: &BTreeMap<String, String>,
) -> Option<Result<Decision, String>> {
    let input = record.input.as_ref()?;
    let asking = Context {
        now: record.context.now,
        config: config.clone(),
        series: Vec::new(),
    };
    let queries = match judge.queries(input, &asking) {
        Ok(q) => q,
        Err(e) => return Some(Err(e.0)),
    };
    if !queries.is_empty() && record.truncated == Some(Truncated::Series) {
        return None;
    }
    let ctx = Context {
        series: record.context.series.clone(),
        ..asking
    };
    Some(judge.decide(input, &ctx).map_err(|e| e.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::JudgeError;
    use crate::policy::journal::{Journal, DEFAULT_MAX_BYTES};
    use fledge_policy::testing::{guide_input, success_rate};
    use fledge_policy::{PolicyInput, RangeQuery};

    /// The built-in judgement, natively.
    struct Builtin;
    impl Judge for Builtin {
        fn decide(&self, input: &PolicyInput, _: &Context) -> Result<Decision, JudgeError> {
            Ok(fledge_policy_flagger::decide(input))
        }
    }

    /// Rolls back at the first failed check.
    struct Strict;
    impl Judge for Strict {
        fn decide(&self, input: &PolicyInput, _: &Context) -> Result<Decision, JudgeError> {
            Ok(match fledge_policy_flagger::decide(input) {
                Decision::Hold(h) if h.failed_check => Decision::Rollback(h.reason),
                d => d,
            })
        }
    }

    /// Asks for a series and reads what the context holds.
    struct Reader;
    impl Judge for Reader {
        fn queries(&self, _: &PolicyInput, _: &Context) -> Result<Vec<RangeQuery>, JudgeError> {
            Ok(vec![RangeQuery::new("errors", "sum(errors)", 60, 30)])
        }
        fn decide(&self, _: &PolicyInput, ctx: &Context) -> Result<Decision, JudgeError> {
            ctx.series("errors")
                .map(|s| Decision::halt(format!("{} points", s.len())))
                .map_err(JudgeError)
        }
    }

    /// A journal of the builtin: two advances, two failed checks; plus log lines.
    fn journal() -> String {
        let mut text = String::from("{\"level\":\"info\",\"msg\":\"reconciled\"}\n\nplain text\n");
        let mut now = 1_748_779_200;
        for (weight, rate) in [(0, 99.9), (5, 99.8), (10, 69.17), (10, 61.39)] {
            let mut input = guide_input();
            input.state.canary_weight = weight;
            input.state.primary_weight = 100 - weight;
            input.metrics = vec![success_rate(rate)];
            let d = fledge_policy_flagger::decide(&input);
            let r = Record::new("builtin", "sha256:ab", &input, Context::at(now), Ok(&d));
            text.push_str(&r.to_line(DEFAULT_MAX_BYTES).unwrap());
            now += 60;
        }
        text
    }

    #[test]
    fn the_same_policy_agrees_with_itself() {
        let r = replay(journal().as_bytes(), &Builtin, &BTreeMap::new()).unwrap();
        assert_eq!(
            (r.decisions, r.differences.len(), r.skipped, r.not_replayed),
            (4, 0, 3, 0),
            "{r:?}"
        );
    }

    #[test]
    fn a_stricter_policy_differs_exactly_at_the_failed_checks() {
        let r = replay(journal().as_bytes(), &Strict, &BTreeMap::new()).unwrap();
        assert_eq!(r.decisions, 4);
        let lines: Vec<(usize, i64)> = r.differences.iter().map(|d| (d.line, d.now)).collect();
        assert_eq!(lines, [(6, 1_748_779_320), (7, 1_748_779_380)]);
        for d in &r.differences {
            assert!(
                matches!(&d.recorded, Ok(Decision::Hold(h)) if h.failed_check),
                "{d:?}"
            );
            assert!(matches!(&d.replayed, Ok(Decision::Rollback(_))), "{d:?}");
            assert_eq!(d.canary, "podinfo.test");
        }
    }

    #[test]
    fn series_come_from_the_record_and_config_from_the_replayed_policy() {
        struct Config;
        impl Judge for Config {
            fn decide(&self, _: &PolicyInput, ctx: &Context) -> Result<Decision, JudgeError> {
                Ok(Decision::halt(
                    ctx.config("k").unwrap_or("none").to_string(),
                ))
            }
        }
        let sample = fledge_policy::Sample {
            timestamp: 1,
            value: 2.0,
        };
        let ctx = Context::at(100)
            .with_config("k", "recorded")
            .with_series("errors", vec![sample; 3]);
        let mut record = Record::new("builtin", "d", &guide_input(), ctx, Ok(&Decision::Promote));
        let config = BTreeMap::from([("k".to_string(), "replayed".to_string())]);
        assert_eq!(
            rejudge(&record, &Config, &config),
            Some(Ok(Decision::halt("replayed")))
        );
        assert_eq!(
            rejudge(&record, &Reader, &config),
            Some(Ok(Decision::halt("3 points")))
        );
        // Dropped series: a policy that asks for some cannot be replayed; one
        // that asks for none can.
        record.context.series.clear();
        record.truncated = Some(Truncated::Series);
        assert_eq!(rejudge(&record, &Reader, &config), None);
        assert_eq!(
            rejudge(&record, &Config, &config),
            Some(Ok(Decision::halt("replayed")))
        );
        record.input = None;
        record.truncated = Some(Truncated::Input);
        assert_eq!(rejudge(&record, &Config, &config), None);
    }

    #[test]
    fn errors_compare_as_the_failed_checks_they_become() {
        struct Trap;
        impl Judge for Trap {
            fn decide(&self, _: &PolicyInput, _: &Context) -> Result<Decision, JudgeError> {
                Err(JudgeError("policy trapped".into()))
            }
        }
        let r = replay(journal().as_bytes(), &Trap, &BTreeMap::new()).unwrap();
        // The two advances differ; the two failed checks are what an error becomes.
        assert_eq!(r.differences.len(), 2, "{r:?}");
        assert!(r
            .differences
            .iter()
            .all(|d| d.replayed == Err("policy trapped".into())));
        assert!(r
            .differences
            .iter()
            .all(|d| matches!(d.recorded, Ok(Decision::Advance(_)))));
    }

    #[test]
    fn a_journal_written_by_a_journaled_judge_replays() {
        let path =
            std::env::temp_dir().join(format!("fledge-journal-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let journal = Journal::new(DEFAULT_MAX_BYTES)
            .unwrap()
            .appending_to(&path)
            .unwrap();
        let config = BTreeMap::new();
        let j = journal.judge(Builtin, "builtin", "sha256:ab", &config);
        let mut input = guide_input();
        input.metrics = vec![success_rate(50.0)];
        input.state.canary_weight = 10;
        j.decide(&input, &Context::at(5)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let r = replay(text.as_bytes(), &Strict, &config).unwrap();
        assert_eq!((r.decisions, r.differences.len()), (1, 1));
        let err = replay(
            "{\"msg\":\"policy decision\",\"journal\":9}\n".as_bytes(),
            &Strict,
            &config,
        )
        .unwrap_err();
        assert!(err.starts_with("line 1: journal: 9"), "{err}");
    }
}
