//! The `backup` builtin and `workerctl backup` end to end (docs/backup.md):
//! a real controller and agent, a real S3-compatible server (moto, on
//! loopback) and a directory; the store backed up, deleted and restored;
//! a tampered backup refused; retention deleting exactly what is older than
//! `keep_days`; a PostgreSQL database backed up and restored; the store of
//! a controller on PostgreSQL backed up (a `pg_dump` snapshot) and restored
//! into a new database; and the snapshot RPC refused to a non-admin token.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use sqlx::Connection as _;
use tokio_stream::StreamExt as _;
use worker_proto::v1 as pb;
use worker_tests::auth::BOOTSTRAP_SECRET;
use worker_tests::s3::{AWS_ENV, S3Server};
use worker_tests::{CliOutput, Controller, TestEnv, Value, bins, pg};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// `workerctl ARGS...` with the AWS variables of the test server.
async fn workerctl(args: &[&str]) -> CliOutput {
    let mut cmd = tokio::process::Command::new(&bins().cli);
    cmd.args(args)
        .envs(AWS_ENV.iter().copied())
        .env_remove("WORKER_CONTROLLER")
        .env_remove("WORKER_TOKEN")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("workerctl {args:?} did not finish within 60s"))
        .unwrap_or_else(|e| panic!("spawning workerctl: {e}"));
    CliOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A backup id created `days` days ago.
fn id_days_ago(days: i64, tag: &str) -> String {
    let at = Utc::now() - chrono::Duration::days(days);
    format!("worker-backup-{}-{tag}", at.format("%Y%m%dT%H%M%SZ"))
}

/// A manifest for a seeded (fake) backup.
fn fake_manifest(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": id, "created_at": "2000-01-01T00:00:00Z", "source": "store", "format": "sqlite",
        "object": format!("{id}.gz"), "size": 4, "sha256": "00", "job": "seed", "run_id": "seed",
        "worker_version": "0"
    }))
    .unwrap()
}

/// Runs `job` once and returns the finished run (which must succeed).
async fn run_ok(ctl: &Controller, job: &str) -> pb::Run {
    let id = ctl.cli_enqueue(job, &[]).await;
    let run = ctl.wait_run(&id, RUN_TIMEOUT).await;
    let last = run.attempts.last().cloned().unwrap_or_default();
    assert_eq!(run.state, "succeeded", "{job}: {} / output {}", last.error, last.output);
    run
}

/// The backup id named in a backup run's output.
fn backup_id_of(run: &pb::Run) -> String {
    let output = &run.attempts.last().expect("an attempt").output;
    output
        .split_whitespace()
        .find(|w| w.starts_with("worker-backup-"))
        .unwrap_or_else(|| panic!("no backup id in {output}"))
        .to_string()
}

fn listed_ids(out: &Value) -> Vec<String> {
    out.as_array()
        .expect("a list")
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_string())
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn store_backup_to_dir_and_s3_restores_the_history() {
    let env = TestEnv::new();
    let Some(s3) = S3Server::start(&env).await else { return };
    s3.create_bucket("backups").await;
    let dir = env.path().join("backups");
    std::fs::create_dir_all(&dir).unwrap();

    // Seeded: one backup 31 days old, one 29 days old, and strangers.
    let old = id_days_ago(31, "01old");
    let young = id_days_ago(29, "01young");
    for id in [&old, &young] {
        std::fs::write(dir.join(format!("{id}.gz")), b"seed").unwrap();
        std::fs::write(dir.join(format!("{id}.json")), fake_manifest(id)).unwrap();
        s3.put("backups", &format!("worker/{id}.gz"), b"seed").await;
        s3.put("backups", &format!("worker/{id}.json"), &fake_manifest(id))
            .await;
    }
    std::fs::write(dir.join("notes.txt"), b"not a backup").unwrap();
    s3.put("backups", "worker/notes.txt", b"not a backup").await;
    s3.put("backups", &format!("elsewhere/{old}.gz"), b"outside the prefix")
        .await;

    env.write_config(&format!(
        r#"
jobs:
  hello:
    shell: echo hello
  backup:
    builtin:
      name: backup
      dir: {}
      s3: {{ endpoint: "{}", bucket: backups, prefix: worker }}
      keep_days: 30
"#,
        dir.display(),
        s3.endpoint
    ));
    let mut ctl = env.start_controller().await;
    let mut agent = env.start_agent_with_env(&ctl, "backup-agent", 2, AWS_ENV, &[]).await;

    let mut history = Vec::new();
    for _ in 0..3 {
        history.push(run_ok(&ctl, "hello").await.id);
    }
    let run = run_ok(&ctl, "backup").await;
    let id = backup_id_of(&run);
    let output = &run.attempts.last().unwrap().output;
    assert!(output.contains("sha256 "), "{output}");
    assert!(output.contains(&format!("deleted {old}.gz, {old}.json")), "{output}");

    // Retention: exactly the 31-day-old backup went, in both places.
    let mut expected = vec![
        format!("{id}.gz"),
        format!("{id}.json"),
        "notes.txt".to_string(),
        format!("{young}.gz"),
        format!("{young}.json"),
    ];
    expected.sort();
    assert_eq!(names_in(&dir), expected);
    let mut expected_keys: Vec<String> = expected.iter().map(|n| format!("worker/{n}")).collect();
    expected_keys.push(format!("elsewhere/{old}.gz"));
    expected_keys.sort();
    assert_eq!(s3.keys("backups").await, expected_keys);

    // Listed from both.
    let dir_arg = dir.display().to_string();
    let from_dir = workerctl(&["-o", "json", "backup", "list", "--from", &dir_arg])
        .await
        .expect_code(0)
        .json();
    assert_eq!(listed_ids(&from_dir), vec![id.clone(), young.clone()]);
    assert_eq!(from_dir[0]["format"], "sqlite");
    assert_eq!(from_dir[0]["job"], "backup");
    let s3_args = ["--from", "s3://backups/worker", "--s3-endpoint", s3.endpoint.as_str()];
    let mut list_s3 = vec!["-o", "json", "backup", "list"];
    list_s3.extend_from_slice(&s3_args);
    let from_s3 = workerctl(&list_s3).await.expect_code(0).json();
    assert_eq!(listed_ids(&from_s3), vec![id.clone(), young.clone()]);
    assert_eq!(from_s3[0]["sha256"], from_dir[0]["sha256"]);

    // The store is lost.
    agent.stop(Duration::from_secs(10));
    ctl.proc.terminate(Duration::from_secs(10));
    let db = env.db_path();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    assert!(!db.exists());
    let db_arg = db.display().to_string();

    // A tampered copy is refused before anything is written.
    let data = dir.join(format!("{id}.gz"));
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let refused = workerctl(&["backup", "restore", &id, "--from", &dir_arg, "--to", &db_arg]).await;
    assert_eq!(refused.code, 5, "{refused:?}");
    assert!(refused.stderr.contains("checksum mismatch"), "{}", refused.stderr);
    assert!(!db.exists(), "a refused restore wrote {}", db.display());
    let unknown = workerctl(&[
        "backup",
        "restore",
        &young.replace("01young", "01nope"),
        "--from",
        &dir_arg,
        "--to",
        &db_arg,
    ])
    .await;
    assert_eq!(unknown.code, 3, "{unknown:?}");

    // The intact copy in S3 restores.
    let mut restore = vec!["backup", "restore", id.as_str()];
    restore.extend_from_slice(&s3_args);
    restore.extend_from_slice(&["--to", db_arg.as_str()]);
    let restored = workerctl(&restore).await;
    assert_eq!(restored.code, 0, "{restored:?}");
    assert!(restored.stdout.contains("sha256 verified"), "{}", restored.stdout);
    // Never over an existing file without --force.
    let again = workerctl(&restore).await;
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("--force"), "{}", again.stderr);

    // The history is back.
    let ctl = env.start_controller().await;
    let runs = ctl.cli_json(&["runs", "list", "--job", "hello"]).await;
    let mut ids: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    history.sort();
    assert_eq!(ids, history);
    for run in runs.as_array().unwrap() {
        assert_eq!(run["state"], "succeeded", "{run}");
    }
}

#[tokio::test]
async fn postgres_source_backs_up_and_restores_a_database() {
    let Some(source) = pg::fresh_database().await else {
        return;
    };
    let Some(target) = pg::fresh_database().await else {
        return;
    };
    let mut conn = sqlx::PgConnection::connect(&source.url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO customers SELECT i, 'customer ' || i FROM generate_series(1, 500) AS i;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let env = TestEnv::new();
    let dir = env.path().join("pg-backups");
    env.write_config(&format!(
        r#"
jobs:
  app-backup:
    builtin: {{ name: backup, source: postgres, database_url: "${{APP_DB_URL}}", dir: {}, keep_days: 7 }}
"#,
        dir.display()
    ));
    let ctl = env.start_controller().await;
    let _agent = env
        .start_agent_with_env(
            &ctl,
            "pg-agent",
            1,
            &[("APP_DB_URL", source.url.as_str())],
            &["--allow-env", "APP_DB_URL"],
        )
        .await;
    let run = run_ok(&ctl, "app-backup").await;
    let id = backup_id_of(&run);
    let dir_arg = dir.display().to_string();
    let listed = workerctl(&["-o", "json", "backup", "list", "--from", &dir_arg])
        .await
        .expect_code(0)
        .json();
    assert_eq!(listed_ids(&listed), vec![id.clone()]);
    assert_eq!(listed[0]["source"], "postgres");
    assert_eq!(listed[0]["format"], "pg_dump-custom");

    let restored = workerctl(&["backup", "restore", &id, "--from", &dir_arg, "--to", &target.url]).await;
    assert_eq!(restored.code, 0, "{restored:?}");
    let read = |url: String| async move {
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let rows: Vec<(i32, String)> = sqlx::query_as("SELECT id, name FROM customers ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        rows
    };
    let (before, after) = (read(source.url.clone()).await, read(target.url.clone()).await);
    assert_eq!(before.len(), 500);
    assert_eq!(before, after);

    // A database with tables is refused without --force, replaced with it.
    let again = workerctl(&["backup", "restore", &id, "--from", &dir_arg, "--to", &target.url]).await;
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("tables"), "{}", again.stderr);
    let forced = workerctl(&[
        "backup",
        "restore",
        &id,
        "--from",
        &dir_arg,
        "--to",
        &target.url,
        "--force",
    ])
    .await;
    assert_eq!(forced.code, 0, "{forced:?}");
    assert_eq!(read(target.url.clone()).await, before);

    drop(ctl);
    source.drop_now().await;
    target.drop_now().await;
}

/// Whether `program --version` runs (it is on `PATH`); else a skip notice.
fn on_path(program: &str, why: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        worker_tests::skip::skip_or_fail(format_args!(
            "`{program}` is not on PATH ({why}); install the PostgreSQL client tools"
        ));
    }
    found
}

/// The ids of `job`'s runs, sorted.
async fn run_ids(ctl: &Controller, job: &str) -> Vec<String> {
    let runs = ctl.cli_json(&["runs", "list", "--job", job]).await;
    let mut ids: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .inspect(|r| assert_eq!(r["state"], "succeeded", "{r}"))
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// `source: store` on a controller whose store is PostgreSQL: the controller
/// streams a `pg_dump` custom-format snapshot, the agent writes it to a
/// directory, and `workerctl backup restore` puts it into a new database,
/// on which a controller finds the history again.
#[tokio::test]
async fn store_backup_of_a_postgres_controller_restores_the_history() {
    if !on_path("pg_dump", "the controller dumps its PostgreSQL store with it")
        || !on_path("pg_restore", "workerctl restores a pg_dump archive with it")
        || !on_path("psql", "workerctl checks the target database is empty with it")
    {
        return;
    }
    let Some(store) = pg::fresh_database().await else {
        return;
    };
    let Some(target) = pg::fresh_database().await else {
        return;
    };
    let env = TestEnv::new().with_db(&store.url);
    let dir = env.path().join("store-backups");
    let config = format!(
        r#"
jobs:
  hello:
    shell: echo hello
  backup:
    builtin: {{ name: backup, dir: {}, keep_days: 7 }}
"#,
        dir.display()
    );
    env.write_config(&config);
    let mut ctl = env.start_controller().await;
    let mut agent = env.start_agent(&ctl, "pg-store-agent", 2).await;
    let mut history = Vec::new();
    for _ in 0..3 {
        history.push(run_ok(&ctl, "hello").await.id);
    }
    history.sort();
    let run = run_ok(&ctl, "backup").await;
    let id = backup_id_of(&run);

    let dir_arg = dir.display().to_string();
    let listed = workerctl(&["-o", "json", "backup", "list", "--from", &dir_arg])
        .await
        .expect_code(0)
        .json();
    assert_eq!(listed_ids(&listed), vec![id.clone()]);
    assert_eq!(listed[0]["source"], "store");
    assert_eq!(listed[0]["format"], "pg_dump-custom");
    agent.stop(Duration::from_secs(10));
    ctl.proc.terminate(Duration::from_secs(10));

    // Into a new, empty database.
    let restored = workerctl(&["backup", "restore", &id, "--from", &dir_arg, "--to", &target.url]).await;
    assert_eq!(restored.code, 0, "{restored:?}");
    assert!(restored.stdout.contains("sha256 verified"), "{}", restored.stdout);

    // A controller on the restored database has the history (the backup run
    // itself was still running when the snapshot was taken).
    let restored_env = TestEnv::new().with_db(&target.url);
    restored_env.write_config(&config);
    let again = restored_env.start_controller().await;
    assert_eq!(run_ids(&again, "hello").await, history);

    drop(again);
    drop(ctl);
    store.drop_now().await;
    target.drop_now().await;
}

#[tokio::test]
async fn the_store_snapshot_is_for_admins_only() {
    let env = TestEnv::new();
    env.write_config("jobs: {}\n");
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let viewer = ctl.create_token(BOOTSTRAP_SECRET, "watcher", "viewer", &[]).await;
    let agent = ctl.create_token(BOOTSTRAP_SECRET, "runner", "agent", &[]).await;
    for token in [viewer.as_str(), agent.as_str()] {
        let mut client = ctl.client_with_token(Some(token)).await;
        let status = client
            .snapshot_store(pb::SnapshotStoreRequest {})
            .await
            .expect_err("a non-admin token must be refused");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    let mut client = ctl.client_with_token(Some(BOOTSTRAP_SECRET)).await;
    let mut stream = client
        .snapshot_store(pb::SnapshotStoreRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.format, "sqlite");
        data.extend_from_slice(&chunk.data);
    }
    assert!(data.starts_with(b"SQLite format 3\0"), "not a SQLite file");
    // The temporary snapshot next to the store is gone.
    let leftovers: Vec<String> = names_in(env.path())
        .into_iter()
        .filter(|n| n.contains(".snapshot-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
