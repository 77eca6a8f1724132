use super::*;
use serde_json::json;
use std::time::Instant;

fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        timeout: Duration::from_secs(30),
        namespace_regexp: None,
        allow_shell: false,
        max_concurrent: 4,
        resolve: resolve::Resolve::default(),
    }
}

struct Api {
    state: Arc<Loadtester>,
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn start(config: Config) -> Api {
        let (state, (addr, server)) = server::bind(config).await.unwrap();
        tokio::spawn(server);
        Api {
            state,
            base: format!("http://{addr}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }
    async fn post(&self, path: &str, body: &serde_json::Value) -> (u16, String) {
        self.post_raw(path, body.to_string()).await
    }
    async fn post_raw(&self, path: &str, body: String) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn canary(ns: &str) -> serde_json::Value {
    json!({"name": "podinfo", "namespace": ns, "phase": "Progressing", "checksum": "x"})
}

fn task(ns: &str, md: serde_json::Value) -> serde_json::Value {
    let mut p = canary(ns);
    p["metadata"] = md;
    p
}

#[tokio::test]
async fn gates_start_closed_open_and_close_per_canary() {
    let api = Api::start(config()).await;
    let a = canary("a");
    let b = canary("b");
    assert_eq!(api.post("/gate/check", &a).await, (403, "Forbidden".into()));
    assert_eq!(api.post("/gate/open", &a).await, (202, String::new()));
    assert_eq!(api.post("/gate/check", &a).await, (200, "Approved".into()));
    assert_eq!(
        api.post("/gate/check", &b).await.0,
        403,
        "another namespace's gate"
    );
    assert_eq!(
        api.post("/rollback/check", &a).await.0,
        403,
        "the rollback gate is its own"
    );
    assert_eq!(api.post("/gate/close", &a).await, (202, String::new()));
    assert_eq!(api.post("/gate/check", &a).await.0, 403);

    assert_eq!(api.post("/rollback/open", &b).await.0, 202);
    assert_eq!(
        api.post("/rollback/check", &b).await,
        (200, "Approved".into())
    );
    assert_eq!(api.post("/gate/check", &b).await.0, 403);
    assert_eq!(api.post("/rollback/close", &b).await.0, 202);
    assert_eq!(api.post("/rollback/check", &b).await.0, 403);

    assert_eq!(api.post("/gate/approve", &a).await, (200, "OK".into()));
    assert_eq!(api.post("/gate/halt", &a).await, (403, "Forbidden".into()));
    assert_eq!(api.post_raw("/gate/check", "{not json".into()).await.0, 400);
    let health = api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn namespaces_outside_the_regexp_are_forbidden() {
    let api = Api::start(Config {
        namespace_regexp: Some(regex::Regex::new("^team-").unwrap()),
        ..config()
    })
    .await;
    assert_eq!(
        api.post("/gate/open", &canary("other")).await,
        (403, "Forbidden".into())
    );
    assert_eq!(api.post("/gate/open", &canary("team-a")).await.0, 202);
    let t = task("other", json!({"cmd": "hey -z 1s http://127.0.0.1:1/"}));
    assert_eq!(api.post("/", &t).await.0, 403);
}

#[tokio::test]
async fn tasks_flagger_loadtester_cannot_run_say_so() {
    let api = Api::start(config()).await;
    assert_eq!(
        api.post("/", &canary("a")).await,
        (400, "metadata not found in payload".into())
    );
    for t in ["helm", "helmv3", "kubectl", "concord", "ngrinder"] {
        let (code, text) = api
            .post("/", &task("a", json!({"type": t, "cmd": "x"})))
            .await;
        assert_eq!(code, 400, "{t}");
        assert!(
            text.starts_with(&format!("task type {t} is not supported")),
            "{text}"
        );
    }
    let (code, text) = api
        .post("/", &task("a", json!({"type": "grpc", "cmd": "x"})))
        .await;
    assert_eq!(code, 400);
    assert!(text.starts_with("unknown task type grpc"), "{text}");
    assert_eq!(
        api.post("/", &task("a", json!({"type": "cmd"}))).await,
        (400, "cmd not found in metadata".into())
    );
    let (code, text) = api
        .post("/", &task("a", json!({"cmd": "hey -z ten http://a/"})))
        .await;
    assert_eq!(code, 400);
    assert!(text.starts_with("-z: "), "{text}");
}

#[tokio::test]
async fn shell_commands_need_allow_shell() {
    let api = Api::start(config()).await;
    for (md, status) in [
        (json!({"type": "bash", "cmd": "curl -s http://a/"}), 403),
        (json!({"cmd": "wrk -d 1s http://a/"}), 403),
        (json!({"cmd": "hey -z 1s http://a/ | tail"}), 400),
    ] {
        let (code, text) = api.post("/", &task("a", md.clone())).await;
        assert_eq!(code, status, "{md}");
        assert!(text.contains("--allow-shell"), "{md}: {text}");
    }
    assert_eq!(api.state.running(), 0, "nothing ran");
}

#[tokio::test]
async fn bash_blocks_and_answers_with_the_outcome() {
    let api = Api::start(Config {
        allow_shell: true,
        ..config()
    })
    .await;
    let ok = task(
        "a",
        json!({"type": "bash", "cmd": "echo hello", "returnCmdOutput": "true"}),
    );
    assert_eq!(api.post("/", &ok).await, (200, "hello\n".into()));
    let quiet = task("a", json!({"type": "bash", "cmd": "echo hello"}));
    assert_eq!(api.post("/", &quiet).await, (200, String::new()));
    let bad = task("a", json!({"type": "bash", "cmd": "echo nope; exit 2"}));
    assert_eq!(
        api.post("/", &bad).await,
        (
            500,
            "command echo nope; exit 2 failed: nope\n: exit status 2".into()
        )
    );
}

#[tokio::test]
async fn commands_are_bounded_deduplicated_and_timed_out() {
    let api = Api::start(Config {
        allow_shell: true,
        max_concurrent: 2,
        timeout: Duration::from_millis(1500),
        ..config()
    })
    .await;
    let sleep = |ns: &str| task(ns, json!({"cmd": "sleep 30"}));
    assert_eq!(api.post("/", &sleep("a")).await.0, 202);
    // The same command of the same Canary is skipped while it runs.
    assert_eq!(api.post("/", &sleep("a")).await.0, 202);
    assert_eq!(api.state.running(), 1);
    assert_eq!(api.post("/", &sleep("b")).await.0, 202);
    assert_eq!(api.state.running(), 2);
    let (code, text) = api.post("/", &sleep("c")).await;
    assert_eq!(code, 429);
    assert!(text.contains("--max-concurrent"), "{text}");
    let (code, _) = api
        .post("/", &task("c", json!({"type": "bash", "cmd": "true"})))
        .await;
    assert_eq!(code, 429, "bash tasks count too");
    // Both are killed at the timeout, which frees their slots.
    let started = Instant::now();
    while api.state.running() > 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Instant::now();
    let (code, text) = api
        .post("/", &task("c", json!({"type": "bash", "cmd": "sleep 30"})))
        .await;
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(code, 500);
    assert!(text.ends_with("timed out after 1500ms"), "{text}");
}
