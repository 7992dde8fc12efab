//! The web UI's Alerts and Agents areas end to end, over HTTP: a real
//! controller (with authentication: admin, operator and viewer tokens), a
//! real agent, and a real HTTP receiver on loopback as the alert target.
//!
//! * a webhook channel created through the form; "Send test" shows the
//!   receiver's answer and the receiver got the signed request; a failing
//!   channel's test shows `failed`;
//! * a rule created, its threshold edited through the form (checked through
//!   the API), disabled and enabled, deleted; an invalid throttle shows the
//!   API's error next to the throttle field; `<script>` is escaped;
//! * a channel disabled through the page gets no alert of a rule that routes
//!   to it (another channel of the rule does), can still be tested, keeps
//!   its secret, and gets the next alert once enabled again;
//! * history filters (channel, status);
//! * channel and rule deletion;
//! * the agents page lists a started agent with its labels and capacity;
//!   draining it through the page ends the agent process's connection;
//! * a viewer sees no edit, test or drain controls and its forged drain
//!   (with its own CSRF token) is refused 403; an operator sees no channel
//!   edit controls but edits rules.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use worker_proto::v1 as pb;
use worker_tests::auth::BOOTSTRAP_SECRET;
use worker_tests::receiver::Receiver;
use worker_tests::web::WebSession;
use worker_tests::{Controller, TestEnv, wait_for};

const CONFIG: &str = r#"
jobs:
  hello:
    shell: "echo hello"
"#;

const WAIT: Duration = Duration::from_secs(20);

async fn start() -> (TestEnv, Controller) {
    let env = TestEnv::new();
    env.write_config(CONFIG);
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    (env, ctl)
}

async fn rules(ctl: &Controller) -> Vec<pb::AlertRule> {
    let mut client = ctl.client_with_token(Some(BOOTSTRAP_SECRET)).await;
    client
        .list_alert_rules(pb::ListAlertRulesRequest {})
        .await
        .expect("ListAlertRules")
        .into_inner()
        .rules
}

async fn channels(ctl: &Controller) -> Vec<pb::AlertChannel> {
    let mut client = ctl.client_with_token(Some(BOOTSTRAP_SECRET)).await;
    client
        .list_alert_channels(pb::ListAlertChannelsRequest {})
        .await
        .expect("ListAlertChannels")
        .into_inner()
        .channels
}

/// The text of the element with `id` up to its closing tag (enough for
/// short elements).
fn element<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element id={id} in:\n{page}"));
    let rest = &page[at..];
    &rest[..rest
        .find("</section>")
        .or_else(|| rest.find("</p>"))
        .unwrap_or(rest.len())]
}

fn rule_form<'a>(name: &'a str, event: &'a str, throttle: &'a str, threshold: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("name", name),
        ("event", event),
        ("jobs", "*"),
        ("min_priority", "low"),
        ("channels", "hook"),
        ("throttle", throttle),
        ("threshold", threshold),
        ("count", ""),
        ("max_depth", ""),
        ("max_wait", ""),
        ("priority", ""),
        ("enabled", "on"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_rules_tests_and_history_through_the_pages() {
    let (_env, ctl) = start().await;
    let recv = Receiver::start().await;
    recv.always("/broken", 500);
    let addr = ctl.http_addr.expect("the controller serves HTTP");
    let mut admin = WebSession::sign_in(addr, Some(BOOTSTRAP_SECRET)).await;

    // A webhook channel through the form.
    let form = admin.get("/alerts/channels/new").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("id=\"channel-form\""));
    let hook_url = recv.url("/hook");
    let created = admin
        .post(
            "/alerts/channels/new",
            &[
                ("name", "hook"),
                ("type", "webhook"),
                ("webhook_url", &hook_url),
                ("webhook_secret", "s3cret-key"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let broken_url = recv.url("/broken");
    let created = admin
        .post(
            "/alerts/channels/new",
            &[
                ("name", "broken"),
                ("type", "webhook"),
                ("webhook_url", &broken_url),
                ("webhook_secret", "k"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(created.status, 303, "{}", created.body);
    let listed = channels(&ctl).await;
    assert_eq!(listed.len(), 2);
    assert!(
        !listed.iter().any(|c| c.spec_yaml.contains("s3cret-key")),
        "secret shown"
    );

    // An API error lands next to its field (no secret: "is empty").
    let missing = admin
        .post(
            "/alerts/channels/new",
            &[
                ("name", "nosecret"),
                ("type", "webhook"),
                ("webhook_url", &hook_url),
                ("webhook_secret", ""),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(missing.status, 400);
    assert!(
        missing.body.contains("id=\"webhook_secret-error\"") && missing.body.contains("is empty"),
        "{}",
        missing.body
    );

    // Editing: the redacted secret is not pre-filled and the marker is refused.
    let edit = admin.get("/alerts/channels/hook/edit").await;
    assert_eq!(edit.status, 200);
    assert!(
        !edit.body.contains("&lt;redacted&gt;\""),
        "marker pre-filled: {}",
        edit.body
    );
    assert!(edit.body.contains("enter it again"));
    let marker = admin
        .post(
            "/alerts/channels/hook/edit",
            &[
                ("type", "webhook"),
                ("webhook_url", &hook_url),
                ("webhook_secret", "<redacted>"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(marker.status, 400);
    assert!(marker.body.contains("id=\"webhook_secret-error\""), "{}", marker.body);

    // Send test: the receiver's answer is shown and it got the request.
    let page = admin.get("/alerts").await;
    assert!(page.body.contains("id=\"channels-table\"") && page.body.contains("id=\"test-hook\""));
    let test = admin.post("/alerts/channels/hook/test", &[]).await;
    assert_eq!(test.status, 200, "{}", test.body);
    let result = element(&test.body, "test-result");
    assert!(result.contains("sent") && result.contains("ok"), "{result}");
    let got = recv.wait("/hook", "the test message", WAIT, |g| !g.is_empty()).await;
    assert_eq!(got[0].json["kind"], "test");
    let failed = admin.post("/alerts/channels/broken/test", &[]).await;
    assert_eq!(failed.status, 502);
    let result = element(&failed.body, "test-result");
    assert!(result.contains("failed") && result.contains("500"), "{result}");

    // History filters.
    let hook_only = admin.get("/alerts/history?channel=hook").await;
    assert!(hook_only.body.contains("id=\"history-filter\"") && hook_only.body.contains("id=\"history-table\""));
    assert!(
        hook_only.body.contains(">hook<") && !hook_only.body.contains(">broken<"),
        "{}",
        hook_only.body
    );
    let failed_only = admin.get("/alerts/history?status=failed").await;
    assert!(failed_only.body.contains(">broken<") && !failed_only.body.contains(">hook<"));
    let none = admin.get("/alerts/history?job=%3Cscript%3Ex").await;
    assert!(none.body.contains("No alert matches.") && !none.body.contains("<script>x"));

    // A rule through the form, then its threshold edited.
    let new_rule = admin.get("/alerts/rules/new").await;
    for id in [
        "rule-form",
        "rule-name",
        "rule-event",
        "throttle",
        "param-threshold",
        "param-count",
        "param-max_depth",
        "param-max_wait",
        "param-priority",
        "rule-enabled",
        "save-rule",
    ] {
        assert!(new_rule.body.contains(&format!("id=\"{id}\"")), "no id={id}");
    }
    let saved = admin
        .post("/alerts/rules/new", &rule_form("slow", "run_slow", "15m", "10m"))
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(rules(&ctl).await[0].params["threshold"], "10m");
    let edit = admin.get("/alerts/rules/slow/edit").await;
    assert!(edit.body.contains("value=\"10m\""));
    let saved = admin
        .post("/alerts/rules/slow/edit", &rule_form("slow", "run_slow", "15m", "25m"))
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    let rule = rules(&ctl).await.remove(0);
    assert_eq!((rule.params["threshold"].as_str(), rule.enabled), ("25m", true));

    // An invalid throttle: the API's error next to the throttle field.
    let bad = admin
        .post("/alerts/rules/slow/edit", &rule_form("slow", "run_slow", "soon", "25m"))
        .await;
    assert_eq!(bad.status, 400);
    let error = element(&bad.body, "throttle-error");
    assert!(error.contains("soon"), "{error}");
    assert!(bad.body.contains("aria-describedby=\"throttle-error\""));
    assert_eq!(rules(&ctl).await[0].throttle, "15m", "nothing changed");

    // `<script>` in a name: refused by the API and shown escaped.
    let script = admin
        .post(
            "/alerts/rules/new",
            &rule_form("<script>alert(1)</script>", "run_dead", "0s", ""),
        )
        .await;
    assert_eq!(script.status, 400);
    assert!(script.body.contains("&lt;script&gt;alert(1)") && !script.body.contains("<script>alert(1)"));

    // Disable and enable.
    let page = admin.get("/alerts").await;
    assert!(page.body.contains("id=\"toggle-rule-slow\"") && page.body.contains("id=\"edit-rule-slow\""));
    assert_eq!(admin.post("/alerts/rules/slow/toggle", &[]).await.status, 303);
    let rule = rules(&ctl).await.remove(0);
    assert!(!rule.enabled && rule.spec_yaml.contains("enabled: false"));
    assert!(admin.get("/alerts").await.body.contains(">disabled<"));
    assert_eq!(admin.post("/alerts/rules/slow/toggle", &[]).await.status, 303);
    assert!(rules(&ctl).await[0].enabled);

    // A channel a rule sends to is not deleted; the rule then the channel are.
    let refused = admin.post("/alerts/channels/hook/delete", &[]).await;
    assert_eq!(refused.status, 303);
    assert!(admin.get("/alerts").await.body.contains("not deleted"));
    assert_eq!(channels(&ctl).await.len(), 2);
    assert_eq!(admin.post("/alerts/rules/slow/delete", &[]).await.status, 303);
    assert!(rules(&ctl).await.is_empty());
    assert_eq!(admin.post("/alerts/channels/hook/delete", &[]).await.status, 303);
    assert_eq!(channels(&ctl).await.len(), 1);
}

/// A job that fails at once, with no retry: every run is `dead`.
const FAILING: &str = r#"
defaults:
  retry: { max_attempts: 1 }
jobs:
  fails:
    shell: "exit 3"
"#;

const HOOK_SECRET: &str = "hook-secret-toggle";

/// Whether `r` carries a valid signature of its body with [`HOOK_SECRET`].
fn signed_with_the_secret(r: &worker_tests::receiver::Received) -> bool {
    let (Some(ts), Some(sig)) = (r.header("x-worker-timestamp"), r.header("x-worker-signature")) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", r.body).as_bytes());
    sig == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The alerts (not tests) `path` received, as the runs they are about.
fn alerted_runs(recv: &Receiver, path: &str) -> Vec<String> {
    recv.received(path)
        .iter()
        .filter(|r| r.json["kind"] == "alert")
        .map(|r| r.json["run_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_channel_gets_no_alerts_until_enabled_again() {
    let env = TestEnv::new();
    env.write_config(FAILING);
    let ctl = env.start_controller_with_bootstrap("127.0.0.1:0", &[]).await;
    let agent_token = ctl.create_token(BOOTSTRAP_SECRET, "agent-1", "agent", &[]).await;
    let _agent = env
        .start_agent_with_token(&ctl, "a1", &agent_token, BOOTSTRAP_SECRET, &[])
        .await;
    let recv = Receiver::start().await;
    let addr = ctl.http_addr.expect("the controller serves HTTP");
    let mut admin = WebSession::sign_in(addr, Some(BOOTSTRAP_SECRET)).await;

    // Two webhook channels through the form; one rule sends to both.
    for (name, path) in [("hook", "/hook"), ("witness", "/witness")] {
        let url = recv.url(path);
        let created = admin
            .post(
                "/alerts/channels/new",
                &[
                    ("name", name),
                    ("type", "webhook"),
                    ("webhook_url", &url),
                    ("webhook_secret", HOOK_SECRET),
                    ("enabled", "on"),
                ],
            )
            .await;
        assert_eq!(created.status, 303, "{}", created.body);
    }
    let mut client = ctl.client_with_token(Some(BOOTSTRAP_SECRET)).await;
    client
        .put_alert_rule(pb::PutAlertRuleRequest {
            spec_yaml: "name: dead\nevent: run_dead\nchannels: [hook, witness]\n".into(),
        })
        .await
        .expect("PutAlertRule");
    assert!(channels(&ctl).await.iter().all(|c| c.enabled == Some(true)));

    // Disable `hook` through the page.
    let page = admin.get("/alerts").await;
    assert!(page.body.contains("id=\"toggle-channel-hook\""), "{}", page.body);
    assert_eq!(admin.post("/alerts/channels/hook/toggle", &[]).await.status, 303);
    let hook = channels(&ctl).await.into_iter().find(|c| c.name == "hook").unwrap();
    assert_eq!(hook.enabled, Some(false));
    assert!(hook.spec_yaml.contains("enabled: false"), "{}", hook.spec_yaml);
    let page = admin.get("/alerts").await;
    let row = page
        .body
        .split("id=\"channel-hook\"")
        .nth(1)
        .expect("the channel's row");
    let row = &row[..row.find("</tr>").expect("the row's end")];
    assert!(row.contains(">disabled<") && row.contains("Enable"), "{row}");
    let listed = ctl
        .cli_with_token(BOOTSTRAP_SECRET, &["alerts", "channels"])
        .await
        .expect_code(0)
        .json();
    let states: Vec<(String, bool)> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["enabled"].as_bool().unwrap()))
        .collect();
    assert_eq!(states, [("hook".to_string(), false), ("witness".to_string(), true)]);

    // A disabled channel can still be tested (before enabling it).
    let test = admin.post("/alerts/channels/hook/test", &[]).await;
    assert_eq!(test.status, 200, "{}", test.body);
    let got = recv.wait("/hook", "the test message", WAIT, |g| !g.is_empty()).await;
    assert_eq!(got[0].json["kind"], "test");

    // A dead run: the rule alerts `witness` only.
    let first = ctl
        .cli_with_token(BOOTSTRAP_SECRET, &["enqueue", "fails"])
        .await
        .expect_code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    recv.wait("/witness", "the first run's alert on the enabled channel", WAIT, |g| {
        g.iter().any(|r| r.json["run_id"] == first.as_str())
    })
    .await;

    // Enabled again: the next dead run reaches it, signed with the secret it kept.
    assert_eq!(admin.post("/alerts/channels/hook/toggle", &[]).await.status, 303);
    let hook = channels(&ctl).await.into_iter().find(|c| c.name == "hook").unwrap();
    assert_eq!(hook.enabled, Some(true));
    assert!(!hook.spec_yaml.contains("enabled"), "{}", hook.spec_yaml);
    let second = ctl
        .cli_with_token(BOOTSTRAP_SECRET, &["enqueue", "fails"])
        .await
        .expect_code(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = recv
        .wait("/hook", "the second run's alert once enabled", WAIT, |g| {
            g.iter().any(|r| r.json["run_id"] == second.as_str())
        })
        .await;
    let alert = got.iter().find(|r| r.json["run_id"] == second.as_str()).unwrap();
    assert!(
        signed_with_the_secret(alert),
        "the secret was lost by the toggle: {alert:?}"
    );
    recv.wait("/witness", "the second run's alert on the other channel", WAIT, |g| {
        g.iter().any(|r| r.json["run_id"] == second.as_str())
    })
    .await;
    // The first run's alert was routed (to `witness`) long before the second
    // one: had it gone to `hook` too, it would be there by now.
    assert_eq!(alerted_runs(&recv, "/hook"), std::slice::from_ref(&second));
    assert_eq!(alerted_runs(&recv, "/witness"), [first.clone(), second]);
    // The history records nothing for the disabled channel (not even `suppressed`).
    let history = client
        .list_alert_history(pb::ListAlertHistoryRequest {
            channel: "hook".into(),
            ..Default::default()
        })
        .await
        .expect("ListAlertHistory")
        .into_inner()
        .alerts;
    assert!(!history.iter().any(|a| a.run_id == first), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_drain_and_what_each_role_is_offered() {
    let (env, ctl) = start().await;
    let agent_token = ctl.create_token(BOOTSTRAP_SECRET, "agent-1", "agent", &[]).await;
    let viewer_token = ctl.create_token(BOOTSTRAP_SECRET, "viewer-1", "viewer", &[]).await;
    let operator_token = ctl.create_token(BOOTSTRAP_SECRET, "operator-1", "operator", &[]).await;
    let mut agent = env
        .start_agent_with_token(
            &ctl,
            "drainee",
            &agent_token,
            BOOTSTRAP_SECRET,
            &["--labels", "zone=eu", "--capacity", "3"],
        )
        .await;
    let mut client = ctl.client_with_token(Some(BOOTSTRAP_SECRET)).await;
    let listed = client
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents;
    let id = listed
        .iter()
        .find(|a| a.name == "drainee")
        .expect("agent listed")
        .id
        .clone();
    // One channel and rule so that the role checks have something to show.
    client
        .put_alert_channel(pb::PutAlertChannelRequest {
            name: "hook".into(),
            spec_yaml: "type: webhook\nurl: http://127.0.0.1:9/x\nsecret: k\n".into(),
        })
        .await
        .unwrap();
    client
        .put_alert_rule(pb::PutAlertRuleRequest {
            spec_yaml: "name: dead\nevent: run_dead\nchannels: [hook]\n".into(),
        })
        .await
        .unwrap();

    let addr = ctl.http_addr.expect("the controller serves HTTP");

    // The viewer: no controls, and a forged drain is refused.
    let mut viewer = WebSession::sign_in(addr, Some(&viewer_token)).await;
    let page = viewer.get("/agents").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"agents-table\"") && page.body.contains("drainee"));
    assert!(
        page.body.contains("zone=eu") && page.body.contains("0/3"),
        "{}",
        page.body
    );
    assert!(!page.body.contains(&format!("id=\"drain-{id}\"")));
    let alerts = viewer.get("/alerts").await;
    for control in [
        "id=\"test-hook\"",
        "id=\"edit-rule-dead\"",
        "id=\"toggle-rule-dead\"",
        "id=\"toggle-channel-hook\"",
        "id=\"new-rule\"",
        "id=\"new-channel\"",
        "/delete",
    ] {
        assert!(!alerts.body.contains(control), "viewer offered {control}");
    }
    let forged = viewer.post(&format!("/agents/{id}/drain"), &[]).await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert_eq!(viewer.get("/alerts/rules/new").await.status, 403);

    // The operator: rules yes, channels no.
    let mut operator = WebSession::sign_in(addr, Some(&operator_token)).await;
    let alerts = operator.get("/alerts").await;
    assert!(alerts.body.contains("id=\"edit-rule-dead\"") && alerts.body.contains("id=\"test-hook\""));
    assert!(!alerts.body.contains("id=\"new-channel\"") && !alerts.body.contains("id=\"edit-channel-hook\""));
    assert!(
        !alerts.body.contains("id=\"toggle-channel-hook\""),
        "channels are for admins"
    );
    assert_eq!(operator.post("/alerts/channels/hook/toggle", &[]).await.status, 403);
    assert_eq!(operator.get("/alerts/channels/hook/edit").await.status, 403);
    let edited = operator
        .post(
            "/alerts/rules/dead/edit",
            &[
                ("event", "run_dead"),
                ("jobs", "hel*"),
                ("min_priority", "low"),
                ("channels", "hook"),
                ("throttle", "5m"),
                ("enabled", "on"),
            ],
        )
        .await;
    assert_eq!(edited.status, 303, "{}", edited.body);
    assert_eq!(rules(&ctl).await[0].jobs, "hel*");

    // Drain through the page (as the operator): the agent ends its connection.
    let page = operator.get("/agents").await;
    assert!(page.body.contains(&format!("id=\"drain-{id}\"")) && page.body.contains("data-confirm"));
    let drained = operator.post(&format!("/agents/{id}/drain"), &[]).await;
    assert_eq!(drained.status, 303, "{}", drained.body);
    wait_for("the drained agent to disconnect", WAIT, || {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            let agents = client
                .list_agents(pb::ListAgentsRequest {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .agents;
            let state = agents.iter().find(|a| a.id == id).map(|a| a.state.clone());
            match state.as_deref() {
                Some("disconnected") => Ok(()),
                other => Err(format!("state {other:?}")),
            }
        }
    })
    .await;
    wait_for("the agent process to end", WAIT, || {
        let exited = agent.proc.try_wait();
        async move { exited.map(drop).ok_or_else(|| "still running".to_string()) }
    })
    .await;
    assert!(operator.get("/agents").await.body.contains(">disconnected<"));
    // Draining it again returns it as it is; an unknown id is not found.
    let again = client
        .drain_agent(pb::DrainAgentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.state, "disconnected");
    let cli = ctl
        .cli_with_token(BOOTSTRAP_SECRET, &["agents", "drain", &id])
        .await
        .expect_code(0)
        .json();
    assert_eq!(
        (cli["id"].as_str(), cli["state"].as_str()),
        (Some(id.as_str()), Some("disconnected"))
    );
    // Unknown: exit 3 (not found); a viewer: exit 4 (refused, as for every call).
    ctl.cli_with_token(BOOTSTRAP_SECRET, &["agents", "drain", "nope"])
        .await
        .expect_code(3);
    ctl.cli_with_token(&viewer_token, &["agents", "drain", &id])
        .await
        .expect_code(4);
    let unknown = client
        .drain_agent(pb::DrainAgentRequest { id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("nope"));
}
