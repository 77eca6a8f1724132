//! The decision journal: one JSON line for every decision a policy is asked
//! for, with everything needed to ask again (the policy input, the step's
//! time and range-query answers) and what the policy answered. The operator
//! writes it to stdout next to its JSON logs (and to a file if asked),
//! `fledge simulate --decision-journal` to a file; `fledge policy replay`
//! reads it back, skipping every other line.
//!
//! ```json
//! {"level":"info","ts":"2025-06-01T12:00:00Z","msg":"policy decision","journal":1,
//!  "canary":"podinfo.test","policy":"builtin","digest":"sha256:…",
//!  "decision":{"hold":{"reason":"…","failedCheck":true}},
//!  "input":{…},"context":{"now":1748779200}}
//! ```
//!
//! A line is at most [`Journal::max_bytes`] long: over it the range-query
//! answers are dropped first (`"truncated":"series"`), then the input too
//! (`"truncated":"input"`); a line is never cut in the middle.
use crate::core::{Judge, JudgeError};
use fledge_policy::{Context, Decision, PolicyInput, RangeQuery};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The `journal` key of a record: its format's version.
pub const VERSION: u64 = 1;
/// The `msg` of a record, as of the operator's log lines.
pub const MESSAGE: &str = "policy decision";
/// Default bound of one line, newline included.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;
/// Smallest bound accepted: room for a record without its input.
pub const MIN_MAX_BYTES: usize = 4 * 1024;

/// What was dropped from a record to keep its line under the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Truncated {
    /// `context.series` is empty: the answers were too large.
    Series,
    /// `input` is absent too.
    Input,
}

/// One decision a policy was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// `name.namespace` of the Canary.
    pub canary: String,
    /// The policy in force: `builtin`, `RolloutPolicy/<ns>/<name>`,
    /// `ClusterRolloutPolicy/<name>`, or in the simulator the `--policy` file.
    pub policy: String,
    /// `sha256:<hex>` of the component.
    pub digest: String,
    /// The policy's answer, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Why it gave none (trap, deadline, invalid decision, failed queries, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncated>,
    /// What the policy judged; absent only when `truncated` is `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<PolicyInput>,
    /// The step's time, the policy's `spec.config` and the answers to its
    /// range queries.
    pub context: Context,
}

impl Record {
    pub fn new(
        policy: &str,
        digest: &str,
        input: &PolicyInput,
        context: Context,
        outcome: Result<&Decision, &str>,
    ) -> Record {
        let (decision, error) = match outcome {
            Ok(d) => (Some(d.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Record {
            canary: input.canary.clone(),
            policy: policy.to_string(),
            digest: digest.to_string(),
            decision,
            error,
            truncated: None,
            input: Some(input.clone()),
            context,
        }
    }

    /// The policy's answer: its decision or its error text.
    pub fn outcome(&self) -> Result<&Decision, &str> {
        match (&self.decision, &self.error) {
            (Some(d), _) => Ok(d),
            (None, Some(e)) => Err(e),
            (None, None) => Err(""),
        }
    }

    /// The record as one JSON line (with its newline) of at most `max_bytes`,
    /// dropping the series, then the input, to fit; `None` when even that
    /// does not fit (an error text or names longer than the bound).
    pub fn to_line(&self, max_bytes: usize) -> Option<String> {
        // The log line's keys first, then the record's in their order:
        // `kubectl logs` shows what was decided before the input.
        let encode = |r: &Record| -> String {
            let fields = serde_json::to_string(r).unwrap_or_default();
            format!(
                "{{\"level\":\"info\",\"ts\":{},\"msg\":{},\"journal\":{VERSION},{}\n",
                Value::from(timestamp(r.context.now)),
                Value::from(MESSAGE),
                fields.strip_prefix('{').unwrap_or("}")
            )
        };
        let line = encode(self);
        if line.len() <= max_bytes {
            return Some(line);
        }
        let mut smaller = self.clone();
        smaller.context.series.clear();
        smaller.truncated = Some(Truncated::Series);
        let line = encode(&smaller);
        if line.len() <= max_bytes {
            return Some(line);
        }
        smaller.input = None;
        smaller.truncated = Some(Truncated::Input);
        let line = encode(&smaller);
        (line.len() <= max_bytes).then_some(line)
    }
}

/// What [`parse`] makes of one line.
#[derive(Debug, PartialEq)]
pub enum Line {
    Record(Box<Record>),
    /// Not a journal record (another log line, a blank line, ...).
    Other,
}

/// Reads one line of a journal or of a whole operator log. A line that says
/// it is a record (`"msg":"policy decision"` with a `journal` key) but is
/// not one this version reads is an error, not skipped.
pub fn parse(line: &str) -> Result<Line, String> {
    let line = line.trim();
    if !line.starts_with('{') {
        return Ok(Line::Other);
    }
    let Ok(Value::Object(mut fields)) = serde_json::from_str::<Value>(line) else {
        return Ok(Line::Other);
    };
    if fields.get("msg").and_then(Value::as_str) != Some(MESSAGE) {
        return Ok(Line::Other);
    }
    let Some(version) = fields.remove("journal") else {
        return Ok(Line::Other);
    };
    if version.as_u64() != Some(VERSION) {
        return Err(format!(
            "journal: {version} is not a version this fledge reads (it reads {VERSION}); \
             replay with the fledge that wrote it"
        ));
    }
    for key in ["level", "ts", "msg"] {
        fields.remove(key);
    }
    let record: Record =
        serde_json::from_value(Value::Object(fields)).map_err(|e| format!("not a record: {e}"))?;
    match (&record.decision, &record.error) {
        (Some(_), Some(_)) => Err("both `decision` and `error`; a record has one".into()),
        (None, None) => Err("neither `decision` nor `error`; a record has one".into()),
        _ => Ok(Line::Record(Box::new(record))),
    }
}

/// RFC 3339 of Unix seconds (UTC).
pub fn timestamp(now: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(now)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| now.to_string())
}

/// Where records go: each line in one write to each output.
pub struct Journal {
    max_bytes: usize,
    outputs: Vec<Output>,
}

struct Output {
    name: String,
    sink: Mutex<Box<dyn Write + Send>>,
    /// Set once a write failed; the failure is logged once.
    failed: AtomicBool,
}

impl Journal {
    /// A journal with no outputs yet, lines of at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Result<Journal, String> {
        if max_bytes < MIN_MAX_BYTES {
            return Err(format!(
                "{max_bytes} bytes is below the smallest line bound ({MIN_MAX_BYTES}); \
                 give at least {MIN_MAX_BYTES}"
            ));
        }
        Ok(Journal {
            max_bytes,
            outputs: Vec::new(),
        })
    }

    /// Also writes every line to `sink`, named `name` in errors.
    pub fn writing_to(mut self, name: &str, sink: Box<dyn Write + Send>) -> Journal {
        self.outputs.push(Output {
            name: name.to_string(),
            sink: Mutex::new(sink),
            failed: AtomicBool::new(false),
        });
        self
    }

    /// Also appends every line to the file at `path` (created if missing).
    pub fn appending_to(self, path: &std::path::Path) -> std::io::Result<Journal> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(self.writing_to(&path.display().to_string(), Box::new(file)))
    }

    pub fn write(&self, record: &Record) {
        let Some(line) = record.to_line(self.max_bytes) else {
            tracing::warn!(
                canary = %record.canary,
                max_bytes = self.max_bytes,
                "decision journal: a record of {} is over the line bound even without its input; not written",
                record.canary
            );
            return;
        };
        for out in &self.outputs {
            let mut sink = out.sink.lock().unwrap_or_else(|p| p.into_inner());
            let result = sink.write_all(line.as_bytes()).and_then(|()| sink.flush());
            if let Err(e) = result {
                if !out.failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(output = %out.name, error = %e, "decision journal: cannot write");
                }
            }
        }
    }

    /// `inner` with every decision it gives recorded here, under the policy
    /// label `policy`, the component digest `digest` and its `config`.
    pub fn judge<'a, J: Judge>(
        &'a self,
        inner: J,
        policy: &'a str,
        digest: &'a str,
        config: &'a BTreeMap<String, String>,
    ) -> Journaled<'a, J> {
        Journaled {
            inner,
            journal: Some(self),
            policy,
            digest,
            config,
        }
    }
}

/// A [`Judge`] whose answers are written to a [`Journal`] (or to none: then
/// it only passes them on).
pub struct Journaled<'a, J> {
    inner: J,
    journal: Option<&'a Journal>,
    policy: &'a str,
    digest: &'a str,
    config: &'a BTreeMap<String, String>,
}

impl<'a, J: Judge> Journaled<'a, J> {
    /// `inner`, unrecorded.
    pub fn off(inner: J) -> Journaled<'a, J> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        Journaled {
            inner,
            journal: None,
            policy: "",
            digest: "",
            config: &EMPTY,
        }
    }

    fn record(&self, input: &PolicyInput, ctx: &Context, outcome: Result<&Decision, &str>) {
        if let Some(journal) = self.journal {
            let mut context = ctx.clone();
            context.config = self.config.clone();
            journal.write(&Record::new(
                self.policy,
                self.digest,
                input,
                context,
                outcome,
            ));
        }
    }
}

impl<J: Judge> Judge for Journaled<'_, J> {
    fn queries(&self, input: &PolicyInput, ctx: &Context) -> Result<Vec<RangeQuery>, JudgeError> {
        let result = self.inner.queries(input, ctx);
        // Failed queries end the step as a failed check without a decision:
        // that is the policy's answer for this step.
        if let Err(e) = &result {
            self.record(input, ctx, Err(&e.0));
        }
        result
    }

    fn decide(&self, input: &PolicyInput, ctx: &Context) -> Result<Decision, JudgeError> {
        let result = self.inner.decide(input, ctx);
        self.record(input, ctx, result.as_ref().map_err(|e| e.0.as_str()));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fledge_policy::testing::{duration, guide_input, success_rate};
    use fledge_policy::{Advance, RoutePlan, Sample};
    use std::sync::Arc;

    fn input() -> PolicyInput {
        let mut input = guide_input();
        input.state.canary_weight = 15;
        input.metrics = vec![success_rate(69.17), duration(120.0)];
        input
    }

    fn record(outcome: Result<&Decision, &str>) -> Record {
        let ctx = Context::at(1_748_779_200)
            .with_config("max-failed-checks", "1")
            .with_series(
                "errors",
                vec![Sample {
                    timestamp: 1_748_779_170,
                    value: 0.5,
                }],
            );
        Record::new(
            "RolloutPolicy/test/strict",
            "sha256:ab",
            &input(),
            ctx,
            outcome,
        )
    }

    fn round_trip(r: &Record) -> Record {
        let line = r.to_line(DEFAULT_MAX_BYTES).unwrap();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        match parse(&line).unwrap() {
            Line::Record(back) => *back,
            Line::Other => panic!("not read back as a record: {line}"),
        }
    }

    #[test]
    fn records_read_back_as_written() {
        let hold = Decision::failed_check("success rate 69.17% < 99%");
        let advance = Decision::Advance(Advance {
            route: RoutePlan::weighted(20),
            iteration: 0,
        });
        for r in [
            record(Ok(&hold)),
            record(Ok(&advance)),
            record(Ok(&Decision::Promote)),
            record(Err("policy exceeded its 100 ms deadline")),
        ] {
            assert_eq!(round_trip(&r), r);
        }
        let r = record(Ok(&hold));
        let line = r.to_line(DEFAULT_MAX_BYTES).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], MESSAGE);
        assert_eq!(v["journal"], VERSION);
        assert_eq!(v["ts"], "2025-06-01T12:00:00Z");
        assert_eq!(v["canary"], "podinfo.test");
        assert_eq!(v["decision"]["hold"]["failedCheck"], true);
        assert_eq!(v["context"]["config"]["max-failed-checks"], "1");
        assert_eq!(v["context"]["series"][0]["samples"]["ok"][0]["value"], 0.5);
        assert!(v.get("truncated").is_none() && v.get("error").is_none());
    }

    #[test]
    fn over_the_bound_the_series_then_the_input_are_dropped() {
        let mut r = record(Ok(&Decision::Promote));
        let samples: Vec<Sample> = (0..1100)
            .map(|i| Sample {
                timestamp: 1_748_770_000 + i,
                value: i as f64 / 7.0,
            })
            .collect();
        r.context.series = (0..16)
            .map(|i| fledge_policy::Series {
                name: format!("q{i}"),
                samples: Ok(samples.clone()),
            })
            .collect();
        let full = r.to_line(usize::MAX).unwrap();
        assert!(full.len() > DEFAULT_MAX_BYTES, "{} bytes", full.len());

        let line = r.to_line(DEFAULT_MAX_BYTES).unwrap();
        assert!(line.len() <= DEFAULT_MAX_BYTES);
        let Line::Record(cut) = parse(&line).unwrap() else {
            panic!()
        };
        assert_eq!(cut.truncated, Some(Truncated::Series));
        assert!(cut.context.series.is_empty());
        assert_eq!(cut.input, r.input);
        assert_eq!(cut.decision, r.decision);

        let bare = r.to_line(MIN_MAX_BYTES).unwrap();
        let Line::Record(bare_record) = parse(&bare).unwrap() else {
            panic!()
        };
        // The guide's input fits in 4 KiB: it is kept.
        assert_eq!(bare_record.truncated, Some(Truncated::Series));
        let mut huge = r.clone();
        huge.input.as_mut().unwrap().webhooks = vec![fledge_policy::WebhookResult {
            name: "load-test".into(),
            kind: fledge_policy::WebhookKind::Rollout,
            passed: false,
            message: "x".repeat(8 * 1024),
        }];
        let line = huge.to_line(MIN_MAX_BYTES).unwrap();
        assert!(line.len() <= MIN_MAX_BYTES);
        let Line::Record(bare) = parse(&line).unwrap() else {
            panic!()
        };
        assert_eq!(bare.truncated, Some(Truncated::Input));
        assert_eq!((bare.input, bare.decision), (None, Some(Decision::Promote)));

        let mut hopeless = record(Err(&"e".repeat(8 * 1024)));
        hopeless.context.series.clear();
        assert_eq!(hopeless.to_line(MIN_MAX_BYTES), None);
        assert!(Journal::new(MIN_MAX_BYTES - 1).is_err());
    }

    #[test]
    fn other_lines_are_skipped_and_foreign_records_refused() {
        for other in [
            "",
            "not json",
            r#"{"level":"info","ts":"2025-06-01T12:00:00.000Z","msg":"reconciled","canary":"podinfo"}"#,
            r#"{"msg":"policy decision"}"#,
            "[1,2]",
        ] {
            assert_eq!(parse(other), Ok(Line::Other), "{other}");
        }
        let err = parse(r#"{"msg":"policy decision","journal":2}"#).unwrap_err();
        assert!(
            err.contains("journal: 2") && err.contains("reads 1"),
            "{err}"
        );
        let err = parse(r#"{"msg":"policy decision","journal":1,"canary":"a"}"#).unwrap_err();
        assert!(err.contains("not a record"), "{err}");
        let mut both = record(Ok(&Decision::Promote));
        both.error = Some("boom".into());
        let err = parse(&both.to_line(DEFAULT_MAX_BYTES).unwrap()).unwrap_err();
        assert!(err.contains("both"), "{err}");
    }

    /// A sink the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Fixed(Result<Decision, JudgeError>);
    impl Judge for Fixed {
        fn decide(&self, _: &PolicyInput, _: &Context) -> Result<Decision, JudgeError> {
            self.0.clone()
        }
    }
    struct FailingQueries;
    impl Judge for FailingQueries {
        fn queries(&self, _: &PolicyInput, _: &Context) -> Result<Vec<RangeQuery>, JudgeError> {
            Err(JudgeError("queries trapped".into()))
        }
        fn decide(&self, _: &PolicyInput, _: &Context) -> Result<Decision, JudgeError> {
            unreachable!()
        }
    }

    #[test]
    fn a_journaled_judge_passes_answers_on_and_writes_one_line_each() {
        let out = Shared::default();
        let journal = Journal::new(DEFAULT_MAX_BYTES)
            .unwrap()
            .writing_to("test", Box::new(out.clone()));
        let config = BTreeMap::from([("max-failed-checks".to_string(), "2".to_string())]);
        let ctx = Context::at(1_748_779_200);
        let hold = Decision::failed_check("success rate 69.17% < 99%");
        let j = journal.judge(Fixed(Ok(hold.clone())), "builtin", "sha256:cd", &config);
        assert_eq!(j.queries(&input(), &ctx), Ok(vec![]));
        assert_eq!(j.decide(&input(), &ctx), Ok(hold.clone()));
        let j = journal.judge(
            Fixed(Err(JudgeError("trap".into()))),
            "builtin",
            "sha256:cd",
            &config,
        );
        assert_eq!(j.decide(&input(), &ctx), Err(JudgeError("trap".into())));
        let j = journal.judge(FailingQueries, "builtin", "sha256:cd", &config);
        assert!(j.queries(&input(), &ctx).is_err());
        let off = Journaled::off(Fixed(Ok(Decision::Promote)));
        assert_eq!(off.decide(&input(), &ctx), Ok(Decision::Promote));

        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let records: Vec<Record> = text
            .lines()
            .map(|l| match parse(l).unwrap() {
                Line::Record(r) => *r,
                Line::Other => panic!("{l}"),
            })
            .collect();
        assert_eq!(records.len(), 3, "{text}");
        assert_eq!(records[0].outcome(), Ok(&hold));
        assert_eq!(records[0].context.config, config);
        assert_eq!(records[0].context.now, 1_748_779_200);
        assert_eq!(records[1].outcome(), Err("trap"));
        assert_eq!(records[2].outcome(), Err("queries trapped"));
        assert_eq!(records[2].input.as_ref(), Some(&input()));
    }
}
