//! The executor against real servers on loopback (see `test_server`).

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::sync::mpsc;
use worker_proto::v1::{AgentMessage, HttpSpec, agent_message};

use super::test_server::{Reply, Server};
use super::*;
use crate::executor::tests::context;
use crate::executor::{Outcome, StopSignal};
use crate::live::{LiveOutput, OutputLink, SharedLink, spawn_flusher};

fn get(url: &str) -> HttpSpec {
    HttpSpec {
        url: url.into(),
        ..Default::default()
    }
}

/// The test's environment for `${VAR}`: `API_TOKEN` only.
fn env(name: &str) -> Option<String> {
    (name == "API_TOKEN").then(|| "tok-Zq81".to_string())
}

async fn run_spec(spec: &HttpSpec) -> Report {
    run_in(spec, &context(), None).await
}

async fn run_in(spec: &HttpSpec, ctx: &Context, timeout: Option<Duration>) -> Report {
    let (_handle, stop) = StopSignal::new(timeout);
    run_with_env(spec, ctx, stop, &env).await
}

fn span<'a>(report: &'a Report, name: &str) -> Option<&'a worker_proto::v1::Span> {
    report.measures.spans().iter().find(|s| s.name == name)
}

fn metric(report: &Report, name: &str) -> Option<f64> {
    report
        .measures
        .metrics()
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.value)
}

#[tokio::test]
async fn a_2xx_succeeds_with_the_status_line_and_body_as_output() {
    let server = Server::start(|_| Reply::status(200, "hello\n")).await;
    let report = run_spec(&get(&server.url("/ok?key=abc"))).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.output, "HTTP/1.1 200 OK\nhello\n");
    assert_eq!(report.exit_code, None);
    assert!(report.error.is_empty());
    let got = server.received();
    assert_eq!((got[0].method.as_str(), got[0].target.as_str()), ("GET", "/ok?key=abc"));
    assert!(got[0].header("user-agent").unwrap().starts_with("worker-agent/"));

    assert_eq!(metric(&report, "response_bytes"), Some(6.0));
    for name in ["connect", "first_byte", "total"] {
        let s = span(&report, name).unwrap_or_else(|| panic!("no {name} span: {report:?}"));
        assert_eq!(s.count, 1, "{name}");
    }
    let total = span(&report, "total").unwrap().total_us;
    assert!(span(&report, "first_byte").unwrap().total_us <= total);
    assert!(total > 0);
}

#[tokio::test]
async fn templates_fill_the_url_headers_and_body() {
    let server = Server::start(|_| Reply::status(201, "")).await;
    let mut ctx = context();
    ctx.payload = r#"{"id": 42, "name": "Ada L", "lead": {"score": 0.5}}"#.into();
    let spec = HttpSpec {
        method: "POST".into(),
        url: server.url("/leads/{{payload.id}}?name={{payload.name}}"),
        headers: [
            ("Content-Type".to_string(), "application/json".to_string()),
            (
                "X-Run".to_string(),
                "{{run.id}}#{{run.attempt}}@{{run.job}}".to_string(),
            ),
        ]
        .into(),
        body: r#"{"lead": {{payload.lead}}, "all": {{payload}}}"#.into(),
        ..Default::default()
    };
    let report = run_in(&spec, &ctx, None).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.output, "HTTP/1.1 201 Created\n");
    let got = &server.received()[0];
    assert_eq!(got.method, "POST");
    assert_eq!(got.target, "/leads/42?name=Ada%20L");
    assert_eq!(got.header("x-run"), Some("run-1#1@test.job"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    assert_eq!(
        got.body,
        format!(r#"{{"lead": {{"score":0.5}}, "all": {}}}"#, ctx.payload)
    );
}

#[tokio::test]
async fn a_503_is_retryable_and_honours_retry_after_in_seconds() {
    let server = Server::start(|_| Reply::with_header(503, "Retry-After", "7", "busy")).await;
    let report = run_spec(&get(&server.url("/busy?token=hidden"))).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(!report.permanent);
    assert_eq!(report.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(
        report.error,
        format!("HTTP 503 Service Unavailable from GET {}", server.url("/busy"))
    );
    assert_eq!(report.output, "HTTP/1.1 503 Service Unavailable\nbusy");
}

#[tokio::test]
async fn retry_after_may_be_an_http_date() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let server = Server::start(move |_| Reply::with_header(429, "Retry-After", &at, "")).await;
    let report = run_spec(&get(&server.url("/"))).await;
    assert!(!report.permanent, "{report:?}");
    let wait = report.retry_after.expect("retry_after");
    // Whole seconds in the header: 29 to 30 s from now.
    assert!(
        (Duration::from_secs(28)..=Duration::from_secs(30)).contains(&wait),
        "{wait:?}"
    );
}

#[tokio::test]
async fn a_404_fails_permanently_and_ignores_retry_after() {
    let server = Server::start(|_| Reply::with_header(404, "Retry-After", "5", "no such lead")).await;
    let spec = HttpSpec {
        method: "DELETE".into(),
        url: server.url("/leads/9"),
        ..Default::default()
    };
    let report = run_spec(&spec).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(report.permanent);
    assert_eq!(report.retry_after, None);
    assert_eq!(
        report.error,
        format!("HTTP 404 Not Found from DELETE {}", server.url("/leads/9"))
    );
    assert_eq!(report.output, "HTTP/1.1 404 Not Found\nno such lead");
}

#[tokio::test]
async fn expect_status_and_retry_on_override_the_defaults() {
    let server = Server::start(|r| {
        let code = r.target.trim_start_matches('/').parse().unwrap();
        Reply::status(code, "")
    })
    .await;
    let spec = |code: u16, expect: &[&str], retry: &[&str]| HttpSpec {
        url: server.url(&format!("/{code}")),
        expect_status: expect.iter().map(|s| s.to_string()).collect(),
        retry_on: retry.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    // 404 expected: success.
    let r = run_spec(&spec(404, &["200", "404"], &[])).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:?}");
    // 200 not expected: a failure, permanent by default.
    let r = run_spec(&spec(200, &["201-204"], &[])).await;
    assert_eq!((r.outcome, r.permanent), (Outcome::Failed, true), "{r:?}");
    // 409 retryable when listed; 503 permanent when 5xx is not.
    let r = run_spec(&spec(409, &[], &["409"])).await;
    assert_eq!((r.outcome, r.permanent), (Outcome::Failed, false), "{r:?}");
    let r = run_spec(&spec(503, &[], &["409"])).await;
    assert_eq!((r.outcome, r.permanent), (Outcome::Failed, true), "{r:?}");
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_refused_connection_is_a_network_failure() {
    let port = closed_port().await;
    let report = run_spec(&get(&format!("http://127.0.0.1:{port}/x?k=secretquery"))).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(!report.permanent, "{report:?}");
    assert!(
        report
            .error
            .starts_with(&format!("connect to 127.0.0.1:{port} failed: ")),
        "{}",
        report.error
    );
    assert!(report.error.contains("refused"), "{}", report.error);
    assert!(!report.error.contains("secretquery"), "{}", report.error);
    assert!(report.output.is_empty());

    // Without `network` in retry_on it is permanent.
    let spec = HttpSpec {
        retry_on: vec!["5xx".into()],
        ..get(&format!("http://127.0.0.1:{port}/"))
    };
    assert!(run_spec(&spec).await.permanent);
}

#[tokio::test]
async fn a_body_cut_short_is_a_network_failure_with_what_arrived() {
    let server = Server::start(|_| Reply::Cut("the first part".into())).await;
    let report = run_spec(&get(&server.url("/cut"))).await;
    assert_eq!(
        (report.outcome, report.permanent),
        (Outcome::Failed, false),
        "{report:?}"
    );
    assert!(
        report
            .error
            .starts_with(&format!("reading the response of GET {} failed: ", server.url("/cut"))),
        "{}",
        report.error
    );
    assert_eq!(report.output, "HTTP/1.1 200 OK\nthe first part");
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() {
    // /r/N redirects to /r/N-1; /r/0 answers.
    let server = Server::start(
        |r| match r.target.strip_prefix("/r/").and_then(|n| n.parse::<u32>().ok()) {
            Some(0) | None => Reply::status(200, "arrived"),
            Some(n) => Reply::with_header(302, "Location", &format!("/r/{}", n - 1), ""),
        },
    )
    .await;
    let spec = |max: Option<u32>| HttpSpec {
        max_redirects: max,
        ..get(&server.url("/r/3"))
    };
    let r = run_spec(&spec(None)).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:?}");
    assert_eq!(r.output, "HTTP/1.1 200 OK\narrived");
    let r = run_spec(&spec(Some(3))).await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:?}");

    let r = run_spec(&spec(Some(2))).await;
    assert_eq!((r.outcome, r.permanent), (Outcome::Failed, true), "{r:?}");
    assert_eq!(
        r.error,
        format!(
            "HTTP 302 Found from GET {} (redirected to {}); redirect not followed: max_redirects is 2",
            server.url("/r/3"),
            server.url("/r/1")
        )
    );
    let r = run_spec(&spec(Some(0))).await;
    assert_eq!(
        r.error,
        format!(
            "HTTP 302 Found from GET {}; redirect not followed: max_redirects is 0",
            server.url("/r/3")
        )
    );
    // A 3xx the job expects is a success, not followed.
    let r = run_spec(&HttpSpec {
        expect_status: vec!["3xx".into()],
        ..spec(Some(0))
    })
    .await;
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:?}");
}

#[tokio::test]
async fn the_request_timeout_is_a_retryable_network_failure() {
    let server = Server::start(|_| Reply::Hang).await;
    let spec = HttpSpec {
        timeout_ms: 300,
        ..get(&server.url("/slow"))
    };
    let started = std::time::Instant::now();
    let report = run_spec(&spec).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(!report.permanent);
    assert_eq!(
        report.error,
        format!("request timed out after 300ms: GET {}", server.url("/slow"))
    );
    server.wait_closed(1).await;
}

#[tokio::test]
async fn the_job_timeout_stops_the_request() {
    let server = Server::start(|_| Reply::Hang).await;
    let report = run_in(&get(&server.url("/")), &context(), Some(Duration::from_millis(300))).await;
    assert_eq!(report.outcome, Outcome::TimedOut, "{report:?}");
    assert_eq!(report.error, "timed out after 300ms");
    // The connection was closed: the request does not linger.
    server.wait_closed(1).await;
}

#[tokio::test]
async fn cancel_aborts_the_request_in_flight() {
    let server = Server::start(|_| Reply::Hang).await;
    let (handle, stop) = StopSignal::new(None);
    let spec = get(&server.url("/wait"));
    let task = tokio::spawn(async move { run_with_env(&spec, &context(), stop, &env).await });
    server.wait_received(1).await;
    handle.cancel();
    let report = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("cancel took over 3 s")
        .unwrap();
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(report.error, "cancelled");
    server.wait_closed(1).await;
}

#[tokio::test]
async fn secrets_reach_the_server_and_are_masked_in_the_output() {
    // Echoes the Authorization header back in the body.
    let server = Server::start(|r| {
        Reply::status(
            500,
            &format!("you sent {}", r.header("authorization").unwrap_or("nothing")),
        )
    })
    .await;
    let mut ctx = context();
    ctx.http = HttpSettings::new(crate::parse_allow_env("API_TOKEN").unwrap(), None).unwrap();
    let (live, output) = live_output();
    ctx.live = Some(live.clone());
    let spec = HttpSpec {
        headers: [("Authorization".to_string(), "Bearer ${API_TOKEN}".to_string())].into(),
        ..get(&server.url("/echo"))
    };
    let report = run_in(&spec, &ctx, None).await;
    assert_eq!(server.received()[0].header("authorization"), Some("Bearer tok-Zq81"));
    assert_eq!(report.output, "HTTP/1.1 500 Internal Server Error\nyou sent Bearer ***");
    assert!(!format!("{report:?}").contains("tok-Zq81"), "{report:?}");
    live.close();
    assert_eq!(
        output.await.unwrap(),
        "HTTP/1.1 500 Internal Server Error\nyou sent Bearer ***"
    );
}

/// A live output and the text its flusher sends, once closed.
fn live_output() -> (LiveOutput, tokio::task::JoinHandle<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<AgentMessage>();
    let link: SharedLink = Arc::new(Mutex::new(Some(OutputLink::new(tx, Arc::new(AtomicUsize::new(0))))));
    let live = LiveOutput::new();
    let flusher = spawn_flusher(live.clone(), link, "run-1".into(), 1);
    let text = tokio::spawn(async move {
        flusher.await.unwrap();
        let mut text = Vec::new();
        while let Ok(message) = rx.try_recv() {
            if let Some(agent_message::Msg::Output(o)) = message.msg {
                text.extend(o.data);
            }
        }
        String::from_utf8(text).unwrap()
    });
    (live, text)
}

#[tokio::test]
async fn a_variable_not_allowed_fails_before_anything_is_sent() {
    let server = Server::start(|_| Reply::status(200, "")).await;
    let spec = HttpSpec {
        headers: [("X-Key".to_string(), "${API_TOKEN}".to_string())].into(),
        ..get(&server.url("/"))
    };
    // context() allows no variable.
    let report = run_spec(&spec).await;
    assert_eq!((report.outcome, report.permanent), (Outcome::Failed, true));
    assert!(
        report
            .error
            .starts_with("http.headers.X-Key: ${API_TOKEN} may not be interpolated"),
        "{}",
        report.error
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn secrets_do_not_follow_a_redirect_to_another_origin() {
    let other = Server::start(|_| Reply::status(200, "other")).await;
    let target = other.url("/landing");
    let server = Server::start(move |_| Reply::with_header(307, "Location", &target, "")).await;
    let mut ctx = context();
    ctx.http = HttpSettings::new(crate::parse_allow_env("API_TOKEN").unwrap(), None).unwrap();
    let with_secret = HttpSpec {
        headers: [("X-Api-Key".to_string(), "${API_TOKEN}".to_string())].into(),
        ..get(&server.url("/start"))
    };
    let report = run_in(&with_secret, &ctx, None).await;
    assert_eq!(
        (report.outcome, report.permanent),
        (Outcome::Failed, true),
        "{report:?}"
    );
    assert!(
        report.error.starts_with(&format!(
            "redirect from {} to {} not followed",
            server.url("/start"),
            other.url("/landing")
        )),
        "{}",
        report.error
    );
    assert!(other.received().is_empty());

    // Without secrets the redirect is followed.
    let report = run_in(&get(&server.url("/start")), &ctx, None).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(other.received().len(), 1);
}

#[tokio::test]
async fn head_and_204_have_no_body() {
    let server = Server::start(|r| {
        if r.method == "HEAD" {
            Reply::status(200, "ignored")
        } else {
            Reply::status(204, "")
        }
    })
    .await;
    let head = HttpSpec {
        method: "HEAD".into(),
        ..get(&server.url("/"))
    };
    let r = run_spec(&head).await;
    assert_eq!(r.output, "HTTP/1.1 200 OK\n");
    assert_eq!(metric(&r, "response_bytes"), Some(0.0));
    let r = run_spec(&get(&server.url("/"))).await;
    assert_eq!(r.output, "HTTP/1.1 204 No Content\n");
}

#[tokio::test]
async fn a_long_body_keeps_its_tail_under_the_cap() {
    let body: String = (0..20_000).map(|i| format!("{i}\n")).collect();
    let len = body.len();
    let server = Server::start(move |_| Reply::status(200, &body)).await;
    let mut ctx = context();
    ctx.output_cap = 1000;
    let report = run_in(&get(&server.url("/big")), &ctx, None).await;
    assert_eq!(report.outcome, Outcome::Succeeded);
    assert!(
        report.output.starts_with("HTTP/1.1 200 OK\n[... "),
        "{}",
        &report.output[..60]
    );
    assert!(report.output.ends_with("19998\n19999\n"));
    assert!(report.output.len() < 1100, "{}", report.output.len());
    assert_eq!(metric(&report, "response_bytes"), Some(len as f64));
}

#[tokio::test]
async fn a_spec_error_is_permanent() {
    let report = run_spec(&get("https://x.example/{{nope}}")).await;
    assert_eq!((report.outcome, report.permanent), (Outcome::Failed, true));
    assert!(
        report.error.starts_with("http.url: unknown placeholder"),
        "{}",
        report.error
    );
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1: the CA's
/// PEM file, and the server's TLS configuration.
fn pki(dir: &std::path::Path) -> (PathBuf, Arc<rustls::ServerConfig>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "http executor test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.join("http-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();

    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (ca_path, Arc::new(config))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("worker-agent-http-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn https_with_the_extra_ca_succeeds_and_without_it_fails() {
    let dir = temp_dir("tls");
    let (ca, tls) = pki(&dir);
    let server = Server::start_with(Some(tls), |_| Reply::status(200, "secure")).await;

    let mut ctx = context();
    ctx.http = HttpSettings::new(Vec::new(), Some(&ca)).unwrap();
    let report = run_in(&get(&server.url("/tls")), &ctx, None).await;
    assert_eq!(report.outcome, Outcome::Succeeded, "{report:?}");
    assert_eq!(report.output, "HTTP/1.1 200 OK\nsecure");
    assert!(span(&report, "connect").is_some());

    // The system's roots alone do not know the test's CA.
    let report = run_spec(&get(&server.url("/tls"))).await;
    assert_eq!(
        (report.outcome, report.permanent),
        (Outcome::Failed, false),
        "{report:?}"
    );
    let port = server.base.rsplit(':').next().unwrap();
    assert!(
        report
            .error
            .starts_with(&format!("connect to localhost:{port} failed: ")),
        "{}",
        report.error
    );
    assert!(report.error.contains("certificate"), "{}", report.error);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_bad_http_ca_file_is_a_configuration_error_naming_the_flag() {
    let dir = temp_dir("bad-ca");
    let missing = dir.join("missing.pem");
    let err = HttpSettings::new(Vec::new(), Some(&missing)).unwrap_err().to_string();
    assert!(
        err.contains(&format!("--http-ca {}: cannot read", missing.display())),
        "{err}"
    );
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = HttpSettings::new(Vec::new(), Some(&junk)).unwrap_err().to_string();
    assert!(
        err.contains("--http-ca") && err.contains("holds no PEM certificate"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}
