//! `--alert-history-retention`: alert history rows older than the retention
//! are deleted (at start-up, then hourly), younger ones are kept.

use std::time::Duration;

use chrono::Utc;
use worker_tests::json::{self, str_field};
use worker_tests::receiver::Receiver;
use worker_tests::{Controller, TestEnv, Value, wait_for};

/// The retention the controller is restarted with, in seconds.
const RETENTION_S: i64 = 5;

/// Every history row (newest first).
async fn history(ctl: &Controller) -> Vec<Value> {
    json::as_array(&ctl.cli_json(&["alerts", "history", "--limit", "1000"]).await).clone()
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|r| str_field(r, "id").to_string()).collect()
}

/// Sends a test message to `team` and waits until its row is in the history;
/// returns the row.
async fn test_row(ctl: &Controller) -> Value {
    let sent = ctl.cli_json(&["alerts", "test", "team"]).await;
    assert_eq!(sent["status"], "sent", "{sent:#}");
    let id = str_field(&sent, "id").to_string();
    wait_for(
        &format!("history row {id} of the test message"),
        Duration::from_secs(10),
        || async {
            let rows = history(ctl).await;
            rows.iter()
                .find(|r| str_field(r, "id") == id)
                .cloned()
                .ok_or_else(|| format!("{:?}", ids(&rows)))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_history_older_than_the_retention_is_pruned() {
    let recv = Receiver::start().await;
    let env = TestEnv::new();
    env.write_config("jobs: {}\n");
    env.write_alerts(&format!(
        "channels:\n  team: {{ type: slack, webhook_url: \"{}\" }}\nrules: []\n",
        recv.url("/slack")
    ));
    let mut ctl = env.start_controller().await;

    let old = test_row(&ctl).await;
    let old_at = json::ts_field(&old, "at");
    // The old row must age past the retention; the young one must not have
    // when the restarted controller prunes. Waiting for the clock is the
    // point here (nothing happens that could be awaited).
    let aged = old_at + chrono::Duration::milliseconds(RETENTION_S * 1000 + 500);
    tokio::time::sleep((aged - Utc::now()).to_std().unwrap_or_default()).await;
    let young = test_row(&ctl).await;
    let young_at = json::ts_field(&young, "at");
    recv.wait("/slack", "both test messages", Duration::from_secs(10), |got| {
        got.len() == 2
    })
    .await;
    // The default retention (30 days) kept both so far.
    assert_eq!(ids(&history(&ctl).await), ids(&[young.clone(), old.clone()]));

    let status = ctl.proc.terminate(Duration::from_secs(15));
    assert!(status.success(), "controller exited with {status} on SIGTERM");
    drop(ctl);
    let restart_at = Utc::now();
    let retention = format!("{RETENTION_S}s");
    ctl = env
        .start_controller_with(&["--alert-history-retention", &retention])
        .await;

    let rows = wait_for(
        "the row older than the retention to be pruned",
        Duration::from_secs(20),
        || async {
            let rows = history(&ctl).await;
            if rows.iter().any(|r| r["id"] == old["id"]) {
                Err(format!("{rows:#?}"))
            } else {
                Ok(rows)
            }
        },
    )
    .await;
    let seen_at = Utc::now();
    assert!(
        restart_at - old_at > chrono::Duration::seconds(RETENTION_S),
        "the old row ({old_at}) was younger than {RETENTION_S} s at the restart ({restart_at})"
    );
    // Only rows older than the retention go: the young one was younger than
    // it whenever the prune ran (between the restart and now).
    assert!(
        seen_at - young_at < chrono::Duration::seconds(RETENTION_S),
        "the machine is too slow for this check: the young row ({young_at}) aged past {RETENTION_S} s by {seen_at}"
    );
    assert_eq!(
        ids(&rows),
        ids(std::slice::from_ref(&young)),
        "the young row must be kept: {rows:#?}"
    );
    let kept = &rows[0];
    assert_eq!(kept, &young, "the kept row changed");
    let log = ctl.proc.stderr_all();
    assert!(
        log.contains("old alert history deleted"),
        "the controller does not log the prune:\n{log}"
    );
}
