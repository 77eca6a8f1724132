//! The `fledge` command: the operator, the simulator and policy tools.
use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

mod cli;

#[derive(Parser)]
#[command(
    name = "fledge",
    version,
    about = "Progressive delivery with rollout decisions made by WebAssembly policies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a whole canary analysis of a Canary against a scripted world, with a virtual clock.
    Simulate(cli::simulate::Args),
    /// Inspects and evaluates policy components.
    #[command(subcommand)]
    Policy(cli::policy::Command),
    /// Runs the operator: reconciles Canaries on a cluster (in place of Flagger).
    Operator(cli::operator::Args),
    /// Prints the CustomResourceDefinitions Fledge serves (multi-document YAML).
    Crds(cli::crds::Args),
    /// Serves flagger-loadtester's API: webhook tasks with a built-in hey, gates, rollback gates.
    Loadtester(cli::loadtester::Args),
    /// Converts Canaries to another router (App Mesh to Gateway API).
    #[command(subcommand)]
    Migrate(cli::migrate::Command),
    /// Prints the version, the CRD API versions served and the policy contract (WIT package).
    Version(cli::version::Args),
    /// Writes the reference pages generated from the code: docs/reference/cli.md and crds.md.
    Docs(cli::docs::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    finish(match cli.command {
        // The operator sets up its own log format (--log-format, --log-level).
        Command::Operator(args) => cli::operator::run(args),
        Command::Simulate(args) => {
            command_logs();
            cli::simulate::run(args)
        }
        Command::Policy(cmd) => {
            command_logs();
            cli::policy::run(cmd)
        }
        Command::Crds(args) => cli::crds::run(args),
        // Sets up its own log format, as the operator does.
        Command::Loadtester(args) => cli::loadtester::run(args),
        Command::Version(args) => cli::version::run(args),
        Command::Migrate(cmd) => cli::migrate::run(cmd),
        Command::Docs(args) => cli::docs::run(args, Cli::command()),
    })
}

/// JSON logs on stderr (stdout is the command's output); `FLEDGE_LOG` takes a
/// tracing filter, e.g. `FLEDGE_LOG=debug`.
fn command_logs() {
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEDGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
