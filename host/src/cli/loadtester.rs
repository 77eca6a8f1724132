//! `fledge loadtester`: flagger-loadtester's API (webhook tasks, gates,
//! rollback gates) with a built-in `hey`. Flagger's flag names where it has
//! them (`--port`, `--timeout`, `--namespace-regexp`, `--log-level`).
use anyhow::Context;
use fledge::loadtester::{self, resolve::Entry, Config};
use fledge::operator::log::LogFormat;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port of the API.
    #[arg(long, env = "FLEDGE_LOADTESTER_PORT", default_value_t = 9090)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "FLEDGE_LOADTESTER_BIND", default_value = "0.0.0.0")]
    bind: String,
    /// Longest a command may run before it is killed (Go duration).
    #[arg(long, env = "FLEDGE_LOADTESTER_TIMEOUT", default_value = "1h", value_parser = duration)]
    timeout: std::time::Duration,
    /// Only Canaries in namespaces matching this regular expression (others get 403).
    #[arg(long, env = "FLEDGE_LOADTESTER_NAMESPACE_REGEXP")]
    namespace_regexp: Option<String>,
    /// Run `type: bash` tasks and `cmd` tasks other than `hey` through a shell
    /// (sh -c, bash -c): whoever can reach the API can then run any command.
    #[arg(long, env = "FLEDGE_LOADTESTER_ALLOW_SHELL")]
    allow_shell: bool,
    /// Commands (hey runs included) running at once, at most; more get 429.
    #[arg(long, env = "FLEDGE_LOADTESTER_MAX_CONCURRENT", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_concurrent: u32,
    /// HOST:PORT=ADDR (repeatable): requests for HOST:PORT go to ADDR, as curl's --resolve.
    #[arg(long = "resolve", value_name = "HOST:PORT=ADDR", value_parser = entry)]
    resolve: Vec<Entry>,
    /// error, warn, info, debug or a tracing filter.
    #[arg(long, env = "FLEDGE_LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[arg(long, env = "FLEDGE_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    let d = fledge::api::duration::parse(s)?;
    if d.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(d)
}

fn entry(s: &str) -> Result<Entry, String> {
    s.parse()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    fledge::operator::log::init(&args.log_level, args.log_format)?;
    let namespace_regexp = args
        .namespace_regexp
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .context("--namespace-regexp")?;
    let bind = if args.bind.contains(':') {
        format!("[{}]:{}", args.bind, args.port)
    } else {
        format!("{}:{}", args.bind, args.port)
    };
    let config = Config {
        listen: bind,
        timeout: args.timeout,
        namespace_regexp,
        allow_shell: args.allow_shell,
        max_concurrent: args.max_concurrent as usize,
        resolve: loadtester::resolve::Resolve {
            entries: args.resolve,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        tokio::select! {
            r = loadtester::run(config) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = terminated() => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
