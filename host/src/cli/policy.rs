//! `fledge policy inspect|eval`: look at a policy component and run one
//! decision with it, outside any cluster.
use anyhow::{Context, Result};
use clap::Subcommand;
use fledge::policy::{PolicyError, PolicyRuntime, RuntimeConfig, BUILTIN_COMPONENT, WORLD};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// What `FILE` names the embedded built-in policy.
const BUILTIN: &str = "builtin";

#[derive(Subcommand)]
pub enum Command {
    /// Shows a component's digest, size, imports and exports, and whether it
    /// implements the rollout-policy world.
    Inspect {
        /// A policy component (`.wasm`), or `builtin`.
        file: String,
    },
    /// Runs one decision and prints it as JSON.
    Eval {
        /// A policy component (`.wasm`), or `builtin`.
        file: String,
        /// The step to judge: a policy input as JSON (camelCase fields, as in
        /// `fledge_policy::PolicyInput`); `-` reads it from stdin.
        #[arg(long, value_name = "FILE.json")]
        input: PathBuf,
        /// Wall-clock deadline of the decision, in milliseconds.
        #[arg(long, default_value_t = 100)]
        deadline_ms: u64,
        /// Memory cap of the decision, in MiB.
        #[arg(long, default_value_t = 32)]
        memory_mib: u64,
    },
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Inspect { file } => inspect(&file),
        Command::Eval {
            file,
            input,
            deadline_ms,
            memory_mib,
        } => eval(&file, &input, deadline_ms, memory_mib),
    }
}

fn read_component(file: &str) -> Result<Vec<u8>> {
    if file == BUILTIN {
        return Ok(BUILTIN_COMPONENT.to_vec());
    }
    std::fs::read(file).with_context(|| format!("cannot read {file}"))
}

fn inspect(file: &str) -> Result<ExitCode> {
    let bytes = read_component(file)?;
    let runtime = PolicyRuntime::new(RuntimeConfig::default())?;
    let info = runtime
        .inspect(&bytes)
        .with_context(|| format!("cannot inspect {file}"))?;
    let list = |items: &[String]| {
        if items.is_empty() {
            "(none)".to_string()
        } else {
            items.join("\n          ")
        }
    };
    println!("file:     {file}");
    println!("digest:   {}", info.digest);
    println!("size:     {} bytes", info.size);
    match &info.world {
        Ok(()) => println!("world:    {WORLD}"),
        Err(_) => println!("world:    (not {WORLD})"),
    }
    println!("imports:  {}", list(&info.imports));
    println!("exports:  {}", list(&info.exports));
    info.world
        .with_context(|| format!("{file} is not a rollout policy"))?;
    Ok(ExitCode::SUCCESS)
}

fn eval(file: &str, input: &Path, deadline_ms: u64, memory_mib: u64) -> Result<ExitCode> {
    let text = if input == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the input from stdin")?
    } else {
        std::fs::read_to_string(input)
            .with_context(|| format!("cannot read {}", input.display()))?
    };
    let input: fledge_policy::PolicyInput = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a policy input", input.display()))?;
    let bytes = read_component(file)?;
    let runtime = PolicyRuntime::new(RuntimeConfig {
        deadline: Duration::from_millis(deadline_ms),
        memory_limit: memory_mib.saturating_mul(1 << 20),
        max_concurrent_decisions: 1,
        ..RuntimeConfig::default()
    })?;
    let policy = runtime
        .load(&bytes)
        .with_context(|| format!("cannot load {file}"))?;
    match policy.evaluate(&input) {
        Ok(decision) => {
            println!("{}", serde_json::to_string_pretty(&decision)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            if let PolicyError::Trap { log, .. } = &err {
                for line in log {
                    eprintln!("policy log: {line}");
                }
            }
            Err(anyhow::Error::new(err).context(format!("{file} gave no decision")))
        }
    }
}
