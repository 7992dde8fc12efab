//! From a verified pack to the document `ApplyJobs` takes: the variables'
//! values (given, else defaults), then `{{vars.NAME}}` and `{{file:PATH}}`
//! replaced in the string scalars of the parsed `job.yaml`.
//!
//! Substitution works on the parsed YAML tree, never on its text, and the
//! result is serialized again by the YAML library: a value can change a
//! string, never the document's structure (`x: y\nevil: true` stays one
//! string). A substituted scalar is always a string (`"{{vars.DAYS}}"` with
//! 14 is the text `14`, as a shell command's arguments need): numbers and
//! booleans a job field takes are written in the pack itself. Values are not
//! scanned again: a value holding `{{file:x}}` stays as written.
//! Other `{{...}}` (an http job's `{{payload.id}}`) are left for the agent.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::pack::{Pack, check_value};

/// Everything wrong with an install's variables, or with its `job.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// Variables without a value and without a default (all of them).
    #[error("missing variables: {} (give them with --set NAME=VALUE)", .0.join(", "))]
    Missing(Vec<String>),
    /// A given variable the pack does not declare, or a bad value.
    #[error("{0}")]
    Variables(String),
    /// `job.yaml` cannot be rendered (each problem).
    #[error("job.yaml: {}", .0.join("; "))]
    Render(Vec<String>),
}

/// The value of every declared variable: `given`, else the default. Refuses
/// unknown names, values a variable may not take (a secret must be a
/// `${VAR}` reference), and lists every variable left without a value.
pub fn resolve_variables(
    pack: &Pack,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, InstallError> {
    let declared = &pack.manifest.variables;
    let unknown: Vec<&str> = given
        .keys()
        .filter(|name| !declared.iter().any(|v| &v.name == *name))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let names: Vec<&str> = declared.iter().map(|v| v.name.as_str()).collect();
        return Err(InstallError::Variables(format!(
            "unknown variable(s) {} (the pack declares: {})",
            unknown
                .iter()
                .map(|n| crate::limits::echo(n))
                .collect::<Vec<_>>()
                .join(", "),
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    let mut values = BTreeMap::new();
    let mut missing = Vec::new();
    let mut bad = Vec::new();
    for variable in declared {
        match given.get(&variable.name).or(variable.default.as_ref()) {
            Some(value) => {
                if let Err(e) = check_value(variable, value) {
                    bad.push(e);
                }
                values.insert(variable.name.clone(), value.clone());
            }
            None => missing.push(variable.name.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(InstallError::Missing(missing));
    }
    if !bad.is_empty() {
        return Err(InstallError::Variables(bad.join("; ")));
    }
    Ok(values)
}

/// `job.yaml` with every placeholder replaced, as YAML text for `ApplyJobs`.
pub fn render(pack: &Pack, values: &BTreeMap<String, String>) -> Result<String, InstallError> {
    let text = pack.job_text().map_err(|e| InstallError::Render(vec![e.to_string()]))?;
    crate::config::check_document(std::path::Path::new(super::pack::JOB_FILE), text)
        .map_err(|e| InstallError::Render(vec![e.message]))?;
    let mut document: Value =
        serde_yaml_ng::from_str(text).map_err(|e| InstallError::Render(vec![format!("invalid YAML: {e}")]))?;
    match &document {
        Value::Mapping(m) if m.get("jobs").is_some_and(Value::is_mapping) => {}
        _ => {
            return Err(InstallError::Render(vec![
                "expected a `jobs:` mapping of job definitions".into(),
            ]));
        }
    }
    let mut problems = Vec::new();
    walk(&mut document, pack, values, &mut problems);
    if !problems.is_empty() {
        problems.sort();
        problems.dedup();
        return Err(InstallError::Render(problems));
    }
    serde_yaml_ng::to_string(&document).map_err(|e| InstallError::Render(vec![e.to_string()]))
}

fn walk(value: &mut Value, pack: &Pack, values: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            if let Some(new) = substitute_scalar(s, pack, values, problems) {
                *value = new;
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| walk(v, pack, values, problems)),
        Value::Mapping(map) => map.values_mut().for_each(|v| walk(v, pack, values, problems)),
        Value::Tagged(tagged) => walk(&mut tagged.value, pack, values, problems),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The new value of one string scalar, when it holds placeholders.
fn substitute_scalar(
    s: &str,
    pack: &Pack,
    values: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<Value> {
    if !s.contains("{{") {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else { break };
        let inner = &rest[start + 2..start + len];
        let replacement = match parse_placeholder(inner) {
            Some(Placeholder::Var(name)) => match values.get(name) {
                Some(v) => Some(v.clone()),
                None => {
                    problems.push(format!(
                        "{{{{vars.{name}}}}} names a variable pack.yaml does not declare"
                    ));
                    Some(String::new())
                }
            },
            Some(Placeholder::File(path)) => Some(file_text(pack, path, problems)),
            None => None,
        };
        out.push_str(&rest[..start]);
        match replacement {
            Some(r) => {
                out.push_str(&r);
                changed = true;
            }
            None => out.push_str(&rest[start..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    changed.then_some(Value::String(out))
}

fn file_text(pack: &Pack, path: &str, problems: &mut Vec<String>) -> String {
    if !pack.manifest.files.contains_key(path) {
        problems.push(format!(
            "{{{{file:{}}}}} names a file pack.yaml does not list",
            crate::limits::echo(path)
        ));
        return String::new();
    }
    match pack.files.get(path).map(|b| std::str::from_utf8(b)) {
        Some(Ok(text)) => text.to_string(),
        _ => {
            problems.push(format!("{{{{file:{path}}}}}: the file is not UTF-8 text"));
            String::new()
        }
    }
}

/// A placeholder of a pack: `{{vars.NAME}}` or `{{file:PATH}}`.
enum Placeholder<'a> {
    Var(&'a str),
    File(&'a str),
}

fn parse_placeholder(inner: &str) -> Option<Placeholder<'_>> {
    let inner = inner.trim();
    if let Some(name) = inner.strip_prefix("vars.") {
        Some(Placeholder::Var(name))
    } else {
        inner.strip_prefix("file:").map(|p| Placeholder::File(p.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::pack::sha256_hex;
    use super::*;

    fn pack(job: &str, variables: &str, extra: &[(&str, &str)]) -> Pack {
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        files.insert("job.yaml".into(), job.as_bytes().to_vec());
        for (p, c) in extra {
            files.insert(p.to_string(), c.as_bytes().to_vec());
        }
        let mut manifest = format!("name: p\nversion: 0.1.0\ndescription: d\n{variables}files:\n");
        for (p, c) in &files {
            manifest.push_str(&format!("  {p}: {}\n", sha256_hex(c)));
        }
        files.insert("pack.yaml".into(), manifest.into_bytes());
        Pack::from_files(files).unwrap()
    }

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn values_cannot_inject_yaml() {
        let p = pack(
            "jobs:\n  sync:\n    description: \"Sync {{vars.REPO}}\"\n    shell: \"echo {{vars.REPO}}\"\n",
            "variables:\n  - name: REPO\n",
            &[],
        );
        let evil = "x\"\n    schedule: \"* * * * *\"\n  other:\n    shell: rm -rf /";
        let values = resolve_variables(&p, &given(&[("REPO", "a\tb")])).unwrap();
        let yaml = render(&p, &values).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(doc["jobs"]["sync"]["shell"], Value::String("echo a\tb".into()));
        // A value with line breaks is refused before rendering…
        let err = resolve_variables(&p, &given(&[("REPO", evil)])).unwrap_err();
        assert!(err.to_string().contains("control characters"), "{err}");
        // …and even rendered directly it stays one string in one job.
        let yaml = render(&p, &given(&[("REPO", evil)])).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let jobs = doc["jobs"].as_mapping().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(doc["jobs"]["sync"]["shell"], Value::String(format!("echo {evil}")));
        assert!(doc["jobs"]["sync"].get("schedule").is_none());
    }

    #[test]
    fn files_are_inlined_and_values_stay_strings() {
        let p = pack(
            "jobs:\n  check:\n    shell: { command: [sh, -c, \"{{file:check.sh}}\"] }\n    timeout: \"{{vars.T}}\"\n    priority: \"{{ vars.P }}\"\n    http_like: \"{{payload.id}} {{run.id}}\"\n    n: \"{{vars.N}}\"\n",
            "variables:\n  - name: T\n    default: 30s\n  - name: P\n    default: high\n  - name: N\n    default: 30\n",
            &[("check.sh", "echo \"ok: $1\"\nexit 0\n")],
        );
        let values = resolve_variables(&p, &BTreeMap::new()).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&render(&p, &values).unwrap()).unwrap();
        let job = &doc["jobs"]["check"];
        assert_eq!(
            job["shell"]["command"][2],
            Value::String("echo \"ok: $1\"\nexit 0\n".into())
        );
        assert_eq!(job["timeout"], Value::String("30s".into()));
        assert_eq!(job["priority"], Value::String("high".into()));
        assert_eq!(job["http_like"], Value::String("{{payload.id}} {{run.id}}".into()));
        assert_eq!(job["n"], Value::String("30".into()));
    }

    #[test]
    fn missing_unknown_and_undeclared_are_errors() {
        let p = pack(
            "jobs:\n  j:\n    shell: \"echo {{vars.A}} {{vars.B}} {{vars.C}} {{file:nope.sh}}\"\n",
            "variables:\n  - name: A\n  - name: B\n  - name: S\n    secret: true\n    default: ${TOKEN}\n",
            &[],
        );
        let err = resolve_variables(&p, &BTreeMap::new()).unwrap_err();
        assert_eq!(err, InstallError::Missing(vec!["A".into(), "B".into()]));
        assert!(err.to_string().contains("missing variables: A, B"));
        let err = resolve_variables(&p, &given(&[("A", "1"), ("B", "2"), ("Z", "3")])).unwrap_err();
        assert!(err.to_string().contains("unknown variable(s) Z"), "{err}");
        let err = resolve_variables(&p, &given(&[("A", "1"), ("B", "2"), ("S", "literal")])).unwrap_err();
        assert!(err.to_string().contains("S is a secret"), "{err}");
        let values = resolve_variables(&p, &given(&[("A", "1"), ("B", "2")])).unwrap();
        assert_eq!(values["S"], "${TOKEN}");
        let err = render(&p, &values).unwrap_err().to_string();
        assert!(err.contains("{{vars.C}} names a variable"), "{err}");
        assert!(err.contains("{{file:nope.sh}} names a file"), "{err}");
    }

    #[test]
    fn job_yaml_must_hold_jobs() {
        let p = pack("- not a mapping\n", "", &[]);
        let err = render(&p, &BTreeMap::new()).unwrap_err().to_string();
        assert!(err.contains("expected a `jobs:` mapping"), "{err}");
    }
}
