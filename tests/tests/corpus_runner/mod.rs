//! The hostile-input corpus runner: delivers each case of `tests/corpus/*.yaml`
//! (format in [`case`]) and compares the answer with the case's expectation.
//!
//! * [`case`]: the file format and its macros;
//! * [`grpc`]: typed calls built from JSON, and the agent stream;
//! * [`raw`]: calls with hand-made protobuf bodies;
//! * this module: delivery, the comparison, the store snapshot and the
//!   controller's resource use.

pub mod case;
pub mod grpc;
pub mod raw;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use worker_proto::v1 as pb;
use worker_tests::{Controller, TestEnv, bins};

use case::{Case, CorpusFile, DEFAULT_MAX_OUTPUT, expand, expand_value, truncate, unhex};

/// The environment variable every controller of the corpus gets; cases refer
/// to it as `${CORPUS_CANARY}` where interpolation has no business, and its
/// value must never appear in an answer.
pub const CANARY_VAR: &str = "CORPUS_CANARY";
/// Its value.
pub const CANARY_VALUE: &str = "canary-5ecret-7f3a9c1e";

/// How long one delivery may take before it counts as a hang.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

/// The address-space cap of controllers started on hostile configuration
/// directories (see [`TestEnv::run_controller_to_exit_with`]).
pub const CONFIG_ADDRESS_SPACE: u64 = 4 << 30;

/// The corpus directory, `tests/corpus`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Every corpus file, sorted by name, parsed (a file that does not parse
/// fails the test at once: the corpus itself is wrong).
pub fn load_corpus() -> Vec<(String, CorpusFile)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("read tests/corpus")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            let file: CorpusFile =
                serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("tests/corpus/{name} is malformed: {e}"));
            let mut seen = std::collections::BTreeSet::new();
            for c in &file.cases {
                assert!(seen.insert(c.name.clone()), "{name}: case {:?} appears twice", c.name);
            }
            (name, file)
        })
        .collect()
}

/// What came back from one delivery.
#[derive(Debug)]
pub struct Answer {
    /// Exit code (`cli`, `config`).
    pub exit: Option<i32>,
    /// gRPC code name (`grpc`, `raw`, `agent`).
    pub code: Option<String>,
    /// stdout + stderr, or the status message.
    pub text: String,
}

/// Compares `answer` with `case.expect`; the problems found (empty: as expected).
pub fn check(case: &Case, answer: &Answer) -> Vec<String> {
    let e = &case.expect;
    let mut problems = Vec::new();
    if let Some(exit) = &e.exit {
        match answer.exit {
            Some(code) if exit.accepts(&code) => {}
            got => problems.push(format!("exit code {got:?}, expected {exit:?}")),
        }
    }
    if let Some(code) = &e.code {
        match &answer.code {
            Some(got) if code.accepts(got) => {}
            got => problems.push(format!("gRPC code {got:?}, expected {code:?}")),
        }
    }
    let lower = answer.text.to_lowercase();
    for want in &e.contains {
        if !want.split('|').any(|alt| lower.contains(&alt.to_lowercase())) {
            problems.push(format!("answer lacks {want:?}"));
        }
    }
    for bad in e.absent.iter().map(String::as_str).chain([CANARY_VALUE]) {
        if answer.text.contains(bad) {
            problems.push(format!("answer contains {bad:?}"));
        }
    }
    let max = e.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT);
    if answer.text.len() > max {
        problems.push(format!("answer is {} bytes, over {max}", answer.text.len()));
    }
    if !problems.is_empty() {
        problems.push(format!("answer: {}", excerpt(&answer.text)));
    }
    problems
}

/// The first and last 300 characters of an answer.
fn excerpt(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 600 {
        return format!("{text:?}");
    }
    let head: String = chars[..300].iter().collect();
    let tail: String = chars[chars.len() - 300..].iter().collect();
    format!("{head:?} ... {tail:?} ({} bytes)", text.len())
}

/// Delivers a case that talks to the running controller (`cli`, `grpc`,
/// `raw`, `agent`); `scratch` is its `{{dir}}`.
pub async fn deliver(ctl: &Controller, case: &Case, scratch: &Path) -> Result<Answer, String> {
    let dir = scratch.display().to_string();
    let ways = [
        case.cli.is_some(),
        case.grpc.is_some(),
        case.raw.is_some(),
        case.agent.is_some(),
        case.config.is_some(),
    ];
    if ways.iter().filter(|w| **w).count() != 1 {
        return Err("a case needs exactly one of cli, grpc, raw, agent, config".into());
    }
    if let Some(args) = &case.cli {
        std::fs::create_dir_all(scratch).map_err(|e| e.to_string())?;
        for (name, text) in &case.files {
            std::fs::write(scratch.join(name), expand(text, &dir)?).map_err(|e| e.to_string())?;
        }
        let args = args.iter().map(|a| expand(a, &dir)).collect::<Result<Vec<_>, _>>()?;
        let stdin = match (&case.stdin, &case.stdin_hex) {
            (Some(t), None) => Some(expand(t, &dir)?.into_bytes()),
            (None, Some(h)) => Some(unhex(h)?),
            (None, None) => None,
            _ => return Err("stdin and stdin_hex are exclusive".into()),
        };
        return run_cli(&ctl.url, &args, stdin).await;
    }
    let channel = tonic::transport::Channel::from_shared(ctl.url.clone())
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let reply = if let Some(g) = &case.grpc {
        let request = match (&g.request, &g.request_json) {
            (Some(v), None) => expand_value(v, &dir)?,
            (None, Some(text)) => {
                serde_json::from_str(&expand(text, &dir)?).map_err(|e| format!("request_json: {e}"))?
            }
            (None, None) => Value::Object(Default::default()),
            _ => return Err("request and request_json are exclusive".into()),
        };
        grpc::call(channel, &g.rpc, &request).await?
    } else if let Some(r) = &case.raw {
        match tokio::time::timeout(CASE_TIMEOUT, raw::call(channel, &r.path, unhex(&r.body_hex)?)).await {
            Ok(Ok(_)) => grpc::Reply {
                code: "Ok".into(),
                message: String::new(),
            },
            Ok(Err(status)) => grpc::Reply::status(&status),
            Err(_) => return Err(format!("no answer within {CASE_TIMEOUT:?}")),
        }
    } else if let Some(a) = &case.agent {
        let first = match (a.first.as_deref(), &a.hello, &a.hello_json) {
            (Some("pull"), None, None) => pb::agent_message::Msg::Pull(pb::Pull { credits: 1 }),
            (Some("heartbeat"), None, None) => pb::agent_message::Msg::Heartbeat(pb::Heartbeat::default()),
            (None, Some(v), None) => pb::agent_message::Msg::Hello(grpc::hello(&expand_value(v, &dir)?)?),
            (None, None, Some(text)) => {
                let v = serde_json::from_str(&expand(text, &dir)?).map_err(|e| format!("hello_json: {e}"))?;
                pb::agent_message::Msg::Hello(grpc::hello(&v)?)
            }
            _ => return Err("agent needs exactly one of hello, hello_json, first: pull|heartbeat".into()),
        };
        grpc::agent_connect(channel, pb::AgentMessage { msg: Some(first) }).await
    } else {
        return Err("config cases are run by run_config_case".into());
    };
    Ok(Answer {
        exit: None,
        code: Some(reply.code),
        text: reply.message,
    })
}

/// `workerctl --controller URL -o json ARGS...` with `stdin`.
async fn run_cli(url: &str, args: &[String], stdin: Option<Vec<u8>>) -> Result<Answer, String> {
    let mut cmd = tokio::process::Command::new(&bins().cli);
    cmd.args(["--controller", url, "-o", "json"])
        .args(args)
        .env_remove("WORKER_CONTROLLER")
        .env_remove("WORKER_TOKEN")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("spawning workerctl: {e}"))?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // workerctl may refuse before it reads everything: a broken pipe is fine.
        tokio::spawn(async move {
            let _ = pipe.write_all(&bytes).await;
        });
    }
    let out = tokio::time::timeout(CASE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("workerctl did not finish within {CASE_TIMEOUT:?}"))?
        .map_err(|e| format!("workerctl: {e}"))?;
    Ok(Answer {
        exit: out.status.code(),
        code: None,
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    })
}

/// Runs a `config` case: a fresh directory, a controller started on it
/// (with the canary set and its address space capped) that must exit.
pub async fn run_config_case(case: &Case) -> Result<Answer, String> {
    let cfg = case.config.as_ref().ok_or("not a config case")?;
    let env = TestEnv::new();
    let dir = env.path().display().to_string();
    let file = env.config_file();
    let sources = [
        cfg.scheduler.is_some(),
        cfg.scheduler_hex.is_some(),
        cfg.scheduler_symlink.is_some(),
        cfg.scheduler_sparse_bytes.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        0 => env.write_config("jobs: {}\n"),
        1 => {}
        _ => return Err("give one of scheduler, scheduler_hex, scheduler_symlink, scheduler_sparse_bytes".into()),
    }
    if let Some(text) = &cfg.scheduler {
        env.write_config(&expand(text, &dir)?);
    }
    if let Some(h) = &cfg.scheduler_hex {
        std::fs::write(&file, unhex(h)?).map_err(|e| e.to_string())?;
    }
    if let Some(target) = &cfg.scheduler_symlink {
        std::os::unix::fs::symlink(target, &file).map_err(|e| e.to_string())?;
    }
    if let Some(bytes) = cfg.scheduler_sparse_bytes {
        let f = std::fs::File::create(&file).map_err(|e| e.to_string())?;
        f.set_len(bytes).map_err(|e| e.to_string())?;
    }
    if let Some(text) = &cfg.alerts {
        env.write_alerts(&expand(text, &dir)?);
    }
    let out = env
        .run_controller_to_exit_with(
            &[(CANARY_VAR, CANARY_VALUE)],
            &[],
            CASE_TIMEOUT,
            Some(CONFIG_ADDRESS_SPACE),
        )
        .await;
    Ok(Answer {
        exit: out.code,
        code: None,
        text: format!("{}{}", out.stdout, out.stderr),
    })
}

/// What must not change: definitions, runs, alert channels and rules.
pub async fn snapshot(ctl: &Controller) -> Value {
    let mut parts = serde_json::Map::new();
    // `export` prints YAML whatever `-o` says: kept as text.
    let export = ctl.cli(&["export"]).await.expect_code(0);
    parts.insert("export".into(), Value::String(export.stdout));
    for (key, args) in [
        ("runs", &["runs", "list", "--limit", "100"][..]),
        ("channels", &["alerts", "channels"][..]),
        ("rules", &["alerts", "rules"][..]),
    ] {
        parts.insert(key.into(), ctl.cli_json(args).await);
    }
    Value::Object(parts)
}

/// The controller's resident memory (bytes) and CPU time used so far.
pub fn usage(pid: u32) -> (u64, Duration) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')').expect("comm in stat") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    (rss_kb * 1024, Duration::from_millis(ticks * 1000 / hz))
}

/// `file: case` for messages.
pub fn label(file: &str, case: &Case) -> String {
    format!("{file}: {}", truncate(&case.name))
}
