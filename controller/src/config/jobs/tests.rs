use super::*;
use crate::model::Priority;

fn parse(text: &str) -> Result<JobSet, ConfigErrors> {
    parse_scheduler_yaml(
        Path::new("scheduler.yaml"),
        text,
        &crate::config::env::from_pairs(&[("TOKEN", "s3cret")]),
    )
}

#[test]
fn defaults_apply_and_jobs_override() {
    let set = parse(
        "defaults:\n  timezone: Europe/Berlin\n  priority: low\n  retry: { max_attempts: 5, initial_delay: 1s }\njobs:\n  a:\n    shell: echo a\n  b:\n    priority: critical\n    schedule: '*/5 * * * * *'\n    retry: { initial_delay: 2s }\n    builtin: { name: sleep, duration: 2s }\n",
    )
    .unwrap();
    let a = set.get("a").unwrap();
    assert_eq!(a.priority, Priority::Low);
    assert_eq!(a.retry.max_attempts, 5);
    assert_eq!(
        a.executor,
        ExecutorDef::Shell(ShellDef {
            script: "echo a".into(),
            ..ShellDef::default()
        })
    );
    let b = set.get("b").unwrap();
    assert_eq!(b.priority, Priority::Critical);
    assert_eq!(b.retry.max_attempts, 5);
    assert_eq!(b.retry.initial_delay, Duration::from_secs(2));
    assert_eq!(b.schedule.as_ref().unwrap().tz(), chrono_tz::Europe::Berlin);
}

#[test]
fn reports_every_error_with_its_line() {
    let text = "jobs:\n  a:\n    schedule: '61 * * * *'\n    shell: x\n  b:\n    timezone: Mars/Base\n    shell: x\n  c:\n    priority: urgent\n    shell: x\n  d:\n    shel: x\n";
    let errors = parse(text).unwrap_err().0;
    let located: Vec<(Option<usize>, &str)> = errors.iter().map(|e| (e.line, e.path.as_str())).collect();
    assert_eq!(
        located,
        vec![
            (Some(3), "jobs.a.schedule"),
            (Some(6), "jobs.b.timezone"),
            (Some(9), "jobs.c.priority"),
            (Some(12), "jobs.d.shel")
        ]
    );
    assert!(errors[2].message.contains("unknown priority \"urgent\""));
    assert!(errors[3].message.contains("unknown field `shel`"));
}

#[test]
fn syntax_errors_have_a_line() {
    let errors = parse("jobs:\n  a:\n    shell: [unclosed\n").unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert!(errors[0].line.is_some());
    assert!(errors[0].message.starts_with("invalid YAML"));
}

#[test]
fn executor_is_required_and_unique() {
    let errors = parse("jobs:\n  a: {}\n  b:\n    shell: x\n    builtin: noop\n")
        .unwrap_err()
        .0;
    assert!(errors[0].message.contains("missing executor"));
    assert!(errors[1].message.contains("exactly one executor"));
}

#[test]
fn bad_names_and_types() {
    let errors = parse("jobs:\n  Bad_Name:\n    shell: x\n  ok:\n    shell: x\n    max_concurrency: many\n")
        .unwrap_err()
        .0;
    assert!(errors[0].message.contains("invalid job name"));
    assert_eq!(errors[1].path, "jobs.ok.max_concurrency");
    assert_eq!(errors[1].line, Some(6));
}

#[test]
fn unknown_dependencies_and_cycles_are_errors() {
    let errors = parse("jobs:\n  a:\n    shell: x\n    depends_on: [ghost]\n")
        .unwrap_err()
        .0;
    assert_eq!(
        (errors[0].path.as_str(), errors[0].line),
        ("jobs.a.depends_on", Some(4))
    );
    assert!(errors[0].message.contains("unknown job \"ghost\""));

    let cyclic = "jobs:\n  a:\n    shell: x\n    depends_on: [c]\n  b:\n    shell: x\n    depends_on: [a]\n  c:\n    shell: x\n    depends_on: [b]\n";
    let errors = parse(cyclic).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].message.starts_with("dependency cycle: "),
        "{}",
        errors[0].message
    );
    assert!(errors[0].message.contains("a -> c -> b -> a"), "{}", errors[0].message);
}

#[test]
fn specs_keep_variable_references_and_merged_defaults() {
    let text = "defaults:\n  timezone: Asia/Tokyo\njobs:\n  a:\n    schedule: '0 9 * * *'\n    shell: { command: [run], env: { T: \"${TOKEN}\" } }\n";
    let set = parse(text).unwrap();
    let entry = set.entry("a").unwrap();
    let ExecutorDef::Shell(shell) = &entry.def.executor else {
        panic!()
    };
    assert_eq!(shell.env["T"], "s3cret");
    let yaml = spec_to_yaml(&entry.spec);
    assert!(yaml.contains("${TOKEN}") && !yaml.contains("s3cret"), "{yaml}");
    assert!(yaml.contains("Asia/Tokyo"), "defaults are merged into the spec: {yaml}");
    let rebuilt = entry_from_spec("a", &yaml, Source::Api, &|_| Ok("other".into())).unwrap();
    assert_eq!(rebuilt.def.schedule.as_ref().unwrap().tz(), chrono_tz::Asia::Tokyo);
    let ExecutorDef::Shell(shell) = &rebuilt.def.executor else {
        panic!()
    };
    assert_eq!(shell.env["T"], "other");
    let err = entry_from_spec("a", &yaml, Source::Api, &crate::config::env::from_pairs(&[])).unwrap_err();
    assert!(err.0[0].message.contains("TOKEN is not set"), "{err}");
}

#[test]
fn unset_variables_name_their_place() {
    let errors = parse("jobs:\n  a:\n    shell: { command: [x], env: { K: \"${NOPE}\" } }\n")
        .unwrap_err()
        .0;
    assert_eq!(errors[0].path, "jobs.a.shell.env.K");
    assert_eq!(errors[0].line, Some(3));
    assert!(errors[0].message.contains("NOPE is not set"));
}

#[test]
fn dst_policy_and_schedule_only_fields() {
    let set =
        parse("jobs:\n  a:\n    schedule: '30 2 * * *'\n    dst: { gap: skip, repeat: both }\n    builtin: noop\n")
            .unwrap();
    let policy = set.get("a").unwrap().schedule.as_ref().unwrap().policy();
    assert_eq!(policy.gap.to_string(), "skip");
    assert_eq!(policy.repeat.to_string(), "both");
    let errors = parse("jobs:\n  a:\n    dst: { gap: skip }\n    catch_up: all\n    builtin: noop\n")
        .unwrap_err()
        .0;
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["jobs.a.dst", "jobs.a.catch_up"], "in line order");
    let errors = parse("jobs:\n  a:\n    schedule: '* * * * *'\n    dst: { gap: later }\n    builtin: noop\n")
        .unwrap_err()
        .0;
    assert_eq!(errors[0].path, "jobs.a.dst.gap");
}

#[test]
fn timeouts_are_bounded() {
    let errors = parse("jobs:\n  a:\n    timeout: 31d\n    shell: x\n").unwrap_err().0;
    assert_eq!(errors[0].path, "jobs.a.timeout");
    assert!(
        errors[0].message.contains("longer than the limit of 30d"),
        "{}",
        errors[0].message
    );
    assert_eq!(
        parse("jobs:\n  a:\n    timeout: 0s\n    shell: x\n")
            .unwrap()
            .get("a")
            .unwrap()
            .timeout,
        None
    );
}

/// Durations read the grammar of `worker_duration`, as the agent's and
/// workerctl's flags do: `30s` and a bare `0` are durations, a bare `30` is
/// refused with the shared message at its file and line, whether YAML reads it
/// as a number or as a string.
#[test]
fn durations_share_the_grammar() {
    const MISSING_UNIT: &str = r#"invalid duration "30": missing unit (use ms, s, m, h or d, e.g. 30s)"#;
    let timeout = |value: &str| parse(&format!("jobs:\n  a:\n    shell: x\n    timeout: {value}\n"));
    assert_eq!(
        timeout("30s").unwrap().get("a").unwrap().timeout,
        Some(Duration::from_secs(30))
    );
    assert_eq!(timeout("0").unwrap().get("a").unwrap().timeout, None);
    for value in ["30", "\"30\"", "' 30 '"] {
        let errors = timeout(value).unwrap_err().0;
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [format!("scheduler.yaml:4: jobs.a.timeout: {MISSING_UNIT}")],
            "{value}"
        );
    }
}

/// Every duration field takes YAML numbers to the duration parser, so they are
/// refused for what they are (no unit, a fraction, a sign), not as a type error.
#[test]
fn numbers_in_duration_fields_are_read_as_durations() {
    let lines = |text: &str| -> Vec<String> { parse(text).unwrap_err().0.iter().map(ToString::to_string).collect() };
    let unit = "(use ms, s, m, h or d, e.g. ";
    assert_eq!(
        lines("defaults:\n  timeout: 30\n  retry: { initial_delay: 1.5 }\njobs:\n  a: { shell: x }\n"),
        [
            format!(r#"scheduler.yaml:2: defaults.timeout: invalid duration "30": missing unit {unit}30s)"#),
            r#"scheduler.yaml:3: defaults.retry.initial_delay: invalid duration "1.5": fractions are not allowed (use a smaller unit, e.g. 1500ms for 1.5s)"#.to_string(),
        ]
    );
    let text = "\
jobs:
  a:
    schedule: '* * * * *'
    jitter: 30
    catch_up_window: -1
    retry: { max_delay: 60 }
    builtin: { name: sleep, duration: 5 }
";
    assert_eq!(
        lines(text),
        [
            format!(r#"scheduler.yaml:4: jobs.a.jitter: invalid duration "30": missing unit {unit}30s)"#),
            r#"scheduler.yaml:5: jobs.a.catch_up_window: invalid duration "-1": unexpected "-" (expected <integer><unit> parts such as 1h30m)"#.to_string(),
            format!(r#"scheduler.yaml:6: jobs.a.retry.max_delay: invalid duration "60": missing unit {unit}60s)"#),
            format!(r#"scheduler.yaml:7: jobs.a.builtin.duration: invalid duration "5": missing unit {unit}5s)"#),
        ]
    );
    // A bare 0 is zero, as a number or a string.
    let set =
        parse("jobs:\n  b:\n    shell: x\n    timeout: 0\n    retry: { initial_delay: 0, max_delay: '0' }\n").unwrap();
    let b = set.get("b").unwrap();
    assert_eq!(
        (b.timeout, b.retry.initial_delay, b.retry.max_delay),
        (None, Duration::ZERO, Duration::ZERO)
    );
}

#[test]
fn chain_depth_is_the_longest_upstream_path() {
    // d -> b -> a, d -> c -> b -> a, d -> a: the longest path below d is 3.
    let set = parse(
        "jobs:\n  a: { builtin: noop }\n  b: { builtin: noop, depends_on: [a] }\n  c: { builtin: noop, depends_on: [b] }\n  d: { builtin: noop, depends_on: [a, b, c] }\n",
    )
    .unwrap();
    let depths: Vec<usize> = ["a", "b", "c", "d", "unknown"]
        .iter()
        .map(|j| set.chain_depth(j))
        .collect();
    assert_eq!(depths, [0, 1, 2, 3, 0]);
}

#[test]
fn what_could_not_be_triggered_is_refused_with_its_line() {
    let mut wide = String::from("jobs:\n");
    for i in 0..101 {
        wide.push_str(&format!("  up{i}: {{ builtin: noop }}\n"));
    }
    let all: Vec<String> = (0..101).map(|i| format!("up{i}")).collect();
    wide.push_str(&format!(
        "  wide:\n    builtin: noop\n    depends_on: [{}]\n",
        all.join(", ")
    ));
    let errors = parse(&wide).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "jobs.wide.depends_on");
    assert_eq!(errors[0].line, Some(105));
    assert_eq!(
        errors[0].message,
        "101 jobs exceeds the limit dependencies=100 (--limit dependencies=...)"
    );

    let mut deep = String::from("jobs:\n  l0: { builtin: noop }\n");
    for i in 1..=65 {
        deep.push_str(&format!("  l{i}: {{ builtin: noop, depends_on: [l{}] }}\n", i - 1));
    }
    let errors = parse(&deep).unwrap_err().0;
    assert_eq!(errors.len(), 1, "only the job past the limit: {errors:?}");
    assert_eq!(errors[0].path, "jobs.l65.depends_on");
    assert_eq!(
        errors[0].message,
        "its chain of upstream jobs is 65 deep, over the limit of 64"
    );
    // 64 levels are fine.
    let ok: String = deep.lines().take(66).map(|l| format!("{l}\n")).collect();
    assert!(parse(&ok).is_ok());
}

/// `${VARS}` are interpolated in a shell job's `env` values only: in a
/// command, a description or a schedule they stay as written (the shell on
/// the agent expands a command's), and an error about such a field quotes the
/// reference, never a variable's value.
#[test]
fn variables_interpolate_only_in_env_values() {
    let set = parse(
        "jobs:\n  a:\n    description: \"key ${TOKEN}\"\n    shell: { command: \"echo ${TOKEN}\", env: { T: \"${TOKEN}\" } }\n",
    )
    .unwrap();
    let def = &set.get("a").unwrap();
    assert_eq!(def.description, "key ${TOKEN}");
    let ExecutorDef::Shell(shell) = &def.executor else {
        panic!()
    };
    assert_eq!(shell.env["T"], "s3cret");
    assert_eq!(shell.script, "echo ${TOKEN}");

    for field in ["timezone", "priority", "schedule", "timeout"] {
        let errors = parse(&format!("jobs:\n  a:\n    {field}: \"${{TOKEN}}\"\n    shell: x\n"))
            .unwrap_err()
            .0;
        let text = format!("{errors:?}");
        assert!(!text.contains("s3cret"), "{field}: the value leaked: {text}");
        assert!(text.contains(&format!("jobs.a.{field}")), "{field}: {text}");
    }
}

#[test]
fn retention_is_merged_from_defaults_field_by_field() {
    let set = parse(
        "defaults:\n  retention: { max_age: 30d, dead_max_age: 90d }\njobs:\n  a:\n    shell: x\n  b:\n    retention: { max_runs: 10000, max_age: 7d }\n    shell: x\n",
    )
    .unwrap();
    let day = Duration::from_secs(86_400);
    let a = set.get("a").unwrap().retention;
    assert_eq!(
        (a.max_age, a.max_runs, a.dead_max_age),
        (Some(30 * day), None, Some(90 * day))
    );
    let b = set.get("b").unwrap().retention;
    assert_eq!(
        (b.max_age, b.max_runs, b.dead_max_age),
        (Some(7 * day), Some(10_000), Some(90 * day))
    );
    let none = parse("jobs:\n  c:\n    shell: x\n").unwrap();
    assert!(none.get("c").unwrap().retention.keeps_everything());
}

#[test]
fn retention_errors_name_the_field_and_the_limit() {
    let defaults = parse("defaults:\n  retention: { max_age: 0s }\njobs:\n  z:\n    shell: x\n")
        .unwrap_err()
        .0;
    assert_eq!(defaults.len(), 1, "{defaults:?}");
    assert_eq!(defaults[0].path, "defaults.retention.max_age");
    assert!(defaults[0].message.contains("must be longer than 0s"), "{defaults:?}");
    let text = "jobs:\n  a:\n    retention: { max_runs: 0 }\n    shell: x\n  b:\n    retention: { max_age: 30d, dead_max_age: 1d }\n    shell: x\n  c:\n    retention: { max_age: 200000d }\n    shell: x\n  d:\n    retention: { max_agee: 1d }\n    shell: x\n";
    let errors = parse(text).unwrap_err().0;
    let found: Vec<(&str, &str)> = errors.iter().map(|e| (e.path.as_str(), e.message.as_str())).collect();
    let has = |path: &str, text: &str| {
        assert!(
            found.iter().any(|(p, m)| *p == path && m.contains(text)),
            "no error at {path} containing {text:?}: {found:#?}"
        )
    };
    has("jobs.a.retention.max_runs", "must be between 1 and 1000000000, got 0");
    has("jobs.b.retention.dead_max_age", "must not be shorter than max_age");
    has("jobs.c.retention.max_age", "longer than 100 years");
    assert!(
        found
            .iter()
            .any(|(p, m)| p.starts_with("jobs.d.retention") && m.contains("max_agee")),
        "{found:#?}"
    );
}

#[test]
fn builtin_arguments_are_checked_by_their_builtin() {
    let errors = parse(
        "jobs:\n  a:\n    builtin: { name: noop, duration: 2s }\n  b:\n    builtin: { name: sleep, seconds: 2 }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(errors.contains("scheduler.yaml:3: jobs.a.builtin"), "{errors}");
    assert!(errors.contains("unknown field `duration`"), "{errors}");
    assert!(errors.contains("scheduler.yaml:5: jobs.b.builtin"), "{errors}");
    assert!(errors.contains("unknown field `seconds`"), "{errors}");
    let jobs = parse("jobs:\n  a:\n    builtin: { name: sleep, duration: 2s }\n").unwrap();
    match &jobs.get("a").unwrap().executor {
        ExecutorDef::Builtin(b) => assert_eq!(b.args.get("duration").map(String::as_str), Some("2s")),
        other => panic!("{other:?}"),
    }
}
