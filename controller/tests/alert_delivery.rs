//! Alert delivery against real receivers on 127.0.0.1: an axum HTTP server
//! that checks each request the way Slack, Discord and a webhook receiver
//! would (and answers as they do, or as scripted: 503 then 200, 500, 400),
//! and a real SMTP server in the test process (`worker_tests::smtp`, the
//! `mailin` crate's protocol over loopback TCP, AUTH required) whose received
//! messages are read back and parsed.
//!
//! Tests wait on events (the requests a receiver records), never on fixed
//! sleeps. Nothing needs installing beyond the Rust toolchain.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use mailparse::MailHeaderMap;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use worker_controller::alerting::deliver::{Deliverer, DeliveryPolicy};
use worker_controller::alerting::{Alert, AlertKind, AlertStatus, Channel, Event, parse_alerts_yaml};
use worker_controller::model::Priority;

// ---------------------------------------------------------------------------
// The HTTP receiver.

/// One request as the receiver saw it, with the receiver's verdict.
#[derive(Debug)]
struct Received {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    /// What the receiver's checks found (`Err`: it answered 400 with this).
    verdict: Result<(), String>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// Checks a request the way the real service would.
type Check = Box<dyn Fn(&HeaderMap, &[u8]) -> Result<(), String> + Send + Sync>;

/// The answer to the n-th request (0-based) that passed the checks.
type Script = Box<dyn Fn(usize) -> (u16, Vec<(&'static str, String)>, String) + Send + Sync>;

struct ReceiverState {
    check: Check,
    script: Script,
    served: AtomicUsize,
    requests: mpsc::UnboundedSender<Received>,
}

/// A running receiver: its base URL and the requests it got, in order.
struct Receiver {
    base: String,
    requests: mpsc::UnboundedReceiver<Received>,
    _stop: oneshot::Sender<()>,
}

impl Receiver {
    /// The next request (waits for it; a delivery has already returned when
    /// this is called, so it is there or never comes).
    async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(10), self.requests.recv())
            .await
            .expect("a request within 10 s")
            .expect("the receiver is running")
    }

    /// Asserts that no further request arrived.
    fn assert_no_more(&mut self) {
        if let Ok(extra) = self.requests.try_recv() {
            panic!("unexpected extra request: {} {}", extra.method, extra.path);
        }
    }
}

async fn handle(
    State(state): State<Arc<ReceiverState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let verdict = if method == Method::POST {
        (state.check)(&headers, &body)
    } else {
        Err(format!("expected POST, got {method}"))
    };
    let response = match &verdict {
        Err(why) => (StatusCode::BAD_REQUEST, why.clone()).into_response(),
        Ok(()) => {
            let n = state.served.fetch_add(1, Ordering::SeqCst);
            let (status, extra, body) = (state.script)(n);
            let mut response = (StatusCode::from_u16(status).expect("a status"), body).into_response();
            for (name, value) in extra {
                response
                    .headers_mut()
                    .insert(name, HeaderValue::from_str(&value).expect("a header value"));
            }
            response
        }
    };
    let _ = state.requests.send(Received {
        method,
        path: uri.path().to_string(),
        headers,
        body,
        verdict,
    });
    response
}

/// Starts a receiver on 127.0.0.1:0 that checks each request with `check`
/// and answers with `script`.
async fn receiver(check: Check, script: Script) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = mpsc::unbounded_channel();
    let state = Arc::new(ReceiverState {
        check,
        script,
        served: AtomicUsize::new(0),
        requests: tx,
    });
    let app = Router::new().fallback(handle).with_state(state);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await;
    });
    Receiver {
        base: format!("http://{addr}"),
        requests: rx,
        _stop: stop_tx,
    }
}

/// Always the same answer.
fn always(status: u16, body: &'static str) -> Script {
    Box::new(move |_| (status, Vec::new(), body.to_string()))
}

/// Accepts any request.
fn anything() -> Check {
    Box::new(|_, _| Ok(()))
}

// ---------------------------------------------------------------------------
// What Slack, Discord and a webhook receiver check.

fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/json") {
        return Err(format!("content-type is {content_type:?}"));
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
}

fn text_len(value: &Value, what: &str, max: usize) -> Result<usize, String> {
    let text = value.as_str().ok_or_else(|| format!("{what} is not a string"))?;
    let len = text.chars().count();
    if len == 0 || len > max {
        return Err(format!("{what} has {len} characters (1..={max})"));
    }
    Ok(len)
}

/// Slack's checks of a message (`chat.postMessage` also wants `channel`).
fn check_slack(body: &Value, channel: Option<&str>) -> Result<(), String> {
    text_len(&body["text"], "text", 40_000)?;
    if let Some(channel) = channel
        && body["channel"] != channel
    {
        return Err(format!("channel is {}, expected {channel}", body["channel"]));
    }
    let blocks = body["blocks"].as_array().ok_or("blocks is not an array")?;
    if blocks.is_empty() || blocks.len() > 50 {
        return Err(format!("{} blocks", blocks.len()));
    }
    for (i, block) in blocks.iter().enumerate() {
        let at = |what: &str| format!("blocks[{i}].{what}");
        match block["type"].as_str() {
            Some("header") => {
                if block["text"]["type"] != "plain_text" {
                    return Err(at("text.type must be plain_text"));
                }
                text_len(&block["text"]["text"], &at("text.text"), 150)?;
            }
            Some("section") => {
                let text = block.get("text");
                let fields = block.get("fields");
                if text.is_none() && fields.is_none() {
                    return Err(at("needs text or fields"));
                }
                if let Some(text) = text {
                    if !matches!(text["type"].as_str(), Some("mrkdwn" | "plain_text")) {
                        return Err(at("text.type"));
                    }
                    text_len(&text["text"], &at("text.text"), 3000)?;
                    if text["text"].as_str().unwrap_or_default().matches("```").count() % 2 != 0 {
                        return Err(at("text has an unclosed code block"));
                    }
                }
                if let Some(fields) = fields {
                    let fields = fields.as_array().ok_or_else(|| at("fields is not an array"))?;
                    if fields.is_empty() || fields.len() > 10 {
                        return Err(at(&format!("fields has {} items", fields.len())));
                    }
                    for (j, field) in fields.iter().enumerate() {
                        text_len(&field["text"], &at(&format!("fields[{j}].text")), 2000)?;
                    }
                }
            }
            Some("context") => {
                let elements = block["elements"].as_array().ok_or_else(|| at("elements"))?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err(at("elements count"));
                }
                for (j, element) in elements.iter().enumerate() {
                    text_len(&element["text"], &at(&format!("elements[{j}].text")), 3000)?;
                }
            }
            other => return Err(at(&format!("unexpected type {other:?}"))),
        }
    }
    Ok(())
}

/// Discord's checks of a webhook message.
fn check_discord(body: &Value) -> Result<(), String> {
    text_len(&body["username"], "username", 80)?;
    let embeds = body["embeds"].as_array().ok_or("embeds is not an array")?;
    if embeds.is_empty() || embeds.len() > 10 {
        return Err(format!("{} embeds", embeds.len()));
    }
    let mut total = 0;
    for embed in embeds {
        total += text_len(&embed["title"], "title", 256)?;
        if let Some(description) = embed.get("description") {
            total += text_len(description, "description", 4096)?;
        }
        let fields = embed["fields"].as_array().map(Vec::as_slice).unwrap_or_default();
        if fields.len() > 25 {
            return Err(format!("{} fields", fields.len()));
        }
        for field in fields {
            total += text_len(&field["name"], "field name", 256)?;
            total += text_len(&field["value"], "field value", 1024)?;
        }
        total += text_len(&embed["footer"]["text"], "footer.text", 2048)?;
        let color = embed["color"].as_u64().ok_or("color is not a number")?;
        if color > 0xFF_FF_FF {
            return Err("color out of range".into());
        }
        let timestamp = embed["timestamp"].as_str().ok_or("no timestamp")?;
        chrono::DateTime::parse_from_rfc3339(timestamp).map_err(|e| format!("timestamp: {e}"))?;
        if let Some(url) = embed.get("url") {
            let url = url.as_str().unwrap_or_default();
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!("url {url:?}"));
            }
        }
    }
    if total > 6000 {
        return Err(format!("embeds have {total} characters (6000 at most)"));
    }
    Ok(())
}

/// A webhook receiver's checks: the signature over `<timestamp>.<body>`, a
/// recent timestamp, the delivery and event headers, and the JSON fields.
fn check_webhook(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let json = json_body(headers, body)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| format!("no {name} header"))
    };
    let timestamp: i64 = header("x-worker-timestamp")?
        .parse()
        .map_err(|_| "the timestamp is not a number".to_string())?;
    let now = chrono::Utc::now().timestamp();
    if (now - timestamp).abs() > 300 {
        return Err(format!("the timestamp is {} s away: replay?", now - timestamp));
    }
    let signature = header("x-worker-signature")?;
    let hex_digest = signature.strip_prefix("sha256=").ok_or("signature without sha256=")?;
    let digest = hex::decode(hex_digest).map_err(|_| "signature is not hex".to_string())?;
    if hex_digest != hex_digest.to_lowercase() {
        return Err("signature is not lowercase hex".into());
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&digest).map_err(|_| "bad signature".to_string())?;

    if header("x-worker-delivery")? != json["id"] {
        return Err("X-Worker-Delivery is not the alert id".into());
    }
    let event = json["event"].as_str().or(json["kind"].as_str()).unwrap_or_default();
    if header("x-worker-event")? != event {
        return Err("X-Worker-Event is not the event".into());
    }
    const FIELDS: [&str; 21] = [
        "id",
        "kind",
        "event",
        "rule",
        "job",
        "priority",
        "run_id",
        "attempt",
        "max_attempts",
        "agent",
        "title",
        "text",
        "error",
        "output_tail",
        "link",
        "details",
        "suppressed",
        "window_start",
        "window_end",
        "leader",
        "at",
    ];
    let object = json.as_object().ok_or("the body is not an object")?;
    for field in FIELDS {
        if !object.contains_key(field) {
            return Err(format!("field {field} is missing"));
        }
    }
    chrono::DateTime::parse_from_rfc3339(json["at"].as_str().unwrap_or_default()).map_err(|e| format!("at: {e}"))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Alerts, channels, policies.

fn alert() -> Alert {
    let mut alert = Alert::new(
        AlertKind::Alert,
        "run_dead: backup.nightly attempt 3/3 failed",
        "The run failed its last attempt & went to the dead-letter queue.",
        chrono::Utc::now().timestamp_millis(),
    );
    alert.event = Some(Event::RunDead);
    alert.rule = Some("dead-runs".into());
    alert.job = Some("backup.nightly".into());
    alert.priority = Some(Priority::High);
    alert.run_id = Some("01J0RUNIDEXAMPLE0000000000".into());
    alert.attempt = Some(3);
    alert.max_attempts = Some(3);
    alert.agent = Some("agent-7".into());
    alert.error = Some("exit status 2: <script>alert('x')</script> & more".into());
    alert.output_tail = Some("copying files...\nerror: disk full\n".into());
    alert.link = Some("https://worker.example.com/runs/01J0RUNIDEXAMPLE0000000000".into());
    alert.details = vec![("Duration".into(), "12m 3s".into())];
    alert
}

/// An alert with a huge text, error, output and many details.
fn huge_alert() -> Alert {
    let mut alert = alert();
    alert.title = "Very long title ✓ <&> ".repeat(100);
    alert.text = "text <with> & markup ✓ ".repeat(3_000);
    alert.error = Some("error ``` é <b> ".repeat(50_000));
    alert.output_tail = Some("output line ``` ✓ <x> &\n".repeat(50_000));
    alert.details = (0..40).map(|i| (format!("Detail {i}"), "v".repeat(3_000))).collect();
    alert
}

/// The only channel of an `alerts.yaml` whose channels are `channels:\n  c: {definition}`.
fn channel(definition: &str) -> Channel {
    let text = format!("channels:\n  c: {definition}\n");
    let env = worker_controller::config::env::from_pairs(&[("SMTP_PASSWORD", worker_tests::smtp::SMTP_PASSWORD)]);
    let mut config = parse_alerts_yaml(Path::new("alerts.yaml"), &text, &env)
        .unwrap_or_else(|e| panic!("invalid channel {definition}: {e}"));
    config.channels.remove("c").expect("channel c")
}

fn quick_policy(attempts: u32) -> DeliveryPolicy {
    DeliveryPolicy {
        attempts,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
    }
}

fn deliverer(attempts: u32) -> Deliverer {
    Deliverer::new(quick_policy(attempts)).expect("deliverer")
}

// ---------------------------------------------------------------------------
// HTTP channels.

#[tokio::test]
async fn slack_webhook_messages_are_well_formed_even_for_huge_alerts() {
    let mut slack = receiver(
        Box::new(|headers, body| check_slack(&json_body(headers, body)?, None)),
        always(200, "ok"),
    )
    .await;
    let channel = channel(&format!(
        "{{ type: slack, webhook_url: \"{}/services/T000/B000/hook-s3cret\" }}",
        slack.base
    ));
    let deliverer = deliverer(3);
    for alert in [alert(), huge_alert()] {
        let delivery = deliverer.deliver(&channel, &alert).await;
        assert_eq!(
            (delivery.status, delivery.attempts, delivery.answer.as_str()),
            (AlertStatus::Sent, 1, "200 OK: ok")
        );
        let request = slack.next().await;
        assert_eq!(request.verdict, Ok(()));
        assert_eq!(request.path, "/services/T000/B000/hook-s3cret");
        let body = request.json();
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with(if alert.title.starts_with("run_dead") {
                    "run_dead: backup.nightly"
                } else {
                    "Very long title ✓ &lt;&amp;&gt;"
                })
        );
        let everything = body.to_string();
        if alert.title.starts_with("run_dead") {
            for fact in [
                "backup.nightly",
                "01J0RUNIDEXAMPLE0000000000",
                "3/3",
                "agent-7",
                "high",
                "12m 3s",
                "disk full",
            ] {
                assert!(everything.contains(fact), "the message lacks {fact}");
            }
            assert!(everything.contains("&lt;script&gt;"), "mrkdwn is escaped");
        }
    }
    slack.assert_no_more();
}

#[tokio::test]
async fn slack_bot_posts_with_its_token_and_channel() {
    let check: Check = Box::new(|headers, body| {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some("Bearer xoxb-test-t0ken") {
            return Err(format!("authorization is {auth:?}"));
        }
        check_slack(&json_body(headers, body)?, Some("#ops"))
    });
    let script: Script = Box::new(|_| {
        (
            200,
            vec![("content-type", "application/json".to_string())],
            r#"{"ok":true,"channel":"C0OPS","ts":"1714564800.000100"}"#.to_string(),
        )
    });
    let mut slack = receiver(check, script).await;
    let definition = format!(
        "{{ type: slack, token: xoxb-test-t0ken, channel: \"#ops\", api_url: \"{}/api\" }}",
        slack.base
    );
    let delivery = deliverer(3).deliver(&channel(&definition), &huge_alert()).await;
    assert_eq!(delivery.status, AlertStatus::Sent, "{}", delivery.answer);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.answer, "200 OK: slack ok, channel C0OPS, ts 1714564800.000100");
    let request = slack.next().await;
    assert_eq!(request.verdict, Ok(()));
    assert_eq!(request.path, "/api/chat.postMessage");
    assert_eq!(request.json()["channel"], "#ops");
    slack.assert_no_more();
}

#[tokio::test]
async fn slack_bot_errors_fail_at_once_with_slacks_reason() {
    let script: Script = Box::new(|_| {
        (
            200,
            vec![("content-type", "application/json".to_string())],
            r#"{"ok":false,"error":"channel_not_found"}"#.to_string(),
        )
    });
    let mut slack = receiver(anything(), script).await;
    let definition = format!(
        "{{ type: slack, token: xoxb-test-t0ken, channel: \"#nowhere\", api_url: \"{}/api\" }}",
        slack.base
    );
    let delivery = deliverer(4).deliver(&channel(&definition), &alert()).await;
    assert_eq!((delivery.status, delivery.attempts), (AlertStatus::Failed, 1));
    assert!(delivery.answer.contains("channel_not_found"), "{}", delivery.answer);
    assert!(!delivery.answer.contains("t0ken"));
    slack.next().await;
    slack.assert_no_more();
}

#[tokio::test]
async fn discord_embeds_stay_within_the_limits() {
    let mut discord = receiver(
        Box::new(|headers, body| check_discord(&json_body(headers, body)?)),
        always(204, ""),
    )
    .await;
    let channel = channel(&format!(
        "{{ type: discord, webhook_url: \"{}/api/webhooks/123/discord-s3cret\" }}",
        discord.base
    ));
    let deliverer = deliverer(3);
    for alert in [alert(), huge_alert()] {
        let delivery = deliverer.deliver(&channel, &alert).await;
        assert_eq!(
            (delivery.status, delivery.attempts, delivery.answer.as_str()),
            (AlertStatus::Sent, 1, "204 No Content")
        );
        let request = discord.next().await;
        assert_eq!(request.verdict, Ok(()));
        let embed = &request.json()["embeds"][0];
        assert_eq!(embed["color"], 0xD9_2D_20, "red for a dead run");
    }
    discord.assert_no_more();
}

#[tokio::test]
async fn webhooks_are_signed_and_carry_every_field() {
    let mut hook = receiver(
        Box::new(|headers, body| check_webhook("hmac-key-s3cret", headers, body)),
        always(200, "thanks"),
    )
    .await;
    let channel = channel(&format!(
        "{{ type: webhook, url: \"{}/hooks/worker\", secret: hmac-key-s3cret }}",
        hook.base
    ));
    let alert = alert();
    let delivery = deliverer(3).deliver(&channel, &alert).await;
    assert_eq!(
        (delivery.status, delivery.attempts, delivery.answer.as_str()),
        (AlertStatus::Sent, 1, "200 OK: thanks")
    );
    let request = hook.next().await;
    assert_eq!(request.verdict, Ok(()));
    assert_eq!(request.path, "/hooks/worker");
    assert_eq!(request.headers["x-worker-event"], "run_dead");
    assert_eq!(request.headers["x-worker-delivery"], alert.id.as_str());
    let body = request.json();
    assert_eq!(body["id"], alert.id);
    assert_eq!(body["kind"], "alert");
    assert_eq!(body["job"], "backup.nightly");
    assert_eq!(body["priority"], "high");
    assert_eq!(body["attempt"], 3);
    assert_eq!(body["error"], alert.error.clone().unwrap());
    assert_eq!(body["details"], json!({ "Duration": "12m 3s" }));
    assert_eq!(body["suppressed"], Value::Null);
    assert!(body["at"].as_str().unwrap().ends_with('Z'));

    // A test message has no event: the header names its kind.
    let test = Alert::new(
        AlertKind::Test,
        "test: channel c works",
        "Hello.",
        chrono::Utc::now().timestamp_millis(),
    );
    let delivery = deliverer(1).deliver(&channel, &test).await;
    assert_eq!(delivery.status, AlertStatus::Sent, "{}", delivery.answer);
    let request = hook.next().await;
    assert_eq!(request.verdict, Ok(()));
    assert_eq!(request.headers["x-worker-event"], "test");
    assert_eq!(request.json()["event"], Value::Null);

    // A receiver with another secret refuses the signature: 400, not retried.
    let mut strict = receiver(
        Box::new(|headers, body| check_webhook("another-secret", headers, body)),
        always(200, "thanks"),
    )
    .await;
    let wrong = self::channel(&format!(
        "{{ type: webhook, url: \"{}/hooks/worker\", secret: hmac-key-s3cret }}",
        strict.base
    ));
    let delivery = deliverer(3).deliver(&wrong, &alert).await;
    assert_eq!((delivery.status, delivery.attempts), (AlertStatus::Failed, 1));
    assert_eq!(delivery.answer, "400 Bad Request: bad signature");
    assert!(!delivery.answer.contains("s3cret"));
    assert_eq!(strict.next().await.verdict, Err("bad signature".into()));
    strict.assert_no_more();
}

#[tokio::test]
async fn unavailable_twice_then_accepted_is_sent_on_the_third_attempt() {
    let script: Script = Box::new(|n| match n {
        0 | 1 => (503, Vec::new(), "busy".to_string()),
        _ => (200, Vec::new(), "ok".to_string()),
    });
    let mut slack = receiver(anything(), script).await;
    let channel = channel(&format!(
        "{{ type: slack, webhook_url: \"{}/services/x/y/z-s3cret\" }}",
        slack.base
    ));
    let delivery = deliverer(5).deliver(&channel, &alert()).await;
    assert_eq!(
        (delivery.status, delivery.attempts, delivery.answer.as_str()),
        (AlertStatus::Sent, 3, "200 OK: ok")
    );
    for _ in 0..3 {
        slack.next().await;
    }
    slack.assert_no_more();
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_maximum_backoff() {
    let script: Script = Box::new(|n| match n {
        0 => (429, vec![("retry-after", "30".to_string())], "slow down".to_string()),
        _ => (200, Vec::new(), "ok".to_string()),
    });
    let mut hook = receiver(anything(), script).await;
    let channel = channel(&format!("{{ type: webhook, url: \"{}/h\", secret: k }}", hook.base));
    let started = Instant::now();
    let delivery = deliverer(3).deliver(&channel, &alert()).await;
    assert_eq!((delivery.status, delivery.attempts), (AlertStatus::Sent, 2));
    // 30 s asked, capped at max_backoff (200 ms).
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    hook.next().await;
    hook.next().await;
    hook.assert_no_more();
}

#[tokio::test]
async fn a_server_error_every_time_fails_after_all_attempts() {
    let mut slack = receiver(anything(), always(500, "internal trouble")).await;
    let url = format!("{}/services/T111/B222/secret-path-s3cret", slack.base);
    let channel = channel(&format!("{{ type: slack, webhook_url: \"{url}\" }}"));
    let delivery = deliverer(3).deliver(&channel, &alert()).await;
    assert_eq!((delivery.status, delivery.attempts), (AlertStatus::Failed, 3));
    assert_eq!(delivery.answer, "500 Internal Server Error: internal trouble");
    for _ in 0..3 {
        slack.next().await;
    }
    slack.assert_no_more();
}

#[tokio::test]
async fn a_client_error_fails_after_one_attempt() {
    let mut discord = receiver(anything(), always(400, r#"{"message": "Invalid Form Body"}"#)).await;
    let channel = channel(&format!(
        "{{ type: discord, webhook_url: \"{}/api/webhooks/1/tok-s3cret\" }}",
        discord.base
    ));
    let delivery = deliverer(5).deliver(&channel, &alert()).await;
    assert_eq!((delivery.status, delivery.attempts), (AlertStatus::Failed, 1));
    assert_eq!(delivery.answer, r#"400 Bad Request: {"message": "Invalid Form Body"}"#);
    discord.next().await;
    discord.assert_no_more();
}

#[tokio::test]
async fn a_closed_port_is_a_retryable_connection_error_without_the_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let secret_url = format!("http://127.0.0.1:{port}/api/webhooks/987654/very-s3cret-token");
    let channel = channel(&format!("{{ type: discord, webhook_url: \"{secret_url}\" }}"));
    let deliverer = deliverer(2);

    let error = deliverer
        .attempt(&channel, &alert())
        .await
        .expect_err("nothing listens");
    assert!(error.retryable, "{error:?}");
    assert!(error.message.starts_with("cannot connect"), "{}", error.message);
    for part in [
        secret_url.as_str(),
        "http://",
        "/api/webhooks",
        "987654",
        "very-s3cret-token",
        "s3cret",
    ] {
        assert!(!error.message.contains(part), "{:?} shows {part:?}", error.message);
    }

    let delivery = deliverer.deliver(&channel, &alert()).await;
    assert_eq!((delivery.status, delivery.attempts), (AlertStatus::Failed, 2));
    assert!(!delivery.answer.contains("s3cret") && !delivery.answer.contains("/api/webhooks"));
}

// ---------------------------------------------------------------------------
// Email through a real SMTP server.

use worker_tests::smtp::{SMTP_USER, SmtpServer};

#[tokio::test]
async fn email_alerts_arrive_as_multipart_alternative_to_every_recipient() {
    let server = SmtpServer::start().await;
    let channel = channel(&format!(
        "{{ type: email, smtp: {{ host: 127.0.0.1, port: {}, tls: none, username: {SMTP_USER}, password: \"${{SMTP_PASSWORD}}\" }}, \
         from: \"Worker Alerts <worker@example.com>\", to: [ops@example.com, \"On Call <oncall@example.org>\"] }}",
        server.port
    ));
    let alert = alert();
    let delivery = deliverer(3).deliver(&channel, &alert).await;
    assert_eq!(delivery.status, AlertStatus::Sent, "{}", delivery.answer);
    assert_eq!(delivery.attempts, 1);
    assert!(delivery.answer.starts_with("250"), "{}", delivery.answer);

    let mails = server.delivered();
    assert_eq!(mails.len(), 1, "one message for both recipients");
    let mail = mailparse::parse_mail(&mails[0]).expect("a parsable message");
    let header = |name: &str| mail.headers.get_first_value(name).unwrap_or_default();
    assert_eq!(header("From"), "\"Worker Alerts\" <worker@example.com>");
    let to = header("To");
    assert_eq!(to, "ops@example.com, \"On Call\" <oncall@example.org>");
    let envelope = header("X-RcptTo");
    assert!(
        envelope.contains("ops@example.com") && envelope.contains("oncall@example.org"),
        "{envelope}"
    );
    assert_eq!(
        header("Subject"),
        "[Worker] run_dead: backup.nightly attempt 3/3 failed"
    );
    assert!(header("Message-ID").contains(&alert.id));
    assert_eq!(mail.ctype.mimetype, "multipart/alternative");
    let [plain, html] = mail.subparts.as_slice() else {
        panic!("two parts expected, got {}", mail.subparts.len());
    };
    assert_eq!(plain.ctype.mimetype, "text/plain");
    assert_eq!(html.ctype.mimetype, "text/html");
    let plain = plain.get_body().expect("text body");
    let html = html.get_body().expect("html body");
    for body in [&plain, &html] {
        for fact in [
            "backup.nightly",
            "01J0RUNIDEXAMPLE0000000000",
            "agent-7",
            "exit status 2",
            "disk full",
        ] {
            assert!(body.contains(fact), "a body lacks {fact}: {body}");
        }
    }
    assert!(plain.contains("<script>alert('x')</script> & more"), "{plain}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more"),
        "{html}"
    );
    assert!(!html.contains("<script>"));
    assert!(html.contains("<pre") && html.contains("https://worker.example.com/runs/01J0RUNIDEXAMPLE0000000000"));
}

#[tokio::test]
async fn a_wrong_smtp_password_fails_at_once_with_535() {
    let server = SmtpServer::start().await;
    let channel = channel(&format!(
        "{{ type: email, smtp: {{ host: 127.0.0.1, port: {}, tls: none, username: {SMTP_USER}, password: wrong-password }}, \
         from: worker@example.com, to: [ops@example.com] }}",
        server.port
    ));
    let delivery = deliverer(4).deliver(&channel, &alert()).await;
    assert_eq!(
        (delivery.status, delivery.attempts),
        (AlertStatus::Failed, 1),
        "{}",
        delivery.answer
    );
    assert!(delivery.answer.starts_with("535"), "{}", delivery.answer);
    assert!(!delivery.answer.contains("wrong-password"));
    assert!(server.delivered().is_empty());
}
