//! Local HTTP servers for the providers' tests: [`serve`] answers one
//! connection per scripted reply, in order; [`Answering`] answers each
//! request from a function of it. Both record each request exactly as it
//! arrived.
use super::{Clients, Source};
use crate::api::MetricProvider;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
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
    /// Path and query, as on the request line.
    pub target: String,
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
            let (mut stream, _) = listener.accept().unwrap();
            let req = read_request(&mut stream).expect("a whole request");
            seen.push(req);
            write_reply(&mut stream, &reply);
        }
        seen
    });
    Server { url, handle }
}

/// A server that answers every request from a function of it, for tests
/// whose requests go to several paths (token endpoints, then the API).
pub struct Answering {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Answering {
    /// Answers each request with `(status, body)`; JSON, XML or text by the
    /// body's first character. Runs until the test process ends.
    pub fn start<F>(answer: F) -> Answering
    where
        F: Fn(&Request) -> (u16, String) + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(req) = read_request(&mut stream) else {
                    continue;
                };
                record.lock().unwrap().push(req.clone());
                let (status, body) = answer(&req);
                let content_type = match body.trim_start().chars().next() {
                    Some('{') | Some('[') => "application/json",
                    Some('<') => "text/xml",
                    _ => "text/plain",
                };
                write_reply(&mut stream, &reply(status, content_type, &body));
            }
        });
        Answering { base, seen }
    }

    pub fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request (head and `content-length` body); `None` when the
/// client went away first.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    let (path, raw_query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    Some(Request {
        method,
        target,
        path,
        raw_query,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn write_reply(stream: &mut TcpStream, reply: &Reply) {
    let resp = format!(
        "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        reply.status,
        reply.content_type,
        reply.body.len(),
        reply.body
    );
    let _ = stream.write_all(resp.as_bytes());
    let _ = stream.flush();
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
