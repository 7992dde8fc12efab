//! The TypeScript client example (`examples/typescript/`) against a real
//! controller and agent: it enqueues a job, follows its events from a cursor
//! across a reconnect, and prints its live output, with `@grpc/grpc-js` and
//! the repository's proto files. The test installs the example's locked
//! dependencies (`npm ci`) and compiles it (`tsc`) first.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use worker_tests::TestEnv;
use worker_tests::skip::skip_or_fail;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/typescript")
}

/// `npm ci` (when `node_modules` is missing) and `tsc`; false when Node or npm
/// is not installed (the test is then skipped, or fails under CI).
fn build_example(dir: &Path) -> bool {
    for tool in ["node", "npm"] {
        if Command::new(tool).arg("--version").output().is_err() {
            skip_or_fail(format!(
                "`{tool}` is not installed (Debian: apt-get install nodejs npm)"
            ));
            return false;
        }
    }
    if !dir.join("node_modules/@grpc/grpc-js").exists() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(dir)
            .output()
            .expect("npm ci");
        assert!(out.status.success(), "npm ci: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new("node")
        .args(["node_modules/typescript/bin/tsc", "-p", "."])
        .current_dir(dir)
        .output()
        .expect("tsc");
    assert!(
        out.status.success(),
        "tsc: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

fn follow(dir: &Path, url: &str, job: &str) -> Output {
    Command::new("node")
        .args(["dist/follow.js", job])
        .env("WORKER_CONTROLLER", url)
        .current_dir(dir)
        .output()
        .expect("node dist/follow.js")
}

/// The `state=` of each `event` line, in order; the sequence numbers must rise.
fn event_states(stdout: &str) -> Vec<String> {
    let mut last = 0u64;
    let mut states = Vec::new();
    for line in stdout.lines().filter(|l| l.starts_with("event ")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {line:?}"))
                .to_string()
        };
        let seq: u64 = field("seq=").parse().unwrap();
        assert!(seq > last, "sequence numbers rise: {seq} after {last}\n{stdout}");
        last = seq;
        states.push(field("state="));
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_example_enqueues_follows_events_across_a_reconnect_and_prints_live_output() {
    let dir = example_dir();
    if !build_example(&dir) {
        return;
    }
    let env = TestEnv::new();
    env.write_config(
        "jobs:\n\
         \x20 ts.demo:\n\
         \x20   shell: 'for i in 1 2 3; do echo line-$i; sleep 0.2; done'\n\
         \x20 ts.fail:\n\
         \x20   retry: { max_attempts: 1 }\n\
         \x20   shell: 'echo about to fail; exit 7'\n",
    );
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "ts-agent", 2).await;

    let out = tokio::task::spawn_blocking({
        let (dir, url) = (dir.clone(), ctl.url.clone());
        move || follow(&dir, &url, "ts.demo")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reconnecting after seq="), "it hung up once:\n{stdout}");
    // Every transition exactly once, in order, across the reconnect.
    assert_eq!(event_states(&stdout), ["queued", "running", "succeeded"], "{stdout}");
    let output: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("output: ")).collect();
    assert_eq!(output, ["line-1", "line-2", "line-3"], "{stdout}");
    assert!(stdout.trim_end().ends_with("result: succeeded exit=0"), "{stdout}");

    let out = tokio::task::spawn_blocking({
        let (dir, url) = (dir.clone(), ctl.url.clone());
        move || follow(&dir, &url, "ts.fail")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a dead run exits 1:\n{stdout}");
    assert_eq!(event_states(&stdout), ["queued", "running", "dead"], "{stdout}");
    assert!(stdout.contains("output: about to fail"), "{stdout}");
    assert!(stdout.trim_end().ends_with("result: dead exit=7"), "{stdout}");
}
