//! `fledge simulate`: a whole canary analysis of the user's Canary against a
//! scripted world, with a virtual clock, through the real policy runtime.
use anyhow::Context;
use fledge::core::Judge;
use fledge::policy::{Budget, PolicyRuntime, RuntimeConfig, DEFAULT_FUEL};
use fledge::simulate::{self, output::Format, scenario::Scenario};
use fledge_policy::Phase;
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
    /// A policy component (.wasm) to judge with instead of the built-in policy.
    #[arg(long)]
    policy: Option<PathBuf>,
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
    #[arg(long, default_value_t = 1)]
    copies: usize,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let canary_text = read(&args.canary)?;
    let scenario_file = args.scenario.display().to_string();
    let scenario: Scenario = serde_yaml::from_str(&read(&args.scenario)?).map_err(|e| {
        anyhow::anyhow!("{scenario_file}: {e}; see examples/scenarios/ for the fields")
    })?;
    if scenario.trigger.is_empty() {
        anyhow::bail!(
            "{scenario_file}: trigger: no change to roll out; set trigger.image (or env, configMaps, secrets)"
        );
    }
    let targets = args
        .targets
        .iter()
        .map(|p| Ok((p.display().to_string(), read(p)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let inputs = simulate::load(&args.canary.display().to_string(), &canary_text, &targets)?;
    let changes =
        std::iter::once(&scenario.trigger).chain(scenario.updates.iter().map(|u| &u.change));
    for key in changes.flat_map(|c| c.config_keys()) {
        if !inputs.configs.contains_key(&key) {
            anyhow::bail!(
                "{scenario_file}: trigger: the target does not use {key}; change a ConfigMap or Secret its pod template refers to (pass it with --target)"
            );
        }
    }
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
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            runtime
                .load(&bytes)
                .with_context(|| format!("{}: cannot load the policy", path.display()))?
        }
        None => runtime.builtin().context("loading the built-in policy")?,
    };
    let judge: &dyn Judge = &policy;

    if args.copies > 1 {
        let reports = simulate::run_many(&inputs, &scenario, args.copies, judge);
        let count = |p: Phase| {
            reports
                .iter()
                .filter(|r| r.finished && r.phase == p)
                .count()
        };
        let (succeeded, failed) = (count(Phase::Succeeded), count(Phase::Failed));
        let steps: u32 = reports.iter().map(|r| r.steps).sum();
        println!(
            "{} canaries: {succeeded} Succeeded, {failed} Failed, {} unfinished; {steps} steps",
            reports.len(),
            reports.len() - succeeded - failed
        );
        return Ok(if failed > 0 {
            ExitCode::from(EXIT_FAILED)
        } else if succeeded < reports.len() {
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
