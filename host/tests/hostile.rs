//! `fledge` with hostile policies, as a user runs it: the same outcome on
//! every simulation, output a terminal can trust, and builds that name what
//! is wrong.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fledge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("fledge runs")
}

fn fixture(name: &str) -> String {
    Path::new(env!("FLEDGE_FIXTURE_DIR"))
        .join(format!("{name}.wasm"))
        .to_str()
        .expect("utf-8")
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn simulate(policy: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "simulate",
        "--policy",
        policy,
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        "examples/scenarios/promote.yaml",
    ];
    args.extend(extra);
    fledge(&args)
}

#[test]
fn an_endless_loop_fails_the_same_way_on_every_simulation() {
    let looping = fixture("endless-loop");
    let first = simulate(&looping, &[]);
    let second = simulate(&looping, &[]);
    assert_eq!(first.status.code(), Some(2), "{}", text(&first.stderr));
    assert_eq!(text(&first.stdout), text(&second.stdout));
    assert_eq!(first.status.code(), second.status.code());
    let out = text(&first.stdout);
    assert!(
        out.contains("policy used up its fuel budget of 1000000000 units without deciding"),
        "{out}"
    );
    assert!(
        out.contains("raise the budget (fledge simulate --policy-fuel)"),
        "{out}"
    );
    assert!(!out.contains("deadline"), "{out}");
    assert!(
        out.ends_with("Canary failed! Scaling down podinfo.test\n"),
        "{out}"
    );

    // A smaller budget is honoured and named.
    let small = simulate(&looping, &["--policy-fuel", "1000000"]);
    assert!(
        text(&small.stdout).contains("fuel budget of 1000000 units"),
        "{}",
        text(&small.stdout)
    );
    // Fuel and a deadline do not mix.
    let both = simulate(
        &looping,
        &["--policy-fuel", "1000000", "--policy-deadline-ms", "100"],
    );
    assert_eq!(both.status.code(), Some(1));
    assert!(
        text(&both.stderr).contains("--policy-fuel and --policy-deadline-ms both bound a decision"),
        "{}",
        text(&both.stderr)
    );
    // The deadline, when asked for, is reported as a deadline.
    let deadline = simulate(&looping, &["--policy-deadline-ms", "20"]);
    assert!(
        text(&deadline.stdout).contains("did not decide within its deadline of 20 ms"),
        "{}",
        text(&deadline.stdout)
    );
}

#[test]
fn the_builtin_simulates_the_guide_the_same_with_fuel() {
    let builtin = fledge(&[
        "simulate",
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        "examples/scenarios/promote.yaml",
    ]);
    assert_eq!(builtin.status.code(), Some(0), "{}", text(&builtin.stderr));
    let with_deadline = fledge(&[
        "simulate",
        "--canary",
        "examples/podinfo/canary.yaml",
        "--scenario",
        "examples/scenarios/promote.yaml",
        "--policy-deadline-ms",
        "5000",
    ]);
    assert_eq!(text(&builtin.stdout), text(&with_deadline.stdout));
}

#[test]
fn hostile_policy_text_never_reaches_the_terminal_raw() {
    let o = simulate(&fixture("hostile-text"), &[]);
    // It only ever holds with a failed check: at the threshold the host rolls back.
    assert!(
        matches!(o.status.code(), Some(2)),
        "{:?} {}",
        o.status,
        text(&o.stderr)
    );
    for (stream, out) in [("stdout", text(&o.stdout)), ("stderr", text(&o.stderr))] {
        let bad: Vec<char> = out
            .chars()
            .filter(|c| {
                (c.is_control() && *c != '\n')
                    || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            })
            .collect();
        assert!(bad.is_empty(), "{stream} carries {bad:?}:\n{out}");
    }
    let out = text(&o.stdout);
    // Every step's line stays one line: no forged lines.
    assert!(!out.lines().any(|l| l.starts_with("forged")), "{out}");
    assert!(out.contains("checks\\u{1b}[2J"), "{out}");
}

fn build(krate: &str, dir: &Path) -> Output {
    let out = dir.join(format!("{}.wasm", krate.replace('/', "-")));
    let target_dir = root().join("target").join("wasm");
    fledge(&[
        "policy",
        "build",
        krate,
        "-o",
        out.to_str().expect("utf-8"),
        "--profile",
        "policy",
        "--target-dir",
        target_dir.to_str().expect("utf-8"),
    ])
}

#[test]
fn policy_build_names_every_import_beyond_the_world() {
    let dir = std::env::temp_dir().join(format!("fledge-hostile-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");

    // Imports declared in WIT: the component is made, then refused.
    let o = build("policies/fixtures/extra-imports", &dir);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    for name in ["wasi:clocks/wall-clock@0.2.0", "host-time"] {
        assert!(err.contains(name), "{name}: {err}");
    }
    assert!(
        err.contains("which no policy may import: the world allows only fledge:policy's host"),
        "{err}"
    );
    assert!(!err.contains("export_policy"), "{err}");

    // A raw import of the core module (what a JavaScript binding adds).
    let o = build("policies/fixtures/extern-import", &dir);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(
        err.contains("the component imports env::clock_ms, which no policy may import"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
