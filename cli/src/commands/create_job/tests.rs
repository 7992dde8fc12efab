//! Unit tests of `create-job`: the text insertion into `scheduler.yaml` (the
//! rest of the file unchanged byte for byte), the refusals (nothing changed),
//! and the files each kind writes.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_yaml_ng::Value;

use super::*;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "workerctl-create-job-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("config")).unwrap();
        Self(dir)
    }

    fn config(&self) -> PathBuf {
        self.0.join("config").join("scheduler.yaml")
    }

    /// Every file under the directory with its bytes, sorted by path.
    fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    out.push((path.clone(), Vec::new()));
                    walk(&path, out);
                } else {
                    out.push((path.clone(), fs::read(&path).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &mut out);
        out.sort();
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn args(name: &str, kind: Kind, scratch: &Scratch) -> CreateJobArgs {
    CreateJobArgs {
        name: name.to_string(),
        kind,
        config: scratch.config(),
        dir: None,
        url: None,
        schedule: None,
        worker_agent: None,
    }
}

const DEF: &str = "# new: scaffolded\nnew:\n  description: \"x\"\n  retry: { max_attempts: 2 }\n  shell:\n    command: [\"/bin/true\"]\n";

fn def() -> Definition<'static> {
    Definition { name: "new", text: DEF }
}

/// Inserts [`DEF`] and checks that the result is `original` with one
/// insertion: the bytes before and after it are the original's.
fn insert_once(original: &str) -> (String, Edit) {
    let inserted = insert_job(original, &def()).unwrap_or_else(|e| panic!("{e}\n---\n{original}"));
    assert_eq!(inserted.edits.len(), 1, "{:?}", inserted.edits);
    let edit = inserted.edits[0].clone();
    assert_eq!(edit.start, edit.end, "a pure insertion");
    let text = inserted.text;
    assert_eq!(&text[..edit.start], &original[..edit.start]);
    assert_eq!(&text[edit.start + edit.replacement.len()..], &original[edit.start..]);
    (text, edit)
}

fn parse(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

#[test]
fn inserts_at_the_end_of_the_jobs_block_of_the_shipped_config() {
    let original = include_str!("../../../../config/scheduler.yaml");
    let (text, edit) = insert_once(original);
    // The shipped file ends with the jobs block: the job is appended after
    // its last line, separated by a blank line, in its two-space layout.
    assert_eq!(edit.start, original.len());
    assert_eq!(
        edit.replacement,
        "\n  # new: scaffolded\n  new:\n    description: \"x\"\n    retry: { max_attempts: 2 }\n    shell:\n      command: [\"/bin/true\"]\n"
    );
    let jobs = parse(&text)["jobs"].as_mapping().unwrap().clone();
    assert_eq!(jobs.keys().last().unwrap().as_str(), Some("new"));
    assert_eq!(jobs.len(), parse(original)["jobs"].as_mapping().unwrap().len() + 1);
}

#[test]
fn keeps_comments_and_the_next_section_after_the_block() {
    let original = "\
# top comment
defaults:
  timezone: UTC   # trailing

jobs:
  # the first job
  a:
    builtin: noop
  # b:
  #   builtin: noop

# --- alerts-ish section below, kept with its key
other_key: 1
";
    let (text, edit) = insert_once(original);
    // After the indented comment that closes the block, before the blank
    // line and the column-0 comment of the next section.
    let anchor = original.find("  #   builtin: noop\n").unwrap() + "  #   builtin: noop\n".len();
    assert_eq!(edit.start, anchor);
    assert!(edit.replacement.starts_with("\n  # new: scaffolded\n  new:\n"));
    assert!(text.contains("#   builtin: noop\n\n  # new: scaffolded\n"), "{text}");
    assert!(
        text.ends_with(
            "      command: [\"/bin/true\"]\n\n# --- alerts-ish section below, kept with its key\nother_key: 1\n"
        ),
        "{text}"
    );
    assert_eq!(parse(&text)["other_key"], Value::from(1));
}

#[test]
fn a_next_key_right_after_the_block_gets_a_blank_line() {
    let original = "jobs:\n  a: { builtin: noop }\nother: 2\n";
    let (text, _) = insert_once(original);
    assert!(text.ends_with("command: [\"/bin/true\"]\n\nother: 2\n"), "{text}");
}

#[test]
fn follows_odd_indentation() {
    // Jobs at four spaces, their fields three further.
    let original = "jobs:\n    a:\n       builtin: noop\n    b:\n       shell: 'echo b'\n";
    let (text, edit) = insert_once(original);
    assert_eq!(
        edit.replacement,
        "\n    # new: scaffolded\n    new:\n       description: \"x\"\n       retry: { max_attempts: 2 }\n       shell:\n          command: [\"/bin/true\"]\n"
    );
    assert_eq!(
        parse(&text)["jobs"]["new"]["shell"]["command"][0],
        Value::from("/bin/true")
    );
    // One-space jobs whose fields are inline.
    let (text, edit) = insert_once("jobs:\n a: { builtin: noop }\n");
    assert!(
        edit.replacement.contains("\n new:\n  description:"),
        "{:?}",
        edit.replacement
    );
    assert_eq!(parse(&text)["jobs"]["a"]["builtin"], Value::from("noop"));
}

#[test]
fn empty_flow_or_null_jobs_get_a_block() {
    for (original, expected) in [
        ("defaults: {}\njobs: {}\n", "defaults: {}\njobs:\n  # new"),
        ("jobs: {}   # none yet\nx: 1\n", "jobs:   # none yet\n  # new"),
        ("jobs: ~\n", "jobs:\n  # new"),
        ("jobs:\n", "jobs:\n  # new"),
        ("jobs:\nx: 1\n", "jobs:\n  # new"),
    ] {
        let inserted = insert_job(original, &def()).unwrap_or_else(|e| panic!("{original:?}: {e}"));
        assert!(
            inserted.text.starts_with(expected),
            "{original:?} gave\n{}",
            inserted.text
        );
        assert_eq!(apply_edits(original, &inserted.edits), inserted.text);
        let doc = parse(&inserted.text);
        assert_eq!(doc["jobs"]["new"]["description"], Value::from("x"), "{original:?}");
        if original.contains("x: 1") {
            assert_eq!(doc["x"], Value::from(1));
            assert!(inserted.text.ends_with("\n\nx: 1\n"), "{}", inserted.text);
        }
    }
}

#[test]
fn non_empty_flow_jobs_are_refused() {
    let err = insert_job("jobs: { a: { builtin: noop } }\n", &def()).unwrap_err();
    assert!(err.contains("line 1: `jobs:` is a flow mapping"), "{err}");
    let err = insert_job("x: 1\njobs: &j\n  a: { builtin: noop }\n", &def()).unwrap_err();
    assert!(err.contains("line 2: `jobs:` is followed by `&j`"), "{err}");
}

#[test]
fn missing_jobs_is_appended() {
    let (text, edit) = insert_once("# only defaults\ndefaults:\n  timezone: UTC\n");
    assert_eq!(
        edit.replacement.lines().take(3).collect::<Vec<_>>(),
        ["", "jobs:", "  # new: scaffolded"]
    );
    assert_eq!(parse(&text)["defaults"]["timezone"], Value::from("UTC"));
    // No newline at the end of the file: one is added before the section.
    let (text, _) = insert_once("defaults:\n  timezone: UTC");
    assert!(
        text.starts_with("defaults:\n  timezone: UTC\n\njobs:\n  # new"),
        "{text}"
    );
    // Comments only, and nothing at all.
    let (text, _) = insert_once("# nothing yet\n");
    assert!(text.starts_with("# nothing yet\n\njobs:\n"), "{text}");
    let (text, _) = insert_once("");
    assert!(text.starts_with("jobs:\n  # new"), "{text}");
}

#[test]
fn last_line_without_newline_in_the_block() {
    let (text, _) = insert_once("jobs:\n  a: { builtin: noop }");
    assert!(text.starts_with("jobs:\n  a: { builtin: noop }\n\n  # new"), "{text}");
}

#[test]
fn crlf_files_stay_crlf() {
    let original = "jobs:\r\n  a:\r\n    builtin: noop\r\n";
    let (text, edit) = insert_once(original);
    assert!(
        !edit.replacement.replace("\r\n", "").contains('\n'),
        "{:?}",
        edit.replacement
    );
    assert_eq!(parse(&text)["jobs"]["new"]["retry"]["max_attempts"], Value::from(2));
}

#[test]
fn refusals_name_the_reason() {
    let clash = insert_job("jobs:\n  new: { builtin: noop }\n", &def()).unwrap_err();
    assert_eq!(clash, "already defines the job `new`; choose another name");
    let bad = insert_job("jobs: [\n", &def()).unwrap_err();
    assert!(bad.starts_with("is not valid YAML: "), "{bad}");
    let seq = insert_job("- a\n- b\n", &def()).unwrap_err();
    assert!(seq.contains("is not a mapping"), "{seq}");
    let jobs_list = insert_job("jobs:\n  - a\n", &def()).unwrap_err();
    assert!(jobs_list.contains("`jobs:` that is not a mapping"), "{jobs_list}");
    // A top-level flow mapping: no `jobs:` line to extend.
    let flow = insert_job("{jobs: {a: {builtin: noop}}}\n", &def()).unwrap_err();
    assert!(flow.contains("cannot find"), "{flow}");
}

#[test]
fn job_names_follow_the_controllers_rules() {
    for good in ["a", "0", "github.sync", "a_b-c.d", &"a".repeat(128)] {
        assert_eq!(validate_job_name(good), Ok(()), "{good}");
    }
    for bad in ["", "Hello", "-x", ".x", "_x", "a b", "a/b", "é", "a\n"] {
        let err = validate_job_name(bad).unwrap_err();
        assert!(err.starts_with("invalid job name"), "{bad:?}: {err}");
        assert!(
            err.contains("use a-z, 0-9, '.', '_' and '-', starting with a letter or digit"),
            "{err}"
        );
    }
    let err = validate_job_name(&"a".repeat(129)).unwrap_err();
    assert_eq!(
        err,
        "job name is 129 characters, more than the 128 the controller accepts (its limit job_name_bytes)"
    );
    // Through plan(): a usage error, nothing written.
    let scratch = Scratch::new();
    let err = plan(&args("Bad", Kind::Shell, &scratch)).unwrap_err();
    assert_eq!(err.code, crate::error::USAGE);
    assert!(scratch.snapshot().iter().all(|(p, _)| p.ends_with("config")));
}

#[test]
fn names_yaml_would_read_as_other_types_are_quoted() {
    assert_eq!(yaml_name("hello.world"), "hello.world");
    for name in ["123", "1e3", "true", "null", "0x1f", "1.5"] {
        assert_eq!(yaml_name(name), format!("\"{name}\""), "{name}");
    }
    let (text, _) = {
        let def_text = "\"123\":\n  builtin: noop\n";
        let inserted = insert_job(
            "jobs:\n  a: { builtin: noop }\n",
            &Definition {
                name: "123",
                text: def_text,
            },
        )
        .unwrap();
        (inserted.text, ())
    };
    assert_eq!(parse(&text)["jobs"]["123"]["builtin"], Value::from("noop"));
    assert_eq!(crate_name("123.x"), "job-123-x-agent");
    assert_eq!(crate_name("leads.enrich"), "leads-enrich-agent");
}

#[test]
fn fill_is_one_pass() {
    assert_eq!(fill("a @@x@@ b @@y@@", &[("x", "@@y@@"), ("y", "2")]), "a @@y@@ b 2");
}

/// Plans and executes; returns the plan.
fn create(args: &CreateJobArgs) -> Plan {
    let plan = plan(args).unwrap_or_else(|e| panic!("{}", e.message));
    execute(&plan, &mut |_| Ok(())).unwrap_or_else(|e| panic!("{}", e.message));
    plan
}

#[test]
fn a_missing_file_is_created() {
    let scratch = Scratch::new();
    let plan = create(&args("fresh", Kind::Shell, &scratch));
    assert!(matches!(plan.change, ConfigChange::Create(_)));
    let text = fs::read_to_string(scratch.config()).unwrap();
    assert!(text.starts_with("# Job definitions"), "{text}");
    assert!(parse(&text)["jobs"]["fresh"]["shell"]["command"].is_sequence());
    // The default directory: jobs/ beside config/.
    let jobs = scratch.0.canonicalize().unwrap().join("jobs");
    assert!(jobs.join("fresh.sh").is_file());
    assert_eq!(plan.created().files.len(), 2);
    assert!(plan.created().config_created);
}

#[test]
fn each_kind_writes_its_files() {
    let scratch = Scratch::new();
    let original = "defaults:\n  timezone: UTC\n\njobs:\n  keep: { builtin: noop }\n";
    fs::write(scratch.config(), original).unwrap();
    let root = scratch.0.canonicalize().unwrap();
    let jobs = root.join("jobs");

    let mut shell = args("sh.job", Kind::Shell, &scratch);
    shell.schedule = Some("*/5 * * * *".into());
    create(&shell);
    let script = jobs.join("sh.job.sh");
    let mode = fs::metadata(&script).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        fs::metadata(jobs.join("sh.job.test.sh")).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let doc = parse(&fs::read_to_string(scratch.config()).unwrap());
    let job = &doc["jobs"]["sh.job"];
    assert_eq!(job["shell"]["command"][0], Value::from(script.to_str().unwrap()));
    assert_eq!(job["schedule"], Value::from("*/5 * * * *"));
    assert_eq!(job["timeout"], Value::from("5m"));
    assert_eq!(job["retry"]["max_attempts"], Value::from(3));
    let body = fs::read_to_string(&script).unwrap();
    assert!(body.starts_with("#!/bin/sh\n") && body.contains("::worker metric payload_bytes"));

    let mut http = args("ping", Kind::Http, &scratch);
    http.url = Some("http://127.0.0.1:9/health".into());
    let plan = create(&http);
    assert!(plan.warnings.is_empty());
    let doc = parse(&fs::read_to_string(scratch.config()).unwrap());
    assert_eq!(
        doc["jobs"]["ping"]["http"]["url"],
        Value::from("http://127.0.0.1:9/health")
    );
    assert_eq!(doc["jobs"]["ping"]["http"]["expect_status"][0], Value::from("2xx"));
    assert!(
        doc["jobs"]["ping"]["http"].get("headers").is_none(),
        "headers stay a comment"
    );
    assert!(
        fs::read_to_string(jobs.join("ping.test.sh"))
            .unwrap()
            .contains("jobs run ping")
    );

    // Without --url: the placeholder, and a warning.
    let plan = create(&args("ping2", Kind::Http, &scratch));
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    let doc = parse(&fs::read_to_string(scratch.config()).unwrap());
    assert_eq!(doc["jobs"]["ping2"]["http"]["url"], Value::from(PLACEHOLDER_URL));

    let plan = create(&args("enrich.it", Kind::Rust, &scratch));
    let krate = jobs.join("enrich.it");
    let manifest = fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"enrich-it-agent\""), "{manifest}");
    assert!(manifest.contains("\n[workspace]\n"), "{manifest}");
    // Built from this checkout: a path dependency on its agent/.
    let agent = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent")
        .canonicalize()
        .unwrap();
    assert!(
        manifest.contains(&format!(
            "worker-agent = {{ path = {} }}",
            quoted(agent.to_str().unwrap())
        )),
        "{manifest}"
    );
    assert!(plan.warnings.is_empty());
    let main = fs::read_to_string(krate.join("src/main.rs")).unwrap();
    assert!(main.contains("const HANDLER: &str = \"enrich.it\";"));
    assert!(main.contains("#[cfg(test)]") && main.contains("ctx.cancelled()"));
    let doc = parse(&fs::read_to_string(scratch.config()).unwrap());
    assert_eq!(doc["jobs"]["enrich.it"]["handler"], Value::from("enrich.it"));

    // Everything before the first inserted job is still the original's.
    let text = fs::read_to_string(scratch.config()).unwrap();
    assert!(text.starts_with(original), "{text}");
    // No temporary file left anywhere.
    assert!(
        scratch
            .snapshot()
            .iter()
            .all(|(p, _)| !p.to_string_lossy().contains(".create-job-")),
        "{:?}",
        scratch.snapshot()
    );
}

#[test]
fn worker_agent_flag_is_checked() {
    let scratch = Scratch::new();
    let mut rust = args("r", Kind::Rust, &scratch);
    rust.worker_agent = Some(scratch.0.clone());
    let err = plan(&rust).unwrap_err();
    assert!(err.message.contains("is not the agent/ directory"), "{}", err.message);
    let mut shell = args("s", Kind::Shell, &scratch);
    shell.worker_agent = Some(scratch.0.clone());
    assert_eq!(
        plan(&shell).unwrap_err().message,
        "--worker-agent is only for --kind rust"
    );
    let mut shell = args("s", Kind::Shell, &scratch);
    shell.url = Some("http://x".into());
    assert_eq!(plan(&shell).unwrap_err().message, "--url is only for --kind http");
    let mut http = args("h", Kind::Http, &scratch);
    http.url = Some("ftp://x".into());
    assert!(plan(&http).unwrap_err().message.starts_with("--url: \"ftp://x\""));
}

#[test]
fn refusals_change_nothing() {
    let scratch = Scratch::new();
    let original = "jobs:   # mine\n  taken:\n    builtin: noop\n";
    fs::write(scratch.config(), original).unwrap();
    let jobs = scratch.0.join("jobs");
    fs::create_dir_all(jobs.join("crate")).unwrap();
    fs::write(jobs.join("script.test.sh"), "mine").unwrap();
    let before = scratch.snapshot();

    let clash = plan(&args("taken", Kind::Http, &scratch)).unwrap_err();
    assert!(
        clash
            .message
            .ends_with("already defines the job `taken`; choose another name"),
        "{}",
        clash.message
    );
    assert_eq!(clash.code, crate::error::USAGE);
    // One of the two files of a shell job exists.
    let exists = plan(&args("script", Kind::Shell, &scratch)).unwrap_err();
    assert!(
        exists
            .message
            .contains("script.test.sh` already exists; nothing was changed"),
        "{}",
        exists.message
    );
    // The crate directory exists.
    let exists = plan(&args("crate", Kind::Rust, &scratch)).unwrap_err();
    assert!(
        exists.message.contains("jobs/crate` already exists"),
        "{}",
        exists.message
    );
    // A config that does not parse.
    fs::write(scratch.config(), "jobs: [\n").unwrap();
    let bad = plan(&args("other", Kind::Shell, &scratch)).unwrap_err();
    assert!(bad.message.contains("is not valid YAML"), "{}", bad.message);
    fs::write(scratch.config(), original).unwrap();
    // The config's directory is missing.
    let mut missing = args("other", Kind::Shell, &scratch);
    missing.config = scratch.0.join("nope/scheduler.yaml");
    assert!(plan(&missing).unwrap_err().message.contains("does not exist"));
    assert_eq!(scratch.snapshot(), before);
}

#[test]
fn a_failure_while_writing_undoes_everything() {
    let scratch = Scratch::new();
    let original = "jobs:\n  a: { builtin: noop }\n";
    fs::write(scratch.config(), original).unwrap();
    let before = scratch.snapshot();
    for kind in [Kind::Shell, Kind::Rust] {
        let mut a = args("late", kind, &scratch);
        // A directory that does not exist yet, two levels deep.
        a.dir = Some(scratch.0.join("deep/jobs"));
        let plan = plan(&a).unwrap();
        // Fail just before scheduler.yaml is replaced: the job's files are
        // in place by then.
        let config = plan.config.clone();
        let err = execute(&plan, &mut |path| {
            if path == config {
                Err(io::Error::other("disk full (injected)"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(
            err.message.contains("disk full (injected); nothing was changed"),
            "{}",
            err.message
        );
        assert_eq!(scratch.snapshot(), before, "{kind:?}");
        // And a failure at the first file.
        let err = execute(&plan, &mut |_| Err(io::Error::other("no"))).unwrap_err();
        assert_eq!(err.code, crate::error::FAILED);
        assert_eq!(scratch.snapshot(), before, "{kind:?}");
    }
}

#[test]
fn config_changed_meanwhile_is_not_overwritten() {
    let scratch = Scratch::new();
    fs::write(scratch.config(), "jobs: {}\n").unwrap();
    let plan = plan(&args("x", Kind::Http, &scratch)).unwrap();
    fs::write(scratch.config(), "jobs: {}\n# edited\n").unwrap();
    let err = execute(&plan, &mut |_| Ok(())).unwrap_err();
    assert!(
        err.message.contains("changed while the job was being created"),
        "{}",
        err.message
    );
    assert_eq!(fs::read_to_string(scratch.config()).unwrap(), "jobs: {}\n# edited\n");
    assert!(!scratch.0.join("jobs/x.test.sh").exists());
}

#[test]
fn the_command_line_parses() {
    use clap::Parser as _;
    let cli = crate::cli::Cli::try_parse_from([
        "workerctl",
        "create-job",
        "ping",
        "--kind",
        "http",
        "--url",
        "http://x/",
        "--config",
        "c.yaml",
    ])
    .unwrap();
    let crate::cli::Command::CreateJob(a) = cli.command else {
        panic!("not create-job")
    };
    assert_eq!(
        (a.name.as_str(), a.kind, a.config),
        ("ping", Kind::Http, PathBuf::from("c.yaml"))
    );
    assert!(crate::cli::Cli::try_parse_from(["workerctl", "create-job", "x"]).is_err());
    assert!(crate::cli::Cli::try_parse_from(["workerctl", "create-job", "x", "--kind", "go"]).is_err());
    let cli = crate::cli::Cli::try_parse_from(["workerctl", "create-job", "x", "--kind", "rust"]).unwrap();
    let crate::cli::Command::CreateJob(a) = cli.command else {
        panic!("not create-job")
    };
    assert_eq!(a.config, PathBuf::from(DEFAULT_CONFIG));
}

#[test]
fn output_lists_files_and_steps() {
    let created = Created {
        name: "n".into(),
        kind: Kind::Shell,
        config: "/c/scheduler.yaml".into(),
        config_created: false,
        files: vec!["/j/n.sh".into()],
        warnings: vec!["w".into()],
        next_steps: vec!["one".into(), "two".into()],
    };
    assert_eq!(
        created_text(&created),
        "created job `n` (shell)\n  added to  /c/scheduler.yaml\n  wrote     /j/n.sh\nwarning: w\nnext steps:\n  1. one\n  2. two\n"
    );
    let json = serde_json::to_value(&created).unwrap();
    assert_eq!(json["kind"], "shell");
}
