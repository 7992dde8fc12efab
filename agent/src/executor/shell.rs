//! The shell executor: one child process in its own process group.
//!
//! * `argv` non-empty runs `argv[0]` directly with the remaining arguments;
//!   otherwise `script` runs through `sh -c`.
//! * The environment is the agent's plus the spec's `env`, plus
//!   `WORKER_RUN_ID`, `WORKER_ATTEMPT` and `WORKER_JOB`; `cwd` is honoured.
//! * The payload JSON is written to stdin, which is then closed.
//! * stdout and stderr feed one shared [`TailBuffer`], and the attempt's
//!   [`LiveOutput`] when it is streamed (a push that never waits).
//! * Marker lines on stdout (`::worker metric items 120`, `::worker span
//!   fetch 1.5s`) report metrics and spans ([`super::markers`]).
//!
//! The child is started with `process_group(0)`, so it and everything it forks
//! share a process group whose id is the child's pid. Timeout and cancel kill
//! the **group** (SIGTERM, then SIGKILL after the kill grace), which is what
//! makes "a job that forked a daemon" stoppable, and which also closes the
//! pipes any grandchild may still hold, so waiting for the output readers
//! cannot hang the agent.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use worker_proto::v1::ShellSpec;

use super::markers::MarkerScanner;
use super::{Context, Report, StopSignal};
use crate::live::LiveOutput;
use crate::output::TailBuffer;

/// How long to wait for the output pipes to close after the process exited on
/// its own (a background grandchild may keep them open indefinitely).
const READERS_AFTER_EXIT: Duration = Duration::from_millis(500);
/// How long to wait for the output pipes after the process group was killed.
const READERS_AFTER_KILL: Duration = Duration::from_secs(1);
/// How often the group is checked for survivors during the kill grace.
const KILL_POLL: Duration = Duration::from_millis(20);

/// Runs the process `spec` describes until it exits or `stop` fires.
pub async fn run(spec: &ShellSpec, ctx: &Context, mut stop: StopSignal) -> Report {
    let (mut command, program) = match build_command(spec, ctx) {
        Ok(built) => built,
        Err(error) => return Report::failed(error, true),
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Report::failed(format!("failed to start `{program}`: {error}"), false),
    };
    // The child has not been waited for, so its pid is known; it is also the
    // process group id (process_group(0)).
    let pgid = child.id().map_or(0, |pid| pid as i32);

    let tail = Arc::new(Mutex::new(TailBuffer::new(ctx.output_cap)));
    let markers = Arc::new(Mutex::new(MarkerScanner::default()));
    let stdin_task = child.stdin.take().map(|mut stdin| {
        let payload = ctx.payload.clone().into_bytes();
        tokio::spawn(async move {
            // A process that does not read stdin closes it early: EPIPE is fine.
            let _ = stdin.write_all(&payload).await;
            let _ = stdin.shutdown().await;
        })
    });
    let readers: Vec<JoinHandle<()>> = [
        child
            .stdout
            .take()
            .map(|out| spawn_reader(out, tail.clone(), ctx.live.clone(), Some(markers.clone()))),
        child
            .stderr
            .take()
            .map(|err| spawn_reader(err, tail.clone(), ctx.live.clone(), None)),
    ]
    .into_iter()
    .flatten()
    .collect();

    let ended = tokio::select! {
        status = child.wait() => Ok(status),
        stop = stop.wait() => {
            kill_group(&mut child, pgid, ctx.kill_grace).await;
            Err(stop)
        }
    };

    let bound = if ended.is_ok() {
        READERS_AFTER_EXIT
    } else {
        READERS_AFTER_KILL
    };
    let deadline = Instant::now() + bound;
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout_at(deadline, reader).await.is_err() {
            abort.abort();
        }
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
    let measures = {
        let mut markers = markers.lock().unwrap_or_else(|e| e.into_inner());
        markers.finish();
        if let Some(problems) = markers.problems() {
            tail.lock().unwrap_or_else(|e| e.into_inner()).push(problems.as_bytes());
        }
        std::mem::take(&mut markers.measures)
    };
    let output = tail.lock().unwrap_or_else(|e| e.into_inner()).render();

    let mut report = match ended {
        Ok(Ok(status)) => exit_report(status, spec, output),
        Ok(Err(error)) => {
            let mut report = Report::failed(format!("waiting for `{program}` failed: {error}"), false);
            report.output = output;
            report
        }
        Err(stop) => Report::stopped(stop, output),
    };
    report.measures = measures;
    report
}

/// Builds the command; returns it with the program name used in messages.
fn build_command(spec: &ShellSpec, ctx: &Context) -> Result<(Command, String), String> {
    let (mut command, program) = if let Some(program) = spec.argv.first() {
        let mut command = Command::new(program);
        command.args(&spec.argv[1..]);
        (command, program.clone())
    } else if !spec.script.is_empty() {
        let mut command = Command::new("sh");
        command.arg("-c").arg(&spec.script);
        (command, "sh".to_string())
    } else {
        return Err("shell executor needs `argv` or `script`".to_string());
    };
    command
        // The admin token of the `backup` builtin is not the jobs' to read.
        .env_remove(super::builtin::backup::source::BACKUP_TOKEN_ENV)
        .envs(&spec.env)
        .env("WORKER_RUN_ID", &ctx.run_id)
        .env("WORKER_ATTEMPT", ctx.attempt.to_string())
        .env("WORKER_JOB", &ctx.job)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if !spec.cwd.is_empty() {
        command.current_dir(&spec.cwd);
    }
    Ok((command, program))
}

/// Copies everything `pipe` yields into the shared tail and the live output,
/// and into `markers` when given (stdout).
fn spawn_reader<R>(
    mut pipe: R,
    tail: Arc<Mutex<TailBuffer>>,
    live: Option<LiveOutput>,
    markers: Option<Arc<Mutex<MarkerScanner>>>,
) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        loop {
            match pipe.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    tail.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
                    if let Some(live) = &live {
                        live.push(&buf[..n]);
                    }
                    if let Some(markers) = &markers {
                        markers.lock().unwrap_or_else(|e| e.into_inner()).push(&buf[..n]);
                    }
                }
            }
        }
    })
}

/// Maps how the process ended to a report.
fn exit_report(status: ExitStatus, spec: &ShellSpec, output: String) -> Report {
    let mut report = match (status.code(), status.signal()) {
        (Some(0), _) => Report::succeeded(String::new()),
        (Some(code), _) => Report::failed(
            format!("exit code {code}"),
            spec.non_retryable_exit_codes.contains(&code),
        ),
        (None, Some(signal)) => Report::failed(format!("killed by signal {signal}"), false),
        (None, None) => Report::failed(format!("process ended abnormally ({status})"), false),
    };
    report.exit_code = status.code();
    report.output = output;
    report
}

/// Kills process group `pgid`: SIGTERM, then SIGKILL to whatever is left after
/// `grace`. Reaps the group leader (`child`) along the way, so that it does not
/// linger as a zombie member of the group.
pub(crate) async fn kill_group(child: &mut Child, pgid: i32, grace: Duration) {
    if pgid <= 0 {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return;
    }
    signal_group(pgid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        let _ = child.try_wait();
        if !group_exists(pgid) {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(KILL_POLL.min(deadline - now)).await;
    }
    tracing::debug!(pgid, "process group survived SIGTERM; sending SIGKILL");
    signal_group(pgid, libc::SIGKILL);
    let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
}

fn signal_group(pgid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid
    // addresses the process group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Whether any process (including an unreaped zombie) is left in the group.
fn group_exists(pgid: i32) -> bool {
    // SAFETY: as in `signal_group`; signal 0 only checks for existence.
    let rc = unsafe { libc::kill(-pgid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Outcome;
    use crate::executor::tests::context;

    fn script(text: &str) -> ShellSpec {
        ShellSpec {
            script: text.into(),
            ..Default::default()
        }
    }

    fn argv(args: &[&str]) -> ShellSpec {
        ShellSpec {
            argv: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }
    }

    async fn run_spec(spec: &ShellSpec, ctx: &Context, timeout: Option<Duration>) -> Report {
        let (_handle, stop) = StopSignal::new(timeout);
        run(spec, ctx, stop).await
    }

    /// Whether `pid` is a live process (zombies count as gone).
    fn alive(pid: i32) -> bool {
        // SAFETY: existence check only.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => {
                let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X'))
            }
            Err(_) => false,
        }
    }

    fn pids_in(output: &str, key: &str) -> Vec<i32> {
        output
            .lines()
            .filter_map(|l| l.strip_prefix(key))
            .map(|p| p.trim().parse().expect("pid"))
            .collect()
    }

    #[tokio::test]
    async fn marker_lines_on_stdout_report_metrics_and_spans() {
        let spec = script(
            "echo '::worker metric items 120'; echo '::worker span fetch 250ms'; \
             echo '::worker metric api_cost_usd 0.42' >&2; echo '::worker metric broken x'; exit 3",
        );
        let report = run_spec(&spec, &context(), None).await;
        assert_eq!(report.outcome, Outcome::Failed, "reports do not change the outcome");
        let (metrics, spans) = report.measures.into_proto();
        assert_eq!(metrics.len(), 1, "stderr is not read for markers: {metrics:?}");
        assert_eq!((metrics[0].name.as_str(), metrics[0].value), ("items", 120.0));
        assert_eq!((spans[0].name.as_str(), spans[0].total_us), ("fetch", 250_000));
        assert!(
            report.output.contains("::worker metric items 120"),
            "markers stay in the output"
        );
        assert!(
            report
                .output
                .contains("[worker] ignored marker: \"::worker metric broken x\""),
            "{}",
            report.output
        );
    }

    #[tokio::test]
    async fn argv_success_captures_output() {
        let report = run_spec(&argv(&["echo", "hello", "world"]), &context(), None).await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
        assert_eq!(report.exit_code, Some(0));
        assert_eq!(report.output, "hello world\n");
        assert!(report.error.is_empty());
    }

    #[tokio::test]
    async fn non_zero_exit_fails_with_both_streams() {
        let spec = script("echo out; echo err >&2; exit 3");
        let report = run_spec(&spec, &context(), None).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!(report.exit_code, Some(3));
        assert_eq!(report.error, "exit code 3");
        assert!(!report.permanent);
        assert!(
            report.output.contains("out\n") && report.output.contains("err\n"),
            "{}",
            report.output
        );

        let spec = ShellSpec {
            non_retryable_exit_codes: vec![2, 3],
            ..spec
        };
        let report = run_spec(&spec, &context(), None).await;
        assert!(report.permanent);
    }

    #[tokio::test]
    async fn payload_is_written_to_stdin() {
        let mut ctx = context();
        ctx.payload = r#"{"hello":"stdin"}"#.into();
        let report = run_spec(&argv(&["cat"]), &ctx, None).await;
        assert_eq!(report.outcome, Outcome::Succeeded);
        assert_eq!(report.output, ctx.payload);
    }

    #[tokio::test]
    async fn unread_payload_is_not_an_error() {
        let mut ctx = context();
        ctx.payload = "x".repeat(1 << 20);
        let report = run_spec(&argv(&["true"]), &ctx, None).await;
        assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    }

    #[tokio::test]
    async fn env_and_cwd_are_applied() {
        let dir = std::env::temp_dir().canonicalize().unwrap();
        let spec = ShellSpec {
            script: r#"echo "$WORKER_RUN_ID $WORKER_ATTEMPT $WORKER_JOB $FOO"; pwd -P"#.into(),
            env: [("FOO".to_string(), "bar".to_string())].into(),
            cwd: dir.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let report = run_spec(&spec, &context(), None).await;
        assert_eq!(report.outcome, Outcome::Succeeded);
        assert_eq!(report.output, format!("run-1 1 test.job bar\n{}\n", dir.display()));
    }

    #[tokio::test]
    async fn spawn_failure_reports_the_os_error() {
        let report = run_spec(&argv(&["/nonexistent/worker-test-prog"]), &context(), None).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!(report.exit_code, None);
        assert!(
            report.error.contains("/nonexistent/worker-test-prog"),
            "{}",
            report.error
        );
        assert!(report.error.contains("No such file"), "{}", report.error);
    }

    #[tokio::test]
    async fn empty_spec_is_a_permanent_failure() {
        let report = run_spec(&ShellSpec::default(), &context(), None).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert!(report.permanent);
    }

    #[tokio::test]
    async fn death_by_signal_is_reported() {
        let report = run_spec(&script("kill -9 $$"), &context(), None).await;
        assert_eq!(report.outcome, Outcome::Failed);
        assert_eq!(report.exit_code, None);
        assert_eq!(report.error, "killed by signal 9");
    }

    #[tokio::test]
    async fn output_is_truncated_to_the_tail() {
        let mut ctx = context();
        ctx.output_cap = 10;
        let report = run_spec(&script("printf '%0100d' 0; printf END"), &ctx, None).await;
        assert_eq!(report.output, "[... 93 bytes truncated]\n0000000END");
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        // A forked child that ignores SIGTERM: only SIGKILL to the group stops it.
        let spec = script(
            "(trap '' TERM; exec sleep 30) & echo child=$!; \
             sh -c 'echo grandchild=$$; exec sleep 30' & sleep 30",
        );
        let start = std::time::Instant::now();
        let report = run_spec(&spec, &context(), Some(Duration::from_millis(300))).await;
        assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
        assert_eq!(report.outcome, Outcome::TimedOut, "{report:?}");
        assert_eq!(report.error, "timed out after 300ms");
        let mut pids = pids_in(&report.output, "child=");
        pids.extend(pids_in(&report.output, "grandchild="));
        assert_eq!(pids.len(), 2, "{}", report.output);
        // Orphans are reaped by init asynchronously; allow it a moment.
        for _ in 0..50 {
            if pids.iter().all(|&pid| !alive(pid)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for pid in pids {
            assert!(!alive(pid), "process {pid} survived the group kill");
        }
    }

    #[tokio::test]
    async fn cancel_kills_and_reports_cancelled() {
        let (handle, stop) = StopSignal::new(None);
        let spec = script("echo started; sleep 30");
        let task = tokio::spawn({
            let ctx = context();
            async move { run(&spec, &ctx, stop).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        handle.cancel();
        let report = tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(report.outcome, Outcome::Cancelled);
        assert_eq!(report.output, "started\n");
    }

    #[tokio::test]
    async fn background_child_holding_the_pipe_does_not_hang() {
        let start = std::time::Instant::now();
        let report = run_spec(&script("sleep 30 & echo bg=$!; echo done"), &context(), None).await;
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        assert_eq!(report.outcome, Outcome::Succeeded);
        assert!(report.output.contains("done"), "{}", report.output);
        for pid in pids_in(&report.output, "bg=") {
            // SAFETY: test clean-up of the process we started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
