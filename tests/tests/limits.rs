//! Limits end to end: hostile inputs are refused quickly, with the limit named,
//! while the controller keeps serving agents and running work.

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::Code;
use worker_proto::v1 as pb;
use worker_tests::{TestEnv, run_cli};

const JOBS: &str = "jobs:
  slow:
    shell: sleep 4; echo done
    retry: { max_attempts: 1 }
  colours:
    shell: printf '\\033[31mred\\033[0m\\033]0;title\\007 plain\\n'
  nap:
    builtin: sleep
";

/// A 280 KB document of nested brackets (it used to freeze every call and
/// agent stream for 42 s) is refused at once, naming the limit, while an agent
/// keeps heartbeating and its running job finishes once, not lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_nesting_bomb_is_refused_at_once_and_work_goes_on() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "a1", 2).await;
    let id = ctl.cli_enqueue("slow", &[]).await;
    ctl.wait_state(&id, "running", Duration::from_secs(20)).await;

    let bomb = env.path().join("bomb.yaml");
    std::fs::write(&bomb, format!("jobs: {}{}", "[".repeat(140_000), "]".repeat(140_000))).unwrap();
    let started = Instant::now();
    let out = ctl.cli(&["apply", "-f", bomb.to_str().unwrap()]).await.expect_code(2);
    let took = started.elapsed();
    assert!(
        out.stderr
            .contains("nesting depth 33 exceeds the limit yaml_depth=32 (--limit yaml_depth=...)"),
        "{}",
        out.stderr
    );
    assert!(took < Duration::from_secs(5), "apply took {took:?}");

    let run = ctl.wait_run(&id, Duration::from_secs(30)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(run.attempts.len(), 1, "the job ran once: {run:?}");
    let agents = ctl.agents().await;
    assert!(agents.iter().any(|a| a.state == "connected"), "{agents:?}");
}

/// `--limit` changes a limit and the rejection names it; an unknown name is a
/// usage error listing the known ones.
#[tokio::test(flavor = "multi_thread")]
async fn the_limit_flag_changes_a_limit() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let out = env
        .run_controller_to_exit(&["--limit", "nope=1"], Duration::from_secs(20))
        .await;
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("unknown limit \"nope\"") && out.stderr.contains("payload_bytes"),
        "{}",
        out.stderr
    );

    let ctl = env
        .start_controller_with(&["--limit", "payload_bytes=100", "--limit", "page_size=20"])
        .await;
    let payload = format!("{{\"a\":\"{}\"}}", "x".repeat(200));
    let out = ctl.cli(&["enqueue", "nap", "--payload", &payload]).await.expect_code(2);
    assert!(
        out.stderr
            .contains("payload: 208 bytes exceeds the limit payload_bytes=100 (--limit payload_bytes=...)"),
        "{}",
        out.stderr
    );
    let out = ctl.cli(&["runs", "list", "--limit", "21"]).await.expect_code(2);
    assert!(
        out.stderr.contains("limit: 21 exceeds the limit page_size=20"),
        "{}",
        out.stderr
    );
    assert_eq!(ctl.cli_json(&["runs", "list", "--limit", "20"]).await, json!([]));
}

/// Page sizes: too large is refused with the maximum named, negative is a
/// usage error; ids longer than a run id are refused without an HTTP/2
/// protocol error; a deep payload is refused before the JSON parser.
#[tokio::test(flavor = "multi_thread")]
async fn pages_ids_and_payload_depth() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let ctl = env.start_controller().await;
    let out = ctl.cli(&["runs", "list", "--limit", "100000"]).await.expect_code(2);
    assert!(
        out.stderr
            .contains("limit: 100000 exceeds the limit page_size=1000 (--limit page_size=...)"),
        "{}",
        out.stderr
    );
    ctl.cli(&["runs", "list", "--limit", "-1"]).await.expect_code(2);
    ctl.cli_json(&["runs", "list", "--limit", "1000"]).await;

    let mut client = ctl.client().await;
    let long = "x".repeat(20_000);
    let err = client
        .get_run(pb::GetRunRequest { id: long.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("20000 bytes") && err.message().len() < 400,
        "{}",
        err.message()
    );
    let err = client.cancel_run(pb::RunRequest { id: long }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let out = ctl.cli(&["runs", "get", "no-such-run"]).await;
    assert_eq!(out.code, 3, "{out:?}");

    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let out = ctl.cli(&["enqueue", "nap", "--payload", &deep]).await.expect_code(2);
    assert!(
        out.stderr.contains("nesting depth 65 exceeds the limit json_depth=64"),
        "{}",
        out.stderr
    );

    // A cron step larger than its field, empty selector keys, `A=B` variables.
    let bad = env.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "jobs:\n  c:\n    schedule: '*/1000 * * * *'\n    shell: x\n  s:\n    selector: { '': x }\n    shell: x\n  e:\n    shell: { command: x, env: { 'A=B': c } }\n",
    )
    .unwrap();
    let out = ctl.cli(&["apply", "-f", bad.to_str().unwrap()]).await.expect_code(2);
    for fragment in [
        "jobs.c.schedule: invalid cron expression \"*/1000 * * * *\": minute: step 1000 is larger than the field's range 0-59",
        "jobs.s.selector: a selector key must not be empty",
        "jobs.e.shell.env: variable name \"A=B\" must not contain '='",
    ] {
        assert!(out.stderr.contains(fragment), "lacks {fragment:?}:\n{}", out.stderr);
    }
}

/// `runs get` writes a job's terminal escape sequences escaped in its table
/// output; JSON carries them as JSON escapes.
#[tokio::test(flavor = "multi_thread")]
async fn runs_get_escapes_terminal_sequences() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "a1", 1).await;
    let id = ctl.cli_enqueue("colours", &[]).await;
    let run = ctl.wait_run(&id, Duration::from_secs(20)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");

    let table = run_cli(&["--controller", &ctl.url, "runs", "get", &id])
        .await
        .expect_code(0);
    assert!(
        !table.stdout.contains('\u{1b}') && !table.stdout.contains('\u{7}'),
        "{:?}",
        table.stdout
    );
    assert!(
        table.stdout.contains("\\x1b[31mred\\x1b[0m\\x1b]0;title\\x07 plain"),
        "{}",
        table.stdout
    );
    let v = ctl.cli_run(&id).await;
    let output = v["attempts"][0]["output"].as_str().unwrap();
    assert!(output.starts_with("\u{1b}[31mred"), "{output:?}");
}

/// The built-in sleep refuses `{"duration_ms": 1e300}` as a permanent failure
/// (it used to panic the agent), and the agent keeps working.
#[tokio::test(flavor = "multi_thread")]
async fn an_absurd_sleep_fails_without_hurting_the_agent() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "a1", 1).await;
    let id = ctl.cli_enqueue("nap", &["--payload", r#"{"duration_ms":1e300}"#]).await;
    let run = ctl.wait_run(&id, Duration::from_secs(20)).await;
    assert_eq!(run.state, "dead", "{run:?}");
    assert_eq!(run.attempts.len(), 1, "a permanent failure is not retried: {run:?}");
    assert!(run.attempts[0].error.contains("duration_ms"), "{run:?}");
    let id = ctl.cli_enqueue("nap", &["--payload", r#"{"duration_ms":5}"#]).await;
    assert_eq!(ctl.wait_run(&id, Duration::from_secs(20)).await.state, "succeeded");
}
