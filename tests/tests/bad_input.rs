//! Bad configuration and bad requests get clear errors and change nothing.

use std::time::Duration;

use tonic::Code;
use worker_proto::v1 as pb;
use worker_tests::json;
use worker_tests::{Exited, TestEnv, run_cli};

/// One expected error line: `FILE:LINE: PATH: MESSAGE`.
struct Expect {
    line: usize,
    /// Expected `PATH`, `None` for YAML syntax errors (no path to name).
    path: Option<&'static str>,
    /// Fragments the message must contain.
    message: &'static [&'static str],
}

async fn start_with_bad_config(yaml: &str) -> (TestEnv, Exited) {
    let env = TestEnv::new();
    env.write_config(yaml);
    let out = env.run_controller_to_exit(&[], Duration::from_secs(20)).await;
    (env, out)
}

async fn assert_config_errors(yaml: &str, expected: &[Expect]) {
    let (env, out) = start_with_bad_config(yaml).await;
    let file = env.config_file().display().to_string();
    assert_eq!(
        out.code,
        Some(2),
        "controller should exit 2 on a bad config; got {:?}\nstdout: {}\nstderr: {}",
        out.code,
        out.stdout,
        out.stderr
    );
    assert!(
        !out.stdout.contains("ready"),
        "controller reported ready with a bad config: {}",
        out.stdout
    );
    let header = format!("invalid configuration: {} error(s)", expected.len());
    assert!(
        out.stderr.lines().any(|l| l.contains(&header)),
        "stderr lacks {header:?}:\n{}",
        out.stderr
    );
    for e in expected {
        let prefix = format!("{file}:{}: ", e.line);
        let line = out
            .stderr
            .lines()
            .map(str::trim_start)
            .find(|l| {
                l.starts_with(&prefix)
                    && e.path.is_none_or(|p| {
                        // `jobs.hello: ...` or a deeper path such as `jobs.hello.colour: ...`.
                        let rest = &l[prefix.len()..];
                        rest.starts_with(&format!("{p}: ")) || rest.starts_with(&format!("{p}."))
                    })
            })
            .unwrap_or_else(|| {
                panic!(
                    "stderr has no line starting {prefix:?}{}:\n{}",
                    e.path.map(|p| format!(" then {p:?}")).unwrap_or_default(),
                    out.stderr
                )
            });
        for frag in e.message {
            assert!(line.contains(frag), "error line {line:?} lacks {frag:?}");
        }
    }
    let reported = out
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{file}:")))
        .count();
    assert_eq!(reported, expected.len(), "number of error lines:\n{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_yaml_syntax_error() {
    assert_config_errors(
        "# a syntax error on line 7\ndefaults:\n  priority: normal\njobs:\n  hello:\n    shell: echo hi\n    description: bad: value\n",
        &[Expect {
            line: 7,
            path: None,
            message: &[],
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_unknown_field() {
    assert_config_errors(
        "defaults:\n  timezone: UTC\njobs:\n  hello:\n    shell: echo hi\n    colour: blue\n",
        &[Expect {
            line: 6,
            path: Some("jobs.hello"),
            message: &["colour"],
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_bad_cron() {
    assert_config_errors(
        "jobs:\n  ok:\n    builtin: noop\n  hello:\n    shell: echo hi\n    schedule: \"61 * * * *\"\n",
        &[Expect {
            line: 6,
            path: Some("jobs.hello.schedule"),
            message: &["61 * * * *"],
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_unknown_time_zone() {
    assert_config_errors(
        "jobs:\n  hello:\n    shell: echo hi\n    schedule: \"0 * * * *\"\n\n    timezone: Mars/Olympus_Mons\n",
        &[Expect {
            line: 6,
            path: Some("jobs.hello.timezone"),
            message: &["Mars/Olympus_Mons"],
        }],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_unknown_priority() {
    assert_config_errors(
        "# priorities: low normal high critical\njobs:\n  hello:\n    shell: echo hi\n    priority: urgent\n",
        &[Expect {
            line: 5,
            path: Some("jobs.hello.priority"),
            message: &["urgent"],
        }],
    )
    .await;
}

/// Several semantic errors are all reported in one go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reports_all_errors_at_once() {
    let yaml = r#"defaults:
  timezone: UTC
jobs:
  a:
    schedule: "*/5 * * * * * * *"
    shell: echo a
  b:
    schedule: "0 3 * * *"
    timezone: Europe/Atlantis
    shell: echo b
  good:
    builtin: noop
  c:
    priority: highest
    builtin: noop
"#;
    assert_config_errors(
        yaml,
        &[
            Expect {
                line: 5,
                path: Some("jobs.a.schedule"),
                message: &[],
            },
            Expect {
                line: 9,
                path: Some("jobs.b.timezone"),
                message: &["Europe/Atlantis"],
            },
            Expect {
                line: 14,
                path: Some("jobs.c.priority"),
                message: &["highest"],
            },
        ],
    )
    .await;
}

/// Bad requests through workerctl and gRPC: the right exit codes and status
/// codes, an error naming the field, and no run created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enqueue_requests_are_rejected() {
    let env = TestEnv::new();
    env.write_config("jobs:\n  echo:\n    shell: cat\n");
    let ctl = env.start_controller().await;

    let out = ctl.cli(&["enqueue", "nosuchjob"]).await.expect_code(3);
    assert!(out.stderr.contains("nosuchjob"), "stderr: {}", out.stderr);

    let out = ctl
        .cli(&["enqueue", "echo", "--priority", "urgent"])
        .await
        .expect_code(2);
    assert!(out.stderr.contains("priority"), "stderr: {}", out.stderr);

    let out = ctl.cli(&["enqueue", "echo", "--payload", "{bad"]).await.expect_code(2);
    assert!(out.stderr.contains("payload"), "stderr: {}", out.stderr);

    const MIB: usize = 1 << 20;
    let json_string = |len: usize| format!("\"{}\"", "x".repeat(len - 2));
    let too_big = env.path().join("too-big.json");
    std::fs::write(&too_big, json_string(MIB + 1)).unwrap();
    let arg = format!("@{}", too_big.display());
    let out = ctl.cli(&["enqueue", "echo", "--payload", &arg]).await.expect_code(2);
    assert!(out.stderr.contains("payload"), "stderr: {}", out.stderr);

    // Exactly 1 MiB is allowed.
    let just_fits = env.path().join("just-fits.json");
    std::fs::write(&just_fits, json_string(MIB)).unwrap();
    let arg = format!("@{}", just_fits.display());
    let ok_id = ctl.cli_enqueue("echo", &["--payload", &arg]).await;

    // The same over gRPC, with status codes and messages naming the field.
    let mut client = ctl.client().await;
    let enqueue = |job: &str, payload: String, priority: &str| pb::EnqueueRequest {
        job: job.into(),
        payload,
        priority: priority.into(),
        ..Default::default()
    };
    let err = client
        .enqueue(enqueue("nosuchjob", String::new(), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = client
        .enqueue(enqueue("echo", String::new(), "urgent"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("priority:"), "{err:?}");
    let err = client.enqueue(enqueue("echo", "{bad".into(), "")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("payload:"), "{err:?}");
    let err = client
        .enqueue(enqueue("echo", json_string(MIB + 1), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("payload:"), "{}", err.message());
    let m = err.message().to_lowercase();
    assert!(
        m.contains("1048576") || m.contains("1 mib") || m.contains("1mib") || m.contains("1,048,576"),
        "message does not state the limit: {}",
        err.message()
    );

    // Only the valid enqueue created a run.
    let runs = ctl.cli_json(&["runs", "list"]).await;
    assert_eq!(
        json::ids(&runs),
        std::slice::from_ref(&ok_id),
        "runs after rejected enqueues"
    );

    // Unknown run id: not found.
    ctl.cli(&["runs", "get", "01ARZ3NDEKTSV4RRFFQ69G5FAV"])
        .await
        .expect_code(3);
}

/// workerctl exits 4 when the controller cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_controller_exits_4() {
    let _env = TestEnv::new(); // builds the binaries
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = run_cli(&["--controller", &url, "-o", "json", "queue", "stats"]).await;
    assert_eq!(out.code, 4, "{out:?}");
}
