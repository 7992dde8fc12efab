//! Which environment variables `${VAR}` references may read.
//!
//! A `${VAR}` reference is interpolated only in the fields documented for it
//! (a shell job's `env` values and an alert channel's secrets: see
//! `docs/security.md`), and only for variables the operator named at start-up
//! with `--allow-env` (or `WORKER_ALLOW_ENV`). Anything else in the
//! controller's environment (its database URL, cloud credentials, the
//! bootstrap token) can never be sent to an agent or a channel by whoever may
//! define jobs or channels. The allow-list belongs to the process, as its
//! environment does, so it is process-wide: `main` sets it before the
//! configuration is loaded.
//!
//! Lookups answer with the variable's value or with a message that names the
//! variable, never a value: the message ends up in validation errors.

use std::sync::RwLock;

/// How a `${VAR}` reference is resolved: the value, or why it cannot be.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// The process-wide allow-list (empty: no variable may be interpolated).
static ALLOWED: RwLock<Vec<Pattern>> = RwLock::new(Vec::new());

/// One entry of the allow-list: a name, or a prefix written `PREFIX*`. The
/// agent's `--allow-env` (for `http` headers) has the same grammar, and this
/// is its type.
pub use worker_agent::config::EnvPattern as Pattern;

/// Parses `--allow-env`: comma-separated names of letters, digits and `_`,
/// each optionally ending in `*` (a prefix of at least one character).
pub fn parse_allow_list(text: &str) -> Result<Vec<Pattern>, String> {
    worker_agent::config::parse_allow_env(text)
}

/// Sets the process-wide allow-list (called once by `main`, before loading
/// the configuration).
pub fn allow(patterns: Vec<Pattern>) {
    *ALLOWED.write().unwrap_or_else(|e| e.into_inner()) = patterns;
}

/// Whether `name` is on the process-wide allow-list.
pub fn is_allowed(name: &str) -> bool {
    ALLOWED
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|p| p.matches(name))
}

/// The production lookup: the process environment, through the allow-list.
pub fn lookup(name: &str) -> Result<String, String> {
    if !is_allowed(name) {
        return Err(format!(
            "${{{name}}} may not be interpolated: the controller reads only the variables named by \
             --allow-env (WORKER_ALLOW_ENV), and {name} is not one of them"
        ));
    }
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set (referenced as ${{{name}}})"))
}

/// A lookup over fixed pairs, for tests and tools: every listed variable is
/// allowed, every other one is unset.
pub fn from_pairs<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Result<String, String> + 'a {
    move |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| format!("environment variable {name} is not set (referenced as ${{{name}}})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_parses_names_and_prefixes() {
        assert_eq!(
            parse_allow_list(" SLACK_URL, SMTP_* ,").unwrap(),
            vec![Pattern::Name("SLACK_URL".into()), Pattern::Prefix("SMTP_".into())]
        );
        assert_eq!(parse_allow_list("").unwrap(), vec![]);
        for bad in ["*", "A-B", "A B", "$X", "A*B"] {
            let err = parse_allow_list(bad).unwrap_err();
            assert!(err.contains("is not a variable name"), "{bad}: {err}");
        }
    }

    #[test]
    fn patterns_match_names_and_prefixes() {
        assert!(Pattern::Name("A".into()).matches("A"));
        assert!(!Pattern::Name("A".into()).matches("AB"));
        assert!(Pattern::Prefix("WORKER_SECRET_".into()).matches("WORKER_SECRET_X"));
        assert!(!Pattern::Prefix("WORKER_SECRET_".into()).matches("WORKER_DB_URL"));
    }
}
