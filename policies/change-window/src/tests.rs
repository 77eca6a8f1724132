use super::calendar::{describe, weekday, Date, DAY};
use super::window::Window;
use super::*;
use fledge_policy::testing::{duration, guide_input, success_rate};
use fledge_policy::{Advance, RoutePlan};

/// Sat 2026-12-05 10:12 UTC.
const SATURDAY: i64 = 1_796_465_520;
/// Fri 2026-12-04 16:30 UTC.
const FRIDAY_1630: i64 = 1_796_401_800;
/// Mon 2026-12-07 09:00 UTC.
const MONDAY_0900: i64 = 1_796_634_000;
/// Thu 2026-12-24 10:12 UTC.
const CHRISTMAS_EVE: i64 = 1_798_107_120;

#[test]
fn civil_dates_and_weekdays_from_unix_seconds() {
    assert_eq!(describe(0), "Thu 1970-01-01 00:00");
    assert_eq!(describe(-60), "Wed 1969-12-31 23:59");
    assert_eq!(describe(SATURDAY), "Sat 2026-12-05 10:12");
    assert_eq!(describe(CHRISTMAS_EVE), "Thu 2026-12-24 10:12");
    // A leap day, and the simulator's start.
    assert_eq!(describe(951_782_400), "Tue 2000-02-29 00:00");
    assert_eq!(describe(1_767_225_600), "Thu 2026-01-01 00:00");
    // Round trip over four centuries and a weekday that steps by one.
    for days in (-146_097..146_097).step_by(37) {
        let date = Date::from_days(days);
        assert_eq!(date.days(), days, "{date}");
        assert_eq!(Date::parse(&date.to_string()), Some(date));
        assert_eq!(weekday(days + 1), (weekday(days) + 1) % 7);
    }
    assert_eq!(Date::parse("2026-02-29"), None);
    assert_eq!(Date::parse("2024-02-29").map(|d| d.day), Some(29));
    assert_eq!(Date::parse("2026-13-01"), None);
    assert_eq!(Date::parse("2026-1-01"), None);
    assert_eq!(Date::parse("+026-01-01"), None);
}

#[test]
fn windows_open_on_their_days_and_times() {
    let w = Window::parse("Mon-Fri 09:00-17:00").unwrap();
    assert!(!w.contains(SATURDAY));
    assert!(w.contains(FRIDAY_1630));
    // The end is exclusive, the start inclusive.
    assert!(!w.contains(FRIDAY_1630 + 30 * 60));
    assert!(w.contains(FRIDAY_1630 + 30 * 60 - 1));
    assert!(w.contains(MONDAY_0900));
    assert!(!w.contains(MONDAY_0900 - 1));
    // Across midnight: opens Saturday 22:00, closes Sunday 02:00.
    let night = Window::parse("Sat 22:00-02:00").unwrap();
    let sat_2330 = 1_796_513_400;
    assert!(night.contains(sat_2330));
    assert!(night.contains(sat_2330 + 2 * 3600 + 29 * 60));
    assert!(!night.contains(sat_2330 + 2 * 3600 + 30 * 60));
    assert!(!night.contains(sat_2330 - DAY));
    // Wrapping day ranges, lists, daily, 24:00.
    let weekend = Window::parse("fri-sun 00:00-24:00").unwrap();
    assert_eq!(weekend.days, [false, false, false, false, true, true, true]);
    assert!(weekend.contains(SATURDAY));
    assert_eq!(
        Window::parse("Mon,Wed,Sat-Sun 10:00 - 11:00").unwrap().days,
        [true, false, true, false, false, true, true]
    );
    assert!(Window::parse("daily 10:00-10:13")
        .unwrap()
        .contains(SATURDAY));
}

#[test]
fn bad_windows_say_what_is_wrong() {
    for (text, want) in [
        ("Mon-Fri", "`Mon-Fri` has no times"),
        ("Mon-Fry 09:00-17:00", "`Fry` is not a weekday"),
        ("Mon 9:00-17:00", "`9:00` is not a time HH:MM"),
        ("Mon 09:00-24:01", "`24:01` is not a time HH:MM"),
        (
            "Mon 24:00-01:00",
            "`24:00` is not a time HH:MM (00:00 to 23:59)",
        ),
        ("Mon 09:00", "`09:00` is not a time range"),
        ("Mon 09:00-09:00", "the window is empty"),
    ] {
        let e = Window::parse(text).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
}

fn ctx(now: i64) -> Context {
    Context::at(now).with_config("windows", "Mon-Fri 09:00-17:00")
}

fn mid_analysis() -> PolicyInput {
    let mut input = guide_input();
    input.state.canary_weight = 20;
    input.state.primary_weight = 80;
    input.metrics = vec![success_rate(99.9), duration(120.0)];
    input
}

fn advance(weight: u32) -> Decision {
    Decision::Advance(Advance {
        route: RoutePlan::weighted(weight),
        iteration: 0,
    })
}

#[test]
fn inside_the_window_it_is_flaggers_judgement() {
    assert_eq!(decide(&mid_analysis(), &ctx(FRIDAY_1630)), advance(25));
    assert_eq!(decide(&guide_input(), &ctx(MONDAY_0900)), advance(5));
    let mut last = mid_analysis();
    last.state.canary_weight = 50;
    assert_eq!(decide(&last, &ctx(MONDAY_0900)), Decision::Promote);
}

#[test]
fn outside_the_window_forward_moves_hold_without_failing() {
    assert_eq!(
        decide(&mid_analysis(), &ctx(SATURDAY)),
        Decision::halt(
            "outside the change window Mon-Fri 09:00-17:00 UTC (now Sat 2026-12-05 10:12 UTC)"
        )
    );
    let mut last = mid_analysis();
    last.state.canary_weight = 50;
    assert!(matches!(decide(&last, &ctx(SATURDAY)), Decision::Hold(h) if !h.failed_check));
    // Several windows: all named.
    let two = Context::at(SATURDAY).with_config("windows", "Mon-Thu 09:00-16:00; Fri 09:00-12:00");
    assert_eq!(
        decide(&mid_analysis(), &two),
        Decision::halt("outside the change windows Mon-Thu 09:00-16:00; Fri 09:00-12:00 UTC (now Sat 2026-12-05 10:12 UTC)")
    );
    // Friday 16:30 is outside the second set.
    assert!(matches!(
        decide(&mid_analysis(), &Context { now: FRIDAY_1630, ..two }),
        Decision::Hold(h) if h.reason.contains("(now Fri 2026-12-04 16:30 UTC)")
    ));
}

#[test]
fn a_freeze_date_holds_even_inside_a_window() {
    let frozen = ctx(CHRISTMAS_EVE).with_config("freeze", "2026-12-24, 2026-12-31");
    assert_eq!(
        decide(&mid_analysis(), &frozen),
        Decision::halt("2026-12-24 is a freeze date (now Thu 2026-12-24 10:12 UTC)")
    );
    // The day before is a normal day in the window.
    assert_eq!(
        decide(
            &mid_analysis(),
            &frozen
                .clone()
                .with_config("windows", "daily 00:00-24:00")
                .with_config("freeze", "2026-12-25")
        ),
        advance(25)
    );
}

#[test]
fn rollbacks_waits_holds_and_promotions_under_way_pass_through() {
    let closed = ctx(SATURDAY);
    let mut failing = mid_analysis();
    failing.metrics = vec![success_rate(50.0)];
    assert_eq!(
        decide(&failing, &closed),
        Decision::failed_check("success rate 50.00% < 99%")
    );
    failing.state.failed_checks = 5;
    assert_eq!(
        decide(&failing, &closed),
        Decision::Rollback("failed checks threshold reached 5".into())
    );
    let mut waiting = mid_analysis();
    waiting.canary_ready = fledge_policy::Readiness::NotReady("rolling out".into());
    assert_eq!(
        decide(&waiting, &closed),
        Decision::Wait("rolling out".into())
    );
    let mut promoting = mid_analysis();
    promoting.state.phase = Phase::Promoting;
    assert_eq!(decide(&promoting, &closed), advance(0));
}

#[test]
fn bad_config_is_a_failed_check_naming_the_key() {
    for (ctx, want) in [
        (Context::at(SATURDAY), "config windows: missing"),
        (
            ctx(SATURDAY).with_config("windows", " ; "),
            "config windows: empty",
        ),
        (
            ctx(SATURDAY).with_config("windows", "Mon-Fri 9-5"),
            "config windows: `Mon-Fri 9-5`: `9` is not a time",
        ),
        (
            ctx(SATURDAY).with_config("freeze", "2026-12-32"),
            "config freeze: `2026-12-32` is not a date",
        ),
        (
            ctx(SATURDAY).with_config("window", "x"),
            "config window: unknown key",
        ),
    ] {
        let d = decide(&mid_analysis(), &ctx);
        let Decision::Hold(h) = &d else {
            panic!("{want}: {d:?}")
        };
        assert!(h.failed_check, "{want}");
        assert!(
            h.reason
                .starts_with(&format!("change-window policy: {want}")),
            "{want}: {}",
            h.reason
        );
    }
}
