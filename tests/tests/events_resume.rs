//! Resumable `WatchEvents` end to end: a real controller and agent, a gRPC
//! client that disconnects in the middle of a burst of 10,000 runs and
//! resumes from its last sequence number, and a reader that stops reading
//! for a whole burst and then catches up without being cut off.

use std::collections::HashMap;
use std::time::Duration;

use tokio_stream::StreamExt;
use worker_proto::v1 as pb;
use worker_tests::{Controller, TestEnv};

const CONFIG: &str = r#"
jobs:
  noop:
    builtin: { name: noop }
"#;

/// Runs per batch enqueue (the default `batch_runs` limit).
const BATCH: usize = 1000;

type Events = tonic::Streaming<pb::RunEvent>;

async fn watch(ctl: &Controller, request: pb::WatchEventsRequest) -> Events {
    ctl.client()
        .await
        .watch_events(request)
        .await
        .expect("WatchEvents")
        .into_inner()
}

/// The next event, failing the test on an error, the end of the stream or
/// nothing within `within`.
async fn next_event(events: &mut Events, within: Duration, seen: usize) -> pb::RunEvent {
    tokio::time::timeout(within, events.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?} after {seen} events"))
        .unwrap_or_else(|| panic!("the event stream ended after {seen} events"))
        .unwrap_or_else(|e| panic!("the event stream failed after {seen} events: {e}"))
}

/// Enqueues `batches` batches of [`BATCH`] no-op runs, telling `done` after
/// each one how many batches are in; returns the run ids.
async fn enqueue_batches(
    mut client: pb::controller_service_client::ControllerServiceClient<tonic::transport::Channel>,
    batches: usize,
    done: tokio::sync::watch::Sender<usize>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for b in 0..batches {
        let batch = pb::EnqueueBatchRequest {
            runs: (0..BATCH)
                .map(|_| pb::EnqueueRequest {
                    job: "noop".into(),
                    ..Default::default()
                })
                .collect(),
        };
        let results = client
            .enqueue_batch(batch)
            .await
            .expect("EnqueueBatch")
            .into_inner()
            .results;
        ids.extend(results.into_iter().map(|r| r.run.expect("run").id));
        done.send_replace(b + 1);
    }
    ids
}

/// Every run's transitions as the store records them (GetRun), eight
/// requests at a time.
async fn transitions_of(ctl: &Controller, ids: &[String]) -> HashMap<String, Vec<(String, String)>> {
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in ids.chunks(ids.len().div_ceil(8)) {
        let mut client = ctl.client().await;
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for id in chunk {
                let run = client
                    .get_run(pb::GetRunRequest { id: id.clone() })
                    .await
                    .expect("GetRun")
                    .into_inner();
                let moves = run
                    .transitions
                    .into_iter()
                    .map(|t| (t.from_state, t.to_state))
                    .collect();
                out.push((id, moves));
            }
            out
        });
    }
    let mut all = HashMap::new();
    while let Some(part) = tasks.join_next().await {
        all.extend(part.expect("GetRun task"));
    }
    all
}

/// Checks the union of what a client received: every event once, in
/// sequence order, with no gap (nothing was pruned or filtered), and, for
/// every run, exactly its recorded transitions in order.
fn check_union(received: &[pb::RunEvent], transitions: &HashMap<String, Vec<(String, String)>>) {
    let seqs: Vec<u64> = received.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=received.len() as u64).collect();
    if seqs != expected {
        let first_bad = seqs.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "received {} events whose sequence numbers are not 1..={} (first difference at index {first_bad:?})",
            seqs.len(),
            received.len()
        );
    }
    let mut per_run: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    for e in received {
        assert_eq!(e.r#type, "run", "only runs happen here: {e:?}");
        per_run
            .entry(e.run_id.as_str())
            .or_default()
            .push((e.from_state.clone(), e.state.clone()));
    }
    assert_eq!(per_run.len(), transitions.len(), "events of every run, and no other");
    for (id, moves) in transitions {
        let got = per_run
            .get(id.as_str())
            .unwrap_or_else(|| panic!("no event of run {id}"));
        assert_eq!(got, moves, "events of run {id} against its recorded transitions");
    }
}

/// A client follows a burst of 10,000 runs from the first event,
/// disconnects in the middle, reconnects with its last sequence number and
/// reads on: the union of what it received is every event exactly once, in
/// order, matching the store's transitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_resuming_mid_burst_receives_every_event_once_in_order() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "busy", 32).await;

    let mut events = watch(
        &ctl,
        pb::WatchEventsRequest {
            from_start: true,
            ..Default::default()
        },
    )
    .await;
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(0usize);
    let enqueuer = tokio::spawn(enqueue_batches(ctl.client().await, 10, done_tx));

    // First connection: read until 3,000 events arrived, then hang up.
    let mut received: Vec<pb::RunEvent> = Vec::new();
    while received.len() < 3000 {
        let e = next_event(&mut events, Duration::from_secs(30), received.len()).await;
        received.push(e);
    }
    drop(events);
    let cursor = received.last().unwrap().seq;
    // Stay away while two more batches go in (and their runs go on).
    let away_until = (*done_rx.borrow() + 2).min(10);
    done_rx.wait_for(|n| *n >= away_until).await.expect("enqueuer alive");

    // Second connection, from the cursor, until every run has succeeded.
    let mut events = watch(
        &ctl,
        pb::WatchEventsRequest {
            after_seq: cursor,
            ..Default::default()
        },
    )
    .await;
    let ids = enqueuer.await.expect("enqueuer");
    assert_eq!(ids.len(), 10 * BATCH);
    let mut succeeded = received.iter().filter(|e| e.state == "succeeded").count();
    while succeeded < ids.len() {
        let e = next_event(&mut events, Duration::from_secs(60), received.len()).await;
        succeeded += usize::from(e.state == "succeeded");
        received.push(e);
    }
    let transitions = transitions_of(&ctl, &ids).await;
    let recorded: usize = transitions.values().map(Vec::len).sum();
    assert_eq!(received.len(), recorded, "one event per recorded transition");
    check_union(&received, &transitions);
    eprintln!(
        "[events] {} events of {} runs; disconnected after seq {cursor}",
        received.len(),
        ids.len()
    );
}

/// A reader that reads nothing while 5,000 runs go through (far more
/// commits than the live buffer holds: the agent runs two at a time, so
/// there are thousands of commit rounds against a buffer of 1,024) is not
/// cut off: when it reads, it gets every event, in order, from the store and
/// then live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_reader_catches_up_without_data_loss() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "slow", 2).await;

    // Live from now, filtered to run events of the job.
    let mut events = watch(
        &ctl,
        pb::WatchEventsRequest {
            jobs: vec!["noop".into()],
            types: vec!["run".into()],
            ..Default::default()
        },
    )
    .await;
    let (done_tx, _done_rx) = tokio::sync::watch::channel(0usize);
    let ids = enqueue_batches(ctl.client().await, 5, done_tx).await;
    // Not reading: wait for the whole burst to finish first.
    let mut client = ctl.client().await;
    for id in &ids {
        let run = client
            .wait_run(pb::WaitRunRequest {
                id: id.clone(),
                timeout_ms: 120_000,
            })
            .await
            .expect("WaitRun")
            .into_inner();
        assert_eq!(run.state, "succeeded", "{run:?}");
    }
    // Now read everything.
    let transitions = transitions_of(&ctl, &ids).await;
    let recorded: usize = transitions.values().map(Vec::len).sum();
    let mut received = Vec::new();
    while received.len() < recorded {
        let e = next_event(&mut events, Duration::from_secs(30), received.len()).await;
        received.push(e);
    }
    check_union(&received, &transitions);
    // And it is live again: one more run arrives as it happens.
    let id = ctl.cli_enqueue("noop", &[]).await;
    let mut last = received.last().unwrap().seq;
    loop {
        let e = next_event(&mut events, Duration::from_secs(30), received.len()).await;
        assert_eq!(e.seq, last + 1, "no gap and no repeat after catching up: {e:?}");
        last = e.seq;
        if e.run_id == id && e.state == "succeeded" {
            break;
        }
    }
}
