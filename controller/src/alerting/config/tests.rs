use std::time::Duration;

use super::*;
use crate::alerting::rules::EventParams;

const EXAMPLE: &str = include_str!("../../../../config/examples/alerts.yaml");

fn env(name: &str) -> Result<String, String> {
    let value = match name {
        "SLACK_WEBHOOK_URL" => "https://hooks.slack.com/services/T0/B0/slack-s3cret",
        "DISCORD_WEBHOOK_URL" => "https://discord.com/api/webhooks/1/discord-s3cret",
        "SMTP_USER" => "mailer",
        "SMTP_PASSWORD" => "smtp-s3cret",
        "WEBHOOK_SECRET" => "hmac-s3cret",
        "BOT_TOKEN" => "xoxb-bot-s3cret",
        "EMPTY" => "",
        _ => {
            return Err(format!(
                "environment variable {name} is not set (referenced as ${{{name}}})"
            ));
        }
    };
    Ok(value.to_string())
}

fn parse(text: &str) -> Result<AlertsConfig, ConfigErrors> {
    parse_alerts_yaml(Path::new("alerts.yaml"), text, &env)
}

/// (line, path, message) of every error.
fn errors(text: &str) -> Vec<(Option<usize>, String, String)> {
    parse(text)
        .expect_err("expected errors")
        .0
        .into_iter()
        .map(|e| (e.line, e.path, e.message))
        .collect()
}

/// Asserts that the errors are exactly `expected` (line, path, part of the message), in order.
fn assert_errors(text: &str, expected: &[(usize, &str, &str)]) {
    let got = errors(text);
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for ((line, path, message), (want_line, want_path, want_message)) in got.iter().zip(expected) {
        assert_eq!(
            (*line, path.as_str()),
            (Some(*want_line), *want_path),
            "{message}\nall: {got:#?}"
        );
        assert!(
            message.contains(want_message),
            "{path}: {message:?} lacks {want_message:?}"
        );
    }
}

#[test]
fn the_documented_example_parses() {
    let config = parse(EXAMPLE).unwrap();
    assert_eq!(
        config.channels.keys().collect::<Vec<_>>(),
        ["ops-discord", "ops-mail", "ops-slack", "pager"]
    );
    let ChannelKind::Slack(SlackChannel::Webhook { webhook_url }) = &config.channels["ops-slack"].kind else {
        panic!("slack webhook expected");
    };
    assert_eq!(
        webhook_url.expose(),
        "https://hooks.slack.com/services/T0/B0/slack-s3cret"
    );
    let ChannelKind::Email(mail) = &config.channels["ops-mail"].kind else {
        panic!("email expected");
    };
    assert_eq!(
        (mail.smtp.host.as_str(), mail.smtp.port, mail.smtp.tls),
        ("smtp.example.com", 587, SmtpTls::Starttls)
    );
    let credentials = mail.smtp.credentials.as_ref().unwrap();
    assert_eq!(
        (credentials.username.as_str(), credentials.password.expose()),
        ("mailer", "smtp-s3cret")
    );
    assert_eq!(
        (mail.from.as_str(), mail.to.as_slice()),
        ("worker@example.com", &["ops@example.com".to_string()][..])
    );
    let ChannelKind::Webhook(pager) = &config.channels["pager"].kind else {
        panic!("webhook expected");
    };
    assert_eq!(
        (pager.url.as_str(), pager.secret.expose()),
        ("https://pager.example.com/hook", "hmac-s3cret")
    );
    assert_eq!(config.channels["ops-discord"].kind.channel_type(), ChannelType::Discord);

    let [dead, slow] = config.rules.as_slice() else {
        panic!("two rules expected");
    };
    assert_eq!(dead.name, "dead-runs");
    assert_eq!(dead.event, Event::RunDead);
    assert!(dead.jobs.matches_all());
    assert_eq!(dead.min_priority, Priority::Normal);
    assert_eq!(dead.channels, ["ops-slack", "ops-mail"]);
    assert_eq!(dead.throttle, Duration::from_secs(15 * 60));
    assert_eq!(dead.params, EventParams::None);
    assert_eq!(slow.name, "slow-digest");
    assert_eq!(slow.jobs.as_str(), "digest.*");
    assert_eq!(
        (slow.min_priority, slow.throttle),
        (Priority::Low, Duration::ZERO),
        "defaults"
    );
    assert_eq!(
        slow.params,
        EventParams::RunSlow {
            span: Default::default(),
            threshold: Duration::from_secs(600)
        }
    );
    assert_eq!(
        config
            .matching(Event::RunSlow, Some("digest.daily"), Some(Priority::Low))
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["slow-digest"]
    );

    // The specs are kept as written.
    assert_eq!(
        config.channels["ops-slack"]
            .spec
            .get("webhook_url")
            .and_then(Value::as_str),
        Some("${SLACK_WEBHOOK_URL}")
    );
    assert_eq!(slow.spec.get("threshold").and_then(Value::as_str), Some("10m"));
}

#[test]
fn missing_secret_variables_are_all_reported_with_their_lines() {
    let no_env = crate::config::env::from_pairs(&[]);
    let errors = parse_alerts_yaml(Path::new("config/examples/alerts.yaml"), EXAMPLE, &no_env)
        .unwrap_err()
        .0;
    let located: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        located,
        [
            "config/examples/alerts.yaml:10: channels.ops-slack.webhook_url: environment variable SLACK_WEBHOOK_URL is not set (referenced as ${SLACK_WEBHOOK_URL})",
            "config/examples/alerts.yaml:11: channels.ops-discord.webhook_url: environment variable DISCORD_WEBHOOK_URL is not set (referenced as ${DISCORD_WEBHOOK_URL})",
            "config/examples/alerts.yaml:14: channels.ops-mail.smtp.username: environment variable SMTP_USER is not set (referenced as ${SMTP_USER})",
            "config/examples/alerts.yaml:14: channels.ops-mail.smtp.password: environment variable SMTP_PASSWORD is not set (referenced as ${SMTP_PASSWORD})",
            "config/examples/alerts.yaml:17: channels.pager.secret: environment variable WEBHOOK_SECRET is not set (referenced as ${WEBHOOK_SECRET})",
        ]
    );
}

#[test]
fn every_bad_input_is_reported_at_once_with_line_and_path() {
    let text = "\
channels:
  slack-bad: { type: slack, webhook_url: \"${NOPE}\" }
  mail:
    type: email
    smtp: { host: smtp.example.com, tls: none }
    from: not-an-address
    to:
      - ops@example.com
      - \"bad@@example\"
  hook: { type: webhook, url: \"https://h.example.com/x\", secret: s }
  odd: { type: sms }
  extra: { type: discord, webhook_url: \"https://discord.com/x\", colour: red }
rules:
  - name: r1
    event: run_dead
    jobs: \"Digest.*\"
    channels: [hook, ghost]
  - name: r2
    event: run_exploded
    channels: [hook]
  - name: r3
    event: run_failed
    threshold: 10m
    count: 3
    channels: [hook]
  - name: r4
    event: run_dead
    jobs: \"\"
    channels:
      - hook
      - nowhere
  - { name: r5, event: run_dead, channels: [hook], colour: red }
surprise: true
";
    assert_errors(
        text,
        &[
            (2, "channels.slack-bad.webhook_url", "NOPE is not set"),
            (5, "channels.mail.smtp.tls", "only allowed to a loopback host"),
            (6, "channels.mail.from", "invalid email address \"not-an-address\""),
            (9, "channels.mail.to[1]", "invalid email address \"bad@@example\""),
            (
                11,
                "channels.odd.type",
                "unknown channel type \"sms\" (expected one of: slack, discord, email, webhook)",
            ),
            (12, "channels.extra.colour", "unknown field `colour`"),
            (16, "rules[0].jobs", "invalid job pattern \"Digest.*\""),
            (17, "rules[0].channels[1]", "unknown channel \"ghost\""),
            (19, "rules[1].event", "unknown event \"run_exploded\""),
            (
                23,
                "rules[2].threshold",
                "`threshold` only applies to `run_slow` rules, not `run_failed`",
            ),
            (
                24,
                "rules[2].count",
                "`count` only applies to `consecutive_failures` rules",
            ),
            (28, "rules[3].jobs", "empty job pattern"),
            (31, "rules[3].channels[1]", "unknown channel \"nowhere\""),
            (32, "rules[4].colour", "unknown field `colour`"),
            (
                33,
                "surprise",
                "unknown field `surprise`, expected `channels` or `rules`",
            ),
        ],
    );
    // The whole file is refused: nothing is applied.
    assert!(parse(text).is_err());
}

#[test]
fn errors_display_as_file_line_path_message() {
    let err = parse("rules:\n  - { name: a, event: nope, channels: [] }\n").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("invalid configuration: 2 error(s)\n"), "{text}");
    assert!(
        text.contains("alerts.yaml:2: rules[0].channels: needs at least one channel"),
        "{text}"
    );
    assert!(
        text.contains("alerts.yaml:2: rules[0].event: unknown event \"nope\""),
        "{text}"
    );
}

#[test]
fn secrets_are_redacted_in_debug_display_and_serialization() {
    let text = EXAMPLE.replace(
        "channels:\n",
        "channels:\n  bot: { type: slack, token: \"${BOT_TOKEN}\", channel: \"#ops\" }\n  literal: { type: webhook, url: \"https://x.example.com\", secret: literal-s3cret }\n",
    );
    let config = parse(&text).unwrap();
    let secrets = [
        "slack-s3cret",
        "discord-s3cret",
        "smtp-s3cret",
        "hmac-s3cret",
        "xoxb-bot-s3cret",
        "literal-s3cret",
    ];
    for channel in config.channels.values() {
        for shown in [
            format!("{channel:?}"),
            format!("{channel:#?}"),
            channel.to_string(),
            serde_json::to_string(channel).unwrap(),
            serde_yaml_ng::to_string(&channel.redacted_spec()).unwrap(),
        ] {
            for secret in secrets {
                assert!(!shown.contains(secret), "{} shows {secret}: {shown}", channel.name);
            }
        }
    }
    assert!(!format!("{config:?}").contains("s3cret"));
    let debug = format!("{:?}", config.channels["ops-mail"]);
    assert!(
        debug.contains("password: <redacted>") && debug.contains("mailer"),
        "{debug}"
    );

    let json: serde_json::Value = serde_json::to_value(&config.channels["bot"]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "name": "bot", "type": "slack", "token": "<redacted>", "channel": "#ops" })
    );
    assert_eq!(config.channels["bot"].to_string(), "bot (slack #ops)");

    // References stay visible in the spec (they are not secrets); written-out values do not.
    let literal = config.channels["literal"].redacted_spec();
    assert_eq!(literal.get("secret").and_then(Value::as_str), Some(REDACTED));
    let mail = config.channels["ops-mail"].redacted_spec();
    assert_eq!(
        mail.get("smtp").and_then(|s| s.get("password")).and_then(Value::as_str),
        Some("${SMTP_PASSWORD}")
    );
    assert_eq!(format!("{}", Secret::new("x")), REDACTED);
}

#[test]
fn error_messages_never_quote_a_secret() {
    let messages = errors(
        "channels:\n  s: { type: slack, webhook_url: \"http://hooks.example.com/slack-s3cret\" }\n  d: { type: discord, webhook_url: \"discord-s3cret\" }\n",
    );
    assert_eq!(messages.len(), 2, "{messages:?}");
    for (_, _, message) in &messages {
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("value not shown"), "{message}");
    }
    assert!(
        messages[0]
            .2
            .contains("plain http:// is only allowed to a loopback host")
    );
    assert!(messages[1].2.contains("expected an https:// URL"));
}

#[test]
fn slack_takes_a_webhook_or_a_bot_token_with_a_channel() {
    assert_errors(
        "channels:\n  a: { type: slack, webhook_url: \"${SLACK_WEBHOOK_URL}\", token: t }\n",
        &[(
            2,
            "channels.a.token",
            "use either `webhook_url` or `token` with `channel`",
        )],
    );
    assert_errors(
        "channels:\n  a:\n    type: slack\n    token: t\n",
        &[(4, "channels.a.token", "needs a `channel`")],
    );
    assert_errors(
        "channels:\n  a: { type: slack }\n",
        &[(
            2,
            "channels.a",
            "missing `webhook_url` (incoming webhook) or `token` and `channel` (bot)",
        )],
    );
    assert_errors(
        "channels:\n  a: { type: slack, token: \"${EMPTY}\", channel: ops }\n",
        &[(2, "channels.a.token", "is empty")],
    );
    assert_errors(
        "channels:\n  a: { webhook_url: x }\n",
        &[(
            2,
            "channels.a",
            "missing field `type` (one of: slack, discord, email, webhook)",
        )],
    );
    let config = parse("channels:\n  a: { type: slack, token: \"${BOT_TOKEN}\", channel: ops }\n").unwrap();
    let ChannelKind::Slack(SlackChannel::Bot {
        token,
        channel,
        api_url,
    }) = &config.channels["a"].kind
    else {
        panic!("bot expected");
    };
    assert_eq!(
        (token.expose(), channel.as_str(), api_url.as_str()),
        ("xoxb-bot-s3cret", "ops", SLACK_API_URL)
    );
}

#[test]
fn email_checks_addresses_tls_and_credentials() {
    let ok = "channels:\n  m:\n    type: email\n    smtp: { host: localhost, tls: none }\n    from: \"Worker <worker@example.com>\"\n    to: [ops@example.com, \"On Call <oncall+worker@mail.example.co.uk>\", \"root@[127.0.0.1]\"]\n";
    let config = parse(ok).unwrap();
    let ChannelKind::Email(mail) = &config.channels["m"].kind else {
        panic!("email expected");
    };
    assert_eq!(
        (mail.smtp.port, mail.smtp.tls, mail.smtp.credentials.is_none()),
        (25, SmtpTls::Plain, true)
    );
    assert!(parse(&ok.replace("localhost", "127.0.0.2")).is_ok());
    assert!(parse(&ok.replace("localhost", "\"::1\"")).is_ok());

    let tls_port = parse(&ok.replace("host: localhost, tls: none", "host: smtp.example.com, tls: tls")).unwrap();
    let ChannelKind::Email(mail) = &tls_port.channels["m"].kind else {
        panic!("email expected");
    };
    assert_eq!(mail.smtp.port, 465);

    assert_errors(
        "channels:\n  m:\n    type: email\n    smtp: { host: smtp.example.com, username: u, tls: starttls }\n    from: a@example.com\n    to: []\n    cc: [b@example.com]\n",
        &[(7, "channels.m.cc", "unknown field `cc`")],
    );
    assert_errors(
        "channels:\n  m:\n    type: email\n    smtp:\n      host: smtp.example.com\n      username: u\n      tls: ssl\n    from: a@example.com\n    to: [a@example.com, a@example.com, \"x y@example.com\", \"a@-bad-.com\", \"<a@example.com\"]\n",
        &[
            (6, "channels.m.smtp.username", "a `username` needs a `password`"),
            (
                7,
                "channels.m.smtp.tls",
                "unknown tls mode \"ssl\" (expected one of: starttls, tls, none)",
            ),
            (9, "channels.m.to[1]", "\"a@example.com\" is listed twice"),
            (9, "channels.m.to[2]", "bad local part"),
            (9, "channels.m.to[3]", "bad domain"),
            (9, "channels.m.to[4]", "bad local part"),
        ],
    );
    assert_errors(
        "channels:\n  m:\n    type: email\n    smtp: { host: smtp.example.com }\n    from: a@example.com\n    to: []\n",
        &[(6, "channels.m.to", "needs at least one recipient")],
    );
    assert_errors(
        "channels:\n  m:\n    type: email\n    from: a@example.com\n    to: [b@example.com]\n",
        &[(2, "channels.m", "missing field `smtp`")],
    );
}

#[test]
fn webhook_urls_must_be_https_except_to_loopback() {
    let hook = |url: &str| format!("channels:\n  h: {{ type: webhook, url: \"{url}\", secret: k }}\n");
    assert!(parse(&hook("https://hooks.example.com/a?b=c")).is_ok());
    assert!(parse(&hook("http://localhost:8080/hook")).is_ok());
    assert!(parse(&hook("http://127.0.0.1:9/x")).is_ok());
    assert!(parse(&hook("http://[::1]:9/x")).is_ok());
    for (url, message) in [
        (
            "http://hooks.example.com/a",
            "plain http:// is only allowed to a loopback host",
        ),
        ("ftp://hooks.example.com/a", "expected an https:// URL"),
        ("https:///path", "no host"),
        ("https://a b.example.com", "cannot contain spaces"),
    ] {
        assert_errors(&hook(url), &[(2, "channels.h.url", message)]);
    }
    assert_errors(
        "channels:\n  h: { type: webhook, url: \"https://h.example.com\" }\n",
        &[(2, "channels.h", "missing field `secret`")],
    );
}

#[test]
fn event_parameters_belong_to_their_event() {
    let rules = |body: &str| {
        format!("channels:\n  c: {{ type: discord, webhook_url: \"https://d.example.com/x\" }}\nrules:\n{body}")
    };
    assert_errors(
        &rules("  - { name: a, event: run_slow, channels: [c] }\n"),
        &[(4, "rules[0]", "`run_slow` needs a `threshold`")],
    );
    assert_errors(
        &rules("  - { name: a, event: run_slow, threshold: 0s, channels: [c] }\n"),
        &[(4, "rules[0].threshold", "must be greater than zero")],
    );
    assert_errors(
        &rules(
            "  - { name: a, event: run_slow, threshold: 1s, span: \"bad span\", channels: [c] }\n  - { name: b, event: run_failed, span: fetch, channels: [c] }\n",
        ),
        &[
            (4, "rules[0].span", "\"bad span\" is not a span name"),
            (
                5,
                "rules[1].span",
                "`span` only applies to `run_slow` rules, not `run_failed`",
            ),
        ],
    );
    assert_errors(
        &rules(
            "  - { name: a, event: metric_high, channels: [c] }\n  - { name: b, event: metric_high, metric: cost, above: 1, per: week, channels: [c] }\n",
        ),
        &[
            (4, "rules[0]", "`metric_high` needs a `metric`"),
            (4, "rules[0]", "`metric_high` needs `above`"),
            (5, "rules[1].per", "\"week\" is not a window (expected attempt or day)"),
        ],
    );
    assert_errors(
        &rules(
            "  - { name: a, event: consecutive_failures, channels: [c] }\n  - { name: b, event: consecutive_failures, count: 1, channels: [c] }\n",
        ),
        &[
            (4, "rules[0]", "`consecutive_failures` needs a `count`"),
            (5, "rules[1].count", "must be at least 2"),
        ],
    );
    assert_errors(
        &rules("  - name: a\n    event: queue_backlog\n    jobs: \"x.*\"\n    channels: [c]\n"),
        &[
            (
                4,
                "rules[0]",
                "`queue_backlog` needs `max_depth` (queued runs) and/or `max_wait`",
            ),
            (6, "rules[0].jobs", "`queue_backlog` is not about a job"),
        ],
    );
    assert_errors(
        &rules("  - name: a\n    event: agent_lost\n    min_priority: high\n    max_depth: 5\n    channels: [c]\n"),
        &[
            (6, "rules[0].min_priority", "`agent_lost` has no priority"),
            (
                7,
                "rules[0].max_depth",
                "`max_depth` only applies to `queue_backlog` rules, not `agent_lost`",
            ),
        ],
    );
    let config = parse(&rules(
        "  - { name: a, event: queue_backlog, max_wait: 5m, priority: high, channels: [c] }\n  - { name: b, event: consecutive_failures, count: 3, channels: [c], throttle: 1h }\n  - { name: c, event: recovered, jobs: \"db-?\", min_priority: critical, channels: [c] }\n",
    ))
    .unwrap();
    assert_eq!(
        config.rules[0].params,
        EventParams::QueueBacklog {
            max_depth: None,
            max_wait: Some(Duration::from_secs(300)),
            priority: Some(Priority::High)
        }
    );
    assert_eq!(config.rules[1].params, EventParams::ConsecutiveFailures { count: 3 });
    assert_eq!(config.rules[1].throttle, Duration::from_secs(3600));
    assert!(config.rules[2].matches(Event::Recovered, Some("db-1"), Some(Priority::Critical)));
    assert!(!config.rules[2].matches(Event::Recovered, Some("db-1"), Some(Priority::High)));
}

#[test]
fn schedule_failed_rules_parse_and_take_no_parameters() {
    let rules = |body: &str| {
        format!("channels:\n  c: {{ type: discord, webhook_url: \"https://d.example.com/x\" }}\nrules:\n{body}")
    };
    let config = parse(&rules(
        "  - name: fires\n    event: schedule_failed\n    jobs: \"nightly.*\"\n    min_priority: high\n    channels: [c]\n    throttle: 30m\n  - { name: all-fires, event: schedule_failed, channels: [c] }\n",
    ))
    .unwrap();
    let [fires, all] = config.rules.as_slice() else {
        panic!("two rules expected");
    };
    assert_eq!(fires.event, Event::ScheduleFailed);
    assert_eq!(fires.params, EventParams::None);
    assert_eq!(fires.jobs.as_str(), "nightly.*");
    assert_eq!(fires.min_priority, Priority::High);
    assert_eq!(fires.throttle, Duration::from_secs(1800));
    assert_eq!(
        (all.jobs.as_str(), all.min_priority, all.throttle),
        ("*", Priority::Low, Duration::ZERO),
        "defaults"
    );
    assert_eq!(
        config
            .matching(Event::ScheduleFailed, Some("nightly.report"), Some(Priority::Critical))
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["fires", "all-fires"]
    );
    assert_eq!(
        config
            .matching(Event::ScheduleFailed, Some("nightly.report"), Some(Priority::Normal))
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["all-fires"]
    );
    assert!(
        config
            .matching(Event::ScheduleMissed, Some("nightly.report"), Some(Priority::Critical))
            .next()
            .is_none()
    );

    assert_errors(
        &rules("  - name: a\n    event: schedule_failed\n    threshold: 5m\n    count: 3\n    channels: [c]\n"),
        &[
            (
                6,
                "rules[0].threshold",
                "`threshold` only applies to `run_slow` rules, not `schedule_failed`",
            ),
            (
                7,
                "rules[0].count",
                "`count` only applies to `consecutive_failures` rules, not `schedule_failed`",
            ),
        ],
    );
    let err = parse(&rules("  - { name: a, event: schedule_fail, channels: [c] }\n")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unknown event \"schedule_fail\"") && text.contains("schedule_missed, schedule_failed,"),
        "{text}"
    );
}

#[test]
fn leader_changed_rules_take_no_jobs_priority_or_parameters() {
    let rules = |body: &str| {
        format!("channels:\n  c: {{ type: discord, webhook_url: \"https://d.example.com/x\" }}\nrules:\n{body}")
    };
    let config = parse(&rules(
        "  - { name: leader, event: leader_changed, channels: [c], throttle: 10m }\n",
    ))
    .unwrap();
    let rule = &config.rules[0];
    assert_eq!(rule.event, Event::LeaderChanged);
    assert_eq!(rule.params, EventParams::None);
    assert_eq!(rule.throttle, Duration::from_secs(600));
    assert!(rule.matches(Event::LeaderChanged, None, None));
    assert_errors(
        &rules(
            "  - name: a\n    event: leader_changed\n    jobs: \"db.*\"\n    min_priority: high\n    threshold: 5m\n    max_depth: 3\n    channels: [c]\n",
        ),
        &[
            (
                6,
                "rules[0].jobs",
                "`leader_changed` is not about a job: leave `jobs` out",
            ),
            (7, "rules[0].min_priority", "`leader_changed` has no priority"),
            (
                8,
                "rules[0].threshold",
                "`threshold` only applies to `run_slow` rules, not `leader_changed`",
            ),
            (
                9,
                "rules[0].max_depth",
                "`max_depth` only applies to `queue_backlog` rules, not `leader_changed`",
            ),
        ],
    );
    let err = parse(&rules("  - { name: a, event: leader_change, channels: [c] }\n")).unwrap_err();
    assert!(err.to_string().contains("unknown event \"leader_change\""), "{err}");
    assert!(
        parse(&rules(
            "  - { name: a, event: leader_changed, epoch: 2, channels: [c] }\n"
        ))
        .unwrap_err()
        .to_string()
        .contains("epoch"),
        "an unknown key is refused"
    );
}

#[test]
fn names_channels_and_durations_are_checked() {
    let text = "\
channels:
  Bad_Name: { type: discord, webhook_url: \"https://d.example.com/x\" }
  c: { type: discord, webhook_url: \"https://d.example.com/x\" }
rules:
  - { name: a, event: run_dead, channels: [c, c], throttle: \"15\" }
  - { name: a, event: run_dead, channels: [Bad_Name], min_priority: urgent }
  - { name: \"-x\", event: run_dead, channels: [c] }
  - { event: run_dead, channels: [c] }
";
    assert_errors(
        text,
        &[
            (2, "channels.Bad_Name", "invalid channel name \"Bad_Name\""),
            (5, "rules[0].throttle", "missing unit"),
            (5, "rules[0].channels[1]", "\"c\" is listed twice"),
            (6, "rules[1].name", "rule name \"a\" is already used by rules[0]"),
            (6, "rules[1].min_priority", "unknown priority \"urgent\""),
            (7, "rules[2].name", "invalid rule name \"-x\""),
            (8, "rules[3]", "missing field `name`"),
        ],
    );
}

/// Durations read the grammar of `worker_duration`; a YAML number reaches it
/// too, so `throttle: 15` is refused for its missing unit, not as a type error,
/// and `throttle: 0` is zero.
#[test]
fn durations_may_be_numbers_but_need_a_unit() {
    let text = "\
channels:
  c: { type: discord, webhook_url: \"https://d.example.com/x\" }
rules:
  - { name: a, event: run_dead, channels: [c], throttle: 15 }
  - { name: b, event: run_dead, channels: [c], throttle: 0 }
  - { name: c, event: run_slow, channels: [c], threshold: 0 }
";
    assert_errors(
        text,
        &[
            (
                4,
                "rules[0].throttle",
                r#"invalid duration "15": missing unit (use ms, s, m, h or d, e.g. 15s)"#,
            ),
            (6, "rules[2].threshold", "must be greater than zero"),
        ],
    );
}

#[test]
fn document_shapes() {
    assert!(parse("").unwrap().rules.is_empty());
    assert!(parse("channels:\nrules:\n").unwrap().channels.is_empty());
    assert_eq!(
        errors("- a\n"),
        [(
            None,
            String::new(),
            "expected a mapping with `channels` and `rules`".to_string()
        )]
    );
    let (line, path, message) = errors("channels: {a: [\n").remove(0);
    assert!(
        line.is_some() && path.is_empty() && message.starts_with("invalid YAML"),
        "{message}"
    );
    assert_errors(
        "channels: [a]\nrules: {a: b}\n",
        &[
            (1, "channels", "expected a mapping of channel name to definition"),
            (2, "rules", "expected a list of rules"),
        ],
    );
    assert_errors(
        "channels:\n  a: slack\nrules:\n  - run_dead\n",
        &[
            (2, "channels.a", "expected a mapping with the channel's `type`"),
            (4, "rules[0]", "expected a mapping with the rule's `name`"),
        ],
    );
}

#[test]
fn a_slack_bot_may_name_its_api_url() {
    let bot =
        |extra: &str| format!("channels:\n  b: {{ type: slack, token: \"${{BOT_TOKEN}}\", channel: ops{extra} }}\n");
    let config = parse(&bot(", api_url: \"http://127.0.0.1:8080/api/\"")).unwrap();
    let ChannelKind::Slack(SlackChannel::Bot { api_url, .. }) = &config.channels["b"].kind else {
        panic!("bot expected");
    };
    assert_eq!(api_url, "http://127.0.0.1:8080/api", "the trailing slash is dropped");
    let json = serde_json::to_value(&config.channels["b"]).unwrap();
    assert_eq!(
        json["api_url"], "http://127.0.0.1:8080/api",
        "shown when not the default"
    );
    let default = parse(&bot("")).unwrap();
    assert!(
        serde_json::to_value(&default.channels["b"])
            .unwrap()
            .get("api_url")
            .is_none()
    );

    assert_errors(
        &bot(", api_url: \"http://slack.example.com/api\""),
        &[(
            2,
            "channels.b.api_url",
            "\"http://slack.example.com/api\": plain http:// is only allowed to a loopback host",
        )],
    );
    assert_errors(
        &bot(", api_url: \"slack.com/api\""),
        &[(2, "channels.b.api_url", "expected an https:// URL")],
    );
    assert_errors(
        "channels:\n  w: { type: slack, webhook_url: \"${SLACK_WEBHOOK_URL}\", api_url: \"https://slack.com/api\" }\n",
        &[(2, "channels.w.api_url", "`api_url` is for a bot: it needs a `token`")],
    );
}

#[test]
fn addresses_must_be_read_alike_by_lettre() {
    let mail = |from: &str, to: &str| {
        format!(
            "channels:\n  m:\n    type: email\n    smtp: {{ host: localhost, tls: none }}\n    from: '{from}'\n    to: ['{to}']\n"
        )
    };
    for (from, to) in [
        ("worker@example.com", "ops@example.com"),
        ("Worker <worker@example.com>", "\"Ops, Team\" <ops@example.com>"),
        ("\"Worker Bot\" <worker@example.com>", "root@[127.0.0.1]"),
        ("Équipe <worker@example.com>", "On Call <oncall+x@mail.example.co.uk>"),
    ] {
        let config = parse(&mail(from, to)).unwrap_or_else(|e| panic!("{from} / {to}: {e}"));
        let ChannelKind::Email(email) = &config.channels["m"].kind else {
            panic!("email expected");
        };
        for address in std::iter::once(&email.from).chain(&email.to) {
            parse_mailbox(address).unwrap_or_else(|e| panic!("{address}: {e}"));
        }
    }
    let mailbox = parse_mailbox("Root <root@[127.0.0.1]>").unwrap();
    assert_eq!(
        (mailbox.name.as_deref(), mailbox.email.to_string().as_str()),
        (Some("Root"), "root@[127.0.0.1]")
    );
    assert_errors(
        &mail("Ops, Team <ops@example.com>", "a@example.com"),
        &[(
            5,
            "channels.m.from",
            "invalid email address \"Ops, Team <ops@example.com>\": ",
        )],
    );
    assert_errors(
        &mail("a@example.com", "Ops; Team <ops@example.com>"),
        &[(
            6,
            "channels.m.to[0]",
            "invalid email address \"Ops; Team <ops@example.com>\": ",
        )],
    );
    assert!(parse_mailbox("ops@[IPv6:::1]").is_ok());
}

/// A webhook URL is shown (`alerts channels`, `Display`, `Debug`) without the
/// password of its user part and without its query values, where keys live;
/// a `${VAR}` reference shows as written.
#[test]
fn webhook_urls_are_shown_without_keys() {
    use super::channel::redact_url;
    assert_eq!(
        redact_url("https://user:pa55@hooks.example.com/x?key=k3y&v=1#frag"),
        "https://user:<redacted>@hooks.example.com/x?key=<redacted>&v=<redacted>#<redacted>"
    );
    assert_eq!(redact_url("https://hooks.example.com/x"), "https://hooks.example.com/x");
    assert_eq!(redact_url("${HOOK_URL}"), "${HOOK_URL}");
    let config = parse("channels:\n  w: { type: webhook, url: \"https://u:pa55@example.com/h?token=k3y\", secret: \"${WEBHOOK_SECRET}\" }\n").unwrap();
    let channel = &config.channels["w"];
    let shown = format!(
        "{channel} {channel:?} {}",
        serde_yaml_ng::to_string(&channel.redacted_spec()).unwrap()
    );
    assert!(!shown.contains("pa55") && !shown.contains("k3y"), "{shown}");
    assert!(shown.contains("example.com/h"), "{shown}");
}

/// `${VARS}` are interpolated only in a channel's secrets, its `url` and its
/// SMTP user name; elsewhere (an address) they are text, and the error about
/// such a field quotes the reference, never the variable's value.
#[test]
fn variables_interpolate_only_in_channel_secrets() {
    let errors = parse(
        "channels:\n  m: { type: email, to: [\"ops@example.com\"], from: \"${SMTP_PASSWORD}\", smtp: { host: smtp.example.com, password: \"${SMTP_PASSWORD}\", username: \"${SMTP_USER}\" } }\n",
    )
    .unwrap_err();
    let text = errors.to_string();
    assert!(!text.contains("smtp-s3cret"), "{text}");
    assert!(text.contains("channels.m.from"), "{text}");
    let config = parse(
        "channels:\n  m: { type: email, to: [\"ops@example.com\"], from: \"w@example.com\", smtp: { host: smtp.example.com, password: \"${SMTP_PASSWORD}\", username: \"${SMTP_USER}\" } }\n",
    )
    .unwrap();
    let ChannelKind::Email(email) = &config.channels["m"].kind else {
        panic!()
    };
    let credentials = email.smtp.credentials.as_ref().unwrap();
    assert_eq!(credentials.username, "mailer");
    assert_eq!(credentials.password.expose(), "smtp-s3cret");
}

/// Alerts never go to cloud metadata or other link-local addresses, nor to
/// an IPv4 address in a disguised form; `file://` is not a web URL.
#[test]
fn link_local_and_disguised_hosts_are_refused() {
    use super::channel::check_url;
    for url in [
        "https://169.254.169.254/latest/meta-data",
        "https://[fe80::1]/x",
        "https://[::ffff:169.254.169.254]/x",
        "https://2852039166/x",
        "https://0xa9fea9fe/x",
        "https://169.254.169.254./x",
        "https://0.0.0.0/x",
        "https://224.0.0.1/x",
        "file:///etc/passwd",
    ] {
        assert!(check_url(url).is_err(), "{url} was accepted");
    }
    for url in [
        "https://hooks.example.com/x",
        "https://10.1.2.3/x",
        "https://[2001:db8::1]/x",
        "http://127.0.0.1:9/h",
    ] {
        assert!(check_url(url).is_ok(), "{url}: {:?}", check_url(url));
    }
}

#[test]
fn rules_may_be_disabled_and_the_flag_round_trips_through_the_spec() {
    let text = "channels:\n  c: { type: discord, webhook_url: \"https://d.example.com/x\" }\nrules:\n  - { name: on, event: run_dead, channels: [c] }\n  - { name: off, event: run_dead, channels: [c], enabled: false }\n";
    let config = parse(text).unwrap();
    let [on, off] = config.rules.as_slice() else {
        panic!("two rules expected");
    };
    assert!(on.enabled, "enabled by default");
    assert!(!off.enabled);
    assert_eq!(
        config
            .matching(Event::RunDead, Some("j"), Some(Priority::Low))
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["on"],
        "a disabled rule matches nothing"
    );
    // The spec as stored (and shown) keeps the flag; parsed again it is the same rule.
    let spec = serde_yaml_ng::to_string(&off.spec).unwrap();
    assert!(spec.contains("enabled: false"), "{spec}");
    let again = parse(&format!(
        "channels:\n  c: {{ type: discord, webhook_url: \"https://d.example.com/x\" }}\nrules:\n  - {}\n",
        serde_json::to_string(&off.spec).unwrap()
    ))
    .unwrap();
    assert!(!again.rules[0].enabled);
    assert_errors(
        "channels:\n  c: { type: discord, webhook_url: \"https://d.example.com/x\" }\nrules:\n  - { name: a, event: run_dead, channels: [c], enabled: maybe }\n",
        &[(4, "rules[0].enabled", "expected a boolean")],
    );
}

#[test]
fn channels_may_be_disabled_and_rules_skip_them() {
    let text = "channels:\n  on: { type: discord, webhook_url: \"https://d.example.com/x\" }\n  off: { type: discord, webhook_url: \"https://d.example.com/y\", enabled: false }\nrules:\n  - { name: both, event: run_dead, channels: [off, on] }\n  - { name: only-off, event: run_dead, channels: [off] }\n";
    let config = parse(text).unwrap();
    assert!(config.channels["on"].enabled, "enabled by default");
    assert!(!config.channels["off"].enabled);
    let delivering = |rule: &str| -> Vec<&str> {
        let rule = config.rules.iter().find(|r| r.name == rule).unwrap();
        config.delivering_channels(rule).map(|c| c.name.as_str()).collect()
    };
    assert_eq!(delivering("both"), ["on"], "the disabled channel is skipped");
    assert!(
        delivering("only-off").is_empty(),
        "a rule with only disabled channels delivers nothing"
    );
    // The rules still match (they are enabled): only the channel is off.
    assert_eq!(
        config.matching(Event::RunDead, Some("j"), Some(Priority::Low)).count(),
        2
    );
    // The flag is kept in the spec as stored and shown, and survives a parse.
    let shown = serde_yaml_ng::to_string(&config.channels["off"].redacted_spec()).unwrap();
    assert!(shown.contains("enabled: false"), "{shown}");
    let mut enabled_again = config.clone();
    enabled_again.channels.get_mut("off").unwrap().enabled = true;
    let rule = enabled_again.rules.iter().find(|r| r.name == "both").unwrap();
    assert_eq!(
        enabled_again
            .delivering_channels(rule)
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["off", "on"],
        "in the rule's order once enabled"
    );
    assert_errors(
        "channels:\n  c: { type: discord, webhook_url: \"https://d.example.com/x\", enabled: maybe }\n",
        &[(2, "channels.c.enabled", "expected a boolean")],
    );
}
