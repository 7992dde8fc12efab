//! Real agent processes: load sharing, and what a failing shell job reports.

use std::collections::BTreeMap;
use std::time::Duration;

use worker_tests::json::{self, str_field};
use worker_tests::{TestEnv, parse_ts};

type Span = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);

/// Two agents with one slot each share six runs; neither runs two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_share_the_load() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  nap:
    builtin: { name: sleep, duration: 400ms }
    retry: { max_attempts: 1 }
"#,
    );
    let ctl = env.start_controller().await;
    let _alpha = env.start_agent(&ctl, "alpha", 1).await;
    let _beta = env.start_agent(&ctl, "beta", 1).await;

    let agents = ctl.cli_json(&["agents", "list"]).await;
    let names: Vec<&str> = json::as_array(&agents).iter().map(|a| str_field(a, "name")).collect();
    assert!(
        names.contains(&"alpha") && names.contains(&"beta"),
        "agents list: {agents:#}"
    );

    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(ctl.cli_enqueue("nap", &[]).await);
    }
    let mut by_agent: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for id in &ids {
        let run = ctl.wait_run(id, Duration::from_secs(30)).await;
        assert_eq!(run.state, "succeeded", "{run:?}");
        assert_eq!(run.attempts.len(), 1, "{run:?}");
        let a = &run.attempts[0];
        assert_eq!(a.outcome, "succeeded");
        let (s, f) = (
            parse_ts("started_at", &a.started_at),
            parse_ts("finished_at", &a.finished_at),
        );
        assert!(
            f - s >= chrono::Duration::milliseconds(390),
            "sleep 400ms took {:?}",
            f - s
        );
        by_agent.entry(a.agent.clone()).or_default().push((s, f));
    }
    let keys: Vec<&String> = by_agent.keys().collect();
    assert_eq!(keys, ["alpha", "beta"], "attempts by agent: {by_agent:?}");
    assert_eq!(by_agent.values().map(Vec::len).sum::<usize>(), 6);
    for (agent, spans) in &mut by_agent {
        spans.sort();
        for w in spans.windows(2) {
            assert!(
                w[1].0 >= w[0].1,
                "agent {agent} has capacity 1 but ran two attempts at once: {w:?}"
            );
        }
    }
    // The two agents really worked in parallel.
    let (a, b) = (&by_agent["alpha"], &by_agent["beta"]);
    let overlap = a.iter().any(|x| b.iter().any(|y| x.0 < y.1 && y.0 < x.1));
    assert!(overlap, "alpha and beta never ran at the same time: {by_agent:?}");
}

/// A shell job writing to stdout and stderr and exiting 7: attempts record the
/// output, the exit code and its environment; the run ends dead after its
/// retry budget, and `enqueue --wait` exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_shell_job_reports_output_and_exit_code() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  noisy:
    shell:
      command: |
        echo "to-stdout run=$WORKER_RUN_ID attempt=$WORKER_ATTEMPT job=$WORKER_JOB"
        echo "to-stderr $GREETING" >&2
        read -r line
        echo "stdin=$line"
        exit 7
      env: { GREETING: from-env }
    retry: { max_attempts: 2, backoff: fixed, initial_delay: 100ms, jitter: 0 }
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "worker-1", 2).await;

    let out = ctl
        .cli(&["enqueue", "noisy", "--payload", r#"{"k":"payload-value"}"#, "--wait"])
        .await
        .expect_code(1);
    let waited = out.json();
    let id = str_field(&waited, "id").to_string();
    assert_eq!(str_field(&waited, "state"), "dead", "{waited:#}");

    let run = ctl.cli_run(&id).await;
    assert_eq!(str_field(&run, "state"), "dead", "{run:#}");
    assert_eq!(json::opt_i64(&run, "max_attempts"), Some(2), "{run:#}");
    assert!(
        json::opt_str(&run, "finished_at").is_some(),
        "dead run without finished_at: {run:#}"
    );
    let attempts = json::attempts(&run);
    assert_eq!(attempts.len(), 2, "{run:#}");
    for (i, a) in attempts.iter().enumerate() {
        let n = i + 1;
        assert_eq!(json::opt_i64(a, "attempt"), Some(n as i64), "{a:#}");
        assert_eq!(str_field(a, "outcome"), "failed", "{a:#}");
        assert_eq!(json::opt_i64(a, "exit_code"), Some(7), "{a:#}");
        assert_eq!(str_field(a, "agent"), "worker-1", "{a:#}");
        let output = str_field(a, "output");
        for want in [
            format!("to-stdout run={id} attempt={n} job=noisy"),
            "to-stderr from-env".to_string(),
            "payload-value".to_string(),
        ] {
            assert!(output.contains(&want), "attempt {n} output lacks {want:?}: {output:?}");
        }
        json::ts_field(a, "started_at");
        json::ts_field(a, "finished_at");
    }
    let dlq = ctl.cli_json(&["dlq", "list"]).await;
    assert!(json::ids(&dlq).contains(&id), "dead run not in dlq list: {dlq:#}");
}

/// A job with a selector runs only on agents whose labels match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_picks_matching_agents() {
    let env = TestEnv::new();
    env.write_config(
        r#"
jobs:
  eu-only:
    shell: "echo in-eu"
    selector: { region: eu }
  anywhere:
    shell: "echo anywhere"
"#,
    );
    let ctl = env.start_controller().await;
    let _us = env
        .start_agent_with(&ctl, "us-agent", 2, &["--labels", "region=us,tier=gold"])
        .await;
    let ids = [
        ctl.cli_enqueue("eu-only", &[]).await,
        ctl.cli_enqueue("eu-only", &[]).await,
    ];
    // A run without a selector, queued after them at the same priority: the
    // dispatcher reaches it only after considering the eu-only runs, so once it
    // has run on us-agent, a wrong dispatch of those would already have happened.
    let probe = ctl.cli_enqueue("anywhere", &[]).await;
    let probe = ctl.wait_run(&probe, Duration::from_secs(15)).await;
    assert_eq!(probe.state, "succeeded", "{probe:?}");
    assert_eq!(probe.attempts[0].agent, "us-agent", "{probe:?}");
    for id in &ids {
        let run = ctl.get_run(id).await;
        assert_eq!(run.state, "queued", "ran on an agent without region=eu: {run:?}");
    }
    let _eu = env
        .start_agent_with(&ctl, "eu-agent", 2, &["--labels", "region=eu"])
        .await;
    for id in &ids {
        let run = ctl.wait_run(id, Duration::from_secs(15)).await;
        assert_eq!(run.state, "succeeded", "{run:?}");
        assert_eq!(run.attempts.len(), 1, "{run:?}");
        assert_eq!(run.attempts[0].agent, "eu-agent", "{run:?}");
    }
}
