//! The store against a real SQLite database file.

use worker_controller::model::{Outcome, Priority, RunState, Trigger};
use worker_controller::store::{AttemptEnd, AttemptStart, InsertPlan, NewRun, StateChange, Store};

async fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("worker.db").display());
    let store = Store::open(&url).await.unwrap();
    (dir, store)
}

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

#[tokio::test]
async fn a_fire_instant_creates_one_run_and_moves_the_cursor() {
    let (_dir, store) = open().await;
    assert!(insert(&store, new_run("r1", Some(60_000))).await);
    assert!(
        !insert(&store, new_run("r2", Some(60_000))).await,
        "second run for the same instant"
    );
    assert!(store.run("r2").await.unwrap().is_none());
    let cursors = store.cursors().await.unwrap();
    assert_eq!(cursors.len(), 1);
    assert_eq!(cursors[0].last_fired, 60_000);
}

#[tokio::test]
async fn transitions_attempts_and_stats_are_recorded() {
    let (_dir, store) = open().await;
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
        (run.state, run.attempt, run.finished_at),
        (RunState::Succeeded, 1, Some(2_510))
    );
    let attempts = store.attempts(&["r1".to_string()]).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (
            attempts[0].outcome,
            attempts[0].started_at,
            attempts[0].output.as_deref()
        ),
        (Some(Outcome::Succeeded), 2_010, Some("done"))
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
    let stats = store.job_stats("job.a").await.unwrap();
    assert_eq!((stats.runs_total, stats.succeeded, stats.active), (1, 1, 0));
    assert_eq!(stats.recent_durations_ms, vec![500]);
    assert!(store.active_runs().await.unwrap().is_empty());
}

#[tokio::test]
async fn purge_deletes_only_dead_runs_with_their_history() {
    let (_dir, store) = open().await;
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
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("worker.db").display());
    let store = Store::open(&url).await.unwrap();
    insert(&store, new_run("r1", None)).await;
    store.close().await;
    let store = Store::open(&url).await.unwrap();
    let active = store.active_runs().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].payload, "{\"n\":1}");
}

#[tokio::test]
async fn dependencies_keys_and_definitions_are_stored() {
    let (_dir, store) = open().await;
    let mut down = new_run("down", None);
    down.state = RunState::Blocked;
    down.idempotency_key = Some("k1".into());
    let plan = InsertPlan {
        runs: vec![new_run("up", None), down],
        dependencies: vec![("down".into(), "up".into())],
    };
    assert!(store.insert_runs(&plan).await.unwrap());
    assert_eq!(
        store.dependencies(&["down".to_string()]).await.unwrap(),
        vec![("down".to_string(), "up".to_string())]
    );
    assert_eq!(
        store.idempotency_key("k1").await.unwrap().map(|(id, _)| id),
        Some("down".to_string())
    );
    assert_eq!(
        store.run("down").await.unwrap().unwrap().idempotency_key.as_deref(),
        Some("k1")
    );

    store
        .save_jobs(
            &[("a".into(), "shell: x\n".into(), "config".into())],
            &[],
            Some(("scheduler.yaml", "text")),
        )
        .await
        .unwrap();
    assert_eq!(
        store.job_specs().await.unwrap(),
        vec![("a".to_string(), "shell: x\n".to_string(), "config".to_string())]
    );
    assert_eq!(
        store.applied_config("scheduler.yaml").await.unwrap().as_deref(),
        Some("text")
    );
    store.save_jobs(&[], &["a".into()], None).await.unwrap();
    assert!(store.job_specs().await.unwrap().is_empty());

    store.set_paused("a", true).await.unwrap();
    assert_eq!(store.paused_schedules().await.unwrap(), vec!["a".to_string()]);
    store.set_paused("a", false).await.unwrap();
    assert!(store.paused_schedules().await.unwrap().is_empty());
}
