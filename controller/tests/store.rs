//! The store against real databases: every test below runs once on a fresh
//! SQLite file (`sqlite::NAME`) and once on a fresh PostgreSQL database
//! (`postgres::NAME`).
//!
//! PostgreSQL tests connect to `WORKER_TEST_PG_URL` (a server URL such as
//! `postgres://postgres@127.0.0.1:5432`, default that one), create their own
//! database `worker_test_<ulid>` and drop it at the end, so they run in parallel
//! and repeatedly. `WORKER_TEST_PG=off` skips them (they print that they did).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use sqlx::Connection;
use worker_controller::error::ErrorCode;
use worker_controller::model::{Outcome, Priority, RunState, Trigger};
use worker_controller::store::{AttemptEnd, AttemptStart, InsertPlan, NewRun, StateChange, Store};

// ---------------------------------------------------------------------------
// Harness

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test.
#[derive(Clone)]
struct TestDb {
    kind: Kind,
    url: String,
}

impl TestDb {
    async fn open(&self) -> Store {
        Store::open(&self.url).await.unwrap()
    }

    /// Versions recorded in `schema_migrations`, read behind the store's back.
    async fn migration_versions(&self) -> Vec<i64> {
        let sql = "SELECT version FROM schema_migrations ORDER BY version";
        match self.kind {
            Kind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }
}

async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("worker.db").display());
    test(TestDb {
        kind: Kind::Sqlite,
        url,
    })
    .await;
}

/// URL of database `database` on the test server (`WORKER_TEST_PG_URL`, whose
/// own database path, if any, is replaced; its query options are kept).
fn pg_url(database: &str) -> String {
    let base = std::env::var("WORKER_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let (base, query) = base.split_once('?').unwrap_or((base.as_str(), ""));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let server = &base[..server_end];
    if query.is_empty() {
        format!("{server}/{database}")
    } else {
        format!("{server}/{database}?{query}")
    }
}

async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    if std::env::var("WORKER_TEST_PG").is_ok_and(|v| v == "off") {
        eprintln!("skipped: WORKER_TEST_PG=off");
        return;
    }
    let admin_url = pg_url("postgres");
    let name = format!("worker_test_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL test server {admin_url} unreachable ({e}); set WORKER_TEST_PG_URL, or WORKER_TEST_PG=off to skip"
        )
    });
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let result = AssertUnwindSafe(test(TestDb {
        kind: Kind::Postgres,
        url: pg_url(&name),
    }))
    .catch_unwind()
    .await;
    // FORCE: pools a failed test left open must not keep the database alive.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.ok();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Generates `sqlite::NAME` and `postgres::NAME` for each test function `NAME(TestDb)`.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::with_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::with_postgres(super::$name).await;
                }
            )*
        }
    };
}

backend_tests!(
    a_fire_instant_creates_one_run_and_moves_the_cursor,
    concurrent_inserts_of_one_fire_create_exactly_one_run,
    transitions_attempts_and_stats_are_recorded,
    purge_deletes_only_dead_runs_with_their_history,
    reopening_keeps_everything_and_migrations_run_once,
    concurrent_opens_apply_migrations_once,
    dependencies_keys_and_definitions_are_stored,
    runs_are_listed_newest_first_and_filtered,
    cursors_never_move_back_and_count_missed_fires,
    active_runs_stream_in_order_across_pages,
    a_commit_round_inserts_and_changes_together,
);

fn new_run(id: &str, scheduled_for: Option<i64>) -> NewRun {
    NewRun {
        id: id.into(),
        job: "job.a".into(),
        state: RunState::Queued,
        priority: Priority::High,
        payload: "{\"n\":1}".into(),
        trigger: if scheduled_for.is_some() {
            Trigger::Schedule
        } else {
            Trigger::Api
        },
        scheduled_for,
        created_at: 1_000,
        not_before: None,
        ready_at: Some(1_000),
        max_attempts: 3,
        reason: None,
        workflow_id: None,
        idempotency_key: None,
    }
}

async fn insert(store: &Store, run: NewRun) -> bool {
    store
        .insert_runs(&InsertPlan {
            runs: vec![run],
            dependencies: Vec::new(),
        })
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------
// Tests, each run against both backends

async fn a_fire_instant_creates_one_run_and_moves_the_cursor(db: TestDb) {
    let store = db.open().await;
    assert!(insert(&store, new_run("r1", Some(60_000))).await);
    assert!(
        !insert(&store, new_run("r2", Some(60_000))).await,
        "second run for the same instant"
    );
    assert!(store.run("r2").await.unwrap().is_none());
    assert!(store.transitions("r2").await.unwrap().is_empty());
    let cursors = store.cursors().await.unwrap();
    assert_eq!(cursors.len(), 1);
    assert_eq!(cursors[0].last_fired, 60_000);
    store.close().await;
}

/// The never-fire-twice guarantee under contention: several writers (two
/// handles of one store and a second store, as a second controller would be)
/// insert the same (job, instant) at once; exactly one wins, the others get
/// `Ok(false)`, not an error.
async fn concurrent_inserts_of_one_fire_create_exactly_one_run(db: TestDb) {
    const ROUNDS: i64 = 20;
    const WRITERS: usize = 3;
    let first = db.open().await;
    let second = db.open().await;
    for round in 1..=ROUNDS {
        let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = if writer == 1 { second.clone() } else { first.clone() };
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                let mut run = new_run(&format!("r{round}-{writer}"), Some(round * 60_000));
                run.created_at = round * 60_000;
                barrier.wait().await;
                store
                    .insert_runs(&InsertPlan {
                        runs: vec![run],
                        dependencies: Vec::new(),
                    })
                    .await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            if task.await.unwrap().expect("a losing insert is Ok(false), not an error") {
                wins += 1;
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer creates the run");
    }
    let runs = first.runs(Some("job.a"), None, 1_000).await.unwrap();
    assert_eq!(runs.len(), ROUNDS as usize);
    let cursors = second.cursors().await.unwrap();
    assert_eq!(cursors.len(), 1);
    assert_eq!(cursors[0].last_fired, ROUNDS * 60_000);
    first.close().await;
    second.close().await;
}

async fn transitions_attempts_and_stats_are_recorded(db: TestDb) {
    let store = db.open().await;
    insert(&store, new_run("r1", None)).await;
    let mut running = StateChange::new("r1", RunState::Queued, RunState::Running, 2_000, None);
    running.attempt = Some(1);
    let start = AttemptStart {
        run_id: "r1".into(),
        attempt: 1,
        agent_id: "a1".into(),
        agent_name: "agent-one".into(),
        started_at: 2_000,
    };
    store.apply(&[running], &[start], &[]).await.unwrap();
    let end = AttemptEnd {
        run_id: "r1".into(),
        attempt: 1,
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        error: None,
        output: Some("done".into()),
        started_at: Some(2_010),
        finished_at: 2_510,
        duration_ms: Some(500),
    };
    store
        .apply(
            &[StateChange::new(
                "r1",
                RunState::Running,
                RunState::Succeeded,
                2_510,
                None,
            )],
            &[],
            &[end],
        )
        .await
        .unwrap();

    let run = store.run("r1").await.unwrap().unwrap();
    assert_eq!(
        (run.state, run.attempt, run.finished_at, run.cancel_requested),
        (RunState::Succeeded, 1, Some(2_510), false)
    );
    let attempts = store.attempts(&["r1".to_string()]).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0].outcome,
            attempts[0].started_at,
            attempts[0].output.as_deref(),
            attempts[0].exit_code
        ),
        (Some(Outcome::Succeeded), 2_010, Some("done"), Some(0))
    );
    let transitions: Vec<_> = store
        .transitions("r1")
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.from, t.to, t.at))
        .collect();
    assert_eq!(
        transitions,
        vec![
            (None, RunState::Queued, 1_000),
            (Some(RunState::Queued), RunState::Running, 2_000),
            (Some(RunState::Running), RunState::Succeeded, 2_510)
        ]
    );
    assert_eq!(store.attempt_outcome("r1", 1).await.unwrap(), Some(Outcome::Succeeded));
    assert_eq!(store.attempt_outcome("r1", 2).await.unwrap(), None);
    let stats = store.job_stats("job.a").await.unwrap();
    assert_eq!((stats.runs_total, stats.succeeded, stats.active), (1, 1, 0));
    assert_eq!(stats.recent_durations_ms, vec![500]);
    assert_eq!(stats.last_run.map(|r| r.id).as_deref(), Some("r1"));
    assert!(store.active_runs().await.unwrap().is_empty());
    store.close().await;
}

async fn purge_deletes_only_dead_runs_with_their_history(db: TestDb) {
    let store = db.open().await;
    insert(&store, new_run("dead1", None)).await;
    insert(&store, new_run("live1", None)).await;
    store
        .apply(
            &[StateChange::new(
                "dead1",
                RunState::Queued,
                RunState::Dead,
                5,
                Some("x".into()),
            )],
            &[],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(store.dead_run_ids().await.unwrap(), vec!["dead1".to_string()]);
    let purged = store
        .purge_dead(&["dead1".to_string(), "live1".to_string()])
        .await
        .unwrap();
    assert_eq!(purged, vec!["dead1".to_string()]);
    assert!(store.run("dead1").await.unwrap().is_none());
    assert!(store.transitions("dead1").await.unwrap().is_empty());
    assert!(store.run("live1").await.unwrap().is_some());
    store.close().await;
}

async fn reopening_keeps_everything_and_migrations_run_once(db: TestDb) {
    let store = db.open().await;
    insert(&store, new_run("r1", None)).await;
    store.close().await;
    let store = db.open().await;
    let active = store.active_runs().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].payload, "{\"n\":1}");
    store.close().await;
    assert_eq!(db.migration_versions().await, vec![1, 2]);
}

/// Two controllers starting at once on an empty database: both open, and the
/// migrations are applied once.
async fn concurrent_opens_apply_migrations_once(db: TestDb) {
    let (a, b) = tokio::join!(Store::open(&db.url), Store::open(&db.url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(insert(&a, new_run("r1", Some(60_000))).await);
    assert!(!insert(&b, new_run("r2", Some(60_000))).await);
    a.close().await;
    b.close().await;
    assert_eq!(db.migration_versions().await, vec![1, 2]);
}

async fn dependencies_keys_and_definitions_are_stored(db: TestDb) {
    let store = db.open().await;
    let mut down = new_run("down", None);
    down.state = RunState::Blocked;
    down.idempotency_key = Some("k1".into());
    down.workflow_id = Some("wf1".into());
    let mut up = new_run("up", None);
    up.workflow_id = Some("wf1".into());
    let mut zup = new_run("zup", None);
    zup.workflow_id = Some("wf1".into());
    zup.created_at = 500;
    let plan = InsertPlan {
        runs: vec![up, zup, down],
        // Insertion order, not name order.
        dependencies: vec![("down".into(), "zup".into()), ("down".into(), "up".into())],
    };
    assert!(store.insert_runs(&plan).await.unwrap());
    assert_eq!(
        store
            .dependencies(&["down".to_string(), "up".to_string()])
            .await
            .unwrap(),
        vec![
            ("down".to_string(), "zup".to_string()),
            ("down".to_string(), "up".to_string())
        ]
    );
    assert!(store.dependencies(&[]).await.unwrap().is_empty());
    let workflow: Vec<_> = store
        .workflow_runs("wf1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(workflow, ["zup", "down", "up"]);
    assert_eq!(
        store.idempotency_key("k1").await.unwrap().map(|(id, _)| id),
        Some("down".to_string())
    );
    assert_eq!(store.idempotency_key("k2").await.unwrap(), None);
    assert_eq!(
        store.run("down").await.unwrap().unwrap().idempotency_key.as_deref(),
        Some("k1")
    );

    store
        .save_jobs(
            &[
                ("b".into(), "shell: y\n".into(), "api".into()),
                ("a".into(), "shell: x\n".into(), "config".into()),
            ],
            &[],
            Some(("scheduler.yaml", "text")),
        )
        .await
        .unwrap();
    assert_eq!(
        store.job_specs().await.unwrap(),
        vec![
            ("a".to_string(), "shell: x\n".to_string(), "config".to_string()),
            ("b".to_string(), "shell: y\n".to_string(), "api".to_string())
        ]
    );
    assert_eq!(
        store.applied_config("scheduler.yaml").await.unwrap().as_deref(),
        Some("text")
    );
    store
        .save_jobs(&[], &["a".into()], Some(("scheduler.yaml", "text 2")))
        .await
        .unwrap();
    assert_eq!(store.job_specs().await.unwrap().len(), 1);
    assert_eq!(
        store.applied_config("scheduler.yaml").await.unwrap().as_deref(),
        Some("text 2")
    );
    assert_eq!(store.applied_config("other.yaml").await.unwrap(), None);

    store.set_paused("a", true).await.unwrap();
    store.set_paused("a", true).await.unwrap();
    assert_eq!(store.paused_schedules().await.unwrap(), vec!["a".to_string()]);
    store.set_paused("a", false).await.unwrap();
    assert!(store.paused_schedules().await.unwrap().is_empty());
    store.close().await;
}

async fn runs_are_listed_newest_first_and_filtered(db: TestDb) {
    let store = db.open().await;
    for (i, id) in ["r1", "r2", "r3"].into_iter().enumerate() {
        let mut run = new_run(id, None);
        run.created_at = 1_000 + i as i64;
        insert(&store, run).await;
    }
    let mut other = new_run("o1", None);
    other.job = "job.b".into();
    insert(&store, other).await;
    store
        .apply(
            &[StateChange::new("r2", RunState::Queued, RunState::Cancelled, 9, None)],
            &[],
            &[],
        )
        .await
        .unwrap();
    let ids = |runs: Vec<worker_controller::store::RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.runs(Some("job.a"), None, 10).await.unwrap()),
        ["r3", "r2", "r1"]
    );
    assert_eq!(ids(store.runs(Some("job.a"), None, 2).await.unwrap()), ["r3", "r2"]);
    assert_eq!(
        ids(store.runs(None, Some(RunState::Cancelled), 10).await.unwrap()),
        ["r2"]
    );
    assert_eq!(store.runs(None, None, 10).await.unwrap().len(), 4);
    assert_eq!(
        ids(store.active_runs().await.unwrap()),
        ["o1", "r1", "r3"],
        "oldest first, ties by id"
    );
    let stats = store.job_stats("job.a").await.unwrap();
    assert_eq!((stats.runs_total, stats.cancelled, stats.active), (3, 1, 2));
    store.close().await;
}

async fn cursors_never_move_back_and_count_missed_fires(db: TestDb) {
    let store = db.open().await;
    store.advance_cursor("job.a", 120_000, 2, 0).await.unwrap();
    store.advance_cursor("job.a", 60_000, 1, 3).await.unwrap();
    let cursors = store.cursors().await.unwrap();
    assert_eq!(cursors.len(), 1);
    assert_eq!(
        (cursors[0].last_fired, cursors[0].missed, cursors[0].skipped),
        (120_000, 3, 3)
    );
    // A scheduled insert for an older instant does not move it back either.
    assert!(insert(&store, new_run("old", Some(30_000))).await);
    assert_eq!(store.cursors().await.unwrap()[0].last_fired, 120_000);
    store.close().await;
}

// ---------------------------------------------------------------------------
// Opening errors

#[tokio::test]
async fn an_unknown_scheme_is_an_invalid_db_url() {
    let err = Store::open("mysql://root:pw@localhost/worker").await.err().unwrap();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert!(err.message.starts_with("db: "), "{}", err.message);
    assert!(
        err.message.contains("mysql://root:***@localhost/worker"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("pw"), "{}", err.message);
}

#[tokio::test]
async fn an_unreachable_postgres_server_names_the_url_without_password() {
    // Port 1 on loopback: connection refused at once.
    let err = Store::open("postgres://worker:hunter2@127.0.0.1:1/worker")
        .await
        .err()
        .unwrap();
    assert!(
        err.message
            .contains("cannot connect to PostgreSQL at postgres://worker:***@127.0.0.1:1/worker"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("hunter2"), "{}", err.message);
    assert!(err.message.contains("refused"), "the cause: {}", err.message);
    assert_eq!(err.code, ErrorCode::Unavailable, "{}", err.message);
}

#[tokio::test]
async fn a_missing_postgres_database_is_named_with_the_cause() {
    if std::env::var("WORKER_TEST_PG").is_ok_and(|v| v == "off") {
        return;
    }
    let url = pg_url("worker_test_does_not_exist");
    let err = Store::open(&url).await.err().unwrap();
    assert!(err.message.contains(&url), "{}", err.message);
    assert!(err.message.contains("does not exist"), "{}", err.message);
}

async fn active_runs_stream_in_order_across_pages(db: TestDb) {
    // More runs than one recovery page (10,000 on SQLite), with ties on
    // created_at, some terminal runs in between, and payloads that need quoting.
    let store = db.open().await;
    let mut runs = Vec::new();
    for i in 0..23_456u32 {
        let mut run = new_run(&format!("r{:06}", 30_000 - i), None);
        run.created_at = 1_000 + i64::from(i / 7); // seven runs per millisecond
        run.payload = format!("{{\"n\":{i},\"s\":\"quote \\\" and \\\\ é\"}}");
        runs.push(run);
    }
    store
        .insert_runs(&InsertPlan {
            runs: runs.clone(),
            dependencies: Vec::new(),
        })
        .await
        .unwrap();
    let ended: Vec<StateChange> = runs
        .iter()
        .step_by(5)
        .map(|r| StateChange::new(&r.id, RunState::Queued, RunState::Cancelled, 9, None))
        .collect();
    store.apply(&ended, &[], &[]).await.unwrap();
    let mut expected: Vec<(i64, String, String)> = runs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, r)| (r.created_at, r.id.clone(), r.payload.clone()))
        .collect();
    expected.sort();
    let mut seen = Vec::new();
    store
        .for_each_active_run(&mut |run| {
            seen.push((run.created_at, run.id, run.payload));
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(seen.len(), expected.len());
    assert!(seen == expected, "oldest first, ties by id, payloads intact");
}

async fn a_commit_round_inserts_and_changes_together(db: TestDb) {
    let store = db.open().await;
    assert!(insert(&store, new_run("old", None)).await);
    let fresh = new_run("fresh", None);
    let mut start = StateChange::new("fresh", RunState::Queued, RunState::Running, 2_000, None);
    start.attempt = Some(1);
    let finish = StateChange::new("old", RunState::Queued, RunState::Cancelled, 2_000, Some("gone".into()));
    store
        .commit(
            &InsertPlan {
                runs: vec![fresh],
                dependencies: Vec::new(),
            },
            &[start, finish],
            &[AttemptStart {
                run_id: "fresh".into(),
                attempt: 1,
                agent_id: "agent-1".into(),
                agent_name: "a1".into(),
                started_at: 2_000,
            }],
            &[],
        )
        .await
        .unwrap();
    let fresh = store.run("fresh").await.unwrap().expect("inserted");
    assert_eq!((fresh.state, fresh.attempt), (RunState::Running, 1));
    let states: Vec<_> = store
        .transitions("fresh")
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        states,
        [(None, RunState::Queued), (Some(RunState::Queued), RunState::Running)]
    );
    assert_eq!(store.attempts(&["fresh".into()]).await.unwrap().len(), 1);
    assert_eq!(store.run("old").await.unwrap().unwrap().state, RunState::Cancelled);

    // A round whose new run collides with an existing fire keeps nothing.
    assert!(insert(&store, new_run("fire", Some(5_000))).await);
    let err = store
        .commit(
            &InsertPlan {
                runs: vec![new_run("fresh2", None), new_run("fire2", Some(5_000))],
                dependencies: Vec::new(),
            },
            &[StateChange::new(
                "fresh",
                RunState::Running,
                RunState::Succeeded,
                3_000,
                None,
            )],
            &[],
            &[],
        )
        .await;
    assert!(err.is_err());
    assert!(store.run("fresh2").await.unwrap().is_none());
    assert_eq!(store.run("fresh").await.unwrap().unwrap().state, RunState::Running);
}
