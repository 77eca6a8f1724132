//! Load tests that must reach the canary through the gateway.
//!
//! Under App Mesh the load tester's requests to `http://podinfo-canary.test:9898`
//! or the apex `http://podinfo.test:9898` went through the mesh, which
//! split them and counted them in the sidecars' metrics. Under Gateway API
//! only requests through the gateway are split and counted, so a rollout
//! load test is pointed at the gateway, with the route's host as `Host`.
use anyhow::bail;
use regex::Regex;
use std::sync::LazyLock;

static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(https?)://([A-Za-z0-9.-]+)(:[0-9]+)?(/[^\s'"]*)?"#).expect("valid regex")
});

/// What became of one webhook command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Nothing in it reaches the Canary's Services.
    Unchanged,
    /// Rewritten to go through the gateway.
    Rewritten(String),
    /// It reaches the Canary's Services, but could not be rewritten: why.
    Report(String),
}

/// `--gateway-address`: an http(s) URL with a host and no path.
pub fn check_address(address: &str) -> anyhow::Result<()> {
    let ok = reqwest::Url::parse(address).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some()
            && matches!(u.path(), "" | "/")
            && u.query().is_none()
    });
    if ok.is_none() {
        bail!(
            "--gateway-address {address:?} is not an http(s) URL of the gateway: give its scheme, \
             host and port only, e.g. --gateway-address http://gateway.gateway-system"
        );
    }
    Ok(())
}

/// Whether `host` names one of the Canary's Services (apex, canary or
/// primary) by a name the load tester could resolve.
fn is_canary_service(host: &str, apex: &str, namespace: &str) -> bool {
    let (first, rest) = host.split_once('.').unwrap_or((host, ""));
    let service =
        first == apex || first == format!("{apex}-canary") || first == format!("{apex}-primary");
    let suffixes = [
        String::new(),
        namespace.to_string(),
        format!("{namespace}.svc"),
        format!("{namespace}.svc.cluster.local"),
    ];
    service && suffixes.iter().any(|s| s == rest)
}

/// Rewrites the URLs of `cmd` that reach the Canary's Services to
/// `address` with `Host: host`, for the tools whose Host flag is known.
pub fn rewrite(
    cmd: &str,
    apex: &str,
    namespace: &str,
    host: &str,
    address: Option<&str>,
) -> Rewrite {
    let hits: Vec<regex::Captures> = URL
        .captures_iter(cmd)
        .filter(|c| is_canary_service(&c[2], apex, namespace))
        .collect();
    let Some(first) = hits.first() else {
        return Rewrite::Unchanged;
    };
    let direct = first[0].to_string();
    let Some(address) = address else {
        return Rewrite::Report(format!(
            "the load test calls {direct} directly; under Gateway API only requests through \
             the gateway are split and measured: pass --gateway-address, or call the gateway \
             with the header Host: {host}"
        ));
    };
    let tool = cmd
        .split_whitespace()
        .next()
        .map(|t| t.rsplit('/').next().unwrap_or(t))
        .unwrap_or_default();
    let flag = match tool {
        "hey" => format!("-host {host} "),
        "curl" => format!("-H 'Host: {host}' "),
        other => {
            return Rewrite::Report(format!(
                "the load test calls {direct} directly with {other:?}, whose Host flag is not \
                 known here: call {address} with the header Host: {host} instead"
            ))
        }
    };
    let lower = cmd.to_ascii_lowercase();
    if lower.contains("-host ") || lower.contains("host:") {
        return Rewrite::Report(format!(
            "the load test calls {direct} and already sets a Host header: call {address} with \
             Host: {host} instead"
        ));
    }
    let base = address.trim_end_matches('/');
    let mut out = String::with_capacity(cmd.len() + flag.len() + base.len());
    let mut last = 0;
    for c in &hits {
        let m = c.get(0).expect("whole match");
        // A quoted URL gets the flag before its opening quote.
        let quoted = cmd[..m.start()].ends_with(['\'', '"']);
        let at = if quoted { m.start() - 1 } else { m.start() };
        out.push_str(&cmd[last..at]);
        out.push_str(&flag);
        out.push_str(&cmd[at..m.start()]);
        out.push_str(base);
        out.push_str(c.get(4).map_or("/", |p| p.as_str()));
        last = m.end();
    }
    out.push_str(&cmd[last..]);
    Rewrite::Rewritten(out)
}
