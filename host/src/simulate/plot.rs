//! An SVG timeline of a simulation: the canary weight, and each metric
//! against its threshold range.
use super::Report;
use crate::core::rollout::MetricSpec;
use std::fmt::Write;

const WIDTH: f64 = 900.0;
const PANEL: f64 = 160.0;
const MARGIN: f64 = 50.0;

/// Renders the timeline of `report` for the metrics `metrics`.
pub fn svg(report: &Report, metrics: &[MetricSpec]) -> String {
    let samples = &report.samples;
    let t0 = samples.first().map_or(0, |s| s.ts);
    let t1 = samples.last().map_or(1, |s| s.ts).max(t0 + 1);
    let x = |ts: i64| MARGIN + (ts - t0) as f64 / (t1 - t0) as f64 * (WIDTH - 2.0 * MARGIN);
    let panels = 1 + metrics.len();
    let height = panels as f64 * (PANEL + MARGIN) + MARGIN;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);

    let mut panel = |index: usize,
                     title: &str,
                     lo: f64,
                     hi: f64,
                     points: Vec<(i64, f64)>,
                     bounds: &[(f64, &str)]| {
        let top = MARGIN + index as f64 * (PANEL + MARGIN);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let y = |v: f64| top + PANEL - (v.clamp(lo, hi) - lo) / span * PANEL;
        let _ = writeln!(
            out,
            r#"<text x="{MARGIN}" y="{}" font-weight="bold">{}</text>"#,
            top - 8.0,
            escape(title)
        );
        let _ = writeln!(
            out,
            r##"<rect x="{MARGIN}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
            WIDTH - 2.0 * MARGIN
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            MARGIN - 4.0,
            y(hi) + 4.0,
            fmt(hi)
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            MARGIN - 4.0,
            y(lo) + 4.0,
            fmt(lo)
        );
        for (v, label) in bounds {
            let _ = writeln!(
                out,
                r##"<line x1="{MARGIN}" x2="{}" y1="{yy}" y2="{yy}" stroke="#d33" stroke-dasharray="4 3"/><text x="{}" y="{}" fill="#d33">{label} {}</text>"##,
                WIDTH - MARGIN,
                WIDTH - MARGIN + 2.0,
                y(*v) + 4.0,
                fmt(*v),
                yy = y(*v)
            );
        }
        let path: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                out,
                r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
                path.join(" ")
            );
            for (t, v) in &points {
                let _ = writeln!(
                    out,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="#1f77b4"/>"##,
                    x(*t),
                    y(*v)
                );
            }
        }
    };

    let weights = samples
        .iter()
        .map(|s| (s.ts, f64::from(s.canary_weight)))
        .collect();
    panel(
        0,
        &format!("{}: canary weight (%)", report.canary),
        0.0,
        100.0,
        weights,
        &[],
    );
    for (i, m) in metrics.iter().enumerate() {
        let points: Vec<(i64, f64)> = samples
            .iter()
            .flat_map(|s| {
                s.metrics
                    .iter()
                    .filter(|(n, _)| n == &m.name)
                    .map(move |(_, v)| (s.ts, *v))
            })
            .collect();
        let mut bounds = Vec::new();
        if let Some(min) = m.min {
            bounds.push((min, "min"));
        }
        if let Some(max) = m.max {
            bounds.push((max, "max"));
        }
        let values = points.iter().map(|p| p.1).chain(bounds.iter().map(|b| b.0));
        let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (lo, hi) = if lo > hi {
            (0.0, 1.0)
        } else {
            (lo.min(0.0), hi * 1.1)
        };
        panel(i + 1, &m.name, lo, hi, points, &bounds);
    }
    out.push_str("</svg>\n");
    out
}

fn fmt(v: f64) -> String {
    fledge_policy::format::number((v * 100.0).round() / 100.0)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
