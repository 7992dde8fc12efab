//! `workerctl create-job` end to end: for each kind, the job is scaffolded
//! into a temp config that already holds jobs and comments, a real
//! controller is started on that config directory with a real agent, the job
//! is triggered and succeeds; the rest of `scheduler.yaml` is byte for byte
//! what it was.
//!
//! * shell: the generated test script passes, the job runs on `worker-agent`
//!   and reports the script's metric;
//! * http: the job requests a real HTTP server on loopback; the generated test
//!   script triggers it through `workerctl` and exits 0;
//! * rust: the generated crate is built with `cargo build` (its unit tests
//!   run with `cargo test`) into this workspace's target directory, with a
//!   copy of the workspace's `Cargo.lock`, so compiled dependencies are
//!   reused (the times are printed); the built binary is the agent.
//!
//! A second `create-job` with the same name is refused and changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use worker_tests::json::str_field;
use worker_tests::receiver::Receiver;
use worker_tests::{Agent, ProcGuard, TestEnv, bins, run_cli};

/// The config the job is added to: comments, a blank line before the next
/// section, a column-0 comment after the jobs block.
const ORIGINAL: &str = "\
# Hand-kept job definitions: this comment, the order and the quoting must survive.
defaults:
  timezone: UTC    # schedules in UTC
  retry: { max_attempts: 2, initial_delay: 1s }

jobs:
  # a job that is already here
  keep.me:
    description: 'kept as written'
    builtin: noop
  # commented-out job, part of the block
  # old: { builtin: noop }

# a closing comment at column 0
";

/// Checks that `new` is `original` with one block inserted (every original
/// byte kept, in order, around it) and returns the block.
fn inserted_block(original: &str, new: &str) -> String {
    let prefix = original.bytes().zip(new.bytes()).take_while(|(a, b)| a == b).count();
    let suffix = original[prefix..]
        .bytes()
        .rev()
        .zip(new[prefix..].bytes().rev())
        .take_while(|(a, b)| a == b)
        .count();
    assert_eq!(
        prefix + suffix,
        original.len(),
        "scheduler.yaml changed outside one inserted block:\n--- before\n{original}\n--- after\n{new}"
    );
    new[prefix..new.len() - suffix].to_string()
}

/// `create-job ARGS --config CONFIG` in the env's directory; must exit 0.
async fn create_job(env: &TestEnv, args: &[&str]) -> String {
    let config = env.config_file();
    let mut full = vec!["create-job"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--config", config.to_str().unwrap()]);
    let out = run_cli(&full).await.expect_code(0);
    out.stdout
}

/// The env's `jobs/` directory (the default `--dir`: beside `config/`).
fn jobs_dir(env: &TestEnv) -> PathBuf {
    env.path().canonicalize().unwrap().join("jobs")
}

/// Runs a generated test script; returns its output, panicking unless it exits 0.
fn run_script(script: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(script)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}):\n{text}",
        script.display(),
        out.status
    );
    text
}

/// A second `create-job NAME` is refused (exit 2) and changes nothing.
async fn second_time_is_refused(env: &TestEnv, name: &str, kind: &str) {
    let before = std::fs::read(env.config_file()).unwrap();
    let config = env.config_file();
    let out = run_cli(&["create-job", name, "--kind", kind, "--config", config.to_str().unwrap()])
        .await
        .expect_code(2);
    assert!(
        out.stderr.contains(&format!("already defines the job `{name}`")) || out.stderr.contains("already exists"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(env.config_file()).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_shell_job_runs() {
    let env = TestEnv::new();
    env.write_config(ORIGINAL);
    let stdout = create_job(&env, &["greet", "--kind", "shell"]).await;
    let jobs = jobs_dir(&env);
    let script = jobs.join("greet.sh");
    let test = jobs.join("greet.test.sh");
    assert!(stdout.contains(&script.display().to_string()), "{stdout}");
    assert!(stdout.contains("next steps:"), "{stdout}");

    let new = std::fs::read_to_string(env.config_file()).unwrap();
    let block = inserted_block(ORIGINAL, &new);
    assert!(block.contains("\n  greet:\n"), "{block}");
    // After the commented-out job, before the closing column-0 comment.
    assert!(
        new.contains("  # old: { builtin: noop }\n\n  # greet: scaffolded"),
        "{new}"
    );

    // The generated test passes on its own.
    let out = run_script(&test, &[]);
    assert!(out.contains("ok: greet.sh"), "{out}");

    // The controller loads the file as it is; the job runs on an agent.
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "a1", 2).await;
    let jobs_list = ctl.cli_json(&["jobs", "list"]).await;
    assert!(jobs_list.to_string().contains("keep.me"), "{jobs_list}");
    let run = ctl
        .cli(&[
            "jobs",
            "run",
            "greet",
            "--payload",
            r#"{"who": "Ada"}"#,
            "--wait",
            "--timeout",
            "60s",
        ])
        .await
        .expect_code(0)
        .json();
    assert_eq!(str_field(&run, "state"), "succeeded", "{run:#}");
    let id = str_field(&run, "id").to_string();
    let run = ctl.cli_run(&id).await;
    let attempt = &run["attempts"][0];
    let output = str_field(attempt, "output");
    assert!(output.contains(r#"payload: {"who": "Ada"}"#), "{run:#}");
    assert!(output.contains(&format!("run {id}, attempt 1")), "{run:#}");
    assert_eq!(attempt["metrics"]["payload_bytes"].as_f64(), Some(14.0), "{run:#}");

    second_time_is_refused(&env, "greet", "shell").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_http_job_runs() {
    let receiver = Receiver::start().await;
    receiver.always("/health", 200);
    let env = TestEnv::new();
    env.write_config(ORIGINAL);
    let url = receiver.url("/health");
    let stdout = create_job(
        &env,
        &["ping.api", "--kind", "http", "--url", &url, "--schedule", "0 3 * * *"],
    )
    .await;
    assert!(!stdout.contains("warning"), "{stdout}");
    let new = std::fs::read_to_string(env.config_file()).unwrap();
    let block = inserted_block(ORIGINAL, &new);
    assert!(block.contains(&format!("url: \"{url}\"")), "{block}");
    assert!(block.contains("schedule: \"0 3 * * *\""), "{block}");

    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "a1", 2).await;
    let job = ctl.cli_json(&["jobs", "get", "ping.api"]).await;
    assert!(job.to_string().contains("0 3 * * *"), "{job:#}");

    // The generated test triggers the job through workerctl and waits.
    let test = jobs_dir(&env).join("ping.api.test.sh");
    let cli = bins().cli.to_str().unwrap().to_string();
    let out = run_script(&test, &[("WORKER_CONTROLLER", &ctl.url), ("WORKERCTL", &cli)]);
    assert!(out.contains("ok: ping.api succeeded"), "{out}");
    assert_eq!(receiver.received("/health").len(), 1);

    // And it fails when the server does.
    receiver.always("/health", 404);
    let out = Command::new(&test)
        .envs([("WORKER_CONTROLLER", ctl.url.as_str()), ("WORKERCTL", cli.as_str())])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));

    second_time_is_refused(&env, "ping.api", "http").await;
}

/// The workspace's target directory: this test binary is TARGET/PROFILE/deps/NAME.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf()
}

/// `cargo ARGS --offline` in `dir` with the workspace's target directory;
/// prints what it compiled and returns how long it took.
fn cargo(dir: &Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null())
        .output()
        .expect("running cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in {} failed ({}):\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let compiled: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Compiling "))
        .collect();
    eprintln!(
        "[create_job] cargo {args:?} compiled {} crate(s): {compiled:?}",
        compiled.len()
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scaffolded_rust_job_runs() {
    let env = TestEnv::new();
    env.write_config(ORIGINAL);
    create_job(&env, &["tally.items", "--kind", "rust"]).await;
    let new = std::fs::read_to_string(env.config_file()).unwrap();
    let block = inserted_block(ORIGINAL, &new);
    assert!(block.contains("    handler: tally.items\n"), "{block}");

    let krate = jobs_dir(&env).join("tally.items");
    std::fs::copy(
        worker_tests::workspace_root().join("Cargo.lock"),
        krate.join("Cargo.lock"),
    )
    .unwrap();
    let built = cargo(&krate, &["build"]);
    let tested = cargo(&krate, &["test"]);
    eprintln!("[create_job] generated crate: cargo build {built:?}, then cargo test {tested:?}");
    let program = target_dir().join("debug").join("tally-items-agent");
    assert!(program.is_file(), "{} not built", program.display());

    let ctl = env.start_controller().await;
    let mut cmd = Command::new(&program);
    cmd.args(["--controller", &ctl.url, "--name", "tally-1", "--capacity", "2"])
        .current_dir(env.path())
        .env(worker_tests::ENV_TAG, env.path());
    let (proc, lines) = ProcGuard::spawn("tally-items-agent", cmd, env.path().join("tally-agent.stderr"));
    std::thread::spawn(move || for _ in lines {});
    let _agent = ctl
        .connected(Agent {
            name: "tally-1".into(),
            proc,
        })
        .await;

    let run = ctl
        .cli(&[
            "jobs",
            "run",
            "tally.items",
            "--payload",
            r#"{"items": ["a", "b", "c"]}"#,
            "--wait",
            "--timeout",
            "60s",
        ])
        .await
        .expect_code(0)
        .json();
    let id = str_field(&run, "id").to_string();
    let run = ctl.cli_run(&id).await;
    let attempt = &run["attempts"][0];
    assert!(str_field(attempt, "output").contains("processed 3 item(s)"), "{run:#}");
    assert_eq!(attempt["metrics"]["items"].as_f64(), Some(3.0), "{run:#}");

    // An empty item fails for good: dead after one attempt.
    let out = ctl
        .cli(&[
            "jobs",
            "run",
            "tally.items",
            "--payload",
            r#"{"items": [""]}"#,
            "--wait",
            "--timeout",
            "60s",
        ])
        .await
        .expect_code(1)
        .json();
    assert_eq!(str_field(&out, "state"), "dead", "{out:#}");

    second_time_is_refused(&env, "tally.items", "rust").await;
}
