//! TLS and mTLS end to end: a real controller serving gRPC over TLS, real
//! agents and `workerctl`, with a CA and certificates made by the test (rcgen).
//!
//! * `workerctl` trusting the CA connects; one trusting another CA (or only
//!   the built-in roots) is refused with exit 4 and a message naming
//!   `--tls-ca`; a plain-text client cannot talk to the TLS port; bad
//!   certificate files are usage errors (exit 2) naming the flag and the file.
//! * With `--tls-client-ca`, an agent with a certificate from that CA connects
//!   and runs a job; an agent without a certificate, or with one from another
//!   CA, is refused and never listed as connected; `workerctl` needs none.
//! * `--dev` with TLS: the in-process agent connects over TLS; `--dev` with
//!   `--tls-client-ca` is refused at start-up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use worker_tests::json::{self, str_field};
use worker_tests::{Agent, Controller, TestEnv, Value, wait_for};

const JOBS: &str = r#"
jobs:
  hello:
    builtin: { name: noop }
    retry: { max_attempts: 1 }
"#;

/// A CA of the test: it signs certificates into files of the test's directory.
struct Ca {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca = Ca {
            name: name.to_string(),
            issuer,
            dir: dir.to_path_buf(),
        };
        std::fs::write(ca.cert_path(), ca.issuer.pem()).unwrap();
        ca
    }

    /// The CA certificate file (`--tls-ca`, `--tls-client-ca`).
    fn cert_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Signs a certificate for `names` with `usage`; returns (cert, key) files.
    fn issue(&self, file: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (cert_path, key_path) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// The files of one test: the CA, an unrelated CA, the server's certificate
/// (127.0.0.1 and localhost) and agents' client certificates from both CAs.
struct Pki {
    ca: Ca,
    other: Ca,
    server: (PathBuf, PathBuf),
    agent: (PathBuf, PathBuf),
    stranger: (PathBuf, PathBuf),
}

impl Pki {
    fn new(env: &TestEnv) -> Pki {
        let dir = env.path().join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Ca::new(&dir, "worker");
        let other = Ca::new(&dir, "other");
        Pki {
            server: ca.issue(
                "server",
                &["localhost", "127.0.0.1"],
                ExtendedKeyUsagePurpose::ServerAuth,
            ),
            agent: ca.issue("agent", &["agent-1"], ExtendedKeyUsagePurpose::ClientAuth),
            stranger: other.issue("stranger", &["agent-2"], ExtendedKeyUsagePurpose::ClientAuth),
            ca,
            other,
        }
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Starts a controller serving TLS with `pki`'s server certificate (and
/// `extra`), and points its URL at `https://127.0.0.1:PORT`.
async fn start_tls_controller(env: &TestEnv, pki: &Pki, extra: &[&str]) -> Controller {
    let mut args = vec!["--tls-cert", s(&pki.server.0), "--tls-key", s(&pki.server.1)];
    args.extend_from_slice(extra);
    let mut ctl = env.start_controller_with(&args).await;
    ctl.url = format!("https://127.0.0.1:{}", ctl.addr.port());
    ctl
}

/// `workerctl agents list` trusting the CA.
async fn agents(ctl: &Controller, pki: &Pki) -> Value {
    ctl.cli_json(&["agents", "list", "--tls-ca", s(&pki.ca.cert_path())])
        .await
}

/// Waits until `agent` is listed as connected.
async fn wait_connected(ctl: &Controller, pki: &Pki, agent: &mut Agent) {
    let name = agent.name.clone();
    wait_for(&format!("agent {name} connected"), Duration::from_secs(20), || {
        let exited = agent.proc.try_wait();
        let stderr = agent.proc.stderr_tail(2000);
        let name = name.clone();
        async move {
            if let Some(status) = exited {
                panic!("agent exited ({status}) before connecting; stderr:\n{stderr}");
            }
            let list = agents(ctl, pki).await;
            let connected = json::as_array(&list)
                .iter()
                .any(|a| str_field(a, "name") == name && str_field(a, "state") == "connected");
            if connected {
                Ok(())
            } else {
                Err(format!("agents: {list}; agent stderr: {stderr}"))
            }
        }
    })
    .await
}

/// Waits until the agent's log says it could not get in, and returns the log.
async fn wait_refused(agent: &mut Agent, expected: &str) -> String {
    let name = agent.name.clone();
    wait_for(
        &format!("agent {name} to log its refusal"),
        Duration::from_secs(20),
        || {
            let stderr = agent.proc.stderr_all();
            let exited = agent.proc.try_wait();
            let name = name.clone();
            async move {
                if let Some(status) = exited {
                    panic!("agent {name} exited ({status}); stderr:\n{stderr}");
                }
                if stderr.contains("cannot reach controller") && stderr.contains(expected) {
                    Ok(stderr)
                } else {
                    Err(stderr)
                }
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workerctl_verifies_the_controller_certificate() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let pki = Pki::new(&env);
    let ctl = start_tls_controller(&env, &pki, &[]).await;
    let ca = pki.ca.cert_path();

    // Trusting the CA: both names of the certificate work.
    let jobs = ctl.cli_json(&["jobs", "list", "--tls-ca", s(&ca)]).await;
    assert!(format!("{jobs}").contains("hello"), "{jobs}");
    let by_name = format!("https://localhost:{}", ctl.addr.port());
    let out = worker_tests::run_cli(&["--controller", &by_name, "--tls-ca", s(&ca), "jobs", "list"]).await;
    out.expect_code(0);
    // The CA from the environment, as an operator's shell profile would set it.
    let out = run_cli_env(
        &[("WORKER_TLS_CA", s(&ca))],
        &["--controller", &ctl.url, "jobs", "list"],
    )
    .await;
    assert_eq!(out.0, 0, "stderr: {}", out.1);

    // Trusting another CA, or only the built-in roots: refused, exit 4, the message says why.
    for extra in [vec!["--tls-ca", s(&pki.other.cert_path())], vec![]] {
        let mut args = vec!["jobs", "list"];
        args.extend(extra);
        let out = ctl.cli(&args).await.expect_code(4);
        assert!(
            out.stderr.contains("was not trusted") && out.stderr.contains("--tls-ca"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("invalid peer certificate"), "{}", out.stderr);
    }

    // A plain-text client cannot talk to the TLS port.
    let plain = format!("http://127.0.0.1:{}", ctl.addr.port());
    let out = worker_tests::run_cli(&["--controller", &plain, "jobs", "list"]).await;
    assert_eq!(out.code, 4, "plain text against TLS: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr.contains("https://"), "{out:?}");
    // TLS options with an http:// address, and files that are not certificates: usage errors.
    let out = worker_tests::run_cli(&["--controller", &plain, "--tls-ca", s(&ca), "jobs", "list"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("https://"), "{}", out.stderr);
    let out = ctl
        .cli(&["jobs", "list", "--tls-ca", s(&pki.server.1)])
        .await
        .expect_code(2);
    assert!(
        out.stderr.contains(&format!("--tls-ca {}", s(&pki.server.1))),
        "{}",
        out.stderr
    );

    // The controller kept serving through all of that.
    ctl.cli_json(&["jobs", "list", "--tls-ca", s(&ca)]).await;
}

/// `workerctl ARGS` with extra environment variables: (exit code, stderr).
async fn run_cli_env(env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(&worker_tests::bins().cli)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("WORKER_CONTROLLER")
        .env_remove("WORKER_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_admits_only_agents_with_a_certificate_from_the_client_ca() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let pki = Pki::new(&env);
    let ca = pki.ca.cert_path();
    let ctl = start_tls_controller(&env, &pki, &["--tls-client-ca", s(&ca)]).await;

    // An agent with a certificate from the client CA connects and runs a job.
    let mut good = env.spawn_agent(
        &ctl.url,
        "good",
        1,
        &[
            "--tls-ca",
            s(&ca),
            "--tls-cert",
            s(&pki.agent.0),
            "--tls-key",
            s(&pki.agent.1),
        ],
    );
    wait_connected(&ctl, &pki, &mut good).await;
    // workerctl needs no client certificate.
    let run = ctl
        .cli_json(&["jobs", "run", "hello", "--wait", "--tls-ca", s(&ca)])
        .await;
    assert_eq!(str_field(&run, "state"), "succeeded", "{run}");
    let attempts = json::as_array(&run["attempts"]);
    assert_eq!(str_field(&attempts[0], "agent"), "good", "{run}");

    // Without a client certificate: refused by AgentService.Connect.
    let mut bare = env.spawn_agent(&ctl.url, "bare", 1, &["--tls-ca", s(&ca)]);
    let log = wait_refused(&mut bare, "requires agents to present a client certificate").await;
    assert!(log.contains("Unauthenticated"), "{log}");

    // With a certificate from another CA: the handshake fails.
    let mut stranger = env.spawn_agent(
        &ctl.url,
        "stranger",
        1,
        &[
            "--tls-ca",
            s(&ca),
            "--tls-cert",
            s(&pki.stranger.0),
            "--tls-key",
            s(&pki.stranger.1),
        ],
    );
    wait_refused(&mut stranger, "").await;

    // Both were refused before saying Hello: never listed, not even as disconnected.
    let list = agents(&ctl, &pki).await;
    let names: Vec<&str> = json::as_array(&list).iter().map(|a| str_field(a, "name")).collect();
    assert_eq!(names, ["good"], "{list}");
    assert!(good.proc.try_wait().is_none(), "the good agent is still running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_tls_flags_are_checked_at_start() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let pki = Pki::new(&env);
    let ca = pki.ca.cert_path();
    let ctl = start_tls_controller(&env, &pki, &[]).await;

    // An http:// controller with TLS flags, and an https:// one with a CA file
    // that is not a certificate: usage errors, exit 2, before any connection.
    let plain = format!("http://127.0.0.1:{}", ctl.addr.port());
    let mut agent = env.spawn_agent(&plain, "plain", 1, &["--tls-ca", s(&ca)]);
    let status = agent.proc.wait_timeout(Duration::from_secs(10)).expect("agent exits");
    assert_eq!(status.code(), Some(2), "{}", agent.proc.stderr_all());
    assert!(
        agent.proc.stderr_all().contains("https://"),
        "{}",
        agent.proc.stderr_all()
    );

    let mut agent = env.spawn_agent(&ctl.url, "badca", 1, &["--tls-ca", s(&pki.server.1)]);
    let status = agent.proc.wait_timeout(Duration::from_secs(10)).expect("agent exits");
    let stderr = agent.proc.stderr_all();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("--tls-ca {}", s(&pki.server.1))), "{stderr}");

    // Trusting another CA: it keeps retrying and never connects.
    let mut distrustful = env.spawn_agent(&ctl.url, "distrustful", 1, &["--tls-ca", s(&pki.other.cert_path())]);
    wait_refused(&mut distrustful, "invalid peer certificate").await;
    let list = agents(&ctl, &pki).await;
    assert!(json::as_array(&list).is_empty(), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_agent_connects_over_tls() {
    let env = TestEnv::new();
    env.write_config(JOBS);
    let pki = Pki::new(&env);
    let ca = pki.ca.cert_path();

    // --dev with --tls-client-ca: refused at start-up, nothing bound.
    let exited = env
        .run_controller_to_exit(
            &[
                "--dev",
                "--tls-cert",
                s(&pki.server.0),
                "--tls-key",
                s(&pki.server.1),
                "--tls-client-ca",
                s(&ca),
            ],
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(exited.code, Some(2), "{exited:?}");
    assert!(
        exited.stderr.contains("--dev cannot be combined with --tls-client-ca"),
        "{exited:?}"
    );
    // A key that does not belong to the certificate: exit 2 naming both flags.
    let exited = env
        .run_controller_to_exit(
            &["--tls-cert", s(&pki.server.0), "--tls-key", s(&pki.agent.1)],
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(exited.code, Some(2), "{exited:?}");
    assert!(
        exited.stderr.contains("--tls-key") && exited.stderr.contains("does not match the certificate of --tls-cert"),
        "{exited:?}"
    );
    assert!(!exited.stdout.contains("ready"), "{exited:?}");

    // --dev with TLS: the in-process agent goes through TLS and runs the job.
    let ctl = start_tls_controller(&env, &pki, &["--dev"]).await;
    let run = ctl
        .cli_json(&["jobs", "run", "hello", "--wait", "--tls-ca", s(&ca)])
        .await;
    assert_eq!(str_field(&run, "state"), "succeeded", "{run}");
    let list = agents(&ctl, &pki).await;
    assert!(
        json::as_array(&list)
            .iter()
            .any(|a| str_field(a, "name").ends_with("-dev") && str_field(a, "state") == "connected"),
        "{list}"
    );
}
