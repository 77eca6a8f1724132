//! Starts and stops a long-lived local test cluster; `tests/cluster/up` and `tests/cluster/down`
//! call this.
//!
//! ```text
//! fledge-cluster up [NAME] [--nodes=N] [--no-metrics] [--audit]   # prints KUBECONFIG=<path> last
//! fledge-cluster down [NAME]
//! fledge-cluster status [NAME]
//! ```
//!
//! NAME defaults to `dev`; the cluster lives in `$FLEDGE_CLUSTER_RUN_DIR/NAME` (default
//! `$TMPDIR/fledge-clusters/NAME`) and its kubeconfig at `<that dir>/kubeconfig`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use fledge_e2e::cluster::{runs_dir, stop_detached, ClusterState};
use fledge_e2e::{Cluster, ClusterOptions};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let mut name = "dev".to_string();
    let mut nodes = 2;
    let mut metrics = true;
    let mut audit = false;
    for arg in args {
        if let Some(n) = arg.strip_prefix("--nodes=") {
            nodes = n.parse().context("--nodes")?;
        } else if arg == "--no-metrics" {
            metrics = false;
        } else if arg == "--audit" {
            audit = true;
        } else if arg.starts_with('-') {
            bail!("unknown flag {arg}");
        } else {
            name = arg;
        }
    }
    let dir = runs_dir().join(&name);
    match cmd.as_str() {
        "up" => {
            let started = Instant::now();
            let simulator = if metrics {
                let exe = std::env::current_exe()?.with_file_name("mesh-sim");
                if !exe.is_file() {
                    bail!(
                        "{} is missing; build it with `cargo build -p fledge-e2e --bins`",
                        exe.display()
                    );
                }
                Some(exe)
            } else {
                None
            };
            let cluster = Cluster::start(ClusterOptions {
                name: Some(name.clone()),
                nodes,
                mesh_simulator: simulator,
                audit,
                ..ClusterOptions::default()
            })?;
            let elapsed = started.elapsed();
            let state = cluster.detach()?;
            eprintln!(
                "cluster {name} up in {:.1}s; stop it with tests/cluster/down {name}",
                elapsed.as_secs_f64()
            );
            print_state(&state);
            Ok(())
        }
        "down" => {
            if !dir.join("state.json").is_file() {
                bail!("no cluster {name} in {}", dir.display());
            }
            let started = Instant::now();
            stop_detached(&dir)?;
            eprintln!(
                "cluster {name} stopped in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        "status" => {
            let state: ClusterState = serde_json::from_slice(
                &std::fs::read(dir.join("state.json"))
                    .with_context(|| format!("no cluster {name} in {}", dir.display()))?,
            )?;
            print_state(&state);
            Ok(())
        }
        _ => bail!(
            "usage: fledge-cluster up|down|status [NAME] [--nodes=N] [--no-metrics] [--audit]"
        ),
    }
}

fn print_state(state: &ClusterState) {
    println!("API_SERVER={}", state.api_server);
    if let Some(p) = &state.prometheus {
        println!("PROMETHEUS_URL={p}");
    }
    if let Some(s) = &state.simulator {
        println!("MESH_SIM_URL={s}");
    }
    println!("KUBECONFIG={}", state.kubeconfig.display());
}
