//! Prometheus' text exposition format as the simulators write it: label sets, families,
//! histograms, and Envoy's `envoy_cluster_upstream_rq*` families, which the mesh's sidecars
//! and the gateway's proxies both export.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A label set, `k="v",...`, with the text format's escapes.
pub fn render_labels(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A family's `# TYPE` line and its samples; nothing at all when it has no samples.
pub fn family(out: &mut String, name: &str, kind: &str, samples: &str) {
    if !samples.is_empty() {
        let _ = write!(out, "# TYPE {name} {kind}\n{samples}");
    }
}

/// Observations counted into cumulative buckets (one per upper bound), with their sum.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        for (n, le) in self.buckets.iter_mut().zip(self.bounds) {
            if value <= *le {
                *n += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    /// `<name>_bucket` per bound and `+Inf`, `<name>_sum` and `<name>_count`, labelled `base`.
    pub fn write(&self, out: &mut String, name: &str, base: &str) {
        for (le, n) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(out, "{name}_bucket{{{base},le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{base},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{base}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{base}}} {}", self.count);
    }
}

/// One Envoy cluster's upstream requests: answers by status code, and their time (ms).
#[derive(Debug, Clone)]
pub struct UpstreamSeries {
    pub by_code: BTreeMap<u16, u64>,
    pub time_ms: Histogram,
}

impl UpstreamSeries {
    pub fn new(bounds_ms: &'static [f64]) -> UpstreamSeries {
        UpstreamSeries {
            by_code: BTreeMap::new(),
            time_ms: Histogram::new(bounds_ms),
        }
    }

    pub fn record(&mut self, code: u16, latency_ms: f64) {
        *self.by_code.entry(code).or_insert(0) += 1;
        self.time_ms.observe(latency_ms);
    }
}

/// Envoy's `envoy_cluster_upstream_rq{,_xx,_total,_time}` families, filled cluster by cluster.
#[derive(Debug, Default)]
pub struct UpstreamFamilies {
    rq: String,
    xx: String,
    total: String,
    time: String,
}

impl UpstreamFamilies {
    /// The samples of one cluster, labelled `base`.
    pub fn add(&mut self, base: &str, s: &UpstreamSeries) {
        let mut classes: BTreeMap<u16, u64> = BTreeMap::new();
        for (code, n) in &s.by_code {
            let _ = writeln!(
                self.rq,
                "envoy_cluster_upstream_rq{{envoy_response_code=\"{code}\",{base}}} {n}"
            );
            *classes.entry(code / 100).or_insert(0) += n;
        }
        for (class, n) in classes {
            let _ = writeln!(
                self.xx,
                "envoy_cluster_upstream_rq_xx{{envoy_response_code_class=\"{class}\",{base}}} {n}"
            );
        }
        let _ = writeln!(
            self.total,
            "envoy_cluster_upstream_rq_total{{{base}}} {}",
            s.by_code.values().sum::<u64>()
        );
        s.time_ms
            .write(&mut self.time, "envoy_cluster_upstream_rq_time", base);
    }

    /// The four families, each with its `# TYPE` line even without samples.
    pub fn finish(self) -> String {
        format!(
            "# TYPE envoy_cluster_upstream_rq counter\n{}\
             # TYPE envoy_cluster_upstream_rq_xx counter\n{}\
             # TYPE envoy_cluster_upstream_rq_total counter\n{}\
             # TYPE envoy_cluster_upstream_rq_time histogram\n{}",
            self.rq, self.xx, self.total, self.time
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_families_render_exactly() {
        let mut s = UpstreamSeries::new(&[5.0, 25.0]);
        s.by_code.insert(404, 0);
        s.record(200, 3.0);
        s.record(200, 30.0);
        s.record(503, 5.0);
        let base = render_labels(&[
            ("envoy_cluster_name".into(), "c".into()),
            ("app".into(), "a\"b\\c\nd".into()),
        ]);
        let mut f = UpstreamFamilies::default();
        f.add(&base, &s);
        assert_eq!(
            f.finish(),
            r#"# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="c",app="a\"b\\c\nd"} 2
envoy_cluster_upstream_rq{envoy_response_code="404",envoy_cluster_name="c",app="a\"b\\c\nd"} 0
envoy_cluster_upstream_rq{envoy_response_code="503",envoy_cluster_name="c",app="a\"b\\c\nd"} 1
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="c",app="a\"b\\c\nd"} 2
envoy_cluster_upstream_rq_xx{envoy_response_code_class="4",envoy_cluster_name="c",app="a\"b\\c\nd"} 0
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="c",app="a\"b\\c\nd"} 1
# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="c",app="a\"b\\c\nd"} 3
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c",app="a\"b\\c\nd",le="5"} 2
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c",app="a\"b\\c\nd",le="25"} 2
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c",app="a\"b\\c\nd",le="+Inf"} 3
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="c",app="a\"b\\c\nd"} 38
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="c",app="a\"b\\c\nd"} 3
"#
        );
        assert_eq!(
            UpstreamFamilies::default().finish(),
            "# TYPE envoy_cluster_upstream_rq counter\n\
             # TYPE envoy_cluster_upstream_rq_xx counter\n\
             # TYPE envoy_cluster_upstream_rq_total counter\n\
             # TYPE envoy_cluster_upstream_rq_time histogram\n"
        );
    }

    #[test]
    fn histograms_and_families_render_exactly() {
        let mut h = Histogram::new(&[0.005, 0.25, 10.0]);
        h.observe(0.1);
        h.observe(0.005);
        let mut samples = String::new();
        h.write(
            &mut samples,
            "http_request_duration_seconds",
            "status=\"200\"",
        );
        let mut out = String::new();
        family(
            &mut out,
            "http_request_duration_seconds",
            "histogram",
            &samples,
        );
        family(&mut out, "http_requests_total", "counter", "");
        assert_eq!(
            out,
            r#"# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{status="200",le="0.005"} 1
http_request_duration_seconds_bucket{status="200",le="0.25"} 2
http_request_duration_seconds_bucket{status="200",le="10"} 2
http_request_duration_seconds_bucket{status="200",le="+Inf"} 2
http_request_duration_seconds_sum{status="200"} 0.10500000000000001
http_request_duration_seconds_count{status="200"} 2
"#
        );
    }
}
