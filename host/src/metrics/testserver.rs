//! A local HTTP server for the providers' tests: it answers one connection
//! per scripted reply, in order, and records each request exactly as it
//! arrived.
use super::{Clients, Source};
use crate::api::MetricProvider;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// One scripted answer.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

pub fn reply(status: u16, content_type: &'static str, body: &str) -> Reply {
    Reply {
        status,
        content_type,
        body: body.to_string(),
    }
}

pub fn json(status: u16, body: &str) -> Reply {
    reply(status, "application/json", body)
}

/// A request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The query string as sent, undecoded.
    pub raw_query: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The decoded query pairs, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        let url = reqwest::Url::parse(&format!("http://x/?{}", self.raw_query)).unwrap();
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    handle: JoinHandle<Vec<Request>>,
}

impl Server {
    /// The requests served, once every reply went out.
    pub fn requests(self) -> Vec<Request> {
        self.handle.join().expect("test server thread")
    }
}

/// Serves `replies`, one connection each.
pub fn serve(replies: Vec<Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for reply in replies {
            let (stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.trim_end().splitn(3, ' ');
            let method = parts.next().unwrap_or_default().to_string();
            let target = parts.next().unwrap_or_default().to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            let (path, raw_query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (target.clone(), String::new()),
            };
            seen.push(Request {
                method,
                path,
                raw_query,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
            let mut stream = reader.into_inner();
            let resp = format!(
                "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                reply.status,
                reply.content_type,
                reply.body.len(),
                reply.body
            );
            stream.write_all(resp.as_bytes()).unwrap();
            let _ = stream.flush();
        }
        seen
    });
    Server { url, handle }
}

/// A template's provider and Secret, owned, to lend as a [`Source`].
pub struct Template {
    pub spec: MetricProvider,
    pub secret: BTreeMap<String, Vec<u8>>,
}

/// `provider` is the JSON of `spec.provider`; `secret` the Secret's data.
pub fn template(provider: serde_json::Value, secret: &[(&str, &str)]) -> Template {
    Template {
        spec: serde_json::from_value(provider).unwrap(),
        secret: secret
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    }
}

impl Template {
    pub fn source(&self, interval: Duration) -> Source<'_> {
        Source {
            spec: &self.spec,
            secret: &self.secret,
            interval,
            default_address: "http://prometheus.default.invalid:9090",
        }
    }
}

/// The operator's clients; like `main`, the process picks ring for TLS first.
pub fn clients() -> Clients {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Clients::new().unwrap()
}

/// A fixed query time: 2020-05-14T11:22:00Z.
pub fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_589_455_320)
}
