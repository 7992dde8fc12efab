//! The arguments of the `backup` builtin (`docs/backup.md`):
//!
//! ```yaml
//! builtin:
//!   name: backup
//!   source: store              # or postgres (then database_url: ${VAR})
//!   dir: /var/backups/worker   # and/or s3
//!   s3: { endpoint: https://s3.example.com, bucket: b, prefix: worker, region: eu-west-1 }
//!   keep_days: 30              # 1..=3650
//! ```
//!
//! `database_url` must be exactly one `${VAR}` reference: it is kept as
//! written (the controller never resolves, stores or shows the URL) and the
//! agent reads the variable from its own environment, under its
//! `--allow-env` list, as for `${VAR}` in `http` headers. The arguments go
//! to the agent flattened: `s3.bucket`, `s3.endpoint`, ...

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use crate::config::jobs::Checker;

/// Largest `keep_days` (ten years).
pub const MAX_KEEP_DAYS: i64 = 3650;

/// `keep_days` when the job does not say.
pub const DEFAULT_KEEP_DAYS: i64 = 30;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupArgs {
    source: Option<String>,
    database_url: Option<String>,
    dir: Option<String>,
    s3: Option<S3Args>,
    keep_days: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Args {
    endpoint: Option<String>,
    bucket: String,
    prefix: Option<String>,
    region: Option<String>,
}

/// Checks the arguments of `backup` at `at` (`jobs.NAME.builtin`).
pub(crate) fn check(c: &mut Checker<'_>, at: &[&str], args: Mapping) -> Option<BTreeMap<String, String>> {
    let parsed = c.deserialize::<BackupArgs>(at, Value::Mapping(args))?;
    let field = |name: &'static str| -> Vec<&str> { [at, &[name]].concat() };
    let errors_before = c.errors.len();
    let mut out = BTreeMap::new();

    let source = parsed.source.as_deref().unwrap_or("store");
    match source {
        "store" => {
            if parsed.database_url.is_some() {
                c.error(&field("database_url"), "database_url is for source: postgres (the store backs up the controller's own database)");
            }
        }
        "postgres" => match &parsed.database_url {
            None => c.error(&field("database_url"), "source postgres needs database_url: ${VAR}, a variable of the agent's environment holding the database's URL"),
            Some(url) if !is_single_env_ref(url) => c.error(
                &field("database_url"),
                "must be a single ${VAR} reference (the URL holds a password: the agent reads it from its environment, under its --allow-env; the controller never sees it)",
            ),
            Some(url) => {
                out.insert("database_url".to_string(), url.clone());
            }
        },
        other => c.error(
            &field("source"),
            format!("unknown source \"{other}\" (expected store or postgres)"),
        ),
    }
    out.insert("source".to_string(), source.to_string());

    if let Some(dir) = &parsed.dir {
        if !dir.starts_with('/') {
            c.error(
                &field("dir"),
                format!("\"{dir}\" must be an absolute path (it is a path on the agent)"),
            );
        } else {
            out.insert("dir".to_string(), dir.clone());
        }
    }
    if let Some(s3) = &parsed.s3 {
        let at_s3 = field("s3");
        let sub = |name: &'static str| -> Vec<&str> { [at_s3.as_slice(), &[name]].concat() };
        if s3.bucket.is_empty() {
            c.error(&sub("bucket"), "must not be empty");
        }
        out.insert("s3.bucket".to_string(), s3.bucket.clone());
        if let Some(endpoint) = &s3.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                || endpoint.len() <= "https://".len()
            {
                c.error(
                    &sub("endpoint"),
                    format!("\"{endpoint}\" must be an http:// or https:// URL"),
                );
            }
            out.insert("s3.endpoint".to_string(), endpoint.clone());
        }
        if let Some(prefix) = &s3.prefix {
            let prefix = prefix.trim_matches('/');
            if prefix
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
                && !prefix.is_empty()
            {
                c.error(
                    &sub("prefix"),
                    "must be key segments separated by single / (no empty, . or .. segment)",
                );
            }
            if !prefix.is_empty() {
                out.insert("s3.prefix".to_string(), prefix.to_string());
            }
        }
        if let Some(region) = &s3.region {
            if region.is_empty() {
                c.error(
                    &sub("region"),
                    "must not be empty (leave it out to use AWS_REGION on the agent)",
                );
            }
            out.insert("s3.region".to_string(), region.clone());
        }
    }
    if parsed.dir.is_none() && parsed.s3.is_none() {
        c.error(at, "backup needs a destination: dir, s3, or both");
    }
    let keep_days = parsed.keep_days.unwrap_or(DEFAULT_KEEP_DAYS);
    if !(1..=MAX_KEEP_DAYS).contains(&keep_days) {
        c.error(
            &field("keep_days"),
            format!("{keep_days} is out of range: keep backups from 1 to {MAX_KEEP_DAYS} days"),
        );
    }
    out.insert("keep_days".to_string(), keep_days.to_string());
    (c.errors.len() == errors_before).then_some(out)
}

/// Whether `text` is exactly one `${NAME}` (letters, digits, `_`; not
/// starting with a digit).
fn is_single_env_ref(text: &str) -> bool {
    let Some(name) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
        return false;
    };
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::job::ExecutorDef;

    fn parse(builtin: &str) -> Result<std::collections::BTreeMap<String, String>, Vec<String>> {
        let yaml = format!("jobs:\n  b:\n    builtin: {builtin}\n");
        let lookup = |_: &str| Err("no variables".to_string());
        match crate::config::parse_document(Path::new("s.yaml"), &yaml, &lookup, crate::config::Source::Api) {
            Ok(entries) => match &entries[0].def.executor {
                ExecutorDef::Builtin(b) => Ok(b.args.clone()),
                other => panic!("{other:?}"),
            },
            Err(e) => Err(e.0.iter().map(ToString::to_string).collect()),
        }
    }

    #[test]
    fn good_arguments_are_flattened() {
        let args = parse(
            "{ name: backup, dir: /var/backups, s3: { endpoint: 'http://127.0.0.1:9000', bucket: b, prefix: /w/x/, region: r }, keep_days: 7 }",
        )
        .unwrap();
        let expected: Vec<(&str, &str)> = vec![
            ("dir", "/var/backups"),
            ("keep_days", "7"),
            ("s3.bucket", "b"),
            ("s3.endpoint", "http://127.0.0.1:9000"),
            ("s3.prefix", "w/x"),
            ("s3.region", "r"),
            ("source", "store"),
        ];
        assert_eq!(
            args.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(),
            expected
        );
        let args = parse("{ name: backup, source: postgres, database_url: '${APP_DB_URL}', dir: /b }").unwrap();
        assert_eq!(args["database_url"], "${APP_DB_URL}");
        assert_eq!(args["keep_days"], "30");
    }

    #[test]
    fn bad_arguments_name_their_field_and_line() {
        for (builtin, expected) in [
            (
                "{ name: backup }",
                "s.yaml:3: jobs.b.builtin: backup needs a destination",
            ),
            (
                "{ name: backup, dir: /b, keep_days: 0 }",
                "jobs.b.builtin.keep_days: 0 is out of range",
            ),
            (
                "{ name: backup, dir: /b, keep_days: 3651 }",
                "jobs.b.builtin.keep_days: 3651 is out of range",
            ),
            ("{ name: backup, dir: /b, keep_days: soon }", "jobs.b.builtin.keep_days"),
            (
                "{ name: backup, dir: /b, colour: red }",
                "jobs.b.builtin.colour: unknown field `colour`",
            ),
            (
                "{ name: backup, s3: { bucket: b, acl: public } }",
                "jobs.b.builtin.s3.acl: unknown field `acl`",
            ),
            (
                "{ name: backup, s3: { prefix: p } }",
                "jobs.b.builtin.s3: missing field `bucket`",
            ),
            (
                "{ name: backup, dir: relative }",
                "jobs.b.builtin.dir: \"relative\" must be an absolute path",
            ),
            (
                "{ name: backup, dir: /b, source: postgres, database_url: 'postgres://u:pw@db/app' }",
                "jobs.b.builtin.database_url: must be a single ${VAR} reference",
            ),
            (
                "{ name: backup, dir: /b, source: postgres, database_url: 'x${A}' }",
                "jobs.b.builtin.database_url: must be a single ${VAR} reference",
            ),
            (
                "{ name: backup, dir: /b, source: postgres }",
                "jobs.b.builtin.database_url: source postgres needs",
            ),
            (
                "{ name: backup, dir: /b, source: mysql }",
                "jobs.b.builtin.source: unknown source \"mysql\"",
            ),
            (
                "{ name: backup, s3: { bucket: b, endpoint: 'ftp://x' } }",
                "jobs.b.builtin.s3.endpoint: \"ftp://x\" must be an http:// or https:// URL",
            ),
        ] {
            let errors = parse(builtin).unwrap_err();
            assert!(errors.iter().any(|e| e.contains(expected)), "{builtin}: {errors:?}");
        }
    }
}
