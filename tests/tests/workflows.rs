//! Dependencies: job-level chains and fan-in (workflows), a dead upstream
//! blocking its dependents visibly, run-level `--depends-on`, and cancelling
//! a whole workflow.

use std::time::Duration;

use worker_proto::v1 as pb;
use worker_tests::flow::{run_span, wait_run_json};
use worker_tests::json::{self, opt_str, str_field};
use worker_tests::{Controller, TestEnv, Value};

/// `jobs run NAME -o json` (no --wait): the enqueue answer.
async fn run_job(ctl: &Controller, job: &str) -> Value {
    let v = ctl.cli_json(&["jobs", "run", job]).await;
    for key in ["id", "duplicate", "workflow_id", "upstream"] {
        assert!(v.get(key).is_some(), "`jobs run {job}` lacks {key:?}: {v:#}");
    }
    assert_eq!(v["duplicate"], Value::Bool(false), "{v:#}");
    v
}

fn upstream_ids(v: &Value) -> Vec<String> {
    json::arr(v, "upstream")
        .iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("upstream id not a string: {v:#}"))
                .to_string()
        })
        .collect()
}

/// The transitions of a run (gRPC) went through `blocked` first.
fn was_blocked(run: &pb::Run) -> bool {
    run.transitions.first().is_some_and(|t| t.to_state == "blocked")
        || run.transitions.iter().any(|t| t.to_state == "blocked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_a_b_c_runs_in_order_in_one_workflow() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  a:
    builtin: { name: sleep, duration: 700ms }
  b:
    builtin: { name: sleep, duration: 300ms }
    depends_on: [a]
  c:
    builtin: noop
    depends_on: [b]
"#,
    );
    let ctl = env.start_controller().await;
    // Enough slots that only the dependencies order the runs.
    let _agent = env.start_agent(&ctl, "wide", 4).await;

    let v = run_job(&ctl, "c").await;
    let c_id = str_field(&v, "id").to_string();
    let wf = str_field(&v, "workflow_id").to_string();
    let up = upstream_ids(&v);
    assert_eq!(up.len(), 2, "c has two upstream runs (a, b): {v:#}");

    let a = ctl.wait_run(&up[0], Duration::from_secs(20)).await;
    let b = ctl.wait_run(&up[1], Duration::from_secs(20)).await;
    let c = ctl.wait_run(&c_id, Duration::from_secs(20)).await;
    assert_eq!(
        (a.job.as_str(), b.job.as_str(), c.job.as_str()),
        ("a", "b", "c"),
        "upstream first"
    );
    for r in [&a, &b, &c] {
        assert_eq!(r.state, "succeeded", "{r:?}");
        assert_eq!(r.workflow_id, wf, "{r:?}");
    }
    assert_eq!(a.trigger, "dependency", "{a:?}");
    assert_eq!(b.trigger, "dependency", "{b:?}");
    assert_eq!(c.trigger, "manual", "{c:?}");
    assert_eq!(b.depends_on, vec![a.id.clone()], "{b:?}");
    assert_eq!(c.depends_on, vec![b.id.clone()], "{c:?}");
    let b = ctl.get_run(&b.id).await;
    let c = ctl.get_run(&c.id).await;
    assert!(was_blocked(&b), "b was never blocked: {b:?}");
    assert!(was_blocked(&c), "c was never blocked: {c:?}");
    let (_, a_end) = run_span(&a);
    let (b_start, b_end) = run_span(&b);
    let (c_start, _) = run_span(&c);
    assert!(b_start >= a_end, "b started {b_start} before a finished {a_end}");
    assert!(c_start >= b_end, "c started {c_start} before b finished {b_end}");

    // The CLI shows the same workflow.
    for id in [&a.id, &b.id, &c_id] {
        let j = ctl.cli_run(id).await;
        assert_eq!(opt_str(&j, "workflow_id"), Some(wf.as_str()), "{j:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_waits_for_every_upstream() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  a:
    builtin: noop
  b2:
    builtin: { name: sleep, duration: 2s }
  d:
    builtin: noop
    depends_on: [a, b2]
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 4).await;

    let v = run_job(&ctl, "d").await;
    let d_id = str_field(&v, "id").to_string();
    let up = upstream_ids(&v);
    assert_eq!(up.len(), 2, "{v:#}");
    let mut a_id = None;
    let mut b_id = None;
    for id in &up {
        match ctl.get_run(id).await.job.as_str() {
            "a" => a_id = Some(id.clone()),
            "b2" => b_id = Some(id.clone()),
            other => panic!("unexpected upstream job {other}: {v:#}"),
        }
    }
    let (a_id, b_id) = (a_id.expect("run of a"), b_id.expect("run of b2"));

    let a = ctl.wait_run(&a_id, Duration::from_secs(10)).await;
    assert_eq!(a.state, "succeeded", "{a:?}");
    // a is done, b2 still sleeps: d stays blocked.
    let b_now = ctl.get_run(&b_id).await;
    let d_now = ctl.get_run(&d_id).await;
    assert!(
        !worker_tests::is_terminal(&b_now.state),
        "b2 (2 s) finished before a (noop): the check proves nothing: {b_now:?}"
    );
    assert_eq!(d_now.state, "blocked", "d must wait for b2 too: {d_now:?}");

    let b = ctl.wait_run(&b_id, Duration::from_secs(20)).await;
    let d = ctl.wait_run(&d_id, Duration::from_secs(20)).await;
    assert_eq!(b.state, "succeeded", "{b:?}");
    assert_eq!(d.state, "succeeded", "{d:?}");
    let mut deps = d.depends_on.clone();
    deps.sort();
    let mut want = vec![a_id.clone(), b_id.clone()];
    want.sort();
    assert_eq!(deps, want, "{d:?}");
    let (d_start, _) = run_span(&d);
    assert!(
        d_start >= run_span(&a).1 && d_start >= run_span(&b).1,
        "{d:?}\n{a:?}\n{b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_blocks_its_dependent_until_retried() {
    let env = TestEnv::new();
    let marker = env.path().join("upstream-may-succeed");
    env.write_config(&format!(
        r#"
jobs:
  upstream:
    shell: "test -f '{}' || {{ echo marker missing; exit 1; }}"
    retry: {{ max_attempts: 1 }}
  dependent:
    shell: "echo dependent ran"
    retry: {{ max_attempts: 1 }}
    depends_on: [upstream]
"#,
        marker.display()
    ));
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 2).await;

    let v = run_job(&ctl, "dependent").await;
    let dep_id = str_field(&v, "id").to_string();
    let up = upstream_ids(&v);
    assert_eq!(up.len(), 1, "{v:#}");
    let up_id = up[0].clone();

    let upstream = ctl.wait_run(&up_id, Duration::from_secs(20)).await;
    assert_eq!(upstream.state, "dead", "{upstream:?}");
    // The dependent stays blocked, and says why.
    let blocked = wait_run_json(
        &ctl,
        &dep_id,
        "the dependent blocked with a reason naming the dead upstream",
        Duration::from_secs(10),
        |r| {
            let state = str_field(r, "state");
            let reason = opt_str(r, "reason").unwrap_or_default();
            if state == "blocked" && reason.contains("dead") && (reason.contains(&up_id) || reason.contains("upstream"))
            {
                Ok(())
            } else {
                Err(format!("state {state}, reason {reason:?}"))
            }
        },
    )
    .await;
    assert!(json::attempts(&blocked).is_empty(), "{blocked:#}");
    let stats = ctl.cli_json(&["queue", "stats"]).await;
    assert_eq!(stats["blocked"], Value::from(1), "{stats:#}");

    std::fs::write(&marker, "ok").unwrap();
    let retried = ctl.cli_json(&["dlq", "retry", &up_id]).await;
    assert_eq!(
        json::arr(&retried, "run_ids"),
        &vec![Value::from(up_id.clone())],
        "{retried:#}"
    );
    let upstream = ctl.wait_run(&up_id, Duration::from_secs(20)).await;
    assert_eq!(upstream.state, "succeeded", "{upstream:?}");
    let dependent = ctl.wait_run(&dep_id, Duration::from_secs(20)).await;
    assert_eq!(dependent.state, "succeeded", "{dependent:?}");
    assert_eq!(dependent.attempts.len(), 1, "{dependent:?}");
    assert!(dependent.attempts[0].output.contains("dependent ran"), "{dependent:?}");
    assert!(run_span(&dependent).0 >= run_span(&upstream).1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_level_depends_on_waits_for_both_runs() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  slow:
    builtin: sleep
  x:
    shell: "echo x ran"
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 4).await;

    let s1 = ctl.cli_enqueue("slow", &["--payload", r#"{"duration_ms":500}"#]).await;
    let s2 = ctl.cli_enqueue("slow", &["--payload", r#"{"duration_ms":1500}"#]).await;
    let x = ctl.cli_enqueue("x", &["--depends-on", &s1, "--depends-on", &s2]).await;
    let xr = ctl.cli_run(&x).await;
    let mut deps: Vec<String> = json::arr(&xr, "depends_on")
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    deps.sort();
    let mut want = vec![s1.clone(), s2.clone()];
    want.sort();
    assert_eq!(deps, want, "{xr:#}");

    let r1 = ctl.wait_run(&s1, Duration::from_secs(10)).await;
    assert_eq!(r1.state, "succeeded", "{r1:?}");
    let r2_now = ctl.get_run(&s2).await;
    let x_now = ctl.get_run(&x).await;
    assert!(
        !worker_tests::is_terminal(&r2_now.state),
        "s2 finished too early: {r2_now:?}"
    );
    assert_eq!(x_now.state, "blocked", "{x_now:?}");

    let r2 = ctl.wait_run(&s2, Duration::from_secs(10)).await;
    let xr = ctl.wait_run(&x, Duration::from_secs(10)).await;
    assert_eq!(r2.state, "succeeded", "{r2:?}");
    assert_eq!(xr.state, "succeeded", "{xr:?}");
    let start = run_span(&xr).0;
    assert!(start >= run_span(&r1).1 && start >= run_span(&r2).1, "{xr:?}");

    // An unknown run id is refused, nothing created.
    let before = worker_tests::flow::all_runs(&ctl).await.len();
    let out = ctl
        .cli(&["enqueue", "x", "--depends-on", "01arz3ndektsv4rrffq69g5fav"])
        .await;
    assert_ne!(out.code, 0, "{out:?}");
    assert_eq!(worker_tests::flow::all_runs(&ctl).await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_workflow_cancels_every_unfinished_run() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  first:
    builtin: { name: sleep, duration: 60s }
  second:
    builtin: noop
    depends_on: [first]
  third:
    builtin: noop
    depends_on: [second]
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 4).await;

    let v = run_job(&ctl, "third").await;
    let wf = str_field(&v, "workflow_id").to_string();
    let up = upstream_ids(&v);
    assert_eq!(up.len(), 2, "{v:#}");
    let ids = [up[0].clone(), up[1].clone(), str_field(&v, "id").to_string()];
    ctl.wait_state(&ids[0], "running", Duration::from_secs(10)).await;

    let out = ctl.cli_json(&["runs", "cancel", "--workflow", &wf]).await;
    let listed = json::ids(&out);
    for id in &ids {
        assert!(listed.contains(id), "runs cancel --workflow did not list {id}: {out:#}");
    }
    for id in &ids {
        let run = ctl.wait_run(id, Duration::from_secs(15)).await;
        assert_eq!(run.state, "cancelled", "{run:?}");
        assert_eq!(run.workflow_id, wf, "{run:?}");
    }
    let first = ctl.get_run(&ids[0]).await;
    assert_eq!(first.attempts.len(), 1, "{first:?}");
    assert_eq!(first.attempts[0].outcome, "cancelled", "{first:?}");
    for id in &ids[1..] {
        let r = ctl.get_run(id).await;
        assert!(r.attempts.is_empty(), "a downstream run ran: {r:?}");
    }
    // An unknown workflow is not found.
    ctl.cli(&["runs", "cancel", "--workflow", "01arz3ndektsv4rrffq69g5fav"])
        .await
        .expect_code(3);
}

/// The job of each run id, over gRPC.
async fn by_job(ctl: &Controller, ids: &[String]) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for id in ids {
        let job = ctl.get_run(id).await.job;
        assert!(
            out.insert(job.clone(), id.clone()).is_none(),
            "two runs of {job}: {ids:?}"
        );
    }
    out
}

/// Cancelling one upstream run (not the workflow) cancels the runs blocked
/// behind it, transitively, with a reason naming the cancelled upstream, and
/// nothing else: the other upstream of the fan-in goes on and succeeds. A run
/// waiting for a cancelled upstream never runs; a new run may not depend on
/// a cancelled run at all (configuration.md, decisions.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_upstream_run_cancels_its_dependents_only() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  left:
    builtin: { name: sleep, duration: 60s }
  right:
    builtin: { name: sleep, duration: 1500ms }
  join:
    builtin: noop
    depends_on: [left, right]
  after:
    builtin: noop
    depends_on: [join]
  lone:
    shell: "echo lone ran"
"#,
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 4).await;

    let v = run_job(&ctl, "after").await;
    let after_id = str_field(&v, "id").to_string();
    let up = by_job(&ctl, &upstream_ids(&v)).await;
    assert_eq!(
        up.keys().map(String::as_str).collect::<Vec<_>>(),
        ["join", "left", "right"],
        "{v:#}"
    );
    let (left, right, join) = (&up["left"], &up["right"], &up["join"]);
    ctl.wait_state(left, "running", Duration::from_secs(10)).await;
    ctl.wait_state(right, "running", Duration::from_secs(10)).await;

    // Cancel the running `left` alone.
    let out = ctl.cli_json(&["runs", "cancel", left]).await;
    assert_eq!(str_field(&out, "id"), left.as_str(), "{out:#}");
    let left_run = ctl.wait_run(left, Duration::from_secs(15)).await;
    assert_eq!(left_run.state, "cancelled", "{left_run:?}");

    // Its dependents, direct and indirect, are cancelled without running.
    let join_run = ctl.wait_run(join, Duration::from_secs(10)).await;
    let after_run = ctl.wait_run(&after_id, Duration::from_secs(10)).await;
    for (run, upstream) in [(&join_run, left), (&after_run, join)] {
        assert_eq!(run.state, "cancelled", "{run:?}");
        assert!(
            run.attempts.is_empty(),
            "a run behind a cancelled upstream ran: {run:?}"
        );
        assert!(
            run.reason.contains(upstream.as_str()) && run.reason.contains("cancelled"),
            "the reason does not name the cancelled upstream {upstream}: {run:?}"
        );
        assert!(
            run.transitions
                .iter()
                .any(|t| t.from_state == "blocked" && t.to_state == "cancelled"),
            "{run:?}"
        );
    }

    // The other upstream is not a dependent: it runs to its end.
    let right_run = ctl.wait_run(right, Duration::from_secs(15)).await;
    assert_eq!(right_run.state, "succeeded", "{right_run:?}");
    assert_eq!(right_run.attempts.len(), 1, "{right_run:?}");

    // A waiting (not yet running) upstream: cancelling it is immediate, and so
    // is the cancel of the run blocked behind it.
    let waiting = ctl.cli_enqueue("left", &["--delay", "1h"]).await;
    let behind = ctl.cli_enqueue("lone", &["--depends-on", &waiting]).await;
    assert_eq!(ctl.get_run(&waiting).await.state, "scheduled");
    assert_eq!(ctl.get_run(&behind).await.state, "blocked");
    ctl.cli(&["runs", "cancel", &waiting]).await.expect_code(0);
    let behind_run = ctl.wait_run(&behind, Duration::from_secs(10)).await;
    assert_eq!(behind_run.state, "cancelled", "{behind_run:?}");
    assert!(behind_run.attempts.is_empty(), "{behind_run:?}");
    assert!(behind_run.reason.contains(&waiting), "{behind_run:?}");

    // A new run may not depend on a cancelled run: refused, nothing created.
    let before = worker_tests::flow::all_runs(&ctl).await.len();
    let out = ctl.cli(&["enqueue", "lone", "--depends-on", left]).await.expect_code(2);
    assert!(out.stderr.contains("cancelled"), "{out:?}");
    assert_eq!(worker_tests::flow::all_runs(&ctl).await.len(), before);

    // Runs of other workflows are untouched: a lone run still works.
    let lone = ctl.cli_enqueue("lone", &[]).await;
    let lone_run = ctl.wait_run(&lone, Duration::from_secs(10)).await;
    assert_eq!(lone_run.state, "succeeded", "{lone_run:?}");
}
