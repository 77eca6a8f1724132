//! Scripted answers to a policy's range queries (`series:` in a scenario):
//! by query name, samples around a mean with a bounded, deterministic
//! spread, or `error` / `nodata`. The same query at the same time always
//! reads the same samples, so a run comes out the same every time.
use super::scenario::Word;
use crate::api::Issue;
use fledge_policy::{RangeQuery, Sample, Series};
use serde::Deserialize;

/// One scripted series.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SeriesScript {
    Word(Word),
    Model(Model),
}

/// Samples `mean ± spread`, spread uniformly.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub mean: f64,
    #[serde(default)]
    pub spread: f64,
}

impl SeriesScript {
    /// The mean is a finite number, the spread a finite number of at least 0.
    pub fn check(&self, name: &str) -> Result<(), Issue> {
        let SeriesScript::Model(m) = self else {
            return Ok(());
        };
        let field = |f: &str| format!("series.{name}.{f}");
        if !m.mean.is_finite() {
            return Err(Issue {
                field: field("mean"),
                problem: format!("{} is not a finite number", m.mean),
                fix: "give the value the samples centre on".into(),
            });
        }
        if !(m.spread.is_finite() && m.spread >= 0.0) {
            return Err(Issue {
                field: field("spread"),
                problem: format!("{} is not a finite number of at least 0", m.spread),
                fix: "give how far samples may stray from the mean (0 for none)".into(),
            });
        }
        Ok(())
    }

    /// The answer to `q` at `now`: one sample per step over the window
    /// ending at `now`.
    pub fn answer(&self, q: &RangeQuery, now: i64) -> Series {
        let samples = match self {
            SeriesScript::Word(Word::Error) => Err(format!(
                "Get \"http://prometheus:9090/api/v1/query_range\": dial tcp: connection refused \
                 (query {})",
                q.name
            )),
            SeriesScript::Word(Word::NoData) => Ok(Vec::new()),
            SeriesScript::Model(m) => {
                let step = i64::from(q.step_seconds.max(1));
                let start = now - i64::from(q.window_seconds);
                Ok((0..q.points())
                    .map(|k| {
                        let timestamp = start + k as i64 * step;
                        Sample {
                            timestamp,
                            value: m.mean + m.spread * noise(&q.name, timestamp),
                        }
                    })
                    .collect())
            }
        };
        Series {
            name: q.name.clone(),
            samples,
        }
    }
}

/// The answer to a query no script names.
pub fn unscripted(q: &RangeQuery) -> Series {
    Series {
        name: q.name.clone(),
        samples: Err(format!(
            "no series scripted for range query {}; add series.{} to the scenario",
            q.name, q.name
        )),
    }
}

/// A number in [-1, 1], fixed by `name` and `timestamp` (FNV-1a, then
/// splitmix64's finaliser).
fn noise(name: &str, timestamp: i64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(timestamp.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(mean: f64, spread: f64) -> SeriesScript {
        SeriesScript::Model(Model { mean, spread })
    }

    #[test]
    fn samples_cover_the_window_within_the_spread_and_repeat() {
        let q = RangeQuery::new("latency/canary", "q", 300, 30);
        let a = model(100.0, 10.0).answer(&q, 1_000);
        let points = a.samples.clone().unwrap();
        assert_eq!(points.len(), 11);
        assert_eq!(points[0].timestamp, 700);
        assert_eq!(points[10].timestamp, 1_000);
        assert!(points.iter().all(|p| (90.0..=110.0).contains(&p.value)));
        // Not constant, and the same every time.
        assert!(points
            .iter()
            .any(|p| (p.value - points[0].value).abs() > 0.1));
        assert_eq!(model(100.0, 10.0).answer(&q, 1_000), a);
        // Another name reads other noise.
        let other = RangeQuery::new("latency/primary", "q", 300, 30);
        assert_ne!(
            model(100.0, 10.0).answer(&other, 1_000).samples.unwrap(),
            points
        );
    }

    #[test]
    fn words_and_bad_models() {
        let q = RangeQuery::new("e", "q", 60, 10);
        assert!(SeriesScript::Word(Word::Error)
            .answer(&q, 0)
            .samples
            .is_err());
        assert_eq!(
            SeriesScript::Word(Word::NoData).answer(&q, 0).samples,
            Ok(vec![])
        );
        let e = model(1.0, -1.0).check("lat").unwrap_err();
        assert_eq!(e.field, "series.lat.spread");
        assert_eq!(
            model(f64::NAN, 0.0).check("lat").unwrap_err().field,
            "series.lat.mean"
        );
        assert!(unscripted(&q)
            .samples
            .unwrap_err()
            .contains("add series.e to the scenario"));
    }
}
