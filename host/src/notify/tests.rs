//! Payloads against a local receiver, the severity filter, retries and dead
//! receivers.
use super::delivery::{self, Delivery, Post, Settings};
use super::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP receiver on loopback: answers the statuses of `script` in
/// turn, then 200; `None` in the script accepts and never answers.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections accepted, answered or not.
    accepted: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start(script: Vec<Option<u16>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let accepted: Arc<Mutex<usize>> = Arc::default();
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
        let (s, a) = (seen.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                *a.lock().unwrap() += 1;
                let next = script.lock().unwrap().pop_front().unwrap_or(Some(200));
                let s = s.clone();
                tokio::spawn(async move {
                    let Some(status) = next else {
                        // Holds the connection open and never answers.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        drop(conn);
                        return;
                    };
                    if let Some(req) = read_request(&mut conn).await {
                        s.lock().unwrap().push(req);
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        Receiver {
            url,
            seen,
            accepted,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Seen> {
        let until = Instant::now() + within;
        while self.seen().len() < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.seen()
    }
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + 4 + len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end + 4..]).unwrap_or(Value::Null);
    Some(Seen {
        path,
        headers,
        body,
    })
}

fn rustls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client() -> reqwest::Client {
    rustls();
    reqwest::Client::new()
}

fn message(severity: Severity) -> Message {
    Message {
        workload: "podinfo".into(),
        namespace: "test".into(),
        text: "New revision detected, progressing canary analysis.".into(),
        fields: vec![
            Field::new("Cluster", "prod-eu"),
            Field::new("Target", "Deployment/podinfo.test"),
        ],
        severity,
    }
}

fn poster() -> Poster {
    Poster {
        username: "flagger".into(),
        channel: "deploys".into(),
    }
}

fn endpoint(url: &str, token: Option<&str>) -> Endpoint {
    Endpoint {
        url: url.into(),
        token: token.map(String::from),
        proxy: None,
    }
}

fn fast() -> Settings {
    Settings {
        timeout: Duration::from_millis(400),
        retries: 3,
        backoff: Duration::from_millis(20),
        ..Settings::default()
    }
}

/// Sends one alert of `kind` and returns what the receiver got.
async fn received(kind: &str, severity: Severity, token: Option<&str>) -> Seen {
    let rx = Receiver::start(vec![]).await;
    let n = notifier(kind, endpoint(&rx.url, token), poster()).unwrap();
    let body = n.payload(&message(severity));
    let attempts = delivery::send(&client(), &fast(), n.endpoint(), &body)
        .await
        .unwrap();
    assert_eq!(attempts, 1);
    let seen = rx.seen();
    assert_eq!(seen.len(), 1, "{kind}: one request");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    seen[0].clone()
}

fn slack_like(color: &str) -> Value {
    json!({
        "channel": "deploys",
        "username": "flagger",
        "icon_url": "",
        "icon_emoji": ":rocket:",
        "attachments": [{
            "color": color,
            "author_name": "podinfo.test",
            "text": "New revision detected, progressing canary analysis.",
            "mrkdwn_in": ["text"],
            "fields": [
                {"title": "Cluster", "value": "prod-eu", "short": false},
                {"title": "Target", "value": "Deployment/podinfo.test", "short": false},
            ],
        }],
    })
}

#[tokio::test]
async fn slack_gets_flaggers_attachment_with_its_token() {
    let info = received("slack", Severity::Info, Some("xoxb-1")).await;
    assert_eq!(info.path, "/hook");
    assert_eq!(info.body, slack_like("good"));
    assert_eq!(info.header("authorization"), Some("Bearer xoxb-1"));
    let error = received("slack", Severity::Error, None).await;
    assert_eq!(error.body, slack_like("danger"));
    assert_eq!(error.header("authorization"), None);
}

#[tokio::test]
async fn discord_gets_slacks_payload_at_its_slack_endpoint_without_a_token() {
    let warn = received("discord", Severity::Warn, Some("xoxb-1")).await;
    assert_eq!(warn.path, "/hook/slack");
    assert_eq!(warn.body, slack_like("good"));
    assert_eq!(warn.header("authorization"), None, "Flagger sends no token");
    let error = received("discord", Severity::Error, None).await;
    assert_eq!(error.body, slack_like("danger"));
    // A hook that already ends in /slack is kept.
    let d = discord::Discord::new(endpoint("https://d.example/api/x/slack", None), poster());
    assert_eq!(d.endpoint().url, "https://d.example/api/x/slack");
}

#[tokio::test]
async fn rocket_gets_slacks_payload_with_hex_colours() {
    let info = received("rocket", Severity::Info, Some("t")).await;
    assert_eq!(info.body, slack_like("#0076D7"));
    assert_eq!(info.header("authorization"), None);
    let error = received("rocket", Severity::Error, None).await;
    assert_eq!(error.body, slack_like("#FF0000"));
}

#[tokio::test]
async fn msteams_gets_a_message_card() {
    let card = |color: &str| {
        json!({
            "@type": "MessageCard",
            "@context": "http://schema.org/extensions",
            "themeColor": color,
            "summary": "podinfo.test",
            "sections": [{
                "activityTitle": "New revision detected, progressing canary analysis.",
                "activitySubtitle": "podinfo.test",
                "facts": [
                    {"name": "Cluster", "value": "prod-eu"},
                    {"name": "Target", "value": "Deployment/podinfo.test"},
                ],
            }],
        })
    };
    assert_eq!(
        received("msteams", Severity::Warn, None).await.body,
        card("0076D7")
    );
    assert_eq!(
        received("msteams", Severity::Error, None).await.body,
        card("FF0000")
    );
}

#[tokio::test]
async fn gchat_gets_a_card_with_a_section_per_line() {
    let got = received("gchat", Severity::Error, None).await;
    assert_eq!(
        got.body,
        json!({
            "cards": [{
                "header": {
                    "title": "Flagger",
                    "subtitle": "podinfo.test",
                    "imageUrl": "https://flagger.app/favicon.png",
                },
                "sections": [
                    {"widgets": [{"textParagraph": {"text": "<font color=#848484><strong>New revision detected, progressing canary analysis.</strong></font>"}}]},
                    {"widgets": [{"textParagraph": {"text": "Cluster<br><font color=#848484><strong>prod-eu</strong></font>"}}]},
                    {"widgets": [{"textParagraph": {"text": "Target<br><font color=#848484><strong>Deployment/podinfo.test</strong></font>"}}]},
                ],
            }],
        })
    );
}

#[test]
fn bad_provider_settings_are_refused_without_repeating_the_url() {
    let refused = |kind: &str, url: &str, poster: Poster| {
        notifier(kind, endpoint(url, None), poster).unwrap_err()
    };
    let e = refused("slack", "hooks.slack.com/services/SECRET", poster());
    assert!(e.starts_with("not a URL"), "{e}");
    assert!(!e.contains("SECRET"), "{e}");
    let e = refused("msteams", "ftp://x/SECRET", poster());
    assert!(e.contains("scheme `ftp`") && !e.contains("SECRET"), "{e}");
    let nobody = Poster {
        username: "flagger".into(),
        channel: String::new(),
    };
    assert_eq!(
        refused("slack", "https://x", nobody.clone()),
        "empty slack channel"
    );
    // Teams and Google Chat have no channel.
    assert!(notifier("msteams", endpoint("https://x", None), nobody.clone()).is_ok());
    assert!(notifier("gchat", endpoint("https://x", None), nobody).is_ok());
    let e = refused("pagerduty", "https://x", poster());
    assert!(e.contains("slack, msteams, discord, rocket, gchat"), "{e}");
}

#[test]
fn severity_filter_is_flaggers() {
    use Severity::*;
    // Flagger's `shouldAlert`: an info alert gets everything; otherwise the
    // same severity, and error also goes to warn.
    let flagger = |sent: Severity, wanted: Severity| {
        wanted == Info || sent == wanted || (sent == Error && wanted == Warn)
    };
    let mut sent_to = Vec::new();
    for sent in [Info, Warn, Error] {
        for wanted in [Info, Warn, Error] {
            assert_eq!(
                reaches(sent, wanted),
                flagger(sent, wanted),
                "{sent:?} to {wanted:?}"
            );
            if reaches(sent, wanted) {
                sent_to.push((sent, wanted));
            }
        }
    }
    assert_eq!(
        sent_to,
        [
            (Info, Info),
            (Warn, Info),
            (Warn, Warn),
            (Error, Info),
            (Error, Warn),
            (Error, Error)
        ]
    );
}

#[tokio::test]
async fn connection_errors_429_and_5xx_are_retried_until_one_succeeds() {
    let rx = Receiver::start(vec![Some(503), Some(429), Some(500)]).await;
    let body = json!({"text": "x"});
    let attempts = delivery::send(&client(), &fast(), &endpoint(&rx.url, None), &body)
        .await
        .unwrap();
    assert_eq!(attempts, 4);
    assert_eq!(rx.seen().len(), 4);
    // A 4xx other than 429 is the request's fault: not retried.
    let rx = Receiver::start(vec![Some(400)]).await;
    let e = delivery::send(&client(), &fast(), &endpoint(&rx.url, None), &body)
        .await
        .unwrap_err();
    assert!(e.starts_with("bad response 400"), "{e}");
    assert_eq!(rx.seen().len(), 1);
    // Out of retries: the last answer says why.
    let rx = Receiver::start(vec![Some(502); 10]).await;
    let e = delivery::send(&client(), &fast(), &endpoint(&rx.url, None), &body)
        .await
        .unwrap_err();
    assert!(
        e.starts_with("giving up after 4 attempts: bad response 502"),
        "{e}"
    );
}

/// A port nothing listens on.
async fn refused_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/hook")
}

fn post(n: Box<dyn Notifier>, m: &Message) -> Post {
    let body = n.payload(m);
    Post {
        notifier: Arc::from(n),
        body,
        canary: m.id(),
        provider: "test".into(),
    }
}

#[tokio::test]
async fn a_dead_receiver_costs_at_most_the_timeout_and_never_the_caller() {
    let settings = fast();
    let m = message(Severity::Info);
    let msteams = |url: &str| notifier("msteams", endpoint(url, None), poster()).unwrap();

    // Connection refused: retried with backoff, then given up, well within
    // one timeout (nothing to wait for).
    let refused = refused_url().await;
    let started = Instant::now();
    let e = delivery::send(&client(), &settings, &endpoint(&refused, None), &json!({}))
        .await
        .unwrap_err();
    let spent = started.elapsed();
    assert!(e.starts_with("giving up after 4 attempts"), "{e}");
    assert!(!e.contains(&refused), "no URL in errors: {e}");
    assert!(spent < settings.timeout, "refused: {spent:?}");

    // Accepts and never answers: given up after one timeout, not retried.
    let blackhole = Receiver::start(vec![None; 10]).await;
    let started = Instant::now();
    let e = delivery::send(
        &client(),
        &settings,
        &endpoint(&blackhole.url, None),
        &json!({}),
    )
    .await
    .unwrap_err();
    let spent = started.elapsed();
    assert!(e.starts_with("no answer within"), "{e}");
    assert!(
        spent >= settings.timeout && spent < settings.timeout + Duration::from_millis(300),
        "blackhole: {spent:?}"
    );
    assert_eq!(*blackhole.accepted.lock().unwrap(), 1, "not retried");

    // Through the queue: the caller returns at once, and the live receiver
    // queued after both dead ones gets its alert before the timeout.
    rustls();
    let delivery = Delivery::new(settings.clone());
    let live = Receiver::start(vec![]).await;
    let started = Instant::now();
    assert!(delivery.enqueue(post(msteams(&blackhole.url), &m)));
    assert!(delivery.enqueue(post(msteams(&refused), &m)));
    assert!(delivery.enqueue(post(msteams(&live.url), &m)));
    let enqueued = started.elapsed();
    assert!(
        enqueued < Duration::from_millis(50),
        "enqueue took {enqueued:?}"
    );
    let got = live.wait_for(1, Duration::from_secs(5)).await;
    let delivered = started.elapsed();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body["summary"], "podinfo.test");
    assert!(
        delivered < settings.timeout,
        "the live receiver waited for a dead one: {delivered:?}"
    );
    println!("enqueue of 3: {enqueued:?}; live receiver served after {delivered:?}");
}

#[tokio::test]
async fn a_full_lane_drops_instead_of_waiting() {
    rustls();
    let delivery = Delivery::new(Settings {
        lane_capacity: 1,
        ..fast()
    });
    let blackhole = Receiver::start(vec![None; 10]).await;
    let m = message(Severity::Info);
    let n = || notifier("slack", endpoint(&blackhole.url, None), poster()).unwrap();
    assert!(delivery.enqueue(post(n(), &m)));
    // The first is in flight, stuck on the receiver.
    let until = Instant::now() + Duration::from_secs(5);
    while *blackhole.accepted.lock().unwrap() == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(delivery.enqueue(post(n(), &m)), "one waits in the lane");
    let started = Instant::now();
    assert!(!delivery.enqueue(post(n(), &m)), "the third is dropped");
    assert!(started.elapsed() < Duration::from_millis(50));
}

#[tokio::test]
async fn alerts_of_one_destination_arrive_in_order_after_retries() {
    rustls();
    let delivery = Delivery::new(fast());
    let rx = Receiver::start(vec![Some(503), Some(503)]).await;
    for text in ["first", "second", "third"] {
        let m = Message {
            text: text.into(),
            ..message(Severity::Info)
        };
        assert!(delivery.enqueue(post(
            notifier("msteams", endpoint(&rx.url, None), poster()).unwrap(),
            &m
        )));
    }
    let got = rx.wait_for(5, Duration::from_secs(5)).await;
    let texts: Vec<&str> = got
        .iter()
        .map(|s| {
            s.body["sections"][0]["activityTitle"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(texts, ["first", "first", "first", "second", "third"]);
}

#[test]
fn a_steps_alerts_are_handed_over_once() {
    let once = alerts::Once::default();
    assert!(once.first("uid-a", "t1", "3/Canary is waiting for approval."));
    assert!(!once.first("uid-a", "t1", "3/Canary is waiting for approval."));
    assert!(once.first("uid-a", "t1", "4/other"));
    assert!(once.first("uid-b", "t1", "3/Canary is waiting for approval."));
    // The next step forgets the last one's.
    assert!(once.first("uid-a", "t2", "3/Canary is waiting for approval."));
    assert!(!once.first("uid-a", "t2", "3/Canary is waiting for approval."));
}

#[test]
fn messages_carry_the_cluster_and_flaggers_metadata_where_flagger_has_it() {
    use crate::core::messages::alert;
    use crate::operator::status::{AlertSeverity, PendingAlert};
    let yaml = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: podinfo, namespace: test}\nspec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n  service: {port: 9898}\n  analysis: {interval: 1m, threshold: 5, maxWeight: 50, stepWeight: 10}\n";
    let canary: crate::api::Canary = crate::api::yaml::from_str(yaml).unwrap();
    let r = crate::api::validate(&canary).unwrap().rollout;
    let pending = |text: &str| PendingAlert {
        severity: AlertSeverity::Info,
        message: text.into(),
        muted: false,
    };
    let progressing = alerts::Standing {
        phase: fledge_policy::Phase::Progressing,
        canary_weight: 0,
    };
    let m = alerts::message(
        &r,
        "Deployment",
        Some("prod"),
        &pending(alert::NEW_REVISION),
        progressing,
    );
    assert_eq!(m.id(), "podinfo.test");
    assert_eq!(
        m.fields,
        [
            Field::new("Cluster", "prod"),
            Field::new("Target", "Deployment/podinfo.test"),
            Field::new("Failed checks threshold", "5"),
            Field::new("Progress deadline", "600s"),
            Field::new("Traffic routing", "Weight step: 10 max: 50"),
            Field::new("Phase", "Progressing"),
            Field::new("Canary weight", "0%"),
        ]
    );
    let waiting = alerts::Standing {
        phase: fledge_policy::Phase::WaitingPromotion,
        canary_weight: 50,
    };
    let m = alerts::message(
        &r,
        "Deployment",
        None,
        &pending(alert::WAITING_PROMOTION),
        waiting,
    );
    assert_eq!(
        m.fields,
        [
            Field::new("Phase", "WaitingPromotion"),
            Field::new("Canary weight", "50%"),
        ]
    );
    let mut steps = r.clone();
    steps.analysis.step_weight = None;
    steps.analysis.step_weights = vec![1, 10, 80];
    assert_eq!(
        metadata(&steps, "Deployment").last(),
        Some(&Field::new(
            "Traffic routing",
            "Weight steps: 1,10,80 max: 50"
        ))
    );
    let mut ab = r;
    ab.strategy = Strategy::AbTesting;
    assert_eq!(
        metadata(&ab, "Deployment").last(),
        Some(&Field::new("Traffic routing", "A/B Testing"))
    );
}

#[test]
fn the_global_notifier_is_teams_over_slack_and_slack_needs_a_channel() {
    use crate::operator::Notifiers;
    let none = alerts::global(&Notifiers::default()).unwrap();
    assert!(none.is_none());
    let both = alerts::global(&Notifiers {
        slack_url: Some("https://hooks.slack.com/x".into()),
        slack_channel: Some("deploys".into()),
        msteams_url: Some("https://teams.example/x".into()),
        ..Default::default()
    })
    .unwrap()
    .unwrap();
    assert_eq!(both.kind(), "msteams");
    let slack = alerts::global(&Notifiers {
        slack_url: Some("https://hooks.slack.com/x".into()),
        slack_channel: Some("deploys".into()),
        slack_proxy_url: Some("http://proxy:3128".into()),
        ..Default::default()
    })
    .unwrap()
    .unwrap();
    assert_eq!(
        (slack.kind(), slack.endpoint().proxy.as_deref()),
        ("slack", Some("http://proxy:3128"))
    );
    let e = alerts::global(&Notifiers {
        slack_url: Some("https://hooks.slack.com/x".into()),
        ..Default::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(e.starts_with("--slack-channel: missing"), "{e}");
}
