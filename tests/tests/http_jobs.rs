//! `http` jobs end to end: a real controller and agent, and a real HTTP
//! server in the test process on 127.0.0.1:0.
//!
//! * A job succeeds and its output holds the status line and the body; one
//!   answered 503 with `Retry-After: 2` is retried no sooner than 2 s later
//!   although its backoff is 100ms; one answered 404 is dead after one
//!   attempt with a reason naming the 404; one whose server never answers
//!   ends `timed_out` at the job's `timeout: 1s`.
//! * A secret in a header (`${WORKER_TEST_SECRET}`, allowed on the agent with
//!   `--allow-env`) reaches the server, and appears nowhere on the
//!   controller's side: not in `runs get`, `jobs get`, the events, nor in the
//!   bytes of the SQLite file and its WAL (nor in any log of the test).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use chrono::{DateTime, Utc};
use tokio_stream::StreamExt;
use worker_proto::v1 as pb;
use worker_tests::json::{self, str_field};
use worker_tests::{TestEnv, Value};

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Requests per path.
    hits: HashMap<String, u32>,
    /// Bodies per path.
    bodies: HashMap<String, Vec<String>>,
    /// `Authorization` headers received on `/secret`.
    authorization: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

/// The server the jobs call; answers by path (see each handler).
async fn start_server() -> (SocketAddr, Shared) {
    let seen: Shared = Arc::default();
    let app = Router::new()
        .route("/ok", any(ok))
        .route("/busy", any(busy))
        .route("/missing", any(missing))
        .route("/never", any(never))
        .route("/secret", any(secret))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn record(seen: &Shared, path: &str, body: String) -> u32 {
    let mut seen = seen.lock().unwrap();
    seen.bodies.entry(path.to_string()).or_default().push(body);
    let hits = seen.hits.entry(path.to_string()).or_default();
    *hits += 1;
    *hits
}

async fn ok(State(seen): State<Shared>, body: String) -> impl IntoResponse {
    record(&seen, "/ok", body);
    (StatusCode::OK, "hello from the test server\n")
}

/// 503 with `Retry-After: 2` the first time, then 200.
async fn busy(State(seen): State<Shared>, body: String) -> axum::response::Response {
    if record(&seen, "/busy", body) == 1 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "2")],
            "come back later\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "done\n").into_response()
    }
}

async fn missing(State(seen): State<Shared>, body: String) -> impl IntoResponse {
    record(&seen, "/missing", body);
    (StatusCode::NOT_FOUND, "no such lead\n")
}

/// Never answers.
async fn never(State(seen): State<Shared>, body: String) -> &'static str {
    record(&seen, "/never", body);
    std::future::pending::<()>().await;
    unreachable!()
}

/// Echoes the `Authorization` header back, as careless servers do.
async fn secret(State(seen): State<Shared>, headers: HeaderMap, body: String) -> String {
    record(&seen, "/secret", body);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    seen.lock().unwrap().authorization.push(auth.clone());
    format!("you sent: {auth}\n")
}

fn ts(attempt: &Value, key: &str) -> DateTime<Utc> {
    json::ts_field(attempt, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_jobs_succeed_are_retried_fail_for_good_and_time_out() {
    let (addr, seen) = start_server().await;
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
jobs:
  http.ok:
    http: "http://{addr}/ok"
    retry: {{ max_attempts: 1 }}
  http.busy:
    http:
      method: POST
      url: "http://{addr}/busy"
      headers: {{ Content-Type: application/json }}
      body: '{{"lead": {{{{payload.id}}}}, "attempt": {{{{run.attempt}}}}}}'
    retry: {{ max_attempts: 3, backoff: fixed, initial_delay: 100ms, jitter: 0 }}
  http.missing:
    http: "http://{addr}/missing"
    retry: {{ max_attempts: 3, backoff: fixed, initial_delay: 100ms, jitter: 0 }}
  http.never:
    http: "http://{addr}/never"
    timeout: 1s
    retry: {{ max_attempts: 1 }}
"#
    ));
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "http-agent", 4).await;

    let ok = ctl.cli_enqueue("http.ok", &[]).await;
    let busy = ctl.cli_enqueue("http.busy", &["--payload", r#"{"id": 42}"#]).await;
    let missing = ctl.cli_enqueue("http.missing", &[]).await;
    let never = ctl.cli_enqueue("http.never", &[]).await;

    // Succeeds; the output is the status line and the body.
    let run = ctl.wait_run(&ok, Duration::from_secs(30)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");
    let run = ctl.cli_run(&ok).await;
    let attempts = json::attempts(&run);
    assert_eq!(attempts.len(), 1, "{run:#}");
    assert_eq!(
        str_field(&attempts[0], "output"),
        "HTTP/1.1 200 OK\nhello from the test server\n",
        "{run:#}"
    );

    // 503 with Retry-After: 2, then 200; the retry waits the 2 s, not the 100ms.
    let run = ctl.wait_run(&busy, Duration::from_secs(30)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");
    let run = ctl.cli_run(&busy).await;
    let attempts = json::attempts(&run);
    assert_eq!(attempts.len(), 2, "{run:#}");
    assert_eq!(str_field(&attempts[0], "outcome"), "failed", "{run:#}");
    assert_eq!(
        str_field(&attempts[0], "error"),
        format!("HTTP 503 Service Unavailable from POST http://{addr}/busy"),
        "{run:#}"
    );
    assert_eq!(
        str_field(&attempts[0], "output"),
        "HTTP/1.1 503 Service Unavailable\ncome back later\n"
    );
    assert_eq!(str_field(&attempts[1], "outcome"), "succeeded", "{run:#}");
    let gap = (ts(&attempts[1], "started_at") - ts(&attempts[0], "finished_at")).num_milliseconds();
    assert!(
        gap >= 1900,
        "the retry started {gap}ms after the 503, before its Retry-After of 2s: {run:#}"
    );
    let bodies = seen.lock().unwrap().bodies["/busy"].clone();
    assert_eq!(
        bodies,
        [r#"{"lead": 42, "attempt": 1}"#, r#"{"lead": 42, "attempt": 2}"#]
    );

    // 404: dead after one attempt, the reason names the status.
    let run = ctl.wait_run(&missing, Duration::from_secs(30)).await;
    assert_eq!(run.state, "dead", "{run:?}");
    assert_eq!(run.attempts.len(), 1, "{run:?}");
    assert!(run.reason.contains("404"), "reason {:?}", run.reason);
    assert_eq!(
        run.attempts[0].error,
        format!("HTTP 404 Not Found from GET http://{addr}/missing")
    );
    assert_eq!(seen.lock().unwrap().hits["/missing"], 1);

    // No answer: the job's timeout ends the attempt as timed_out.
    let run = ctl.wait_run(&never, Duration::from_secs(30)).await;
    assert_eq!(run.attempts.len(), 1, "{run:?}");
    assert_eq!(run.attempts[0].outcome, "timed_out", "{run:?}");
    assert_eq!(run.attempts[0].error, "timed out after 1s", "{run:?}");
    assert_eq!(seen.lock().unwrap().hits["/never"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_headers_reach_the_server_and_are_never_stored() {
    let secret = format!("tok-{}", ulid::Ulid::new());
    let (addr, seen) = start_server().await;
    let env = TestEnv::new();
    env.write_config(&format!(
        r#"
jobs:
  http.secret:
    http:
      url: "http://{addr}/secret"
      headers: {{ Authorization: "Bearer ${{WORKER_TEST_SECRET}}" }}
    retry: {{ max_attempts: 1 }}
"#
    ));
    let ctl = env.start_controller().await;
    let _agent = env
        .start_agent_with_env(
            &ctl,
            "secret-agent",
            1,
            &[("WORKER_TEST_SECRET", secret.as_str())],
            &["--allow-env", "WORKER_TEST_*"],
        )
        .await;

    let mut client = ctl.client().await;
    let mut events = client
        .watch_events(pb::WatchEventsRequest {
            job: "http.secret".into(),
            from_start: true,
            ..Default::default()
        })
        .await
        .expect("WatchEvents")
        .into_inner();

    let id = ctl.cli_enqueue("http.secret", &[]).await;
    let run = ctl.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(
        seen.lock().unwrap().authorization,
        [format!("Bearer {secret}")],
        "the server did not get the secret"
    );

    let leaks = |what: &str, text: &str| {
        assert!(!text.contains(&secret), "the secret is in {what}:\n{text}");
    };
    let shown = ctl.cli(&["runs", "get", &id]).await.expect_code(0).stdout;
    leaks("runs get -o json", &shown);
    let run = ctl.cli_run(&id).await;
    assert_eq!(
        str_field(&json::attempts(&run)[0], "output"),
        "HTTP/1.1 200 OK\nyou sent: Bearer ***\n",
        "{run:#}"
    );
    let job = ctl.cli(&["jobs", "get", "http.secret"]).await.expect_code(0).stdout;
    leaks("jobs get -o json", &job);
    assert!(job.contains("${WORKER_TEST_SECRET}"), "{job}");

    // The events up to the run's end.
    let mut seen_events = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("no event within 10 s")
            .expect("event stream ended")
            .expect("event stream");
        let done = event.run_id == id && event.state == "succeeded";
        seen_events.push(format!("{event:?}"));
        if done {
            break;
        }
    }
    leaks("the events", &seen_events.join("\n"));

    // The store's bytes, and everything else the test's processes wrote.
    let db = env.db_path();
    let wal = db.with_extension("db-wal");
    assert!(db.is_file(), "no SQLite file at {}", db.display());
    for path in [db.clone(), wal] {
        if let Ok(bytes) = std::fs::read(&path) {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret is in {}",
                path.display()
            );
        }
    }
    for entry in std::fs::read_dir(env.path()).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret is in {}",
                path.display()
            );
        }
    }
}
