//! Shared helpers of the fault-tolerance tests (`tests/fault_*.rs`).
//!
//! The harness (`worker_tests`) starts every controller with a 1 s heartbeat and
//! a 3 s lease and refuses a second `--lease-timeout`, so these tests start their
//! own controllers (short timings, any listen address, `--insecure-no-auth`) and
//! agents (optionally inside a network namespace) with the harness' `ProcGuard`,
//! and hand back the harness' `Controller` / `Agent` handles, so `cli`,
//! `wait_run`, `wait_state`... work as usual.
//!
//! Also: queue-stats counters, signals, a network-namespace guard, and process
//! checks (`alive`, `reap`) for the process-group tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use worker_proto::v1 as pb;
use worker_tests::json::{self, str_field};
use worker_tests::{Agent, Controller, ENV_TAG, ProcGuard, TestEnv, Value, bins, wait_for};

/// Heartbeat interval of the controllers started here.
pub const HEARTBEAT: &str = "200ms";
/// Lease timeout of the controllers started here.
pub const LEASE: &str = "1500ms";
/// [`LEASE`] as a duration.
pub const LEASE_DUR: Duration = Duration::from_millis(1500);

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn log_path(env: &TestEnv, name: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    env.path().join(format!("fault-{n:02}-{name}.stderr"))
}

// ---------------------------------------------------------------------------
// Controller
// ---------------------------------------------------------------------------

/// Starts `worker-controller` on `listen` (e.g. `127.0.0.1:0`) with the short
/// heartbeat and lease of this module and `extra` flags; waits for its ready line.
pub async fn start_controller(env: &TestEnv, listen: &str, extra: &[&str]) -> Controller {
    env.start_controller_timed(listen, HEARTBEAT, LEASE, extra).await
}

/// [`start_controller`] on loopback, any free port.
pub async fn start_local_controller(env: &TestEnv) -> Controller {
    start_controller(env, "127.0.0.1:0", &[]).await
}

// ---------------------------------------------------------------------------
// Agents
// ---------------------------------------------------------------------------

/// Starts `worker-agent --controller URL --name NAME --capacity N EXTRA...`,
/// inside network namespace `netns` when given (`ip netns exec NS ...`, which
/// execs the agent: the guard's pid is the agent's), and waits until `ctl`
/// lists it as connected.
pub async fn start_agent_full(
    env: &TestEnv,
    ctl: &Controller,
    url: &str,
    netns: Option<&str>,
    name: &str,
    capacity: u32,
    extra: &[&str],
) -> Agent {
    let agent_bin = &bins().agent;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(agent_bin);
            c
        }
        None => Command::new(agent_bin),
    };
    cmd.args(["--controller", url, "--name", name])
        .args(["--capacity", &capacity.to_string()])
        .args(extra)
        .current_dir(env.path())
        .env_remove("WORKER_CONTROLLER")
        .env_remove("WORKER_TOKEN")
        .env(ENV_TAG, env.path());
    let (proc, lines) = ProcGuard::spawn(
        &format!("worker-agent {name}"),
        cmd,
        log_path(env, &format!("agent-{name}")),
    );
    std::thread::spawn(move || for _ in lines {});
    let mut agent = Agent {
        name: name.to_string(),
        proc,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = agent.proc.try_wait() {
            panic!(
                "worker-agent {name} exited ({status}) before connecting; stderr:\n{}",
                agent.proc.stderr_tail(4000)
            );
        }
        let agents = ctl.agents().await;
        if agents.iter().any(|a| a.name == name && a.state == "connected") {
            return agent;
        }
        assert!(
            Instant::now() < deadline,
            "agent {name} not connected within 20s (agents: {agents:?}); stderr:\n{}",
            agent.proc.stderr_tail(4000)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An agent on the host, connected to `ctl.url`.
pub async fn start_agent(env: &TestEnv, ctl: &Controller, name: &str, capacity: u32, extra: &[&str]) -> Agent {
    start_agent_full(env, ctl, &ctl.url, None, name, capacity, extra).await
}

/// Waits until `ctl` lists an agent `name` as connected.
pub async fn wait_agent_connected(ctl: &Controller, name: &str, timeout: Duration) {
    let client = ctl.client().await;
    wait_for(&format!("agent {name} to be connected"), timeout, || {
        let mut client = client.clone();
        async move {
            let agents = client
                .list_agents(pb::ListAgentsRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .agents;
            if agents.iter().any(|a| a.name == name && a.state == "connected") {
                Ok(())
            } else {
                Err(format!("{agents:?}"))
            }
        }
    })
    .await
}

/// Waits (polling, async) at most `timeout` for the process to exit.
pub async fn wait_exit(proc: &mut ProcGuard, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = proc.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// Runs and counters
// ---------------------------------------------------------------------------

/// `workerctl queue stats -o json`.
pub async fn stats(ctl: &Controller) -> Value {
    ctl.cli_json(&["queue", "stats"]).await
}

/// An unsigned counter of `queue stats`.
pub fn counter(stats: &Value, key: &str) -> u64 {
    stats
        .get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("queue stats: {key:?} is not an unsigned integer in {stats:#}"))
}

/// Waits until the `queue stats` counter `key` is at least `min`; returns the stats.
pub async fn wait_counter(ctl: &Controller, key: &str, min: u64, timeout: Duration) -> Value {
    wait_for(&format!("queue stats {key} >= {min}"), timeout, || async move {
        let s = ctl.cli(&["queue", "stats"]).await;
        if s.code != 0 {
            return Err(format!("workerctl exited {}: {}", s.code, s.stderr));
        }
        let v = s.json();
        if counter(&v, key) >= min {
            Ok(v)
        } else {
            Err(format!("{v}"))
        }
    })
    .await
}

/// Waits until the run is `running` with its current attempt on agent `agent`.
pub async fn wait_running_on(ctl: &Controller, id: &str, agent: &str, timeout: Duration) -> pb::Run {
    let client = ctl.client().await;
    wait_for(&format!("run {id} running on {agent}"), timeout, || {
        let mut client = client.clone();
        let id = id.to_string();
        async move {
            let run = client
                .get_run(pb::GetRunRequest { id })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            match run.attempts.last() {
                Some(a) if run.state == "running" && a.agent == agent => Ok(run),
                _ => Err(format!("{run:?}")),
            }
        }
    })
    .await
}

/// Waits until `path` exists and holds at least `lines` non-empty lines; returns them.
pub async fn wait_lines(path: &Path, lines: usize, timeout: Duration) -> Vec<String> {
    wait_for(
        &format!("{} lines in {}", lines, path.display()),
        timeout,
        || async move {
            let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
            let got: Vec<String> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from)
                .collect();
            if got.len() >= lines {
                Ok(got)
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await
}

/// The fields of a run that must not change once it is terminal.
pub fn settled(run: &Value) -> Value {
    let keys = [
        "id",
        "state",
        "finished_at",
        "max_attempts",
        "reason",
        "attempts",
        "transitions",
    ];
    Value::Object(
        keys.iter()
            .map(|k| (k.to_string(), run.get(*k).cloned().unwrap_or(Value::Null)))
            .collect(),
    )
}

/// `(attempt, agent, outcome)` of every attempt of a run (`runs get -o json`).
pub fn attempt_summary(run: &Value) -> Vec<(i64, String, Option<String>)> {
    json::attempts(run)
        .iter()
        .map(|a| {
            (
                json::opt_i64(a, "attempt").unwrap_or(-1),
                json::opt_str(a, "agent").unwrap_or("").to_string(),
                json::opt_str(a, "outcome").map(String::from),
            )
        })
        .collect()
}

/// Asserts the history "attempt 1 lost on `lost_on`, attempt 2 succeeded on
/// `done_on`" and a `succeeded` run.
pub fn assert_lost_then_succeeded(run: &Value, lost_on: &str, done_on: &str) {
    assert_eq!(str_field(run, "state"), "succeeded", "{run:#}");
    let got = attempt_summary(run);
    let want = vec![
        (1, lost_on.to_string(), Some("lost".to_string())),
        (2, done_on.to_string(), Some("succeeded".to_string())),
    ];
    assert_eq!(got, want, "attempts (attempt, agent, outcome) of {run:#}");
}

// ---------------------------------------------------------------------------
// Signals and processes
// ---------------------------------------------------------------------------

/// `kill(pid, sig)`, which must succeed.
pub fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed: {}", std::io::Error::last_os_error());
}

/// Makes this test process the reaper of orphaned descendants (jobs whose shell
/// died), so that killed job processes are reaped here (see [`reap`]) even when
/// PID 1 of the machine does not reap orphans (some container inits do not).
pub fn become_subreaper() {
    // SAFETY: prctl(2) with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(rc, 0, "PR_SET_CHILD_SUBREAPER: {}", std::io::Error::last_os_error());
}

/// Reaps `pid` if it is an exited child of this process (orphans reparented to
/// us as subreaper); no effect on any other process.
pub fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid(2) of one specific pid with WNOHANG; `status` is a valid out pointer.
    unsafe {
        libc::waitpid(pid, &mut status, libc::WNOHANG);
    }
}

/// Start time (clock ticks since boot, field 22 of `/proc/PID/stat`) and state
/// letter of a process, `None` if there is no such process.
pub fn proc_stat(pid: i32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // `rest` starts at field 3 (state); starttime is field 22.
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

/// Whether `kill(pid, 0)` fails with ESRCH (no such process at all, not even a zombie).
pub fn no_such_process(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Pids of live processes whose environment holds `WORKER_RUN_ID=<run_id>`
/// (a job's processes and everything they forked).
pub fn processes_of_run(run_id: &str) -> Vec<i32> {
    let needle = format!("WORKER_RUN_ID={run_id}\0").into_bytes();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.windows(needle.len()).any(|w| w == needle.as_slice()) {
            found.push(pid);
        }
    }
    found
}

// ---------------------------------------------------------------------------
// Network namespace
// ---------------------------------------------------------------------------

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to the host by a veth pair:
/// host side `10.231.N.1/30`, namespace side `10.231.N.2/30`, N from the pid.
/// Deleted (namespace and veth) on drop, also when the test panics.
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub ns_if: String,
    pub host_ip: String,
    pub ns_ip: String,
}

/// Why a namespace could not be made.
pub enum NetnsError {
    /// Not possible on this machine (not root, no CAP_SYS_ADMIN, no `ip`
    /// command): the test is skipped, or fails under CI.
    Unavailable(String),
    Other(String),
}

impl Netns {
    pub fn create() -> Result<Self, NetnsError> {
        let pid = std::process::id();
        let n = pid % 250 + 2;
        let ns = Netns {
            name: format!("wkt{pid}"),
            host_if: format!("wkth{pid}"),
            ns_if: format!("wktn{pid}"),
            host_ip: format!("10.231.{n}.1"),
            ns_ip: format!("10.231.{n}.2"),
        };
        // Leftovers of an earlier process with the same pid.
        let _ = ip(&["link", "del", &ns.host_if]);
        let _ = ip(&["netns", "del", &ns.name]);
        if let Err(e) = ip(&["netns", "add", &ns.name]) {
            let lower = e.to_lowercase();
            return Err(
                if lower.contains("permission denied")
                    || lower.contains("operation not permitted")
                    || lower.contains("no such file or directory")
                {
                    NetnsError::Unavailable(e)
                } else {
                    NetnsError::Other(e)
                },
            );
        }
        // From here on, `ns` cleans up on drop.
        let setup = || -> Result<(), String> {
            ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns.ns_if])?;
            ip(&["link", "set", &ns.ns_if, "netns", &ns.name])?;
            ip(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &ns.host_if])?;
            ip(&["link", "set", &ns.host_if, "up"])?;
            ip(&[
                "netns",
                "exec",
                &ns.name,
                "ip",
                "addr",
                "add",
                &format!("{}/30", ns.ns_ip),
                "dev",
                &ns.ns_if,
            ])?;
            ip(&["netns", "exec", &ns.name, "ip", "link", "set", &ns.ns_if, "up"])?;
            ip(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])?;
            Ok(())
        };
        setup().map_err(NetnsError::Other)?;
        Ok(ns)
    }

    /// Cuts the link: the host side of the veth goes down.
    pub fn link_down(&self) {
        ip(&["link", "set", &self.host_if, "down"]).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Restores the link.
    pub fn link_up(&self) {
        ip(&["link", "set", &self.host_if, "up"]).unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting either end of a veth pair deletes both.
        let _ = ip(&["link", "del", &self.host_if]);
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("[fault] could not delete network namespace {}: {e}", self.name);
        }
    }
}
