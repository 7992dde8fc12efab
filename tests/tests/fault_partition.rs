//! A network partition between the controller and an agent, made with a Linux
//! network namespace and a veth pair (needs root and iproute2's `ip`; where
//! either is missing the test is skipped with a notice, and fails under CI).
//!
//! Agent A runs inside the namespace, agent B on the host. A takes a run, the
//! link is cut; after the lease the run is lost on A and succeeds on B. When the
//! link is back, A's late result is refused (stale) and the history stays as it
//! was; A keeps working afterwards.

mod fault_common;

use std::time::{Duration, Instant};

use fault_common::*;
use worker_tests::TestEnv;
use worker_tests::json::{self, str_field};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_agent_result_is_stale_and_agent_recovers() {
    let net = match Netns::create() {
        Ok(net) => net,
        Err(NetnsError::Unavailable(e)) => {
            worker_tests::skip::skip_or_fail(format_args!(
                "no network namespace for the partitioned agent (needs root, or CAP_SYS_ADMIN and \
                 CAP_NET_ADMIN, and iproute2's `ip`): {e}"
            ));
            return;
        }
        Err(NetnsError::Other(e)) => panic!("setting up the network namespace failed: {e}"),
    };

    let env = TestEnv::new();
    let marks = env.path().join("started.txt");
    env.write_config(&format!(
        r#"
jobs:
  nap:
    shell: "echo \"start $WORKER_ATTEMPT\" >> '{0}'; sleep 3; echo \"end $WORKER_ATTEMPT\" >> '{0}'; echo napped attempt=$WORKER_ATTEMPT"
    retry: {{ max_attempts: 3, initial_delay: 100ms, jitter: 0 }}
  zoned:
    shell: "echo in-namespace"
    selector: {{ zone: ns }}
    retry: {{ max_attempts: 1 }}
"#,
        marks.display()
    ));
    let listen = format!("{}:0", net.host_ip);
    let ctl = start_controller(&env, &listen, &["--insecure-no-auth"]).await;
    assert_eq!(
        ctl.addr.ip().to_string(),
        net.host_ip,
        "controller address {}",
        ctl.addr
    );

    // A: inside the namespace, reaching the controller over the veth.
    let mut a = start_agent_full(
        &env,
        &ctl,
        &ctl.url,
        Some(&net.name),
        "ns-agent",
        1,
        &["--labels", "zone=ns"],
    )
    .await;

    let id = ctl.cli_enqueue("nap", &[]).await;
    wait_running_on(&ctl, &id, "ns-agent", Duration::from_secs(10)).await;
    wait_lines(&marks, 1, Duration::from_secs(10)).await;
    // B: on the host, same controller address (local traffic, unaffected by the cut).
    let _b = start_agent(&env, &ctl, "host-agent", 1, &[]).await;

    net.link_down();
    let cut = Instant::now();
    let done = ctl.wait_run(&id, Duration::from_secs(20)).await;
    eprintln!("[fault] run {id} {} {:?} after the cut", done.state, cut.elapsed());
    assert_eq!(done.state, "succeeded", "{done:?}");
    let before = ctl.cli_run(&id).await;
    assert_lost_then_succeeded(&before, "ns-agent", "host-agent");
    let output = json::opt_str(&json::attempts(&before)[1], "output").unwrap_or("");
    assert!(output.contains("napped attempt=2"), "{before:#}");
    let s = stats(&ctl).await;
    assert!(counter(&s, "lost_attempts") >= 1, "{s:#}");
    assert!(counter(&s, "rescued_runs") >= 1, "{s:#}");
    assert_eq!(counter(&s, "stale_results"), 0, "{s:#}");
    // A's own attempt ended during the partition (3 s job): its result waits
    // on A's side of the cut link.
    let lines = wait_lines(&marks, 4, Duration::from_secs(5)).await;
    assert!(
        lines.iter().any(|l| l == "end 1"),
        "attempt 1 did not finish on A: {lines:?}"
    );

    net.link_up();
    let healed = Instant::now();
    let s = wait_counter(&ctl, "stale_results", 1, Duration::from_secs(40)).await;
    eprintln!(
        "[fault] stale result refused {:?} after the link came back",
        healed.elapsed()
    );
    assert_eq!(counter(&s, "duplicate_results"), 0, "{s:#}");
    let after = ctl.cli_run(&id).await;
    assert_eq!(settled(&after), settled(&before), "the late result changed the run");
    assert_eq!(str_field(&json::attempts(&after)[0], "outcome"), "lost");

    // A still works: a run only A can take (selector zone=ns) succeeds on A.
    assert!(a.proc.try_wait().is_none(), "the namespaced agent exited");
    let zoned = ctl.cli_enqueue("zoned", &[]).await;
    let run = ctl.wait_run(&zoned, Duration::from_secs(40)).await;
    eprintln!(
        "[fault] zoned run {} {:?} after the link came back",
        run.state,
        healed.elapsed()
    );
    assert_eq!(run.state, "succeeded", "{run:?}");
    assert_eq!(run.attempts.len(), 1, "{run:?}");
    assert_eq!(run.attempts[0].agent, "ns-agent", "{run:?}");
    assert!(run.attempts[0].output.contains("in-namespace"), "{run:?}");
    drop(a);
}
