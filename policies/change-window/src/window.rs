//! Change windows and freeze dates, read from `spec.config`.
use crate::calendar::{describe, weekday, Date, DAY, WEEKDAYS};
use fledge_policy::Context;

const KEYS: &[&str] = &["windows", "freeze"];
/// Most windows and freeze dates: enough for any calendar, and a bound on the work.
const MAX_WINDOWS: usize = 64;
const MAX_FREEZE: usize = 400;

/// One weekly window: on `days`, from `start` to `end` (minutes of the UTC
/// day). A window whose end is not after its start crosses midnight: it opens
/// on its day and closes the next day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// As written, for reasons.
    pub text: String,
    /// Monday first.
    pub days: [bool; 7],
    pub start: u32,
    pub end: u32,
}

impl Window {
    /// `<days> <HH:MM>-<HH:MM>`; days are `Mon`, `Mon-Fri` (a range may wrap,
    /// `Fri-Mon`), lists of those (`Mon,Wed,Fri-Sun`) or `daily`.
    pub fn parse(text: &str) -> Result<Window, String> {
        let form = "write <days> <HH:MM>-<HH:MM>, e.g. Mon-Fri 09:00-17:00";
        let (days, times) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("`{text}` has no times; {form}"))?;
        let days = parse_days(days).map_err(|e| format!("`{text}`: {e}; {form}"))?;
        let (start, end) = times
            .trim()
            .split_once('-')
            .ok_or_else(|| format!("`{text}`: `{}` is not a time range; {form}", times.trim()))?;
        let start = minutes(start.trim(), false).ok_or_else(|| {
            format!(
                "`{text}`: `{}` is not a time HH:MM (00:00 to 23:59)",
                start.trim()
            )
        })?;
        let end = minutes(end.trim(), true).ok_or_else(|| {
            format!(
                "`{text}`: `{}` is not a time HH:MM (00:00 to 24:00)",
                end.trim()
            )
        })?;
        if start == end {
            return Err(format!(
                "`{text}`: the window is empty; for a whole day write 00:00-24:00"
            ));
        }
        Ok(Window {
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            days,
            start,
            end,
        })
    }

    /// Whether the window is open at `now` (Unix seconds).
    pub fn contains(&self, now: i64) -> bool {
        let days = now.div_euclid(DAY);
        let minute = (now.rem_euclid(DAY) / 60) as u32;
        let today = weekday(days);
        let yesterday = (today + 6) % 7;
        if self.start < self.end {
            self.days[today] && (self.start..self.end).contains(&minute)
        } else {
            (self.days[today] && minute >= self.start)
                || (self.days[yesterday] && minute < self.end)
        }
    }
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if text.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    for part in text.split(',') {
        let (from, to) = match part.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(part)?, day(part)?),
        };
        let mut d = from;
        loop {
            days[d] = true;
            if d == to {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(days)
}

fn day(name: &str) -> Result<usize, String> {
    WEEKDAYS
        .iter()
        .position(|d| d.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| {
            format!(
                "`{}` is not a weekday ({}, ranges like Mon-Fri, or daily)",
                name.trim(),
                WEEKDAYS.join(" ")
            )
        })
}

/// `HH:MM` as minutes of the day; `24:00` only as an end.
fn minutes(text: &str, end: bool) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) if end => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// The calendar of the policy object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    pub windows: Vec<Window>,
    pub freeze: Vec<Date>,
}

impl Calendar {
    /// Reads `windows` and `freeze`; errors name the key.
    pub fn parse(ctx: &Context) -> Result<Calendar, String> {
        if let Some(key) = ctx.config.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!(
                "config {key}: unknown key; the keys are windows and freeze"
            ));
        }
        let text = ctx.config("windows").ok_or(
            "config windows: missing; give the change windows, e.g. windows: Mon-Fri 09:00-17:00",
        )?;
        let windows = text
            .split(';')
            .filter(|w| !w.trim().is_empty())
            .map(|w| Window::parse(w).map_err(|e| format!("config windows: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if windows.is_empty() {
            return Err(
                "config windows: empty; give at least one window, e.g. Mon-Fri 09:00-17:00".into(),
            );
        }
        if windows.len() > MAX_WINDOWS {
            return Err(format!(
                "config windows: {} windows, more than the {MAX_WINDOWS} allowed",
                windows.len()
            ));
        }
        let freeze = ctx
            .config("freeze")
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| {
                Date::parse(d).ok_or_else(|| {
                    format!("config freeze: `{d}` is not a date YYYY-MM-DD (UTC), e.g. 2026-12-24")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if freeze.len() > MAX_FREEZE {
            return Err(format!(
                "config freeze: {} dates, more than the {MAX_FREEZE} allowed",
                freeze.len()
            ));
        }
        Ok(Calendar { windows, freeze })
    }

    /// Why the analysis may not move forward at `now`, if it may not.
    pub fn closed(&self, now: i64) -> Option<String> {
        let today = Date::from_days(now.div_euclid(DAY));
        if self.freeze.contains(&today) {
            return Some(format!(
                "{today} is a freeze date (now {} UTC)",
                describe(now)
            ));
        }
        if self.windows.iter().any(|w| w.contains(now)) {
            return None;
        }
        let texts: Vec<&str> = self.windows.iter().map(|w| w.text.as_str()).collect();
        let noun = if texts.len() == 1 {
            "window"
        } else {
            "windows"
        };
        Some(format!(
            "outside the change {noun} {} UTC (now {} UTC)",
            texts.join("; "),
            describe(now)
        ))
    }
}
