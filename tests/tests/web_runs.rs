//! The web UI's runs, queue and dead-letter queue pages, end to end: a real
//! controller (and agent where runs must run) driven over HTTP as a browser
//! would (`WebSession`), with the effects checked over gRPC.
//!
//! * a run's page shows its attempts, transitions, stored output, payload
//!   (escaped) and its workflow's graph; the list filters by job, state and
//!   time, and a bad filter is answered next to its field;
//! * `/runs/{id}/output` streams a running job's output as server-sent
//!   events (chunks, then an end naming the final state); a running run is
//!   cancelled from its page;
//! * a run that always fails lands in the DLQ: `/dlq` lists it, a retry
//!   through the form runs it again, a selection is purged;
//! * a queued run (no agent) is cancelled from `/queue`;
//! * a viewer sees no controls and its forged purge is refused (403).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use worker_proto::v1 as pb;
use worker_tests::auth::BOOTSTRAP_SECRET;
use worker_tests::web::WebSession;
use worker_tests::{Controller, TestEnv, wait_for};

const WAIT: Duration = Duration::from_secs(20);

const CONFIG: &str = r#"
jobs:
  hello:
    shell: "echo hello-from-job; echo '<script>alert(1)</script>'"
  counter:
    shell: "for i in 1 2 3; do echo line$i; sleep 0.3; done"
  sleeper:
    shell: "sleep 30"
  broken:
    shell: "echo broken >&2; exit 3"
    retry: { max_attempts: 1 }
"#;

fn http(ctl: &Controller) -> SocketAddr {
    ctl.http_addr.expect("the controller serves HTTP (--http-listen)")
}

async fn enqueue(ctl: &Controller, job: &str, payload: &str) -> String {
    ctl.client()
        .await
        .enqueue(pb::EnqueueRequest {
            job: job.into(),
            payload: payload.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("Enqueue {job}: {e}"))
        .into_inner()
        .run
        .expect("a run")
        .id
}

/// Reads the server-sent events of `path` until an `end` or `failure` event
/// (or the stream's end), at most 20 s.
async fn read_sse(addr: SocketAddr, path: &str, cookie: &str) -> String {
    let call = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            let ended = |event: &str| {
                text.find(&format!("event: {event}\n"))
                    .is_some_and(|at| text[at..].contains("\n\n"))
            };
            if ended("end") || ended("failure") {
                break;
            }
        }
        String::from_utf8_lossy(&raw).into_owned()
    };
    tokio::time::timeout(WAIT, call)
        .await
        .unwrap_or_else(|_| panic!("GET {path}: no end event within {WAIT:?}"))
}

/// `(event, data)` pairs of an SSE text (HTTP head and chunk sizes ignored).
fn events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut event = None;
    for line in text.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = Some(e.to_string());
        } else if let Some(d) = line.strip_prefix("data: ")
            && let Some(e) = event.take()
        {
            out.push((e, d.to_string()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_page_list_filters_and_escaping() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "web-1", 2).await;
    let mut web = WebSession::sign_in(http(&ctl), None).await;

    let hello = enqueue(&ctl, "hello", r#"{"note":"<script>payload()</script>"}"#).await;
    assert_eq!(ctl.wait_run(&hello, WAIT).await.state, "succeeded");
    let broken = enqueue(&ctl, "broken", "").await;
    assert_eq!(ctl.wait_run(&broken, WAIT).await.state, "dead");

    let page = web.get(&format!("/runs/{hello}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let b = &page.body;
    assert!(b.contains("id=\"run-state\""), "{b}");
    assert!(
        b.contains("id=\"attempts\"") && b.contains("web-1"),
        "attempts with the agent: {b}"
    );
    assert!(b.contains("id=\"transitions\"") && b.contains(">running</span>"), "{b}");
    assert!(
        b.contains("id=\"output\"") && b.contains("hello-from-job"),
        "stored output: {b}"
    );
    assert!(
        !b.contains("data-follow=\""),
        "a finished run's output is not followed: {b}"
    );
    assert!(
        b.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "output escaped: {b}"
    );
    assert!(
        b.contains("&lt;script&gt;payload()&lt;/script&gt;"),
        "payload escaped: {b}"
    );
    assert!(!b.contains("<script>alert") && !b.contains("<script>payload"), "{b}");
    assert!(
        b.contains("id=\"retry-run\"") && !b.contains("id=\"cancel-run\""),
        "{b}"
    );

    // Retry of a succeeded run: a new run.
    let answer = web.post(&format!("/runs/{hello}/retry"), &[]).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let to = answer.header("location").expect("redirect").to_string();
    let copy = to.strip_prefix("/runs/").expect("to the new run's page").to_string();
    assert_ne!(copy, hello);
    assert_eq!(ctl.wait_run(&copy, WAIT).await.state, "succeeded");

    // Filters.
    let list = web.get("/runs?job=hello").await;
    assert_eq!(list.status, 200);
    assert!(list.body.contains("id=\"runs-table\"") && list.body.contains(&hello) && list.body.contains(&copy));
    assert!(!list.body.contains(&broken), "{}", list.body);
    let dead = web.get("/runs?state=dead").await;
    assert!(
        dead.body.contains(&broken) && !dead.body.contains(&hello),
        "{}",
        dead.body
    );
    let later = web.get("/runs?since=2999-01-01T00:00").await;
    assert!(
        !later.body.contains(&hello) && later.body.contains("No run matches"),
        "{}",
        later.body
    );
    let earlier = web.get("/runs?since=2000-01-01T00:00&until=2999-01-01T00:00:00Z").await;
    assert!(earlier.body.contains(&hello) && earlier.body.contains(&broken));
    let bad = web.get("/runs?state=sideways").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body.contains("id=\"state-error\"") && bad.body.contains("sideways"),
        "{}",
        bad.body
    );
    let bad = web.get("/runs?since=yesterday").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("id=\"since-error\""), "{}", bad.body);

    // A workflow: b waits on a.
    let batch = ctl
        .client()
        .await
        .enqueue_batch(pb::EnqueueBatchRequest {
            runs: vec![
                pb::EnqueueRequest {
                    job: "hello".into(),
                    r#ref: "a".into(),
                    ..Default::default()
                },
                pb::EnqueueRequest {
                    job: "counter".into(),
                    r#ref: "b".into(),
                    depends_on: vec!["a".into()],
                    ..Default::default()
                },
            ],
        })
        .await
        .expect("EnqueueBatch")
        .into_inner();
    let ids: Vec<String> = batch
        .results
        .iter()
        .map(|r| r.run.as_ref().unwrap().id.clone())
        .collect();
    let page = web.get(&format!("/runs/{}", ids[1])).await;
    let b = &page.body;
    assert!(b.contains("id=\"workflow\""), "{b}");
    assert!(
        b.contains(&format!("href=\"/runs/{}\"", ids[0])),
        "links its upstream: {b}"
    );
    assert!(
        b.find("step 1").unwrap() < b.find("(this run)").unwrap(),
        "upstream first: {b}"
    );
    for id in &ids {
        ctl.wait_run(id, WAIT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_output_over_sse_and_cancel_from_the_page() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "web-2", 2).await;
    let mut web = WebSession::sign_in(http(&ctl), None).await;
    let cookie = web.cookie.clone().unwrap();

    let id = enqueue(&ctl, "counter", "").await;
    ctl.wait_state(&id, "running", WAIT).await;
    let page = web.get(&format!("/runs/{id}")).await;
    assert!(
        page.body.contains(&format!("data-follow=\"/runs/{id}/output\"")) && page.body.contains("data-follow-status"),
        "{}",
        page.body
    );
    let text = read_sse(http(&ctl), &format!("/runs/{id}/output"), &cookie).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    let events = events(&text);
    let chunks: String = events
        .iter()
        .filter(|(e, _)| e == "chunk")
        .map(|(_, d)| serde_json::from_str::<String>(d).expect("chunk data is a JSON string"))
        .collect();
    assert!(chunks.contains("line1\nline2\nline3\n"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(e, d)| e == "attempt" && d.contains("attempt 1 on agent web-2")),
        "{events:?}"
    );
    let (last, data) = events.last().expect("events");
    assert_eq!(last, "end", "{events:?}");
    assert!(data.contains("succeeded"), "{data}");

    // An unknown run: one failure event.
    let text = read_sse(http(&ctl), "/runs/01JZZZZZZZZZZZZZZZZZZZZZZZ/output", &cookie).await;
    let events = self::events(&text);
    assert!(
        events.len() == 1 && events[0].0 == "failure" && events[0].1.contains("does not exist"),
        "{events:?}"
    );

    // Cancel a running run from its page.
    let sleeper = enqueue(&ctl, "sleeper", "").await;
    ctl.wait_state(&sleeper, "running", WAIT).await;
    let page = web.get(&format!("/runs/{sleeper}")).await;
    assert!(
        page.body.contains("id=\"cancel-run\"") && !page.body.contains("id=\"retry-run\""),
        "{}",
        page.body
    );
    let answer = web.post(&format!("/runs/{sleeper}/cancel"), &[]).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(ctl.wait_run(&sleeper, WAIT).await.state, "cancelled");
    let page = web.get(&format!("/runs/{sleeper}")).await;
    assert!(page.body.contains("cancel"), "{}", page.body);
    assert!(!page.body.contains("id=\"cancel-run\""), "no cancel once over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_retry_one_and_purge_a_selection() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "web-3", 4).await;
    let mut web = WebSession::sign_in(http(&ctl), None).await;

    let mut dead = Vec::new();
    for _ in 0..3 {
        let id = enqueue(&ctl, "broken", "").await;
        assert_eq!(ctl.wait_run(&id, WAIT).await.state, "dead");
        dead.push(id);
    }
    let page = web.get("/dlq").await;
    assert_eq!(page.status, 200);
    let b = &page.body;
    assert!(b.contains("id=\"dlq-form\"") && b.contains("id=\"dlq-table\""), "{b}");
    for id in &dead {
        assert!(b.contains(&format!("id=\"retry-dlq-{id}\"")), "{b}");
        assert!(b.contains(&format!("name=\"id\" value=\"{id}\"")), "{b}");
    }
    assert!(
        b.contains("id=\"dlq-purge-all\"") && b.contains("Really purge all 3 dead runs?"),
        "{b}"
    );

    // Retry one through its button: it runs again (and fails again).
    let answer = web.post("/dlq/retry", &[("only", &dead[0])]).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let flash = web.get("/dlq").await;
    assert!(flash.body.contains("retried 1 run"), "{}", flash.body);
    let client = ctl.client().await;
    wait_for("the retried run to run again", WAIT, || {
        let mut client = client.clone();
        let id = dead[0].clone();
        async move {
            let run = client
                .get_run(pb::GetRunRequest { id })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if run.attempts.len() == 2 && run.state == "dead" {
                Ok(())
            } else {
                Err(format!("{} attempts, {}", run.attempts.len(), run.state))
            }
        }
    })
    .await;

    // Purge a selection of two.
    let answer = web.post("/dlq/purge", &[("id", &dead[1]), ("id", &dead[2])]).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let page = web.get("/dlq").await;
    assert!(page.body.contains("purged 2 runs"), "{}", page.body);
    for id in &dead[1..] {
        let gone = ctl.client().await.get_run(pb::GetRunRequest { id: id.clone() }).await;
        assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound);
        assert!(!page.body.contains(id.as_str()));
    }
    assert!(page.body.contains(dead[0].as_str()));

    // Nothing selected: said so, nothing done.
    let answer = web.post("/dlq/purge", &[]).await;
    assert_eq!(answer.status, 303);
    assert!(web.get("/dlq").await.body.contains("select at least one run"));
    assert_eq!(ctl.get_run(&dead[0]).await.state, "dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_queued_run_from_the_queue_page() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let mut web = WebSession::sign_in(http(&ctl), None).await;
    let keep = enqueue(&ctl, "hello", "").await;
    let drop = enqueue(&ctl, "hello", "").await;

    let page = web.get("/queue").await;
    assert_eq!(page.status, 200);
    let b = &page.body;
    assert!(
        b.contains("id=\"queue-table\"") && b.contains("data-select-all=\"id\""),
        "{b}"
    );
    assert!(b.contains(&format!("value=\"{drop}\"")) && b.contains(&keep), "{b}");
    let answer = web.post("/queue/cancel", &[("id", &drop)]).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let page = web.get("/queue").await;
    assert!(page.body.contains("cancelled 1 run"), "{}", page.body);
    assert_eq!(ctl.get_run(&drop).await.state, "cancelled");
    assert_eq!(ctl.get_run(&keep).await.state, "queued");
    assert!(!page.body.contains(&drop) && page.body.contains(&keep));

    // An unknown id is reported by id.
    let answer = web.post("/queue/cancel", &[("id", "01JZZZZZZZZZZZZZZZZZZZZZZZ")]).await;
    assert_eq!(answer.status, 303);
    let page = web.get("/queue").await;
    assert!(
        page.body.contains("1 failed: 01JZZZZZZZZZZZZZZZZZZZZZZZ"),
        "{}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_controls_and_cannot_purge() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let viewer = ctl.create_token(BOOTSTRAP_SECRET, "web-viewer", "viewer", &[]).await;
    let agent_token = ctl.create_token(BOOTSTRAP_SECRET, "web-agent", "agent", &[]).await;
    let _agent = env
        .start_agent_with_token(&ctl, "web-4", &agent_token, BOOTSTRAP_SECRET, &[])
        .await;
    let mut admin = ctl.client_with_token(Some(BOOTSTRAP_SECRET)).await;
    let enqueue = |job: &str| pb::EnqueueRequest {
        job: job.into(),
        ..Default::default()
    };
    let dead = admin
        .enqueue(enqueue("broken"))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .id;
    let running = admin
        .enqueue(enqueue("sleeper"))
        .await
        .unwrap()
        .into_inner()
        .run
        .unwrap()
        .id;
    wait_for("the runs to be dead and running", WAIT, || {
        let mut admin = admin.clone();
        let (dead, running) = (dead.clone(), running.clone());
        async move {
            let d = admin
                .get_run(pb::GetRunRequest { id: dead })
                .await
                .unwrap()
                .into_inner()
                .state;
            let r = admin
                .get_run(pb::GetRunRequest { id: running })
                .await
                .unwrap()
                .into_inner()
                .state;
            if d == "dead" && r == "running" {
                Ok(())
            } else {
                Err(format!("{d}, {r}"))
            }
        }
    })
    .await;

    let mut web = WebSession::sign_in(http(&ctl), Some(&viewer)).await;
    let page = web.get("/dlq").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(&dead), "the viewer sees the DLQ: {}", page.body);
    for control in [
        "retry-dlq-",
        "purge-dlq-",
        "dlq-purge-all",
        "dlq-retry-all",
        "dlq-purge-selected",
        "name=\"id\"",
    ] {
        assert!(
            !page.body.contains(control),
            "{control} offered to a viewer: {}",
            page.body
        );
    }
    let page = web.get(&format!("/runs/{running}")).await;
    assert!(!page.body.contains("id=\"cancel-run\""), "{}", page.body);
    assert!(page.body.contains("data-follow="), "a viewer may follow the output");
    let page = web.get(&format!("/runs/{dead}")).await;
    assert!(!page.body.contains("id=\"retry-run\""), "{}", page.body);

    // Forged with the viewer's valid CSRF token: refused, nothing purged.
    assert!(
        web.csrf.is_some(),
        "the viewer's pages carry a CSRF token (sign-out form)"
    );
    let answer = web.post("/dlq/purge", &[("all", "true")]).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let answer = web.post(&format!("/runs/{running}/cancel"), &[]).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let dlq = admin
        .list_dlq(pb::ListDlqRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(dlq.len(), 1, "nothing purged");
    let run = admin
        .get_run(pb::GetRunRequest { id: running.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.state, "running");
    admin.cancel_run(pb::RunRequest { id: running }).await.unwrap();
}
