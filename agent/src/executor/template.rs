//! The `{{...}}` templates of an `http` job's URL, header values and body
//! (`docs/executors.md#http`).
//!
//! A template is text with placeholders:
//!
//! * `{{payload}}` — the run's payload, its JSON text as enqueued (`null` when
//!   the run has none);
//! * `{{payload.a.b}}` — a field of the payload: a string bare, any other value
//!   as compact JSON (`42`, `true`, `{"x":1}`), `""` when the field is absent.
//!   A segment that is a number indexes an array (`{{payload.items.0}}`);
//! * `{{run.id}}`, `{{run.attempt}}`, `{{run.job}}` — the attempt's run id,
//!   attempt number and job name.
//!
//! Whitespace inside the braces is ignored (`{{ payload.id }}`). Any other
//! placeholder, or a `{{` without its `}}`, is an error: the controller
//! refuses such definitions, and the agent refuses them again rather than
//! guess. Text outside placeholders is copied as written (`${VAR}` included:
//! what reads the environment is the caller's business, on the text pieces
//! only, see [`parse`]).
//!
//! [`render`] fills a template; with [`Escape::Url`] every substituted value is
//! percent-encoded (all but `A-Z a-z 0-9 - . _ ~`), and a value `.` or `..`
//! is refused, so a payload value cannot change the URL's structure (add or
//! climb a path segment, add a query parameter, a user part). The payload is parsed once, on the first field that needs it.

use std::cell::OnceCell;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// What percent-encoding leaves alone in a value substituted into a URL: the
/// unreserved characters of RFC 3986.
const URL_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Why a template cannot be filled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` without a `}}` after it.
    #[error("a `{{{{` is not closed by `}}}}`")]
    Unclosed,
    /// A placeholder that is none of the known ones (its text, trimmed).
    #[error("unknown placeholder `{{{{{0}}}}}` (expected payload, payload.FIELD, run.id, run.attempt or run.job)")]
    Unknown(String),
    /// A value substituted into a URL is `.` or `..`, which a URL parser
    /// would take for a step through the path.
    #[error("a value substituted into the URL is \"{0}\", which would move along the URL's path")]
    DotSegment(String),
    /// A `{{payload.FIELD}}` when the payload is not JSON (the parser's message).
    #[error("`{{{{{placeholder}}}}}` needs a field of the payload, which is not JSON: {reason}")]
    PayloadNotJson {
        /// The placeholder, trimmed.
        placeholder: String,
        /// What the JSON parser said.
        reason: String,
    },
}

/// A placeholder of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<'t> {
    /// `{{payload}}`.
    Payload,
    /// `{{payload.a.b}}`: the path's segments (`["a", "b"]`).
    PayloadPath(Vec<&'t str>),
    /// `{{run.id}}`.
    RunId,
    /// `{{run.attempt}}`.
    RunAttempt,
    /// `{{run.job}}`.
    RunJob,
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'t> {
    /// Text copied as written.
    Text(&'t str),
    /// A placeholder to substitute.
    Field(Field<'t>),
}

/// Splits `template` into text and placeholders.
pub fn parse(template: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            pieces.push(Piece::Text(&rest[..open]));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or(TemplateError::Unclosed)?;
        pieces.push(Piece::Field(field(after[..close].trim())?));
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// The placeholder named `name` (trimmed text between the braces).
fn field(name: &str) -> Result<Field<'_>, TemplateError> {
    match name {
        "payload" => return Ok(Field::Payload),
        "run.id" => return Ok(Field::RunId),
        "run.attempt" => return Ok(Field::RunAttempt),
        "run.job" => return Ok(Field::RunJob),
        _ => {}
    }
    let path = name
        .strip_prefix("payload.")
        .map(|p| p.split('.').collect::<Vec<_>>())
        .filter(|segs| segs.iter().all(|s| !s.is_empty() && !s.contains(char::is_whitespace)));
    path.map(Field::PayloadPath)
        .ok_or_else(|| TemplateError::Unknown(name.to_string()))
}

/// How substituted values are written into the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As they are (header values, bodies).
    None,
    /// Percent-encoded (URLs).
    Url,
}

/// The values placeholders stand for: one attempt's run fields and payload.
#[derive(Debug)]
pub struct Fields<'a> {
    run_id: &'a str,
    attempt: u32,
    job: &'a str,
    payload_text: &'a str,
    /// The parsed payload, on first need.
    payload: OnceCell<Result<Value, String>>,
}

impl<'a> Fields<'a> {
    /// The fields of attempt `attempt` of run `run_id` of `job`, whose payload
    /// is the JSON text `payload` (empty: no payload, `null`).
    pub fn new(run_id: &'a str, attempt: u32, job: &'a str, payload: &'a str) -> Self {
        Self {
            run_id,
            attempt,
            job,
            payload_text: payload,
            payload: OnceCell::new(),
        }
    }

    /// The text `field` stands for (not escaped).
    pub fn value(&self, field: &Field<'_>) -> Result<String, TemplateError> {
        Ok(match field {
            Field::Payload if self.payload_text.trim().is_empty() => "null".to_string(),
            Field::Payload => self.payload_text.to_string(),
            Field::RunId => self.run_id.to_string(),
            Field::RunAttempt => self.attempt.to_string(),
            Field::RunJob => self.job.to_string(),
            Field::PayloadPath(path) => {
                let root = self.payload().map_err(|reason| TemplateError::PayloadNotJson {
                    placeholder: format!("payload.{}", path.join(".")),
                    reason: reason.clone(),
                })?;
                match lookup(root, path) {
                    None => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                }
            }
        })
    }

    fn payload(&self) -> Result<&Value, &String> {
        self.payload
            .get_or_init(|| {
                if self.payload_text.trim().is_empty() {
                    Ok(Value::Null)
                } else {
                    serde_json::from_str(self.payload_text).map_err(|e| e.to_string())
                }
            })
            .as_ref()
    }
}

/// The value at `path` under `root`: object keys by name, array elements by
/// index.
fn lookup<'v>(root: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(root, |value, segment| match value {
        Value::Object(map) => map.get(*segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Whether the scheme or the authority (user, host, port) of the URL
/// template `url` holds a placeholder: then whoever writes the payload picks
/// the server, which must not be allowed when the request carries secrets
/// (`${VAR}` in its headers).
pub fn templated_origin(url: &str) -> bool {
    let url = url.trim();
    let (scheme, rest) = match url.find("://") {
        Some(at) => (&url[..at], &url[at + 3..]),
        None => return url.contains("{{"),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    scheme.contains("{{") || authority.contains("{{") || authority.contains("}}")
}

/// Fills `template` from `fields`, escaping substituted values as `escape` says.
pub fn render(template: &str, fields: &Fields<'_>, escape: Escape) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Field(field) => {
                let value = fields.value(&field)?;
                match escape {
                    Escape::None => out.push_str(&value),
                    // `.` and `..` are dot segments however they are encoded
                    // (`%2e%2e` too): a URL parser would climb the path.
                    Escape::Url if value == "." || value == ".." => {
                        return Err(TemplateError::DotSegment(value.to_string()));
                    }
                    Escape::Url => out.extend(utf8_percent_encode(&value, URL_VALUE)),
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &str = r#"{"id": 42, "name": "Ada Lovelace", "lead": {"email": "ada@example.com", "tags": ["a", "b"]},
        "ok": true, "none": null, "path": "../x?y=1&z#f"}"#;

    fn fields(payload: &str) -> Fields<'_> {
        Fields::new("01RUN", 3, "leads.enrich", payload)
    }

    #[test]
    fn fills_run_fields_and_payload_fields() {
        let f = fields(PAYLOAD);
        let out = render(
            "{{run.id}}/{{ run.attempt }}/{{run.job}}: {{payload.name}} <{{payload.lead.email}}> #{{payload.id}} {{payload.ok}} {{payload.none}}",
            &f,
            Escape::None,
        )
        .unwrap();
        assert_eq!(
            out,
            "01RUN/3/leads.enrich: Ada Lovelace <ada@example.com> #42 true null"
        );
    }

    #[test]
    fn objects_and_arrays_render_as_json_and_index_by_number() {
        let f = fields(PAYLOAD);
        assert_eq!(
            render("{{payload.lead}}", &f, Escape::None).unwrap(),
            r#"{"email":"ada@example.com","tags":["a","b"]}"#
        );
        assert_eq!(render("{{payload.lead.tags.1}}", &f, Escape::None).unwrap(), "b");
        assert_eq!(
            render("{{payload.lead.tags}}", &f, Escape::None).unwrap(),
            r#"["a","b"]"#
        );
    }

    #[test]
    fn absent_fields_are_empty() {
        let f = fields(PAYLOAD);
        for t in [
            "{{payload.missing}}",
            "{{payload.lead.missing.deeper}}",
            "{{payload.lead.tags.9}}",
            "{{payload.id.x}}",
        ] {
            assert_eq!(render(t, &f, Escape::None).unwrap(), "", "{t}");
        }
    }

    #[test]
    fn the_whole_payload_is_its_text_or_null() {
        assert_eq!(
            render("{{payload}}", &fields(r#"{"a":1}"#), Escape::None).unwrap(),
            r#"{"a":1}"#
        );
        assert_eq!(render("[{{payload}}]", &fields(""), Escape::None).unwrap(), "[null]");
        // No payload: every field is absent.
        assert_eq!(render("[{{payload.a}}]", &fields(""), Escape::None).unwrap(), "[]");
    }

    #[test]
    fn url_values_are_percent_encoded_and_the_template_text_is_not() {
        let f = fields(PAYLOAD);
        let out = render(
            "https://api.example.com/leads/{{payload.path}}?name={{payload.name}}&job={{run.job}}",
            &f,
            Escape::Url,
        )
        .unwrap();
        assert_eq!(
            out,
            "https://api.example.com/leads/..%2Fx%3Fy%3D1%26z%23f?name=Ada%20Lovelace&job=leads.enrich"
        );
        let f = fields(r#"{"s": "é~"}"#);
        assert_eq!(render("/{{payload.s}}", &f, Escape::Url).unwrap(), "/%C3%A9~");
    }

    #[test]
    fn env_references_are_text() {
        let pieces = parse("Bearer ${TOKEN} {{run.id}}").unwrap();
        assert_eq!(pieces, [Piece::Text("Bearer ${TOKEN} "), Piece::Field(Field::RunId)]);
        assert_eq!(render("${X}", &fields(""), Escape::Url).unwrap(), "${X}");
        for dots in [".", ".."] {
            let payload = format!(r#"{{"id": "{dots}"}}"#);
            let f = fields(&payload);
            assert_eq!(
                render("https://a/users/{{payload.id}}/delete", &f, Escape::Url),
                Err(TemplateError::DotSegment(dots.into()))
            );
            assert!(render("{{payload.id}}", &f, Escape::None).is_ok(), "only URLs care");
        }
        let f = fields(r#"{"id": "..."}"#);
        assert_eq!(render("/{{payload.id}}", &f, Escape::Url).unwrap(), "/...");
        assert!(templated_origin("https://{{payload.host}}/x"));
        assert!(templated_origin("https://api.example.com:{{payload.port}}/x"));
        assert!(templated_origin("{{payload.url}}"));
        assert!(!templated_origin("https://api.example.com/{{payload.id}}?q={{run.id}}"));
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let f = fields(PAYLOAD);
        assert_eq!(render("x {{payload", &f, Escape::None), Err(TemplateError::Unclosed));
        let err = render("{{env.HOME}}", &f, Escape::None).unwrap_err();
        assert_eq!(err, TemplateError::Unknown("env.HOME".into()));
        assert!(err.to_string().contains("`{{env.HOME}}`"), "{err}");
        assert!(matches!(
            render("{{payload.}}", &f, Escape::None),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            render("{{payload.a b}}", &f, Escape::None),
            Err(TemplateError::Unknown(_))
        ));
        let err = render("{{payload.a}}", &fields("not json"), Escape::None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`{{payload.a}}` needs a field of the payload, which is not JSON"),
            "{err}"
        );
        // The raw text needs no parsing.
        assert_eq!(
            render("{{payload}}", &fields("not json"), Escape::None).unwrap(),
            "not json"
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let f = fields("");
        assert_eq!(render("", &f, Escape::None).unwrap(), "");
        assert_eq!(render("a } b }} c {", &f, Escape::None).unwrap(), "a } b }} c {");
    }
}
