//! Retries with backoff, the dead-letter queue, non-retryable exit codes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use worker_proto::v1 as pb;
use worker_tests::json::{self, str_field};
use worker_tests::{TestEnv, Value};

fn ms(d: chrono::TimeDelta) -> i64 {
    d.num_milliseconds()
}

/// `(from, to, at)` of every transition of a run JSON.
fn transitions(run: &Value) -> Vec<(String, String, DateTime<Utc>)> {
    json::arr(run, "transitions")
        .iter()
        .map(|t| {
            (
                json::opt_str(t, "from").unwrap_or("").to_string(),
                str_field(t, "to").to_string(),
                json::ts_field(t, "at"),
            )
        })
        .collect()
}

/// Fails twice, succeeds on the third attempt; exponential backoff 300ms, 600ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_exponential_backoff() {
    let env = TestEnv::new();
    let counter = env.path().join("counter");
    env.write_config(&format!(
        r#"
jobs:
  flaky:
    shell:
      command: |
        n=$(cat "$COUNTER" 2>/dev/null || echo 0)
        n=$((n+1))
        echo "$n" > "$COUNTER"
        echo "try $n"
        if [ "$n" -lt 3 ]; then echo "not yet" >&2; exit 1; fi
      env: {{ COUNTER: "{}" }}
    retry: {{ max_attempts: 5, backoff: exponential, initial_delay: 300ms, max_delay: 10s, jitter: 0 }}
"#,
        counter.display()
    ));
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "retrier", 1).await;

    let id = ctl.cli_enqueue("flaky", &[]).await;
    let done = ctl.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "3");

    let run = ctl.cli_run(&id).await;
    assert_eq!(json::opt_i64(&run, "max_attempts"), Some(5), "{run:#}");
    let attempts = json::attempts(&run);
    assert_eq!(attempts.len(), 3, "{run:#}");
    let outcomes: Vec<&str> = attempts.iter().map(|a| str_field(a, "outcome")).collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded"], "{run:#}");
    let codes: Vec<Option<i64>> = attempts.iter().map(|a| json::opt_i64(a, "exit_code")).collect();
    assert_eq!(codes, [Some(1), Some(1), Some(0)], "{run:#}");
    let nums: Vec<Option<i64>> = attempts.iter().map(|a| json::opt_i64(a, "attempt")).collect();
    assert_eq!(nums, [Some(1), Some(2), Some(3)], "{run:#}");
    for (i, a) in attempts.iter().enumerate() {
        assert!(str_field(a, "output").contains(&format!("try {}", i + 1)), "{a:#}");
    }

    // Gaps between the end of one attempt and the start of the next.
    let start = |i: usize| json::ts_field(&attempts[i], "started_at");
    let finish = |i: usize| json::ts_field(&attempts[i], "finished_at");
    let gap1 = ms(start(1) - finish(0));
    let gap2 = ms(start(2) - finish(1));
    assert!(
        gap1 >= 290,
        "first retry after {gap1}ms, before the 300ms backoff; {run:#}"
    );
    assert!(
        gap2 >= 590,
        "second retry after {gap2}ms, before the 600ms backoff; {run:#}"
    );
    assert!(gap2 > gap1, "backoff did not grow: {gap1}ms then {gap2}ms");
    assert!(gap1 < 3000 && gap2 < 3500, "backoff far too long: {gap1}ms, {gap2}ms");

    // The controller's own record: running -> scheduled (backoff) -> queued.
    let ts = transitions(&run);
    let waits: Vec<i64> = ts
        .iter()
        .enumerate()
        .filter(|(_, (from, to, _))| from == "running" && to == "scheduled")
        .map(|(i, (_, _, at))| {
            let (from, to, queued_at) = ts
                .get(i + 1)
                .unwrap_or_else(|| panic!("nothing after the backoff transition: {ts:?}"));
            assert_eq!((from.as_str(), to.as_str()), ("scheduled", "queued"), "{ts:?}");
            ms(*queued_at - *at)
        })
        .collect();
    assert_eq!(waits.len(), 2, "expected two backoffs in the transitions: {ts:?}");
    assert!(
        (295..1300).contains(&waits[0]) && (595..1600).contains(&waits[1]),
        "backoff waits in transitions {waits:?}ms, expected ~300 and ~600: {ts:?}"
    );
    assert_eq!(ts.last().map(|t| t.1.as_str()), Some("succeeded"), "{ts:?}");
}

/// Always fails (exit 3) with max_attempts 2: dead, in the DLQ; once its cause
/// is fixed, `dlq retry` queues it again and it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_run_goes_to_dlq_and_dlq_retry_revives_it() {
    let env = TestEnv::new();
    let fixed = env.path().join("fixed");
    env.write_config(&format!(
        r#"
jobs:
  broken:
    shell:
      command: |
        if [ -f "$FIXED" ]; then echo "works now"; exit 0; fi
        echo "still broken" >&2
        exit 3
      env: {{ FIXED: "{}" }}
    retry: {{ max_attempts: 2, backoff: fixed, initial_delay: 100ms, jitter: 0 }}
"#,
        fixed.display()
    ));
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "fixer", 1).await;

    let id = ctl.cli_enqueue("broken", &[]).await;
    let dead = ctl.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(dead.state, "dead", "{dead:?}");
    assert_eq!(dead.attempts.len(), 2, "{dead:?}");
    for a in &dead.attempts {
        assert_eq!((a.outcome.as_str(), a.exit_code), ("failed", Some(3)), "{a:?}");
        assert!(a.output.contains("still broken"), "{a:?}");
    }
    assert!(!dead.reason.is_empty(), "dead run without a reason: {dead:?}");

    let dlq = ctl.cli_json(&["dlq", "list"]).await;
    assert_eq!(json::ids(&dlq), std::slice::from_ref(&id), "dlq list: {dlq:#}");
    let stats = ctl
        .client()
        .await
        .queue_stats(pb::QueueStatsRequest {})
        .await
        .expect("QueueStats")
        .into_inner();
    assert_eq!(stats.dead, 1, "{stats:?}");

    std::fs::write(&fixed, "").unwrap();
    let out = ctl.cli(&["dlq", "retry", &id]).await.expect_code(0);
    assert!(
        out.stdout.contains(&id),
        "dlq retry output does not name the run: {}",
        out.stdout
    );

    let revived = ctl.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(revived.state, "succeeded", "{revived:?}");
    assert_eq!(revived.id, id);
    let last = revived.attempts.last().expect("attempts");
    assert_eq!(
        revived.attempts.len(),
        3,
        "two failed attempts and one more: {revived:?}"
    );
    assert_eq!(
        (last.outcome.as_str(), last.exit_code),
        ("succeeded", Some(0)),
        "{last:?}"
    );
    assert!(last.output.contains("works now"), "{last:?}");

    let dlq = ctl.cli_json(&["dlq", "list"]).await;
    assert!(json::ids(&dlq).is_empty(), "dlq should be empty: {dlq:#}");
    let run = ctl.cli_run(&id).await;
    let ts = transitions(&run);
    assert!(
        ts.iter().any(|(from, to, _)| from == "dead" && to == "queued"),
        "no dead -> queued transition: {ts:?}"
    );
}

/// An exit code listed in `non_retryable_exit_codes` goes straight to dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_exit_code_is_not_retried() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  usage-error:
    shell: "echo bad usage; exit 64"
    retry: { max_attempts: 5, initial_delay: 100ms, jitter: 0, non_retryable_exit_codes: [64] }
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "strict", 1).await;
    let id = ctl.cli_enqueue("usage-error", &[]).await;
    let run = ctl.wait_run(&id, Duration::from_secs(20)).await;
    assert_eq!(run.state, "dead", "{run:?}");
    assert_eq!(run.attempts.len(), 1, "a non-retryable failure was retried: {run:?}");
    assert_eq!(run.attempts[0].exit_code, Some(64));
}
