//! Enqueue features: batches with references, idempotency keys under
//! concurrency, and delayed runs (`--delay`, `--at`).

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use worker_tests::flow::{all_runs, run_span, ts};
use worker_tests::json::{self, str_field};
use worker_tests::{TestEnv, Value, run_cli};

const CONFIG: &str = r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  x:
    builtin: { name: sleep, duration: 300ms }
  slowjob:
    builtin: { name: sleep, duration: 30s }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_enqueue_creates_dependent_runs_atomically() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;

    let write = |name: &str, text: &str| {
        let p = env.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };

    // Rejected batches: exit 2 naming the problem, and nothing created.
    let bad = [
        (
            "unknown-ref.json",
            r#"[{"ref":"a","job":"x"},{"ref":"b","job":"x","depends_on":["nosuchref"]}]"#,
            &["nosuchref"][..],
        ),
        (
            "cycle.json",
            r#"[{"ref":"a","job":"x","depends_on":["b"]},{"ref":"b","job":"x","depends_on":["a"]}]"#,
            &["cycle"][..],
        ),
        (
            "bad-priority.json",
            r#"[{"ref":"a","job":"x"},{"ref":"b","job":"x"},{"ref":"c","job":"x","priority":"urgent"}]"#,
            &["[2]", "priority", "urgent"][..],
        ),
        (
            "unknown-job.json",
            r#"[{"ref":"a","job":"x"},{"job":"nosuchjob","depends_on":["a"]}]"#,
            &["nosuchjob"][..],
        ),
    ];
    for (name, text, fragments) in bad {
        let path = write(name, text);
        let out = ctl.cli(&["enqueue", "--batch", &path]).await;
        if name == "unknown-job.json" {
            // An unknown job is "not found" (3) or invalid (2); never created.
            assert!(out.code == 2 || out.code == 3, "{name}: {out:?}");
        } else {
            assert_eq!(out.code, 2, "{name}: {out:?}");
        }
        for f in fragments {
            assert!(out.stderr.contains(f), "{name}: stderr lacks {f:?}: {}", out.stderr);
        }
        assert!(out.stdout.trim().is_empty(), "{name}: stdout: {}", out.stdout);
        let runs = all_runs(&ctl).await;
        assert!(runs.is_empty(), "{name} created runs: {runs:?}");
    }
    let listed = ctl.cli_json(&["runs", "list"]).await;
    assert_eq!(json::as_array(&listed).len(), 0, "{listed:#}");

    // A good batch: b depends on a (by ref) and runs after it.
    let path = write(
        "good.json",
        r#"[{"ref":"a","job":"x"},{"ref":"b","job":"x","depends_on":["a"],"priority":"high"}]"#,
    );
    let out = ctl.cli_json(&["enqueue", "--batch", &path]).await;
    let items = json::as_array(&out);
    assert_eq!(items.len(), 2, "{out:#}");
    assert_eq!(items[0]["ref"], Value::from("a"), "{out:#}");
    assert_eq!(items[1]["ref"], Value::from("b"), "{out:#}");
    for i in items {
        assert_eq!(i["duplicate"], Value::Bool(false), "{out:#}");
    }
    let a_id = str_field(&items[0], "id").to_string();
    let b_id = str_field(&items[1], "id").to_string();
    assert_ne!(a_id, b_id);
    let b_json = ctl.cli_run(&b_id).await;
    assert_eq!(
        json::arr(&b_json, "depends_on"),
        &vec![Value::from(a_id.clone())],
        "{b_json:#}"
    );
    assert_eq!(str_field(&b_json, "priority"), "high");
    assert_eq!(str_field(&b_json, "state"), "blocked", "no agent yet: {b_json:#}");

    let _agent = env.start_agent(&ctl, "wide", 4).await;
    let a = ctl.wait_run(&a_id, Duration::from_secs(15)).await;
    let b = ctl.wait_run(&b_id, Duration::from_secs(15)).await;
    assert_eq!(a.state, "succeeded", "{a:?}");
    assert_eq!(b.state, "succeeded", "{b:?}");
    assert!(
        run_span(&b).0 >= run_span(&a).1,
        "b started before a ended: {a:?}\n{b:?}"
    );
    assert_eq!(all_runs(&ctl).await.len(), 2);
}

/// 16 concurrent `workerctl enqueue slowjob --key K` create exactly one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_enqueues_with_one_key_create_one_run() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;

    let url = ctl.url.clone();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            run_cli(&["--controller", &url, "-o", "json", "enqueue", "slowjob", "--key", "K"]).await
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().expect_code(0).json());
    }
    let ids: std::collections::BTreeSet<&str> = answers.iter().map(|a| str_field(a, "id")).collect();
    assert_eq!(ids.len(), 1, "different ids for one key: {answers:#?}");
    let fresh = answers.iter().filter(|a| a["duplicate"] == Value::Bool(false)).count();
    assert_eq!(fresh, 1, "exactly one answer creates the run: {answers:#?}");
    let runs = ctl.cli_json(&["runs", "list", "--job", "slowjob"]).await;
    assert_eq!(json::as_array(&runs).len(), 1, "{runs:#}");
    let run = &json::as_array(&runs)[0];
    assert_eq!(str_field(run, "id"), *ids.iter().next().unwrap());
    assert_eq!(str_field(run, "idempotency_key"), "K", "{run:#}");

    // A different key is a different run.
    let other = ctl.cli_json(&["enqueue", "slowjob", "--key", "L"]).await;
    assert_eq!(other["duplicate"], Value::Bool(false), "{other:#}");
    assert!(!ids.contains(str_field(&other, "id")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_enqueue_waits_for_not_before() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "wide", 4).await;

    let t0 = Utc::now();
    let delayed = ctl.cli_enqueue("x", &["--delay", "2s"]).await;
    let t1 = Utc::now();
    let at = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let at_id = ctl.cli_enqueue("x", &["--at", &at]).await;
    let at_ts = ts("--at", &at);

    let d = ctl.cli_run(&delayed).await;
    assert_eq!(str_field(&d, "state"), "scheduled", "{d:#}");
    let nb = json::ts_field(&d, "not_before");
    let slack = chrono::Duration::milliseconds(5);
    assert!(
        nb >= t0 + chrono::Duration::seconds(2) - slack && nb <= t1 + chrono::Duration::seconds(2) + slack,
        "not_before {nb} not now+2s (enqueued between {t0} and {t1}): {d:#}"
    );
    let a = ctl.cli_run(&at_id).await;
    assert_eq!(str_field(&a, "state"), "scheduled", "{a:#}");
    assert_eq!(json::ts_field(&a, "not_before"), at_ts, "{a:#}");

    for (id, not_before) in [(&delayed, nb), (&at_id, at_ts)] {
        let run = ctl.wait_run(id, Duration::from_secs(15)).await;
        assert_eq!(run.state, "succeeded", "{run:?}");
        let start = run_span(&run).0;
        assert!(
            start >= not_before,
            "run {id} started at {start}, before {not_before}: {run:?}"
        );
        assert!(
            start <= not_before + chrono::Duration::milliseconds(1500),
            "run {id} started at {start}, long after {not_before}"
        );
    }
}

/// `--idempotency-window` of the controller in the test below.
const WINDOW_MS: i64 = 3000;

/// After its run finished, a key keeps returning that run for the
/// idempotency window (counted from the end of the run, not its creation:
/// the run lasts longer than the window), then starts a new run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_returns_its_finished_run_for_the_idempotency_window() {
    let env = TestEnv::new();
    env.write_config(
        r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  longer:
    builtin: { name: sleep, duration: 4s }
"#,
    );
    let ctl = env
        .start_controller_with(&["--idempotency-window", &format!("{WINDOW_MS}ms")])
        .await;
    let _agent = env.start_agent(&ctl, "wide", 2).await;
    let enqueue = || async { ctl.cli_json(&["enqueue", "longer", "--key", "K"]).await };

    let first = enqueue().await;
    assert_eq!(first["duplicate"], Value::Bool(false), "{first:#}");
    let id = str_field(&first, "id").to_string();

    // Unfinished: the same run, whatever the window.
    ctl.wait_state(&id, "running", Duration::from_secs(10)).await;
    let again = enqueue().await;
    assert_eq!(again["duplicate"], Value::Bool(true), "{again:#}");
    assert_eq!(str_field(&again, "id"), id, "{again:#}");

    // Finished, within the window after its end (but longer than the window
    // after its creation): still the same run.
    let done = ctl.wait_run(&id, Duration::from_secs(20)).await;
    assert_eq!(done.state, "succeeded", "{done:?}");
    let created = ts("created_at", &done.created_at);
    let finished = ts("finished_at", &done.finished_at);
    assert!(
        (finished - created).num_milliseconds() > WINDOW_MS,
        "the run must outlast the window for this check: {done:?}"
    );
    let after_end = enqueue().await;
    let asked = Utc::now();
    assert!(
        (asked - finished).num_milliseconds() < WINDOW_MS,
        "the machine is too slow for this check: asked {asked}, {} ms after the end",
        (asked - finished).num_milliseconds()
    );
    assert_eq!(
        after_end["duplicate"],
        Value::Bool(true),
        "a key must return its run for the window after the run finished: {after_end:#}\nrun: {done:?}"
    );
    assert_eq!(str_field(&after_end, "id"), id, "{after_end:#}");
    assert_eq!(all_runs(&ctl).await.len(), 1);

    // Once the window after the end has passed, the key starts a new run.
    let fresh = worker_tests::wait_for(
        "the key to start a new run once the window after the run's end passed",
        Duration::from_secs(20),
        || async {
            let v = enqueue().await;
            if v["duplicate"] == Value::Bool(false) {
                Ok(v)
            } else {
                assert_eq!(str_field(&v, "id"), id, "{v:#}");
                Err(format!("still a duplicate at {}: {v}", Utc::now()))
            }
        },
    )
    .await;
    let new_id = str_field(&fresh, "id").to_string();
    assert_ne!(new_id, id, "{fresh:#}");
    let new_run = ctl.cli_run(&new_id).await;
    assert_eq!(str_field(&new_run, "idempotency_key"), "K", "{new_run:#}");
    let new_created = json::ts_field(&new_run, "created_at");
    assert!(
        (new_created - finished).num_milliseconds() >= WINDOW_MS,
        "a new run for the key {} ms after the end of the old one (window {WINDOW_MS} ms)",
        (new_created - finished).num_milliseconds()
    );
    // The key now belongs to the new run.
    let dup = enqueue().await;
    assert_eq!(dup["duplicate"], Value::Bool(true), "{dup:#}");
    assert_eq!(str_field(&dup, "id"), new_id, "{dup:#}");
    assert_eq!(all_runs(&ctl).await.len(), 2);
    // The old run is untouched.
    let old = ctl.get_run(&id).await;
    assert_eq!(old.state, "succeeded", "{old:?}");
    assert_eq!(old.finished_at, done.finished_at);
}
