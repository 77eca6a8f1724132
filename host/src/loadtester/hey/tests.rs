use super::*;

fn err(cmd: &str) -> String {
    format!("{:#}", Hey::parse(cmd).unwrap_err())
}

#[test]
fn the_guides_load_tests_parse_with_heys_meaning() {
    let h = Hey::parse("hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/").unwrap();
    assert_eq!(h.duration, Some(Duration::from_secs(60)));
    assert_eq!((h.qps, h.workers), (10.0, 2));
    assert_eq!(h.url, "http://podinfo-canary.test:9898/");
    let ab = Hey::parse("hey -z 1m -q 10 -c 2 -H 'Cookie: canary=insider' -H \"X-Canary: insider\" http://podinfo.test:9898/").unwrap();
    assert_eq!(
        ab.headers,
        vec![
            ("Cookie".to_string(), "canary=insider".to_string()),
            ("X-Canary".to_string(), "insider".to_string())
        ]
    );
}

#[test]
fn defaults_are_heys() {
    let h = Hey::parse("hey http://a.test/").unwrap();
    assert_eq!(
        (h.requests, h.workers, h.qps, h.duration),
        (200, 50, 0.0, None)
    );
    assert_eq!(h.timeout, Some(Duration::from_secs(20)));
    assert_eq!(
        (h.method.as_str(), h.content_type.as_str()),
        ("GET", "text/html")
    );
}

#[test]
fn go_flag_forms_and_every_value_flag() {
    let h = Hey::parse(
        "hey -n=30 --c 3 -m post -d '{\"a\": 1}' -T application/json -A text/plain -t 0 \
         -a user:pass -host podinfo.test -disable-keepalive -disable-redirects=true -cpus 2 \
         https://a.test/x?y=1",
    )
    .unwrap();
    assert_eq!((h.requests, h.workers), (30, 3));
    assert_eq!(h.method, "POST");
    assert_eq!(h.body.as_deref(), Some("{\"a\": 1}"));
    assert_eq!(h.content_type, "application/json");
    assert_eq!(h.accept.as_deref(), Some("text/plain"));
    assert_eq!(h.timeout, None, "-t 0 is no timeout");
    assert_eq!(h.basic_auth, Some(("user".into(), "pass".into())));
    assert_eq!(h.host.as_deref(), Some("podinfo.test"));
    assert!(h.disable_keepalive && h.disable_redirects);
    assert_eq!(h.url, "https://a.test/x?y=1");
}

#[test]
fn errors_name_the_flag() {
    assert!(
        err("hey -z ten http://a/").starts_with("-z: "),
        "{}",
        err("hey -z ten http://a/")
    );
    assert!(err("hey -q fast http://a/").starts_with("-q: "));
    assert!(err("hey -q -1 http://a/").starts_with("-q: "));
    assert!(err("hey -c x http://a/").starts_with("-c: "));
    assert!(err("hey -n 1.5 http://a/").starts_with("-n: "));
    assert!(err("hey -t 2s http://a/").starts_with("-t: "));
    assert!(err("hey -H nocolon http://a/").starts_with("-H: "));
    assert!(err("hey -a nopass http://a/").starts_with("-a: "));
    assert!(err("hey -h2 http://a/").starts_with("-h2: "));
    assert!(err("hey -o csv http://a/").starts_with("-o csv: "));
    assert!(err("hey -x proxy:1 http://a/").starts_with("-x: "));
    assert_eq!(err("hey -z"), "flag needs an argument: -z");
    assert!(err("hey -k http://a/").starts_with("flag provided but not defined: -k"));
    assert_eq!(
        err("hey -n 10 -c 20 http://a/"),
        "-n cannot be less than -c (-n 10 and -c 20)"
    );
    assert_eq!(
        err("hey -c 0 -z 1s http://a/"),
        "-c cannot be smaller than 1"
    );
    assert_eq!(err("hey -n 0 http://a/"), "-n cannot be smaller than 1");
    // -z overrides -n, so -n below -c is fine with a duration.
    assert!(Hey::parse("hey -z 1s -n 1 -c 5 http://a/").is_ok());
}

#[test]
fn the_url_is_checked_and_flags_go_before_it() {
    assert!(err("hey -z 1s").contains("no URL"));
    assert!(err("hey ftp://a/").contains("scheme ftp"));
    assert!(err("hey not-a-url").contains("URL \"not-a-url\""));
    let e = err("hey http://a/ -z 1s");
    assert!(e.contains("`-z` after the URL"), "{e}");
}

#[test]
fn shell_syntax_is_refused_by_name() {
    let e = err("hey -z 1s http://a/ | tail -5");
    assert!(
        e.contains("`|` is shell syntax") && e.contains("--allow-shell"),
        "{e}"
    );
    assert!(err("hey -z 1s $URL").contains("`$`"));
    assert_eq!(
        split_words("hey 'a b' c\\ d \"e\\\"f\"").unwrap(),
        ["hey", "a b", "c d", "e\"f"]
    );
    assert_eq!(
        split_words("hey http://a/?q=1#x").unwrap(),
        ["hey", "http://a/?q=1#x"]
    );
    assert!(is_hey("  hey -z 1s http://a/") && !is_hey("heyo") && !is_hey("curl hey"));
}

#[test]
fn percentiles_are_heys_first_latency_past_each() {
    let r = Report {
        latencies: (1..=100).rev().map(|i| i as f64 / 1000.0).collect(),
        latency_sum: 5.05,
        answered: 100,
        count: 100,
        total: Duration::from_secs(10),
        statuses: [(200, 99), (500, 1)].into(),
        ..Default::default()
    };
    assert_eq!(r.percentiles()[2], (50, 0.051));
    assert_eq!(r.percentiles()[6], (99, 0.1));
    assert_eq!(r.percentile(50), 0.05);
    assert_eq!(r.percentile(99), 0.099);
    // Nine samples never reach hey's 90 % row; the summary line still has a p90.
    let few = Report {
        latencies: (1..=9).map(|i| i as f64).collect(),
        ..Default::default()
    };
    assert_eq!(few.percentiles().len(), 4, "10, 25, 50 and 75 %");
    assert_eq!(few.percentile(90), 9.0);
    assert!((r.average() - 0.0505).abs() < 1e-9);
    assert_eq!(r.rps(), 10.0);
    let text = r.text();
    assert!(
        text.contains("Status code distribution:\n  [200]\t99 responses\n  [500]\t1 responses"),
        "{text}"
    );
    assert!(text.contains("  50% in 0.0510 secs"), "{text}");
    assert!(
        r.line().contains("status codes [200] 99 [500] 1"),
        "{}",
        r.line()
    );
}
