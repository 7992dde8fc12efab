//! A shutdown is bounded: SIGTERM under thousands of per-second schedules
//! stops new fires at once and the controller exits within its deadline
//! (`--shutdown-timeout`), cleanly, with nothing half-written.

use std::time::{Duration, Instant};

use worker_proto::v1 as pb;
use worker_tests::{TestEnv, wait_for};

/// Jobs that fire every second (the controller before the fix went on writing
/// runs for minutes after SIGTERM with this many).
const JOBS: usize = 75_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_thousands_of_per_second_schedules_exits_within_the_deadline() {
    let env = TestEnv::new();
    let mut yaml = String::from("jobs:\n");
    for i in 0..JOBS {
        yaml.push_str(&format!(
            "  tick.{i}:\n    schedule: \"* * * * * *\"\n    builtin: noop\n"
        ));
    }
    env.write_config(&yaml);
    // 75,000 jobs make a 4.5 MB file, over the default config_file_bytes.
    let mut ctl = env
        .start_controller_with(&["--shutdown-timeout", "3s", "--limit", "config_file_bytes=16MiB"])
        .await;

    // Fires are being created: a few seconds' worth of runs.
    let client = ctl.client().await;
    let before = wait_for("runs of several seconds of fires", Duration::from_secs(60), || {
        let mut client = client.clone();
        async move {
            let info = client
                .server_info(pb::ServerInfoRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if info.live_runs >= 3 * JOBS as u64 {
                Ok(info.live_runs)
            } else {
                Err(format!("{} live runs", info.live_runs))
            }
        }
    })
    .await;

    let sent = Instant::now();
    ctl.proc.signal(libc::SIGTERM);
    let status = ctl
        .proc
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit 10 s after SIGTERM; stderr:\n{}", ctl.proc.stderr_tail(3000)));
    let took = sent.elapsed();
    eprintln!("exited {took:?} after SIGTERM with {before}+ live runs");
    let stderr = ctl.proc.stderr_all();
    assert!(
        status.success(),
        "clean exit: {status}; stderr:\n{}",
        ctl.proc.stderr_tail(3000)
    );
    assert!(stderr.contains("shutting down"), "{}", ctl.proc.stderr_tail(3000));
    assert!(
        !stderr.contains("shutdown deadline reached"),
        "everything stopped by itself, nothing was abandoned at the deadline:\n{}",
        ctl.proc.stderr_tail(3000)
    );
    // 3 s of deadline, plus what a busy two-core machine needs to notice the
    // signal and leave.
    assert!(took < Duration::from_secs(5), "exited {took:?} after SIGTERM");
    drop(client);

    // Nothing is half-written: each fire's run and its schedule's cursor are
    // one transaction. Restarted with the jobs disabled (nothing fires), every
    // sampled schedule's cursor is its newest run's instant.
    env.write_config(&yaml.replace("builtin: noop", "builtin: noop\n    enabled: false"));
    let ctl = env
        .start_controller_with(&["--shutdown-timeout", "3s", "--limit", "config_file_bytes=16MiB"])
        .await;
    // Through gRPC: printing 75,000 schedules as JSON takes workerctl close
    // to its 30 s limit on a busy two-core machine.
    let mut client = ctl.client().await;
    let schedules = client
        .list_schedules(pb::ListSchedulesRequest {})
        .await
        .expect("ListSchedules")
        .into_inner()
        .schedules;
    for job in ["tick.0", "tick.1", "tick.37500", "tick.74999"] {
        let schedule = schedules.iter().find(|s| s.job == job).expect("listed");
        let runs = client
            .list_runs(pb::ListRunsRequest {
                job: job.into(),
                state: String::new(),
                limit: 1,
            })
            .await
            .unwrap()
            .into_inner()
            .runs;
        let newest = runs.first().map(|r| r.scheduled_for.clone()).unwrap_or_default();
        let cursor = schedule.last_fired.clone();
        assert!(!newest.is_empty(), "{job} fired before the shutdown");
        assert_eq!(
            worker_tests::parse_ts("cursor", &cursor),
            worker_tests::parse_ts("newest run", &newest),
            "{job}: the cursor and the newest run agree"
        );
    }
    let info = client.server_info(pb::ServerInfoRequest {}).await.unwrap().into_inner();
    assert!(
        info.live_runs >= before,
        "{} live runs after restart, {before} before",
        info.live_runs
    );
}
