//! A built-in `hey` (github.com/rakyll/hey): the same flags with the same
//! defaults and meaning, and its summary as the report. `-n` requests (200)
//! are shared by `-c` workers (50); `-q` limits each worker's rate; `-z` runs
//! for a duration instead of a count.
use super::resolve::Resolve;
use anyhow::{bail, Context as _, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Latencies kept for the percentiles at most, as hey keeps (`maxRes`).
const MAX_LATENCIES: usize = 1_000_000;

/// A parsed `hey` command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Hey {
    pub requests: u64,
    pub workers: u64,
    /// Per worker; 0 is no limit.
    pub qps: f64,
    pub duration: Option<Duration>,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// `None` waits forever (`-t 0`).
    pub timeout: Option<Duration>,
    pub content_type: String,
    pub accept: Option<String>,
    pub basic_auth: Option<(String, String)>,
    pub host: Option<String>,
    pub disable_keepalive: bool,
    pub disable_redirects: bool,
    pub url: String,
}

/// Splits a command line as a POSIX shell splits words: single quotes, double
/// quotes (with `\` escapes) and backslashes. `Err` names shell syntax that is
/// more than words (pipes, redirections, variables), which only a shell runs.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("an unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("an unterminated \" quote".into()),
                        },
                        Some(c @ ('$' | '`')) => return Err(format!("`{c}` in double quotes")),
                        Some(c) => word.push(c),
                        None => return Err("an unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(c) => word.push(c),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' => return Err(format!("`{c}`")),
            // A comment or a home directory only where a word starts.
            '#' | '~' if !in_word => return Err(format!("`{c}`")),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Whether `cmd` asks for hey: its first word is `hey`.
pub fn is_hey(cmd: &str) -> bool {
    let t = cmd.trim_start();
    t == "hey" || t.starts_with("hey ") || t.starts_with("hey\t")
}

const BOOL_FLAGS: &[&str] = &[
    "h2",
    "disable-compression",
    "disable-keepalive",
    "disable-redirects",
];
const VALUE_FLAGS: &[&str] = &[
    "n", "c", "q", "z", "o", "m", "H", "t", "A", "d", "D", "T", "a", "x", "host", "cpus",
];

impl Hey {
    /// Parses `hey [flags] <url>` with Go's flag syntax (`-z 10s`, `-z=10s`,
    /// `--z 10s`); flags come before the URL, as for hey. Errors name the flag.
    pub fn parse(cmd: &str) -> Result<Hey> {
        let words = split_words(cmd).map_err(|what| {
            anyhow::anyhow!(
                "`{cmd}`: the built-in hey takes one hey command line, and {what} is shell syntax \
                 (run it through a shell with --allow-shell and a hey binary, or drop it)"
            )
        })?;
        let mut args = words.iter().map(String::as_str);
        if args.next() != Some("hey") {
            bail!("`{cmd}` is not a hey command line");
        }
        let mut h = Hey {
            requests: 200,
            workers: 50,
            qps: 0.0,
            duration: None,
            method: "GET".into(),
            headers: Vec::new(),
            body: None,
            timeout: Some(Duration::from_secs(20)),
            content_type: "text/html".into(),
            accept: None,
            basic_auth: None,
            host: None,
            disable_keepalive: false,
            disable_redirects: false,
            url: String::new(),
        };
        let mut positional = Vec::new();
        while let Some(arg) = args.next() {
            if !positional.is_empty() || arg == "-" || !arg.starts_with('-') {
                positional.push(arg);
                continue;
            }
            if arg == "--" {
                positional.extend(args.by_ref());
                break;
            }
            let bare = arg.trim_start_matches('-');
            let (name, inline) = match bare.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (bare, None),
            };
            if BOOL_FLAGS.contains(&name) {
                let on = match inline {
                    None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
                    Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
                    Some(v) => bail!("-{name}: invalid boolean value {v:?}"),
                };
                match name {
                    "disable-keepalive" => h.disable_keepalive = on,
                    "disable-redirects" => h.disable_redirects = on,
                    // Responses are not decompressed by this client anyway.
                    "disable-compression" => {}
                    "h2" if on => bail!("-h2: HTTP/2 is not supported by the built-in hey"),
                    _ => {}
                }
                continue;
            }
            if !VALUE_FLAGS.contains(&name) {
                bail!("flag provided but not defined: -{name} (hey's flags: -n -c -q -z -m -H -t -A -d -T -a -host -disable-keepalive -disable-redirects -disable-compression -cpus)");
            }
            let value = match inline {
                Some(v) => v.to_string(),
                None => args
                    .next()
                    .with_context(|| format!("flag needs an argument: -{name}"))?
                    .to_string(),
            };
            h.set(name, &value)?;
        }
        match positional.as_slice() {
            [] => bail!("`{cmd}`: no URL (hey [flags] <url>)"),
            [url] => h.url = url.to_string(),
            [url, extra, ..] => bail!(
                "`{cmd}`: `{extra}` after the URL {url}: hey's flags go before the URL, and it takes one URL"
            ),
        }
        let parsed =
            reqwest::Url::parse(&h.url).map_err(|e| anyhow::anyhow!("URL {:?}: {e}", h.url))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!(
                "URL {:?}: scheme {} is not http or https",
                h.url,
                parsed.scheme()
            );
        }
        if h.workers == 0 {
            bail!("-c cannot be smaller than 1");
        }
        if h.duration.is_none() {
            if h.requests == 0 {
                bail!("-n cannot be smaller than 1");
            }
            if h.requests < h.workers {
                bail!(
                    "-n cannot be less than -c (-n {} and -c {})",
                    h.requests,
                    h.workers
                );
            }
        }
        Ok(h)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let int = |v: &str| -> Result<u64> {
            v.parse::<u64>()
                .map_err(|_| anyhow::anyhow!("-{name}: {v:?} is not a whole number"))
        };
        match name {
            "n" => self.requests = int(value)?,
            "c" => self.workers = int(value)?,
            "q" => {
                let q: f64 = value
                    .parse()
                    .map_err(|_| anyhow::anyhow!("-q: {value:?} is not a number"))?;
                if !(q.is_finite() && q >= 0.0) {
                    bail!("-q: {value:?} must be 0 (no limit) or more queries per second");
                }
                self.qps = q;
            }
            "z" => {
                let d =
                    crate::api::duration::parse(value).map_err(|e| anyhow::anyhow!("-z: {e}"))?;
                self.duration = (!d.is_zero()).then_some(d);
            }
            "m" => {
                let m = value.to_ascii_uppercase();
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                    bail!("-m: {value:?} is not an HTTP method");
                }
                self.method = m;
            }
            "H" => {
                let (k, v) = value
                    .split_once(':')
                    .map(|(k, v)| (k.trim_end(), v.trim()))
                    .filter(|(k, v)| {
                        !k.is_empty()
                            && !v.is_empty()
                            && k.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    })
                    .with_context(|| {
                        format!("-H: could not parse {value:?} as a header (e.g. -H 'Accept: text/html')")
                    })?;
                self.headers.push((k.to_string(), v.to_string()));
            }
            "t" => {
                let t = int(value)?;
                self.timeout = (t > 0).then(|| Duration::from_secs(t));
            }
            "d" => self.body = Some(value.to_string()),
            "D" => {
                self.body = Some(
                    std::fs::read_to_string(value)
                        .with_context(|| format!("-D: reading {value}"))?,
                )
            }
            "T" => self.content_type = value.to_string(),
            "A" => self.accept = Some(value.to_string()),
            "a" => {
                let (u, p) = value
                    .split_once(':')
                    .filter(|(u, p)| !u.is_empty() && !p.is_empty())
                    .with_context(|| format!("-a: {value:?} is not username:password"))?;
                self.basic_auth = Some((u.to_string(), p.to_string()));
            }
            "host" => self.host = Some(value.to_string()),
            "o" if value == "csv" => bail!("-o csv: only the summary is supported"),
            "o" => bail!("-o: {value:?} is not an output type (hey knows only csv)"),
            "x" => bail!("-x: proxies are not supported by the built-in hey"),
            "cpus" => {
                int(value)?;
            }
            _ => unreachable!("every value flag is matched"),
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub total: Duration,
    pub count: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Seconds, of answered requests (at most [`MAX_LATENCIES`]).
    pub latencies: Vec<f64>,
    pub latency_sum: f64,
    pub answered: u64,
    pub bytes: u64,
}

impl Report {
    fn add(&mut self, r: Result<(u16, u64), String>, took: Duration) {
        self.count += 1;
        match r {
            Ok((status, size)) => {
                *self.statuses.entry(status).or_default() += 1;
                self.bytes += size;
                self.answered += 1;
                let s = took.as_secs_f64();
                self.latency_sum += s;
                if self.latencies.len() < MAX_LATENCIES {
                    self.latencies.push(s);
                }
            }
            Err(e) => *self.errors.entry(e).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Report) {
        self.count += other.count;
        self.answered += other.answered;
        self.bytes += other.bytes;
        self.latency_sum += other.latency_sum;
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        let room = MAX_LATENCIES.saturating_sub(self.latencies.len());
        self.latencies
            .extend(other.latencies.into_iter().take(room));
    }

    pub fn average(&self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.latency_sum / self.answered as f64
        }
    }

    pub fn rps(&self) -> f64 {
        let s = self.total.as_secs_f64();
        if s > 0.0 {
            self.count as f64 / s
        } else {
            0.0
        }
    }

    /// hey's percentiles: the first sorted latency at or past each percentage.
    pub fn percentiles(&self) -> Vec<(u32, f64)> {
        let mut lats = self.latencies.clone();
        lats.sort_by(f64::total_cmp);
        let mut out = Vec::new();
        let mut want = [10u32, 25, 50, 75, 90, 95, 99].into_iter().peekable();
        for (i, l) in lats.iter().enumerate() {
            let current = (i * 100 / lats.len()) as u32;
            while let Some(&p) = want.peek() {
                if current >= p {
                    out.push((p, *l));
                    want.next();
                } else {
                    break;
                }
            }
        }
        out
    }

    /// The nearest-rank percentile, for the one-line summary: hey's own
    /// table leaves 0 where a run has too few samples to reach a percentage.
    pub fn percentile(&self, p: u32) -> f64 {
        let mut lats = self.latencies.clone();
        if lats.is_empty() {
            return 0.0;
        }
        lats.sort_by(f64::total_cmp);
        let rank = (u64::from(p) * lats.len() as u64).div_ceil(100).max(1);
        lats[(rank as usize - 1).min(lats.len() - 1)]
    }

    /// hey's summary (without its histogram and per-phase details).
    pub fn text(&self) -> String {
        let mut s = String::new();
        let (fast, slow) = self
            .latencies
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), l| (a.min(*l), b.max(*l)));
        let fast = if fast.is_finite() { fast } else { 0.0 };
        let _ = writeln!(s, "\nSummary:");
        let _ = writeln!(s, "  Total:\t{:.4} secs", self.total.as_secs_f64());
        let _ = writeln!(s, "  Slowest:\t{slow:.4} secs");
        let _ = writeln!(s, "  Fastest:\t{fast:.4} secs");
        let _ = writeln!(s, "  Average:\t{:.4} secs", self.average());
        let _ = writeln!(s, "  Requests/sec:\t{:.4}", self.rps());
        if self.bytes > 0 {
            let _ = writeln!(s, "  \n  Total data:\t{} bytes", self.bytes);
            let _ = writeln!(
                s,
                "  Size/request:\t{} bytes",
                self.bytes / self.answered.max(1)
            );
        }
        let _ = writeln!(s, "\nLatency distribution:");
        for (p, l) in self.percentiles() {
            let _ = writeln!(s, "  {p}% in {l:.4} secs");
        }
        let _ = writeln!(s, "\nStatus code distribution:");
        for (code, n) in &self.statuses {
            let _ = writeln!(s, "  [{code}]\t{n} responses");
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\nError distribution:");
            for (e, n) in &self.errors {
                let _ = writeln!(s, "  [{n}]\t{e}");
            }
        }
        s
    }

    /// One line: count, rate, status codes and latency percentiles.
    pub fn line(&self) -> String {
        let codes: Vec<String> = self
            .statuses
            .iter()
            .map(|(c, n)| format!("[{c}] {n}"))
            .collect();
        format!(
            "{} requests in {:.2}s ({:.1}/s), status codes {}, {} errors, latency avg {:.4}s p50 {:.4}s p90 {:.4}s p99 {:.4}s",
            self.count,
            self.total.as_secs_f64(),
            self.rps(),
            if codes.is_empty() { "none".into() } else { codes.join(" ") },
            self.errors.values().sum::<u64>(),
            self.average(),
            self.percentile(50),
            self.percentile(90),
            self.percentile(99),
        )
    }
}

/// Runs the load test: `-c` workers on one client, each throttled to `-q`.
pub async fn run(h: &Hey, resolve: &Resolve) -> Result<Report> {
    super::tls_provider();
    let target = resolve.target(&h.url)?;
    let mut client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(if h.disable_keepalive {
            0
        } else {
            h.workers.min(500) as usize
        })
        .redirect(if h.disable_redirects {
            reqwest::redirect::Policy::none()
        } else {
            reqwest::redirect::Policy::limited(10)
        });
    if let Some((host, addr)) = &target.tls_resolve {
        client = client.resolve(host, *addr);
    }
    let client = client.build().context("building the HTTP client")?;
    let method = reqwest::Method::from_bytes(h.method.as_bytes())
        .map_err(|_| anyhow::anyhow!("-m: {:?} is not an HTTP method", h.method))?;
    let mut headers = reqwest::header::HeaderMap::new();
    let mut put = |k: &str, v: &str| -> Result<()> {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .with_context(|| format!("-H: {k:?} is not a header name"))?;
        let value = reqwest::header::HeaderValue::from_str(v)
            .with_context(|| format!("-H: {v:?} is not a header value"))?;
        headers.insert(name, value);
        Ok(())
    };
    put("content-type", &h.content_type)?;
    put("user-agent", "hey/0.0.1")?;
    if let Some(a) = &h.accept {
        put("accept", a)?;
    }
    if let Some(host) = h.host.as_deref().or(target.host_header.as_deref()) {
        put("host", host)?;
    }
    for (k, v) in &h.headers {
        put(k, v)?;
    }
    if h.disable_keepalive {
        put("connection", "close")?;
    }
    let per_worker = match h.duration {
        Some(_) => u64::MAX,
        None => h.requests / h.workers,
    };
    let started = Instant::now();
    let deadline = h.duration.map(|d| tokio::time::Instant::now() + d);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..h.workers {
        let client = client.clone();
        let method = method.clone();
        let headers = headers.clone();
        let url = target.url.clone();
        let body = h.body.clone();
        let timeout = h.timeout;
        let auth = h.basic_auth.clone();
        let qps = h.qps;
        workers.spawn(async move {
            let mut report = Report::default();
            let mut throttle = (qps > 0.0).then(|| {
                let period = Duration::from_secs_f64(1.0 / qps);
                let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                // A worker held up (a slow answer, a busy machine) catches up
                // on the ticks it missed, so `-q` holds as an average over the
                // run; hey's Go ticker drops them and falls short instead.
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            let stop = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(stop);
            for _ in 0..per_worker {
                if let Some(t) = throttle.as_mut() {
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = t.tick() => {}
                    }
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    break;
                }
                let mut req = client
                    .request(method.clone(), url.clone())
                    .headers(headers.clone());
                if let Some(b) = &body {
                    req = req.body(b.clone());
                }
                if let Some(t) = timeout {
                    req = req.timeout(t);
                }
                if let Some((u, p)) = &auth {
                    req = req.basic_auth(u, Some(p));
                }
                let sent = Instant::now();
                let outcome = async {
                    let mut resp = req.send().await?;
                    let status = resp.status().as_u16();
                    let mut size = 0u64;
                    while let Some(chunk) = resp.chunk().await? {
                        size += chunk.len() as u64;
                    }
                    Ok::<_, reqwest::Error>((status, size))
                }
                .await
                .map_err(|e| error_text(&e));
                report.add(outcome, sent.elapsed());
            }
            report
        });
    }
    let mut total = Report::default();
    while let Some(r) = workers.join_next().await {
        total.merge(r.context("a hey worker panicked")?);
    }
    total.total = started.elapsed();
    Ok(total)
}

/// The error with its causes, as Go prints a wrapped error.
fn error_text(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests;
