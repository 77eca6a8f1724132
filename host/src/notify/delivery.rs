//! Sending alert payloads in the background, so that no receiver, however
//! slow or dead, holds up a rollout.
//!
//! Every destination URL has its own lane: a bounded queue and a task that
//! sends its payloads one after the other, in order. A receiver that never
//! answers delays only its own lane, by at most [`Settings::timeout`] per
//! alert. [`Delivery::enqueue`] never waits: when a lane is full the alert
//! is dropped with a log line. A lane idle for [`Settings::idle`] ends; the
//! next alert for it starts a new one.
//!
//! Each request has a timeout (Flagger's client: 5 s). Connection errors,
//! 429 and 5xx are retried with exponential backoff; a request that timed
//! out is not, since the receiver may have taken it (and a receiver that
//! does not answer in 5 s is unlikely to answer the next one faster).
use super::Notifier;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;

/// How alerts are sent.
#[derive(Debug, Clone)]
pub struct Settings {
    /// One request, connection included.
    pub timeout: Duration,
    /// Attempts after the first, for connection errors, 429 and 5xx.
    pub retries: u32,
    /// The wait before the first retry; doubled for each next one (at most 30 s).
    pub backoff: Duration,
    /// Alerts waiting per destination.
    pub lane_capacity: usize,
    /// A lane with nothing to send for this long ends.
    pub idle: Duration,
    /// Destinations with a lane at once.
    pub max_lanes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: Duration::from_secs(5),
            retries: 3,
            backoff: Duration::from_secs(1),
            lane_capacity: 64,
            idle: Duration::from_secs(300),
            max_lanes: 256,
        }
    }
}

/// One payload for one destination.
#[derive(Debug, Clone)]
pub struct Post {
    pub notifier: Arc<dyn Notifier>,
    pub body: Value,
    /// `<canary>.<namespace>`, for the logs.
    pub canary: String,
    /// Which provider this is, for the logs (never the URL: webhook URLs
    /// carry their credentials).
    pub provider: String,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    lanes: Mutex<HashMap<String, mpsc::Sender<Post>>>,
    /// One client per proxy (`""`: none), built when first needed.
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Delivery {
    pub fn new(settings: Settings) -> Delivery {
        Delivery {
            inner: Arc::new(Inner {
                settings,
                lanes: Mutex::default(),
                clients: Mutex::default(),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Queues `post` on its destination's lane and returns at once: `false`
    /// when it was dropped (the lane is full, or too many destinations are
    /// busy). Must be called within a tokio runtime.
    pub fn enqueue(&self, post: Post) -> bool {
        let key = post.notifier.endpoint().url.clone();
        let mut lanes = lock(&self.inner.lanes);
        let post = match lanes.get(&key) {
            Some(tx) => match tx.try_send(post) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(post)) => {
                    tracing::warn!(canary = %post.canary, provider = %post.provider, capacity = self.inner.settings.lane_capacity, "alert dropped: the provider's queue is full (it is slow or down)");
                    return false;
                }
                // The lane ended after being idle: start another.
                Err(mpsc::error::TrySendError::Closed(post)) => post,
            },
            None => post,
        };
        if lanes.len() >= self.inner.settings.max_lanes {
            lanes.retain(|_, tx| !tx.is_closed());
            if lanes.len() >= self.inner.settings.max_lanes {
                tracing::warn!(canary = %post.canary, provider = %post.provider, lanes = lanes.len(), "alert dropped: too many alert destinations are busy");
                return false;
            }
        }
        let (tx, rx) = mpsc::channel(self.inner.settings.lane_capacity.max(1));
        // A new channel has room for one.
        let _ = tx.try_send(post);
        lanes.insert(key, tx);
        tokio::spawn(lane(self.inner.clone(), rx));
        true
    }
}

async fn lane(inner: Arc<Inner>, mut rx: mpsc::Receiver<Post>) {
    loop {
        match tokio::time::timeout(inner.settings.idle, rx.recv()).await {
            Ok(Some(post)) => deliver(&inner, post).await,
            Ok(None) => return,
            // Idle: take no more, send what is still queued, then end.
            Err(_) => rx.close(),
        }
    }
}

impl Inner {
    fn client(&self, proxy: Option<&str>) -> Result<reqwest::Client, String> {
        let key = proxy.unwrap_or("");
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder();
        if let Some(p) = proxy {
            b = b.proxy(reqwest::Proxy::all(p).map_err(|e| format!("proxy {p}: {e}"))?);
        }
        let c = b
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        clients.insert(key.to_string(), c.clone());
        Ok(c)
    }
}

async fn deliver(inner: &Inner, post: Post) {
    let endpoint = post.notifier.endpoint();
    let outcome = match inner.client(endpoint.proxy.as_deref()) {
        Ok(client) => send(&client, &inner.settings, endpoint, &post.body).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(attempts) => {
            tracing::info!(canary = %post.canary, provider = %post.provider, attempts, "alert sent")
        }
        Err(e) => {
            tracing::warn!(canary = %post.canary, provider = %post.provider, error = %e, "alert not sent")
        }
    }
}

/// POSTs `body` to `endpoint`: the number of attempts it took, or why it
/// was given up. Errors never contain the URL.
pub async fn send(
    client: &reqwest::Client,
    settings: &Settings,
    endpoint: &super::Endpoint,
    body: &Value,
) -> Result<u32, String> {
    let mut attempt = 1;
    let mut backoff = settings.backoff;
    loop {
        let mut req = client
            .post(&endpoint.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .timeout(settings.timeout);
        if let Some(t) = endpoint.token.as_deref().filter(|t| !t.is_empty()) {
            req = req.bearer_auth(t);
        }
        let (retry, why) = match req.send().await {
            Ok(r) if r.status().is_success() => return Ok(attempt),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let retry = status.as_u16() == 429 || status.is_server_error();
                (retry, format!("bad response {status}: {}", text.trim()))
            }
            Err(e) if e.is_timeout() => {
                return Err(format!(
                    "no answer within {:?} (not retried: it may have been received)",
                    settings.timeout
                ))
            }
            Err(e) => (true, format!("{:#}", anyhow::Error::new(e.without_url()))),
        };
        if !retry || attempt > settings.retries {
            return Err(if attempt > 1 {
                format!("giving up after {attempt} attempts: {why}")
            } else {
                why
            });
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
        attempt += 1;
    }
}
