//! `fledge loadtester`: flagger-loadtester's HTTP API. `POST /` with a
//! Flagger webhook payload runs the `cmd` of its metadata: `hey ...` with the
//! built-in load generator ([`hey`]), anything else through a shell when
//! `--allow-shell` is given ([`shell`]). `cmd` tasks run in the background
//! (202), one at a time per Canary and command; `type: bash` blocks and
//! answers 200 or 500. Gates and rollback gates are in [`gates`].
pub mod gates;
pub mod hey;
pub mod resolve;
pub mod server;
pub mod shell;

use axum::http::StatusCode;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Task types of flagger-loadtester this one does not run.
const UNSUPPORTED: &[&str] = &["helm", "helmv3", "kubectl", "concord", "ngrinder"];

#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` to listen on.
    pub listen: String,
    /// Longest a command may run (Flagger's `-timeout`).
    pub timeout: Duration,
    /// Only Canaries in matching namespaces (Flagger's `-namespace-regexp`).
    pub namespace_regexp: Option<regex::Regex>,
    /// Run commands other than `hey` through a shell.
    pub allow_shell: bool,
    /// Commands running at once, at most.
    pub max_concurrent: usize,
    pub resolve: resolve::Resolve,
}

/// The webhook payload Flagger sends.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    pub phase: String,
    pub checksum: String,
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Payload {
    pub fn canary(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

/// The load tester's state: gates, running commands, the bound on them.
pub struct Loadtester {
    pub config: Config,
    pub gates: gates::Gates,
    running: Mutex<HashSet<(String, String)>>,
    slots: Arc<tokio::sync::Semaphore>,
    /// `http_proxy` for shell commands, when `--resolve` is given.
    proxy_env: Vec<(String, String)>,
}

/// What `POST /` answers.
pub type Answer = (StatusCode, String);

impl Loadtester {
    pub fn new(config: Config, proxy: Option<std::net::SocketAddr>) -> Arc<Loadtester> {
        let proxy_env = proxy
            .map(|a| {
                let url = format!("http://{a}");
                vec![
                    ("http_proxy".into(), url.clone()),
                    ("HTTP_PROXY".into(), url),
                ]
            })
            .unwrap_or_default();
        Arc::new(Loadtester {
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent)),
            config,
            gates: gates::Gates::default(),
            running: Mutex::default(),
            proxy_env,
        })
    }

    pub fn authorized(&self, p: &Payload) -> bool {
        self.config
            .namespace_regexp
            .as_ref()
            .is_none_or(|r| r.is_match(&p.namespace))
    }

    fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Answer> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{n} commands are running, the most --max-concurrent allows; try again later",
                    n = self.config.max_concurrent
                ),
            )
        })
    }

    fn shell_allowed(&self, cmd: &str) -> Result<(), Answer> {
        if self.config.allow_shell {
            return Ok(());
        }
        Err((
            StatusCode::FORBIDDEN,
            format!(
                "`{cmd}` needs a shell, and shell commands are disabled: start fledge loadtester \
                 with --allow-shell to run them (only `hey ...` runs without it)"
            ),
        ))
    }

    /// `POST /` after the payload is decoded and authorized.
    pub async fn task(self: &Arc<Self>, p: Payload) -> Answer {
        let Some(md) = p.metadata.clone().filter(|m| !m.is_empty()) else {
            return (
                StatusCode::BAD_REQUEST,
                "metadata not found in payload".into(),
            );
        };
        let typ = md.get("type").map_or("cmd", String::as_str);
        let canary = p.canary();
        match typ {
            "bash" => self.bash(&canary, &md).await,
            "cmd" => self.cmd(canary, &md),
            t if UNSUPPORTED.contains(&t) => (
                StatusCode::BAD_REQUEST,
                format!(
                    "task type {t} is not supported by fledge loadtester: it runs `cmd` tasks \
                     (hey built in, other commands with --allow-shell) and `bash` tasks"
                ),
            ),
            t => (
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown task type {t}: fledge loadtester runs `cmd` and `bash` tasks (type: cmd is the default)"
                ),
            ),
        }
    }

    /// `type: bash`: blocks until the command ends; 500 with its output when it fails.
    async fn bash(&self, canary: &str, md: &BTreeMap<String, String>) -> Answer {
        let cmd = md.get("cmd").cloned().unwrap_or_default();
        if let Err(a) = self.shell_allowed(&cmd) {
            return a;
        }
        let return_output = md
            .get("returnCmdOutput")
            .is_some_and(|v| parse_bool(v) == Some(true));
        let _slot = match self.slot() {
            Ok(s) => s,
            Err(a) => return a,
        };
        tracing::info!(canary, "bash command {cmd}");
        let out = shell::run(
            "bash",
            cmd.clone(),
            self.proxy_env.clone(),
            self.config.timeout,
        )
        .await;
        if out.ok {
            tracing::info!(canary, "{}", out.output);
            tracing::info!(canary, "command finished {cmd}");
            (
                StatusCode::OK,
                if return_output {
                    out.output
                } else {
                    String::new()
                },
            )
        } else {
            let err = out.error.unwrap_or_default();
            tracing::error!(canary, "command failed {cmd} {err} {}", out.output);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("command {cmd} failed: {}: {err}", out.output),
            )
        }
    }

    /// `type: cmd`: checked now, run in the background (202); skipped while
    /// the same command of the same Canary still runs.
    fn cmd(self: &Arc<Self>, canary: String, md: &BTreeMap<String, String>) -> Answer {
        let Some(cmd) = md.get("cmd").cloned() else {
            return (StatusCode::BAD_REQUEST, "cmd not found in metadata".into());
        };
        let log_output = md
            .get("logCmdOutput")
            .is_some_and(|v| parse_bool(v) == Some(true));
        let job = if hey::is_hey(&cmd) {
            match hey::Hey::parse(&cmd).and_then(|h| {
                self.config.resolve.target(&h.url)?;
                Ok(h)
            }) {
                Ok(h) => Job::Hey(Box::new(h)),
                // A pipeline around hey is a shell's to run.
                Err(e) if self.config.allow_shell && hey::split_words(&cmd).is_err() => {
                    tracing::debug!(canary, "{e:#}");
                    Job::Shell
                }
                Err(e) => return (StatusCode::BAD_REQUEST, format!("{e:#}")),
            }
        } else {
            if let Err(a) = self.shell_allowed(&cmd) {
                return a;
            }
            Job::Shell
        };
        let key = (canary.clone(), cmd.clone());
        {
            let Ok(mut running) = self.running.lock() else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "state poisoned".into());
            };
            if running.contains(&key) {
                tracing::info!(canary, "command skipped {cmd} is already running");
                return (StatusCode::ACCEPTED, String::new());
            }
            let slot = match self.slot() {
                Ok(s) => s,
                Err(a) => return a,
            };
            running.insert(key.clone());
            let me = self.clone();
            tokio::spawn(async move {
                tracing::info!(canary, "task starting {cmd}");
                match job {
                    Job::Hey(h) => me.run_hey(&canary, &cmd, &h, log_output).await,
                    Job::Shell => {
                        let out =
                            shell::run("sh", cmd.clone(), me.proxy_env.clone(), me.config.timeout)
                                .await;
                        if out.ok {
                            if log_output {
                                tracing::info!(canary, "{}", out.output);
                            }
                            tracing::info!(canary, "command finished {cmd}");
                        } else {
                            let err = out.error.unwrap_or_default();
                            tracing::error!(canary, "command failed {cmd} {err} {}", out.output);
                        }
                    }
                }
                if let Ok(mut running) = me.running.lock() {
                    running.remove(&key);
                }
                drop(slot);
            });
        }
        (StatusCode::ACCEPTED, String::new())
    }

    async fn run_hey(&self, canary: &str, cmd: &str, h: &hey::Hey, log_output: bool) {
        match tokio::time::timeout(self.config.timeout, hey::run(h, &self.config.resolve)).await {
            Ok(Ok(report)) => {
                if log_output {
                    tracing::info!(canary, "{}", report.text());
                }
                tracing::info!(canary, "{}", report.line());
                tracing::info!(canary, "command finished {cmd}");
            }
            Ok(Err(e)) => tracing::error!(canary, "command failed {cmd} {e:#}"),
            Err(_) => tracing::error!(
                canary,
                "command failed {cmd} timed out after {}",
                crate::api::duration::format(self.config.timeout)
            ),
        }
    }

    /// Commands running now (for tests and logs).
    pub fn running(&self) -> usize {
        self.running.lock().map(|r| r.len()).unwrap_or(0)
    }
}

enum Job {
    Hey(Box<hey::Hey>),
    Shell,
}

/// ring for TLS, as the operator uses (reqwest is built without a provider).
pub(crate) fn tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Binds, starts the `--resolve` proxy when there are entries, and serves
/// until the future is dropped.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (state, server) = server::bind(config).await?;
    tracing::info!(
        "fledge loadtester API on {} (shell {}, at most {} commands, timeout {})",
        server.0,
        if state.config.allow_shell {
            "allowed"
        } else {
            "disabled"
        },
        state.config.max_concurrent,
        crate::api::duration::format(state.config.timeout)
    );
    server.1.await;
    Ok(())
}

#[cfg(test)]
mod tests;
