//! A controller that cannot go on says so and leaves: when an internal loop
//! ends (here: the timer loop, made to end by a fail point after a few
//! turns), it reports NOT_SERVING on gRPC health, exits with code 1 within a
//! second, saying why, and a restart (what a supervisor does) picks up
//! where it stopped.

use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use worker_tests::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_that_ends_makes_the_controller_exit_non_zero_within_a_second() {
    let env = TestEnv::new();
    env.write_config("jobs:\n  hello:\n    builtin: noop\n");
    // The timer loop turns at least every 250 ms: it ends within ~5 s,
    // long after the checks below have begun.
    let mut ctl = env
        .start_controller_with_env(&[("FAILPOINTS", "engine::timer_loop=20*off->return")], &[])
        .await;
    let queued = ctl.cli_enqueue("hello", &[]).await;

    let channel = tonic::transport::Endpoint::from_shared(ctl.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let check = HealthCheckRequest { service: String::new() };
    assert_eq!(
        health.check(check.clone()).await.unwrap().into_inner().status(),
        ServingStatus::Serving
    );
    // Polled, as a load balancer or an orchestrator would.
    let deadline = Instant::now() + Duration::from_secs(30);
    let not_serving = loop {
        match health.check(check.clone()).await {
            Ok(answer) if answer.get_ref().status() == ServingStatus::NotServing => break Instant::now(),
            Ok(_) => {}
            Err(e) => panic!(
                "the controller stopped answering before it reported NOT_SERVING ({e}); stderr:\n{}",
                ctl.proc.stderr_tail(3000)
            ),
        }
        assert!(
            Instant::now() < deadline,
            "health never changed; stderr:\n{}",
            ctl.proc.stderr_tail(3000)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let status = ctl
        .proc
        .wait_timeout(Duration::from_secs(10))
        .expect("the controller exits");
    let took = not_serving.elapsed();
    eprintln!("exited {took:?} after reporting NOT_SERVING");
    assert_eq!(status.code(), Some(1), "non-zero exit: {status}");
    assert!(
        took < Duration::from_secs(1),
        "exited {took:?} after reporting NOT_SERVING"
    );
    let stderr = ctl.proc.stderr_all();
    assert!(
        stderr.contains("internal failure, the controller stopped: the timer loop ended"),
        "says why:\n{}",
        ctl.proc.stderr_tail(3000)
    );

    // The supervisor's restart recovers the run it left queued.
    let ctl = env.start_controller().await;
    let run = ctl.cli_run(&queued).await;
    assert_eq!(run["state"], "queued", "{run}");
}
