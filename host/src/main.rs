//! The `fledge` command: the simulator, policy tools and (later) the operator.
use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // JSON logs on stderr (stdout is the command's output); `FLEDGE_LOG`
    // takes a tracing filter, e.g. `FLEDGE_LOG=debug`.
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLEDGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Command::Simulate(args) => cli::simulate::run(args),
        Command::Policy(cmd) => cli::policy::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
