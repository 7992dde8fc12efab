//! Real `worker-agent` child processes for `workload-a` and `workload-b`.
//!
//! Each bench invocation picks a label value of its own ([`run_label`]); its
//! job's selector requires it and only the agents it spawns carry it, so
//! agents already connected to the controller (e.g. those `scripts/bench.sh`
//! starts) never take the bench's runs, and the bench's agents take nothing
//! else.
//!
//! The children never outlive the bench: they are killed when [`AgentProcs`]
//! is dropped (`kill_on_drop`: also on an error or when the scenario future
//! is dropped on Ctrl-C/SIGTERM, see [`super::run`]), and on Linux they get
//! SIGKILL from the kernel if the bench process dies anyway
//! (`PR_SET_PDEATHSIG`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{Target, server_info};
use crate::error::CliError;

/// Label key the bench's agents carry and its jobs select on.
pub const LABEL_KEY: &str = "bench-run";

/// A label value unique to this invocation: process id and start time.
pub fn run_label() -> String {
    format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_micros())
}

/// The agent binary: `explicit`, else `worker-agent` next to this executable.
pub fn agent_bin(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| CliError::usage(format!("--agent-bin: cannot find this executable: {e}")))?
            .with_file_name("worker-agent"),
    };
    if !path.is_file() {
        return Err(CliError::usage(format!(
            "--agent-bin: {} does not exist (build it with `cargo build --release --bins`, or pass --agent-bin PATH)",
            path.display()
        )));
    }
    Ok(path)
}

/// What the children are started with.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The `worker-agent` binary.
    pub bin: PathBuf,
    /// Number of agents.
    pub count: u64,
    /// Slots per agent (`--capacity`).
    pub capacity: u32,
    /// Value of the [`LABEL_KEY`] label.
    pub label: String,
    /// Prefix of the agents' names (`<prefix>-<i>`).
    pub name_prefix: String,
}

/// The running children; killed when dropped.
pub struct AgentProcs {
    children: Vec<Child>,
}

impl AgentProcs {
    /// Starts `spec.count` agents on `target`'s address, with its token
    /// (`WORKER_TOKEN`, not on the command line). TLS settings reach the
    /// agents through the environment they inherit (`WORKER_TLS_CA`,
    /// `WORKER_TLS_CERT`, `WORKER_TLS_KEY`). Their logs go to this process's
    /// stderr at level `warn` (`RUST_LOG=warn`: a log line per attempt would
    /// cost more than a no-op run).
    pub fn spawn(target: &Target, spec: &AgentSpec) -> anyhow::Result<AgentProcs> {
        let mut procs = AgentProcs { children: Vec::new() };
        for i in 0..spec.count {
            let mut command = Command::new(&spec.bin);
            command
                .arg("--controller")
                .arg(&target.url)
                .arg("--name")
                .arg(format!("{}-{i}", spec.name_prefix))
                .arg("--capacity")
                .arg(spec.capacity.to_string())
                .arg("--executors")
                .arg("builtin")
                .arg("--labels")
                .arg(format!("{LABEL_KEY}={}", spec.label))
                .env("RUST_LOG", "warn")
                .env_remove("WORKER_TOKEN")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            if let Some(token) = &target.token {
                command.env("WORKER_TOKEN", token);
            }
            die_with_parent(&mut command);
            let child = command
                .spawn()
                .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", spec.bin.display()))?;
            procs.children.push(child);
        }
        Ok(procs)
    }

    /// An agent that exited already (its exit status), if any.
    pub fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|c| match c.try_wait() {
            Ok(Some(status)) => Some(format!("an agent exited early ({status})")),
            _ => None,
        })
    }

    /// Kills the agents and waits for them to exit.
    pub async fn stop(mut self) {
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        for child in &mut self.children {
            let _ = child.wait().await;
        }
    }
}

/// Linux: the kernel sends SIGKILL to the child when the bench dies.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Polls ServerInfo every 20 ms until `count` more agents than `base` are
/// connected, an agent exits, or `timeout` passes. Returns how long it took.
pub async fn wait_connected(
    target: &Target,
    procs: &mut AgentProcs,
    base: u64,
    count: u64,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let mut client = target.client()?;
    let started = Instant::now();
    loop {
        if server_info(&mut client).await?.connected_agents >= base + count {
            return Ok(started.elapsed());
        }
        if let Some(e) = procs.exited() {
            anyhow::bail!("{e}; see its log above");
        }
        if started.elapsed() >= timeout {
            anyhow::bail!(
                "the controller did not count {count} more agents within {}",
                crate::output::fmt_ms(timeout.as_millis() as u64)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
