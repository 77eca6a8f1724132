//! `fledge policy build|inspect|eval`: build a policy crate into a component,
//! look at a component, and run one decision with it, outside any cluster.
use anyhow::{Context, Result};
use clap::Subcommand;
use fledge::policy::{
    imports, Budget, PolicyError, PolicyRuntime, RuntimeConfig, BUILTIN_COMPONENT, WORLD,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// What `FILE` names the embedded built-in policy.
pub const BUILTIN: &str = "builtin";

#[derive(Subcommand)]
pub enum Command {
    /// Builds a policy crate (a library using `fledge_policy::export_policy!`)
    /// into a component for wasm32, and checks that it implements the world.
    Build {
        /// The crate's directory (or its Cargo.toml).
        #[arg(default_value = ".")]
        path: PathBuf,
        /// Where to write the component (default: `<crate>.wasm` here).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Cargo profile to build with.
        #[arg(long, default_value = "release")]
        profile: String,
        /// Cargo target directory (default: `target/fledge-policy` in the crate).
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
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
    /// Simulates a whole canary analysis judged by POLICY: `fledge simulate
    /// --policy POLICY`, with the same output and exit status.
    Test {
        /// A component (.wasm), a RolloutPolicy / ClusterRolloutPolicy YAML,
        /// or `builtin`.
        #[arg(value_name = "POLICY")]
        file: String,
        #[command(flatten)]
        simulate: super::simulate::Args,
    },
    /// Asks POLICY again for every decision of a decision journal (the
    /// operator's stdout, or `fledge simulate --decision-journal`), with the
    /// recorded input and context, and prints where it would have decided
    /// differently: another kind of decision, route, iteration or failed
    /// check (reasons are not compared). Exit status 0 when none differ, 1
    /// when some do, 2 on errors.
    Replay {
        /// A component (.wasm), a RolloutPolicy / ClusterRolloutPolicy YAML,
        /// or `builtin`.
        #[arg(value_name = "POLICY")]
        file: String,
        /// The journal: JSON lines, or a whole operator log (other lines are
        /// skipped); `-` reads stdin.
        #[arg(long, value_name = "FILE.jsonl")]
        journal: PathBuf,
        /// An entry of the policy's config (`spec.config`), KEY=VALUE;
        /// repeatable. The recorded config is not used: the replayed policy
        /// reads its own.
        #[arg(long = "policy-config", value_name = "KEY=VALUE", value_parser = super::policy_file::config_pair)]
        policy_config: Vec<(String, String)>,
    },
}

pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Build {
            path,
            output,
            profile,
            target_dir,
        } => build(&path, output, &profile, target_dir),
        Command::Inspect { file } => inspect(&file),
        Command::Eval {
            file,
            input,
            deadline_ms,
            memory_mib,
        } => eval(&file, &input, deadline_ms, memory_mib),
        Command::Test { file, simulate } => {
            let args = if file == BUILTIN {
                simulate
            } else {
                simulate.with_policy(PathBuf::from(file))?
            };
            super::simulate::run(args)
        }
        Command::Replay {
            file,
            journal,
            policy_config,
        } => Ok(super::replay::run(&file, &journal, &policy_config)),
    }
}

fn build(
    path: &Path,
    output: Option<PathBuf>,
    profile: &str,
    target_dir: Option<PathBuf>,
) -> Result<ExitCode> {
    use fledge::policy::toolchain::{componentize, Toolchain, TARGET};
    let manifest = if path.is_dir() {
        path.join("Cargo.toml")
    } else {
        path.to_path_buf()
    };
    let lib = library_name(&manifest)?;
    let crate_dir = manifest.parent().unwrap_or(Path::new("."));
    let target_dir = target_dir.unwrap_or_else(|| crate_dir.join("target").join("fledge-policy"));
    let toolchain = Toolchain::detect()?;
    toolchain
        .cargo(
            &manifest,
            &target_dir,
            profile,
            &["rustc", "--lib", "--crate-type", "cdylib"],
        )
        .with_context(|| format!("cannot build {}", manifest.display()))?;
    // Cargo names the output directory of the dev profile `debug`.
    let profile_dir = if profile == "dev" { "debug" } else { profile };
    let module = target_dir
        .join(TARGET)
        .join(profile_dir)
        .join(format!("{lib}.wasm"));
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{lib}.wasm")));
    // Imports of the module that no component of the world can satisfy:
    // named here, as making the component would only say it cannot.
    let core =
        std::fs::read(&module).with_context(|| format!("cannot read {}", module.display()))?;
    let foreign = imports::foreign_in_core_module(&core);
    if !foreign.is_empty() {
        return Err(anyhow::Error::new(PolicyError::ForbiddenImports(foreign))
            .context(format!("cannot build {}", manifest.display())));
    }
    componentize(&module, &output)?;
    let bytes =
        std::fs::read(&output).with_context(|| format!("cannot read {}", output.display()))?;
    let runtime = PolicyRuntime::new(RuntimeConfig::default())?;
    let info = runtime.inspect(&bytes)?;
    match info.world {
        Ok(()) => {}
        Err(err @ PolicyError::ForbiddenImports(_)) => {
            return Err(anyhow::Error::new(err).context(format!(
                "{} was built but is not a rollout policy",
                output.display()
            )));
        }
        Err(err) => {
            return Err(anyhow::Error::new(err).context(format!(
                "{} was built but is not a rollout policy: does the crate call fledge_policy::export_policy!?",
                output.display()
            )));
        }
    }
    println!("{} {} ({} bytes)", output.display(), info.digest, info.size);
    Ok(ExitCode::SUCCESS)
}

/// The library target's name of the package at `manifest`, from `cargo metadata`.
fn library_name(manifest: &Path) -> Result<String> {
    let out =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--manifest-path",
            ])
            .arg(manifest)
            .output()
            .with_context(|| format!("cannot run cargo metadata for {}", manifest.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{}: not a Cargo package: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest = std::fs::canonicalize(manifest)?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .with_context(|| format!("{}: no package in this manifest", manifest.display()))?;
    package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "lib" || k == "cdylib" || k == "rlib"))
        })
        .and_then(|t| t["name"].as_str())
        .map(|n| n.replace('-', "_"))
        .with_context(|| {
            format!(
                "{}: the package has no library target; a policy is a library",
                manifest.display()
            )
        })
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
        budget: Budget::Deadline(Duration::from_millis(deadline_ms)),
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
