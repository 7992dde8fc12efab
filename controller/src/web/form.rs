//! Form bodies and query strings as ordered `name=value` pairs.
//!
//! Repeated keys are kept (a DLQ selection sends `id` once per checked run),
//! which `serde_urlencoded` cannot express. The CSRF guard parses each
//! state-changing body once and hands it to the handler as a [`FormData`]
//! request extension; GET handlers read their query with [`Query`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// Largest form body accepted (a job definition with its YAML, an alert
/// channel): larger bodies are refused with 413 before they are parsed.
pub const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

/// Decoded `name=value` pairs, in order.
#[derive(Debug, Clone, Default)]
pub struct FormData {
    pairs: Vec<(String, String)>,
}

impl FormData {
    /// Parses `application/x-www-form-urlencoded` bytes.
    pub fn parse(bytes: &[u8]) -> FormData {
        FormData {
            pairs: form_urlencoded::parse(bytes).into_owned().collect(),
        }
    }

    /// The first value of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, or "" if absent.
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_string()
    }

    /// Whether a checkbox `name` was checked (present with any value but "").
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| !v.is_empty())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every pair.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// The query string of a GET request, as [`FormData`].
#[derive(Debug, Clone, Default)]
pub struct Query(pub FormData);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Query, Self::Rejection> {
        Ok(Query(FormData::parse(parts.uri.query().unwrap_or("").as_bytes())))
    }
}

impl std::ops::Deref for Query {
    type Target = FormData;

    fn deref(&self) -> &FormData {
        &self.0
    }
}

/// Builds a query string from pairs (values percent-encoded), "" when empty,
/// else starting with `?`. Pairs with an empty value are left out.
pub fn query_string<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if !v.is_empty() {
            out.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("?{}", out.finish())
    } else {
        String::new()
    }
}

/// Percent-encodes one path segment (a job name, a run id) for a link.
pub fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_are_kept_and_values_decoded() {
        let f = FormData::parse(b"id=a&id=b&note=hello+world%21&empty=");
        assert_eq!(f.all("id"), vec!["a", "b"]);
        assert_eq!(f.get("note"), Some("hello world!"));
        assert!(!f.checked("empty"));
        assert!(f.checked("note"));
        assert_eq!(f.text("missing"), "");
    }

    #[test]
    fn query_strings_and_segments_are_encoded() {
        assert_eq!(query_string([("job", "a b&c"), ("state", "")]), "?job=a+b%26c");
        assert_eq!(query_string([("state", "")]), "");
        assert_eq!(segment("nightly report/1"), "nightly%20report%2F1");
    }
}
