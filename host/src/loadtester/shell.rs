//! Commands through a shell, as Flagger's load tester runs them: `sh -c` for
//! `cmd` tasks, `bash -c` for `type: bash`; stdout and stderr combined; the
//! whole process group killed at the timeout (pipelines included).
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Output kept of one command: the end of anything longer.
const OUTPUT_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ok: bool,
    pub output: String,
    /// Why it failed: `exit status 1`, `timed out after 5s`, ...
    pub error: Option<String>,
}

/// Runs `shell -c command` with `env` added, for at most `timeout`.
pub async fn run(
    shell: &'static str,
    command: String,
    env: Vec<(String, String)>,
    timeout: Duration,
) -> Outcome {
    tokio::task::spawn_blocking(move || run_blocking(shell, &command, &env, timeout))
        .await
        .unwrap_or_else(|e| Outcome {
            ok: false,
            output: String::new(),
            error: Some(format!("the command's runner failed: {e}")),
        })
}

fn run_blocking(
    shell: &str,
    command: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> Outcome {
    let failed = |e: String| Outcome {
        ok: false,
        output: String::new(),
        error: Some(e),
    };
    let (mut reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return failed(format!("creating a pipe: {e}")),
    };
    let stderr = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return failed(format!("creating a pipe: {e}")),
    };
    let mut cmd = Command::new(shell);
    cmd.arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(stderr)
        // Its own process group, so a timeout ends the whole pipeline.
        .process_group(0);
    let spawned = cmd.spawn();
    // The pipe's writing ends now live only in the child.
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return failed(format!("starting {shell}: {e}")),
    };
    let collector = std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * OUTPUT_LIMIT {
                        kept.drain(..kept.len() - OUTPUT_LIMIT);
                    }
                }
            }
        }
        if kept.len() > OUTPUT_LIMIT {
            kept.drain(..kept.len() - OUTPUT_LIMIT);
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if started.elapsed() >= timeout => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "timed out after {}",
                    crate::api::duration::format(timeout)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break Err(format!("waiting for {shell}: {e}")),
        }
    };
    // Whatever the shell left running in its group would hold the pipe open.
    kill_group(child.id());
    let output = collector.join().unwrap_or_default();
    match status {
        Ok(s) if s.success() => Outcome {
            ok: true,
            output,
            error: None,
        },
        Ok(s) => Outcome {
            ok: false,
            output,
            error: Some(match s.code() {
                Some(c) => format!("exit status {c}"),
                None => format!("{s}"),
            }),
        },
        Err(e) => Outcome {
            ok: false,
            output,
            error: Some(e),
        },
    }
}

/// SIGKILL to the process group `pgid` (the shell's pid) with kill(1).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_combined_and_failures_say_the_exit_status() {
        let ok = run(
            "sh",
            "echo out; echo err >&2".into(),
            vec![],
            Duration::from_secs(10),
        )
        .await;
        assert!(ok.ok, "{ok:?}");
        assert_eq!(ok.output, "out\nerr\n");
        let env = vec![("FLEDGE_X".into(), "42".into())];
        let bad = run(
            "sh",
            "echo $FLEDGE_X; exit 3".into(),
            env,
            Duration::from_secs(10),
        )
        .await;
        assert!(!bad.ok);
        assert_eq!(
            (bad.output.as_str(), bad.error.as_deref()),
            ("42\n", Some("exit status 3"))
        );
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_pipeline() {
        let started = Instant::now();
        let out = run(
            "sh",
            "echo started; sleep 30 | cat".into(),
            vec![],
            Duration::from_millis(300),
        )
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(!out.ok);
        assert_eq!(out.error.as_deref(), Some("timed out after 300ms"));
        assert_eq!(out.output, "started\n");
    }
}
