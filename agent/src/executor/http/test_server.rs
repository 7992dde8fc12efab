//! A small real HTTP/1.1 server on 127.0.0.1:0 for the executor's tests,
//! plain or TLS: one request per connection (`Connection: close`), answered
//! by a closure the test gives, every request recorded. It can also hold a
//! request unanswered, and tells when the client closed such a connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A request as the server read it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Headers, names lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
pub enum Reply {
    /// Answers with a status, headers and a body.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Never answers; waits for the client to close the connection.
    Hang,
    /// Answers 200 announcing more body than it sends, then closes.
    Cut(String),
}

impl Reply {
    /// `status` with a body and no extra header.
    pub fn status(status: u16, body: &str) -> Reply {
        Reply::Answer {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// `status` with one header.
    pub fn with_header(status: u16, name: &str, value: &str, body: &str) -> Reply {
        Reply::Answer {
            status,
            headers: vec![(name.to_string(), value.to_string())],
            body: body.as_bytes().to_vec(),
        }
    }
}

type Handler = dyn Fn(&Received) -> Reply + Send + Sync;

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Connections of held requests the client closed.
    closed: AtomicUsize,
    changed: Notify,
}

/// The server; stops when dropped.
pub struct Server {
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub base: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// A plain HTTP server answering with `handler`.
    pub async fn start(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Server {
        Server::start_with(None, handler).await
    }

    /// A server speaking TLS with `tls` (when given) and answering with
    /// `handler`.
    pub async fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = match tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let shared = Arc::new(Shared::default());
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { return };
                    let (shared, handler, acceptor) = (shared.clone(), handler.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        match acceptor {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(tcp).await {
                                    serve(stream, &shared, &*handler).await;
                                }
                            }
                            None => serve(tcp, &shared, &*handler).await,
                        }
                    });
                }
            }
        });
        Server { base, shared, task }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits (at most 5 s) until `n` requests have arrived.
    pub async fn wait_received(&self, n: usize) {
        self.wait(|s| s.received.lock().unwrap().len() >= n, "requests").await;
    }

    /// Waits (at most 5 s) until the client closed `n` held connections.
    pub async fn wait_closed(&self, n: usize) {
        self.wait(|s| s.closed.load(Ordering::Acquire) >= n, "closed connections")
            .await;
    }

    async fn wait(&self, done: impl Fn(&Shared) -> bool, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let changed = self.shared.changed.notified();
            if done(&self.shared) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("the test server did not see the expected {what} within 5 s");
            }
        }
    }
}

/// Reads one request from `stream`, records it and replies.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: &Shared, handler: &Handler) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let reply = handler(&request);
    shared.received.lock().unwrap().push(request.clone());
    shared.changed.notify_waiters();
    match reply {
        Reply::Answer { status, headers, body } => {
            let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (name, value) in &headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            let no_body = request.method == "HEAD" || status == 204 || status == 304;
            if !no_body {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            head.push_str("Connection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            if !no_body {
                let _ = stream.write_all(&body).await;
            }
            let _ = stream.shutdown().await;
        }
        Reply::Cut(part) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                part.len() + 100
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(part.as_bytes()).await;
            let _ = stream.flush().await;
        }
        Reply::Hang => {
            let mut buf = [0u8; 1024];
            // Until the client closes (EOF or reset).
            while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            shared.closed.fetch_add(1, Ordering::AcqRel);
            shared.changed.notify_waiters();
        }
    }
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Received> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        let n = stream.read(&mut buf).await.ok().filter(|n| *n > 0)?;
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = raw[end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&buf[..n]);
    }
    Some(Received {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Whatever")
}
