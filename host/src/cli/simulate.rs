//! `fledge simulate`: a whole canary analysis of the user's Canary against a
//! scripted world, with a virtual clock, through the real policy runtime.
use anyhow::Context;
use fledge::api::yaml::DEFAULT_MAX_INPUT_BYTES;
use fledge::core::Judge;
use fledge::policy::journal::{self, Journal, Journaled};
use fledge::policy::{Budget, PolicyRuntime, RuntimeConfig, DEFAULT_FUEL};
use fledge::simulate::{self, output::Format, scenario};
use fledge_policy::Phase;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status when the canary ends Failed.
const EXIT_FAILED: u8 = 2;
/// Exit status when the run did not finish within the scenario's step bound.
const EXIT_UNFINISHED: u8 = 3;

#[derive(clap::Args)]
pub struct Args {
    /// The Canary (flagger.app/v1beta1) to simulate.
    #[arg(long)]
    canary: PathBuf,
    /// The scripted world: trigger, rollout speed, webhook answers, metric readings.
    #[arg(long)]
    scenario: PathBuf,
    /// YAML files with the target Deployment and what the Canary refers to (HPA,
    /// MetricTemplates, ConfigMaps, Secrets, AlertProviders). Default: the
    /// bundled podinfo Deployment and HPA, renamed to the Canary's targetRef.
    #[arg(long = "target", num_args = 1..)]
    targets: Vec<PathBuf>,
    /// The policy to judge with instead of the built-in one: a component
    /// (.wasm), or a RolloutPolicy / ClusterRolloutPolicy YAML (builtin,
    /// config, capabilities and limits, read as the operator reads them).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// An entry of the policy's config (`spec.config`), KEY=VALUE; repeatable.
    #[arg(long = "policy-config", value_name = "KEY=VALUE", value_parser = super::policy_file::config_pair)]
    policy_config: Vec<(String, String)>,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Writes an SVG timeline of the canary weight and each metric against its threshold.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also prints what happens while the Canary is bootstrapped, before the trigger.
    #[arg(long)]
    bootstrap: bool,
    /// Fuel one policy decision may consume, about one unit per WebAssembly
    /// instruction [default: 1000000000]. Fuel is the default bound: every run
    /// of the same inputs then comes out the same, however loaded the machine is.
    #[arg(long, value_name = "UNITS")]
    policy_fuel: Option<u64>,
    /// Bounds each policy decision by wall-clock time instead of fuel, as the
    /// operator does (its default is 100 ms); outcomes may then depend on how
    /// loaded the machine is.
    #[arg(long, value_name = "MS")]
    policy_deadline_ms: Option<u64>,
    /// Simulates this many copies of the Canary at once and prints a summary.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_COPIES))]
    copies: u32,
    /// Writes every decision asked of the policy to this file (replaced), one
    /// JSON line each, as the operator's decision journal has them (`fledge
    /// policy replay` reads it).
    #[arg(long, value_name = "FILE.jsonl")]
    decision_journal: Option<PathBuf>,
    /// Largest input file read (Canary, scenario, each target), in bytes; larger
    /// files are refused before they are parsed.
    #[arg(long, default_value_t = DEFAULT_MAX_INPUT_BYTES)]
    max_input_bytes: u64,
}

impl Args {
    /// These arguments judging with the policy at `path` (see `--policy`).
    pub fn with_policy(mut self, path: PathBuf) -> anyhow::Result<Args> {
        if let Some(given) = &self.policy {
            anyhow::bail!(
                "--policy {}: the policy is named once, as the first argument",
                given.display()
            );
        }
        self.policy = Some(path);
        Ok(self)
    }
}

/// Most `--copies` at once.
const MAX_COPIES: i64 = 100_000;

/// Reads a file of at most `limit` bytes, refusing a larger one before
/// reading it (and, for a file that grows or lies about its size, after
/// `limit + 1` bytes).
fn read(path: &Path, limit: u64) -> anyhow::Result<String> {
    let name = path.display();
    let too_large = |size: u64| {
        anyhow::anyhow!(
            "{name}: size: {size} bytes is over the {limit}-byte input limit; pass a smaller file, or raise the limit with --max-input-bytes"
        )
    };
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {name}"))?;
    if let Ok(meta) = file.metadata() {
        if meta.is_file() && meta.len() > limit {
            return Err(too_large(meta.len()));
        }
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    if bytes.len() as u64 > limit {
        return Err(anyhow::anyhow!(
            "{name}: size: more than {limit} bytes is over the input limit; pass a smaller file, or raise the limit with --max-input-bytes"
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{name}: byte {}: not UTF-8 text; save the file as UTF-8",
            e.utf8_error().valid_up_to()
        )
    })
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let limit = args.max_input_bytes;
    let canary_text = read(&args.canary, limit)?;
    let scenario_file = args.scenario.display().to_string();
    let scenario = scenario::parse(&read(&args.scenario, limit)?)
        .map_err(|issue| anyhow::anyhow!("{scenario_file}: {issue}"))?;
    let targets = args
        .targets
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p, limit)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let inputs = simulate::load(&args.canary.display().to_string(), &canary_text, &targets)?;
    scenario
        .check(&inputs)
        .map_err(|issue| anyhow::anyhow!("{scenario_file}: {issue}"))?;
    for w in &inputs.warnings {
        eprintln!("warning: {}: {w}", args.canary.display());
    }

    let budget = match (args.policy_fuel, args.policy_deadline_ms) {
        (Some(_), Some(_)) => anyhow::bail!(
            "--policy-fuel and --policy-deadline-ms both bound a decision; give one: \
             fuel (the default, the same outcome on every run) or a deadline (as in the operator)"
        ),
        (None, Some(ms)) => Budget::Deadline(std::time::Duration::from_millis(ms)),
        (fuel, None) => Budget::Fuel(fuel.unwrap_or(DEFAULT_FUEL)),
    };
    let runtime = PolicyRuntime::new(RuntimeConfig {
        budget,
        ..RuntimeConfig::default()
    })
    .context("starting the policy runtime")?;
    let policy = match &args.policy {
        Some(path) => super::policy_file::load(&runtime, path, &args.policy_config)?,
        None if !args.policy_config.is_empty() => {
            anyhow::bail!("--policy-config configures a policy: name it with --policy")
        }
        None => runtime.builtin().context("loading the built-in policy")?,
    };
    let journal = match &args.decision_journal {
        Some(path) => {
            // One run, one journal: the file is replaced, not appended to.
            let file = std::fs::File::create(path)
                .with_context(|| format!("--decision-journal: cannot write {}", path.display()))?;
            let journal = Journal::new(journal::DEFAULT_MAX_BYTES).map_err(anyhow::Error::msg)?;
            Some(journal.writing_to(&path.display().to_string(), Box::new(file)))
        }
        None => None,
    };
    let label = match &args.policy {
        Some(path) => path.display().to_string(),
        None => fledge::operator::telemetry::BUILTIN_POLICY.to_string(),
    };
    let journaled = match &journal {
        Some(j) => j.judge(policy.clone(), &label, policy.digest(), policy.config()),
        None => Journaled::off(policy.clone()),
    };
    let judge: &dyn Judge = &journaled;

    if args.copies > 1 {
        let summaries = simulate::run_many(&inputs, &scenario, args.copies as usize, judge);
        let count = |p: Phase| {
            summaries
                .iter()
                .filter(|r| r.finished && r.phase == p)
                .count()
        };
        let (succeeded, failed) = (count(Phase::Succeeded), count(Phase::Failed));
        let steps: u64 = summaries.iter().map(|r| u64::from(r.steps)).sum();
        println!(
            "{} canaries: {succeeded} Succeeded, {failed} Failed, {} unfinished; {steps} steps",
            summaries.len(),
            summaries.len() - succeeded - failed
        );
        return Ok(if failed > 0 {
            ExitCode::from(EXIT_FAILED)
        } else if succeeded < summaries.len() {
            ExitCode::from(EXIT_UNFINISHED)
        } else {
            ExitCode::SUCCESS
        });
    }

    let report = simulate::run(&inputs, scenario, judge);
    for line in simulate::output::render(&report, args.format, args.bootstrap) {
        println!("{line}");
    }
    if let Some(path) = &args.plot {
        let svg = simulate::plot::svg(&report, &inputs.rollout.metrics);
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(match (report.finished, report.phase) {
        (true, Phase::Succeeded) => ExitCode::SUCCESS,
        (true, _) => ExitCode::from(EXIT_FAILED),
        (false, phase) => {
            eprintln!(
                "{}: still {phase} after {} steps; raise scenario.maxSteps or open the gates the run waits on",
                report.canary, report.steps
            );
            ExitCode::from(EXIT_UNFINISHED)
        }
    })
}
