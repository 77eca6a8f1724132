//! `fledge policy replay POLICY --journal FILE`: every recorded decision
//! judged again by POLICY; prints the ones it would have made differently.
use anyhow::Context as _;
use fledge::policy::journal::timestamp;
use fledge::policy::replay::{self, Replay};
use fledge::policy::{PolicyRuntime, RuntimeConfig, DEFAULT_FUEL};
use fledge_policy::Decision;
use std::io::BufRead;
use std::path::Path;
use std::process::ExitCode;

/// Exit status when some decision differs (as `diff` has it).
const EXIT_DIFFERENT: u8 = 1;
/// Exit status on errors: the journal or the policy could not be read.
const EXIT_ERROR: u8 = 2;

pub fn run(file: &str, journal: &Path, config: &[(String, String)]) -> ExitCode {
    match replay_journal(file, journal, config) {
        Ok(r) => {
            for d in &r.differences {
                println!(
                    "{} {} (line {}): recorded {}; replayed {}",
                    timestamp(d.now),
                    d.canary,
                    d.line,
                    describe(&d.recorded),
                    describe(&d.replayed)
                );
            }
            let mut summary = format!("{} decisions, {} differ", r.decisions, r.differences.len());
            if r.not_replayed > 0 {
                summary.push_str(&format!(
                    "; {} records not replayed (truncated: their input or series are not in the journal)",
                    r.not_replayed
                ));
            }
            if r.skipped > 0 {
                summary.push_str(&format!("; {} other lines skipped", r.skipped));
            }
            println!("{summary}");
            if r.differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_DIFFERENT)
            }
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn replay_journal(
    file: &str,
    journal: &Path,
    config: &[(String, String)],
) -> anyhow::Result<Replay> {
    // Fuel, not a deadline: a replay comes out the same however loaded the machine is.
    let runtime = PolicyRuntime::new(RuntimeConfig::deterministic(DEFAULT_FUEL))
        .context("starting the policy runtime")?;
    let policy = if file == super::policy::BUILTIN {
        runtime
            .builtin()
            .context("loading the built-in policy")?
            .with_config(config.iter().cloned().collect())
    } else {
        super::policy_file::load(&runtime, Path::new(file), config)?
    };
    let name = journal.display();
    let reader: Box<dyn BufRead> = if journal == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(journal).with_context(|| format!("cannot read {name}"))?;
        Box::new(std::io::BufReader::new(f))
    };
    let r = replay::replay(reader, &policy, policy.config())
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    if r.decisions == 0 && r.not_replayed == 0 {
        anyhow::bail!(
            "{name}: no decision records in {} lines; a journal's records are the lines with \
             \"msg\":\"policy decision\" (the operator's stdout, or fledge simulate --decision-journal)",
            r.skipped
        );
    }
    Ok(r)
}

/// `hold (failed check): success rate 69.17% < 99%`, `advance to 10% (iteration 0)`, ...
fn describe(outcome: &Result<Decision, String>) -> String {
    match outcome {
        Ok(Decision::Advance(a)) => {
            let mut s = format!(
                "advance to {}% (primary {}%, iteration {})",
                a.route.canary_weight, a.route.primary_weight, a.iteration
            );
            if !a.route.match_rules.is_empty() {
                s.push_str(&format!(", {} match rules", a.route.match_rules.len()));
            }
            s
        }
        Ok(Decision::Hold(h)) if h.failed_check => format!("hold (failed check): {}", h.reason),
        Ok(Decision::Hold(h)) => format!("hold: {}", h.reason),
        Ok(Decision::Promote) => "promote".to_string(),
        Ok(Decision::Rollback(why)) => format!("rollback: {why}"),
        Ok(Decision::Wait(why)) => format!("wait: {why}"),
        Err(e) => format!("error (a failed check): {e}"),
    }
}
