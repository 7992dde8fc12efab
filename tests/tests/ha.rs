//! High availability on PostgreSQL (docs/high-availability.md): several
//! controllers on one database, one leading by a lease with an epoch, the
//! others standing by. Needs the PostgreSQL test server (skipped with a
//! notice without one, a failure under CI).

mod fault_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use worker_proto::v1 as pb;
use worker_tests::receiver::Receiver;
use worker_tests::{Controller, TestEnv, http, pg, run_cli, wait_for};

/// A schedule firing every second (every fire missed during a failover is
/// run: `catch_up: all`), and short jobs to queue by the thousand.
const CONFIG: &str = r#"
jobs:
  tick:
    shell: "true"
    schedule: "* * * * * *"
    catch_up: all
    catch_up_window: 1m
  work:
    shell: "sleep 0.02"
    retry: { max_attempts: 3 }
  spare:
    shell: "true"
"#;

/// The lease of the tests: a standby takes over ~2 s after the leader died.
const LEASE: &str = "2s";

async fn start_ha(env: &TestEnv, id: &str) -> Controller {
    env.start_controller_with(&["--ha", "--ha-id", id, "--ha-lease", LEASE])
        .await
}

/// `/readyz` of `addr`: (status, body).
async fn readyz(addr: SocketAddr) -> (u16, String) {
    let answer = http::get(addr, "/readyz", None).await;
    (answer.status, answer.body)
}

/// Waits until `ctl` leads (its `/readyz` answers 200).
async fn wait_leading(ctl: &Controller, within: Duration) {
    let addr = ctl.http_addr.expect("the controller serves HTTP");
    wait_for("the controller to lead", within, || async move {
        match readyz(addr).await {
            (200, body) if body.contains("leader: this controller") => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await
}

/// Waits until the standby `ctl` sees `leader` lead (its `/readyz`).
async fn wait_sees_leader(ctl: &Controller, leader: &str) {
    let addr = ctl.http_addr.expect("the controller serves HTTP");
    let expected = format!("standby: {leader} at");
    let expected = expected.as_str();
    wait_for(
        "the standby to see the leader",
        Duration::from_secs(10),
        || async move {
            match readyz(addr).await {
                (503, body) if body.contains(expected) => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await
}

/// One number from the test's database.
async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to the test database");
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    conn.close().await.ok();
    n
}

/// Waits until `sql` counts at least `min`.
async fn wait_count(url: &str, what: &str, within: Duration, sql: &str, min: i64) {
    wait_for(what, within, || async move {
        match count(url, sql).await {
            n if n >= min => Ok(()),
            n => Err(format!("{n} of {min}")),
        }
    })
    .await
}

/// Every fire instant of `tick` exists once.
async fn assert_each_fire_once(url: &str) {
    assert_eq!(
        count(url, "SELECT count(*) FROM (SELECT scheduled_for FROM runs WHERE job = 'tick' GROUP BY scheduled_for HAVING count(*) > 1) d").await,
        0
    );
}

/// The fence held: no event of epoch 1 was written after epoch 2's first.
async fn assert_epoch_one_ended_before_epoch_two(url: &str) {
    let last_of_first = count(url, "SELECT max(seq) FROM events WHERE epoch = 1").await;
    let first_of_second = count(url, "SELECT min(seq) FROM events WHERE epoch = 2").await;
    assert!(
        last_of_first < first_of_second,
        "epoch 1 wrote event {last_of_first} after epoch 2's {first_of_second}"
    );
}

/// Three controllers, a schedule every second and 1,000 queued runs: the
/// leader is killed; a standby leads within 10 s, every run succeeds, every
/// fire instant exists exactly once with none missing, only attempts in
/// flight at the kill ran twice, and nothing of the old epoch was written
/// after the new one began.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_is_replaced_without_lost_or_doubled_work() {
    let Some(db) = pg::fresh_database().await else {
        return;
    };
    let env = TestEnv::new().with_db(&db.url);
    env.write_config(CONFIG);
    let mut first = start_ha(&env, "c1").await;
    wait_leading(&first, Duration::from_secs(15)).await;
    let second = start_ha(&env, "c2").await;
    let third = start_ha(&env, "c3").await;
    for standby in [&second, &third] {
        wait_sees_leader(standby, "c1").await;
    }
    let all = format!("{},{},{}", second.url, first.url, third.url);
    let agents = [env.spawn_agent(&all, "a1", 8, &[]), env.spawn_agent(&all, "a2", 8, &[])];
    let mut connected = Vec::new();
    for agent in agents {
        connected.push(first.connected(agent).await);
    }

    let mut client = first.client().await;
    let batch = pb::EnqueueBatchRequest {
        runs: (0..1000)
            .map(|_| pb::EnqueueRequest {
                job: "work".into(),
                ..Default::default()
            })
            .collect(),
    };
    let results = client
        .enqueue_batch(batch)
        .await
        .expect("enqueue 1,000 runs")
        .into_inner()
        .results;
    assert_eq!(results.len(), 1000);
    let url = db.url.clone();
    wait_for("100 runs and 3 fires done", Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            let done = count(
                &url,
                "SELECT count(*) FROM runs WHERE job = 'work' AND state = 'succeeded'",
            )
            .await;
            let fires = count(&url, "SELECT count(*) FROM runs WHERE job = 'tick'").await;
            if done >= 100 && fires >= 3 {
                Ok(())
            } else {
                Err(format!("{done} runs, {fires} fires"))
            }
        }
    })
    .await;

    first.proc.kill();
    let killed = Instant::now();
    let standbys = [second.http_addr.unwrap(), third.http_addr.unwrap()];
    let leader = wait_for("a standby to lead", Duration::from_secs(10), || async move {
        for (i, addr) in standbys.iter().enumerate() {
            if readyz(*addr).await.0 == 200 {
                return Ok(i);
            }
        }
        Err("no standby leads yet".to_string())
    })
    .await;
    let took_over = killed.elapsed();
    eprintln!("a standby led {took_over:?} after the leader was killed");
    assert!(took_over < Duration::from_secs(10), "took over after {took_over:?}");
    let (_, body) = readyz(standbys[leader]).await;
    assert!(body.contains("epoch 2"), "{body}");
    let (new_leader, standby) = if leader == 0 {
        (&second, &third)
    } else {
        (&third, &second)
    };
    let new_id = if leader == 0 { "c2" } else { "c3" };

    // workerctl with the addresses in any order reaches the new leader for
    // reads, enqueues and management.
    let list = format!("{},{},{}", first.url, standby.url, new_leader.url);
    let status = run_cli(&["--controller", &list, "-o", "json", "status"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(status["leadership"]["role"], "leader", "{status}");
    assert_eq!(status["leadership"]["epoch"], 2, "{status}");
    assert_eq!(status["leadership"]["id"], new_id, "{status}");
    let enqueued = run_cli(&["--controller", &list, "-o", "json", "enqueue", "work"])
        .await
        .expect_code(0)
        .json();
    assert!(enqueued["id"].as_str().is_some_and(|id| !id.is_empty()), "{enqueued}");
    run_cli(&["--controller", &list, "jobs", "disable", "spare"])
        .await
        .expect_code(0);
    let spare = run_cli(&["--controller", &list, "-o", "json", "jobs", "get", "spare"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(spare["enabled"], false, "{spare}");
    // The other standby alone answers too, through the store: the new
    // leader's view.
    let spare = run_cli(&["--controller", &standby.url, "-o", "json", "jobs", "get", "spare"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(spare["enabled"], false, "{spare}");

    let url = db.url.clone();
    wait_for("every run to succeed and 3 more fires", Duration::from_secs(90), || {
        let url = url.clone();
        async move {
            let done = count(
                &url,
                "SELECT count(*) FROM runs WHERE job = 'work' AND state = 'succeeded'",
            )
            .await;
            let new_fires = count(
                &url,
                "SELECT count(*) FROM events WHERE epoch = 2 AND kind = 'run' AND from_state IS NULL AND job = 'tick'",
            )
            .await;
            if done == 1001 && new_fires >= 3 {
                Ok(())
            } else {
                Err(format!("{done} runs, {new_fires} fires of epoch 2"))
            }
        }
    })
    .await;

    // Each fire instant once, none missing between the first and the last.
    assert_each_fire_once(&db.url).await;
    // One statement: the schedule goes on firing meanwhile.
    let gaps = count(
        &db.url,
        "SELECT (max(scheduled_for) - min(scheduled_for)) / 1000 + 1 - count(*) FROM runs WHERE job = 'tick'",
    )
    .await;
    assert_eq!(gaps, 0, "one run per second from the first fire to the last");
    // Nothing lost: every queued run succeeded (checked above); only the
    // attempts in flight at the kill (at most the agents' 16 slots) ran twice.
    let twice = count(&db.url, "SELECT count(*) FROM (SELECT a.run_id FROM attempts a JOIN runs r ON r.id = a.run_id WHERE r.job = 'work' GROUP BY a.run_id HAVING count(*) > 1) d").await;
    assert!(twice <= 16, "{twice} runs ran more than once");
    // Fencing: every event was written by a leader, and epoch 1 wrote
    // nothing after epoch 2 began.
    assert_eq!(count(&db.url, "SELECT count(*) FROM events WHERE epoch = 0").await, 0);
    assert_epoch_one_ended_before_epoch_two(&db.url).await;

    for mut agent in connected {
        agent.stop(Duration::from_secs(15));
    }
    drop((second, third));
    db.drop_now().await;
}

/// How many calls the standby `id` relayed to `method` (its last path
/// segment) were answered.
async fn relayed(url: &str, id: &str, method: &str) -> i64 {
    count(
        url,
        &format!(
            "SELECT count(*) FROM relayed_calls WHERE standby = '{id}' AND state = 'done' \
             AND method LIKE '%/{method}'"
        ),
    )
    .await
}

/// `workerctl` given only a standby's address works for reads, enqueues and
/// management: the standby relays each call through the store and the
/// leader answers (checked in `relayed_calls`). Errors come back as the
/// leader gave them, tokens created on the leader are known to the standby,
/// and an agent given the standby's address is redirected to the leader. A
/// call made while the leader is dead waits in the store and is answered by
/// the next leader: here the standby itself, once it took the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_serves_workerctl_through_the_store() {
    let Some(db) = pg::fresh_database().await else {
        return;
    };
    let env = TestEnv::new().with_db(&db.url);
    env.write_config(CONFIG);
    let mut leader = start_ha(&env, "l1").await;
    wait_leading(&leader, Duration::from_secs(15)).await;
    let standby = start_ha(&env, "s1").await;
    wait_sees_leader(&standby, "l1").await;
    // The agent knows only the standby: it is redirected to the leader.
    let agent = leader.connected(env.spawn_agent(&standby.url, "a1", 4, &[])).await;

    let at_standby = |args: &[&str]| {
        let mut all = vec!["--controller", standby.url.as_str(), "-o", "json"];
        all.extend_from_slice(args);
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let cli = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args).await
    };
    // Reads.
    let status = cli(at_standby(&["status"])).await.expect_code(0).json();
    assert_eq!(status["leadership"]["role"], "leader", "{status}");
    assert_eq!(status["leadership"]["id"], "l1", "{status}");
    let jobs = cli(at_standby(&["jobs", "list"])).await.expect_code(0).stdout;
    assert!(jobs.contains("\"spare\""), "{jobs}");
    // An enqueue, waited for (WaitRun, relayed too): the agent ran it.
    let run = cli(at_standby(&["enqueue", "work", "--wait"]))
        .await
        .expect_code(0)
        .json();
    assert_eq!(run["state"], "succeeded", "{run}");
    // Management, and the leader's errors as they are.
    cli(at_standby(&["jobs", "disable", "spare"])).await.expect_code(0);
    let spare = cli(at_standby(&["jobs", "get", "spare"])).await.expect_code(0).json();
    assert_eq!(spare["enabled"], false, "{spare}");
    cli(at_standby(&["schedules", "pause", "tick"])).await.expect_code(0);
    let missing = cli(at_standby(&["enqueue", "no-such-job"])).await.expect_code(3);
    assert!(missing.stderr.contains("no-such-job"), "{missing:?}");
    for method in [
        "ServerInfo",
        "ListJobs",
        "Enqueue",
        "WaitRun",
        "SetJobEnabled",
        "GetJob",
        "PauseSchedule",
    ] {
        assert!(relayed(&db.url, "s1", method).await >= 1, "{method} was not relayed");
    }

    // A token created through the standby turns authentication on; the
    // standby reads it from the store and relays the caller's name.
    let created = cli(at_standby(&["tokens", "create", "ops", "--role", "operator"]))
        .await
        .expect_code(0)
        .json();
    let secret = created["token"].as_str().unwrap().to_string();
    let (standby_url, token) = (standby.url.clone(), secret.clone());
    wait_for("the standby to accept the new token", Duration::from_secs(10), || {
        let (standby_url, token) = (standby_url.clone(), token.clone());
        async move {
            let out = run_cli(&["--controller", &standby_url, "--token", &token, "jobs", "list"]).await;
            if out.code == 0 { Ok(()) } else { Err(out.stderr) }
        }
    })
    .await;
    let refused = cli(at_standby(&["jobs", "list"])).await.expect_code(4);
    assert!(refused.stderr.contains("token"), "{refused:?}");
    let refused = run_cli(&["--controller", &standby.url, "--token", &secret, "tokens", "list"])
        .await
        .expect_code(4);
    assert!(
        refused.stderr.contains("operator"),
        "the role matrix holds: {refused:?}"
    );

    // The leader dies; a call to the standby waits in the store until the
    // standby leads and answers it, once.
    leader.proc.kill();
    let enqueued = run_cli(&[
        "--controller",
        &standby.url,
        "--token",
        &secret,
        "-o",
        "json",
        "enqueue",
        "work",
        "--key",
        "after-the-kill",
    ])
    .await
    .expect_code(0)
    .json();
    assert!(enqueued["id"].as_str().is_some_and(|id| !id.is_empty()), "{enqueued}");
    wait_leading(&standby, Duration::from_secs(15)).await;
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM runs WHERE idempotency_key = 'after-the-kill'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT count(*) FROM relayed_calls WHERE state = 'done' AND claimed_epoch = 2 AND method LIKE '%/Enqueue'"
        )
        .await,
        1,
        "the enqueue was answered by epoch 2"
    );
    drop(agent);
    drop(standby);
    db.drop_now().await;
}

/// A leader stopped gracefully releases its lease: the standby leads at once
/// (well before the lease would have expired), in a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_hands_the_lease_on_at_once() {
    let Some(db) = pg::fresh_database().await else {
        return;
    };
    let env = TestEnv::new().with_db(&db.url);
    env.write_config(CONFIG);
    let mut first = env
        .start_controller_with(&["--ha", "--ha-id", "c1", "--ha-lease", "30s"])
        .await;
    wait_leading(&first, Duration::from_secs(15)).await;
    let second = env
        .start_controller_with(&["--ha", "--ha-id", "c2", "--ha-lease", "30s"])
        .await;
    let stopped = Instant::now();
    let status = first.proc.terminate(Duration::from_secs(15));
    assert!(status.success(), "the leader exited with {status}");
    wait_leading(&second, Duration::from_secs(15)).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(15),
        "took {:?}",
        stopped.elapsed()
    );
    let (_, body) = readyz(second.http_addr.unwrap()).await;
    assert!(body.contains("epoch 2"), "{body}");
    drop(second);
    db.drop_now().await;
}

/// `/metrics` of `addr`: (status, body).
async fn metrics(addr: SocketAddr) -> (u16, String) {
    let answer = http::get(addr, "/metrics", None).await;
    (answer.status, answer.body)
}

/// Whether the metrics text `body` has every line of `lines`, exactly.
fn has_lines(body: &str, lines: &[&str]) -> Result<(), String> {
    match lines.iter().find(|line| !body.lines().any(|l| l == **line)) {
        None => Ok(()),
        Some(missing) => Err(format!("{missing} missing from:\n{body}")),
    }
}

/// After a failover the new leader raises `leader_changed` once, delivered
/// to a real webhook receiver, naming itself and the previous leader with
/// the new epoch; its `/metrics` counts the term it began and shows the
/// epoch. A standby's `/metrics` answers with the leadership series only.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_raises_leader_changed_and_is_counted() {
    let Some(db) = pg::fresh_database().await else {
        return;
    };
    let env = TestEnv::new().with_db(&db.url);
    env.write_config("jobs:\n  work:\n    shell: \"true\"\n");
    let recv = Receiver::start().await;
    env.write_alerts(&format!(
        "channels:\n  hook: {{ type: webhook, url: \"{}\", secret: hook-secret-4711 }}\n\
         rules:\n  - {{ name: leader, event: leader_changed, channels: [hook] }}\n",
        recv.url("/hook")
    ));
    let mut first = start_ha(&env, "c1").await;
    wait_leading(&first, Duration::from_secs(15)).await;
    let second = start_ha(&env, "c2").await;
    let (first_http, second_http) = (first.http_addr.unwrap(), second.http_addr.unwrap());

    // The first term: counted, but nobody led before it, so no alert.
    let (status, body) = metrics(first_http).await;
    assert_eq!(status, 200, "{body}");
    has_lines(
        &body,
        &[
            "worker_leader 1",
            "worker_leader_epoch 1",
            "worker_leadership_changes_total 1",
        ],
    )
    .unwrap();
    // The standby: no engine, the leadership series only.
    wait_for("the standby's metrics", Duration::from_secs(10), || async move {
        let (status, body) = metrics(second_http).await;
        if status != 200 {
            return Err(format!("{status} {body}"));
        }
        has_lines(
            &body,
            &[
                "worker_leader 0",
                "worker_leader_epoch 0",
                "worker_leadership_changes_total 0",
            ],
        )?;
        if body.contains("worker_queue_depth") {
            return Err(format!("a standby shows engine metrics:\n{body}"));
        }
        Ok(())
    })
    .await;

    first.proc.kill();
    wait_leading(&second, Duration::from_secs(15)).await;
    let got = recv
        .wait("/hook", "leader_changed", Duration::from_secs(15), |g| {
            g.iter().any(|r| r.json["event"] == "leader_changed")
        })
        .await;
    let alerts: Vec<_> = got.iter().filter(|r| r.json["event"] == "leader_changed").collect();
    assert_eq!(alerts.len(), 1, "one alert per change: {got:#?}");
    let alert = &alerts[0];
    assert_eq!(alert.header("x-worker-event"), Some("leader_changed"));
    assert!(alert.header("x-worker-signature").is_some(), "signed");
    let body = &alert.json;
    assert_eq!(body["kind"], "alert");
    assert_eq!(body["rule"], "leader");
    assert_eq!(body["title"], "leader_changed: c2 leads now (epoch 2); c1 led before");
    assert!(body["job"].is_null() && body["priority"].is_null(), "{body}");
    let leader = &body["leader"];
    assert_eq!(leader["id"], "c2", "{body}");
    assert_eq!(leader["address"], second.url.as_str(), "{body}");
    assert_eq!(leader["epoch"], 2, "{body}");
    assert_eq!(leader["previous"]["id"], "c1", "{body}");
    assert_eq!(leader["previous"]["address"], first.url.as_str(), "{body}");
    assert_eq!(leader["previous"]["epoch"], 1, "{body}");
    assert_eq!(body["details"]["Previous leader"], "c1", "{body}");

    let (status, body) = metrics(second_http).await;
    assert_eq!(status, 200, "{body}");
    has_lines(
        &body,
        &[
            "worker_leader 1",
            "worker_leader_epoch 2",
            "worker_leadership_changes_total 1",
        ],
    )
    .unwrap();
    drop(second);
    db.drop_now().await;
}

/// `--ha` needs PostgreSQL: on SQLite the controller refuses to start (exit 2).
#[tokio::test]
async fn ha_on_sqlite_is_refused() {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let exited = env.run_controller_to_exit(&["--ha"], Duration::from_secs(20)).await;
    assert_eq!(exited.code, Some(2), "{exited:?}");
    assert!(
        exited
            .stderr
            .contains("--ha: high availability needs a PostgreSQL store"),
        "{}",
        exited.stderr
    );
}

/// A TCP relay from `listen` to PostgreSQL on loopback: the test server
/// listens on 127.0.0.1 only, and a controller inside a network namespace
/// reaches it through this relay on the host's side of the veth pair.
async fn relay_to_postgres(listen: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind the relay");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    addr
}

/// A leader cut off from PostgreSQL (it runs in its own network namespace
/// and the link goes down) stops leading by its own clock before its lease
/// ends in the database; a standby takes over; none of the old epoch's
/// writes lands after the new epoch began; when the link is back, the old
/// leader rejoins as a standby naming the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_cut_off_from_the_database_steps_down_and_rejoins_as_a_standby() {
    let net = match fault_common::Netns::create() {
        Ok(net) => net,
        Err(fault_common::NetnsError::Unavailable(e)) => {
            worker_tests::skip::skip_or_fail(format_args!(
                "no network namespace for the partitioned controller (needs root, or CAP_SYS_ADMIN and \
                 CAP_NET_ADMIN, and iproute2's `ip`): {e}"
            ));
            return;
        }
        Err(fault_common::NetnsError::Other(e)) => panic!("setting up the network namespace failed: {e}"),
    };
    let Some(db) = pg::fresh_database().await else {
        return;
    };
    let relay = relay_to_postgres(&format!("{}:0", net.host_ip)).await;
    let database = db.url.rsplit('/').next().unwrap().to_string();
    let relayed_url = format!("postgres://postgres@{relay}/{database}");
    let env = TestEnv::new().with_db(&db.url);
    env.write_config(CONFIG);
    let listen = format!("{}:0", net.ns_ip);
    let flags = ["--ha", "--ha-id", "cut", "--ha-lease", LEASE, "--insecure-no-auth"];
    let cut = env
        .start_controller_wrapped(&["ip", "netns", "exec", &net.name], &relayed_url, &listen, &flags)
        .await;
    wait_leading(&cut, Duration::from_secs(15)).await;
    let other = start_ha(&env, "other").await;
    let all = format!("{},{}", cut.url, other.url);
    let agent = env.spawn_agent(&all, "a1", 4, &[]);
    let mut agent = cut.connected(agent).await;
    wait_count(
        &db.url,
        "3 fires of epoch 1",
        Duration::from_secs(30),
        "SELECT count(*) FROM runs WHERE job = 'tick' AND state = 'succeeded'",
        3,
    )
    .await;

    net.link_down();
    let other_http = other.http_addr.unwrap();
    wait_for("the standby to lead", Duration::from_secs(15), || async move {
        match readyz(other_http).await {
            (200, body) => Ok(body),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    // The cut-off leader stopped leading before the new epoch began: its
    // log says so, and the database records when the new term started.
    let log = cut.proc.stderr_all();
    assert!(log.contains("leadership lost"), "{log}");
    assert!(log.contains("could not be renewed in time"), "{log}");
    wait_count(
        &db.url,
        "fires of epoch 2",
        Duration::from_secs(30),
        "SELECT count(*) FROM events WHERE epoch = 2 AND job = 'tick' AND from_state IS NULL",
        2,
    )
    .await;

    net.link_up();
    let cut_http = cut.http_addr.unwrap();
    let body = wait_for(
        "the old leader to rejoin as a standby",
        Duration::from_secs(30),
        || async move {
            // Between its terms the controller does not listen: only ask once it does.
            let listening =
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(cut_http)).await;
            if !matches!(listening, Ok(Ok(_))) {
                return Err("not listening".to_string());
            }
            match readyz(cut_http).await {
                (503, body) if body.contains("standby: other at") => Ok(body),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
    assert!(body.contains("epoch 2"), "{body}");
    // No write of epoch 1 landed after epoch 2's first; every fire once.
    assert_epoch_one_ended_before_epoch_two(&db.url).await;
    assert_each_fire_once(&db.url).await;
    agent.stop(Duration::from_secs(15));
    drop((cut, other));
    db.drop_now().await;
}
