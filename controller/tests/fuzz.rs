//! Fuzzing on the stable toolchain: bounded property tests (`proptest`) of the
//! four places where untrusted input enters the controller. The same entry
//! points are `cargo fuzz` targets in `fuzz/` for long runs on nightly.
//!
//! * [`config_loader`]: arbitrary text, and YAML that is well-formed but wrong
//!   (hostile names, keys and values), into `parse_scheduler_yaml`: no panic,
//!   every error has a message and a plausible line, every job loaded is named
//!   in the text.
//! * [`cron`]: random expressions from the cron grammar and random strings into
//!   `CronSchedule::parse`; next fires from random instants in random zones: no
//!   panic, fires strictly increasing, `next_after` consistent with itself, and
//!   in UTC each fire matches the expression field by field.
//! * [`payload`]: random JSON values and strings into `validate_payload`: no
//!   panic, accepted means JSON (or empty), a refusal never echoes the payload.
//! * [`agent_messages`]: random sequences of agent messages (the mapping of
//!   `api/agent.rs`: Hello, Pull, Started, Heartbeat, Finished, disconnects),
//!   enqueues, commit rounds, clock moves, timer releases and lease expiries
//!   against the real engine on a real SQLite file: no panic, the engine never
//!   stops, memory agrees with the store after every step, a terminal run stays
//!   terminal, and a restart recovers the same live runs.
//!
//! Case counts are small so the file runs in seconds in a debug build;
//! `PROPTEST_CASES=N` runs more of every target.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use proptest::prelude::*;
use proptest::test_runner::Config;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use worker_controller::config::{ConfigErrors, JobSet, parse_scheduler_yaml};
use worker_controller::engine::state::AgentSender;
use worker_controller::engine::{Engine, EngineSettings, EnqueueRequest, ResultMessage, Rounds, validate_payload};
use worker_controller::model::RunState;
use worker_controller::scheduler::cron::CronSchedule;
use worker_controller::store::Store;
use worker_controller::time::Clock;
use worker_proto::v1 as pb;

/// Cases of a target, unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// The configuration loader with no environment (the one place to adapt if
/// the lookup's signature changes).
fn load(text: &str) -> Result<JobSet, ConfigErrors> {
    parse_scheduler_yaml(Path::new("scheduler.yaml"), text, &|_| Err("no variables".into()))
}

// ---------------------------------------------------------------------------
// (a) The configuration loader
// ---------------------------------------------------------------------------

mod config_loader {
    use super::*;

    const NAMES: &[&str] = &[
        "ok", "a/b", "..", "../../x", "", " ", "a\u{7}b", "é", "x.y-z_1", "UPPER", "-", "*", "${X}", "a: b",
    ];
    const KEYS: &[&str] = &[
        "shell",
        "builtin",
        "schedule",
        "timezone",
        "priority",
        "timeout",
        "retry",
        "depends_on",
        "overlap",
        "catch_up",
        "selector",
        "max_concurrency",
        "description",
        "tags",
        "dst",
        "enabled",
        "jitter",
        "colour",
        "",
        "<<",
    ];
    const VALUES: &[&str] = &[
        "noop",
        "\"echo hi\"",
        "{ name: sleep, duration: 1s }",
        "{ command: [\"true\"], env: { \"A=B\": x } }",
        "\"0 0 31 2 *\"",
        "\"*/1000 * * * *\"",
        "\"* * * * *\"",
        "\"61 * * * *\"",
        "../../etc/passwd",
        "Mars/Olympus",
        "UTC",
        "-5s",
        "1e300",
        ".nan",
        "-.inf",
        "18446744073709551616",
        "-1",
        "0",
        "~",
        "[]",
        "{}",
        "[a, b]",
        "{ max_attempts: 1000000000000, initial_delay: -1h }",
        "{ gap: sideways }",
        "\"${HOME}\"",
        "\"$${X}\"",
        "true",
        "urgent",
        "!!binary aGVsbG8=",
        "*anchor",
        "&anchor x",
        "\"\\u0000\"",
    ];

    fn pick(list: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        proptest::sample::select(list)
    }

    /// A document of the right shape with wrong parts.
    fn document() -> impl Strategy<Value = String> {
        let field = (pick(KEYS), pick(VALUES));
        let job = (pick(NAMES), proptest::collection::vec(field, 0..6));
        (
            proptest::sample::select(&["jobs", "jobz", "defaults", ""][..]),
            proptest::collection::vec(job, 0..5),
            proptest::option::of((pick(KEYS), pick(VALUES))),
        )
            .prop_map(|(top, jobs, default)| {
                let mut text = String::new();
                if let Some((k, v)) = default {
                    text.push_str(&format!("defaults:\n  {k}: {v}\n"));
                }
                text.push_str(&format!("{top}:\n"));
                for (name, fields) in jobs {
                    text.push_str(&format!("  {name:?}:\n"));
                    for (k, v) in fields {
                        text.push_str(&format!("    {k}: {v}\n"));
                    }
                }
                text
            })
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        let lines = text.lines().count() + 1;
        match load(text) {
            Ok(set) => {
                for job in set.iter() {
                    prop_assert!(text.contains(&*job.name), "job {:?} is not in the text", job.name);
                }
            }
            Err(errors) => {
                prop_assert!(!errors.0.is_empty(), "an error without problems");
                for e in &errors.0 {
                    prop_assert!(!e.message.is_empty(), "an empty message: {e:?}");
                    if let Some(line) = e.line {
                        prop_assert!(line <= lines + 1, "line {line} past the end ({lines}): {e}");
                    }
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(200))]

        #[test]
        fn arbitrary_text(text in "\\PC{0,300}") {
            check(&text)?;
        }

        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            check(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn structured_but_wrong(text in document()) {
            check(&text)?;
        }

        #[test]
        fn nesting(depth in 1usize..3000, flow in any::<bool>()) {
            let text = if flow {
                format!("jobs: {}{}\n", "[".repeat(depth), "]".repeat(depth))
            } else {
                format!("jobs:\n  x:\n    description:\n      {}x\n", "- ".repeat(depth))
            };
            check(&text)?;
        }
    }
}

// ---------------------------------------------------------------------------
// (b) The cron parser and evaluator
// ---------------------------------------------------------------------------

mod cron {
    use super::*;

    /// One element of a field, and the values it takes.
    fn element(min: u32, max: u32) -> impl Strategy<Value = (String, Vec<u32>)> {
        let value = min..=max;
        let step = 1u32..=(max - min + 1).max(1);
        prop_oneof![
            Just(("*".to_string(), (min..=max).collect::<Vec<u32>>())),
            step.clone()
                .prop_map(move |s| (format!("*/{s}"), (min..=max).step_by(s as usize).collect::<Vec<u32>>())),
            value.clone().prop_map(|v| (v.to_string(), vec![v])),
            (value.clone(), value.clone()).prop_map(|(a, b)| {
                let (a, b) = (a.min(b), a.max(b));
                (format!("{a}-{b}"), (a..=b).collect::<Vec<u32>>())
            }),
            (value.clone(), value.clone(), step.clone()).prop_map(|(a, b, s)| {
                let (a, b) = (a.min(b), a.max(b));
                (
                    format!("{a}-{b}/{s}"),
                    (a..=b).step_by(s as usize).collect::<Vec<u32>>(),
                )
            }),
            (value, step)
                .prop_map(move |(a, s)| (format!("{a}/{s}"), (a..=max).step_by(s as usize).collect::<Vec<u32>>())),
        ]
    }

    /// A field: a list of 1 to 3 elements, whether it starts with `*`, its values.
    fn field(min: u32, max: u32) -> impl Strategy<Value = (String, bool, Vec<u32>)> {
        proptest::collection::vec(element(min, max), 1..=3).prop_map(|elements| {
            let text = elements.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(",");
            let star = text.starts_with('*');
            let mut values: Vec<u32> = elements.into_iter().flat_map(|(_, v)| v).collect();
            values.sort_unstable();
            values.dedup();
            (text, star, values)
        })
    }

    /// A five-field expression with the value sets of its fields.
    #[derive(Debug, Clone)]
    pub struct Expr {
        text: String,
        minute: Vec<u32>,
        hour: Vec<u32>,
        dom: (bool, Vec<u32>),
        month: Vec<u32>,
        dow: (bool, Vec<u32>),
    }

    impl Expr {
        /// Whether the UTC instant `t` matches (Vixie day semantics).
        fn matches(&self, t: DateTime<Utc>) -> bool {
            let dom = self.dom.1.contains(&t.day());
            let dow = self.dow.1.contains(&t.weekday().num_days_from_sunday())
                || (t.weekday().num_days_from_sunday() == 0 && self.dow.1.contains(&7));
            let day = match (self.dom.0, self.dow.0) {
                (false, false) => dom || dow,
                _ => dom && dow,
            };
            t.second() == 0
                && self.minute.contains(&t.minute())
                && self.hour.contains(&t.hour())
                && self.month.contains(&t.month())
                && day
        }
    }

    fn expr() -> impl Strategy<Value = Expr> {
        (field(0, 59), field(0, 23), field(1, 31), field(1, 12), field(0, 7)).prop_map(|(mi, h, d, mo, w)| Expr {
            text: format!("{} {} {} {} {}", mi.0, h.0, d.0, mo.0, w.0),
            minute: mi.2,
            hour: h.2,
            dom: (d.1, d.2),
            month: mo.2,
            dow: (w.1, w.2),
        })
    }

    const ZONES: &[chrono_tz::Tz] = &[
        chrono_tz::UTC,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Asia::Kathmandu,
        chrono_tz::Pacific::Chatham,
        chrono_tz::America::Sao_Paulo,
    ];

    /// Instants from 1970 to 2200, and a few at the ends of chrono's range.
    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        prop_oneof![
            8 => (0i64..7_258_118_400).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap()),
            1 => Just(Utc.with_ymd_and_hms(9999, 12, 31, 23, 0, 0).unwrap()),
            1 => Just(DateTime::<Utc>::MAX_UTC - chrono::Duration::days(1)),
        ]
    }

    proptest! {
        #![proptest_config(config(150))]

        #[test]
        fn random_strings_never_panic(text in "[0-9*/,\\-? A-Za-z@#LW]{0,40}") {
            if let Ok(s) = CronSchedule::parse(&text, chrono_tz::UTC) {
                let _ = s.next_after(Utc.timestamp_opt(1_700_000_000, 0).unwrap());
            }
        }

        #[test]
        fn grammar_fires_increase_and_match(
            e in expr(),
            zone in proptest::sample::select(ZONES),
            from in instant(),
        ) {
            let Ok(schedule) = CronSchedule::parse(&e.text, zone) else {
                // Refused (e.g. a date that never exists): fine, and it must say why.
                let err = CronSchedule::parse(&e.text, zone).unwrap_err();
                prop_assert!(err.contains(&e.text), "the error does not quote the expression: {err}");
                return Ok(());
            };
            let mut prev = from;
            for _ in 0..4 {
                let Some(next) = schedule.next_after(prev) else { break };
                prop_assert!(next > prev, "{}: {next} is not after {prev}", e.text);
                // Nothing fires between prev and next.
                let just_before = next - chrono::Duration::seconds(1);
                if just_before > prev {
                    prop_assert_eq!(schedule.next_after(just_before), Some(next), "{} from {}", e.text, just_before);
                }
                if zone == chrono_tz::UTC {
                    prop_assert!(e.matches(next), "{}: {next} does not match", e.text);
                }
                prev = next;
            }
            let until = from.checked_add_signed(chrono::Duration::days(3)).unwrap_or(DateTime::<Utc>::MAX_UTC);
            let (fires, count) = schedule.fires_between(from, until, 50);
            prop_assert!(fires.len() as u64 <= count);
            for pair in fires.windows(2) {
                prop_assert!(pair[0] < pair[1], "{}: fires_between not increasing", e.text);
            }
            for f in &fires {
                prop_assert!(*f > from && *f <= until, "{}: {f} outside ({from}, {until}]", e.text);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (c) Payload validation
// ---------------------------------------------------------------------------

mod payload {
    use super::*;

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| serde_json::json!(n)),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            "\\PC{0,20}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
                proptest::collection::btree_map("\\PC{0,8}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            json().prop_map(|v| v.to_string()),
            "\\PC{0,200}",
            Just("NaN".to_string()),
            Just("[Infinity, -Infinity]".to_string()),
            Just("{\"a\":1,\"a\":2}".to_string()),
            Just("\"\\ud800\"".to_string()),
            Just("  \n\t ".to_string()),
            (1usize..20_000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
            (1usize..20_000).prop_map(|d| "{\"a\":".repeat(d) + "1" + &"}".repeat(d)),
            (1usize..3).prop_map(|m| format!("\"{}\"", "x".repeat(m << 20))),
        ]
    }

    fn check(text: &str) -> Result<(), TestCaseError> {
        match validate_payload(text) {
            Ok(stored) => {
                if text.trim().is_empty() {
                    prop_assert_eq!(stored, "null");
                } else {
                    prop_assert_eq!(&stored, text);
                    prop_assert!(
                        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(),
                        "accepted text that is not JSON"
                    );
                }
            }
            Err(message) => {
                prop_assert!(!message.is_empty());
                prop_assert!(
                    message.len() <= 512,
                    "the refusal is {} bytes: it echoes the payload",
                    message.len()
                );
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(config(300))]

        #[test]
        fn payloads(text in text()) {
            check(&text)?;
        }

        #[test]
        fn bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            check(&String::from_utf8_lossy(&bytes))?;
        }
    }
}

// ---------------------------------------------------------------------------
// (d) Agent messages into the engine
// ---------------------------------------------------------------------------

mod agent_messages {
    use super::*;

    const JOBS: &str = "jobs:\n  quick:\n    builtin: noop\n  retrying:\n    builtin: noop\n    retry: { max_attempts: 3, initial_delay: 1s, jitter: 0 }\n  shelly:\n    shell: \"true\"\n  timed:\n    builtin: noop\n    timeout: 2s\n";
    const JOB_NAMES: &[&str] = &["quick", "retrying", "shelly", "timed"];
    const AGENT_IDS: &[&str] = &["a1", "a2", "", "../../x", "a\n1"];
    const OUTCOMES: &[&str] = &[
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "",
        "SUCCEEDED",
        "lost",
        "dead",
    ];
    const STAMPS: &[&str] = &[
        "",
        "1970-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "yesterday",
        "2026-01-01T00:00:00Z",
    ];

    /// Which run a message names: one the agents were assigned (by index, and
    /// its attempt or another), or a made-up id.
    #[derive(Debug, Clone)]
    enum RunRef {
        Assigned { index: usize, attempt_delta: i8 },
        Made(String, u32),
    }

    fn run_ref() -> impl Strategy<Value = RunRef> {
        prop_oneof![
            4 => (any::<usize>(), -1i8..=1).prop_map(|(index, attempt_delta)| RunRef::Assigned { index, attempt_delta }),
            1 => ("[A-Z0-9' ./-]{0,30}", any::<u32>()).prop_map(|(id, a)| RunRef::Made(id, a)),
        ]
    }

    #[derive(Debug, Clone)]
    enum Msg {
        Hello {
            id: usize,
            capacity: u32,
            executors: Vec<&'static str>,
            in_flight: Vec<RunRef>,
        },
        Pull(u32),
        Started(RunRef),
        Heartbeat(Vec<RunRef>),
        Finished {
            run: RunRef,
            outcome: &'static str,
            exit_code: Option<i32>,
            output: usize,
            stamp: &'static str,
            duration_ms: u64,
            permanent: bool,
        },
    }

    fn msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            1 => (
                0..AGENT_IDS.len(),
                prop_oneof![Just(0u32), 1u32..4, Just(u32::MAX)],
                proptest::sample::subsequence(vec!["builtin", "shell", "../sh", ""], 0..=4),
                proptest::collection::vec(run_ref(), 0..3),
            )
                .prop_map(|(id, capacity, executors, in_flight)| Msg::Hello { id, capacity, executors, in_flight }),
            2 => prop_oneof![Just(0u32), 1u32..4, Just(u32::MAX)].prop_map(Msg::Pull),
            2 => run_ref().prop_map(Msg::Started),
            2 => proptest::collection::vec(run_ref(), 0..4).prop_map(Msg::Heartbeat),
            4 => (
                run_ref(),
                proptest::sample::select(OUTCOMES),
                any::<Option<i32>>(),
                prop_oneof![Just(0usize), 1usize..100, Just(200_000usize)],
                proptest::sample::select(STAMPS),
                prop_oneof![Just(0u64), any::<u64>()],
                any::<bool>(),
            )
                .prop_map(|(run, outcome, exit_code, output, stamp, duration_ms, permanent)| Msg::Finished {
                    run,
                    outcome,
                    exit_code,
                    output,
                    stamp,
                    duration_ms,
                    permanent,
                }),
        ]
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A new stream on `slot` whose first message is `first`.
        Connect {
            slot: usize,
            first: Msg,
        },
        /// A message on the open stream of `slot`.
        Send {
            slot: usize,
            msg: Msg,
        },
        /// The stream of `slot` ends.
        Disconnect {
            slot: usize,
        },
        Enqueue(usize),
        Round,
        Advance(i64),
        ReleaseDue,
        ExpireLeases,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0usize..3, msg()).prop_map(|(slot, first)| Op::Connect { slot, first }),
            8 => (0usize..3, msg()).prop_map(|(slot, msg)| Op::Send { slot, msg }),
            1 => (0usize..3).prop_map(|slot| Op::Disconnect { slot }),
            3 => (0..JOB_NAMES.len()).prop_map(Op::Enqueue),
            4 => Just(Op::Round),
            2 => prop_oneof![Just(100i64), Just(1_000), Just(5_000), Just(30_000)].prop_map(Op::Advance),
            1 => Just(Op::ReleaseDue),
            1 => Just(Op::ExpireLeases),
        ]
    }

    /// One open stream of a fake agent.
    struct Stream {
        agent_id: String,
        connection: u64,
        tx: AgentSender,
        rx: UnboundedReceiver<Result<pb::ControllerMessage, tonic::Status>>,
    }

    struct World {
        _dir: tempfile::TempDir,
        store: Store,
        clock: Clock,
        engine: Arc<Engine>,
        rounds: Rounds,
        results: tokio::sync::mpsc::UnboundedSender<ResultMessage>,
        slots: Vec<Option<Stream>>,
        /// (run id, attempt) of every assignment seen.
        assigned: Vec<(String, u32)>,
        /// Runs seen terminal, with their state.
        terminal: BTreeMap<String, RunState>,
    }

    fn settings() -> EngineSettings {
        EngineSettings {
            heartbeat_interval: Duration::from_secs(1),
            lease_timeout: Duration::from_secs(5),
            idempotency_window: Duration::from_secs(3600),
            payload_memory_bytes: worker_controller::engine::DEFAULT_PAYLOAD_MEMORY_BYTES,
        }
    }

    impl World {
        async fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&format!("sqlite://{}", dir.path().join("worker.db").display()))
                .await
                .unwrap();
            let clock = Clock::manual(1_800_000_000_000);
            let engine = Engine::recover_with_clock(store.clone(), load(JOBS).unwrap(), settings(), clock.clone())
                .await
                .unwrap();
            let (results, rounds) = engine.rounds().unwrap();
            World {
                _dir: dir,
                store,
                clock,
                engine,
                rounds,
                results,
                slots: (0..3).map(|_| None).collect(),
                assigned: Vec::new(),
                terminal: BTreeMap::new(),
            }
        }

        fn resolve(&self, r: &RunRef) -> (String, u32) {
            match r {
                RunRef::Assigned { index, attempt_delta } if !self.assigned.is_empty() => {
                    let (id, attempt) = &self.assigned[index % self.assigned.len()];
                    (id.clone(), attempt.saturating_add_signed(i32::from(*attempt_delta)))
                }
                RunRef::Assigned { .. } => ("no-run-yet".into(), 1),
                RunRef::Made(id, attempt) => (id.clone(), *attempt),
            }
        }

        fn in_flight(&self, refs: &[RunRef]) -> Vec<pb::InFlight> {
            refs.iter()
                .map(|r| {
                    let (run_id, attempt) = self.resolve(r);
                    pb::InFlight { run_id, attempt }
                })
                .collect()
        }

        fn hello(&self, id: usize, capacity: u32, executors: &[&str], in_flight: &[RunRef]) -> pb::Hello {
            pb::Hello {
                handlers: Default::default(),
                agent_id: AGENT_IDS[id].to_string(),
                name: format!("agent-{id}"),
                host: "fuzz".into(),
                labels: Default::default(),
                executors: executors.iter().map(|e| e.to_string()).collect(),
                capacity,
                version: "fuzz".into(),
                in_flight: self.in_flight(in_flight),
            }
        }

        /// What `AgentApi::connect` does with a message on an open stream.
        async fn deliver(&mut self, slot: usize, msg: &Msg) {
            let Some(stream) = &self.slots[slot] else { return };
            let (agent_id, connection, tx) = (stream.agent_id.clone(), stream.connection, stream.tx.clone());
            match msg {
                Msg::Pull(credits) => self.engine.add_credits(&agent_id, connection, *credits),
                Msg::Heartbeat(refs) => self.engine.renew_leases(&agent_id, &self.in_flight(refs)),
                Msg::Started(r) => self
                    .engine
                    .renew_leases(&agent_id, &self.in_flight(std::slice::from_ref(r))),
                Msg::Finished {
                    run,
                    outcome,
                    exit_code,
                    output,
                    stamp,
                    duration_ms,
                    permanent,
                } => {
                    let (run_id, attempt) = self.resolve(run);
                    let finished = pb::Finished {
                        spans: Default::default(),
                        retry_after_ms: Default::default(),
                        metrics: Default::default(),
                        run_id,
                        attempt,
                        outcome: outcome.to_string(),
                        exit_code: *exit_code,
                        error: "é".repeat(*output % 7),
                        // Multi-byte characters, so that truncation meets char boundaries.
                        output_tail: "aé\u{1b}[2J".repeat(*output / 4 + 1),
                        started_at: stamp.to_string(),
                        finished_at: stamp.to_string(),
                        duration_ms: *duration_ms,
                        permanent: *permanent,
                        started_at_unix_micros: *duration_ms as i64,
                    };
                    let _ = self.results.send(ResultMessage {
                        agent_id,
                        finished,
                        reply: tx,
                    });
                }
                Msg::Hello { .. } => {
                    // "hello: sent twice on one stream": the stream ends.
                    self.disconnect(slot).await;
                }
            }
        }

        async fn disconnect(&mut self, slot: usize) {
            if let Some(stream) = self.slots[slot].take() {
                self.engine
                    .agent_disconnected(&stream.agent_id, stream.connection)
                    .await;
            }
        }

        async fn apply(&mut self, op: &Op) {
            match op {
                Op::Connect { slot, first } => {
                    self.disconnect(*slot).await;
                    if let Msg::Hello {
                        id,
                        capacity,
                        executors,
                        in_flight,
                    } = first
                    {
                        let hello = self.hello(*id, *capacity, executors, in_flight);
                        let (tx, rx) = unbounded_channel();
                        if let Ok(connection) = self.engine.register_agent(&hello, tx.clone()).await {
                            self.slots[*slot] = Some(Stream {
                                agent_id: hello.agent_id,
                                connection,
                                tx,
                                rx,
                            });
                        }
                    }
                    // Any other first message: the stream is refused, nothing happens.
                }
                Op::Send { slot, msg } => self.deliver(*slot, msg).await,
                Op::Disconnect { slot } => self.disconnect(*slot).await,
                Op::Enqueue(job) => {
                    let request = EnqueueRequest {
                        job: JOB_NAMES[*job].to_string(),
                        payload: String::new(),
                        priority: String::new(),
                        trigger: String::new(),
                        depends_on: Vec::new(),
                        idempotency_key: String::new(),
                        delay_ms: 0,
                        not_before: String::new(),
                        reference: String::new(),
                    };
                    // The answer comes with the next round; nobody waits for it.
                    let _ = self.engine.enqueue_in_round(request);
                }
                Op::Round => {
                    self.engine.run_round(&mut self.rounds).await;
                }
                Op::Advance(ms) => self.clock.advance(*ms),
                Op::ReleaseDue => {
                    let _ = self.engine.release_due().await;
                }
                Op::ExpireLeases => {
                    let _ = self.engine.expire_leases().await;
                }
            }
            // Read what the agents were sent: assignments become names for later messages.
            for stream in self.slots.iter_mut().flatten() {
                while let Ok(message) = stream.rx.try_recv() {
                    if let Ok(pb::ControllerMessage {
                        msg: Some(pb::controller_message::Msg::Assignment(a)),
                    }) = message
                    {
                        self.assigned.push((a.run_id, a.attempt));
                    }
                }
            }
        }

        /// The engine's memory agrees with the store and with itself.
        async fn check(&mut self) -> Result<(), String> {
            if let Some(reason) = self.engine.failure() {
                return Err(format!("the engine stopped: {reason}"));
            }
            let snapshot = self.engine.snapshot().await;
            for (id, run) in &snapshot.runs {
                let row = self
                    .store
                    .run(id)
                    .await
                    .map_err(|e| format!("reading {id}: {e}"))?
                    .ok_or_else(|| format!("live run {id} is not in the store"))?;
                if row.state != run.state {
                    return Err(format!("{id}: memory says {:?}, the store {:?}", run.state, row.state));
                }
                if run.attempt > run.max_attempts {
                    return Err(format!("{id}: attempt {} of {}", run.attempt, run.max_attempts));
                }
                if run.state == RunState::Running {
                    let agent = run.agent.as_ref().ok_or_else(|| format!("{id} runs on no agent"))?;
                    let held = snapshot
                        .agents
                        .get(agent)
                        .is_some_and(|a| a.running.contains(&(id.clone(), run.attempt)));
                    if !held {
                        return Err(format!("{id} runs on {agent:?}, which does not hold it"));
                    }
                }
            }
            for (agent, a) in &snapshot.agents {
                for (id, attempt) in &a.running {
                    let ok = snapshot.runs.get(id).is_some_and(|r| {
                        r.state == RunState::Running
                            && r.attempt == *attempt
                            && r.agent.as_deref() == Some(agent.as_str())
                    });
                    if !ok {
                        return Err(format!(
                            "agent {agent:?} holds {id}#{attempt}, which is not its running attempt"
                        ));
                    }
                }
            }
            for (id, _) in self.assigned.clone() {
                if let Some(row) = self.store.run(&id).await.map_err(|e| e.to_string())? {
                    let terminal = matches!(row.state, RunState::Succeeded | RunState::Dead | RunState::Cancelled);
                    if let Some(before) = self.terminal.get(&id) {
                        if *before != row.state {
                            return Err(format!("{id} was {before:?}, now {:?}", row.state));
                        }
                    } else if terminal {
                        if snapshot.runs.contains_key(&id) {
                            return Err(format!("terminal run {id} is still live in memory"));
                        }
                        self.terminal.insert(id, row.state);
                    }
                }
            }
            Ok(())
        }

        /// A restart from the same store recovers the same live runs.
        async fn check_recovery(&self) -> Result<(), String> {
            let before = self.engine.snapshot().await;
            let again =
                Engine::recover_with_clock(self.store.clone(), load(JOBS).unwrap(), settings(), self.clock.clone())
                    .await
                    .map_err(|e| format!("recovery failed: {e}"))?;
            let after = again.snapshot().await;
            let states = |s: &worker_controller::engine::EngineSnapshot| {
                s.runs
                    .iter()
                    .map(|(id, r)| (id.clone(), r.state))
                    .collect::<BTreeMap<_, _>>()
            };
            if states(&before) != states(&after) {
                return Err(format!(
                    "recovered live runs differ:\nbefore {:?}\nafter  {:?}",
                    states(&before),
                    states(&after)
                ));
            }
            Ok(())
        }
    }

    fn run(ops: &[Op]) -> Result<(), TestCaseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut world = World::new().await;
            for (i, op) in ops.iter().enumerate() {
                world.apply(op).await;
                world
                    .check()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("after step {i} ({op:?}): {e}")))?;
            }
            // Settle what is pending, then restart.
            world.apply(&Op::Round).await;
            world.check().await.map_err(TestCaseError::fail)?;
            world.check_recovery().await.map_err(TestCaseError::fail)
        })
    }

    proptest! {
        #![proptest_config(config(24))]

        #[test]
        fn random_agent_messages(ops in proptest::collection::vec(op(), 1..60)) {
            run(&ops)?;
        }
    }
}
