//! What jobs report about themselves, end to end: metrics and spans sent by a
//! shell job (marker lines) and by the `http` executor reach `runs get`, the
//! job's daily stats in `jobs get`, `/metrics`, and alert rules (`run_slow`
//! on a span, `metric_high`) that deliver to a real webhook receiver. (The
//! SDK's `ctx.metric` / `ctx.span` are covered by `sdk.rs`.)

use std::time::Duration;

use worker_tests::http::{get, sample};
use worker_tests::receiver::Receiver;
use worker_tests::web::WebSession;
use worker_tests::{Controller, TestEnv, Value, run_cli, wait_for};

/// Fetches `/metrics` until `series` has `value`.
async fn metric_reaches(ctl: &Controller, series: &str, value: f64) {
    let addr = ctl.http_addr.expect("HTTP address");
    wait_for(series, Duration::from_secs(20), || async {
        let text = get(addr, "/metrics", None).await.body;
        match sample(&text, series) {
            Some(v) if (v - value).abs() < 1e-9 => Ok(()),
            other => Err(format!("{series} is {other:?}, expected {value}")),
        }
    })
    .await;
}

/// Alerts of `event` the receiver got on `/hook`.
async fn alerts_of(recv: &Receiver, event: &str, n: usize) -> Vec<Value> {
    let got = recv
        .wait("/hook", event, Duration::from_secs(20), |got| {
            got.iter().filter(|r| r.json["event"] == event).count() >= n
        })
        .await;
    got.into_iter()
        .filter(|r| r.json["event"] == event)
        .map(|r| r.json)
        .collect()
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_reach_runs_stats_metrics_and_alerts() {
    let env = TestEnv::new();
    let recv = Receiver::start().await;
    recv.always("/api", 200);
    let http_job = format!(
        "  report.http:\n    http: {{ method: POST, url: \"{}\", body: '{{\"run\": \"{{{{run.id}}}}\"}}' }}\n    retry: {{ max_attempts: 1 }}\n",
        recv.url("/api")
    );
    let shell_job = r#"  report.shell:
    shell: |
      echo '::worker metric api_cost_usd 0.42'
      echo '::worker metric items 120'
      echo '::worker span fetch 250ms'
      echo '::worker span fetch 150ms'
      echo '::worker span db.write 20ms'
      echo '::worker metric broken value'
    retry: { max_attempts: 1 }
"#;
    env.write_config(&format!("jobs:\n{shell_job}{http_job}"));
    env.write_alerts(&format!(
        r#"channels:
  hook: {{ type: webhook, url: "{}", secret: s3cret }}
rules:
  - {{ name: slow-fetch, event: run_slow, span: fetch, threshold: 300ms, channels: [hook] }}
  - {{ name: slow-write, event: run_slow, span: db.write, threshold: 300ms, channels: [hook] }}
  - {{ name: budget, event: metric_high, metric: api_cost_usd, above: 0.8, channels: [hook] }}
"#,
        recv.url("/hook")
    ));
    let ctl = env.start_controller().await;
    let _agent = env.start_agent(&ctl, "worker-1", 2).await;

    let first = ctl.cli_enqueue("report.shell", &[]).await;
    let run = ctl.wait_run(&first, Duration::from_secs(20)).await;
    assert_eq!(run.state, "succeeded", "{run:?}");

    // runs get: the attempt's metrics by name, its spans slowest first.
    let json = ctl.cli_json(&["runs", "get", &first]).await;
    let attempt = &json["attempts"][0];
    assert_eq!(f64_of(&attempt["metrics"]["api_cost_usd"]), 0.42, "{attempt:#}");
    assert_eq!(f64_of(&attempt["metrics"]["items"]), 120.0);
    assert!(
        attempt["metrics"].get("broken").is_none(),
        "an unreadable marker is not a metric"
    );
    let spans = attempt["spans"].as_array().unwrap();
    assert_eq!(spans[0]["name"], "fetch");
    assert_eq!(
        (spans[0]["count"].as_u64(), f64_of(&spans[0]["total_ms"])),
        (Some(2), 400.0)
    );
    assert_eq!(f64_of(&spans[0]["max_ms"]), 250.0);
    assert_eq!(spans[1]["name"], "db.write");
    assert!(
        attempt["output"]
            .as_str()
            .unwrap()
            .contains("[worker] ignored marker: \"::worker metric broken value\""),
        "{attempt:#}"
    );
    let text = run_cli(&["--controller", &ctl.url, "runs", "get", &first])
        .await
        .expect_code(0)
        .stdout;
    assert!(text.contains("reported by attempt 1:"), "{text}");
    assert!(text.contains("metrics: api_cost_usd=0.42 items=120"), "{text}");

    // The web UI's run page shows them too.
    let mut web = WebSession::sign_in(ctl.http_addr.expect("HTTP address"), None).await;
    let page = web.get(&format!("/runs/{first}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(r#"id="spans-1""#) && page.body.contains("db.write"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("api_cost_usd") && page.body.contains("0.42"),
        "{}",
        page.body
    );

    // run_slow on the span: fetch (400 ms) alerts, db.write (20 ms) does not.
    let slow = alerts_of(&recv, "run_slow", 1).await;
    assert_eq!(slow[0]["rule"], "slow-fetch");
    assert!(slow[0]["title"].as_str().unwrap().contains("in fetch"), "{}", slow[0]);

    // A second run: the day's cost (0.84) goes above the budget (0.8).
    let second = ctl.cli_enqueue("report.shell", &[]).await;
    assert_eq!(ctl.wait_run(&second, Duration::from_secs(20)).await.state, "succeeded");
    let budget = alerts_of(&recv, "metric_high", 1).await;
    assert_eq!(budget[0]["rule"], "budget");
    assert!(budget[0]["title"].as_str().unwrap().contains("0.84"), "{}", budget[0]);

    // jobs get: today's sums and span percentiles.
    let job = ctl.cli_json(&["jobs", "get", "report.shell"]).await;
    let today = &job["days"][0];
    assert_eq!(today["date"], chrono::Utc::now().format("%Y-%m-%d").to_string());
    assert_eq!(today["attempts"], 2);
    assert!(
        (f64_of(&today["metrics"]["api_cost_usd"]) - 0.84).abs() < 1e-9,
        "{today:#}"
    );
    assert_eq!(f64_of(&today["metrics"]["items"]), 240.0);
    assert_eq!(today["spans"][0]["name"], "fetch");
    assert_eq!(f64_of(&today["spans"][0]["p95_ms"]), 400.0);

    // The http executor's own spans.
    let http_run = ctl.cli_enqueue("report.http", &[]).await;
    assert_eq!(
        ctl.wait_run(&http_run, Duration::from_secs(20)).await.state,
        "succeeded"
    );
    let json = ctl.cli_json(&["runs", "get", &http_run]).await;
    let attempt = &json["attempts"][0];
    let mut names: Vec<&str> = attempt["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["connect", "first_byte", "total"], "{attempt:#}");
    assert!(attempt["metrics"]["response_bytes"].as_f64().is_some(), "{attempt:#}");
    let received = recv.received("/api");
    assert_eq!(
        received[0].body,
        format!("{{\"run\": \"{http_run}\"}}"),
        "the body template was filled"
    );
    let job = ctl.cli_json(&["jobs", "get", "report.http"]).await;
    assert_eq!(job["days"][0]["attempts"], 1, "{job:#}");
    metric_reaches(
        &ctl,
        r#"worker_job_span_seconds_count{job="report.http",span="total"}"#,
        1.0,
    )
    .await;

    // And on the job's page.
    let page = web.get("/jobs/report.shell").await;
    assert!(
        page.body.contains(r#"id="job-days""#) && page.body.contains("api_cost_usd=0.84"),
        "{}",
        page.body
    );

    // /metrics.
    metric_reaches(
        &ctl,
        r#"worker_job_metric_total{job="report.shell",metric="items"}"#,
        240.0,
    )
    .await;
    metric_reaches(
        &ctl,
        r#"worker_job_span_seconds_count{job="report.shell",span="fetch"}"#,
        2.0,
    )
    .await;
    metric_reaches(
        &ctl,
        r#"worker_job_span_seconds_sum{job="report.shell",span="fetch"}"#,
        0.8,
    )
    .await;
    assert!(
        recv.received("/hook").iter().all(|r| r.json["rule"] != "slow-write"),
        "db.write stayed under its threshold"
    );
}
