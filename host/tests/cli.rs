//! The `fledge` command as a user runs it: output, exit status, and errors
//! on stderr that name the file, the field and the fix.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fledge(args: &[&str]) -> Output {
    let mut args = args.to_vec();
    // Rollout output must not depend on how loaded the test machine is.
    if args.first() == Some(&"simulate") {
        args.extend(["--policy-deadline-ms", "5000"]);
    }
    Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(&args)
        .current_dir(root())
        .output()
        .expect("fledge runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fledge-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn simulate_prints_the_guide_and_exits_by_outcome() {
    let ok = fledge(&[
        "simulate",
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        "examples/scenarios/promote.yaml",
        "--format",
        "events",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let out = stdout(&ok);
    assert!(
        out.starts_with("New revision detected! Scaling up podinfo.test\n"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "Routing all traffic to primary\nPromotion completed! Scaling down podinfo.test\n"
        ),
        "{out}"
    );

    let failed = fledge(&[
        "simulate",
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        "examples/scenarios/rollback.yaml",
    ]);
    assert_eq!(failed.status.code(), Some(2));
    assert!(stdout(&failed).ends_with("Canary failed! Scaling down podinfo.test\n"));
}

#[test]
fn simulate_writes_json_and_a_plot() {
    let dir = scratch("plot");
    let plot = dir.join("timeline.svg");
    let o = fledge(&[
        "simulate",
        "--canary",
        "examples/podinfo/canary-ab-cookie.yaml",
        "--scenario",
        "examples/scenarios/ab-test.yaml",
        "--format",
        "json",
        "--plot",
        plot.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(
        lines[10]["msg"],
        "Advance podinfo.test canary iteration 10/10"
    );
    assert_eq!(lines[10]["iteration"], 10);
    assert_eq!(lines.last().expect("lines")["phase"], "Succeeded");
    let svg = std::fs::read_to_string(&plot).expect("plot written");
    assert!(svg.starts_with("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_exit_one_with_the_field_and_the_fix_on_stderr() {
    let dir = scratch("bad");
    let canary =
        std::fs::read_to_string(root().join("examples/podinfo/canary.yaml")).expect("example");
    let bad = dir.join("canary.yaml");
    std::fs::write(&bad, canary.replace("interval: 1m", "interval: 1 minute")).expect("write");
    let o = fledge(&[
        "simulate",
        "--canary",
        bad.to_str().expect("utf-8"),
        "--scenario",
        "examples/scenarios/promote.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty(), "no rollout output for bad input");
    let err = stderr(&o);
    assert!(
        err.contains("canary.yaml: the Canary is not valid"),
        "{err}"
    );
    assert!(err.contains("spec.analysis.interval: `1 minute`"), "{err}");
    assert!(err.contains("use a duration such as 1m or 30s"), "{err}");

    let scenario = dir.join("scenario.yaml");
    std::fs::write(&scenario, "trigger: {image: x}\nmetric: {}\n").expect("write");
    let o = fledge(&[
        "simulate",
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        scenario.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("scenario.yaml: metric: unknown field; did you mean metrics?"),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn policy_inspect_and_eval() {
    let o = fledge(&["policy", "inspect", "builtin"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("digest:   sha256:"), "{out}");
    assert!(
        out.contains("world:    fledge:policy/rollout-policy@0.1.1"),
        "{out}"
    );

    let o = fledge(&[
        "policy",
        "eval",
        "builtin",
        "--input",
        "examples/policies/step.json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let decision: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("decision json");
    assert_eq!(decision["hold"]["reason"], "success rate 69.17% < 99%");
    assert_eq!(decision["hold"]["failedCheck"], true);

    let wrong = Path::new(env!("FLEDGE_FIXTURE_DIR")).join("wrong-world.wasm");
    let o = fledge(&["policy", "inspect", wrong.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not a rollout policy"),
        "{}",
        stderr(&o)
    );

    let looping = Path::new(env!("FLEDGE_FIXTURE_DIR")).join("endless-loop.wasm");
    let o = fledge(&[
        "policy",
        "eval",
        looping.to_str().expect("utf-8"),
        "--input",
        "examples/policies/step.json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("100 ms"), "{}", stderr(&o));
}

#[test]
fn policy_build_makes_a_component_that_simulate_uses() {
    let dir = scratch("build");
    let out = dir.join("strict.wasm");
    let target_dir = root().join("target").join("wasm");
    let o = fledge(&[
        "policy",
        "build",
        "examples/custom-policy",
        "-o",
        out.to_str().expect("utf-8"),
        "--profile",
        "policy",
        "--target-dir",
        target_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("sha256:"), "{}", stdout(&o));
    let o = fledge(&[
        "simulate",
        "--policy",
        out.to_str().expect("utf-8"),
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        "examples/scenarios/rollback.yaml",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.ends_with(
            "Advance podinfo.test canary weight 15\nRolling back podinfo.test strict policy: success rate 69.17% < 99%\nCanary failed! Scaling down podinfo.test\n"
        ),
        "{text}"
    );

    // A crate that exports nothing is refused with the reason.
    let o = fledge(&[
        "policy",
        "build",
        "policies/sdk",
        "-o",
        dir.join("sdk.wasm").to_str().expect("utf-8"),
        "--profile",
        "policy",
        "--target-dir",
        target_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(
            "is not a rollout policy: does the crate call fledge_policy::export_policy!?"
        ),
        "{}",
        stderr(&o)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The guide's Canary with `from` replaced by `to`, written to `dir`.
fn guide_with(dir: &Path, from: &str, to: &str) -> PathBuf {
    let canary =
        std::fs::read_to_string(root().join("examples/podinfo/canary.yaml")).expect("example");
    assert!(canary.contains(from), "fixture `{from}`");
    let path = dir.join("canary.yaml");
    std::fs::write(&path, canary.replacen(from, to, 1)).expect("write");
    path
}

fn simulate_files(canary: &Path, scenario: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "simulate",
        "--canary",
        canary.to_str().expect("utf-8"),
        "--scenario",
        scenario.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    fledge(&args)
}

/// Exit 1, nothing on stdout, and `expected` in the one `error:` line.
fn assert_input_error(o: &Output, expected: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(stdout(o).is_empty(), "no rollout output for bad input");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(expected), "`{expected}` not in: {err}");
}

#[test]
fn misspelled_and_mistyped_canary_fields_are_errors_with_their_path() {
    let dir = scratch("fields");
    let promote = root().join("examples/scenarios/promote.yaml");
    // A misspelled `analysis:` used to skip the analysis and promote.
    let c = guide_with(&dir, "  analysis:", "  analysys:");
    assert_input_error(
        &simulate_files(&c, &promote, &[]),
        "canary.yaml: spec.analysys: unknown field; did you mean spec.analysis?",
    );
    // A misspelled maxWeight used to ramp to 100 %.
    let c = guide_with(&dir, "maxWeight: 50", "maxweight: 50");
    assert_input_error(
        &simulate_files(&c, &promote, &[]),
        "spec.analysis.maxweight: unknown field; did you mean spec.analysis.maxWeight?",
    );
    let c = guide_with(&dir, "maxWeight: 50", "maxWeight: fifty");
    assert_input_error(
        &simulate_files(&c, &promote, &[]),
        "spec.analysis.maxWeight: expected an integer, got \"fifty\"",
    );
    let c = guide_with(
        &dir,
        "    maxWeight: 50\n",
        "    maxWeight: 50\n    maxWeight: 100\n",
    );
    assert_input_error(
        &simulate_files(&c, &promote, &[]),
        "duplicate key `maxWeight`",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_finite_thresholds_are_refused_instead_of_dropping_the_check() {
    let dir = scratch("nan");
    let rollback = root().join("examples/scenarios/rollback.yaml");
    // With `.nan` the success-rate check used to vanish and 69 % promoted.
    let c = guide_with(&dir, "min: 99", "min: .nan");
    assert_input_error(
        &simulate_files(&c, &rollback, &[]),
        "spec.analysis.metrics[0].thresholdRange.min: \".nan\" is not a finite number",
    );
    let c = guide_with(&dir, "max: 500", "max: -.inf");
    assert_input_error(
        &simulate_files(&c, &rollback, &[]),
        "spec.analysis.metrics[1].thresholdRange.max: \"-.inf\" is not a finite number",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn numbers_too_large_are_range_errors_not_panics() {
    let dir = scratch("range");
    let promote = root().join("examples/scenarios/promote.yaml");
    for (from, to, expected) in [
        (
            "interval: 1m\n    # max",
            "interval: 99999999999999999999h\n    # max",
            "spec.analysis.interval: `99999999999999999999h` is longer than 8760h",
        ),
        (
            "interval: 1m\n    # max",
            "interval: 25h\n    # max",
            "spec.analysis.interval: `25h` is longer than the 24h maximum",
        ),
        (
            "timeout: 30s",
            "timeout: 999999999999999999999999s",
            "spec.analysis.webhooks[0] (acceptance-test).timeout",
        ),
        (
            "timeout: 15s",
            "timeout: 2h",
            "spec.service.timeout: `2h` is longer than the 1h maximum",
        ),
        (
            "perTryTimeout: 5s",
            "perTryTimeout: 100000000000000000000m",
            "spec.service.retries.perTryTimeout",
        ),
        (
            "progressDeadlineSeconds: 60",
            "progressDeadlineSeconds: 9223372036854775807",
            "spec.progressDeadlineSeconds: 9223372036854775807 is outside 1..=604800",
        ),
        (
            "threshold: 5",
            "threshold: -3",
            "spec.analysis.threshold: -3 is outside 0..=10000",
        ),
    ] {
        let c = guide_with(&dir, from, to);
        assert_input_error(&simulate_files(&c, &promote, &[]), expected);
    }

    let scenario = dir.join("scenario.yaml");
    for (text, expected) in [
        (
            "trigger: {image: x}\nrollout: {canaryReadyAfter: 4294967295}\n",
            "rollout.canaryReadyAfter: 4294967295 is outside 0..=1000 (maxSteps)",
        ),
        (
            "trigger: {image: x}\nrollout: {primaryReadyAfter: -1}\n",
            "rollout.primaryReadyAfter: -1 is out of range; use an integer from 0 to 4294967295",
        ),
        (
            "trigger: {image: x}\nmaxSteps: 4000000000\n",
            "maxSteps: 4000000000 is outside 1..=100000",
        ),
        (
            "trigger: {image: x}\nupdates: [{afterStep: 5000, image: y}]\n",
            "updates[0].afterStep: 5000 is outside 0..=999",
        ),
    ] {
        std::fs::write(&scenario, text).expect("write");
        let guide = root().join("examples/podinfo/canary.yaml");
        assert_input_error(&simulate_files(&guide, &scenario, &[]), expected);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inputs_over_the_size_limit_or_too_deep_are_refused_before_parsing() {
    let dir = scratch("size");
    let guide = root().join("examples/podinfo/canary.yaml");
    let promote = root().join("examples/scenarios/promote.yaml");
    let big = dir.join("big.yaml");
    std::fs::write(&big, format!("# {}\n", "x".repeat(5 << 20))).expect("write");
    assert_input_error(
        &simulate_files(&big, &promote, &[]),
        "big.yaml: size: 5242883 bytes is over the 4194304-byte input limit; pass a smaller file, or raise the limit with --max-input-bytes",
    );
    let o = simulate_files(&guide, &promote, &["--max-input-bytes", "100"]);
    assert_input_error(&o, "canary.yaml: size: ");
    assert!(stderr(&o).contains("over the 100-byte input limit"));
    // Raised, the same file is read (and is no Canary).
    let o = simulate_files(&big, &promote, &["--max-input-bytes", "6000000"]);
    assert_input_error(&o, "big.yaml: kind: no Canary in this file");

    let deep = dir.join("deep.yaml");
    std::fs::write(
        &deep,
        format!("{}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
    )
    .expect("write");
    assert_input_error(
        &simulate_files(&deep, &promote, &[]),
        "deep.yaml: line 1 column ",
    );
    assert!(stderr(&simulate_files(&deep, &promote, &[])).contains("nested at most 64 levels"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scenario_changes_must_name_a_real_container_and_change_something() {
    let dir = scratch("trigger");
    let guide = root().join("examples/podinfo/canary.yaml");
    let scenario = dir.join("scenario.yaml");
    for (text, expected) in [
        (
            "trigger: {image: podinfo:2, container: web}\n",
            "scenario.yaml: trigger.container: the target has no container `web`; name one of its containers: podinfod",
        ),
        (
            "trigger: {image: ghcr.io/stefanprodan/podinfo:6.0.0}\n",
            "scenario.yaml: trigger: changes nothing: the target already runs this",
        ),
        (
            "trigger: {image: podinfo:2}\nupdates: [{afterStep: 2, image: podinfo:2}]\n",
            "scenario.yaml: updates[0]: changes nothing",
        ),
        (
            "trigger: {image: podinfo:2}\nupdates: [{afterStep: 2, imag: podinfo:3}]\n",
            "updates[0].imag: unknown field; did you mean updates[0].image?",
        ),
        (
            "trigger: {image: podinfo:2}\nmetrics: {request-success-rate: [99, err]}\n",
            "metrics.request-success-rate[1]: \"err\" is not accepted; use a number, `error`",
        ),
        (
            "trigger: {image: podinfo:2}\nwebhooks: {load-test: passed}\n",
            "webhooks.load-test: \"passed\" is not accepted; use `pass`, `fail`, or a list of those",
        ),
        (
            "trigger: {image: x}\nmetric: {}\n",
            "metric: unknown field; did you mean metrics?",
        ),
    ] {
        std::fs::write(&scenario, text).expect("write");
        assert_input_error(&simulate_files(&guide, &scenario, &[]), expected);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn many_copies_print_a_summary() {
    let o = fledge(&[
        "simulate",
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        "examples/scenarios/promote.yaml",
        "--copies",
        "30",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("30 canaries: 30 Succeeded, 0 Failed, 0 unfinished; "),
        "{}",
        stdout(&o)
    );
}

/// `fledge policy build examples/custom-policy` into `dir`, with host/build.rs's profile and
/// target directory.
fn build_strict(dir: &Path) -> PathBuf {
    let out = dir.join("strict.wasm");
    let target_dir = root().join("target").join("wasm");
    let o = fledge(&[
        "policy",
        "build",
        "examples/custom-policy",
        "-o",
        out.to_str().expect("utf-8"),
        "--profile",
        "policy",
        "--target-dir",
        target_dir.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    out
}

/// The 1-based lines of the journal's records whose decision is a hold with a failed check,
/// and the number of records.
fn failed_check_lines(journal: &Path) -> (Vec<usize>, usize) {
    let text = std::fs::read_to_string(journal).expect("journal");
    let mut held = Vec::new();
    let mut records = 0;
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(v["msg"], "policy decision", "{line}");
        assert_eq!(v["journal"], 1, "{line}");
        records += 1;
        if v["decision"]["hold"]["failedCheck"] == true {
            held.push(i + 1);
        }
    }
    (held, records)
}

/// The journal lines `fledge policy replay` reports as differing.
fn differing_lines(out: &str) -> Vec<usize> {
    out.lines()
        .filter_map(|l| l.split_once(" (line ")?.1.split_once(')')?.0.parse().ok())
        .collect()
}

#[test]
fn a_simulated_journal_replays_the_same_with_the_builtin_and_differs_with_strict() {
    let dir = scratch("replay");
    let journal = dir.join("rollback.jsonl");
    let o = fledge(&[
        "simulate",
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        "examples/scenarios/rollback.yaml",
        "--decision-journal",
        journal.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let (held, records) = failed_check_lines(&journal);
    // The guide's rollback: three success-rate halts and two request-duration halts.
    assert_eq!(held.len(), 5, "{held:?}");
    let journal_arg = journal.to_str().expect("utf-8");

    let same = fledge(&["policy", "replay", "builtin", "--journal", journal_arg]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert_eq!(stdout(&same), format!("{records} decisions, 0 differ\n"));

    let strict = build_strict(&dir);
    let strict_arg = strict.to_str().expect("utf-8");
    let o = fledge(&["policy", "replay", strict_arg, "--journal", journal_arg]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(differing_lines(&out), held, "{out}");
    assert!(
        out.contains(&format!(
            "podinfo.test (line {}): recorded hold (failed check): success rate 69.17% < 99%; \
             replayed rollback: strict policy: success rate 69.17% < 99%\n",
            held[0]
        )),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("{records} decisions, 5 differ\n")),
        "{out}"
    );

    // Two failed checks tolerated: the last three differ.
    let o = fledge(&[
        "policy",
        "replay",
        strict_arg,
        "--journal",
        journal_arg,
        "--policy-config",
        "max-failed-checks=2",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(differing_lines(&stdout(&o)), held[2..], "{}", stdout(&o));

    // A whole log: other lines are skipped and counted.
    let log = dir.join("operator.log");
    let text = std::fs::read_to_string(&journal).expect("journal");
    let mixed: String = text
        .lines()
        .flat_map(|l| {
            [
                r#"{"level":"info","ts":"2025-06-01T12:00:00.000Z","msg":"reconciled"}"#,
                l,
            ]
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&log, mixed).expect("write");
    let o = fledge(&[
        "policy",
        "replay",
        "builtin",
        "--journal",
        log.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{records} decisions, 0 differ; {records} other lines skipped\n")
    );

    // Errors are exit 2: no records, a record this version cannot read, a missing file.
    let empty = dir.join("empty.log");
    std::fs::write(&empty, "just a log line\n").expect("write");
    let o = fledge(&[
        "policy",
        "replay",
        "builtin",
        "--journal",
        empty.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no decision records in 1 lines"),
        "{}",
        stderr(&o)
    );
    let newer = dir.join("newer.jsonl");
    std::fs::write(&newer, "{\"msg\":\"policy decision\",\"journal\":2}\n").expect("write");
    let o = fledge(&[
        "policy",
        "replay",
        "builtin",
        "--journal",
        newer.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 1: journal: 2 is not a version"),
        "{}",
        stderr(&o)
    );
    let o = fledge(&["policy", "replay", "builtin", "--journal", "no/such.jsonl"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot read no/such.jsonl"),
        "{}",
        stderr(&o)
    );

    // `policy test` is `simulate --policy`: same output, same exit status.
    let args = [
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        "examples/scenarios/rollback.yaml",
        "--policy-config",
        "max-failed-checks=1",
    ];
    let tested = fledge(&[&["policy", "test", strict_arg][..], &args].concat());
    let simulated = Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args([&["simulate", "--policy", strict_arg][..], &args].concat())
        .current_dir(root())
        .output()
        .expect("fledge runs");
    assert_eq!(tested.status.code(), Some(2), "{}", stderr(&tested));
    assert_eq!(simulated.status.code(), tested.status.code());
    assert_eq!(stdout(&tested), stdout(&simulated));
    let halts = stdout(&tested)
        .matches("Halt podinfo.test advancement")
        .count();
    assert_eq!(halts, 1, "one failed check tolerated: {}", stdout(&tested));
    assert!(
        stdout(&tested)
            .contains("Rolling back podinfo.test strict policy: success rate 61.39% < 99%"),
        "{}",
        stdout(&tested)
    );
    let builtin = fledge(&[&["policy", "test", "builtin"][..], &args[..4]].concat());
    assert_eq!(builtin.status.code(), Some(2), "{}", stderr(&builtin));
    assert_eq!(
        stdout(&builtin)
            .matches("Halt podinfo.test advancement")
            .count(),
        5
    );
    let twice = fledge(
        &[
            &["policy", "test", strict_arg, "--policy", strict_arg][..],
            &args,
        ]
        .concat(),
    );
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        stderr(&twice).contains("the policy is named once"),
        "{}",
        stderr(&twice)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn migrate(args: &[&str]) -> Output {
    let mut all = vec!["migrate", "appmesh-to-gateway-api"];
    all.extend(args);
    fledge(&all)
}

#[test]
fn migrate_prints_the_converted_objects_and_reports_what_it_could_not_convert() {
    let o = migrate(&[
        "-f",
        "examples/podinfo/canary.yaml",
        "--gateway",
        "gateway-system/gateway",
        "--gateway-address",
        "http://gateway.gateway-system",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("---\napiVersion: flagger.app/v1beta1\nkind: MetricTemplate\n"),
        "{out}"
    );
    assert_eq!(out.matches("\nkind: MetricTemplate\n").count(), 2, "{out}");
    assert_eq!(out.matches("\nkind: Canary\n").count(), 1, "{out}");
    assert!(out.contains("provider: gatewayapi:v1"), "{out}");
    assert!(
        !out.contains("retries:") && !out.contains("appmesh"),
        "{out}"
    );
    let err = stderr(&o);
    assert!(
        err.starts_with("Not converted (act on each before switching):\n"),
        "{err}"
    );
    assert!(
        err.contains("  test/podinfo spec.service.retries: HTTPRoute retry"),
        "{err}"
    );
    assert!(
        err.ends_with("1 Canary(s) and 2 MetricTemplate(s) written; 1 field(s) not converted.\n"),
        "{err}"
    );

    // stdin, vpc-lattice.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args([
            "migrate",
            "appmesh-to-gateway-api",
            "-f",
            "-",
            "--gateway",
            "default/lattice",
            "--gateway-kind",
            "vpc-lattice",
            "--region",
            "us-west-2",
        ])
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            std::fs::read_to_string(root().join("examples/podinfo/canary.yaml"))
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("type: cloudwatch") && stdout(&o).contains("region: us-west-2"));
    assert!(
        stderr(&o).contains("templateVariables.targetGroup: only known once the HTTPRoute exists"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn migrate_refuses_bad_input_naming_the_field_and_the_fix() {
    let dir = scratch("migrate");
    let gw = guide_with(&dir, "provider: appmesh:v1beta2", "provider: gatewayapi:v1");
    let gw = gw.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["-f", gw, "--gateway", "gw/gw"],
            "spec.provider: already \"gatewayapi:v1\"",
        ),
        (
            vec![
                "-f",
                "examples/podinfo/deployment.yaml",
                "--gateway",
                "gw/gw",
            ],
            "is not a Canary",
        ),
        (
            vec!["-f", "examples/podinfo/canary.yaml", "--gateway", "gateway"],
            "is not NAMESPACE/NAME[/SECTION]",
        ),
        (
            vec![
                "-f",
                "examples/podinfo/canary.yaml",
                "--gateway",
                "gw/gw",
                "--gateway-kind",
                "vpc-lattice",
            ],
            "--region is required",
        ),
    ] {
        let o = migrate(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        assert!(stderr(&o).contains(expected), "{args:?}: {}", stderr(&o));
        assert!(stdout(&o).is_empty(), "{args:?}: nothing to apply");
    }
    let o = migrate(&["-f", "examples/podinfo/canary.yaml"]);
    assert_eq!(o.status.code(), Some(2), "clap's usage error");
    assert!(
        stderr(&o).contains("--gateway <NAMESPACE/NAME[/SECTION]>"),
        "{}",
        stderr(&o)
    );
}
