//! Harness of the end-to-end tests: it builds and starts the real
//! `worker-controller`, `worker-agent` and `workerctl` binaries (and the SDK
//! example `enrich-agent`) on loopback, each test in its own temporary
//! directory with its own SQLite file and ports.
//!
//! * [`TestEnv`]: a temp dir holding `config/scheduler.yaml`, the database and
//!   the logs of the processes started from it.
//! * [`Controller`] / [`Agent`]: running processes, killed (and reaped) on drop.
//! * [`Controller::cli`]: runs `workerctl --controller URL -o json ...`.
//! * [`Controller::client`]: a gRPC `ControllerServiceClient`.
//! * [`wait_for`]: polls a condition every 50 ms until an overall deadline.
//!
//! When a test fails, the guards print the tail of every process' stderr and keep
//! the temp dir, so the failure can be investigated.

pub mod auth;
pub mod browser;
pub mod flow;
pub mod http;
pub mod json;
pub mod pg;
mod process;
pub mod receiver;
pub mod s3;
pub mod skip;
pub mod smtp;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use worker_proto::v1::controller_service_client::ControllerServiceClient;
use worker_proto::v1::{self as pb};

pub use process::ProcGuard;
pub use serde_json::Value;

/// Heartbeat interval passed to every controller the harness starts.
pub const HEARTBEAT: &str = "1s";
/// Lease timeout passed to every controller the harness starts.
pub const LEASE_TIMEOUT: &str = "3s";

/// Environment variable set on every process a [`TestEnv`] starts (value: its
/// temp dir), so what they leave behind can be found and killed.
pub const ENV_TAG: &str = "WORKER_E2E_ENV";

/// How long a controller may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Binaries
// ---------------------------------------------------------------------------

/// Paths of the binaries under test.
#[derive(Debug)]
pub struct Bins {
    pub controller: PathBuf,
    pub agent: PathBuf,
    pub cli: PathBuf,
    /// The SDK example `enrich-agent` (`examples/enrich-agent`); checked to
    /// exist only when a test starts it, so that `WORKER_TESTS_SKIP_BUILD=1`
    /// runs of other tests do not need it built.
    pub enrich_agent: PathBuf,
    /// Whether `worker-controller` accepts `--http-listen` (then the harness
    /// passes `127.0.0.1:0`, so parallel controllers do not fight for a port).
    pub controller_has_http_listen: bool,
}

/// The binaries, built once per test process (`cargo build --bins ...`, the
/// controller with its `failpoints` feature) so they are never stale. Set
/// `WORKER_TESTS_SKIP_BUILD=1` to use them as they are.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(build_bins)
}

fn build_bins() -> Bins {
    let exe = std::env::current_exe().expect("current_exe");
    // The test executable is target/<profile>/deps/<name>-<hash>.
    let mut profile_dir = exe.parent().expect("exe dir").to_path_buf();
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir = profile_dir.parent().expect("profile dir").to_path_buf();
    }
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let root = workspace_root();

    if std::env::var_os("WORKER_TESTS_SKIP_BUILD").is_none() {
        let started = Instant::now();
        // Two builds: `--features` names features of the selected packages
        // only when a single package is selected. The controller is built
        // with its fail points, armed through FAILPOINTS by the tests that
        // need them (inert otherwise; the README's run command lacks them).
        // A build uplifts its binary to target/PROFILE even when it has
        // nothing to compile, so the binaries found there are these.
        cargo_build(
            &root,
            &target_dir,
            &profile,
            &["-p", "worker-controller", "--features", "failpoints"],
        );
        cargo_build(
            &root,
            &target_dir,
            &profile,
            &["-p", "worker-agent", "-p", "workerctl", "-p", "worker-example-enrich"],
        );
        eprintln!("[harness] binaries built in {:?}", started.elapsed());
    }

    let bin = |name: &str| {
        let p = profile_dir.join(name);
        assert!(p.is_file(), "binary {} not found", p.display());
        p
    };
    let controller = bin("worker-controller");
    let help = Command::new(&controller)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("worker-controller --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    Bins {
        controller_has_http_listen: help.contains("--http-listen"),
        controller,
        agent: bin("worker-agent"),
        cli: bin("workerctl"),
        enrich_agent: profile_dir.join("enrich-agent"),
    }
}

/// `cargo build --bins ARGS` into `target_dir` with `profile`.
fn cargo_build(root: &Path, target_dir: &Path, profile: &str, args: &[&str]) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--bins"])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null());
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().expect("running cargo build");
    assert!(
        out.status.success(),
        "building the binaries ({args:?}) failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The workspace root (parent of this package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

// ---------------------------------------------------------------------------
// Test environment
// ---------------------------------------------------------------------------

/// One test's world: a temp dir with `config/scheduler.yaml`, `worker.db` and
/// the logs of the processes. Kept on disk when the test panics.
pub struct TestEnv {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    seq: std::sync::atomic::AtomicUsize,
    /// The store its controllers use, when not `sqlite://DIR/worker.db`
    /// (see [`TestEnv::with_db`]).
    db: Option<String>,
    /// The PostgreSQL database made for this world under
    /// `WORKER_TEST_STORE=postgres`, dropped with it.
    pg: Option<pg::PgDatabase>,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        // Build first, so the build time never counts against a test's deadlines.
        bins();
        let dir = tempfile::Builder::new()
            .prefix("worker-e2e-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_path_buf();
        std::fs::create_dir_all(path.join("config")).expect("config dir");
        // The end-to-end tests run on PostgreSQL too: with
        // WORKER_TEST_STORE=postgres every world gets a fresh database
        // (`.ci/run` runs the store-independent suites so).
        let pg = match std::env::var("WORKER_TEST_STORE").as_deref() {
            Ok("postgres") => Some(
                pg::fresh_database_blocking()
                    .expect("WORKER_TEST_STORE=postgres: no PostgreSQL test server (see WORKER_TEST_PG_URL)"),
            ),
            _ => None,
        };
        Self {
            dir: Some(dir),
            path,
            seq: Default::default(),
            db: pg.as_ref().map(|db| db.url.clone()),
            pg,
        }
    }

    /// The same world with its controllers on the store at `url` (e.g. a
    /// fresh PostgreSQL database from [`pg::fresh_database`]).
    pub fn with_db(mut self, url: &str) -> Self {
        self.db = Some(url.to_string());
        self
    }

    /// The temp dir.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `DIR/config`, passed as `--config`.
    pub fn config_dir(&self) -> PathBuf {
        self.path.join("config")
    }

    /// `DIR/config/scheduler.yaml`.
    pub fn config_file(&self) -> PathBuf {
        self.config_dir().join("scheduler.yaml")
    }

    /// `DIR/worker.db`.
    pub fn db_path(&self) -> PathBuf {
        self.path.join("worker.db")
    }

    /// `sqlite://DIR/worker.db`, or the store given to [`TestEnv::with_db`].
    pub fn db_url(&self) -> String {
        self.db
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.db_path().display()))
    }

    /// Writes `scheduler.yaml`.
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(self.config_file(), yaml).expect("write scheduler.yaml");
    }

    fn log_file(&self, name: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.path.join(format!("{n:02}-{name}.stderr"))
    }

    fn controller_command(&self, extra: &[&str]) -> Command {
        self.controller_command_on("127.0.0.1:0", extra)
    }

    fn controller_command_on(&self, grpc_listen: &str, extra: &[&str]) -> Command {
        self.controller_command_timed(grpc_listen, HEARTBEAT, LEASE_TIMEOUT, extra)
    }

    fn controller_command_timed(&self, grpc_listen: &str, heartbeat: &str, lease: &str, extra: &[&str]) -> Command {
        self.controller_command_full(&[], &self.db_url(), grpc_listen, heartbeat, lease, extra)
    }

    /// The controller's command line, run through `wrapper` when given (e.g.
    /// `ip netns exec NS`), on the store at `db`.
    fn controller_command_full(
        &self,
        wrapper: &[&str],
        db: &str,
        grpc_listen: &str,
        heartbeat: &str,
        lease: &str,
        extra: &[&str],
    ) -> Command {
        let b = bins();
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&b.controller);
                cmd
            }
            None => Command::new(&b.controller),
        };
        cmd.arg("--config")
            .arg(self.config_dir())
            .arg("--db")
            .arg(db)
            .args(["--grpc-listen", grpc_listen])
            .args(["--heartbeat-interval", heartbeat])
            .args(["--lease-timeout", lease]);
        if b.controller_has_http_listen {
            cmd.args(["--http-listen", "127.0.0.1:0"]);
        }
        cmd.args(extra)
            .current_dir(&self.path)
            .env_remove("WORKER_DB_URL")
            .env(ENV_TAG, &self.path);
        cmd
    }

    /// Starts `worker-controller` through `wrapper` (e.g. `["ip", "netns",
    /// "exec", NS]`, empty for none) on the store at `db`, listening on
    /// `grpc_listen` (and HTTP on the same host, port 0), and waits for its
    /// ready line.
    pub async fn start_controller_wrapped(
        &self,
        wrapper: &[&str],
        db: &str,
        grpc_listen: &str,
        extra: &[&str],
    ) -> Controller {
        let host = grpc_listen.rsplit_once(':').map_or("127.0.0.1", |(host, _)| host);
        let http = format!("{host}:0");
        let mut all = vec!["--http-listen", http.as_str()];
        all.extend_from_slice(extra);
        let cmd = self.controller_command_full(wrapper, db, grpc_listen, HEARTBEAT, LEASE_TIMEOUT, &all);
        self.spawn_controller(cmd).await
    }

    /// Starts `worker-controller` and waits for its ready line.
    pub async fn start_controller(&self) -> Controller {
        self.start_controller_with(&[]).await
    }

    /// Starts `worker-controller` with extra arguments (e.g. `--dev`).
    pub async fn start_controller_with(&self, extra: &[&str]) -> Controller {
        self.spawn_controller(self.controller_command(extra)).await
    }

    /// Starts `worker-controller` with extra arguments and environment
    /// variables (e.g. the secrets `alerts.yaml` refers to).
    pub async fn start_controller_with_env(&self, env: &[(&str, &str)], extra: &[&str]) -> Controller {
        let mut cmd = self.controller_command(extra);
        cmd.envs(env.iter().copied());
        self.spawn_controller(cmd).await
    }

    /// Writes `alerts.yaml` next to `scheduler.yaml`.
    pub fn write_alerts(&self, yaml: &str) {
        std::fs::write(self.config_dir().join("alerts.yaml"), yaml).expect("write alerts.yaml");
    }

    /// Starts `worker-controller` on a given gRPC address (e.g. the address of a
    /// controller that was just killed, so its agents find the new one).
    pub async fn start_controller_on(&self, addr: SocketAddr) -> Controller {
        self.spawn_controller(self.controller_command_on(&addr.to_string(), &[]))
            .await
    }

    /// Starts `worker-controller` on `grpc_listen` with its own heartbeat interval
    /// and lease timeout (e.g. short ones for fault tests) and extra arguments.
    pub async fn start_controller_timed(
        &self,
        grpc_listen: &str,
        heartbeat: &str,
        lease: &str,
        extra: &[&str],
    ) -> Controller {
        self.spawn_controller(self.controller_command_timed(grpc_listen, heartbeat, lease, extra))
            .await
    }

    async fn spawn_controller(&self, cmd: Command) -> Controller {
        let (mut proc, lines) = ProcGuard::spawn("worker-controller", cmd, self.log_file("controller"));
        let deadline = Instant::now() + READY_TIMEOUT;
        let (addr, http_addr) = loop {
            match lines.try_recv() {
                Ok(line) => {
                    if let Some(rest) = line.trim().strip_prefix("worker-controller ready grpc=") {
                        // The gRPC address is the first token; `http=ADDR` may follow.
                        let mut fields = rest.split_whitespace();
                        let parse = |text: &str| -> SocketAddr {
                            text.parse()
                                .unwrap_or_else(|e| panic!("bad address in ready line {line:?}: {e}"))
                        };
                        let addr = parse(fields.next().unwrap_or(""));
                        let http = fields.find_map(|f| f.strip_prefix("http=")).map(parse);
                        break (addr, http);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    let status = proc.wait_timeout(Duration::from_secs(5));
                    panic!(
                        "worker-controller closed stdout without a ready line (exit {status:?}); stderr:\n{}",
                        proc.stderr_tail(4000)
                    );
                }
            }
            if let Some(status) = proc.try_wait() {
                panic!(
                    "worker-controller exited before ready ({status}); stderr:\n{}",
                    proc.stderr_tail(4000)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "worker-controller printed no ready line within {READY_TIMEOUT:?}; stderr:\n{}",
                    proc.stderr_tail(4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Keep draining stdout in the background so the controller never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Controller {
            url: format!("http://{addr}"),
            addr,
            http_addr,
            proc,
        }
    }

    /// Runs `worker-controller` expecting it to exit by itself (bad config), and
    /// returns its exit code, stdout and stderr.
    pub async fn run_controller_to_exit(&self, extra: &[&str], timeout: Duration) -> Exited {
        self.run_to_exit(self.controller_command(extra), timeout).await
    }

    /// Runs the controller command `cmd` expecting it to exit by itself within
    /// `timeout`; returns its exit code, stdout and stderr.
    async fn run_to_exit(&self, cmd: Command, timeout: Duration) -> Exited {
        let (mut proc, lines) = ProcGuard::spawn("worker-controller", cmd, self.log_file("controller"));
        let deadline = Instant::now() + timeout;
        let mut stdout = String::new();
        let status = loop {
            while let Ok(line) = lines.try_recv() {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            if let Some(status) = proc.try_wait() {
                break status;
            }
            if Instant::now() > deadline {
                panic!(
                    "worker-controller did not exit within {timeout:?}; stdout:\n{stdout}\nstderr:\n{}",
                    proc.stderr_tail(4000)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Remaining stdout (the reader thread ends at EOF).
        for line in lines.iter() {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        Exited {
            code: status.code(),
            stdout,
            stderr: proc.stderr_all(),
        }
    }

    /// Starts `worker-agent` and waits until the controller lists it as connected.
    pub async fn start_agent(&self, ctl: &Controller, name: &str, capacity: u32) -> Agent {
        self.start_agent_with(ctl, name, capacity, &[]).await
    }

    /// Like [`TestEnv::start_agent`], with extra arguments (e.g. `--labels k=v`).
    pub async fn start_agent_with(&self, ctl: &Controller, name: &str, capacity: u32, extra: &[&str]) -> Agent {
        self.start_agent_with_env(ctl, name, capacity, &[], extra).await
    }

    /// Like [`TestEnv::start_agent_with`], with extra environment variables
    /// (e.g. the secrets `${VAR}` in an `http` job's headers reads).
    pub async fn start_agent_with_env(
        &self,
        ctl: &Controller,
        name: &str,
        capacity: u32,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Agent {
        let agent = self.spawn_agent_with_env(&ctl.url, name, capacity, env, extra);
        ctl.connected(agent).await
    }
}

/// Waits until `list_agents` (a `ListAgents` call) lists `agent` connected
/// (panicking with its stderr if it exits first or 20 s pass), and returns it.
pub(crate) async fn wait_until_connected<F, Fut>(mut agent: Agent, mut list_agents: F) -> Agent
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<pb::Agent>>,
{
    let name = agent.name.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = agent.proc.try_wait() {
            panic!(
                "worker-agent {name} exited ({status}) before connecting; stderr:\n{}",
                agent.proc.stderr_tail(4000)
            );
        }
        let agents = list_agents().await;
        if agents.iter().any(|a| a.name == name && a.state == "connected") {
            return agent;
        }
        if Instant::now() > deadline {
            panic!(
                "agent {name} not listed as connected within 20s (agents: {agents:?}); agent stderr:\n{}",
                agent.proc.stderr_tail(4000)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl TestEnv {
    /// Starts `worker-agent --controller URL` without waiting for it to
    /// connect (e.g. an agent the controller must refuse, or one reaching the
    /// controller over TLS, where [`Controller::client`] cannot follow).
    pub fn spawn_agent(&self, url: &str, name: &str, capacity: u32, extra: &[&str]) -> Agent {
        self.spawn_agent_program(&bins().agent, "worker-agent", url, name, capacity, &[], extra)
    }

    /// [`TestEnv::spawn_agent`] with extra environment variables.
    pub fn spawn_agent_with_env(
        &self,
        url: &str,
        name: &str,
        capacity: u32,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Agent {
        self.spawn_agent_program(&bins().agent, "worker-agent", url, name, capacity, env, extra)
    }

    /// Starts the SDK example `enrich-agent --controller URL --api API` (the
    /// handler `leads.enrich`) and waits until the controller lists it as
    /// connected.
    pub async fn start_enrich_agent(&self, ctl: &Controller, name: &str, capacity: u32, api: &str) -> Agent {
        let program = &bins().enrich_agent;
        assert!(
            program.is_file(),
            "{} not found; build it with `cargo build --bins -p worker-example-enrich`",
            program.display()
        );
        let agent = self.spawn_agent_program(program, "enrich-agent", &ctl.url, name, capacity, &[], &["--api", api]);
        ctl.connected(agent).await
    }

    /// Starts `program` (an agent: `worker-agent` or one built with the SDK)
    /// with `--controller URL --name NAME --capacity N`, `extra` and `env`.
    #[allow(clippy::too_many_arguments)]
    fn spawn_agent_program(
        &self,
        program: &Path,
        label: &str,
        url: &str,
        name: &str,
        capacity: u32,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Agent {
        let mut cmd = Command::new(program);
        cmd.args(["--controller", url, "--name", name])
            .args(["--capacity", &capacity.to_string()])
            .args(extra)
            .current_dir(&self.path)
            .envs(env.iter().copied())
            .env(ENV_TAG, &self.path);
        let (proc, lines) = ProcGuard::spawn(&format!("{label} {name}"), cmd, self.log_file(&format!("agent-{name}")));
        std::thread::spawn(move || for _ in lines {});
        Agent {
            name: name.to_string(),
            proc,
        }
    }

    /// Kills what is left of the processes started from this environment: jobs
    /// that agents spawned in their own process groups inherit [`ENV_TAG`].
    fn sweep(&self) {
        let needle = format!("{ENV_TAG}={}\0", self.path.display()).into_bytes();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if environ.windows(needle.len()).any(|w| w == needle.as_slice()) {
                // SAFETY: kill(2) on a process started (indirectly) by this test.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.sweep();
        if let Some(db) = self.pg.take() {
            db.drop_blocking();
        }
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!("[harness] test failed; its files are kept in {}", kept.display());
        }
    }
}

/// A process that exited by itself.
#[derive(Debug)]
pub struct Exited {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

// ---------------------------------------------------------------------------
// Controller and agent handles
// ---------------------------------------------------------------------------

/// A running `worker-controller`.
pub struct Controller {
    pub addr: SocketAddr,
    /// The HTTP listener (`/healthz`, `/readyz`, `/metrics`), from the ready
    /// line; `None` when the controller serves no HTTP.
    pub http_addr: Option<SocketAddr>,
    /// `http://127.0.0.1:PORT`, for agents, workerctl and the gRPC client.
    pub url: String,
    pub proc: ProcGuard,
}

/// A running `worker-agent`.
pub struct Agent {
    pub name: String,
    pub proc: ProcGuard,
}

impl Agent {
    /// SIGTERM, then waits for the exit (SIGKILL after `grace`).
    pub fn stop(&mut self, grace: Duration) -> std::process::ExitStatus {
        self.proc.terminate(grace)
    }
}

/// Output of one `workerctl` invocation.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Parses stdout as JSON (panics with the whole output if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "workerctl {:?}: stdout is not JSON ({e}):\nstdout: {}\nstderr: {}",
                self.args, self.stdout, self.stderr
            )
        })
    }

    /// Panics unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "workerctl {:?} exited {} (expected {code})\nstdout: {}\nstderr: {}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }
}

impl Controller {
    /// Waits until this controller lists `agent` as connected (panicking with
    /// its stderr if it exits first or 20 s pass), and returns it.
    pub async fn connected(&self, agent: Agent) -> Agent {
        let client = self.client().await;
        wait_until_connected(agent, || {
            let mut client = client.clone();
            async move {
                client
                    .list_agents(pb::ListAgentsRequest {})
                    .await
                    .expect("ListAgents")
                    .into_inner()
                    .agents
            }
        })
        .await
    }

    /// A gRPC client connected to this controller.
    pub async fn client(&self) -> ControllerServiceClient<Channel> {
        let channel = Channel::from_shared(self.url.clone())
            .expect("controller url")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url));
        ControllerServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Runs `workerctl --controller URL -o json ARGS...` (30 s limit).
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        let mut full = vec!["--controller", self.url.as_str(), "-o", "json"];
        full.extend_from_slice(args);
        run_cli(&full).await
    }

    /// `cli` that must exit 0 and print JSON.
    pub async fn cli_json(&self, args: &[&str]) -> Value {
        self.cli(args).await.expect_code(0).json()
    }

    /// `workerctl enqueue JOB [extra...]`, returns the new run id.
    pub async fn cli_enqueue(&self, job: &str, extra: &[&str]) -> String {
        let mut args = vec!["enqueue", job];
        args.extend_from_slice(extra);
        let v = self.cli_json(&args).await;
        json::str_field(&v, "id").to_string()
    }

    /// `workerctl runs get ID` as JSON.
    pub async fn cli_run(&self, id: &str) -> Value {
        self.cli_json(&["runs", "get", id]).await
    }

    /// The run, over gRPC.
    pub async fn get_run(&self, id: &str) -> pb::Run {
        self.client()
            .await
            .get_run(pb::GetRunRequest { id: id.to_string() })
            .await
            .unwrap_or_else(|e| panic!("GetRun {id}: {e}"))
            .into_inner()
    }

    /// Waits (WaitRun RPC) until the run is terminal, at most `timeout`.
    pub async fn wait_run(&self, id: &str, timeout: Duration) -> pb::Run {
        let mut client = self.client().await;
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let slice = left.min(Duration::from_secs(5));
            let mut req = tonic::Request::new(pb::WaitRunRequest {
                id: id.to_string(),
                timeout_ms: slice.as_millis().max(1) as u64,
            });
            req.set_timeout(slice + Duration::from_secs(5));
            let run = client
                .wait_run(req)
                .await
                .unwrap_or_else(|e| panic!("WaitRun {id}: {e}"))
                .into_inner();
            if is_terminal(&run.state) {
                return run;
            }
            if Instant::now() >= deadline {
                panic!(
                    "run {id} not terminal within {timeout:?}: state {:?}, reason {:?}, attempts {:?}\ncontroller stderr:\n{}",
                    run.state,
                    run.reason,
                    run.attempts,
                    self.proc.stderr_tail(3000)
                );
            }
            // WaitRun returned early without a terminal state: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the run is in `state` (polling GetRun every 50 ms).
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> pb::Run {
        let client = self.client().await;
        wait_for(&format!("run {id} to be {state}"), timeout, || {
            let mut client = client.clone();
            let id = id.to_string();
            async move {
                let run = client
                    .get_run(pb::GetRunRequest { id: id.clone() })
                    .await
                    .map_err(|e| format!("GetRun: {e}"))?
                    .into_inner();
                if run.state == state {
                    Ok(run)
                } else {
                    Err(format!("state {:?}, reason {:?}", run.state, run.reason))
                }
            }
        })
        .await
    }

    /// Agents as the controller lists them.
    pub async fn agents(&self) -> Vec<pb::Agent> {
        self.client()
            .await
            .list_agents(pb::ListAgentsRequest {})
            .await
            .expect("ListAgents")
            .into_inner()
            .agents
    }

    /// Waits until no agent is listed as `connected`.
    pub async fn wait_no_connected_agents(&self, timeout: Duration) {
        let client = self.client().await;
        wait_for("no connected agents", timeout, || {
            let mut client = client.clone();
            async move {
                let agents = client
                    .list_agents(pb::ListAgentsRequest {})
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner()
                    .agents;
                if agents.iter().any(|a| a.state == "connected") {
                    Err(format!("agents: {agents:?}"))
                } else {
                    Ok(())
                }
            }
        })
        .await
    }
}

/// Runs `workerctl` with exactly these arguments (30 s limit).
pub async fn run_cli(args: &[&str]) -> CliOutput {
    let mut cmd = tokio::process::Command::new(&bins().cli);
    cmd.args(args)
        .env_remove("WORKER_CONTROLLER")
        .env_remove("WORKER_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("workerctl {args:?} did not finish within 30s"))
        .unwrap_or_else(|e| panic!("spawning workerctl: {e}"));
    CliOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `succeeded`, `dead` and `cancelled` are terminal.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "dead" | "cancelled")
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Polls `check` every 50 ms until it returns `Ok`, or panics after `timeout`
/// with `what` and the last `Err` message (what was seen instead).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses an RFC 3339 timestamp (panics with `what` when it is not one).
pub fn parse_ts(what: &str, s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what}: {s:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

// ---------------------------------------------------------------------------
// Listen addresses
// ---------------------------------------------------------------------------

impl TestEnv {
    /// Like [`TestEnv::run_controller_to_exit`], with `--grpc-listen grpc_listen`
    /// (e.g. a non-loopback address the controller must refuse).
    pub async fn run_controller_to_exit_on(&self, grpc_listen: &str, extra: &[&str], timeout: Duration) -> Exited {
        self.run_to_exit(self.controller_command_on(grpc_listen, extra), timeout)
            .await
    }
}

/// The IPv4 addresses of this machine's interfaces that are up and not
/// loopback (e.g. a container's `eth0` address); empty when there are none.
pub fn local_non_loopback_ipv4() -> Vec<std::net::Ipv4Addr> {
    let mut found = Vec::new();
    let mut ifaddrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `ifaddrs` with a list freed below with freeifaddrs(3).
    if unsafe { libc::getifaddrs(&mut ifaddrs) } != 0 {
        return found;
    }
    let mut cur = ifaddrs;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not freed yet.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
        if ifa.ifa_addr.is_null() || !up {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it names.
        if i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if !ip.is_loopback() && !ip.is_unspecified() && !found.contains(&ip) {
            found.push(ip);
        }
    }
    // SAFETY: the list came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifaddrs) };
    found
}

// ---------------------------------------------------------------------------
// Bounded runs (hostile configuration files)
// ---------------------------------------------------------------------------

impl TestEnv {
    /// Like [`TestEnv::run_controller_to_exit`], with environment variables and,
    /// when `address_space` is set, the controller's address space capped at that
    /// many bytes (`RLIMIT_AS`): a controller that reads a hostile file without a
    /// bound then fails its allocation instead of taking the machine's memory.
    pub async fn run_controller_to_exit_with(
        &self,
        env: &[(&str, &str)],
        extra: &[&str],
        timeout: Duration,
        address_space: Option<u64>,
    ) -> Exited {
        use std::os::unix::process::CommandExt;
        let mut cmd = self.controller_command(extra);
        cmd.envs(env.iter().copied());
        if let Some(bytes) = address_space {
            let limit = libc::rlimit {
                rlim_cur: bytes as libc::rlim_t,
                rlim_max: bytes as libc::rlim_t,
            };
            // SAFETY: setrlimit(2) is async-signal-safe; the closure touches
            // nothing but its own copy of `limit`.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        self.run_to_exit(cmd, timeout).await
    }
}
