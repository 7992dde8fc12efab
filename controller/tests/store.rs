//! The store against real databases: every test below runs once on a fresh
//! SQLite file (`sqlite::NAME`) and once on a fresh PostgreSQL database
//! (`postgres::NAME`).
//!
//! PostgreSQL tests connect to `WORKER_TEST_PG_URL` (a server URL such as
//! `postgres://postgres@127.0.0.1:5432`, default that one), create their own
//! database `worker_test_<ulid>` and drop it at the end, so they run in parallel
//! and repeatedly. Where no server answers, or with `WORKER_TEST_PG=off`, each
//! PostgreSQL test is skipped with a `SKIPPED` notice, and fails under CI
//! (`worker_tests::skip`).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use sqlx::Connection;
use worker_controller::alerting::{AlertKind, AlertStatus, Event};
use worker_controller::error::ErrorCode;
use worker_controller::model::{Outcome, Priority, RunState, Trigger};
use worker_controller::store::{
    AlertQuery, AlertRecord, AttemptEnd, AttemptStart, EventFilter, EventKind, EventRecord, InsertPlan, MetricRecord,
    NewRun, PruneCounts, PruneRule, SpanRecord, StateChange, Store, WriteError,
};

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

    /// Every migration version of this backend, in order (PostgreSQL has one
    /// more: the relayed calls of high availability, which SQLite lacks).
    fn all_migrations(&self) -> Vec<i64> {
        match self.kind {
            Kind::Sqlite => (1..=11).collect(),
            Kind::Postgres => (1..=12).collect(),
        }
    }

    /// Runs `sql` behind the store's back (to corrupt a row).
    async fn execute(&self, sql: &'static str) {
        match self.kind {
            Kind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
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

/// A connection to the test server's `postgres` database, or `None` after a
/// skip notice when the PostgreSQL half is switched off or no server answers
/// (under CI both fail the test instead).
async fn postgres_admin() -> Option<sqlx::PgConnection> {
    if std::env::var("WORKER_TEST_PG").is_ok_and(|v| v == "off") {
        worker_tests::skip::skip_or_fail("the PostgreSQL store tests are switched off (WORKER_TEST_PG=off)");
        return None;
    }
    let admin_url = pg_url("postgres");
    match sqlx::PgConnection::connect(&admin_url).await {
        Ok(admin) => Some(admin),
        Err(e) => {
            worker_tests::skip::skip_or_fail(format_args!(
                "no PostgreSQL test server at {admin_url} ({e}); start one there, or name another with \
                 WORKER_TEST_PG_URL=postgres://USER@HOST:PORT"
            ));
            None
        }
    }
}

async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(mut admin) = postgres_admin().await else {
        return;
    };
    let name = format!("worker_test_{}", ulid::Ulid::new().to_string().to_lowercase());
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
    reported_metrics_and_spans_are_stored_summed_per_day_and_pruned,
    purge_deletes_only_dead_runs_with_their_history,
    reopening_keeps_everything_and_migrations_run_once,
    concurrent_opens_apply_migrations_once,
    dependencies_keys_and_definitions_are_stored,
    runs_are_listed_newest_first_and_filtered,
    cursors_never_move_back_and_count_missed_fires,
    active_runs_stream_in_order_across_pages,
    a_commit_round_inserts_and_changes_together,
    alert_specs_are_replaced_as_a_whole,
    alert_history_is_recorded_in_bulk_and_listed_newest_first,
    alert_history_is_pruned_by_age,
    a_corrupt_alert_history_row_is_an_internal_error,
    a_stale_change_is_refused_and_the_round_keeps_nothing,
    an_attempt_ends_once,
    a_write_is_read_back_by_its_first_row,
    reads_by_id_take_more_ids_than_one_statement_may_bind,
    fire_failures_are_recorded_per_job,
    payloads_are_read_by_id_and_big_ones_left_out_of_recovery,
    tokens_keep_hashes_names_and_revocations,
    events_are_numbered_in_commit_order_with_their_runs,
    events_are_filtered_by_job_and_type,
    concurrent_writers_number_events_without_gaps,
    committed_events_are_published_as_stored,
    prune_by_age_deletes_finished_runs_with_their_history,
    prune_by_count_keeps_the_newest_finished_runs,
    dead_runs_have_their_own_age_limit,
    prune_never_touches_unfinished_runs_or_their_upstreams,
    schedule_events_without_a_run_are_pruned_by_age_and_count,
    finished_runs_are_counted_per_hour,
    digest_rows_aggregate_one_window,
    catalog_packs_are_immutable_and_ratings_one_per_token_and_via,
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

/// Run `run_id` moving from queued to running with attempt 1 on agent `a1`
/// at 2,000 ms: the change and the attempt start of one dispatch.
fn first_attempt(run_id: &str) -> (StateChange, AttemptStart) {
    let mut running = StateChange::new(run_id, RunState::Queued, RunState::Running, 2_000, None);
    running.attempt = Some(1);
    let start = AttemptStart {
        run_id: run_id.into(),
        attempt: 1,
        agent_id: "a1".into(),
        agent_name: "agent-one".into(),
        started_at: 2_000,
    };
    (running, start)
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
    let (running, start) = first_attempt("r1");
    store.apply(&[running], &[start], &[]).await.unwrap();
    let end = AttemptEnd {
        spans: Default::default(),
        metrics: Default::default(),
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

async fn reported_metrics_and_spans_are_stored_summed_per_day_and_pruned(db: TestDb) {
    const DAY: i64 = 86_400_000;
    let store = db.open().await;
    // Three runs of job.a: two on day 10, one on day 11; the second reports nothing.
    let ends = [
        ("m1", 10 * DAY + 5, 0.25, 100_000),
        ("m2", 10 * DAY + 9, 0.0, 0),
        ("m3", 11 * DAY + 1, 0.5, 300_000),
    ];
    for (id, finished_at, cost, fetch_us) in ends {
        insert(&store, new_run(id, None)).await;
        let (running, start) = first_attempt(id);
        store.apply(&[running], &[start], &[]).await.unwrap();
        let reports = fetch_us > 0;
        let end = AttemptEnd {
            run_id: id.into(),
            attempt: 1,
            outcome: Outcome::Succeeded,
            exit_code: None,
            error: None,
            output: None,
            started_at: None,
            finished_at,
            duration_ms: Some(1),
            metrics: if reports {
                vec![
                    MetricRecord {
                        name: "api_cost_usd".into(),
                        value: cost,
                    },
                    MetricRecord {
                        name: "items".into(),
                        value: 2.0,
                    },
                ]
            } else {
                Vec::new()
            },
            spans: if reports {
                vec![
                    SpanRecord {
                        name: "fetch".into(),
                        count: 2,
                        total_us: fetch_us,
                        max_us: fetch_us / 2,
                    },
                    SpanRecord {
                        name: "db.write".into(),
                        count: 1,
                        total_us: 7,
                        max_us: 7,
                    },
                ]
            } else {
                Vec::new()
            },
        };
        let done = StateChange::new(id, RunState::Running, RunState::Succeeded, finished_at, None);
        store.apply(&[done], &[], &[end]).await.unwrap();
    }

    let attempts = store.attempts(&["m1".to_string(), "m2".to_string()]).await.unwrap();
    let m1 = attempts.iter().find(|a| a.run_id == "m1").unwrap();
    assert_eq!(
        m1.metrics,
        vec![
            MetricRecord {
                name: "api_cost_usd".into(),
                value: 0.25
            },
            MetricRecord {
                name: "items".into(),
                value: 2.0
            }
        ]
    );
    assert_eq!(
        m1.spans
            .iter()
            .map(|s| (s.name.as_str(), s.count, s.total_us, s.max_us))
            .collect::<Vec<_>>(),
        vec![("fetch", 2, 100_000, 50_000), ("db.write", 1, 7, 7)],
        "spans slowest first"
    );
    let m2 = attempts.iter().find(|a| a.run_id == "m2").unwrap();
    assert!(m2.metrics.is_empty() && m2.spans.is_empty());

    let days = store.job_days("job.a", 10 * DAY).await.unwrap();
    assert_eq!(
        days.iter().map(|d| (d.day, d.attempts)).collect::<Vec<_>>(),
        vec![(11, 1), (10, 1)]
    );
    assert_eq!(
        days[1].metric_sums,
        vec![("api_cost_usd".to_string(), 0.25), ("items".to_string(), 2.0)]
    );
    assert_eq!(days[0].spans[0], ("fetch".to_string(), 1, 300_000, 300_000));
    assert!(
        store.job_days("job.a", 11 * DAY).await.unwrap().len() == 1,
        "days before `since` are left out"
    );
    assert!(store.job_days("job.b", 0).await.unwrap().is_empty());
    let mut sums = store.metric_sums_since(11 * DAY).await.unwrap();
    sums.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        sums,
        vec![
            ("job.a".to_string(), "api_cost_usd".to_string(), 0.5),
            ("job.a".to_string(), "items".to_string(), 2.0)
        ]
    );

    // The rows go with their run.
    let age = PruneRule {
        job: "job.a".into(),
        cutoff: Some(12 * DAY),
        dead_cutoff: None,
        keep: None,
    };
    while !store.prune_runs(&age, 100).await.unwrap().ids.is_empty() {}
    assert!(store.job_days("job.a", 0).await.unwrap().is_empty());
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
    // A run that is not dead refuses the whole purge.
    let err = store
        .purge_dead(&["dead1".to_string(), "live1".to_string()], &[])
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Conflict(_)), "{err:?}");
    assert!(
        err.to_string().contains("run live1 is not in the dead-letter queue"),
        "{err}"
    );
    assert!(store.run("dead1").await.unwrap().is_some(), "nothing was purged");
    // The dead run goes, and the run blocked behind it is cancelled with it.
    let cancel = StateChange::new(
        "live1",
        RunState::Queued,
        RunState::Cancelled,
        6,
        Some("upstream run dead1 was purged".into()),
    );
    store.purge_dead(&["dead1".to_string()], &[cancel]).await.unwrap();
    assert!(store.run("dead1").await.unwrap().is_none());
    assert!(store.transitions("dead1").await.unwrap().is_empty());
    assert_eq!(store.run("live1").await.unwrap().unwrap().state, RunState::Cancelled);
    store.close().await;
}

/// The store applies a change only where its run is still in the change's
/// `from` state: a round with one stale change keeps nothing at all.
async fn a_stale_change_is_refused_and_the_round_keeps_nothing(db: TestDb) {
    let store = db.open().await;
    insert(&store, new_run("queued", None)).await;
    insert(&store, new_run("other", None)).await;
    let transitions_before = store.transitions("other").await.unwrap();
    let mut start = StateChange::new("other", RunState::Queued, RunState::Running, 2_000, None);
    start.attempt = Some(1);
    // "queued" is queued, not running: this change is stale.
    let stale = StateChange::new("queued", RunState::Running, RunState::Succeeded, 2_000, None);
    let err = store
        .commit(
            &InsertPlan {
                runs: vec![new_run("fresh", None)],
                dependencies: Vec::new(),
            },
            &[start, stale],
            &[AttemptStart {
                run_id: "other".into(),
                attempt: 1,
                agent_id: "a".into(),
                agent_name: "a".into(),
                started_at: 2_000,
            }],
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, WriteError::Conflict(_)), "{err:?}");
    assert_eq!(err.error().code, ErrorCode::Internal);
    assert!(
        err.to_string().contains("run queued is queued, not running"),
        "the error names the run and both states: {err}"
    );
    assert!(store.run("fresh").await.unwrap().is_none(), "the new run is not kept");
    let other = store.run("other").await.unwrap().unwrap();
    assert_eq!(
        (other.state, other.attempt),
        (RunState::Queued, 0),
        "the valid change is not kept"
    );
    assert!(store.attempts(&["other".into()]).await.unwrap().is_empty());
    assert_eq!(store.transitions("other").await.unwrap(), transitions_before);
    assert_eq!(store.run("queued").await.unwrap().unwrap().state, RunState::Queued);

    // The same check through `apply`, for a run that does not exist.
    let ghost = StateChange::new("ghost", RunState::Queued, RunState::Running, 1, None);
    let err = store.apply(&[ghost], &[], &[]).await.unwrap_err();
    assert!(matches!(err, WriteError::Conflict(_)), "{err:?}");
    assert!(err.to_string().contains("run ghost does not exist"), "{err}");

    // Two changes of one run in one commit are refused before anything runs.
    let a = StateChange::new("queued", RunState::Queued, RunState::Running, 1, None);
    let b = StateChange::new("queued", RunState::Running, RunState::Succeeded, 1, None);
    let err = store.apply(&[a, b], &[], &[]).await.unwrap_err();
    assert!(err.to_string().contains("run queued is changed twice"), "{err}");
    assert_eq!(store.run("queued").await.unwrap().unwrap().state, RunState::Queued);
    store.close().await;
}

/// An attempt ends once: a second end of it (a result applied twice) is a
/// conflict, and the first end stays as recorded.
async fn an_attempt_ends_once(db: TestDb) {
    let store = db.open().await;
    insert(&store, new_run("r1", None)).await;
    let (running, start) = first_attempt("r1");
    store.apply(&[running], &[start], &[]).await.unwrap();
    let end = |outcome| AttemptEnd {
        spans: Default::default(),
        metrics: Default::default(),
        run_id: "r1".into(),
        attempt: 1,
        outcome,
        exit_code: None,
        error: None,
        output: None,
        started_at: None,
        finished_at: 3_000,
        duration_ms: None,
    };
    let mut retry = StateChange::new("r1", RunState::Running, RunState::Scheduled, 3_000, None);
    retry.not_before = Some(4_000);
    store.apply(&[retry], &[], &[end(Outcome::Failed)]).await.unwrap();
    // A late result of the same attempt, as if it were still running.
    let err = store.apply(&[], &[], &[end(Outcome::Succeeded)]).await.unwrap_err();
    assert!(matches!(err, WriteError::Conflict(_)), "{err:?}");
    assert!(
        err.to_string().contains("attempt 1 of run r1 already ended failed"),
        "{err}"
    );
    assert_eq!(store.attempt_outcome("r1", 1).await.unwrap(), Some(Outcome::Failed));
    assert_eq!(store.run("r1").await.unwrap().unwrap().state, RunState::Scheduled);
    store.close().await;
}

/// `written` reads a write back by its first row: what the engine uses to
/// settle a commit that failed in doubt.
async fn a_write_is_read_back_by_its_first_row(db: TestDb) {
    let store = db.open().await;
    let none = InsertPlan::default();
    let plan = InsertPlan {
        runs: vec![new_run("r1", None)],
        dependencies: Vec::new(),
    };
    assert!(!store.written(&plan, &[], &[], &[]).await.unwrap());
    store.commit(&plan, &[], &[], &[]).await.unwrap();
    assert!(store.written(&plan, &[], &[], &[]).await.unwrap());

    let (running, start) = first_attempt("r1");
    let changes = std::slice::from_ref(&running);
    let starts = std::slice::from_ref(&start);
    assert!(!store.written(&none, changes, starts, &[]).await.unwrap());
    assert!(!store.written(&none, changes, &[], &[]).await.unwrap());
    store.apply(changes, starts, &[]).await.unwrap();
    assert!(store.written(&none, changes, starts, &[]).await.unwrap());
    assert!(store.written(&none, changes, &[], &[]).await.unwrap());

    let end = AttemptEnd {
        spans: Default::default(),
        metrics: Default::default(),
        run_id: "r1".into(),
        attempt: 1,
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        error: None,
        output: None,
        started_at: None,
        finished_at: 3_000,
        duration_ms: Some(1),
    };
    let done = StateChange::new("r1", RunState::Running, RunState::Succeeded, 3_000, None);
    let ends = std::slice::from_ref(&end);
    assert!(!store.written(&none, &[], &[], ends).await.unwrap());
    store.apply(std::slice::from_ref(&done), &[], ends).await.unwrap();
    assert!(store.written(&none, &[], &[], ends).await.unwrap());

    // A change that only updates the reason is read back by its reason.
    insert(&store, new_run("r2", None)).await;
    let note = StateChange::new("r2", RunState::Queued, RunState::Queued, 4_000, Some("note".into()));
    let notes = std::slice::from_ref(&note);
    assert!(!store.written(&none, notes, &[], &[]).await.unwrap());
    store.apply(notes, &[], &[]).await.unwrap();
    assert!(store.written(&none, notes, &[], &[]).await.unwrap());
    store.close().await;
}

/// Tokens: a name (and a hash) is taken once, revocation happens once and
/// keeps the row, and an upsert (the bootstrap token) replaces the role and
/// hash but keeps creation, expiry and revocation.
async fn tokens_keep_hashes_names_and_revocations(db: TestDb) {
    let store = db.open().await;
    assert!(store.tokens().await.unwrap().is_empty());
    let token = |name: &str, hash: &str| worker_controller::store::TokenRecord {
        name: name.into(),
        role: "viewer".into(),
        hash: hash.into(),
        created_at: 1_000,
        expires_at: Some(9_000),
        revoked_at: None,
    };
    assert!(store.insert_token(&token("b", "hash-b")).await.unwrap());
    assert!(store.insert_token(&token("a", "hash-a")).await.unwrap());
    assert!(
        !store.insert_token(&token("a", "hash-other")).await.unwrap(),
        "a name is taken once"
    );
    assert!(
        !store.insert_token(&token("c", "hash-a")).await.unwrap(),
        "a hash is taken once"
    );
    assert!(store.revoke_token("a", 5_000).await.unwrap());
    assert!(!store.revoke_token("a", 6_000).await.unwrap(), "revoked once");
    assert!(!store.revoke_token("nope", 6_000).await.unwrap());
    let tokens = store.tokens().await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        tokens[0],
        worker_controller::store::TokenRecord {
            revoked_at: Some(5_000),
            ..token("a", "hash-a")
        }
    );
    assert_eq!(tokens[1], token("b", "hash-b"));

    let mut bootstrap = token("a", "hash-new");
    bootstrap.role = "admin".into();
    bootstrap.created_at = 7_000;
    bootstrap.expires_at = None;
    store.upsert_token(&bootstrap).await.unwrap();
    store.upsert_token(&token("bootstrap", "hash-boot")).await.unwrap();
    let tokens = store.tokens().await.unwrap();
    assert_eq!(tokens.len(), 3);
    assert_eq!(
        (
            tokens[0].role.as_str(),
            tokens[0].hash.as_str(),
            tokens[0].created_at,
            tokens[0].expires_at,
            tokens[0].revoked_at
        ),
        ("admin", "hash-new", 1_000, Some(9_000), Some(5_000))
    );
    assert_eq!(tokens[2].name, "bootstrap");
    store.close().await;
}

/// Failed schedule fires are recorded per job: failures in a row (reset when
/// the job fires again), the total and the last error.
async fn fire_failures_are_recorded_per_job(db: TestDb) {
    let store = db.open().await;
    assert!(store.fire_failures().await.unwrap().is_empty());
    store
        .record_fire_failure("nightly", 60_000, "upstream job \"a\" is disabled", 61_000)
        .await
        .unwrap();
    store
        .record_fire_failure("nightly", 60_000, "still disabled", 63_000)
        .await
        .unwrap();
    store.record_fire_failure("other", 5, "x", 6).await.unwrap();
    let failures = store.fire_failures().await.unwrap();
    assert_eq!(failures.len(), 2);
    let nightly = &failures[0];
    assert_eq!(
        (
            nightly.job.as_str(),
            nightly.failing,
            nightly.failed_total,
            nightly.fire_at
        ),
        ("nightly", 2, 2, 60_000)
    );
    assert_eq!(
        (nightly.last_error.as_str(), nightly.failed_at),
        ("still disabled", 63_000)
    );
    store.clear_fire_failure("nightly").await.unwrap();
    store
        .record_fire_failure("nightly", 120_000, "again", 121_000)
        .await
        .unwrap();
    let nightly = store.fire_failures().await.unwrap().remove(0);
    assert_eq!((nightly.failing, nightly.failed_total), (1, 3));
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
    assert_eq!(db.migration_versions().await, db.all_migrations());
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
    assert_eq!(db.migration_versions().await, db.all_migrations());
}

/// Recovery reads the dependencies of every blocked run and the attempts of
/// every running run at once: more ids than SQLite binds in one statement
/// (32,766) must work, in run-id order, each id answered once.
async fn reads_by_id_take_more_ids_than_one_statement_may_bind(db: TestDb) {
    let store = db.open().await;
    let mut down = new_run("r20000", None);
    down.state = RunState::Blocked;
    let plan = InsertPlan {
        runs: vec![new_run("r39999", None), down, new_run("r00001", None)],
        dependencies: vec![("r20000".into(), "r39999".into())],
    };
    assert!(store.insert_runs(&plan).await.unwrap());
    let (start, attempt) = first_attempt("r00001");
    store.apply(&[start], &[attempt], &[]).await.unwrap();

    // 40,000 ids, newest first and one of them twice.
    let mut ids: Vec<String> = (0..40_000).rev().map(|i| format!("r{i:05}")).collect();
    ids.push("r00001".into());
    assert_eq!(
        store.dependencies(&ids).await.unwrap(),
        vec![("r20000".to_string(), "r39999".to_string())]
    );
    let attempts = store.attempts(&ids).await.unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.run_id.as_str(), a.attempt))
            .collect::<Vec<_>>(),
        [("r00001", 1)]
    );
    let mut found: Vec<String> = store
        .runs_by_id(&ids)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    found.sort();
    assert_eq!(found, ["r00001", "r20000", "r39999"]);
}

async fn payloads_are_read_by_id_and_big_ones_left_out_of_recovery(db: TestDb) {
    // Payloads of 1 KiB exactly (kept by recovery with a limit of 1,024), one
    // byte more (left out), 1 MiB of multi-byte characters with quotes and
    // JSON escapes; more ids than one statement binds.
    let store = db.open().await;
    let exact = format!("\"{}\"", "a".repeat(1_022));
    let over = format!("\"{}\"", "é".repeat(512)); // 1,026 bytes, 514 characters
    let big = format!("{{\"s\":\"{}\\\" \\\\ \\u0001\"}}", "ü".repeat(512 * 1024));
    let payloads = [
        ("p0", exact.clone()),
        ("p1", over.clone()),
        ("p2", big.clone()),
        ("p3", "{}".to_string()),
    ];
    let mut runs = Vec::new();
    for (i, (id, payload)) in payloads.iter().enumerate() {
        let mut run = new_run(id, None);
        run.created_at = 1_000 + i as i64;
        run.payload = payload.clone();
        runs.push(run);
    }
    store
        .insert_runs(&InsertPlan {
            runs,
            dependencies: Vec::new(),
        })
        .await
        .unwrap();

    let mut ids: Vec<String> = (0..2_000).map(|i| format!("missing{i}")).collect();
    ids.extend(["p2", "p0", "p1", "p3", "p2"].map(String::from));
    let mut read = store.payloads(&ids).await.unwrap();
    read.sort();
    let expected: Vec<(String, String)> = payloads.iter().map(|(id, p)| (id.to_string(), p.clone())).collect();
    assert_eq!(read.len(), 4, "each existing run once");
    assert!(read == expected, "payloads read back exactly");
    assert!(store.payloads(&[]).await.unwrap().is_empty());

    let mut recovered = Vec::new();
    store
        .for_each_active_run(Some(1_024), &mut |run| {
            recovered.push((run.id, run.payload));
            Ok(())
        })
        .await
        .unwrap();
    let expected: Vec<(String, String)> = vec![
        ("p0".into(), exact),
        ("p1".into(), String::new()),
        ("p2".into(), String::new()),
        ("p3".into(), "{}".into()),
    ];
    assert!(
        recovered == expected,
        "payloads over 1,024 bytes are left out: {:?}",
        recovered.iter().map(|(id, p)| (id, p.len())).collect::<Vec<_>>()
    );
    let full = store.active_runs().await.unwrap();
    assert!(
        full.iter().any(|r| r.id == "p2" && r.payload == big),
        "without a limit every payload is read"
    );
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

/// Every stored event, oldest first.
async fn all_events(store: &Store) -> Vec<EventRecord> {
    let head = store.event_head().await.unwrap();
    store
        .events_after(0, head, &EventFilter::default(), 100_000)
        .await
        .unwrap()
}

/// (kind, run, from, to) of an event.
type EventShape<'a> = (EventKind, Option<&'a str>, Option<RunState>, Option<RunState>);

/// The shapes of events, for compact comparisons.
fn event_shapes(events: &[EventRecord]) -> Vec<EventShape<'_>> {
    events
        .iter()
        .map(|e| (e.kind, e.run_id.as_deref(), e.from, e.state))
        .collect()
}

/// Every transition and schedule event gets the next sequence number in the
/// transaction that commits it; a refused write uses none; a run's events go
/// when the run is purged, and numbers are never reused.
async fn events_are_numbered_in_commit_order_with_their_runs(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.event_head().await.unwrap(), 0);
    assert!(insert(&store, new_run("fire1", Some(60_000))).await);
    assert!(insert(&store, new_run("api1", None)).await);
    // A duplicate fire writes nothing, events included.
    assert!(!insert(&store, new_run("fire2", Some(60_000))).await);
    let (running, start) = first_attempt("api1");
    store.apply(&[running], &[start], &[]).await.unwrap();
    // A refused round (stale change) takes no number.
    let stale = StateChange::new("fire1", RunState::Running, RunState::Succeeded, 3_000, None);
    assert!(store.apply(&[stale], &[], &[]).await.is_err());
    let dead = StateChange::new("api1", RunState::Running, RunState::Dead, 4_000, Some("boom".into()));
    store.apply(&[dead], &[], &[]).await.unwrap();
    store.advance_cursor("job.a", 120_000, 2, 1).await.unwrap();
    store.advance_cursor("job.a", 130_000, 0, 0).await.unwrap();
    store.set_paused("job.a", true).await.unwrap();
    store.set_paused("job.a", true).await.unwrap(); // no change, no event
    store.set_paused("job.a", false).await.unwrap();

    let events = all_events(&store).await;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<i64>>(), "gapless, in commit order");
    use EventKind::*;
    use RunState::*;
    assert_eq!(
        event_shapes(&events),
        vec![
            (ScheduleFired, Some("fire1"), None, None),
            (Run, Some("fire1"), None, Some(Queued)),
            (Run, Some("api1"), None, Some(Queued)),
            (Run, Some("api1"), Some(Queued), Some(Running)),
            (Run, Some("api1"), Some(Running), Some(Dead)),
            (ScheduleMissed, None, None, None),
            (ScheduleSkipped, None, None, None),
            (SchedulePaused, None, None, None),
            (ScheduleResumed, None, None, None),
        ]
    );
    assert!(
        events.iter().all(|e| e.job == "job.a"),
        "the job is read from the run: {events:?}"
    );
    assert_eq!((events[3].attempt, events[4].attempt), (1, 1));
    assert_eq!(events[4].reason.as_deref(), Some("boom"));
    assert_eq!((events[5].count, events[6].count), (2, 1));
    // A run's events match its transitions.
    assert_eq!(
        store.transitions("api1").await.unwrap().len(),
        events
            .iter()
            .filter(|e| e.kind == Run && e.run_id.as_deref() == Some("api1"))
            .count()
    );

    // Purging a run deletes its events; the counter keeps going.
    store.purge_dead(&["api1".to_string()], &[]).await.unwrap();
    let events = all_events(&store).await;
    assert!(events.iter().all(|e| e.run_id.as_deref() != Some("api1")), "{events:?}");
    assert_eq!(events.len(), 6);
    assert_eq!(store.event_head().await.unwrap(), 9);
    assert!(insert(&store, new_run("api2", None)).await);
    assert_eq!(
        all_events(&store).await.last().unwrap().seq,
        10,
        "numbers are never reused"
    );
    store.close().await;
    // Reopening keeps the counter.
    let store = db.open().await;
    assert_eq!(store.event_head().await.unwrap(), 10);
    store.close().await;
}

/// Reads filter by job and event type, page by `limit`, and stop at `up_to`.
async fn events_are_filtered_by_job_and_type(db: TestDb) {
    let store = db.open().await;
    for (i, job) in ["a", "b", "a", "c"].iter().enumerate() {
        let mut run = new_run(&format!("r{i}"), None);
        run.job = job.to_string();
        assert!(insert(&store, run).await);
    }
    store.set_paused("a", true).await.unwrap();
    let head = store.event_head().await.unwrap();
    assert_eq!(head, 5);
    let read = |jobs: &[&str], kinds: &[EventKind], after: i64, up_to: i64, limit: u32| {
        let store = store.clone();
        let filter = EventFilter {
            jobs: jobs.iter().map(|j| j.to_string()).collect(),
            kinds: kinds.to_vec(),
        };
        async move {
            store
                .events_after(after, up_to, &filter, limit)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<i64>>()
        }
    };
    assert_eq!(read(&["a"], &[], 0, head, 100).await, vec![1, 3, 5]);
    assert_eq!(read(&["a", "c"], &[EventKind::Run], 0, head, 100).await, vec![1, 3, 4]);
    assert_eq!(read(&[], &[EventKind::SchedulePaused], 0, head, 100).await, vec![5]);
    assert_eq!(read(&[], &[], 1, head, 2).await, vec![2, 3]);
    assert_eq!(read(&[], &[], 0, 3, 100).await, vec![1, 2, 3]);
    assert!(read(&["zzz"], &[], 0, head, 100).await.is_empty());
    store.close().await;
}

/// Two controllers' worth of writers at once: every number is used once,
/// with no gap, and each run's events keep their order.
async fn concurrent_writers_number_events_without_gaps(db: TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let write = |store: Store, prefix: &'static str| async move {
        for i in 0..40 {
            let id = format!("{prefix}{i}");
            assert!(insert(&store, new_run(&id, None)).await);
            let (running, start) = first_attempt(&id);
            store.apply(&[running], &[start], &[]).await.unwrap();
        }
    };
    tokio::join!(write(a.clone(), "a"), write(b.clone(), "b"));
    let events = all_events(&a).await;
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=160).collect::<Vec<i64>>());
    for run in events.iter().filter_map(|e| e.run_id.as_deref()) {
        let states: Vec<Option<RunState>> = events
            .iter()
            .filter(|e| e.run_id.as_deref() == Some(run))
            .map(|e| e.state)
            .collect();
        assert_eq!(states, vec![Some(RunState::Queued), Some(RunState::Running)], "{run}");
    }
    a.close().await;
    b.close().await;
}

/// What the hub publishes after a commit is what the store holds.
async fn committed_events_are_published_as_stored(db: TestDb) {
    let store = db.open().await;
    let mut hub = store.event_hub().subscribe();
    let mut queued = new_run("r1", None);
    queued.state = RunState::Queued;
    let (running, start) = first_attempt("r2");
    store
        .commit(
            &InsertPlan {
                runs: vec![queued, new_run("r2", None)],
                dependencies: Vec::new(),
            },
            &[running],
            &[start],
            &[],
        )
        .await
        .unwrap();
    let committed = hub.recv().await.unwrap();
    assert_eq!(committed.events, all_events(&store).await);
    assert_eq!(committed.events.len(), 3);
    assert_eq!(committed.events[2].state, Some(RunState::Running));
    // A write without events publishes nothing.
    store.set_paused("job.a", false).await.unwrap();
    assert!(hub.try_recv().is_err());
    store.close().await;
}

/// Inserts run `id` of job `job` and moves it to `state` at `finished_at`
/// (a terminal state: with that finish time), through `running` with one
/// attempt so that it has attempts, transitions and events to lose.
async fn finished_run(store: &Store, id: &str, job: &str, state: RunState, finished_at: i64) {
    let mut run = new_run(id, None);
    run.job = job.into();
    run.idempotency_key = Some(format!("key-{id}"));
    assert!(insert(store, run).await);
    let (running, start) = first_attempt(id);
    store.apply(&[running], &[start], &[]).await.unwrap();
    if state != RunState::Running {
        let end = AttemptEnd {
            spans: Default::default(),
            metrics: Default::default(),
            run_id: id.into(),
            attempt: 1,
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            error: None,
            output: None,
            started_at: None,
            finished_at,
            duration_ms: Some(1),
        };
        let change = StateChange::new(id, RunState::Running, state, finished_at, None);
        store.apply(&[change], &[], &[end]).await.unwrap();
    }
}

async fn finished_runs_are_counted_per_hour(db: TestDb) {
    let store = db.open().await;
    const H: i64 = 3_600_000;
    finished_run(&store, "before", "a", RunState::Succeeded, 10 * H - 1).await;
    finished_run(&store, "ok-1", "a", RunState::Succeeded, 10 * H).await;
    finished_run(&store, "ok-2", "b", RunState::Succeeded, 10 * H + 5).await;
    finished_run(&store, "dead-1", "a", RunState::Dead, 10 * H + 9).await;
    finished_run(&store, "gone-1", "a", RunState::Cancelled, 12 * H + 1).await;
    finished_run(&store, "still-running", "a", RunState::Running, 0).await;
    let hours = store.finished_per_hour(10 * H).await.unwrap();
    let shapes: Vec<_> = hours
        .iter()
        .map(|h| (h.hour, h.succeeded, h.dead, h.cancelled))
        .collect();
    assert_eq!(shapes, vec![(10 * H, 2, 1, 0), (12 * H, 0, 0, 1)]);
    assert!(store.finished_per_hour(13 * H).await.unwrap().is_empty());
    assert_eq!(store.count_dead().await.unwrap(), 1);
    // The job list's summaries: in the order asked, a job without runs empty.
    let stats = store
        .job_list_stats(&["b".into(), "none".into(), "a".into()], 2)
        .await
        .unwrap();
    let shapes: Vec<_> = stats
        .iter()
        .map(|s| {
            (
                s.runs_total,
                s.succeeded,
                s.dead,
                s.cancelled,
                s.active,
                s.recent_durations_ms.len(),
            )
        })
        .collect();
    assert_eq!(shapes, vec![(1, 1, 0, 0, 0, 1), (0, 0, 0, 0, 0, 0), (5, 2, 1, 1, 1, 2)]);
    assert_eq!(stats[0].last_run.as_ref().map(|r| r.id.as_str()), Some("ok-2"));
    assert!(stats[1].last_run.is_none());
    let one = store.job_stats("a").await.unwrap();
    assert_eq!(
        stats[2].last_run.as_ref().map(|r| &r.id),
        one.last_run.as_ref().map(|r| &r.id)
    );
    assert_eq!(stats[2].recent_durations_ms, one.recent_durations_ms[..2].to_vec());
    assert_eq!(store.dead_run_ids().await.unwrap(), vec!["dead-1".to_string()]);
    store.close().await;
}

fn rule(job: &str, cutoff: Option<i64>, dead_cutoff: Option<i64>, keep: Option<u64>) -> PruneRule {
    PruneRule {
        job: job.into(),
        cutoff,
        dead_cutoff,
        keep,
    }
}

/// Ids of the runs still stored, sorted.
async fn stored_ids(store: &Store) -> Vec<String> {
    let mut ids: Vec<String> = store
        .runs(None, None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

async fn prune_by_age_deletes_finished_runs_with_their_history(db: TestDb) {
    let store = db.open().await;
    finished_run(&store, "old-ok", "a", RunState::Succeeded, 10_000).await;
    finished_run(&store, "old-cancelled", "a", RunState::Cancelled, 11_000).await;
    finished_run(&store, "old-dead", "a", RunState::Dead, 12_000).await;
    finished_run(&store, "new-ok", "a", RunState::Succeeded, 50_000).await;
    finished_run(&store, "old-other-job", "b", RunState::Succeeded, 10_000).await;
    finished_run(&store, "still-running", "a", RunState::Running, 0).await;
    let age = rule("a", Some(20_000), None, None);
    assert_eq!(
        store.count_prunable(&age).await.unwrap(),
        PruneCounts {
            succeeded: 1,
            dead: 1,
            cancelled: 1
        }
    );
    // Two batches of at most two runs, oldest first.
    let first = store.prune_runs(&age, 2).await.unwrap();
    assert_eq!(first.ids, vec!["old-ok".to_string(), "old-cancelled".to_string()]);
    let second = store.prune_runs(&age, 2).await.unwrap();
    assert_eq!(second.ids, vec!["old-dead".to_string()]);
    assert_eq!(second.counts.dead, 1);
    assert!(store.prune_runs(&age, 2).await.unwrap().ids.is_empty());
    assert_eq!(
        stored_ids(&store).await,
        vec!["new-ok".to_string(), "old-other-job".into(), "still-running".into()]
    );
    // Their history went with them: attempts, transitions, events, keys.
    for id in ["old-ok", "old-cancelled", "old-dead"] {
        assert!(store.transitions(id).await.unwrap().is_empty(), "{id}");
        assert!(store.attempts(&[id.to_string()]).await.unwrap().is_empty(), "{id}");
        assert!(
            store.idempotency_key(&format!("key-{id}")).await.unwrap().is_none(),
            "{id}"
        );
    }
    let events = all_events(&store).await;
    let pruned = ["old-ok", "old-cancelled", "old-dead"];
    assert!(
        events
            .iter()
            .all(|e| !pruned.contains(&e.run_id.as_deref().unwrap_or_default())),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e.run_id.as_deref() == Some("new-ok")));
    assert_eq!(store.transitions("new-ok").await.unwrap().len(), 3);
    store.close().await;
}

/// Events of no run (pauses, resumes, missed and skipped fires) go by the
/// job's age and count, oldest first; events of runs, and other jobs'
/// events, stay; `history_jobs` names every job with runs or events.
async fn schedule_events_without_a_run_are_pruned_by_age_and_count(db: TestDb) {
    let store = db.open().await;
    finished_run(&store, "a-run", "a", RunState::Succeeded, 10_000).await;
    for paused in [true, false, true, false, true] {
        store.set_paused("a", paused).await.unwrap();
    }
    store.set_paused("b", true).await.unwrap();
    let schedule_events = |job: &'static str| {
        let store = store.clone();
        async move {
            all_events(&store)
                .await
                .into_iter()
                .filter(|e| e.job == job && e.run_id.is_none())
                .map(|e| e.seq)
                .collect::<Vec<i64>>()
        }
    };
    let before = schedule_events("a").await;
    assert_eq!(before.len(), 5);
    let run_events = all_events(&store).await.iter().filter(|e| e.run_id.is_some()).count();
    assert_eq!(
        store.history_jobs().await.unwrap(),
        vec!["a".to_string(), "b".to_string()]
    );

    // Neither an age nor a count: nothing to do.
    assert_eq!(
        store
            .prune_schedule_events(&rule("a", None, Some(i64::MAX), None), 100)
            .await
            .unwrap(),
        0
    );
    // Keep the newest two, in batches of two.
    let keep_two = rule("a", None, None, Some(2));
    assert_eq!(store.prune_schedule_events(&keep_two, 2).await.unwrap(), 2);
    assert_eq!(store.prune_schedule_events(&keep_two, 2).await.unwrap(), 1);
    assert_eq!(store.prune_schedule_events(&keep_two, 2).await.unwrap(), 0);
    assert_eq!(schedule_events("a").await, before[3..].to_vec());
    // An age that has not passed keeps them; one that has takes the rest.
    assert_eq!(
        store
            .prune_schedule_events(&rule("a", Some(0), None, None), 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .prune_schedule_events(&rule("a", Some(i64::MAX), None, None), 100)
            .await
            .unwrap(),
        2
    );
    assert!(schedule_events("a").await.is_empty());
    assert_eq!(schedule_events("b").await.len(), 1, "another job's events stay");
    let after = all_events(&store).await.iter().filter(|e| e.run_id.is_some()).count();
    assert_eq!(after, run_events, "events of runs go only with their runs");
    store.close().await;
}

async fn prune_by_count_keeps_the_newest_finished_runs(db: TestDb) {
    let store = db.open().await;
    for i in 0..6 {
        finished_run(&store, &format!("r{i}"), "a", RunState::Succeeded, 1_000 * (i + 1)).await;
    }
    finished_run(&store, "running", "a", RunState::Running, 0).await;
    let keep = rule("a", None, None, Some(2));
    assert_eq!(store.count_prunable(&keep).await.unwrap().succeeded, 4);
    let batch = store.prune_runs(&keep, 500).await.unwrap();
    assert_eq!(batch.ids, vec!["r0", "r1", "r2", "r3"]);
    assert_eq!(
        stored_ids(&store).await,
        vec!["r4".to_string(), "r5".into(), "running".into()]
    );
    // Age and count together: either one prunes.
    let both = rule("a", Some(5_500), None, Some(5));
    assert_eq!(store.prune_runs(&both, 500).await.unwrap().ids, vec!["r4"]);
    store.close().await;
}

async fn dead_runs_have_their_own_age_limit(db: TestDb) {
    let store = db.open().await;
    finished_run(&store, "ok-old", "a", RunState::Succeeded, 1_000).await;
    finished_run(&store, "dead-old", "a", RunState::Dead, 1_000).await;
    finished_run(&store, "dead-older", "a", RunState::Dead, 500).await;
    finished_run(&store, "ok-new", "a", RunState::Succeeded, 9_000).await;
    // max_age cuts at 5,000 but dead runs keep until 800; dead runs do not
    // count for keep = 1 either.
    let r = rule("a", Some(5_000), Some(800), Some(1));
    let batch = store.prune_runs(&r, 500).await.unwrap();
    let mut ids = batch.ids.clone();
    ids.sort();
    assert_eq!(ids, vec!["dead-older".to_string(), "ok-old".into()]);
    assert_eq!((batch.counts.dead, batch.counts.succeeded), (1, 1));
    assert_eq!(stored_ids(&store).await, vec!["dead-old".to_string(), "ok-new".into()]);
    // Without a dead limit, dead runs go by max_age like the rest.
    let r = rule("a", Some(5_000), None, None);
    assert_eq!(store.prune_runs(&r, 500).await.unwrap().ids, vec!["dead-old"]);
    store.close().await;
}

async fn prune_never_touches_unfinished_runs_or_their_upstreams(db: TestDb) {
    let store = db.open().await;
    finished_run(&store, "up-done", "a", RunState::Succeeded, 1_000).await;
    finished_run(&store, "up-other", "a", RunState::Succeeded, 1_000).await;
    // A blocked run waits on both (on up-done it waits no more, but the
    // engine reads the edge when its other upstream settles).
    let mut blocked = new_run("down", None);
    blocked.state = RunState::Blocked;
    blocked.job = "b".into();
    let mut done_down = new_run("down-done", None);
    done_down.job = "b".into();
    store
        .insert_runs(&InsertPlan {
            runs: vec![blocked, done_down],
            dependencies: vec![
                ("down".into(), "up-done".into()),
                ("down".into(), "up-other".into()),
                ("down-done".into(), "up-other".into()),
            ],
        })
        .await
        .unwrap();
    for state in [RunState::Queued, RunState::Scheduled] {
        let mut run = new_run(&format!("waiting-{state}"), None);
        run.state = state;
        run.created_at = 0;
        assert!(insert(&store, run).await);
    }
    let everything = rule("a", Some(i64::MAX), None, Some(1));
    assert_eq!(store.count_prunable(&everything).await.unwrap().total(), 0);
    assert!(store.prune_runs(&everything, 500).await.unwrap().ids.is_empty());
    let all_of_job_a = rule("job.a", Some(i64::MAX), None, None);
    assert!(store.prune_runs(&all_of_job_a, 500).await.unwrap().ids.is_empty());
    // Once the blocked run is finished (cancelled), the upstream only it
    // waited on may go, and so may the blocked run, with its dependency rows;
    // up-other stays while the queued down-done waits on it.
    let cancel = StateChange::new("down", RunState::Blocked, RunState::Cancelled, 2_000, None);
    store.apply(&[cancel], &[], &[]).await.unwrap();
    assert_eq!(store.prune_runs(&everything, 500).await.unwrap().ids, vec!["up-done"]);
    let b = rule("b", Some(i64::MAX), None, None);
    assert_eq!(store.prune_runs(&b, 500).await.unwrap().ids, vec!["down"]);
    assert_eq!(
        store.dependencies(&["down".into(), "down-done".into()]).await.unwrap(),
        vec![("down-done".to_string(), "up-other".to_string())]
    );
    let left = stored_ids(&store).await;
    assert!(
        left.contains(&"down-done".to_string()) && left.contains(&"up-other".to_string()),
        "{left:?}"
    );
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
    let Some(admin) = postgres_admin().await else {
        return;
    };
    admin.close().await.ok();
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
        .for_each_active_run(None, &mut |run| {
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

// ---------------------------------------------------------------------------
// Alerting

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

async fn alert_specs_are_replaced_as_a_whole(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.alert_specs().await.unwrap(), (Vec::new(), Vec::new()));
    let channels = pairs(&[
        (
            "pager",
            "type: webhook\nurl: https://pager.example.com/hook\nsecret: ${WEBHOOK_SECRET}\n",
        ),
        ("ops-slack", "type: slack\nwebhook_url: ${SLACK_WEBHOOK_URL}\n"),
        ("ops-mail", "type: email\n"),
    ]);
    // Rules keep their order, which is not name order.
    let rules = pairs(&[
        ("slow-digest", "event: run_slow\n"),
        ("dead-runs", "event: run_dead\n"),
        ("z-last", "event: agent_lost\n"),
    ]);
    store
        .save_alert_specs(&channels, &rules, Some(("alerts.yaml", "channels: {}\n")))
        .await
        .unwrap();
    let (stored_channels, stored_rules) = store.alert_specs().await.unwrap();
    let mut by_name = channels.clone();
    by_name.sort();
    assert_eq!(stored_channels, by_name, "channels by name, ${{VARS}} as written");
    assert_eq!(stored_rules, rules, "rules in their order");
    assert_eq!(
        store.applied_config("alerts.yaml").await.unwrap().as_deref(),
        Some("channels: {}\n")
    );

    // A second save replaces everything: ops-mail and dead-runs are gone, a
    // kept channel gets its new spec, and the rules take the new order.
    let channels = pairs(&[
        ("ops-slack", "type: slack\nchannel: ops\n"),
        ("ops-discord", "type: discord\n"),
    ]);
    let rules = pairs(&[
        ("z-last", "event: agent_lost\n"),
        ("new-rule", "event: recovered\n"),
        ("slow-digest", "event: run_slow\nthreshold: 5m\n"),
    ]);
    store
        .save_alert_specs(&channels, &rules, Some(("alerts.yaml", "second\n")))
        .await
        .unwrap();
    assert_eq!(
        store.alert_specs().await.unwrap(),
        (
            pairs(&[
                ("ops-discord", "type: discord\n"),
                ("ops-slack", "type: slack\nchannel: ops\n")
            ]),
            rules.clone()
        )
    );
    assert_eq!(
        store.applied_config("alerts.yaml").await.unwrap().as_deref(),
        Some("second\n")
    );

    // Without `applied`, the recorded text stays; an empty save empties both.
    store.save_alert_specs(&[], &[], None).await.unwrap();
    assert_eq!(store.alert_specs().await.unwrap(), (Vec::new(), Vec::new()));
    assert_eq!(
        store.applied_config("alerts.yaml").await.unwrap().as_deref(),
        Some("second\n")
    );
    // Jobs' applied text is a different file.
    assert_eq!(store.applied_config("scheduler.yaml").await.unwrap(), None);

    // A failed save (two channels of one name) changes nothing.
    store.save_alert_specs(&channels, &rules, None).await.unwrap();
    let twice = pairs(&[("a", "type: slack\n"), ("a", "type: discord\n")]);
    assert!(
        store
            .save_alert_specs(&twice, &[], Some(("alerts.yaml", "bad\n")))
            .await
            .is_err()
    );
    assert_eq!(store.alert_specs().await.unwrap().1, rules);
    assert_eq!(store.alert_specs().await.unwrap().0.len(), 2);
    assert_eq!(
        store.applied_config("alerts.yaml").await.unwrap().as_deref(),
        Some("second\n")
    );

    // Reopening keeps them.
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.alert_specs().await.unwrap().1, rules);
    store.close().await;
}

/// 2,500 varied alert rows: ten share each `at`, ids are not in insertion
/// order, and every optional column is NULL in some of them.
fn alert_records() -> Vec<AlertRecord> {
    const CHANNELS: [&str; 4] = ["ops-slack", "ops-mail", "pager", "ops-discord"];
    (0..2_500u32)
        .map(|i| {
            let kind = AlertKind::ALL[(i % 3) as usize];
            let test = kind == AlertKind::Test;
            let job = (i % 7 != 0 && !test).then(|| format!("job.{}", i % 5));
            AlertRecord {
                // 7919 is prime to 2,500: a permutation of 0..2,500.
                id: format!("01J{:06}", (i * 7_919) % 2_500),
                alert_id: format!("A{}", i / 2),
                at: 1_700_000_000_000 + i64::from(i / 10),
                kind,
                event: (!test).then(|| Event::ALL[(i as usize) % Event::ALL.len()]),
                rule: (!test).then(|| if i % 4 < 3 { "dead-runs" } else { "slow-digest" }.to_string()),
                channel: CHANNELS[((i / 2) % 4) as usize].to_string(),
                run_id: job.as_ref().filter(|_| i % 11 != 0).map(|_| format!("run-{i}")),
                job,
                status: AlertStatus::ALL[((i / 3) % 3) as usize],
                attempts: i % 4,
                answer: format!("HTTP 200 \"ok\" é {i}"),
                title: format!("run_failed: job attempt {i}"),
            }
        })
        .collect()
}

/// Which rows an [`AlertQuery`] should select.
type AlertFilter = Box<dyn Fn(&AlertRecord) -> bool>;

async fn alert_history_is_recorded_in_bulk_and_listed_newest_first(db: TestDb) {
    let store = db.open().await;
    let records = alert_records();
    store.record_alerts(&records).await.unwrap();
    store.record_alerts(&[]).await.unwrap();
    // Recording the same rows again records nothing twice.
    store.record_alerts(&records[..10]).await.unwrap();

    let mut newest_first = records.clone();
    newest_first.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
    let expect = |filter: &dyn Fn(&AlertRecord) -> bool, limit: usize| -> Vec<AlertRecord> {
        newest_first.iter().filter(|r| filter(r)).take(limit).cloned().collect()
    };

    let all = store
        .alert_history(&AlertQuery {
            limit: 10_000,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2_500);
    assert!(
        all == newest_first,
        "every row intact, newest first, ties by id descending"
    );
    assert_eq!(all[0].at, all[1].at);
    assert!(all[0].id > all[1].id);

    // Limit 0 means 100.
    let page = store.alert_history(&AlertQuery::default()).await.unwrap();
    assert!(page == expect(&|_| true, 100));

    let cases: Vec<(AlertQuery, AlertFilter)> = vec![
        (
            AlertQuery {
                limit: 50,
                rule: Some("slow-digest".into()),
                ..AlertQuery::default()
            },
            Box::new(|r| r.rule.as_deref() == Some("slow-digest")),
        ),
        (
            AlertQuery {
                limit: 10_000,
                channel: Some("pager".into()),
                ..AlertQuery::default()
            },
            Box::new(|r| r.channel == "pager"),
        ),
        (
            AlertQuery {
                limit: 1_000,
                job: Some("job.3".into()),
                ..AlertQuery::default()
            },
            Box::new(|r| r.job.as_deref() == Some("job.3")),
        ),
        (
            AlertQuery {
                limit: 7,
                status: Some(AlertStatus::Suppressed),
                ..AlertQuery::default()
            },
            Box::new(|r| r.status == AlertStatus::Suppressed),
        ),
        (
            AlertQuery {
                limit: 10_000,
                rule: Some("dead-runs".into()),
                channel: Some("ops-mail".into()),
                job: Some("job.2".into()),
                status: Some(AlertStatus::Failed),
            },
            Box::new(|r| {
                r.rule.as_deref() == Some("dead-runs")
                    && r.channel == "ops-mail"
                    && r.job.as_deref() == Some("job.2")
                    && r.status == AlertStatus::Failed
            }),
        ),
        (
            AlertQuery {
                limit: 10,
                rule: Some("no-such-rule".into()),
                ..AlertQuery::default()
            },
            Box::new(|_| false),
        ),
    ];
    for (query, filter) in &cases {
        let got = store.alert_history(query).await.unwrap();
        let want = expect(filter.as_ref(), query.limit as usize);
        // The data is varied enough for every real filter to select something.
        assert_eq!(
            want.is_empty(),
            query.rule.as_deref() == Some("no-such-rule"),
            "{query:?}"
        );
        assert!(got == want, "{query:?}: got {} rows, want {}", got.len(), want.len());
    }
    // Rows with every optional column NULL come back as `None`.
    let test = all.iter().find(|r| r.kind == AlertKind::Test).unwrap();
    assert_eq!(
        (&test.event, &test.rule, &test.job, &test.run_id),
        (&None, &None, &None, &None)
    );
    store.close().await;
}

async fn alert_history_is_pruned_by_age(db: TestDb) {
    let store = db.open().await;
    // More rows than one SQLite prune batch (5,000).
    let records: Vec<AlertRecord> = (0..12_000i64)
        .map(|i| AlertRecord {
            id: format!("01J{i:06}"),
            alert_id: format!("A{i}"),
            at: i,
            kind: AlertKind::Alert,
            event: Some(Event::RunDead),
            rule: Some("dead-runs".into()),
            channel: "ops-slack".into(),
            job: Some("job.a".into()),
            run_id: Some(format!("run-{i}")),
            status: AlertStatus::Suppressed,
            attempts: 0,
            answer: String::new(),
            title: "run_dead: job.a".into(),
        })
        .collect();
    store.record_alerts(&records).await.unwrap();
    assert_eq!(store.prune_alert_history(0).await.unwrap(), 0);
    assert_eq!(store.prune_alert_history(11_000).await.unwrap(), 11_000);
    assert_eq!(store.prune_alert_history(11_000).await.unwrap(), 0);
    let left = store
        .alert_history(&AlertQuery {
            limit: u32::MAX,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 1_000);
    assert_eq!((left[0].at, left[999].at), (11_999, 11_000));
    assert_eq!(store.prune_alert_history(i64::MAX).await.unwrap(), 1_000);
    assert!(store.alert_history(&AlertQuery::default()).await.unwrap().is_empty());
    store.close().await;
}

async fn a_corrupt_alert_history_row_is_an_internal_error(db: TestDb) {
    let store = db.open().await;
    store.record_alerts(&alert_records()[..3]).await.unwrap();
    db.execute("UPDATE alert_history SET status = 'lost' WHERE id = '01J000000'")
        .await;
    let err = store.alert_history(&AlertQuery::default()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Internal, "{}", err.message);
    assert!(err.message.contains("alert status \"lost\""), "{}", err.message);
    store.close().await;
}

// ---------------------------------------------------------------------------
// The `digest` builtin's aggregates

/// A run of `job` created at `created`, with one attempt that ends with
/// `outcome` at `finished` (after `duration` ms, with `error` and a `cost`
/// metric when given) and leaves the run in `state`; `finished: None` leaves
/// it running.
#[allow(clippy::too_many_arguments)]
async fn digest_run(
    store: &Store,
    id: &str,
    job: &str,
    created: i64,
    end: Option<(i64, Outcome, RunState)>,
    duration: i64,
    error: Option<&str>,
    cost: Option<f64>,
) {
    let mut run = new_run(id, None);
    run.job = job.into();
    run.created_at = created;
    run.ready_at = Some(created);
    assert!(insert(store, run).await);
    let mut running = StateChange::new(id, RunState::Queued, RunState::Running, created + 1, None);
    running.attempt = Some(1);
    let start = AttemptStart {
        run_id: id.into(),
        attempt: 1,
        agent_id: "a1".into(),
        agent_name: "agent-one".into(),
        started_at: created + 1,
    };
    store.apply(&[running], &[start], &[]).await.unwrap();
    let Some((finished, outcome, state)) = end else { return };
    let end = AttemptEnd {
        run_id: id.into(),
        attempt: 1,
        outcome,
        exit_code: None,
        error: error.map(str::to_string),
        output: None,
        started_at: None,
        finished_at: finished,
        duration_ms: Some(duration),
        metrics: cost
            .map(|value| {
                vec![MetricRecord {
                    name: "cost_usd".into(),
                    value,
                }]
            })
            .unwrap_or_default(),
        spans: Vec::new(),
    };
    let change = StateChange::new(id, RunState::Running, state, finished, None);
    store.apply(&[change], &[], &[end]).await.unwrap();
}

async fn digest_rows_aggregate_one_window(db: TestDb) {
    use worker_controller::store::digest::{DigestCost, DigestQuery, DigestSlow};
    const DAY: i64 = 86_400_000;
    let store = db.open().await;
    let done = |at: i64| Some((at, Outcome::Succeeded, RunState::Succeeded));
    digest_run(
        &store,
        "ok1",
        "job.a",
        10 * DAY + 1_000,
        done(10 * DAY + 5_000),
        4_000,
        None,
        Some(0.25),
    )
    .await;
    digest_run(
        &store,
        "ok2",
        "job.a",
        10 * DAY + 2_000,
        done(10 * DAY + 9_000),
        7_000,
        None,
        Some(0.5),
    )
    .await;
    digest_run(
        &store,
        "bad1",
        "job.b",
        10 * DAY + 3_000,
        Some((10 * DAY + 6_000, Outcome::Failed, RunState::Dead)),
        3_000,
        Some("disk <full> & more"),
        None,
    )
    .await;
    // Before the window, at its end (exclusive), created too long before it,
    // and still running: none of them counts.
    digest_run(
        &store,
        "old",
        "job.a",
        9 * DAY,
        done(10 * DAY - 1),
        99_000,
        None,
        Some(5.0),
    )
    .await;
    digest_run(
        &store,
        "late",
        "job.a",
        10 * DAY + 4_000,
        done(11 * DAY),
        99_000,
        None,
        Some(5.0),
    )
    .await;
    digest_run(
        &store,
        "ancient",
        "job.c",
        DAY,
        done(10 * DAY + 100),
        99_000,
        None,
        None,
    )
    .await;
    digest_run(&store, "busy", "job.a", 10 * DAY + 5_000, None, 0, None, None).await;

    let query = DigestQuery {
        from: 10 * DAY,
        to: 11 * DAY,
        failures: 10,
        slowest: 10,
        costs: 10,
        counts: 100,
        error_chars: 100,
    };
    let rows = store.digest_rows(&query).await.unwrap();
    assert_eq!(
        rows.outcomes,
        vec![
            ("job.a".to_string(), "succeeded".to_string(), 2),
            ("job.b".to_string(), "failed".to_string(), 1)
        ]
    );
    assert_eq!(
        rows.run_ends,
        vec![
            ("job.a".to_string(), "succeeded".to_string(), 2),
            ("job.b".to_string(), "dead".to_string(), 1)
        ]
    );
    assert_eq!(rows.failures.len(), 1);
    let f = &rows.failures[0];
    assert_eq!((f.run_id.as_str(), f.attempt, f.job.as_str()), ("bad1", 1, "job.b"));
    assert_eq!((f.outcome.as_str(), f.error.as_str()), ("failed", "disk <full> & more"));
    assert_eq!(f.finished_at, 10 * DAY + 6_000);
    assert_eq!(
        rows.slowest,
        vec![
            DigestSlow {
                job: "job.a".into(),
                attempts: 2,
                avg_ms: 5_500.0,
                max_ms: 7_000
            },
            DigestSlow {
                job: "job.b".into(),
                attempts: 1,
                avg_ms: 3_000.0,
                max_ms: 3_000
            },
        ]
    );
    assert_eq!(
        rows.costs,
        vec![DigestCost {
            job: "job.a".into(),
            metric: "cost_usd".into(),
            sum: 0.75,
            reports: 2
        }]
    );
    assert_eq!(rows.dead_letter, 1);

    // The limits hold: rows and error characters.
    let small = store
        .digest_rows(&DigestQuery {
            failures: 0,
            slowest: 1,
            costs: 0,
            counts: 1,
            error_chars: 4,
            ..query
        })
        .await
        .unwrap();
    assert!(small.failures.is_empty() && small.costs.is_empty());
    assert_eq!(small.slowest.len(), 1);
    assert_eq!((small.outcomes.len(), small.run_ends.len()), (1, 1));
    let short = store
        .digest_rows(&DigestQuery {
            error_chars: 4,
            ..query
        })
        .await
        .unwrap();
    assert_eq!(short.failures[0].error, "disk");

    // An empty window reads nothing but the DLQ.
    let empty = store
        .digest_rows(&DigestQuery {
            from: 20 * DAY,
            to: 21 * DAY,
            ..query
        })
        .await
        .unwrap();
    assert!(empty.outcomes.is_empty() && empty.run_ends.is_empty() && empty.failures.is_empty());
    assert!(empty.slowest.is_empty() && empty.costs.is_empty());
    assert_eq!(empty.dead_letter, 1);
}

async fn catalog_packs_are_immutable_and_ratings_one_per_token_and_via(db: TestDb) {
    use worker_controller::store::{CatalogFileRecord, CatalogPackRecord, CatalogPublish};
    let store = db.open().await;
    assert!(store.catalog_packs().await.unwrap().is_empty());
    let pack = |version: &str, digest: &str, at: i64| CatalogPackRecord {
        name: "greet".into(),
        version: version.into(),
        manifest: format!("name: greet\nversion: {version}\n"),
        digest: digest.into(),
        description: "Prints a greeting".into(),
        author: "me".into(),
        published_at: at,
        publisher: "ops".into(),
    };
    let files = vec![
        CatalogFileRecord {
            path: "job.yaml".into(),
            content: b"jobs: {}\n".to_vec(),
            sha256: "aa".into(),
        },
        CatalogFileRecord {
            path: "bin/tool".into(),
            content: vec![0, 159, 146, 150, 255],
            sha256: "bb".into(),
        },
    ];
    assert_eq!(
        store.publish_pack(&pack("1.0.0", "d1", 10), &files).await.unwrap(),
        CatalogPublish::Created
    );
    assert_eq!(
        store.publish_pack(&pack("1.0.0", "d1", 20), &files).await.unwrap(),
        CatalogPublish::Unchanged
    );
    assert_eq!(
        store.publish_pack(&pack("1.0.0", "d2", 30), &files[..1]).await.unwrap(),
        CatalogPublish::Conflict("d1".into())
    );
    assert_eq!(
        store.publish_pack(&pack("1.1.0", "d3", 40), &files[..1]).await.unwrap(),
        CatalogPublish::Created
    );
    let packs = store.catalog_packs().await.unwrap();
    assert_eq!(packs, vec![pack("1.0.0", "d1", 10), pack("1.1.0", "d3", 40)]);
    // Files come back by path, bytes as stored (binary included); the refused
    // re-publish changed nothing.
    let stored = store.catalog_pack_files("greet", "1.0.0").await.unwrap();
    assert_eq!(stored, vec![files[1].clone(), files[0].clone()]);
    assert_eq!(store.catalog_pack_files("greet", "1.1.0").await.unwrap().len(), 1);
    assert!(store.catalog_pack_files("greet", "9.9.9").await.unwrap().is_empty());

    // One row per (pack, token, via): a rating and a review share it, a new one replaces.
    store.put_catalog_rating("greet", "ops", "", 5, 100).await.unwrap();
    store
        .put_catalog_review("greet", "ops", "", "Great", 110)
        .await
        .unwrap();
    store.put_catalog_rating("greet", "ops", "", 4, 120).await.unwrap();
    store.put_catalog_rating("greet", "hub", "alice", 2, 130).await.unwrap();
    store
        .put_catalog_review("greet", "hub", "bob", "Only a review", 140)
        .await
        .unwrap();
    store.put_catalog_rating("other", "ops", "", 1, 150).await.unwrap();
    let ratings = store.catalog_ratings().await.unwrap();
    assert_eq!(ratings.len(), 2);
    assert_eq!(
        (ratings[0].pack.as_str(), ratings[0].average, ratings[0].count),
        ("greet", 3.0, 2)
    );
    assert_eq!(
        (ratings[1].pack.as_str(), ratings[1].average, ratings[1].count),
        ("other", 1.0, 1)
    );
    let reviews = store.catalog_reviews("greet").await.unwrap();
    type Shape<'a> = (&'a str, &'a str, Option<u32>, Option<&'a str>, i64);
    let shapes: Vec<Shape<'_>> = reviews
        .iter()
        .map(|r| {
            (
                r.token.as_str(),
                r.via.as_str(),
                r.rating,
                r.review.as_deref(),
                r.updated_at,
            )
        })
        .collect();
    assert_eq!(
        shapes,
        vec![
            ("hub", "bob", None, Some("Only a review"), 140),
            ("hub", "alice", Some(2), None, 130),
            ("ops", "", Some(4), Some("Great"), 120),
        ]
    );
}

// ---------------------------------------------------------------------------
// High availability: the leadership lease and the fence (PostgreSQL only).

/// Reads `SELECT epoch FROM events` behind the store's back, in order.
async fn event_epochs(db: &TestDb) -> Vec<i64> {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query_scalar("SELECT epoch FROM events ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

/// One controller takes the lease, a second cannot while it holds; once it
/// expires the second takes it with the next epoch, and from then on every
/// leader-only write of the first (runs, commit rounds, cursors, renewals)
/// is refused as fenced and writes nothing, while the new leader's writes
/// carry its epoch. A released lease is taken at once.
async fn the_lease_has_one_holder_and_fences_the_previous_one(db: TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    assert_eq!(a.acquire_lease("a", "http://a:7070", 60_000).await.unwrap(), Some(1));
    assert_eq!(b.acquire_lease("b", "http://b:7070", 60_000).await.unwrap(), None);
    let lease = b.lease().await.unwrap();
    assert_eq!(
        (lease.epoch, lease.holder.as_str(), lease.address.as_str()),
        (1, "a", "http://a:7070")
    );
    assert!(lease.is_held());
    assert!(a.renew_lease(1, 60_000).await.unwrap());

    a.set_fence(1);
    assert!(insert(&a, new_run("r1", None)).await);
    assert_eq!(event_epochs(&db).await, vec![1]);

    // The lease runs out (its holder stopped renewing); b takes over.
    db.execute("UPDATE leader_lease SET expires_at = 0").await;
    assert_eq!(b.acquire_lease("b", "http://b:7070", 60_000).await.unwrap(), Some(2));
    b.set_fence(2);

    let fenced = a
        .insert_runs(&InsertPlan {
            runs: vec![new_run("stale", None)],
            dependencies: Vec::new(),
        })
        .await;
    assert!(matches!(fenced, Err(WriteError::Fenced(_))), "{fenced:?}");
    let (running, start) = first_attempt("r1");
    let fenced = a
        .commit(
            &InsertPlan::default(),
            std::slice::from_ref(&running),
            std::slice::from_ref(&start),
            &[],
        )
        .await;
    assert!(
        matches!(fenced, Err(WriteError::Fenced(ref e)) if e.message.contains("epoch 2 leads now")),
        "{fenced:?}"
    );
    assert!(a.advance_cursor("job.a", 60_000, 0, 0).await.is_err());
    assert!(!a.renew_lease(1, 60_000).await.unwrap(), "a stale leader cannot renew");
    assert!(a.run("stale").await.unwrap().is_none());
    assert_eq!(a.run("r1").await.unwrap().unwrap().state, RunState::Queued);
    assert!(a.cursors().await.unwrap().is_empty());

    // The new leader's writes go through, with its epoch.
    b.commit(&InsertPlan::default(), &[running], &[start], &[])
        .await
        .unwrap();
    assert_eq!(b.run("r1").await.unwrap().unwrap().state, RunState::Running);
    assert_eq!(event_epochs(&db).await, vec![1, 2]);

    // A released lease is free at once; every term is recorded.
    assert!(b.release_lease(2).await.unwrap());
    assert!(!b.lease().await.unwrap().is_held());
    assert_eq!(a.acquire_lease("a", "http://a:7070", 60_000).await.unwrap(), Some(3));
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let terms: Vec<(i64, String)> = sqlx::query_as("SELECT epoch, holder FROM leader_terms ORDER BY epoch")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(terms, vec![(1, "a".into()), (2, "b".into()), (3, "a".into())]);
    let second = a.leader_term(2).await.unwrap().expect("the term of epoch 2");
    assert_eq!(
        (second.epoch, second.holder.as_str(), second.address.as_str()),
        (2, "b", "http://b:7070")
    );
    assert!(second.acquired_at > 0);
    assert_eq!(a.leader_term(4).await.unwrap(), None, "no such term yet");
    a.close().await;
    b.close().await;
}

/// A takeover waits for a fenced write in flight: the old leader's
/// transaction holds the lease row for share, so the new epoch exists only
/// after that write committed (it is not lost, and nothing of the old epoch
/// commits after the new one began).
async fn a_takeover_waits_for_the_fenced_write_in_flight(db: TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    assert_eq!(a.acquire_lease("a", "http://a:7070", 60_000).await.unwrap(), Some(1));
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM leader_lease WHERE id = 1 FOR SHARE")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(epoch, 1);
    let takeover = tokio::spawn(async move {
        // Expire and take in one go, as a standby would after the TTL.
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql("UPDATE leader_lease SET expires_at = 0")
            .execute(&mut conn)
            .await
            .unwrap();
        b.acquire_lease("b", "http://b:7070", 60_000).await.unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !takeover.is_finished(),
        "the takeover waits for the write holding the lease row"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        tokio::time::timeout(std::time::Duration::from_secs(10), takeover)
            .await
            .unwrap()
            .unwrap(),
        Some(2)
    );
    a.close().await;
}

/// A relayed call runs once or not at all: a standby writes it pending; the
/// leader claims it in a fenced write (a stale leader claims nothing) and
/// answers; a pending call can be withdrawn, a claimed one cannot, and a
/// withdrawn one is never claimed. Notifications name the call.
async fn a_relayed_call_is_claimed_once_or_withdrawn(db: TestDb) {
    use worker_controller::store::{RELAY_CHANNEL, RELAY_DONE_CHANNEL, RelayAnswer, RelayState, RelayedCall};
    let a = db.open().await;
    let b = db.open().await;
    assert_eq!(a.acquire_lease("a", "http://a:7070", 60_000).await.unwrap(), Some(1));
    a.set_fence(1);
    let mut submitted = a.listen(RELAY_CHANNEL).await.unwrap();
    let mut answered = b.listen(RELAY_DONE_CHANNEL).await.unwrap();
    let call = |method: &str| RelayedCall {
        id: 0,
        method: method.to_string(),
        caller: "ops".into(),
        headers: vec![("content-type".into(), "application/grpc".into())],
        body: vec![0, 0, 0, 0, 2, 10, 0],
    };
    // b, a standby, writes two calls; the leader hears of them.
    let first = b
        .relay_submit("b", &call("/worker.v1.ControllerService/Enqueue"))
        .await
        .unwrap();
    let second = b
        .relay_submit("b", &call("/worker.v1.ControllerService/ListJobs"))
        .await
        .unwrap();
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), submitted.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard.payload(), first.to_string());
    assert_eq!(b.relay_state(first).await.unwrap(), RelayState::Pending);
    // The second is withdrawn while pending: never claimed.
    assert!(b.relay_withdraw(second).await.unwrap());
    assert_eq!(b.relay_state(second).await.unwrap(), RelayState::Withdrawn);
    let claimed = a.relay_claim(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, first);
    assert_eq!(claimed[0].caller, "ops");
    assert_eq!(claimed[0].headers, call("x").headers);
    assert_eq!(claimed[0].body, call("x").body);
    assert!(a.relay_claim(10).await.unwrap().is_empty(), "claimed once");
    assert_eq!(b.relay_state(first).await.unwrap(), RelayState::Running { epoch: 1 });
    assert!(!b.relay_withdraw(first).await.unwrap(), "a claimed call stays");
    let answer = RelayAnswer {
        headers: vec![("content-type".into(), "application/grpc".into())],
        body: vec![0, 0, 0, 0, 0],
        trailers: vec![("grpc-status".into(), "0".into())],
    };
    assert!(a.relay_finish(first, &answer).await.unwrap());
    let heard = tokio::time::timeout(std::time::Duration::from_secs(5), answered.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard.payload(), first.to_string());
    assert_eq!(b.relay_state(first).await.unwrap(), RelayState::Done(answer.clone()));
    assert!(!a.relay_finish(first, &answer).await.unwrap(), "answered once");

    // After a takeover the old leader claims nothing.
    let third = b
        .relay_submit("b", &call("/worker.v1.ControllerService/PauseSchedule"))
        .await
        .unwrap();
    db.execute("UPDATE leader_lease SET expires_at = 0").await;
    assert_eq!(b.acquire_lease("b", "http://b:7070", 60_000).await.unwrap(), Some(2));
    b.set_fence(2);
    let fenced = a.relay_claim(10).await;
    assert!(matches!(fenced, Err(WriteError::Fenced(_))), "{fenced:?}");
    assert_eq!(b.relay_state(third).await.unwrap(), RelayState::Pending);
    assert_eq!(b.relay_claim(10).await.unwrap()[0].id, third);
    // Old calls that are not pending are deleted.
    assert_eq!(b.relay_prune(0).await.unwrap(), 3);
    assert_eq!(b.relay_state(first).await.unwrap(), RelayState::Missing);
    // A listener holds a pooled connection until dropped.
    drop((submitted, answered));
    a.close().await;
    b.close().await;
}

mod leadership {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_relayed_call_is_claimed_once_or_withdrawn() {
        super::with_postgres(super::a_relayed_call_is_claimed_once_or_withdrawn).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_lease_has_one_holder_and_fences_the_previous_one() {
        super::with_postgres(super::the_lease_has_one_holder_and_fences_the_previous_one).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_takeover_waits_for_the_fenced_write_in_flight() {
        super::with_postgres(super::a_takeover_waits_for_the_fenced_write_in_flight).await;
    }

    /// SQLite has one controller: taking part in an election is refused by
    /// name, and nothing is fenced.
    #[tokio::test]
    async fn sqlite_refuses_leadership() {
        super::with_sqlite(|db| async move {
            let store = db.open().await;
            assert!(!store.supports_leadership());
            let err = store.acquire_lease("a", "http://a", 1_000).await.unwrap_err();
            assert!(err.message.contains("needs a PostgreSQL store"), "{err}");
            store.set_fence(7);
            assert!(super::insert(&store, super::new_run("r1", None)).await);
            store.close().await;
        })
        .await;
    }
}
