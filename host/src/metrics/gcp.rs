//! Google OAuth2 access tokens: Application Default Credentials, or a
//! service-account key given directly (the `serviceAccountKey` of a
//! stackdriver template's Secret).
//!
//! ADC's order: the JSON file `GOOGLE_APPLICATION_CREDENTIALS` names; the
//! gcloud file (`$CLOUDSDK_CONFIG` or `~/.config/gcloud`)
//! `application_default_credentials.json`; the metadata server (GCE, or GKE
//! Workload Identity), whose host `GCE_METADATA_HOST` overrides. A JSON file
//! is a `service_account` key (a self-signed RS256 JWT exchanged at its
//! `token_uri`) or `authorized_user` (a refresh token). Tokens are cached
//! until [`REFRESH_BEFORE`] their expiry.
use super::env::Env;
use base64::Engine;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What Cloud Monitoring queries need, and no more.
pub const SCOPE: &str = "https://www.googleapis.com/auth/monitoring.read";
pub const REFRESH_BEFORE: Duration = Duration::from_secs(60);
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const METADATA_HOST: &str = "metadata.google.internal";
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
/// A JWT assertion's lifetime: Google accepts at most an hour.
const ASSERTION_LIFETIME: u64 = 3600;
const TIMEOUT: Duration = Duration::from_secs(10);

enum Kind {
    ServiceAccount {
        email: String,
        key_id: Option<String>,
        key: Box<RsaKeyPair>,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    Metadata {
        host: String,
    },
}

/// One source of access tokens and its cache.
pub struct Tokens {
    kind: Kind,
    cache: tokio::sync::Mutex<Option<(String, SystemTime)>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({})", self.describe())
    }
}

#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "type")]
    type_: Option<String>,
    client_email: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

impl Tokens {
    fn new(kind: Kind) -> Tokens {
        Tokens {
            kind,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// A credentials JSON (`service_account` or `authorized_user`); `what`
    /// names where it came from, for errors.
    pub fn from_json(json: &[u8], what: &str) -> Result<Tokens, String> {
        let f: CredentialsFile = serde_json::from_slice(json)
            .map_err(|e| format!("{what} is not a Google credentials JSON: {e}"))?;
        let need = |v: Option<String>, field: &str| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{what} has no `{field}`"))
        };
        let token_uri = f
            .token_uri
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
        match f.type_.as_deref() {
            Some("service_account") => {
                let pem = need(f.private_key, "private_key")?;
                let key = rsa_key(&pem).map_err(|e| format!("{what}: private_key: {e}"))?;
                Ok(Tokens::new(Kind::ServiceAccount {
                    email: need(f.client_email, "client_email")?,
                    key_id: f.private_key_id.filter(|k| !k.is_empty()),
                    key: Box::new(key),
                    token_uri,
                }))
            }
            Some("authorized_user") => Ok(Tokens::new(Kind::AuthorizedUser {
                client_id: need(f.client_id, "client_id")?,
                client_secret: need(f.client_secret, "client_secret")?,
                refresh_token: need(f.refresh_token, "refresh_token")?,
                token_uri,
            })),
            Some(other) => Err(format!(
                "{what} has credentials of type `{other}`, which Fledge does not read: use a \
                 `service_account` key, or Workload Identity (the metadata server)"
            )),
            None => Err(format!("{what} has no `type`")),
        }
    }

    pub fn metadata(env: &Env) -> Tokens {
        let host = env
            .get("GCE_METADATA_HOST")
            .unwrap_or(METADATA_HOST)
            .trim()
            .to_string();
        Tokens::new(Kind::Metadata { host })
    }

    /// Application Default Credentials as `env` finds them.
    pub fn adc(env: &Env) -> Result<Tokens, String> {
        if let Some(path) = env.get("GOOGLE_APPLICATION_CREDENTIALS") {
            let json = std::fs::read(path)
                .map_err(|e| format!("reading GOOGLE_APPLICATION_CREDENTIALS {path}: {e}"))?;
            return Tokens::from_json(&json, &format!("GOOGLE_APPLICATION_CREDENTIALS {path}"));
        }
        let gcloud = env
            .get("CLOUDSDK_CONFIG")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                env.get("HOME")
                    .map(|h| std::path::Path::new(h).join(".config/gcloud"))
            });
        if let Some(file) = gcloud.map(|d| d.join("application_default_credentials.json")) {
            if let Ok(json) = std::fs::read(&file) {
                return Tokens::from_json(&json, &file.display().to_string());
            }
        }
        Ok(Tokens::metadata(env))
    }

    /// Where tokens come from, for messages.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::ServiceAccount { email, .. } => format!("service account {email}"),
            Kind::AuthorizedUser { client_id, .. } => format!("authorized user of {client_id}"),
            Kind::Metadata { host } => format!("the metadata server {host}"),
        }
    }

    /// An access token valid at `now`, from the cache or a fresh exchange.
    pub async fn token(&self, http: &reqwest::Client, now: SystemTime) -> Result<String, String> {
        let mut cache = self.cache.lock().await;
        if let Some((token, _)) = cache
            .as_ref()
            .filter(|(_, exp)| now + REFRESH_BEFORE < *exp)
        {
            return Ok(token.clone());
        }
        let (token, expires_in) = self
            .fetch(http, now)
            .await
            .map_err(|e| format!("Google access token from {}: {e}", self.describe()))?;
        *cache = Some((token.clone(), now + Duration::from_secs(expires_in)));
        Ok(token)
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        now: SystemTime,
    ) -> Result<(String, u64), String> {
        let req = match &self.kind {
            Kind::ServiceAccount {
                email,
                key_id,
                key,
                token_uri,
            } => {
                let jwt = assertion(key, key_id.as_deref(), email, token_uri, now)?;
                form_post(
                    http,
                    token_uri,
                    &[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                        ("assertion", &jwt),
                    ],
                )
            }
            Kind::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => form_post(
                http,
                token_uri,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("client_secret", client_secret),
                    ("refresh_token", refresh_token),
                ],
            ),
            Kind::Metadata { host } => http
                .get(format!("http://{host}{TOKEN_PATH}"))
                .header("metadata-flavor", "Google"),
        };
        let resp = req
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| match &self.kind {
                Kind::Metadata { .. } => format!(
                    "{e}; without the metadata server, set GOOGLE_APPLICATION_CREDENTIALS to a \
                 service-account key file or put the key in the template Secret's \
                 `serviceAccountKey`"
                ),
                _ => e.to_string(),
            })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: Option<String>,
            expires_in: Option<u64>,
            error: Option<String>,
            error_description: Option<String>,
        }
        let answer: Option<TokenAnswer> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let why = match answer {
                Some(TokenAnswer {
                    error: Some(e),
                    error_description,
                    ..
                }) => match error_description {
                    Some(d) => format!("{e}: {d}"),
                    None => e,
                },
                _ => text.trim().to_string(),
            };
            return Err(format!("answered {}: {why}", status.as_u16()));
        }
        match answer {
            Some(TokenAnswer {
                access_token: Some(t),
                expires_in,
                ..
            }) if !t.is_empty() => Ok((t, expires_in.unwrap_or(3600))),
            _ => Err(format!("the answer has no access_token: {}", text.trim())),
        }
    }
}

fn form_post(http: &reqwest::Client, url: &str, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
    http.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(super::aws::form(pairs))
}

/// The RS256 JWT a service account signs for the token endpoint.
pub fn assertion(
    key: &RsaKeyPair,
    key_id: Option<&str>,
    email: &str,
    token_uri: &str,
    now: SystemTime,
) -> Result<String, String> {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?
        .as_secs();
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = key_id {
        header["kid"] = kid.into();
    }
    let claims = serde_json::json!({
        "iss": email,
        "scope": SCOPE,
        "aud": token_uri,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME,
    });
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| "RS256 signing failed")?;
    Ok(format!("{signing_input}.{}", b64.encode(sig)))
}

/// An RSA private key from PEM: PKCS#8 (`PRIVATE KEY`, as Google writes
/// keys) or PKCS#1 (`RSA PRIVATE KEY`).
pub fn rsa_key(pem: &str) -> Result<RsaKeyPair, String> {
    let block = |label: &str| {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = pem.find(&begin)? + begin.len();
        let stop = pem[start..].find(&end)? + start;
        Some(pem[start..stop].split_whitespace().collect::<String>())
    };
    let decode = |b64: String| {
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("not base64: {e}"))
    };
    if let Some(b) = block("PRIVATE KEY") {
        return RsaKeyPair::from_pkcs8(&decode(b)?).map_err(|e| format!("not an RSA key: {e}"));
    }
    if let Some(b) = block("RSA PRIVATE KEY") {
        return RsaKeyPair::from_der(&decode(b)?).map_err(|e| format!("not an RSA key: {e}"));
    }
    Err("no PEM `PRIVATE KEY` block".into())
}

/// The process's ADC, found on first use. An error is not kept, so a key
/// file mounted later is found.
pub fn shared_adc() -> Result<Arc<Tokens>, String> {
    static ADC: Mutex<Option<Arc<Tokens>>> = Mutex::new(None);
    let mut adc = ADC.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = adc.as_ref() {
        return Ok(t.clone());
    }
    let t = Arc::new(Tokens::adc(&Env::process())?);
    *adc = Some(t.clone());
    Ok(t)
}

/// The tokens of one Secret's key, shared by every query that uses it.
pub fn shared_key(json: &[u8], what: &str) -> Result<Arc<Tokens>, String> {
    static KEYS: OnceLock<Mutex<HashMap<[u8; 32], Arc<Tokens>>>> = OnceLock::new();
    let id: [u8; 32] = Sha256::digest(json).into();
    let keys = KEYS.get_or_init(Default::default);
    let mut keys = keys.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = keys.get(&id) {
        return Ok(t.clone());
    }
    let t = Arc::new(Tokens::from_json(json, what)?);
    // Rotated keys leave old entries behind; a bound keeps that small.
    if keys.len() >= 64 {
        keys.clear();
    }
    keys.insert(id, t.clone());
    Ok(t)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metrics::testserver::{clients, Answering as Server};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    pub const TEST_KEY: &str = include_str!("testdata/test-service-account.pk8.pem");
    const TEST_PUBLIC_KEY: &[u8] = include_bytes!("testdata/test-service-account.pub.pkcs1.der");
    /// 2015-08-30T12:36:00Z.
    pub const NOW: u64 = 1_440_938_160;

    pub fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A service-account key file as the Cloud console writes it.
    pub fn key_json(token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "my-project",
            "private_key_id": "0123456789abcdef",
            "private_key": TEST_KEY,
            "client_email": "flagger@my-project.iam.gserviceaccount.com",
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        })
        .to_string()
    }

    fn form_value<'a>(body: &'a str, key: &str) -> Option<&'a str> {
        body.split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
    }

    #[tokio::test]
    async fn a_service_account_key_signs_a_jwt_the_public_key_verifies() {
        let server = Server::start(|_| {
            (
                200,
                r#"{"access_token":"ya29.c.service-account","expires_in":3599,"token_type":"Bearer"}"#.into(),
            )
        });
        let token_uri = format!("{}/token", server.base);
        let tokens = Tokens::from_json(key_json(&token_uri).as_bytes(), "the key").unwrap();
        let http = clients().verify;
        assert_eq!(
            tokens.token(&http, at(NOW)).await.unwrap(),
            "ya29.c.service-account"
        );

        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("POST", "/token")
        );
        assert_eq!(
            seen[0].header("content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            form_value(&seen[0].body, "grant_type"),
            Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
        );
        let jwt = form_value(&seen[0].body, "assertion").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let json = |p: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
        };
        assert_eq!(
            json(parts[0]),
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "0123456789abcdef"})
        );
        assert_eq!(
            json(parts[1]),
            serde_json::json!({
                "iss": "flagger@my-project.iam.gserviceaccount.com",
                "scope": "https://www.googleapis.com/auth/monitoring.read",
                "aud": token_uri,
                "iat": NOW,
                "exp": NOW + 3600,
            })
        );
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, TEST_PUBLIC_KEY);
        let signed = format!("{}.{}", parts[0], parts[1]);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public
            .verify(signed.as_bytes(), &sig)
            .expect("the signature verifies with the key's public half");
        assert!(
            public
                .verify(format!("{signed}x").as_bytes(), &sig)
                .is_err(),
            "and only over what was signed"
        );

        // Cached until a minute before expiry, then exchanged again.
        tokens.token(&http, at(NOW + 3599 - 61)).await.unwrap();
        assert_eq!(server.seen().len(), 1);
        tokens.token(&http, at(NOW + 3599 - 59)).await.unwrap();
        assert_eq!(server.seen().len(), 2);
    }

    #[tokio::test]
    async fn a_refused_exchange_names_googles_error() {
        let server = Server::start(|_| {
            (
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#.into(),
            )
        });
        let tokens =
            Tokens::from_json(key_json(&format!("{}/token", server.base)).as_bytes(), "k").unwrap();
        let e = tokens.token(&clients().verify, at(NOW)).await.unwrap_err();
        assert_eq!(
            e,
            "Google access token from service account flagger@my-project.iam.gserviceaccount.com: \
             answered 400: invalid_grant: Invalid JWT Signature."
        );
    }

    #[tokio::test]
    async fn an_authorized_user_refreshes_its_token() {
        let server = Server::start(|_| {
            (200, r#"{"access_token":"ya29.user","expires_in":3599,"scope":"https://www.googleapis.com/auth/cloud-platform","token_type":"Bearer"}"#.into())
        });
        let json = serde_json::json!({
            "type": "authorized_user",
            "client_id": "764086051850-client.apps.googleusercontent.com",
            "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty",
            "refresh_token": "1//refresh",
            "token_uri": format!("{}/token", server.base),
        });
        let tokens = Tokens::from_json(json.to_string().as_bytes(), "adc").unwrap();
        assert_eq!(
            tokens.token(&clients().verify, at(NOW)).await.unwrap(),
            "ya29.user"
        );
        assert_eq!(
            server.seen()[0].body,
            "grant_type=refresh_token&client_id=764086051850-client.apps.googleusercontent.com\
             &client_secret=d-FL95Q19q7MQmFpd7hHD0Ty&refresh_token=1%2F%2Frefresh"
        );
    }

    #[tokio::test]
    async fn the_metadata_server_is_asked_with_its_flavor_header() {
        let server = Server::start(|req| {
            if req.header("metadata-flavor") != Some("Google") {
                return (403, "Missing Metadata-Flavor:Google header.".into());
            }
            (
                200,
                r#"{"access_token":"ya29.metadata","expires_in":1799,"token_type":"Bearer"}"#
                    .into(),
            )
        });
        let host = server.base.trim_start_matches("http://").to_string();
        let tokens = Tokens::metadata(&Env::from_pairs([("GCE_METADATA_HOST", host.as_str())]));
        assert_eq!(
            tokens.token(&clients().verify, at(NOW)).await.unwrap(),
            "ya29.metadata"
        );
        let seen = server.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            (
                "GET",
                "/computeMetadata/v1/instance/service-accounts/default/token"
            )
        );

        let gone = Tokens::metadata(&Env::from_pairs([("GCE_METADATA_HOST", "127.0.0.1:9")]));
        let e = gone.token(&clients().verify, at(NOW)).await.unwrap_err();
        assert!(
            e.starts_with("Google access token from the metadata server 127.0.0.1:9"),
            "{e}"
        );
        assert!(e.contains("set GOOGLE_APPLICATION_CREDENTIALS"), "{e}");
    }

    #[test]
    fn adc_reads_the_named_file_then_gclouds_then_the_metadata_server() {
        let dir = std::env::temp_dir().join(format!("fledge-gcp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let named = dir.join("key.json");
        std::fs::write(&named, key_json("https://oauth2.googleapis.com/token")).unwrap();
        let gcloud = dir.join("gcloud");
        std::fs::create_dir_all(&gcloud).unwrap();
        std::fs::write(
            gcloud.join("application_default_credentials.json"),
            r#"{"type":"authorized_user","client_id":"gcloud-client","client_secret":"s","refresh_token":"r"}"#,
        )
        .unwrap();
        let named = named.to_string_lossy().into_owned();
        let gcloud = gcloud.to_string_lossy().into_owned();

        let both = Env::from_pairs([
            ("GOOGLE_APPLICATION_CREDENTIALS", named.as_str()),
            ("CLOUDSDK_CONFIG", gcloud.as_str()),
        ]);
        assert_eq!(
            Tokens::adc(&both).unwrap().describe(),
            "service account flagger@my-project.iam.gserviceaccount.com"
        );
        let only_gcloud = Env::from_pairs([("CLOUDSDK_CONFIG", gcloud.as_str())]);
        assert_eq!(
            Tokens::adc(&only_gcloud).unwrap().describe(),
            "authorized user of gcloud-client"
        );
        let none = Env::from_pairs([
            ("HOME", "/nonexistent"),
            ("GCE_METADATA_HOST", "127.0.0.1:9"),
        ]);
        assert_eq!(
            Tokens::adc(&none).unwrap().describe(),
            "the metadata server 127.0.0.1:9"
        );
        assert_eq!(
            Tokens::adc(&Env::default()).unwrap().describe(),
            "the metadata server metadata.google.internal"
        );
        let missing =
            Env::from_pairs([("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")]);
        let e = Tokens::adc(&missing).unwrap_err();
        assert!(
            e.starts_with("reading GOOGLE_APPLICATION_CREDENTIALS /nonexistent/key.json"),
            "{e}"
        );
    }

    #[test]
    fn keys_that_cannot_be_used_are_refused_with_the_reason() {
        let e = Tokens::from_json(br#"{"type":"external_account","audience":"x"}"#, "the key")
            .unwrap_err();
        assert!(e.contains("type `external_account`"), "{e}");
        let e = Tokens::from_json(b"not json", "the key").unwrap_err();
        assert!(
            e.starts_with("the key is not a Google credentials JSON"),
            "{e}"
        );
        let broken = key_json("https://oauth2.googleapis.com/token").replace("MII", "XXX");
        let e = Tokens::from_json(broken.as_bytes(), "the key").unwrap_err();
        assert!(e.starts_with("the key: private_key: "), "{e}");
        let no_email = serde_json::json!({"type": "service_account", "private_key": TEST_KEY});
        let e = Tokens::from_json(no_email.to_string().as_bytes(), "the key").unwrap_err();
        assert_eq!(e, "the key has no `client_email`");
    }
}
