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
        stderr(&o).contains("unknown field `metric`"),
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
        out.contains("world:    fledge:policy/rollout-policy@0.1.0"),
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
        "examples/policies/strict",
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
