//! The gRPC listen address: without authentication the controller listens on
//! loopback only. A non-loopback `--grpc-listen` is refused (exit 2, a message
//! naming `--insecure-no-auth`, before any port is bound; the store is opened
//! first, since whether authentication is on depends on the tokens it holds)
//! unless `--insecure-no-auth` is given; with it, the controller serves there.
//! With a token it may listen anywhere (tests/tests/auth.rs).

use std::net::IpAddr;
use std::time::Duration;

use worker_tests::json::str_field;
use worker_tests::{Controller, HEARTBEAT, LEASE_TIMEOUT, TestEnv, local_non_loopback_ipv4};

const CONFIG: &str = r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  hello:
    shell: "echo hello over $WORKER_JOB"
"#;

/// Asserts the controller refused `listen`: exit 2, no ready line, and a
/// message naming the address and the flag.
async fn assert_refused(env: &TestEnv, listen: &str) {
    let exited = env
        .run_controller_to_exit_on(listen, &[], Duration::from_secs(20))
        .await;
    assert_eq!(exited.code, Some(2), "--grpc-listen {listen}: {exited:?}");
    assert!(
        !exited.stdout.contains("ready"),
        "--grpc-listen {listen}: a ready line although refused: {exited:?}"
    );
    let ip = listen.rsplit_once(':').map_or(listen, |(ip, _)| ip);
    assert!(
        exited.stderr.contains("--insecure-no-auth") && exited.stderr.contains(ip),
        "--grpc-listen {listen}: the error names neither the flag nor the address: {}",
        exited.stderr
    );
}

/// Runs a job through `ctl` at `url` (workerctl and an agent both connect there).
async fn run_hello_via(env: &TestEnv, ctl: &mut Controller, url: String, agent: &str) {
    ctl.url = url;
    let _agent = env.start_agent(ctl, agent, 1).await;
    let run = ctl.cli_json(&["enqueue", "hello", "--wait"]).await;
    assert_eq!(str_field(&run, "state"), "succeeded", "via {}: {run:#}", ctl.url);
    let agents = ctl.cli_json(&["agents", "list"]).await;
    assert!(
        agents.to_string().contains(agent),
        "agent {agent} not listed via {}: {agents:#}",
        ctl.url
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_address_needs_insecure_no_auth() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    assert_refused(&env, "0.0.0.0:0").await;

    let mut ctl = env
        .start_controller_timed("0.0.0.0:0", HEARTBEAT, LEASE_TIMEOUT, &["--insecure-no-auth"])
        .await;
    assert!(
        ctl.addr.ip().is_unspecified(),
        "ready line address {} is not the wildcard address",
        ctl.addr
    );
    let port = ctl.addr.port();
    assert_ne!(port, 0);
    // Served on every interface: loopback, and another local address if any.
    run_hello_via(&env, &mut ctl, format!("http://127.0.0.1:{port}"), "via-loopback").await;
    if let Some(ip) = local_non_loopback_ipv4().first() {
        run_hello_via(&env, &mut ctl, format!("http://{ip}:{port}"), "via-interface").await;
    } else {
        worker_tests::skip::skip_or_fail(
            "no non-loopback IPv4 address on this machine: the wildcard address was checked through loopback only",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_interface_address_needs_insecure_no_auth() {
    let Some(ip) = local_non_loopback_ipv4().first().copied() else {
        worker_tests::skip::skip_or_fail("no non-loopback IPv4 address on this machine to listen on");
        return;
    };
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let listen = format!("{ip}:0");
    assert_refused(&env, &listen).await;

    let mut ctl = env
        .start_controller_timed(&listen, HEARTBEAT, LEASE_TIMEOUT, &["--insecure-no-auth"])
        .await;
    assert_eq!(ctl.addr.ip(), IpAddr::V4(ip), "ready line: {}", ctl.addr);
    let url = ctl.url.clone();
    run_hello_via(&env, &mut ctl, url, "on-interface").await;
}
