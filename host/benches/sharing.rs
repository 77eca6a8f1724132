//! What a policy costs the operator: the first load of a component from a
//! URL (fetch, sha256 check, compile, link) and a cached reload; and 100
//! Canaries sharing one module: memory per loaded module and per Canary,
//! and the cost of one decision, against the built-in policy.
//!
//! Run with `cargo bench -p fledge --bench sharing` (it prints its numbers;
//! no criterion: a first load happens once per process, so it is timed on
//! fresh runtimes, one each).
use fledge::api::policy::Source;
use fledge::operator::policies::fetch;
use fledge::policy::{digest, PolicyRuntime, RuntimeConfig, BUILTIN_COMPONENT};
use fledge_policy::{testing, Context, PolicyInput};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// Serves `body` over HTTP/1.1 to every connection, forever.
fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/policy.wasm", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/wasm\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn input() -> PolicyInput {
    let mut input = testing::guide_input();
    input.state.canary_weight = 20;
    input.state.primary_weight = 80;
    input.metrics = vec![testing::success_rate(99.7), testing::duration(212.0)];
    input
}

fn components() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("FLEDGE_FIXTURE_DIR"));
    let mut out = vec![("builtin flagger".to_string(), BUILTIN_COMPONENT.to_vec())];
    for name in ["clock-reader", "series-reader"] {
        let bytes = std::fs::read(dir.join(format!("{name}.wasm"))).expect("fixture");
        out.push((format!("fixture {name}"), bytes));
    }
    for name in ["statistical", "change-window"] {
        if let Some(bytes) = fledge::policy::builtin_component(name) {
            out.push((format!("builtin {name}"), bytes.to_vec()));
        }
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // kube's client starts its buffer task on the current runtime.
    let _entered = rt.enter();
    let http = reqwest::Client::new();
    let kube = kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
        .expect("a client that is never used");
    println!("## first load (fetch over HTTP + sha256 + compile + link) and cached reload");
    for (name, bytes) in components() {
        let url = serve(bytes.clone());
        let source = Source::Url {
            url,
            sha256: digest(&bytes).trim_start_matches("sha256:").to_string(),
        };
        let mut first = Vec::new();
        let mut cached = Vec::new();
        for _ in 0..15 {
            // A fresh runtime: nothing compiled yet.
            let runtime = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
            let started = Instant::now();
            let fetched = rt
                .block_on(fetch::fetch(&kube, &http, "default", &source, 4 << 20))
                .expect("fetched and verified");
            runtime.load(&fetched).expect("loads");
            first.push(started.elapsed());
            // The same bytes again: digest, cache hit, a new handle.
            let started = Instant::now();
            runtime.load(&fetched).expect("loads");
            cached.push(started.elapsed());
        }
        println!(
            "{name} ({} bytes): first load median {} (max {}), cached reload median {} (max {})",
            bytes.len(),
            ms(median(first.clone())),
            ms(*first.iter().max().unwrap()),
            ms(median(cached.clone())),
            ms(*cached.iter().max().unwrap()),
        );
    }

    println!("## 100 Canaries sharing one module");
    let input = input();
    for (name, bytes) in components() {
        let runtime = PolicyRuntime::new(RuntimeConfig::default()).unwrap();
        // Warm the allocator and the pool before measuring.
        let warm = runtime.load(BUILTIN_COMPONENT).unwrap();
        warm.evaluate(&input).unwrap();
        let before = rss_kib();
        let module = runtime.load(&bytes).unwrap();
        let loaded = rss_kib();
        // One handle per Canary, each with its own config.
        let canaries: Vec<_> = (0..100)
            .map(|i| module.with_config([("canary".to_string(), i.to_string())].into()))
            .collect();
        let handles = rss_kib();
        let ctx = Context::at(1_767_225_600);
        let mut times = Vec::new();
        for round in 0..20 {
            for policy in &canaries {
                let started = Instant::now();
                let _ = std::hint::black_box(policy.evaluate_in(&input, &ctx));
                if round > 0 {
                    times.push(started.elapsed());
                }
            }
        }
        let decided = rss_kib();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        println!(
            "{name}: module {} KiB RSS, 100 handles {} KiB, after 2000 decisions +{} KiB; \
             decision median {} mean {} (cached digests: {})",
            loaded.saturating_sub(before),
            handles.saturating_sub(loaded),
            decided.saturating_sub(handles),
            ms(median(times)),
            ms(mean),
            runtime.cached().len()
        );
    }
}
