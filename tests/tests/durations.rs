//! One duration grammar for the three binaries (the `worker-duration` crate):
//! `worker-controller` (its config file and its flags), `worker-agent` (its
//! flags) and `workerctl` (its flags) refuse a bare `30` with the same message,
//! and take `30s` and a bare `0`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use worker_tests::{ENV_TAG, TestEnv, bins, json, run_cli};

/// What every binary says about a bare `30`.
const MISSING_UNIT: &str = r#"invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)"#;

/// Runs a binary whose flags make it exit at once: its exit code and stderr.
fn run_to_exit(program: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(program)
        .args(args)
        .env_remove("WORKER_CONTROLLER")
        .env_remove("WORKER_TOKEN")
        .env_remove("WORKER_DB_URL")
        .env(ENV_TAG, "durations")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn controller_agent_and_workerctl_read_durations_alike() {
    let env = TestEnv::new();
    let b = bins();

    // Flags: a usage error (exit 2) with the same message from all three.
    for (program, args) in [
        (&b.controller, &["--lease-timeout", "30"][..]),
        (&b.controller, &["--shutdown-timeout", "30"]),
        (&b.agent, &["--kill-grace", "30"]),
        (&b.agent, &["--drain-grace", "30"]),
    ] {
        let (code, stderr) = run_to_exit(program, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(MISSING_UNIT), "{args:?}: {stderr}");
    }
    for flags in [&["--delay", "30"][..], &["--wait", "--timeout", "30"]] {
        let mut args = vec!["--controller", "http://127.0.0.1:1", "enqueue", "j"];
        args.extend_from_slice(flags);
        let out = run_cli(&args).await;
        assert_eq!(out.code, 2, "{flags:?}: {}", out.stderr);
        assert!(out.stderr.contains(MISSING_UNIT), "{flags:?}: {}", out.stderr);
        // `30s` and `0` pass the flag parser: the call then fails on the
        // unreachable controller (exit 4), not on the flag (exit 2).
        for good in ["30s", "0"] {
            let args: Vec<&str> = args.iter().map(|a| if *a == "30" { good } else { a }).collect();
            let out = run_cli(&args).await;
            assert_eq!(out.code, 4, "{args:?}: {}", out.stderr);
        }
    }

    // The config file: the same message, located.
    env.write_config("jobs:\n  a:\n    shell: x\n    timeout: 30\n");
    let out = env.run_controller_to_exit(&[], Duration::from_secs(20)).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let file = env.config_file().display().to_string();
    assert!(
        out.stderr
            .contains(&format!("{file}:4: jobs.a.timeout: {MISSING_UNIT}")),
        "{}",
        out.stderr
    );

    // `30s` and a bare `0` (written as a YAML number) are read as durations.
    env.write_config("jobs:\n  a:\n    shell: x\n    timeout: 0\n    retry: { initial_delay: 30s }\n");
    let ctl = env.start_controller_with(&["--alert-history-retention", "0"]).await;
    let jobs = ctl.cli_json(&["jobs", "list"]).await;
    let a = jobs
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| json::str_field(j, "name") == "a"))
        .unwrap_or_else(|| panic!("job a not listed: {jobs:#}"));
    assert_eq!(
        (a["timeout_ms"].as_u64(), a["retry"]["initial_delay_ms"].as_u64()),
        (Some(0), Some(30_000)),
        "{a:#}"
    );
}
