//! Crash safety of analysis steps: `kill -9` of the operator at random moments of ten rollouts
//! running at once, and SIGTERM in the middle of one. The operator runs with
//! `--step-pause-ms`, a pause after a step's status is written and another after its actions,
//! so that kills often find a step recorded but not finished.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher;

use super::*;

/// What the test operators pause after a step's status write and after its actions.
const PAUSE_MS: u64 = 1000;
/// The log line of an operator finishing a step recorded by an earlier one.
const FINISHING: &str = "finishing the step recorded in the status";

/// A webhook receiver that records when each call arrived, and can hold answers back.
#[derive(Clone, Default)]
struct Hooks {
    addr: Option<std::net::SocketAddr>,
    calls: Arc<Mutex<Vec<(String, Timestamp)>>>,
    /// Path → (calls still to hold back, for how long).
    slow: Arc<Mutex<BTreeMap<String, (u32, Duration)>>>,
}

impl Hooks {
    async fn start() -> Result<Hooks> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let hooks = Hooks {
            addr: Some(listener.local_addr()?),
            ..Default::default()
        };
        let h = hooks.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(h.clone().answer(stream));
            }
        });
        Ok(hooks)
    }

    async fn answer(self, mut stream: tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head, body_at) = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break (String::from_utf8_lossy(&buf[..i]).to_string(), i + 4);
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let length: usize = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < body_at + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        self.calls
            .lock()
            .unwrap()
            .push((path.clone(), Timestamp::now()));
        let hold = {
            let mut slow = self.slow.lock().unwrap();
            match slow.get_mut(&path) {
                Some((n, d)) if *n > 0 => {
                    *n -= 1;
                    Some(*d)
                }
                _ => None,
            }
        };
        if let Some(d) = hold {
            tokio::time::sleep(d).await;
        }
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .await;
        let _ = stream.shutdown().await;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.expect("started"))
    }

    fn calls_to(&self, path: &str) -> Vec<Timestamp> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| *t)
            .collect()
    }
}

/// SplitMix64: a seeded, reproducible sequence for the kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next() % span)
    }
}

/// What a watch of the namespace's Canaries saw: per Canary, each `lastStepTime` with when it
/// was first seen, and which Canaries show a `pendingStep` right now.
#[derive(Default)]
struct Seen {
    steps: BTreeMap<String, Vec<(Timestamp, Timestamp)>>,
    pending: BTreeSet<String>,
}

fn watch_steps(client: &Client, ns: &str) -> Arc<Mutex<Seen>> {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    let s = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let obj = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                _ => continue,
            };
            let at = Timestamp::now();
            let name = obj.metadata.name.clone().unwrap_or_default();
            let status = &obj.data["status"];
            let mut s = s.lock().unwrap();
            if status["pendingStep"].is_object() {
                s.pending.insert(name.clone());
            } else {
                s.pending.remove(&name);
            }
            if let Some(step) = status["lastStepTime"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
            {
                let steps = s.steps.entry(name).or_default();
                if !steps.iter().any(|(t, _)| *t == step) {
                    steps.push((step, at));
                }
            }
        }
    });
    seen
}

/// The calls among `calls` made by a step whose status was written: a call belongs to the
/// step taken at `t` if it came after `t` and before the status of `t` was seen. Calls of a
/// step that never reached its status write (killed before it) fall outside every step.
fn committed(calls: &[Timestamp], steps: &[(Timestamp, Timestamp)]) -> Vec<Timestamp> {
    calls
        .iter()
        .copied()
        .filter(|c| steps.iter().any(|(t, seen)| t <= c && c <= seen))
        .collect()
}

/// Every Event about `name` from Fledge since `since`, in order: (time, note, series count).
async fn events_with_counts(
    client: &Client,
    ns: &str,
    name: &str,
    since: Timestamp,
) -> Result<Vec<(Timestamp, String, i32)>> {
    let mut out: Vec<_> = super::fledge_events(client, ns, name)
        .await?
        .into_iter()
        .filter_map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            Some((e.event_time?.0, e.note.unwrap_or_default(), count))
        })
        .filter(|(t, _, _)| *t >= since)
        .collect();
    out.sort_by_key(|(t, _, _)| *t);
    Ok(out)
}

/// The notes as a user reads them: each Event as often as its series counts it, readiness
/// waits left out (they depend on how fast pods come up).
fn told(events: &[(Timestamp, String, i32)]) -> Vec<String> {
    events
        .iter()
        .filter(|(_, n, _)| !n.contains("rollout to finish"))
        .flat_map(|(_, n, c)| std::iter::repeat_n(n.clone(), (*c).max(1) as usize))
        .collect()
}

/// No `Advance <canary> canary weight N` twice: once as an Event, never in a series.
fn assert_each_weight_step_once(name: &str, events: &[(Timestamp, String, i32)]) {
    let weight = regex::Regex::new(r"^Advance \S+ canary weight \d+$").unwrap();
    let mut steps: BTreeMap<&str, i32> = BTreeMap::new();
    for (_, note, count) in events {
        if weight.is_match(note) {
            *steps.entry(note).or_default() += count;
        }
    }
    assert!(
        !steps.is_empty(),
        "{name}: no weight step at all: {events:#?}"
    );
    for (note, n) in steps {
        assert_eq!(n, 1, "{name}: `{note}` told {n} times: {events:#?}");
    }
}

async fn set_image_of(client: &Client, ns: &str, name: &str, image: &str) -> Result<Timestamp> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "podinfod", "image": image}]}}}});
    let at = Timestamp::now();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    Ok(at)
}

/// The live split of router `name`: (canary, primary).
async fn weights_of(client: &Client, ns: &str, name: &str) -> Result<(u64, u64)> {
    let vr = mesh_object(client, ns, "VirtualRouter", name).await?;
    let t = &vr.data["spec"]["routes"][0]["httpRoute"]["action"]["weightedTargets"];
    Ok((
        t[0]["weight"].as_u64().unwrap_or(999),
        t[1]["weight"].as_u64().unwrap_or(999),
    ))
}

async fn phase_of(client: &Client, ns: &str, name: &str) -> Result<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &canary_resource());
    Ok(api.get(name).await?.data["status"].clone())
}

/// The guide's podinfo Deployment and HPA renamed to `name` (label `app: name`).
fn target_objects(name: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for mut d in manifest("manifests/podinfo-deployment.yaml") {
        d["metadata"]["name"] = json!(name);
        d["metadata"]["labels"]["app"] = json!(name);
        d["spec"]["selector"]["matchLabels"]["app"] = json!(name);
        d["spec"]["template"]["metadata"]["labels"]["app"] = json!(name);
        out.push(d);
    }
    for mut h in manifest("manifests/podinfo-hpa.yaml") {
        h["metadata"]["name"] = json!(name);
        h["spec"]["scaleTargetRef"]["name"] = json!(name);
        out.push(h);
    }
    out
}

/// The test Canary for target `name`, its webhooks at `hooks` under `/<name>/`.
fn canary_for(ns: &str, name: &str, hooks: &Hooks) -> Value {
    let receiver = Receiver {
        addr: hooks.addr,
        ..Default::default()
    };
    let mut c = test_canary(ns, &receiver);
    c["metadata"]["name"] = json!(name);
    c["spec"]["targetRef"]["name"] = json!(name);
    c["spec"]["autoscalerRef"]["name"] = json!(name);
    let a = &mut c["spec"]["analysis"];
    a["webhooks"][0]["url"] = json!(hooks.url(&format!("/{name}/acceptance")));
    a["webhooks"][1]["url"] = json!(hooks.url(&format!("/{name}/load")));
    c
}

/// The operators of one test, one after the other, each with its own log.
struct Incarnations {
    cluster: &'static Cluster,
    prefix: String,
    args: Vec<String>,
    count: usize,
    logs: Vec<PathBuf>,
}

impl Incarnations {
    fn start(&mut self) -> Result<Operator> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let op = Operator::start(
            self.cluster,
            &format!("{}-{}", self.prefix, self.count),
            &args,
        )?;
        self.count += 1;
        self.logs.push(op.log.clone());
        Ok(op)
    }

    fn all_logs(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect()
    }

    fn last_log(&self) -> String {
        self.logs
            .last()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// Ten Canaries of the guide's shape in one namespace (one of them with a canary that answers
/// half its requests with errors), driven at once while the operator is killed with SIGKILL
/// ten times at moments a seeded RNG picks (every other kill waits until some step is recorded
/// but not finished). Every Canary ends in the right phase, tells every Event of its run once
/// and in `fledge simulate`'s order, and no step whose status was written called its webhooks
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_survives_kill_9_at_random_steps() -> Result<()> {
    let Some(cluster) = world("operator_survives_kill_9_at_random_steps") else {
        return Ok(());
    };
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let started = Instant::now();
    let t0 = Timestamp::now();
    let ns = "op-crash";
    let seed = std::env::var("FLEDGE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64);
    println!("{ns}: kill schedule seed {seed} (FLEDGE_CRASH_SEED={seed} repeats it)");
    let mut rng = Rng(seed);
    let names: Vec<String> = (0..10).map(|i| format!("app{i}")).collect();
    let failing = "app9";
    super::super::configure_sim(cluster, |config| {
        config.backends.insert(
            format!("{ns}/{failing}-canary"),
            fledge_e2e::mesh::Behaviour {
                error_ratio: 0.5,
                ..Default::default()
            },
        );
        Ok(())
    })?;
    create_namespace(
        &client,
        ns,
        &[("appmesh.k8s.aws/sidecarInjectorWebhook", "enabled")],
    )
    .await?;
    for name in &names {
        for obj in target_objects(name) {
            apply(&client, ns, &obj, &ssa()).await?;
        }
    }
    let hooks = Hooks::start().await?;
    let seen = watch_steps(&client, ns);
    let mut ops = Incarnations {
        cluster,
        prefix: ns.into(),
        args: vec![
            format!("--namespace={ns}"),
            "--log-level=info".into(),
            format!("--step-pause-ms={PAUSE_MS}"),
        ],
        count: 0,
        logs: Vec::new(),
    };
    let mut operator = ops.start()?;
    let canaries: Vec<Value> = names.iter().map(|n| canary_for(ns, n, &hooks)).collect();
    let logs = cluster.dir().join("logs").join(ns).tap_mkdir()?;
    let mut expected = BTreeMap::new();
    for (name, c) in names.iter().zip(&canaries) {
        let scenario = if name == failing { ROLLBACK } else { PROMOTE };
        let dir = logs.join(name).tap_mkdir()?;
        expected.insert(name.clone(), simulated(&dir, c, scenario)?);
        apply(&client, ns, c, &ssa()).await?;
    }

    // Each Canary gets its new revision as soon as it is Initialized.
    let triggered: Arc<Mutex<BTreeMap<String, Timestamp>>> = Arc::default();
    let trigger = {
        let (client, names, triggered) = (client.clone(), names.clone(), triggered.clone());
        tokio::spawn(async move {
            loop {
                let mut left = 0;
                for name in &names {
                    if triggered.lock().unwrap().contains_key(name) {
                        continue;
                    }
                    left += 1;
                    let Ok(status) = phase_of(&client, ns, name).await else {
                        continue;
                    };
                    // Initialized, and that step finished (its Events published).
                    if status["phase"] == "Initialized" && status["pendingStep"].is_null() {
                        let image = if name == failing { "6.0.2" } else { "6.0.1" };
                        let image = format!("ghcr.io/stefanprodan/podinfo:{image}");
                        if let Ok(at) = set_image_of(&client, ns, name, &image).await {
                            triggered.lock().unwrap().insert(name.clone(), at);
                        }
                    }
                }
                if left == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let mut kills = Vec::new();
    for k in 0..10 {
        tokio::time::sleep(rng.between(Duration::from_millis(1500), Duration::from_secs(4))).await;
        let mut when = "at random";
        if k % 2 == 0 {
            // A step recorded in a status and not finished, if one comes within a while.
            let deadline = Instant::now() + Duration::from_secs(12);
            while Instant::now() < deadline {
                if !seen.lock().unwrap().pending.is_empty() {
                    when = "with a step recorded but not finished";
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        operator.kill();
        let at = started.elapsed();
        kills.push(Timestamp::now());
        println!(
            "{ns}: kill -9 #{} {when} at {:.1}s",
            k + 1,
            at.as_secs_f64()
        );
        operator = ops.start()?;
    }
    tokio::time::timeout(Duration::from_secs(120), trigger)
        .await
        .context("the Canaries did not all initialize")
        .with_context(|| format!("operator log:\n{}", ops.last_log()))??;

    let triggered = triggered.lock().unwrap().clone();
    for name in &names {
        let phase = if name == failing {
            "Failed"
        } else {
            "Succeeded"
        };
        wait_for(
            &format!("Canary {ns}/{name} to reach {phase}"),
            Duration::from_secs(150),
            || async {
                let s = phase_of(&client, ns, name).await?;
                Ok((s["phase"] == phase && s["pendingStep"].is_null()).then_some(()))
            },
        )
        .await
        .with_context(|| format!("operator log:\n{}", ops.last_log()))?;
    }

    let rate = regex::Regex::new(r"success rate (\d+\.\d+)% <")?;
    let normal = |lines: Vec<String>| -> Vec<String> {
        lines
            .into_iter()
            .map(|l| rate.replace(&l, "success rate ~50% <").to_string())
            .collect()
    };
    let seen = seen.lock().unwrap().steps.clone();
    let mut abandoned_calls = 0;
    for name in &names {
        let since = triggered[name];
        let events = events_with_counts(&client, ns, name, since).await?;
        assert_each_weight_step_once(name, &events);
        let want = normal(expected[name].clone());
        let got = normal(told(&events));
        assert_eq!(
            got, want,
            "{name}: Events differ from `fledge simulate --format events`"
        );
        // Webhooks: each once by the step that was written; a step killed before its status
        // write was not taken, and called them again when it was taken.
        let steps = seen.get(name).cloned().unwrap_or_default();
        for hook in ["acceptance", "load"] {
            let calls = hooks.calls_to(&format!("/{name}/{hook}"));
            let by_steps = committed(&calls, &steps);
            assert_eq!(
                by_steps.len(),
                1,
                "{name}: {hook} called {} times by steps whose status was written \
                 (calls {calls:?}, steps {steps:?})",
                by_steps.len()
            );
            abandoned_calls += calls.len() - by_steps.len();
        }
        assert_eq!(
            weights_of(&client, ns, name).await?,
            (0, 100),
            "{name}: routes back to the primary"
        );
        assert_eq!(
            replicas_of(&client, ns, name).await?,
            0,
            "{name}: canary at 0"
        );
    }
    let finished = ops.all_logs().matches(FINISHING).count();
    let last_step = seen
        .values()
        .filter_map(|steps| steps.iter().map(|(_, at)| *at).max())
        .max()
        .map_or(0.0, |at| at.duration_since(t0).as_secs_f64());
    let last_kill = kills
        .last()
        .map_or(0.0, |at| at.duration_since(t0).as_secs_f64());
    println!(
        "{ns}: {} kills (the last at {last_kill:.1}s, the last step at {last_step:.1}s), \
         {finished} steps finished by a later operator, {abandoned_calls} webhook calls of steps \
         killed before their status write; checked {:.1}s after the start",
        kills.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        finished > 0,
        "no kill found a recorded step to finish: the test did not test crash safety"
    );
    Ok(())
}

/// SIGTERM in the middle of an analysis. Sent while a weight step is recorded and paused
/// before its actions, the operator finishes that step (routes set, Event told, record
/// cleared) and exits 0 within a few seconds; sent while the next step waits on a load test
/// that holds its answer for 20 s, it abandons that step at once (its status was not written,
/// so it was not taken). A new operator takes the step again and finishes the rollout with
/// the Events `fledge simulate` tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_finishes_or_abandons_the_step_in_progress_on_sigterm() -> Result<()> {
    let Some(cluster) = world("operator_finishes_or_abandons_the_step_in_progress_on_sigterm")
    else {
        return Ok(());
    };
    let client = cluster.client().await?;
    install_fledge_crds(cluster, &client).await?;
    let ns = "op-sigterm";
    create_namespace(
        &client,
        ns,
        &[("appmesh.k8s.aws/sidecarInjectorWebhook", "enabled")],
    )
    .await?;
    for obj in target_objects("podinfo") {
        apply(&client, ns, &obj, &ssa()).await?;
    }
    let hooks = Hooks::start().await?;
    let held = Duration::from_secs(20);
    hooks
        .slow
        .lock()
        .unwrap()
        .insert("/podinfo/load".into(), (1, held));
    let mut canary = canary_for(ns, "podinfo", &hooks);
    canary["spec"]["analysis"]["webhooks"][1]["timeout"] = json!("30s");
    let mut ops = Incarnations {
        cluster,
        prefix: ns.into(),
        args: vec![
            format!("--namespace={ns}"),
            "--log-level=info".into(),
            "--step-pause-ms=1500".into(),
        ],
        count: 0,
        logs: Vec::new(),
    };
    let mut first = ops.start()?;
    apply(&client, ns, &canary, &ssa()).await?;
    wait_phase(&client, ns, "Initialized", Duration::from_secs(90))
        .await
        .with_context(|| format!("operator log:\n{}", first.logs()))?;
    let expected = simulated(
        &cluster.dir().join("logs").join(ns).tap_mkdir()?,
        &canary,
        PROMOTE,
    )?;
    let triggered = set_image(&client, ns, "ghcr.io/stefanprodan/podinfo:6.0.1").await?;
    let advanced = format!("Advance podinfo.{ns} canary weight 50");

    // A weight step recorded, its actions not carried out yet.
    wait_for(
        "the weight step to be recorded",
        Duration::from_secs(60),
        || async {
            let s = canary_status(&client, ns).await?;
            Ok((s["pendingStep"].is_object() && s["canaryWeight"] == 50).then_some(()))
        },
    )
    .await
    .with_context(|| format!("operator log:\n{}", first.logs()))?;
    assert!(
        !events_since(&client, ns, triggered)
            .await?
            .contains(&advanced),
        "the step's Events come after its actions"
    );
    let (exit, took) = first.terminate(Duration::from_secs(15)).await?;
    println!(
        "{ns}: SIGTERM during a recorded step: exit {exit} after {:.2}s",
        took.as_secs_f64()
    );
    assert!(exit.success(), "exit {exit}; log:\n{}", first.logs());
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    let s = canary_status(&client, ns).await?;
    assert!(s["pendingStep"].is_null(), "the step was finished: {s:#}");
    assert_eq!(
        (s["phase"].as_str(), s["canaryWeight"].as_i64()),
        (Some("Progressing"), Some(50))
    );
    assert_eq!(
        live_weights(&client, ns).await?,
        (50, 50),
        "the step's routes were set"
    );
    assert!(
        events_since(&client, ns, triggered)
            .await?
            .contains(&advanced),
        "the step's Event was told"
    );
    let step_at = s["lastStepTime"].clone();

    // The next step, waiting on its load test.
    let mut second = ops.start()?;
    wait_for(
        "the load test to be called",
        Duration::from_secs(60),
        || async { Ok((!hooks.calls_to("/podinfo/load").is_empty()).then_some(())) },
    )
    .await
    .with_context(|| format!("operator log:\n{}", second.logs()))?;
    let (exit, took) = second.terminate(Duration::from_secs(15)).await?;
    println!(
        "{ns}: SIGTERM while a step waits on a webhook: exit {exit} after {:.2}s",
        took.as_secs_f64()
    );
    assert!(exit.success(), "exit {exit}; log:\n{}", second.logs());
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?}: the step waiting on a webhook that answers after {held:?} must be \
         abandoned"
    );
    assert!(
        second.logs().contains("abandoned"),
        "log:\n{}",
        second.logs()
    );
    let s = canary_status(&client, ns).await?;
    assert_eq!(
        s["lastStepTime"], step_at,
        "the abandoned step was not taken"
    );
    assert!(s["pendingStep"].is_null(), "{s:#}");
    assert_eq!(live_weights(&client, ns).await?, (50, 50));

    let third = ops.start()?;
    wait_phase(&client, ns, "Succeeded", Duration::from_secs(120))
        .await
        .with_context(|| format!("operator log:\n{}", third.logs()))?;
    let got = settled_events(&client, ns, triggered, &expected).await?;
    assert_eq!(
        got, expected,
        "Events differ from `fledge simulate --format events`"
    );
    assert_each_weight_step_once(
        "podinfo",
        &events_with_counts(&client, ns, "podinfo", triggered).await?,
    );
    assert_eq!(hooks.calls_to("/podinfo/acceptance").len(), 1);
    assert_eq!(
        hooks.calls_to("/podinfo/load").len(),
        2,
        "the abandoned step's call and the call of the step taken again"
    );
    assert_eq!(live_weights(&client, ns).await?, (0, 100));
    Ok(())
}
