//! The web UI at the HTTP level (no browser): sign-in, the session cookie,
//! sessions ending with their token, the CSRF guard in front of every
//! state-changing request, and pages that never reflect input unescaped.
//! The areas' own behaviour is tested in `web_jobs.rs`, `web_runs.rs`,
//! `web_alerts.rs`; the journey in a real browser in `web_browser.rs`.

use worker_tests::auth::BOOTSTRAP_SECRET;
use worker_tests::http::request;
use worker_tests::web::WebSession;
use worker_tests::{Controller, TestEnv};

/// Every state-changing route of the UI, with a job, run, rule, channel and
/// agent that need not exist: the guard refuses before any handler runs.
/// Signing out comes last (the test posts every route for real at its end).
const POST_ROUTES: &[&str] = &[
    "/jobs/new",
    "/jobs/hello/edit",
    "/jobs/hello/delete",
    "/jobs/hello/enable",
    "/jobs/hello/disable",
    "/jobs/hello/pause",
    "/jobs/hello/resume",
    "/jobs/hello/run",
    "/runs/01NOSUCHRUN/cancel",
    "/runs/01NOSUCHRUN/retry",
    "/runs/01NOSUCHRUN/cancel-workflow",
    "/queue/cancel",
    "/dlq/retry",
    "/dlq/purge",
    "/agents/01NOSUCHAGENT/drain",
    "/alerts/channels/new",
    "/alerts/channels/hook/edit",
    "/alerts/channels/hook/delete",
    "/alerts/channels/hook/test",
    "/alerts/channels/hook/toggle",
    "/alerts/rules/new",
    "/alerts/rules/slow/edit",
    "/alerts/rules/slow/delete",
    "/alerts/rules/slow/toggle",
    "/logout",
];

const CONFIG: &str = "jobs:\n  hello:\n    shell: echo hello\n";

fn env() -> TestEnv {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    env
}

fn http(ctl: &Controller) -> std::net::SocketAddr {
    ctl.http_addr.expect("the controller serves HTTP")
}

#[tokio::test]
async fn without_tokens_the_browser_is_signed_in_at_once_with_a_strict_cookie() {
    let env = env();
    let ctl = env.start_controller().await;
    let addr = http(&ctl);
    let first = request(addr, "GET", "/", &[], None).await;
    assert_eq!(first.status, 303);
    assert_eq!(first.header("location"), Some("/login?next=%2F"));
    let login = request(addr, "GET", "/login?next=%2Fjobs", &[], None).await;
    assert_eq!(login.status, 303, "no sign-in form without tokens: {}", login.body);
    assert_eq!(login.header("location"), Some("/jobs"));
    let cookie = login.header("set-cookie").expect("a session cookie");
    for part in ["worker_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{part} missing in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP on loopback: {cookie}");
    let mut s = WebSession::sign_in(addr, None).await;
    let home = s.get("/").await;
    assert!(home.body.contains("anonymous · admin"), "{}", home.body);
    assert!(!home.body.contains("Sign out"), "nothing to sign out of without tokens");
}

#[tokio::test]
async fn the_cookie_is_secure_when_the_ui_is_reached_over_https() {
    let env = env();
    let ctl = env
        .start_controller_with(&["--web-url", "https://worker.example.com"])
        .await;
    let login = request(http(&ctl), "GET", "/login", &[], None).await;
    let cookie = login.header("set-cookie").expect("a session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
}

#[tokio::test]
async fn tokens_sign_in_and_a_revoked_token_ends_its_sessions() {
    let env = env();
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let addr = http(&ctl);
    let viewer = ctl.create_token(BOOTSTRAP_SECRET, "ann", "viewer", &[]).await;
    let agent = ctl.create_token(BOOTSTRAP_SECRET, "host-1", "agent", &[]).await;

    let form = request(addr, "GET", "/login", &[], None).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("id=\"token\""), "{}", form.body);

    let mut s = WebSession::anonymous(addr);
    let wrong = s.post_form_raw("/login", &[("token", "wk_not-a-token")]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(
        wrong.body.contains("role=\"alert\""),
        "the reason is shown: {}",
        wrong.body
    );
    let refused = s.post_form_raw("/login", &[("token", &agent)]).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("agent tokens cannot sign in"), "{}", refused.body);

    let mut ann = WebSession::sign_in(addr, Some(&viewer)).await;
    let home = ann.get("/").await;
    assert!(home.body.contains("ann · viewer"), "{}", home.body);
    assert!(home.body.contains("Sign out"));
    assert!(!home.body.contains(&viewer), "the token never appears in a page");

    ctl.cli_with_token(BOOTSTRAP_SECRET, &["tokens", "revoke", "ann"])
        .await
        .expect_code(0);
    let after = ann.get("/").await;
    assert_eq!(after.status, 303, "the session ended with its token: {}", after.body);
    assert!(after.header("location").unwrap_or("").starts_with("/login"));

    // Signing out needs the CSRF token too, and ends the session.
    let mut admin = WebSession::sign_in(addr, Some(BOOTSTRAP_SECRET)).await;
    assert_eq!(admin.post_form_raw("/logout", &[]).await.status, 403);
    let out = admin.post("/logout", &[]).await;
    assert_eq!(out.status, 303);
    assert!(out.header("set-cookie").unwrap_or("").contains("Max-Age=0"));
    assert_eq!(admin.get("/").await.status, 303, "signed out");
}

#[tokio::test]
async fn every_state_changing_request_needs_a_session_its_csrf_token_and_this_origin() {
    let env = env();
    let ctl = env.start_controller().await;
    let addr = http(&ctl);
    let mut none = WebSession::anonymous(addr);
    let mut s = WebSession::sign_in(addr, None).await;
    let csrf = s.csrf.clone().expect("the dashboard carries a CSRF token");
    for route in POST_ROUTES {
        let no_session = none.post_form_raw(route, &[("csrf", &csrf)]).await;
        assert_eq!(no_session.status, 403, "{route} without a session: {}", no_session.body);
        let missing = s.post_form_raw(route, &[]).await;
        assert_eq!(missing.status, 403, "{route} without a CSRF token");
        assert!(
            missing.body.contains("CSRF token is missing or stale"),
            "{}",
            missing.body
        );
        let wrong = s.post_form_raw(route, &[("csrf", "wk_forged")]).await;
        assert_eq!(wrong.status, 403, "{route} with a forged CSRF token");
        let elsewhere = s
            .post_with_headers(
                route,
                &[("csrf", &csrf)],
                &[("Origin", "http://evil.example".to_string())],
            )
            .await;
        assert_eq!(elsewhere.status, 403, "{route} from another site");
        assert!(elsewhere.body.contains("another site"), "{}", elsewhere.body);
    }
    // And each of them is a route that takes POST: with the token it passes
    // the guard and reaches its handler (sign-out last).
    for route in POST_ROUTES {
        s.get("/").await;
        let passed = s.post(route, &[]).await;
        assert_ne!(passed.status, 405, "{route} takes no POST");
        assert!(
            !passed.body.contains("there is no page at this address") && !passed.body.contains("refused:"),
            "{route} did not reach a handler ({}): {}",
            passed.status,
            passed.body
        );
    }
}

#[tokio::test]
async fn no_page_reflects_input_unescaped() {
    let env = env();
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let addr = http(&ctl);
    let evil = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let login = request(addr, "GET", &format!("/login?next=%2F{evil}"), &[], None).await;
    assert!(!login.body.contains("<script>alert"), "{}", login.body);
    assert!(
        login.body.contains("&lt;script&gt;"),
        "the next page is kept, escaped: {}",
        login.body
    );
    let mut s = WebSession::anonymous(addr);
    let bad = s
        .post_form_raw("/login", &[("token", "<script>alert(1)</script>")])
        .await;
    assert!(!bad.body.contains("<script>alert"), "{}", bad.body);
    let mut admin = WebSession::sign_in(addr, Some(BOOTSTRAP_SECRET)).await;
    let missing = admin.get(&format!("/no/such/{evil}")).await;
    assert_eq!(missing.status, 404);
    assert!(!missing.body.contains("<script>alert"), "{}", missing.body);
}
