//! AWS credentials from the SDKs' default chain, and Signature Version 4.
//!
//! The chain is the one of aws-sdk-go (Flagger's SDK), decided by what the
//! environment holds, in this order:
//! 1. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`);
//! 2. web identity (IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`,
//!    exchanged at STS `AssumeRoleWithWebIdentity`;
//! 3. the container endpoint (ECS, EKS Pod Identity):
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI`, with
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)`;
//! 4. the instance role from the instance metadata service (IMDSv2),
//!    unless `AWS_EC2_METADATA_DISABLED=true`.
//!
//! Temporary credentials are cached until [`REFRESH_BEFORE`] their expiry.
use super::env::Env;
use fledge_policy::calendar::{civil_from_days, days_from_civil};
use ring::hmac;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Temporary credentials are fetched again this long before they expire,
/// so no request is signed with a key about to lapse.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

const IMDS_DEFAULT: &str = "http://169.254.169.254";
const IMDS_DEFAULT_V6: &str = "http://[fd00:ec2::254]";
const CONTAINER_HOST: &str = "http://169.254.170.2";
/// Metadata endpoints answer within a second or not at all (off EC2).
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);
const STS_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// `None` for long-term keys.
    pub expires: Option<SystemTime>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("session_token", &self.session_token.as_ref().map(|_| "…"))
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    fn fresh_at(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|e| now + REFRESH_BEFORE < e)
    }
}

/// The default credential chain over one environment, with its cache.
pub struct Chain {
    env: Env,
    cache: tokio::sync::Mutex<Option<Credentials>>,
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chain")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl Chain {
    pub fn new(env: Env) -> Chain {
        Chain {
            env,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The process's chain: one cache for every CloudWatch query.
    pub fn shared() -> Arc<Chain> {
        static SHARED: OnceLock<Arc<Chain>> = OnceLock::new();
        SHARED
            .get_or_init(|| Arc::new(Chain::new(Env::process())))
            .clone()
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Credentials valid at `now`, from the cache or the chain. `region` is
    /// where STS is asked when the environment names no region.
    pub async fn credentials(
        &self,
        http: &reqwest::Client,
        region: &str,
        now: SystemTime,
    ) -> Result<Credentials, String> {
        // Held across the fetch: concurrent queries wait for one fetch.
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| c.fresh_at(now)) {
            return Ok(c.clone());
        }
        let fetched = self.fetch(http, region, now).await?;
        *cache = Some(fetched.clone());
        Ok(fetched)
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        region: &str,
        now: SystemTime,
    ) -> Result<Credentials, String> {
        let env = &self.env;
        let id = env
            .get("AWS_ACCESS_KEY_ID")
            .or_else(|| env.get("AWS_ACCESS_KEY"));
        let secret = env
            .get("AWS_SECRET_ACCESS_KEY")
            .or_else(|| env.get("AWS_SECRET_KEY"));
        if let (Some(id), Some(secret)) = (id, secret) {
            return Ok(Credentials {
                access_key_id: id.to_string(),
                secret_access_key: secret.to_string(),
                session_token: env.get("AWS_SESSION_TOKEN").map(str::to_string),
                expires: None,
            });
        }
        if let Some(file) = env.get("AWS_WEB_IDENTITY_TOKEN_FILE") {
            return web_identity(http, env, file, region, now)
                .await
                .map_err(|e| format!("AWS credentials from web identity (IRSA): {e}"));
        }
        if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
            || env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
        {
            return container(http, env)
                .await
                .map_err(|e| format!("AWS credentials from the container endpoint: {e}"));
        }
        if env.is_true("AWS_EC2_METADATA_DISABLED") {
            return Err(no_credentials("AWS_EC2_METADATA_DISABLED is true"));
        }
        instance_role(http, env)
            .await
            .map_err(|e| no_credentials(&format!("the instance metadata service: {e}")))
    }
}

fn no_credentials(why: &str) -> String {
    format!(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, use IRSA \
         (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN) or EKS Pod Identity, or give the node \
         an instance role ({why})"
    )
}

/// An endpoint override: `AWS_ENDPOINT_URL_<SERVICE>`, then
/// `AWS_ENDPOINT_URL`, unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`.
pub fn endpoint_override(env: &Env, service_env: &str) -> Option<String> {
    if env.is_true("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") {
        return None;
    }
    env.get(&format!("AWS_ENDPOINT_URL_{service_env}"))
        .or_else(|| env.get("AWS_ENDPOINT_URL"))
        .map(|u| u.trim().trim_end_matches('/').to_string())
}

/// `https://<prefix>.<region>.amazonaws.com`, `.com.cn` in the China regions.
pub fn regional_endpoint(prefix: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://{prefix}.{region}.{suffix}")
}

async fn web_identity(
    http: &reqwest::Client,
    env: &Env,
    file: &str,
    region: &str,
    now: SystemTime,
) -> Result<Credentials, String> {
    let role = env
        .get("AWS_ROLE_ARN")
        .ok_or("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not")?;
    // Read at every refresh: the kubelet rotates the projected token.
    let token = std::fs::read_to_string(file)
        .map_err(|e| format!("reading AWS_WEB_IDENTITY_TOKEN_FILE {file}: {e}"))?;
    let session = env
        .get("AWS_ROLE_SESSION_NAME")
        .map(str::to_string)
        .unwrap_or_else(|| format!("fledge-{}", unix_seconds(now)));
    let region = env
        .get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .unwrap_or(region);
    let base = endpoint_override(env, "STS").unwrap_or_else(|| regional_endpoint("sts", region));
    let body = form(&[
        ("Action", "AssumeRoleWithWebIdentity"),
        ("RoleArn", role),
        ("RoleSessionName", &session),
        ("Version", "2011-06-15"),
        ("WebIdentityToken", token.trim()),
    ]);
    // AssumeRoleWithWebIdentity is not signed: the token is the proof.
    let req = http
        .post(format!("{base}/"))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(body);
    let (status, text) = super::send(req, STS_TIMEOUT)
        .await
        .map_err(|e| format!("STS at {base}: {e}"))?;
    if !status.is_success() {
        let code = xml_text(&text, "Code").unwrap_or_default();
        let message = xml_text(&text, "Message").unwrap_or_else(|| text.trim().to_string());
        return Err(format!(
            "STS AssumeRoleWithWebIdentity for {role} answered {}: {code}: {message}",
            status.as_u16()
        ));
    }
    let field = |tag: &str| {
        xml_text(&text, tag).ok_or_else(|| format!("STS answer has no {tag}: {}", text.trim()))
    };
    Ok(Credentials {
        access_key_id: field("AccessKeyId")?,
        secret_access_key: field("SecretAccessKey")?,
        session_token: Some(field("SessionToken")?),
        expires: Some(parse_time(&field("Expiration")?)?),
    })
}

/// The JSON both the container endpoint and IMDS answer with.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetadataCredentials {
    code: Option<String>,
    message: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

impl MetadataCredentials {
    fn parse(text: &str) -> Result<Credentials, String> {
        let m: MetadataCredentials = serde_json::from_str(text)
            .map_err(|e| format!("unreadable credentials ({e}): {}", text.trim()))?;
        if let Some(code) = m.code.as_deref().filter(|c| *c != "Success") {
            return Err(format!(
                "credentials not available: {code}: {}",
                m.message.unwrap_or_default()
            ));
        }
        let (Some(id), Some(secret)) = (m.access_key_id, m.secret_access_key) else {
            return Err(format!(
                "the answer has no AccessKeyId/SecretAccessKey: {}",
                text.trim()
            ));
        };
        Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
            session_token: m.token.filter(|t| !t.is_empty()),
            expires: m.expiration.as_deref().map(parse_time).transpose()?,
        })
    }
}

async fn container(http: &reqwest::Client, env: &Env) -> Result<Credentials, String> {
    let url = match env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        Some(rel) => format!("{CONTAINER_HOST}{rel}"),
        None => {
            let full = env
                .get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
                .unwrap_or_default();
            check_container_uri(full)?;
            full.to_string()
        }
    };
    let mut req = http.get(&url);
    let token =
        match env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
            Some(file) => Some(std::fs::read_to_string(file).map_err(|e| {
                format!("reading AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {file}: {e}")
            })?),
            None => env
                .get("AWS_CONTAINER_AUTHORIZATION_TOKEN")
                .map(str::to_string),
        };
    if let Some(token) = token {
        req = req.header("authorization", token.trim());
    }
    let (status, text) = super::send(req, METADATA_TIMEOUT)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{url} answered {}: {}",
            status.as_u16(),
            text.trim()
        ));
    }
    MetadataCredentials::parse(&text).map_err(|e| format!("{url}: {e}"))
}

/// The SDKs send the authorization token over plain HTTP only to the
/// container agents' link-local addresses or to loopback.
fn check_container_uri(uri: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(uri)
        .map_err(|e| format!("AWS_CONTAINER_CREDENTIALS_FULL_URI {uri:?}: {e}"))?;
    if url.scheme() == "https" {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let allowed = match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => {
            ip.is_loopback()
                || ip.octets() == [169, 254, 170, 2]
                || ip.octets() == [169, 254, 170, 23]
        }
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.segments() == [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23]
        }
        Err(_) => host == "localhost",
    };
    if url.scheme() == "http" && allowed {
        Ok(())
    } else {
        Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {uri}: plain HTTP only to loopback or \
             169.254.170.2/169.254.170.23/[fd00:ec2::23]; use https otherwise"
        ))
    }
}

async fn instance_role(http: &reqwest::Client, env: &Env) -> Result<Credentials, String> {
    let base = match env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        Some(e) => e.trim().trim_end_matches('/').to_string(),
        None if env
            .get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE")
            .is_some_and(|m| m.eq_ignore_ascii_case("ipv6")) =>
        {
            IMDS_DEFAULT_V6.to_string()
        }
        None => IMDS_DEFAULT.to_string(),
    };
    let token = metadata_text(
        http.put(format!("{base}/latest/api/token"))
            .header("x-aws-ec2-metadata-token-ttl-seconds", "21600"),
        &base,
        "the IMDSv2 session token",
    )
    .await?;
    let token = token.trim();
    let roles = metadata_text(
        http.get(format!("{base}/latest/meta-data/iam/security-credentials/"))
            .header("x-aws-ec2-metadata-token", token),
        &base,
        "the instance role",
    )
    .await?;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| format!("{base}: the instance has no IAM role"))?;
    let creds = metadata_text(
        http.get(format!(
            "{base}/latest/meta-data/iam/security-credentials/{role}"
        ))
        .header("x-aws-ec2-metadata-token", token),
        &base,
        "the instance role's credentials",
    )
    .await?;
    MetadataCredentials::parse(&creds).map_err(|e| format!("{base}: role {role}: {e}"))
}

async fn metadata_text(
    req: reqwest::RequestBuilder,
    base: &str,
    what: &str,
) -> Result<String, String> {
    let (status, text) = super::send(req, METADATA_TIMEOUT)
        .await
        .map_err(|e| format!("{base}: {what}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "{base}: {what}: answered {}: {}",
            status.as_u16(),
            text.trim()
        ));
    }
    Ok(text)
}

// ---- Signature Version 4 ----

/// A request to sign: `headers` are the ones sent besides `host`,
/// `x-amz-date` and `x-amz-security-token`, which signing adds.
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a reqwest::Url,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers that make `req` signed for `service` in `region` at `at`:
/// `x-amz-date`, `x-amz-security-token` with a session token, and
/// `authorization` (`host` is the URL's, as the HTTP client sends it).
pub fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    at: SystemTime,
    req: &Request<'_>,
) -> Vec<(String, String)> {
    let amz_date = amz_date(at);
    let mut added = vec![("x-amz-date".to_string(), amz_date.clone())];
    if let Some(token) = &creds.session_token {
        added.push(("x-amz-security-token".to_string(), token.clone()));
    }
    let mut signed: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(added.iter().cloned())
        .collect();
    signed.push(("host".to_string(), host_header(req.url)));
    let (creq, signed_headers) = canonical_request(req.method, req.url, &signed, req.body);
    let scope = format!("{}/{region}/{service}/aws4_request", &amz_date[..8]);
    let sts = string_to_sign(&amz_date, &scope, &creq);
    let key = signing_key(&creds.secret_access_key, &amz_date[..8], region, service);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let signature = hex::encode(hmac::sign(&key, sts.as_bytes()).as_ref());
    added.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    added
}

/// `host[:port]` as an HTTP client writes the Host header of `url`.
pub fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// The canonical request and its signed-header list.
pub fn canonical_request(
    method: &str,
    url: &reqwest::Url,
    headers: &[(String, String)],
    body: &[u8],
) -> (String, String) {
    // Path segments are encoded once more than the URL holds them, as every
    // service but S3 expects.
    let path = url.path();
    let path = if path.is_empty() { "/" } else { path };
    let canonical_uri = path
        .split('/')
        .map(|s| uri_encode(s, true))
        .collect::<Vec<_>>()
        .join("/");
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (uri_encode(&k, true), uri_encode(&v, true)))
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut hs: Vec<(String, String)> = Vec::new();
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
        match hs.iter_mut().find(|(n, _)| *n == k) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            None => hs.push((k, v)),
        }
    }
    hs.sort();
    let canonical_headers: String = hs.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let creq = format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(body))
    );
    (creq, signed_headers)
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The key of the day, region and service: HMAC chained over the scope.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    k_signing.as_ref().to_vec()
}

/// RFC 3986 percent-encoding of all but the unreserved characters.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An `application/x-www-form-urlencoded` body.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, true), uri_encode(v, true)))
        .collect::<Vec<_>>()
        .join("&")
}

// ---- time ----

pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(t: SystemTime) -> String {
    let secs = unix_seconds(t);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// An ISO 8601 / RFC 3339 UTC time as STS and the metadata services write
/// it: `2019-11-09T13:34:41Z`, with optional fractional seconds or offset.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("unreadable time {s:?}");
    let t = s.trim();
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d, h, mi, se) = (
        num(0..4).ok_or_else(bad)?,
        num(5..7).ok_or_else(bad)?,
        num(8..10).ok_or_else(bad)?,
        num(11..13).ok_or_else(bad)?,
        num(14..16).ok_or_else(bad)?,
        num(17..19).ok_or_else(bad)?,
    );
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let oh: i64 = o[1..3].parse().map_err(|_| bad())?;
            let om: i64 = o[4..6].parse().map_err(|_| bad())?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    Ok(if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs((-secs) as u64)
    })
}

/// The text of the first `<tag>` element of a small XML document (the
/// answers of STS), entities decoded.
pub fn xml_text(doc: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = doc.find(&open)? + open.len();
    let end = doc[start..].find(&format!("</{tag}>"))? + start;
    Some(
        doc[start..end]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::testserver::Answering as Server;

    // The credentials and time of AWS's published Signature Version 4
    // examples (the test suite and the IAM `ListUsers` walk-through).
    const KEY_ID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// 2015-08-30T12:36:00Z.
    const AT: u64 = 1_440_938_160;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn example() -> Credentials {
        Credentials {
            access_key_id: KEY_ID.into(),
            secret_access_key: SECRET.into(),
            session_token: None,
            expires: None,
        }
    }

    fn authorization(signed: &[(String, String)]) -> &str {
        &signed.iter().find(|(k, _)| k == "authorization").unwrap().1
    }

    #[test]
    fn the_signing_key_is_the_documented_one() {
        assert_eq!(
            hex::encode(signing_key(SECRET, "20150830", "us-east-1", "iam")),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn get_vanilla_signs_as_the_test_suite_says() {
        let url = reqwest::Url::parse("https://example.amazonaws.com/").unwrap();
        let headers = vec![
            ("Host".to_string(), "example.amazonaws.com".to_string()),
            ("X-Amz-Date".to_string(), "20150830T123600Z".to_string()),
        ];
        let (creq, signed) = canonical_request("GET", &url, &headers, b"");
        assert_eq!(
            creq,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "host;x-amz-date");
        let sts = string_to_sign(
            "20150830T123600Z",
            "20150830/us-east-1/service/aws4_request",
            &creq,
        );
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        let out = sign(
            &example(),
            "us-east-1",
            "service",
            at(AT),
            &Request {
                method: "GET",
                url: &url,
                headers: &[],
                body: b"",
            },
        );
        assert_eq!(
            authorization(&out),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(out[0], ("x-amz-date".into(), "20150830T123600Z".into()));
    }

    #[test]
    fn a_form_body_signs_as_the_test_suite_says() {
        let url = reqwest::Url::parse("https://example.amazonaws.com/").unwrap();
        let out = sign(
            &example(),
            "us-east-1",
            "service",
            at(AT),
            &Request {
                method: "POST",
                url: &url,
                headers: &[("Content-Type", "application/x-www-form-urlencoded")],
                body: b"Param1=value1",
            },
        );
        assert_eq!(
            authorization(&out),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"
        );
    }

    #[test]
    fn a_query_string_signs_as_the_iam_example_says() {
        let url =
            reqwest::Url::parse("https://iam.amazonaws.com/?Version=2010-05-08&Action=ListUsers")
                .unwrap();
        let out = sign(
            &example(),
            "us-east-1",
            "iam",
            at(AT),
            &Request {
                method: "GET",
                url: &url,
                headers: &[(
                    "Content-Type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                body: b"",
            },
        );
        assert_eq!(
            authorization(&out),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let url = reqwest::Url::parse("http://127.0.0.1:4566/").unwrap();
        let creds = Credentials {
            session_token: Some("the-token".into()),
            ..example()
        };
        let out = sign(
            &creds,
            "eu-west-1",
            "monitoring",
            at(AT),
            &Request {
                method: "POST",
                url: &url,
                headers: &[],
                body: b"{}",
            },
        );
        assert_eq!(out[1], ("x-amz-security-token".into(), "the-token".into()));
        assert!(authorization(&out).contains(
            "/20150830/eu-west-1/monitoring/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token,"
        ));
        // The port is part of the signed Host, as the client sends it.
        let headers = vec![
            ("host".to_string(), "127.0.0.1:4566".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
            ("x-amz-security-token".to_string(), "the-token".to_string()),
        ];
        let (creq, _) = canonical_request("POST", &url, &headers, b"{}");
        let sts = string_to_sign(
            "20150830T123600Z",
            "20150830/eu-west-1/monitoring/aws4_request",
            &creq,
        );
        let key = hmac::Key::new(
            hmac::HMAC_SHA256,
            &signing_key(SECRET, "20150830", "eu-west-1", "monitoring"),
        );
        let want = hex::encode(hmac::sign(&key, sts.as_bytes()).as_ref());
        assert!(authorization(&out).ends_with(&format!("Signature={want}")));
    }

    #[test]
    fn times_read_and_print_in_utc() {
        assert_eq!(amz_date(at(AT)), "20150830T123600Z");
        assert_eq!(amz_date(at(951_782_400)), "20000229T000000Z");
        assert_eq!(parse_time("2015-08-30T12:36:00Z").unwrap(), at(AT));
        assert_eq!(parse_time("2015-08-30T12:36:00.000Z").unwrap(), at(AT));
        assert_eq!(parse_time("2015-08-30T14:36:00+02:00").unwrap(), at(AT));
        assert!(parse_time("30/08/2015").is_err());
        assert!(parse_time("2015-13-30T12:36:00Z").is_err());
    }

    fn temp_file(name: &str, content: &str) -> String {
        let dir = std::env::temp_dir().join(format!("fledge-aws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn client() -> reqwest::Client {
        crate::metrics::testserver::clients().verify
    }

    /// STS's documented `AssumeRoleWithWebIdentity` answer.
    fn sts_answer(key_id: &str, expiration: &str) -> String {
        format!(
            r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:flagger:flagger</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/flagger/fledge-1440938160</Arn>
      <AssumedRoleId>AROACLKWSDQRAOEXAMPLE:fledge-1440938160</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE</SessionToken>
      <SecretAccessKey>wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY</SecretAccessKey>
      <Expiration>{expiration}</Expiration>
      <AccessKeyId>{key_id}</AccessKeyId>
    </Credentials>
    <Provider>www.amazon.com</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
        )
    }

    #[tokio::test]
    async fn environment_keys_win_over_everything_else() {
        let sts = Server::start(|_| (500, "must not be asked".into()));
        let chain = Chain::new(Env::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/flagger"),
            ("AWS_ENDPOINT_URL_STS", sts.base.as_str()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", sts.base.as_str()),
        ]));
        let c = chain
            .credentials(&client(), "us-east-1", at(AT))
            .await
            .unwrap();
        assert_eq!(
            c,
            Credentials {
                access_key_id: "AKIAENV".into(),
                secret_access_key: "env-secret".into(),
                session_token: Some("env-token".into()),
                expires: None,
            }
        );
        assert!(sts.seen().is_empty());
    }

    #[tokio::test]
    async fn web_identity_exchanges_the_token_file_at_sts_and_caches_until_near_expiry() {
        let sts = Server::start(|_| (200, sts_answer("ASIAWEBID", "2015-08-30T13:36:00Z")));
        let token = temp_file("irsa-token", "eyJhbGciOiJSUzI1NiJ9.projected.token\n");
        let chain = Chain::new(Env::from_pairs([
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.as_str()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/flagger"),
            ("AWS_ENDPOINT_URL_STS", sts.base.as_str()),
            // No region in the environment: the template's is used for STS.
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9"),
        ]));
        let c = chain
            .credentials(&client(), "eu-west-1", at(AT))
            .await
            .unwrap();
        assert_eq!(
            c,
            Credentials {
                access_key_id: "ASIAWEBID".into(),
                secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY".into(),
                session_token: Some("AQoDYXdzEE0a8ANXXXXXXXXNO1ewxE5TijQyp+IEXAMPLE".into()),
                expires: Some(at(AT + 3600)),
            }
        );
        let seen = sts.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "POST");
        assert_eq!(seen[0].target, "/");
        assert_eq!(
            seen[0].header("content-type"),
            Some("application/x-www-form-urlencoded; charset=utf-8")
        );
        assert_eq!(
            seen[0].header("authorization"),
            None,
            "the call is unsigned"
        );
        assert_eq!(
            seen[0].body,
            "Action=AssumeRoleWithWebIdentity\
             &RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fflagger\
             &RoleSessionName=fledge-1440938160&Version=2011-06-15\
             &WebIdentityToken=eyJhbGciOiJSUzI1NiJ9.projected.token"
        );

        // Cached while more than five minutes remain; fetched again after.
        let again = chain
            .credentials(&client(), "eu-west-1", at(AT + 3600 - 301))
            .await
            .unwrap();
        assert_eq!(again, c);
        assert_eq!(sts.seen().len(), 1);
        chain
            .credentials(&client(), "eu-west-1", at(AT + 3600 - 299))
            .await
            .unwrap();
        assert_eq!(sts.seen().len(), 2);
    }

    #[tokio::test]
    async fn an_sts_refusal_is_reported_with_its_code_and_message() {
        let sts = Server::start(|_| {
            (
                400,
                r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>InvalidIdentityToken</Code>
    <Message>No OpenIDConnect provider found in your account for https://oidc.eks.example</Message>
  </Error>
  <RequestId>4e5d3f2b-0000-0000-0000-EXAMPLE</RequestId>
</ErrorResponse>"#
                    .into(),
            )
        });
        let token = temp_file("irsa-token-refused", "token");
        let chain = Chain::new(Env::from_pairs([
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.as_str()),
            ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/flagger"),
            ("AWS_ENDPOINT_URL", sts.base.as_str()),
        ]));
        let e = chain
            .credentials(&client(), "us-east-1", at(AT))
            .await
            .unwrap_err();
        assert!(e.contains("web identity (IRSA)"), "{e}");
        assert!(
            e.contains("answered 400: InvalidIdentityToken: No OpenIDConnect provider"),
            "{e}"
        );

        let chain = Chain::new(Env::from_pairs([(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            token.as_str(),
        )]));
        let e = chain
            .credentials(&client(), "us-east-1", at(AT))
            .await
            .unwrap_err();
        assert!(e.contains("AWS_ROLE_ARN is not"), "{e}");
    }

    /// An IMDS that insists on IMDSv2: every read needs the session token.
    fn imds() -> Server {
        Server::start(|req| {
            let token_ok = req.header("x-aws-ec2-metadata-token") == Some("IMDS-SESSION");
            match (req.method.as_str(), req.target.as_str()) {
                ("PUT", "/latest/api/token")
                    if req.header("x-aws-ec2-metadata-token-ttl-seconds") == Some("21600") =>
                {
                    (200, "IMDS-SESSION".into())
                }
                ("GET", _) if !token_ok => (401, "".into()),
                ("GET", "/latest/meta-data/iam/security-credentials/") => {
                    (200, "flagger-node\n".into())
                }
                ("GET", "/latest/meta-data/iam/security-credentials/flagger-node") => (
                    200,
                    r#"{
  "Code" : "Success",
  "LastUpdated" : "2015-08-30T12:30:00Z",
  "Type" : "AWS-HMAC",
  "AccessKeyId" : "ASIAIMDS",
  "SecretAccessKey" : "imds-secret",
  "Token" : "imds-token",
  "Expiration" : "2015-08-30T18:36:00Z"
}"#
                    .into(),
                ),
                _ => (404, "".into()),
            }
        })
    }

    #[tokio::test]
    async fn the_instance_role_comes_from_imdsv2() {
        let imds = imds();
        let chain = Chain::new(Env::from_pairs([(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            imds.base.as_str(),
        )]));
        let c = chain
            .credentials(&client(), "us-east-1", at(AT))
            .await
            .unwrap();
        assert_eq!(
            c,
            Credentials {
                access_key_id: "ASIAIMDS".into(),
                secret_access_key: "imds-secret".into(),
                session_token: Some("imds-token".into()),
                expires: Some(at(AT + 6 * 3600)),
            }
        );
        let seen: Vec<(String, String)> = imds
            .seen()
            .into_iter()
            .map(|s| (s.method, s.target))
            .collect();
        assert_eq!(
            seen,
            [
                ("PUT".into(), "/latest/api/token".into()),
                (
                    "GET".into(),
                    "/latest/meta-data/iam/security-credentials/".into()
                ),
                (
                    "GET".into(),
                    "/latest/meta-data/iam/security-credentials/flagger-node".into()
                ),
            ]
        );

        let off = Chain::new(Env::from_pairs([
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.base.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]));
        let e = off
            .credentials(&client(), "us-east-1", at(AT))
            .await
            .unwrap_err();
        assert!(e.starts_with("no AWS credentials:"), "{e}");
        assert_eq!(imds.seen().len(), 3);
    }

    #[tokio::test]
    async fn no_metadata_service_says_how_to_give_credentials() {
        // Nothing listens on the discard port of loopback.
        let chain = Chain::new(Env::from_pairs([(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "http://127.0.0.1:9",
        )]));
        let e = chain
            .credentials(&client(), "us-east-1", at(AT))
            .await
            .unwrap_err();
        assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
        assert!(e.contains("IRSA"), "{e}");
        assert!(e.contains("the instance metadata service"), "{e}");
    }

    #[tokio::test]
    async fn the_container_endpoint_gets_the_pod_identity_token() {
        let agent = Server::start(|req| {
            if req.header("authorization") != Some("pod-identity-jwt") {
                return (401, "".into());
            }
            (
                200,
                r#"{"AccessKeyId":"ASIAPOD","SecretAccessKey":"pod-secret","Token":"pod-token","AccountId":"123456789012","Expiration":"2015-08-30T18:36:00Z"}"#.into(),
            )
        });
        let token = temp_file("pod-identity-token", "pod-identity-jwt\n");
        let url = format!("{}/v1/credentials", agent.base);
        let chain = Chain::new(Env::from_pairs([
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url.as_str()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", token.as_str()),
        ]));
        let c = chain
            .credentials(&client(), "us-east-1", at(AT))
            .await
            .unwrap();
        assert_eq!(c.access_key_id, "ASIAPOD");
        assert_eq!(c.session_token.as_deref(), Some("pod-token"));
        assert_eq!(agent.seen()[0].target, "/v1/credentials");

        assert!(check_container_uri("http://169.254.170.23/v1/credentials").is_ok());
        assert!(check_container_uri("https://creds.example.com/").is_ok());
        let e = check_container_uri("http://creds.example.com/").unwrap_err();
        assert!(e.contains("plain HTTP only to loopback"), "{e}");
    }

    #[test]
    fn endpoints_follow_the_standard_overrides() {
        let env = Env::from_pairs([
            ("AWS_ENDPOINT_URL", "http://localhost:4566/"),
            ("AWS_ENDPOINT_URL_STS", "http://sts.local"),
        ]);
        assert_eq!(
            endpoint_override(&env, "STS").as_deref(),
            Some("http://sts.local")
        );
        assert_eq!(
            endpoint_override(&env, "CLOUDWATCH").as_deref(),
            Some("http://localhost:4566")
        );
        let ignored = Env::from_pairs([
            ("AWS_ENDPOINT_URL", "http://localhost:4566"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ]);
        assert_eq!(endpoint_override(&ignored, "CLOUDWATCH"), None);
        assert_eq!(
            regional_endpoint("monitoring", "ap-northeast-1"),
            "https://monitoring.ap-northeast-1.amazonaws.com"
        );
        assert_eq!(
            regional_endpoint("sts", "cn-north-1"),
            "https://sts.cn-north-1.amazonaws.com.cn"
        );
    }
}
