//! The bytes of a policy object's component: built in, from a ConfigMap's
//! `binaryData`, or over http(s); checked against the pinned sha256 before
//! anything compiles them.
use crate::api::policy::Source;
use crate::policy::digest;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::Client;
use std::time::Duration;

/// How long fetching a component over http(s) may take, all of it.
pub const URL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the bytes could not be had; `reason` is the condition's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchError {
    pub reason: &'static str,
    pub message: String,
}

fn fail(reason: &'static str, message: String) -> FetchError {
    FetchError { reason, message }
}

/// The component `source` names. `namespace` holds its ConfigMap; `max_bytes`
/// bounds what is read.
pub async fn fetch(
    client: &Client,
    http: &reqwest::Client,
    namespace: &str,
    source: &Source,
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let (bytes, pinned) = match source {
        Source::Builtin(name) => {
            return crate::policy::builtin_component(name)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| fail("InvalidSpec", format!("`{name}` is not a built-in policy")))
        }
        Source::ConfigMap { name, key, sha256 } => (
            from_config_map(client, namespace, name, key, max_bytes).await?,
            sha256.as_deref(),
        ),
        Source::Url { url, sha256 } => (from_url(http, url, max_bytes).await?, Some(&**sha256)),
    };
    if let Some(want) = pinned {
        let got = digest(&bytes);
        if got.strip_prefix("sha256:") != Some(want) {
            return Err(fail(
                "DigestMismatch",
                format!(
                    "the component's sha256 is {got}, not sha256:{want} as spec.sha256 says: fix spec.sha256 or the component"
                ),
            ));
        }
    }
    Ok(bytes)
}

async fn from_config_map(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api
        .get_opt(name)
        .await
        .map_err(|e| {
            fail(
                "FetchFailed",
                format!("reading ConfigMap {namespace}/{name}: {e}"),
            )
        })?
        .ok_or_else(|| {
            fail(
                "FetchFailed",
                format!("ConfigMap {namespace}/{name} (spec.configMap.name) does not exist"),
            )
        })?;
    if let Some(b) = cm.binary_data.as_ref().and_then(|d| d.get(key)) {
        if b.0.len() > max_bytes {
            return Err(fail(
                "TooLarge",
                format!(
                    "ConfigMap {namespace}/{name} key {key} holds {} bytes, more than the {max_bytes} a component may have",
                    b.0.len()
                ),
            ));
        }
        return Ok(b.0.clone());
    }
    let problem = if cm.data.as_ref().is_some_and(|d| d.contains_key(key)) {
        "is under data, not binaryData: create the ConfigMap with `kubectl create configmap NAME --from-file=KEY=policy.wasm`"
    } else {
        "is not in its binaryData (spec.configMap.key)"
    };
    Err(fail(
        "FetchFailed",
        format!("key {key} of ConfigMap {namespace}/{name} {problem}"),
    ))
}

async fn from_url(
    http: &reqwest::Client,
    url: &str,
    max_bytes: usize,
) -> Result<Vec<u8>, FetchError> {
    let failed = |e: String| fail("FetchFailed", format!("fetching {url}: {e}"));
    let mut resp = http
        .get(url)
        .timeout(URL_TIMEOUT)
        .send()
        .await
        .map_err(|e| failed(causes(&e)))?;
    if !resp.status().is_success() {
        return Err(failed(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| failed(causes(&e)))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(fail(
                "TooLarge",
                format!("{url} is larger than the {max_bytes} bytes a component may have"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error with its causes, one after another.
fn causes(e: &reqwest::Error) -> String {
    let mut out = vec![e.to_string()];
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let text = cause.to_string();
        if !out.iter().any(|t| t.contains(&text)) {
            out.push(text);
        }
        src = cause.source();
    }
    if e.is_timeout() {
        out.push(format!("no answer within {URL_TIMEOUT:?}"));
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::testserver::{reply, serve};

    #[tokio::test]
    async fn a_url_is_fetched_bounded_and_verified_before_anything_compiles_it() {
        let server = serve(vec![
            reply(200, "application/wasm", "component"),
            reply(200, "application/wasm", "component"),
            reply(200, "application/wasm", "a component too large"),
            reply(404, "text/plain", "gone"),
        ]);
        let url = format!("{}/policy.wasm", server.url);
        // Never contacted: a URL source reads no ConfigMap.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let http = reqwest::Client::new();
        let sha = |b: &[u8]| digest(b).trim_start_matches("sha256:").to_string();
        let source = |sha256: String| Source::Url {
            url: url.clone(),
            sha256,
        };

        let got = fetch(&client, &http, "ns", &source(sha(b"component")), 64).await;
        assert_eq!(got.unwrap(), b"component");

        let wrong = "0".repeat(64);
        let e = fetch(&client, &http, "ns", &source(wrong.clone()), 64)
            .await
            .unwrap_err();
        assert_eq!(e.reason, "DigestMismatch");
        assert!(
            e.message.contains(&digest(b"component")) && e.message.contains(&wrong),
            "{}",
            e.message
        );

        let e = fetch(&client, &http, "ns", &source(sha(b"x")), 10)
            .await
            .unwrap_err();
        assert_eq!(e.reason, "TooLarge", "{}", e.message);

        let e = fetch(&client, &http, "ns", &source(sha(b"x")), 64)
            .await
            .unwrap_err();
        assert_eq!(e.reason, "FetchFailed");
        assert!(e.message.contains("HTTP 404"), "{}", e.message);
        assert_eq!(server.requests().len(), 4);
    }
}
