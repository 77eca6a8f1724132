//! `fledge loadtester` in-process against the podinfo stand-in, no cluster: the built-in hey's
//! rate limit, request count and timeout, and `--resolve` for hey and for shell commands. (In the
//! cluster test binary only to keep test binaries few.)

use std::time::{Duration, Instant};

use anyhow::Result;
use fledge::loadtester::hey::{self, Hey};
use fledge::loadtester::resolve::Resolve;
use fledge::loadtester::{server, Config};
use fledge_e2e::http;
use fledge_e2e::podinfo::Podinfo;
use serde_json::json;

fn resolve(p: &Podinfo) -> Resolve {
    Resolve {
        entries: vec![format!("podinfo-canary.test:9898={}", p.addr)
            .parse()
            .unwrap()],
    }
}

/// `-q` is per worker: two workers at 10 QPS for 10 s send 200 requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hey_rate_limits_each_worker() -> Result<()> {
    let p = Podinfo::start().await?;
    let h = Hey::parse("hey -z 10s -q 10 -c 2 http://podinfo-canary.test:9898/")?;
    let started = Instant::now();
    let report = hey::run(&h, &resolve(&p)).await?;
    let took = started.elapsed();
    println!("{}", report.text());
    assert!(
        (190..=210).contains(&report.count),
        "{} requests, expected 200 +- 5 %",
        report.count
    );
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(12),
        "{took:?}"
    );
    assert_eq!(report.statuses.get(&200), Some(&report.count));
    assert_eq!(p.count("/"), report.count, "the stand-in saw each request");
    assert_eq!(
        p.seen().hosts.get("podinfo-canary.test:9898"),
        Some(&report.count),
        "with the URL's host"
    );
    Ok(())
}

/// `-q` is an average over the run: a worker held up by one slow answer (1 s, ten ticks)
/// sends the requests it missed right after, instead of dropping them as hey's ticker does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hey_catches_up_after_a_slow_answer() -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let first = std::sync::Arc::new(AtomicBool::new(true));
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let first = first.clone();
            async move {
                if first.swap(false, Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let h = Hey::parse(&format!("hey -z 3s -q 10 -c 1 http://{addr}/"))?;
    let report = hey::run(&h, &Resolve { entries: vec![] }).await?;
    // 30 ticks in 3 s, the first at 100 ms; dropping the ten missed would give about 20.
    assert!(
        (27..=31).contains(&report.count),
        "{} requests, expected about 30",
        report.count
    );
    Ok(())
}

/// `-n` is shared by the workers (each sends n/c, the remainder is dropped, as in hey);
/// statuses are counted; `-t` bounds each request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hey_counts_statuses_and_times_requests_out() -> Result<()> {
    let p = Podinfo::start().await?;
    let r = resolve(&p);
    let report = hey::run(
        &Hey::parse("hey -n 25 -c 10 http://podinfo-canary.test:9898/status/503")?,
        &r,
    )
    .await?;
    assert_eq!(report.count, 20);
    assert_eq!(report.statuses, [(503, 20)].into());
    assert_eq!(p.count("/status/503"), 20);

    let started = Instant::now();
    let slow = hey::run(
        &Hey::parse("hey -n 2 -c 2 -t 1 http://podinfo-canary.test:9898/delay/5")?,
        &r,
    )
    .await?;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((slow.count, slow.answered), (2, 0));
    assert_eq!(slow.errors.values().sum::<u64>(), 2, "{:?}", slow.errors);
    assert!(
        slow.text().contains("Error distribution:"),
        "{}",
        slow.text()
    );
    Ok(())
}

/// The guide's acceptance test (`type: bash`, curl) and a hey load test reach the stand-in by
/// the guide's host name through `--resolve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_serves_hey_and_shell_commands() -> Result<()> {
    let p = Podinfo::start().await?;
    let (_state, (addr, api)) = server::bind(Config {
        listen: "127.0.0.1:0".into(),
        timeout: Duration::from_secs(30),
        namespace_regexp: None,
        allow_shell: true,
        max_concurrent: 4,
        resolve: resolve(&p),
    })
    .await?;
    tokio::spawn(api);
    let post = |md: serde_json::Value| {
        let body =
            json!({"name": "podinfo", "namespace": "test", "phase": "Progressing", "metadata": md});
        tokio::task::spawn_blocking(move || {
            http::request(addr, "POST", "/", Some(&body.to_string()))
        })
    };

    let acceptance = post(json!({"type": "bash", "returnCmdOutput": "true",
        "cmd": "curl -sd 'test' http://podinfo-canary.test:9898/token | grep token"}))
    .await??;
    assert_eq!(acceptance.status, 200, "{}", acceptance.body);
    assert!(acceptance.body.contains("\"token\""), "{}", acceptance.body);
    let seen = p.seen();
    assert_eq!(seen.token_bodies, ["test"]);
    assert_eq!(seen.hosts.get("podinfo-canary.test:9898"), Some(&1));

    // An https URL does not go through the proxy: curl fails to resolve the name.
    let https = post(json!({"type": "bash",
        "cmd": "curl -sS --max-time 5 https://podinfo-canary.test:9898/"}))
    .await??;
    assert_eq!(https.status, 500, "{}", https.body);

    let load =
        post(json!({"cmd": "hey -n 20 -c 2 http://podinfo-canary.test:9898/status/500"})).await??;
    assert_eq!(load.status, 202, "{}", load.body);
    let started = Instant::now();
    while p.count("/status/500") < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            p.seen()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(p.count("/status/500"), 20, "-n 20 sends 20");
    Ok(())
}
