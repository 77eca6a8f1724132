//! The built-in `change-window` rollout policy: Flagger's analysis, moving
//! forward only inside configured UTC change windows and never on a freeze
//! date.
//!
//! Everything is Flagger's judgement (`fledge-policy-flagger`), except that
//! outside every window, or on a freeze date, a decision that moves the
//! analysis forward (an advance while Progressing, a promotion) becomes a
//! hold that counts no failed check, with the reason, e.g. `outside the
//! change window Mon-Fri 09:00-17:00 UTC (now Sat 2026-12-05 10:12 UTC)` or
//! `2026-12-24 is a freeze date (now Thu 2026-12-24 10:12 UTC)`. Rollbacks,
//! waits, holds, and a promotion already under way (Promoting, Finalising)
//! pass through: a bad canary is still rolled back at any hour, and a
//! promotion is not left half done.
//!
//! # Config (`spec.config`)
//!
//! | key | default | meaning |
//! | --- | --- | --- |
//! | `windows` | (required) | windows separated by `;`, each `<days> <HH:MM>-<HH:MM>` in UTC: `Mon-Fri 09:00-17:00; Sat 10:00-12:00`. Days: `Mon` .. `Sun` (any case), ranges (`Mon-Fri`, wrapping `Fri-Mon`), comma lists (`Mon,Wed,Fri`), or `daily`. The start is inclusive, the end exclusive; `24:00` ends at midnight. A window whose end is before its start crosses midnight: `Sat 22:00-02:00` opens Saturday 22:00 and closes Sunday 02:00. |
//! | `freeze` | none | comma list of `YYYY-MM-DD` dates (whole UTC days) on which nothing moves forward, inside a window or not |
//!
//! Bad config holds the analysis as a failed check whose reason names the
//! key; the Canary's threshold then rolls it back, so a typo never promotes.
#![forbid(unsafe_code)]

pub mod calendar;
pub mod window;

use fledge_policy::{Context, Decision, Phase, PolicyInput};
use window::Calendar;

#[cfg(feature = "component")]
fledge_policy::export_policy!(decide, with_context);

/// Judges one analysis step at `ctx.now`.
pub fn decide(input: &PolicyInput, ctx: &Context) -> Decision {
    let flagger = fledge_policy_flagger::decide(input);
    if !moves_forward(input.state.phase, &flagger) {
        return flagger;
    }
    match Calendar::parse(ctx) {
        Err(e) => Decision::failed_check(format!("change-window policy: {e}")),
        Ok(calendar) => match calendar.closed(ctx.now) {
            Some(reason) => Decision::halt(reason),
            None => flagger,
        },
    }
}

/// An advance of the analysis or a promotion; not the traffic shift back
/// to the primary of a promotion under way.
fn moves_forward(phase: Phase, d: &Decision) -> bool {
    match d {
        Decision::Advance(_) => phase == Phase::Progressing,
        Decision::Promote => !matches!(phase, Phase::Promoting | Phase::Finalising),
        Decision::Hold(_) | Decision::Rollback(_) | Decision::Wait(_) => false,
    }
}

#[cfg(test)]
mod tests;
