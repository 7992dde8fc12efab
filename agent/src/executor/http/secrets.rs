//! Secrets of an `http` job: `${VAR}` in its header values, read from the
//! agent's environment, and their redaction from what the attempt reports.
//!
//! # Interpolation
//!
//! `${VAR}` (a name of letters, digits and `_`) in the text of a header value
//! as the job wrote it is replaced by the variable's value, read when the
//! request is made. Only variables the agent's operator allowed with
//! `--allow-env` (env `WORKER_AGENT_ALLOW_ENV`) may be read: the job's author
//! is not trusted with everything in the agent's environment. `$${` is a
//! literal `${`; a `${...}` that is not a name is text. A reference to a
//! variable that is not allowed or not set fails the attempt permanently,
//! with a message that names the variable and never holds a value. Values
//! substituted from the payload are never interpolated (a payload holding
//! `${API_TOKEN}` sends that text, not the token).
//!
//! # Redaction
//!
//! Redaction is by value: every occurrence of every non-empty interpolated
//! value in the output (the response body, as kept and as streamed live) and
//! in the error is replaced by `***`, however it got there (a server that
//! echoes a header back, an error that quotes one). A short value redacts
//! every occurrence of those characters, wherever they stand. [`Redactor`]
//! works on a stream, holding back the few bytes that might be the start of a
//! value cut by a chunk boundary; a stream that ends inside a value (a body
//! cut short) ends with `***` rather than with part of the value.

use crate::config::EnvPattern;

/// What stands for a redacted value.
pub const MASK: &str = "***";

/// Replaces `${VAR}` in `text` with the variable's value from `lookup`,
/// refusing variables no pattern of `allowed` covers; every value used is
/// pushed to `secrets`. The error names the variable, never a value.
pub fn interpolate(
    text: &str,
    allowed: &[EnvPattern],
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<String, String> {
    crate::config::substitute_env_refs(text, &mut |name| resolve(name, allowed, lookup, secrets))
}

fn resolve(
    name: &str,
    allowed: &[EnvPattern],
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<String>,
) -> Result<String, String> {
    if !allowed.iter().any(|p| p.matches(name)) {
        return Err(format!(
            "${{{name}}} may not be interpolated: the agent reads only the variables named by its \
             --allow-env (WORKER_AGENT_ALLOW_ENV), and {name} is not one of them"
        ));
    }
    let value = lookup(name)
        .ok_or_else(|| format!("environment variable {name} is not set on the agent (referenced as ${{{name}}})"))?;
    secrets.push(value.clone());
    Ok(value)
}

/// The production lookup: the agent process's environment (a value that is
/// not UTF-8 counts as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Replaces secret values with [`MASK`] in text and in a byte stream.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Non-empty values, longest first (the longest match wins).
    secrets: Vec<Vec<u8>>,
    /// Bytes held back: they may be the start of a value.
    carry: Vec<u8>,
}

impl Redactor {
    /// A redactor of `secrets` (empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(String::into_bytes)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self {
            secrets,
            carry: Vec::new(),
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        let (out, _) = self.scan(text.as_bytes(), true);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Feeds the next chunk of a stream; returns what can be passed on. A
    /// few bytes at the end may be held back until the next chunk or
    /// [`Redactor::finish`].
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.is_empty() {
            return chunk.to_vec();
        }
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        let (out, held) = self.scan(&data, false);
        self.carry = data[held..].to_vec();
        out
    }

    /// Ends the stream; returns the bytes still held back, redacted. A tail
    /// that is the start of a value (a stream cut off inside one) is masked
    /// too: part of a secret is not shown either.
    pub fn finish(&mut self) -> Vec<u8> {
        let data = std::mem::take(&mut self.carry);
        let (mut out, held) = self.scan(&data, false);
        if held < data.len() {
            out.extend_from_slice(MASK.as_bytes());
        }
        out
    }

    /// Redacts `data`; returns the output and where the held-back tail
    /// starts (`data.len()` when `last`, or when nothing may be a cut value).
    fn scan(&self, data: &[u8], last: bool) -> (Vec<u8>, usize) {
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            // A longer value might still complete: wait for more bytes.
            if !last && self.secrets.iter().any(|s| s.len() > rest.len() && s.starts_with(rest)) {
                return (out, i);
            }
            if let Some(secret) = self.secrets.iter().find(|s| rest.starts_with(s)) {
                out.extend_from_slice(MASK.as_bytes());
                i += secret.len();
            } else {
                out.push(data[i]);
                i += 1;
            }
        }
        (out, data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "API_TOKEN" => Some("s3cr3t".into()),
            "EMPTY" => Some(String::new()),
            "WORKER_SECRET_A" => Some("aaa".into()),
            _ => None,
        }
    }

    fn allow(list: &str) -> Vec<EnvPattern> {
        crate::config::parse_allow_env(list).unwrap()
    }

    #[test]
    fn allowed_variables_are_interpolated_and_recorded() {
        let mut secrets = Vec::new();
        let out = interpolate(
            "Bearer ${API_TOKEN} ${WORKER_SECRET_A}${EMPTY}",
            &allow("API_TOKEN,WORKER_SECRET_*,EMPTY"),
            &env,
            &mut secrets,
        )
        .unwrap();
        assert_eq!(out, "Bearer s3cr3t aaa");
        assert_eq!(secrets, ["s3cr3t", "aaa", ""]);
    }

    #[test]
    fn escapes_and_non_names_stay_text() {
        let mut secrets = Vec::new();
        let out = interpolate(
            "$${API_TOKEN} ${not a name} $5 ${open",
            &allow("API_TOKEN"),
            &env,
            &mut secrets,
        )
        .unwrap();
        assert_eq!(out, "${API_TOKEN} ${not a name} $5 ${open");
        assert!(secrets.is_empty());
    }

    #[test]
    fn refusals_name_the_variable_and_never_a_value() {
        let mut secrets = Vec::new();
        let err = interpolate("${API_TOKEN}", &allow("OTHER"), &env, &mut secrets).unwrap_err();
        assert!(err.starts_with("${API_TOKEN} may not be interpolated"), "{err}");
        assert!(err.contains("--allow-env"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = interpolate("${MISSING}", &allow("MISSING"), &env, &mut secrets).unwrap_err();
        assert_eq!(
            err,
            "environment variable MISSING is not set on the agent (referenced as ${MISSING})"
        );
        assert!(secrets.is_empty());
    }

    #[test]
    fn text_is_redacted_longest_value_first() {
        let r = Redactor::new(["abc".to_string(), "abcdef".into(), String::new()]);
        assert_eq!(r.redact("x abcdef y abc z ab"), "x *** y *** z ab");
        assert_eq!(Redactor::new(Vec::<String>::new()).redact("abc"), "abc");
    }

    #[test]
    fn a_value_cut_by_chunk_boundaries_is_still_redacted() {
        let text = b"token=s3cr3t; again s3cr3t! cut s3cr";
        for split in 1..6 {
            let mut r = Redactor::new(["s3cr3t".to_string()]);
            let mut out = Vec::new();
            for chunk in text.chunks(split) {
                out.extend(r.push(chunk));
            }
            out.extend(r.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                "token=***; again ***! cut ***",
                "chunks of {split}"
            );
        }
    }

    #[test]
    fn a_longer_value_is_not_cut_short_at_a_chunk_boundary() {
        let mut r = Redactor::new(["abc".to_string(), "abcdef".into()]);
        let mut out = r.push(b"1 abc");
        out.extend(r.push(b"def 2"));
        out.extend(r.finish());
        assert_eq!(String::from_utf8(out).unwrap(), "1 *** 2");
    }

    #[test]
    fn nothing_is_held_back_without_secrets() {
        let mut r = Redactor::new(Vec::<String>::new());
        assert_eq!(r.push(b"abc"), b"abc");
        assert!(r.finish().is_empty());
    }
}
