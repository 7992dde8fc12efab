//! A fresh PostgreSQL database for an end-to-end test whose controller runs
//! on PostgreSQL, on the server at `WORKER_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432`, the store suite's server). Where no
//! server answers, or with `WORKER_TEST_PG=off`, the test is skipped with a
//! notice (and fails under CI, see [`crate::skip`]).

use sqlx::Connection as _;

/// A database `worker_e2e_<ulid>`, dropped by [`PgDatabase::drop_now`].
pub struct PgDatabase {
    /// Its URL, for `--db`.
    pub url: String,
    name: String,
}

/// `WORKER_TEST_PG_URL` with its database replaced by `database`.
fn url_of(database: &str) -> String {
    let base = std::env::var("WORKER_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let (base, query) = base.split_once('?').unwrap_or((base.as_str(), ""));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server_end = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    let server = &base[..server_end];
    if query.is_empty() {
        format!("{server}/{database}")
    } else {
        format!("{server}/{database}?{query}")
    }
}

async fn admin() -> Option<sqlx::PgConnection> {
    if std::env::var("WORKER_TEST_PG").is_ok_and(|v| v == "off") {
        crate::skip::skip_or_fail("the PostgreSQL tests are switched off (WORKER_TEST_PG=off)");
        return None;
    }
    let url = url_of("postgres");
    match sqlx::PgConnection::connect(&url).await {
        Ok(conn) => Some(conn),
        Err(e) => {
            crate::skip::skip_or_fail(format_args!(
                "no PostgreSQL test server at {url} ({e}); start one there, or name another with \
                 WORKER_TEST_PG_URL=postgres://USER@HOST:PORT"
            ));
            None
        }
    }
}

/// Creates a fresh database, or returns `None` after a skip notice.
pub async fn fresh_database() -> Option<PgDatabase> {
    let mut admin = admin().await?;
    let name = format!("worker_e2e_{}", ulid::Ulid::new().to_string().to_lowercase());
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("CREATE DATABASE");
    admin.close().await.ok();
    Some(PgDatabase {
        url: url_of(&name),
        name,
    })
}

impl PgDatabase {
    /// Drops the database (its controllers must have exited or be dropped).
    pub async fn drop_now(self) {
        if let Some(mut admin) = admin().await {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut admin)
            .await
            .ok();
            admin.close().await.ok();
        }
    }
}

/// [`fresh_database`] from synchronous code (`TestEnv::new` under
/// `WORKER_TEST_STORE=postgres`): runs on a thread of its own with its own
/// runtime, so it may be called inside a test's runtime too.
pub fn fresh_database_blocking() -> Option<PgDatabase> {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the test database")
            .block_on(fresh_database())
    })
    .join()
    .expect("creating the test database")
}

impl PgDatabase {
    /// [`PgDatabase::drop_now`] from synchronous code (a `Drop`).
    pub fn drop_blocking(self) {
        let _ = std::thread::spawn(|| {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                runtime.block_on(self.drop_now());
            }
        })
        .join();
    }
}
