//! The operator's decision journal ([`crate::policy::journal`]): every
//! decision a policy is asked for, one JSON line on stdout (the log lines
//! are on stderr, so `kubectl logs` shows both, in order) and, with
//! `--decision-journal-file`, appended to a file. On by default; off with
//! `--decision-journal=false`.
use super::Context;
use crate::core::Judge;
use crate::policy::journal::{Journal, Journaled};
use crate::policy::Policy;
use std::path::PathBuf;

/// `--decision-journal*`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub enabled: bool,
    /// Bound of one line, newline included.
    pub max_bytes: usize,
    /// Also appended here.
    pub file: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            enabled: true,
            max_bytes: crate::policy::journal::DEFAULT_MAX_BYTES,
            file: None,
        }
    }
}

/// The journal `settings` ask for, `None` when it is off.
pub fn open(settings: &Settings) -> anyhow::Result<Option<Journal>> {
    use anyhow::Context as _;
    if !settings.enabled {
        return Ok(None);
    }
    let journal = Journal::new(settings.max_bytes)
        .map_err(|e| anyhow::anyhow!("--decision-journal-max-bytes: {e}"))?
        .writing_to("stdout", Box::new(std::io::stdout()));
    let journal = match &settings.file {
        Some(path) => journal.appending_to(path).with_context(|| {
            format!(
                "--decision-journal-file: cannot open {} for appending",
                path.display()
            )
        })?,
        None => journal,
    };
    Ok(Some(journal))
}

/// `judge` (the policy in force, labelled `label`) with its decisions
/// written to the operator's journal, if it keeps one.
pub fn judge<'a, J: Judge>(
    ctx: &'a Context,
    judge: J,
    label: &'a str,
    policy: &'a Policy,
) -> Journaled<'a, J> {
    match &ctx.journal {
        Some(journal) => journal.judge(judge, label, policy.digest(), policy.config()),
        None => Journaled::off(judge),
    }
}
