//! A real HTTP server on loopback that records what alert channels receive
//! (Slack and Discord webhooks, signed webhooks), answering each path with a
//! status the test chooses. Tests wait on what arrives, never on sleeps.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::Value;
use tokio::sync::Notify;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Its path (`/slack`).
    pub path: String,
    /// Headers, names lower case.
    pub headers: HashMap<String, String>,
    /// The body as text.
    pub body: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Received>>,
    /// Statuses to answer per path, in order; then `always`, then 200.
    queued: Mutex<HashMap<String, VecDeque<u16>>>,
    always: Mutex<HashMap<String, u16>>,
    arrived: Notify,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    base: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: String) -> (StatusCode, String) {
    let path = uri.path().to_string();
    let status = {
        let mut queued = shared.queued.lock().unwrap();
        queued.get_mut(&path).and_then(VecDeque::pop_front)
    }
    .or_else(|| shared.always.lock().unwrap().get(&path).copied())
    .unwrap_or(200);
    let received = Received {
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        json: serde_json::from_str(&body).unwrap_or(Value::Null),
        body,
    };
    shared.requests.lock().unwrap().push(received);
    shared.arrived.notify_waiters();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let answer = if path.contains("chat.postMessage") {
        r#"{"ok":true}"#.to_string()
    } else if status == StatusCode::NO_CONTENT {
        String::new()
    } else if status.is_success() {
        "ok".to_string()
    } else {
        format!("receiver says {status}")
    };
    (status, answer)
}

impl Receiver {
    /// Starts a receiver on `127.0.0.1:0`.
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            base: format!("http://{addr}"),
            shared,
            server,
        }
    }

    /// The URL of `path` (`/slack`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Answers the next requests to `path` with these statuses, in order.
    pub fn respond(&self, path: &str, statuses: &[u16]) {
        self.shared
            .queued
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(statuses);
    }

    /// Answers every request to `path` (after queued ones) with `status`.
    pub fn always(&self, path: &str, status: u16) {
        self.shared.always.lock().unwrap().insert(path.to_string(), status);
    }

    /// What `path` received so far, in order.
    pub fn received(&self, path: &str) -> Vec<Received> {
        self.shared
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `check` holds for what `path` received; returns it.
    pub async fn wait(
        &self,
        path: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            let got = self.received(path);
            if check(&got) {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let got = self.received(path);
                if check(&got) {
                    return got;
                }
                panic!(
                    "{what}: not received within {timeout:?} on {path}; received:\n{:#?}",
                    got.iter().map(|r| &r.json).collect::<Vec<_>>()
                );
            }
        }
    }
}
