//! The agent SDK end to end: the example `enrich-agent` (examples/enrich-agent,
//! handler `leads.enrich`) runs as an agent of a real controller and enriches
//! leads through an enrichment API served by the test on loopback.
//!
//! * a `handler: leads.enrich` job succeeds, and the attempt's output holds
//!   what the handler logged;
//! * what it reported with `ctx.metric` / `ctx.span` is in `runs get` and
//!   in the job's daily sums (`jobs get`);
//! * the API's `503` is a retryable failure (the second attempt succeeds), its
//!   `404` a permanent one (dead after one attempt);
//! * handler jobs go only to the agent that registered the handler (a plain
//!   `worker-agent` connected at the same time runs the shell job instead),
//!   and a handler nobody registered stays queued;
//! * the handler sees its cancellation: `workerctl runs cancel` and a job
//!   `timeout` both end the attempt promptly, with its `cancelled:` line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use worker_tests::json::{self, str_field};
use worker_tests::{TestEnv, Value, wait_for};

/// The enrichment API: answers `POST /enrich` by the payload's `lead_id`.
///
/// * `L-flaky`: `503` the first time, then as any other lead;
/// * `L-missing`: `404`;
/// * `L-hang`: never answers (the request stays open);
/// * any other: `200 {"company": "Acme Corp", "title": "CTO", "cost_usd": 0.02}`.
struct EnrichApi {
    base: String,
    /// Requests received per lead id.
    calls: Arc<Mutex<HashMap<String, u32>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for EnrichApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

type Calls = Arc<Mutex<HashMap<String, u32>>>;

async fn enrich(State(calls): State<Calls>, body: String) -> (StatusCode, String) {
    let lead: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let id = lead["lead_id"].as_str().unwrap_or("").to_string();
    let seen = {
        let mut calls = calls.lock().unwrap();
        let n = calls.entry(id.clone()).or_default();
        *n += 1;
        *n
    };
    match id.as_str() {
        "L-flaky" if seen == 1 => (StatusCode::SERVICE_UNAVAILABLE, "try again later".into()),
        "L-missing" => (StatusCode::NOT_FOUND, r#"{"error":"unknown lead"}"#.into()),
        "L-hang" => std::future::pending().await,
        _ => (
            StatusCode::OK,
            r#"{"company": " Acme Corp ", "title": "CTO", "cost_usd": 0.02}"#.into(),
        ),
    }
}

impl EnrichApi {
    async fn start() -> Self {
        let calls = Calls::default();
        let app = Router::new().route("/enrich", post(enrich)).with_state(calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("enrichment API");
        });
        Self {
            base: format!("http://{addr}"),
            calls,
            server,
        }
    }

    fn calls(&self, lead: &str) -> u32 {
        self.calls.lock().unwrap().get(lead).copied().unwrap_or(0)
    }

    /// Waits until the API has received `lead`'s request.
    async fn wait_call(&self, lead: &str) {
        wait_for(
            &format!("the API to be asked about {lead}"),
            Duration::from_secs(15),
            || async {
                match self.calls(lead) {
                    0 => Err(format!("calls: {:?}", self.calls.lock().unwrap())),
                    _ => Ok(()),
                }
            },
        )
        .await;
    }
}

fn payload(lead: &str) -> String {
    format!(
        r#"{{"lead_id":"{lead}","email":"{}@Example.com"}}"#,
        lead.to_lowercase()
    )
}

/// The attempts of run `id` as `workerctl runs get -o json` shows them.
async fn attempts(ctl: &worker_tests::Controller, id: &str) -> (Value, Vec<Value>) {
    let run = ctl.cli_run(id).await;
    let attempts = json::attempts(&run).clone();
    (run, attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_succeed_retry_fail_and_go_only_to_their_agent() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  leads.enrich:
    handler: leads.enrich
    timeout: 1m
    retry: { max_attempts: 3, backoff: fixed, initial_delay: 200ms, jitter: 0 }
  leads.score:
    handler: leads.score
  hello:
    shell: "echo hello from a shell job"
"#,
    );
    let api = EnrichApi::start().await;
    let ctl = env.start_controller().await;
    let _plain = env.start_agent(&ctl, "plain", 4).await;
    let _sdk = env.start_enrich_agent(&ctl, "enricher", 2, &api.base).await;

    let agents = ctl.agents().await;
    let handlers = |name: &str| {
        let agent = agents.iter().find(|a| a.name == name).expect("agent listed");
        (agent.executors.clone(), agent.handlers.clone())
    };
    assert_eq!(
        handlers("enricher"),
        (vec!["handler".to_string()], vec!["leads.enrich".to_string()])
    );
    assert!(handlers("plain").1.is_empty(), "{agents:?}");

    // Nobody registered `leads.score`: enqueued first, it waits while the rest runs.
    let unassigned = ctl.cli_enqueue("leads.score", &["--payload", "{}"]).await;
    let ok = ctl.cli_enqueue("leads.enrich", &["--payload", &payload("L-ok")]).await;
    let flaky = ctl
        .cli_enqueue("leads.enrich", &["--payload", &payload("L-flaky")])
        .await;
    let missing = ctl
        .cli_enqueue("leads.enrich", &["--payload", &payload("L-missing")])
        .await;
    let mut more = Vec::new();
    for i in 0..4 {
        more.push(
            ctl.cli_enqueue("leads.enrich", &["--payload", &payload(&format!("L-{i}"))])
                .await,
        );
    }
    let shell = ctl.cli_enqueue("hello", &[]).await;

    let done = ctl.wait_run(&ok, Duration::from_secs(30)).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    let (run, tries) = attempts(&ctl, &ok).await;
    assert_eq!(tries.len(), 1, "{run:#}");
    assert_eq!(str_field(&tries[0], "agent"), "enricher", "{run:#}");
    let output = str_field(&tries[0], "output");
    for line in [
        "lead L-ok <l-ok@Example.com>: asking",
        r#"enriched: {"company":"Acme Corp","domain":"example.com","email":"l-ok@example.com","lead_id":"L-ok","title":"CTO"}"#,
        "cost: $0.0200",
    ] {
        assert!(output.contains(line), "missing {line:?} in the output of {run:#}");
    }
    // What the handler reported with ctx.metric and ctx.span.
    let metrics = &tries[0]["metrics"];
    assert_eq!(metrics["api_cost_usd"].as_f64(), Some(0.02), "{run:#}");
    assert_eq!(metrics["items"].as_f64(), Some(1.0), "{run:#}");
    let mut spans: Vec<(&str, Option<u64>)> = json::arr(&tries[0], "spans")
        .iter()
        .map(|s| (str_field(s, "name"), s["count"].as_u64()))
        .collect();
    spans.sort();
    assert_eq!(spans, [("fetch", Some(1)), ("transform", Some(1))], "{run:#}");

    // 503: retryable, the second attempt succeeds.
    let done = ctl.wait_run(&flaky, Duration::from_secs(30)).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    let (run, tries) = attempts(&ctl, &flaky).await;
    let outcomes: Vec<&str> = tries.iter().map(|a| str_field(a, "outcome")).collect();
    assert_eq!(outcomes, ["failed", "succeeded"], "{run:#}");
    let error = str_field(&tries[0], "error");
    assert!(error.contains("503") && error.contains("try again later"), "{run:#}");
    assert!(str_field(&tries[1], "output").contains("(attempt 2)"), "{run:#}");
    assert_eq!(api.calls("L-flaky"), 2);

    // 404: permanent, dead after one attempt.
    let done = ctl.wait_run(&missing, Duration::from_secs(30)).await;
    assert_eq!(done.state, "dead", "{done:?}");
    let (run, tries) = attempts(&ctl, &missing).await;
    assert_eq!(tries.len(), 1, "{run:#}");
    assert_eq!(str_field(&tries[0], "outcome"), "failed", "{run:#}");
    assert!(str_field(&tries[0], "error").contains("404 Not Found"), "{run:#}");
    assert_eq!(api.calls("L-missing"), 1);

    // Every handler attempt ran on the SDK agent; the shell job on the plain one.
    for id in &more {
        let done = ctl.wait_run(id, Duration::from_secs(30)).await;
        assert_eq!(done.state, "succeeded", "{done:?}");
    }
    for id in more.iter().chain([&ok, &flaky, &missing]) {
        let (run, tries) = attempts(&ctl, id).await;
        for attempt in &tries {
            assert_eq!(str_field(attempt, "agent"), "enricher", "{run:#}");
        }
    }
    let done = ctl.wait_run(&shell, Duration::from_secs(30)).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    let (run, tries) = attempts(&ctl, &shell).await;
    assert_eq!(str_field(&tries[0], "agent"), "plain", "{run:#}");

    // The job's daily sums: six successful lookups at $0.02.
    let job = ctl.cli_json(&["jobs", "get", "leads.enrich"]).await;
    let sum = |name: &str| -> f64 {
        json::arr(&job, "days")
            .iter()
            .map(|d| d["metrics"][name].as_f64().unwrap_or(0.0))
            .sum()
    };
    assert!((sum("api_cost_usd") - 0.12).abs() < 1e-9, "{job:#}");
    assert_eq!(sum("items"), 6.0, "{job:#}");

    // And on /metrics (recorded when each result is applied, before the runs were read above).
    let text = worker_tests::http::get(ctl.http_addr.expect("HTTP address"), "/metrics", None)
        .await
        .body;
    let series = |s: &str| worker_tests::http::sample(&text, s).unwrap_or_else(|| panic!("{s} missing: {text}"));
    assert!((series(r#"worker_job_metric_total{job="leads.enrich",metric="api_cost_usd"}"#) - 0.12).abs() < 1e-9);
    assert!(series(r#"worker_job_span_seconds_count{job="leads.enrich",span="fetch"}"#) >= 6.0);

    // The unregistered handler's run was never assigned.
    let run = ctl.cli_run(&unassigned).await;
    assert_eq!(str_field(&run, "state"), "queued", "{run:#}");
    assert!(json::attempts(&run).is_empty(), "{run:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_sees_cancel_and_timeout() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  leads.enrich:
    handler: leads.enrich
    timeout: 1m
    retry: { max_attempts: 1 }
  leads.enrich.quick:
    handler: leads.enrich
    timeout: 1s
    retry: { max_attempts: 1 }
"#,
    );
    let api = EnrichApi::start().await;
    let ctl = env.start_controller().await;
    let _sdk = env.start_enrich_agent(&ctl, "enricher", 2, &api.base).await;

    // Cancel while the API holds the request open.
    let id = ctl
        .cli_enqueue("leads.enrich", &["--payload", &payload("L-hang")])
        .await;
    api.wait_call("L-hang").await;
    let asked = Instant::now();
    ctl.cli(&["runs", "cancel", &id]).await.expect_code(0);
    let done = ctl.wait_run(&id, Duration::from_secs(20)).await;
    let took = asked.elapsed();
    assert_eq!(done.state, "cancelled", "{done:?}");
    // Well within the agent's 5s kill grace: the handler stopped by itself.
    assert!(took < Duration::from_secs(4), "cancelled after {took:?}");
    let (run, tries) = attempts(&ctl, &id).await;
    assert_eq!(tries.len(), 1, "{run:#}");
    assert_eq!(str_field(&tries[0], "outcome"), "cancelled", "{run:#}");
    assert!(
        str_field(&tries[0], "output").contains("cancelled: cancel requested"),
        "{run:#}"
    );
    let error = str_field(&tries[0], "error");
    assert!(
        !error.contains("aborted"),
        "the handler did not return by itself: {run:#}"
    );

    // The job's 1s timeout.
    let started = Instant::now();
    let id = ctl
        .cli_enqueue("leads.enrich.quick", &["--payload", &payload("L-hang")])
        .await;
    let done = ctl.wait_run(&id, Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert_eq!(done.state, "dead", "{done:?}");
    assert!(took < Duration::from_secs(5), "timed out after {took:?}");
    let (run, tries) = attempts(&ctl, &id).await;
    assert_eq!(tries.len(), 1, "{run:#}");
    assert_eq!(str_field(&tries[0], "outcome"), "timed_out", "{run:#}");
    assert!(
        str_field(&tries[0], "output").contains("cancelled: timed out after 1s"),
        "{run:#}"
    );
    assert!(
        str_field(&tries[0], "error").starts_with("timed out after 1s"),
        "{run:#}"
    );
    assert_eq!(api.calls("L-hang"), 2);
}
