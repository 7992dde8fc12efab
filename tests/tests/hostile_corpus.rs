//! The hostile-input corpus (`tests/corpus/*.yaml`, see its README): every case
//! is delivered to ONE running controller (with one agent) through `workerctl`,
//! typed or raw gRPC messages or the agent stream, or, for configuration
//! directories, to a short-lived controller of its own that must exit 2.
//!
//! Afterwards: every case got its expected answer (all mismatches are reported
//! together, with file and case), the controller still answers, the store is
//! unchanged (export, runs, alert channels and rules compared with a snapshot
//! taken before), its resident memory grew by less than [`RSS_GROWTH_BOUND`]
//! and the CPU time it spent on the whole corpus is under [`CPU_BOUND`].
//!
//! `WORKER_CORPUS_FILTER=text` runs only the cases whose `file: name` contains it.

mod corpus_runner;

use std::sync::Arc;
use std::time::{Duration, Instant};

use corpus_runner::case::Case;
use corpus_runner::{CANARY_VALUE, CANARY_VAR, check, deliver, label, load_corpus, run_config_case, snapshot, usage};
use worker_tests::TestEnv;

/// Resident memory the controller may gain over the whole corpus. Every case is
/// refused; what stays is allocator slack, caches and the connections of the
/// moment. A payload or document kept by mistake (the corpus sends several of
/// 1 to 5 MiB) shows as more.
const RSS_GROWTH_BOUND: u64 = 64 << 20;

/// CPU time (user + system) the controller may spend on the whole corpus, a
/// debug build. About a hundred refusals cost well under a second each; a
/// parser that is quadratic in the nesting depth spends tens of seconds on
/// one of the deep documents alone.
const CPU_BOUND: Duration = Duration::from_secs(30);

/// Configuration cases run this many at a time (each is a process start).
const CONFIG_PARALLELISM: usize = 3;

const SCHEDULER: &str = r#"jobs:
  hello:
    description: the corpus' harmless job
    shell: "echo hello"
  nap:
    builtin: { name: sleep, duration: 1s }
  chain.first:
    builtin: noop
  chain.second:
    depends_on: [chain.first]
    builtin: noop
  yearly:
    schedule: "0 3 1 1 *"
    timezone: UTC
    builtin: noop
"#;

const ALERTS: &str = r#"channels:
  hook: { type: webhook, url: "http://127.0.0.1:9/hook", secret: "corpus-webhook-secret" }
rules:
  - { name: dead, event: run_dead, channels: [hook] }
"#;

fn selected(file: &str, case: &Case) -> bool {
    if case.open.is_some() {
        return false;
    }
    match std::env::var("WORKER_CORPUS_FILTER") {
        Ok(f) if !f.is_empty() => label(file, case).contains(&f),
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus() {
    let corpus = Arc::new(load_corpus());
    let total: usize = corpus.iter().map(|(_, f)| f.cases.len()).sum();
    assert!(
        total >= 70,
        "the corpus has {total} cases; the issue asks for at least 60, we keep 70+"
    );

    let open: Vec<String> = corpus
        .iter()
        .flat_map(|(file, f)| {
            f.cases
                .iter()
                .filter_map(move |c| c.open.as_ref().map(|why| format!("{}: {why}", label(file, c))))
        })
        .collect();
    if !open.is_empty() {
        eprintln!(
            "[corpus] {} case(s) not run, known gaps (tests/corpus, `open:`):\n  {}",
            open.len(),
            open.join("\n  ")
        );
    }

    let env = TestEnv::new();
    env.write_config(SCHEDULER);
    env.write_alerts(ALERTS);
    let ctl = env.start_controller_with_env(&[(CANARY_VAR, CANARY_VALUE)], &[]).await;
    let _agent = env.start_agent(&ctl, "corpus-agent", 2).await;
    // A finished run, so that run lists and ids have something to show.
    let seeded = ctl.cli_enqueue("hello", &[]).await;
    let run = ctl.wait_run(&seeded, Duration::from_secs(30)).await;
    assert_eq!(run.state, "succeeded", "the seed run: {run:?}");

    let before = snapshot(&ctl).await;
    let (rss_before, cpu_before) = usage(ctl.proc.pid());
    let started = Instant::now();
    let mut mismatches: Vec<String> = Vec::new();
    let mut ran = 0usize;

    // Configuration directories, a few at a time, each its own controller.
    let gate = Arc::new(tokio::sync::Semaphore::new(CONFIG_PARALLELISM));
    let mut config_tasks = Vec::new();
    for (fi, (file, f)) in corpus.iter().enumerate() {
        for (ci, case) in f.cases.iter().enumerate() {
            if case.config.is_none() || !selected(file, case) {
                continue;
            }
            let gate = gate.clone();
            let corpus = corpus.clone();
            config_tasks.push((
                label(file, case),
                tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await.expect("semaphore");
                    let case = &corpus[fi].1.cases[ci];
                    run_config_case(case).await.map(|answer| check(case, &answer))
                }),
            ));
        }
    }

    // Everything else against the running controller, in file order.
    let scratch = tempfile::tempdir().expect("scratch dir");
    for (file, f) in corpus.iter() {
        for (i, case) in f.cases.iter().enumerate() {
            if case.config.is_some() || !selected(file, case) {
                continue;
            }
            ran += 1;
            let dir = scratch.path().join(format!("{file}-{i}"));
            let t = Instant::now();
            match deliver(&ctl, case, &dir).await {
                Ok(answer) => {
                    let problems = check(case, &answer);
                    if !problems.is_empty() {
                        mismatches.push(format!("{}:\n    {}", label(file, case), problems.join("\n    ")));
                    }
                }
                Err(e) => mismatches.push(format!("{}:\n    not delivered: {e}", label(file, case))),
            }
            if t.elapsed() > Duration::from_secs(5) {
                eprintln!("[corpus] {} took {:?}", label(file, case), t.elapsed());
            }
        }
    }
    for (label, task) in config_tasks {
        ran += 1;
        match task.await {
            Ok(Ok(problems)) if problems.is_empty() => {}
            Ok(Ok(problems)) => mismatches.push(format!("{label}:\n    {}", problems.join("\n    "))),
            Ok(Err(e)) => mismatches.push(format!("{label}:\n    not delivered: {e}")),
            Err(e) => mismatches.push(format!("{label}:\n    the runner panicked: {e}")),
        }
    }
    let elapsed = started.elapsed();

    // The controller still serves, and nothing changed.
    let jobs = ctl.cli(&["jobs", "list"]).await;
    if jobs.code != 0 {
        mismatches.push(format!(
            "after the corpus `jobs list` exited {}: {}",
            jobs.code, jobs.stderr
        ));
    }
    let (rss_after, cpu_after) = usage(ctl.proc.pid());
    let after = snapshot(&ctl).await;
    if after != before {
        mismatches.push(format!(
            "the store changed:\n--- before\n{}\n--- after\n{}",
            serde_json::to_string_pretty(&before).unwrap(),
            serde_json::to_string_pretty(&after).unwrap()
        ));
    }
    let grown = rss_after.saturating_sub(rss_before);
    let cpu = cpu_after.saturating_sub(cpu_before);
    eprintln!(
        "[corpus] {ran} of {total} cases in {elapsed:?}; controller RSS {} -> {} MiB, CPU {cpu:?}",
        rss_before >> 20,
        rss_after >> 20
    );
    if grown >= RSS_GROWTH_BOUND {
        mismatches.push(format!(
            "controller RSS grew by {} MiB (bound {} MiB)",
            grown >> 20,
            RSS_GROWTH_BOUND >> 20
        ));
    }
    if cpu >= CPU_BOUND {
        mismatches.push(format!(
            "controller spent {cpu:?} of CPU on the corpus (bound {CPU_BOUND:?})"
        ));
    }
    assert!(
        mismatches.is_empty(),
        "{} problem(s) in the hostile-input corpus:\n\n{}\n",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}
