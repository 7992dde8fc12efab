//! `builtin: { name: digest, period: daily|weekly, channel: NAME, to: [...],
//! skip_empty: BOOL }` (`docs/digest.md`).
//!
//! The arguments go to the agent as the flat `args` map: `period`, `channel`
//! (when given), `to.0`, `to.1`, … (one key per recipient, so that an address
//! with a comma in its display name stays whole) and `skip_empty` (`true` /
//! `false`, when given). The controller reads them back with
//! [`crate::digest::DigestArgs::from_args`] when the digest runs. Whether
//! `channel` names an email channel is checked where the alerting
//! configuration is known: when a document is applied through the API, and
//! when the digest runs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use crate::alerting::config::parse_mailbox;
use crate::config::jobs::Checker;
use crate::digest::{MAX_RECIPIENTS, Period};

/// Checks the arguments of a `digest` builtin at `at`.
pub(super) fn check(c: &mut Checker<'_>, at: &[&str], args: Mapping) -> Option<BTreeMap<String, String>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DigestArgs {
        period: String,
        #[serde(default)]
        channel: Option<String>,
        #[serde(default)]
        to: Option<Vec<String>>,
        #[serde(default)]
        skip_empty: Option<bool>,
    }
    let parsed = c.deserialize::<DigestArgs>(at, Value::Mapping(args))?;
    let field = |name: &'static str| [at, &[name]].concat();
    let mut ok = true;
    let mut out = BTreeMap::new();
    match parsed.period.parse::<Period>() {
        Ok(period) => {
            out.insert("period".to_string(), period.as_str().to_string());
        }
        Err(e) => {
            c.error(&field("period"), e);
            ok = false;
        }
    }
    if let Some(channel) = parsed.channel {
        if channel.trim().is_empty() || channel.chars().any(char::is_control) {
            c.error(&field("channel"), format!("invalid channel name {channel:?}"));
            ok = false;
        }
        out.insert("channel".to_string(), channel);
    }
    if let Some(to) = parsed.to {
        if to.is_empty() {
            c.error(
                &field("to"),
                "needs at least one recipient (leave `to` out to use the channel's)",
            );
            ok = false;
        }
        if to.len() > MAX_RECIPIENTS {
            c.error(
                &field("to"),
                format!("{} recipients; at most {MAX_RECIPIENTS} are allowed", to.len()),
            );
            ok = false;
        }
        let mut seen = BTreeSet::new();
        for (index, address) in to.iter().enumerate() {
            let item = format!("[{index}]");
            let path = [at, &["to", item.as_str()]].concat();
            if let Err(e) = parse_mailbox(address) {
                c.error(&path, e);
                ok = false;
            } else if !seen.insert(address.trim().to_ascii_lowercase()) {
                c.error(&path, format!("\"{address}\" is listed twice"));
                ok = false;
            }
            out.insert(format!("to.{index}"), address.clone());
        }
    }
    if let Some(skip) = parsed.skip_empty {
        out.insert("skip_empty".to_string(), skip.to_string());
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::JobSet;
    use crate::config::jobs::parse_scheduler_yaml;
    use crate::digest::DigestArgs;
    use crate::job::ExecutorDef;

    fn parse(text: &str) -> Result<JobSet, String> {
        parse_scheduler_yaml(Path::new("scheduler.yaml"), text, &crate::config::env::from_pairs(&[]))
            .map_err(|e| e.to_string())
    }

    fn args_of(text: &str) -> std::collections::BTreeMap<String, String> {
        let jobs = parse(text).unwrap();
        match &jobs.get("d").unwrap().executor {
            ExecutorDef::Builtin(b) => {
                assert_eq!(b.name, "digest");
                b.args.clone()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_digest_is_flattened_and_read_back() {
        let args = args_of(
            "jobs:\n  d:\n    schedule: '0 8 * * MON'\n    builtin:\n      name: digest\n      period: weekly\n      \
             channel: mail\n      to: [ops@example.com, '\"Doe, Jane\" <jane@example.org>']\n      skip_empty: true\n",
        );
        assert_eq!(args.get("period").map(String::as_str), Some("weekly"));
        assert_eq!(args.get("channel").map(String::as_str), Some("mail"));
        assert_eq!(
            args.get("to.1").map(String::as_str),
            Some("\"Doe, Jane\" <jane@example.org>")
        );
        assert_eq!(args.get("skip_empty").map(String::as_str), Some("true"));
        let back = DigestArgs::from_args(&args).unwrap();
        assert_eq!(back.period, crate::digest::Period::Weekly);
        assert_eq!(back.channel.as_deref(), Some("mail"));
        assert_eq!(back.to, vec!["ops@example.com", "\"Doe, Jane\" <jane@example.org>"]);
        assert!(back.skip_empty);
    }

    #[test]
    fn the_minimal_digest_uses_defaults() {
        let args = args_of("jobs:\n  d:\n    builtin: { name: digest, period: daily }\n");
        assert_eq!(args.len(), 1, "{args:?}");
        let back = DigestArgs::from_args(&args).unwrap();
        assert_eq!(back.period, crate::digest::Period::Daily);
        assert!(back.channel.is_none() && back.to.is_empty() && !back.skip_empty);
    }

    #[test]
    fn bad_arguments_name_field_and_line() {
        let e = parse("jobs:\n  d:\n    builtin: { name: digest }\n").unwrap_err();
        assert!(e.contains("scheduler.yaml:3: jobs.d.builtin"), "{e}");
        assert!(e.contains("missing field `period`"), "{e}");

        let e = parse("jobs:\n  d:\n    builtin: { name: digest, period: hourly }\n").unwrap_err();
        assert!(e.contains("jobs.d.builtin.period"), "{e}");
        assert!(e.contains("\"hourly\"") && e.contains("daily, weekly"), "{e}");

        let e = parse("jobs:\n  d:\n    builtin: { name: digest, period: daily, cc: [a@b.c] }\n").unwrap_err();
        assert!(e.contains("unknown field `cc`"), "{e}");

        let e = parse(
            "jobs:\n  d:\n    builtin:\n      name: digest\n      period: daily\n      to:\n        - ok@example.com\n        - not-an-address\n",
        )
        .unwrap_err();
        assert!(e.contains("scheduler.yaml:8: jobs.d.builtin.to[1]"), "{e}");
        assert!(e.contains("invalid email address \"not-an-address\""), "{e}");

        let e = parse("jobs:\n  d:\n    builtin: { name: digest, period: daily, to: [] }\n").unwrap_err();
        assert!(e.contains("jobs.d.builtin.to: needs at least one recipient"), "{e}");

        let e = parse("jobs:\n  d:\n    builtin: { name: digest, period: daily, to: [a@b.cd, A@B.cd] }\n").unwrap_err();
        assert!(e.contains("is listed twice"), "{e}");

        let e = parse("jobs:\n  d:\n    builtin: { name: digest, period: daily, skip_empty: maybe }\n").unwrap_err();
        assert!(e.contains("jobs.d.builtin.skip_empty"), "{e}");
    }
}
