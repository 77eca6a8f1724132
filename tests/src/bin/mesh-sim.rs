//! Mesh traffic simulator: Envoy-style metrics for the pods behind App Mesh virtual nodes, and
//! the Gateway API controller of GatewayClass `fledge-sim` with Envoy Gateway's metrics.
//!
//! ```text
//! mesh-sim --kubeconfig PATH --listen 127.0.0.1:PORT [--config FILE] [--refresh-ms 500]
//! ```
//!
//! HTTP API: `GET /metrics` (Prometheus text), `GET /healthz`, `GET /state` (routing model and
//! per-backend totals; `gateway` for HTTPRoutes), `GET|PUT /config` (the whole [`SimConfig`] as
//! JSON), and `PUT /backends/<namespace>/<virtual node or Service>` (one backend's [`Behaviour`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use fledge_e2e::cluster::client_for;
use fledge_e2e::gateway::Controller;
use fledge_e2e::http::{serve, Request};
use fledge_e2e::mesh::{read_model, Behaviour, Engine, SimConfig};

struct Args {
    kubeconfig: PathBuf,
    listen: SocketAddr,
    config: Option<PathBuf>,
    refresh: Duration,
}

fn parse_args() -> Result<Args> {
    let mut kubeconfig = std::env::var_os("KUBECONFIG").map(PathBuf::from);
    let mut listen = None;
    let mut config = None;
    let mut refresh = Duration::from_millis(500);
    for arg in std::env::args().skip(1) {
        let (k, v) = arg
            .split_once('=')
            .with_context(|| format!("expected --flag=value, got {arg:?}"))?;
        match k {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(v)),
            "--listen" => listen = Some(v.parse().context("--listen")?),
            "--config" => config = Some(PathBuf::from(v)),
            "--refresh-ms" => refresh = Duration::from_millis(v.parse().context("--refresh-ms")?),
            _ => bail!("unknown flag {k}"),
        }
    }
    Ok(Args {
        kubeconfig: kubeconfig.context("--kubeconfig=PATH (or KUBECONFIG) is required")?,
        listen: listen.context("--listen=ADDR is required")?,
        config,
        refresh,
    })
}

fn lock(engine: &Mutex<Engine>) -> std::sync::MutexGuard<'_, Engine> {
    engine.lock().unwrap_or_else(|p| p.into_inner())
}

fn handle(engine: &Mutex<Engine>, req: Request) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    const TEXT: &str = "text/plain; charset=utf-8";
    let to_json = |v: serde_json::Result<String>| match v {
        Ok(body) => (200, JSON, body),
        Err(e) => (500, TEXT, e.to_string()),
    };
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/healthz") => (200, TEXT, "ok\n".into()),
        ("GET", "/metrics") => (200, "text/plain; version=0.0.4", lock(engine).render()),
        ("GET", "/state") => to_json(serde_json::to_string_pretty(&lock(engine).state())),
        ("GET", "/config") => to_json(serde_json::to_string_pretty(lock(engine).config())),
        ("PUT", "/config") => match serde_json::from_str::<SimConfig>(&req.body)
            .map_err(anyhow::Error::from)
            .and_then(|c| lock(engine).set_config(c))
        {
            Ok(()) => (204, TEXT, String::new()),
            Err(e) => (400, TEXT, format!("{e:#}\n")),
        },
        ("PUT", path) if path.starts_with("/backends/") => {
            let key = path.trim_start_matches("/backends/");
            if key.split('/').count() != 2 {
                return (
                    404,
                    TEXT,
                    "use /backends/<namespace>/<virtual node>\n".into(),
                );
            }
            match serde_json::from_str::<Behaviour>(&req.body)
                .map_err(anyhow::Error::from)
                .and_then(|b| lock(engine).set_backend(key, b))
            {
                Ok(()) => (204, TEXT, String::new()),
                Err(e) => (400, TEXT, format!("{e:#}\n")),
            }
        }
        (_, "/healthz" | "/metrics" | "/state" | "/config") => {
            (405, TEXT, "method not allowed\n".into())
        }
        _ => (404, TEXT, "not found\n".into()),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let config = match &args.config {
        Some(path) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("parsing {}", path.display()))?,
        None => SimConfig::default(),
    };
    let engine = Arc::new(Mutex::new(Engine::new(config)?));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;

    // Keep the routing model current.
    let model_engine = engine.clone();
    let kubeconfig = args.kubeconfig.clone();
    let refresh = args.refresh;
    tokio::spawn(async move {
        let mut client = None;
        let mut gateway = Controller::default();
        loop {
            if client.is_none() {
                match client_for(&kubeconfig).await {
                    Ok(c) => client = Some(c),
                    Err(e) => eprintln!("mesh-sim: {e:#}"),
                }
            }
            if let Some(c) = &client {
                let config = lock(&model_engine).config().clone();
                match read_model(c, &config).await {
                    Ok((routers, backends)) => lock(&model_engine).set_model(routers, backends),
                    Err(e) => eprintln!("mesh-sim: reading the mesh: {e:#}"),
                }
                match gateway.sync(c, &config).await {
                    Ok(model) => lock(&model_engine).set_gateway_model(model),
                    Err(e) => eprintln!("mesh-sim: gateway controller: {e:#}"),
                }
            }
            tokio::time::sleep(refresh).await;
        }
    });

    // Generate traffic in small steps of real time.
    let traffic_engine = engine.clone();
    tokio::spawn(async move {
        let mut last = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let dt = now.duration_since(last).as_secs_f64();
            last = now;
            lock(&traffic_engine).advance(dt);
        }
    });

    let server_engine = engine.clone();
    serve(listener, move |req| handle(&server_engine, req)).await
}
