//! TLS to PostgreSQL: a `--db` URL with `sslmode=require` gets an encrypted
//! connection (checked in `pg_stat_ssl`), `sslmode=disable` a plain one.
//!
//! The server is `WORKER_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432`,
//! as in `store.rs`); the test creates its own database and drops it. A server
//! without TLS (`ssl = off`) must refuse `sslmode=require` with an error that
//! says so. No server: a `SKIPPED` notice, or a failure under CI
//! (`worker_tests::skip`).

use sqlx::Connection;
use worker_controller::store::Store;

/// The test server's URL for `database` (its query options are dropped: the
/// test chooses `sslmode` itself).
fn pg_url(database: &str) -> String {
    let base = std::env::var("WORKER_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let base = base.split('?').next().unwrap_or_default();
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{database}", &base[..server_end])
}

/// Whether each of the store's sessions on `database` is encrypted (one
/// entry per session).
async fn sessions_encrypted(admin: &mut sqlx::PgConnection, database: &str) -> Vec<bool> {
    sqlx::query_scalar("SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.datname = $1")
        .bind(database)
        .fetch_all(admin)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_uses_tls_when_the_url_asks() {
    if std::env::var("WORKER_TEST_PG").is_ok_and(|v| v == "off") {
        worker_tests::skip::skip_or_fail("the PostgreSQL store tests are switched off (WORKER_TEST_PG=off)");
        return;
    }
    let admin_url = pg_url("postgres");
    let mut admin = match sqlx::PgConnection::connect(&format!("{admin_url}?sslmode=disable")).await {
        Ok(admin) => admin,
        Err(e) => {
            worker_tests::skip::skip_or_fail(format_args!(
                "no PostgreSQL test server at {admin_url} ({e}); start one there, or name another with \
                 WORKER_TEST_PG_URL=postgres://USER@HOST:PORT"
            ));
            return;
        }
    };
    let ssl: String = sqlx::query_scalar("SHOW ssl").fetch_one(&mut admin).await.unwrap();
    // Two databases, so that sessions of the first store still closing cannot
    // be mistaken for the second's.
    let id = ulid::Ulid::new().to_string().to_lowercase();
    let (name, plain_name) = (format!("worker_tls_{id}"), format!("worker_plain_{id}"));
    for db in [&name, &plain_name] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let url = pg_url(&name);

    if ssl == "on" {
        // require: every session of the store is encrypted.
        let store = Store::open(&format!("{url}?sslmode=require")).await.unwrap();
        store.runs(None, None, 1).await.unwrap();
        let sessions = sessions_encrypted(&mut admin, &name).await;
        assert!(
            !sessions.is_empty() && sessions.iter().all(|&ssl| ssl),
            "sslmode=require: sessions {sessions:?}"
        );
        store.close().await;

        // disable: the same check sees plain-text sessions (the check can tell).
        let store = Store::open(&format!("{}?sslmode=disable", pg_url(&plain_name)))
            .await
            .unwrap();
        store.runs(None, None, 1).await.unwrap();
        let sessions = sessions_encrypted(&mut admin, &plain_name).await;
        assert!(
            !sessions.is_empty() && sessions.iter().all(|&ssl| !ssl),
            "sslmode=disable: sessions {sessions:?}"
        );
        store.close().await;
    } else {
        // A server without TLS: require fails at open, saying why.
        let Err(err) = Store::open(&format!("{url}?sslmode=require")).await else {
            panic!("sslmode=require opened a store on a server without TLS");
        };
        let err = err.to_string();
        assert!(err.contains("TLS") || err.contains("SSL"), "{err}");
    }

    for db in [&name, &plain_name] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
    admin.close().await.ok();
}
