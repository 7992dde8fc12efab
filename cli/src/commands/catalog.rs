//! `workerctl catalog`: list, search, show, install, rate, review, publish and
//! checksum job packs (docs/catalog.md).
//!
//! `publish` and `checksum` read a pack directory here: `publish` compares
//! every file with the manifest's SHA-256 before anything is sent (the
//! controller verifies again), `checksum` rewrites the manifest's `files:`
//! block from the directory and leaves the rest of `pack.yaml` as written.
//! `install` asks on a terminal for each variable not given with `--set`
//! (the default in brackets, Enter takes it); without a terminal it takes
//! the defaults and fails listing every variable still without a value.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use worker_proto::v1 as pb;

use crate::cli::CatalogCmd;
use crate::client::{CatalogClient, connect_catalog};
use crate::error::CliError;
use crate::output::{Format, Table, emit};

/// Most files read from a pack directory (the controller's limit).
const MAX_FILES: usize = 32;
/// Largest pack read from a directory, in bytes (the controller's limit).
const MAX_PACK_BYTES: u64 = 1024 * 1024;

/// Runs one `catalog` command.
pub async fn run(
    cmd: CatalogCmd,
    controller: &str,
    token: Option<&str>,
    tls: &crate::tls::TlsArgs,
    format: Format,
) -> anyhow::Result<()> {
    if let CatalogCmd::Checksum { dir } = &cmd {
        return checksum(dir, format);
    }
    let mut client = connect_catalog(controller, token, tls)?;
    match cmd {
        CatalogCmd::List { source } => {
            let answer = client
                .list_packs(pb::ListPacksRequest {
                    source: source.unwrap_or_default(),
                    local_only: false,
                })
                .await?
                .into_inner();
            print_list(answer, format)
        }
        CatalogCmd::Search { text, source } => {
            let answer = client
                .search_packs(pb::SearchPacksRequest {
                    text,
                    source: source.unwrap_or_default(),
                    local_only: false,
                })
                .await?
                .into_inner();
            print_list(answer, format)
        }
        CatalogCmd::Show { pack, source } => {
            let detail = show(&mut client, &pack, source.as_deref()).await?;
            let shown = PackShown::from(detail);
            emit(format, &shown, || show_text(&shown))
        }
        CatalogCmd::Install { pack, source, set } => install(&mut client, &pack, source, &set, format).await,
        CatalogCmd::Rate { name, rating, source } => {
            if !(1..=5).contains(&rating) {
                return Err(CliError::usage(format!("rating: {rating} is not between 1 and 5")).into());
            }
            let summary = client
                .rate_pack(pb::RatePackRequest {
                    name,
                    rating,
                    source: source.unwrap_or_default(),
                    via: String::new(),
                })
                .await?
                .into_inner();
            print_summary(summary, format)
        }
        CatalogCmd::Review { name, text, source } => {
            let summary = client
                .review_pack(pb::ReviewPackRequest {
                    name,
                    text,
                    source: source.unwrap_or_default(),
                    via: String::new(),
                })
                .await?
                .into_inner();
            print_summary(summary, format)
        }
        CatalogCmd::Publish { dir } => {
            let files = read_pack_dir(&dir)?;
            verify(&files)?;
            let answer = client
                .publish_pack(pb::PublishPackRequest {
                    files: files
                        .into_iter()
                        .map(|(path, content)| pb::PackFile {
                            path,
                            content,
                            sha256: String::new(),
                        })
                        .collect(),
                })
                .await?
                .into_inner();
            let shown = Published {
                name: answer.name,
                version: answer.version,
                created: answer.created,
            };
            emit(format, &shown, || {
                format!(
                    "{} {}@{}\n",
                    if shown.created {
                        "published"
                    } else {
                        "unchanged (published already)"
                    },
                    shown.name,
                    shown.version
                )
            })
        }
        CatalogCmd::Checksum { .. } => unreachable!("handled above"),
    }
}

/// `NAME@VERSION` into its parts (no `@`: the newest version).
pub fn split_pack(spec: &str) -> (String, String) {
    match spec.split_once('@') {
        Some((name, version)) => (name.to_string(), version.to_string()),
        None => (spec.to_string(), String::new()),
    }
}

async fn show(client: &mut CatalogClient, spec: &str, source: Option<&str>) -> anyhow::Result<pb::PackDetail> {
    let (name, version) = split_pack(spec);
    Ok(client
        .show_pack(pb::ShowPackRequest {
            name,
            version,
            source: source.unwrap_or_default().to_string(),
            local_only: false,
        })
        .await?
        .into_inner())
}

/// One pack in `list` and `search` (docs/cli-json.md, "Catalog pack").
#[derive(Debug, Serialize)]
pub struct PackRow {
    name: String,
    version: String,
    description: String,
    author: String,
    executors: Vec<String>,
    source: String,
    versions: Vec<String>,
    rating_average: Option<f64>,
    rating_count: u32,
    published_at: Option<String>,
    publisher: Option<String>,
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<pb::PackSummary> for PackRow {
    fn from(p: pb::PackSummary) -> Self {
        PackRow {
            name: p.name,
            version: p.version,
            description: p.description,
            author: p.author,
            executors: p.executors,
            source: p.source,
            versions: p.versions,
            rating_average: (p.rating_count > 0).then_some(p.rating_average),
            rating_count: p.rating_count,
            published_at: non_empty(p.published_at),
            publisher: non_empty(p.publisher),
        }
    }
}

fn rating_text(average: Option<f64>, count: u32) -> String {
    match average {
        Some(a) => format!("{a:.1} ({count})"),
        None => "-".to_string(),
    }
}

fn print_list(answer: pb::ListPacksResponse, format: Format) -> anyhow::Result<()> {
    for warning in &answer.warnings {
        eprintln!("warning: {warning}");
    }
    let rows: Vec<PackRow> = answer.packs.into_iter().map(PackRow::from).collect();
    emit(format, &rows, || {
        if rows.is_empty() {
            return "no packs\n".to_string();
        }
        let mut table = Table::new(["NAME", "VERSION", "SOURCE", "RATING", "DESCRIPTION"]);
        for r in &rows {
            table.row([
                r.name.clone(),
                r.version.clone(),
                r.source.clone(),
                rating_text(r.rating_average, r.rating_count),
                r.description.lines().next().unwrap_or_default().to_string(),
            ]);
        }
        table.render()
    })
}

/// A variable in `show` (docs/cli-json.md).
#[derive(Debug, Serialize)]
struct VariableShown {
    name: String,
    description: String,
    default: Option<String>,
    secret: bool,
}

/// A file in `show`: its text (or `null` with `binary: true`).
#[derive(Debug, Serialize)]
struct FileShown {
    path: String,
    sha256: Option<String>,
    content: Option<String>,
    bytes: usize,
}

/// A review in `show`.
#[derive(Debug, Serialize)]
struct ReviewShown {
    token: String,
    via: Option<String>,
    rating: Option<u32>,
    text: Option<String>,
    updated_at: String,
}

/// `catalog show` (docs/cli-json.md, "Catalog pack detail").
#[derive(Debug, Serialize)]
struct PackShown {
    #[serde(flatten)]
    pack: PackRow,
    variables: Vec<VariableShown>,
    files: Vec<FileShown>,
    reviews: Vec<ReviewShown>,
    checksum_errors: Vec<String>,
}

impl From<pb::PackDetail> for PackShown {
    fn from(d: pb::PackDetail) -> Self {
        PackShown {
            pack: PackRow::from(d.summary.unwrap_or_default()),
            variables: d
                .variables
                .into_iter()
                .map(|v| VariableShown {
                    name: v.name,
                    description: v.description,
                    default: v.has_default.then_some(v.default_value),
                    secret: v.secret,
                })
                .collect(),
            files: d
                .files
                .into_iter()
                .map(|f| FileShown {
                    path: f.path,
                    sha256: non_empty(f.sha256),
                    bytes: f.content.len(),
                    content: String::from_utf8(f.content).ok(),
                })
                .collect(),
            reviews: d
                .reviews
                .into_iter()
                .map(|r| ReviewShown {
                    token: r.token,
                    via: non_empty(r.via),
                    rating: (r.rating > 0).then_some(r.rating),
                    text: non_empty(r.text),
                    updated_at: r.updated_at,
                })
                .collect(),
            checksum_errors: d.checksum_errors,
        }
    }
}

fn show_text(s: &PackShown) -> String {
    let p = &s.pack;
    let mut out = format!(
        "{}@{} from {}\n{}\nauthor: {}\nexecutors: {}\nversions: {}\nrating: {}\n",
        p.name,
        p.version,
        p.source,
        p.description.trim_end(),
        if p.author.is_empty() { "-" } else { &p.author },
        p.executors.join(", "),
        p.versions.join(", "),
        rating_text(p.rating_average, p.rating_count)
    );
    if let Some(at) = &p.published_at {
        out.push_str(&format!(
            "published: {at} by {}\n",
            p.publisher.as_deref().unwrap_or("-")
        ));
    }
    if !s.variables.is_empty() {
        out.push_str("variables:\n");
        for v in &s.variables {
            let default = v
                .default
                .as_deref()
                .map(|d| format!(" [default: {d}]"))
                .unwrap_or_default();
            let secret = if v.secret { " (secret: a ${VAR} reference)" } else { "" };
            out.push_str(&format!("  {}{default}{secret}: {}\n", v.name, v.description));
        }
    }
    for e in &s.checksum_errors {
        out.push_str(&format!("CHECKSUM MISMATCH {e}\n"));
    }
    if !s.reviews.is_empty() {
        out.push_str("reviews:\n");
        for r in &s.reviews {
            let who = match &r.via {
                Some(via) => format!("{} via {via}", r.token),
                None => r.token.clone(),
            };
            let stars = r.rating.map(|n| format!(" {n}/5")).unwrap_or_default();
            out.push_str(&format!(
                "  {who}{stars} ({}): {}\n",
                r.updated_at,
                r.text.as_deref().unwrap_or("")
            ));
        }
    }
    for f in &s.files {
        let sha = f.sha256.as_deref().map(|s| format!(" sha256 {s}")).unwrap_or_default();
        out.push_str(&format!("\n--- {} ({} bytes{sha}) ---\n", f.path, f.bytes));
        match &f.content {
            Some(text) => {
                out.push_str(text);
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str("(binary)\n"),
        }
    }
    out
}

/// `install`'s answer (docs/cli-json.md, "Catalog install").
#[derive(Debug, Serialize)]
struct Installed {
    name: String,
    version: String,
    source: String,
    created: Vec<String>,
    updated: Vec<String>,
    unchanged: Vec<String>,
}

async fn install(
    client: &mut CatalogClient,
    spec: &str,
    source: Option<String>,
    set: &[String],
    format: Format,
) -> anyhow::Result<()> {
    let mut given = BTreeMap::new();
    for pair in set {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--set {pair}: expected VAR=VALUE")))?;
        given.insert(name.trim().to_string(), value.to_string());
    }
    let detail = show(client, spec, source.as_deref()).await?;
    let summary = detail.summary.clone().unwrap_or_default();
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let mut missing = Vec::new();
    for v in &detail.variables {
        if given.contains_key(&v.name) {
            continue;
        }
        if interactive && let Some(value) = prompt(v)? {
            given.insert(v.name.clone(), value);
            continue;
        }
        if !v.has_default {
            missing.push(v.name.clone());
        }
    }
    if !missing.is_empty() {
        return Err(CliError::usage(format!(
            "missing variables: {} (give them with --set NAME=VALUE)",
            missing.join(", ")
        ))
        .into());
    }
    // The source is pinned to the one shown, so what was previewed is installed.
    let answer = client
        .install_pack(pb::InstallPackRequest {
            name: summary.name.clone(),
            version: summary.version.clone(),
            source: summary.source.clone(),
            variables: given.into_iter().collect(),
        })
        .await?
        .into_inner();
    let shown = Installed {
        name: answer.name,
        version: answer.version,
        source: answer.source,
        created: answer.created,
        updated: answer.updated,
        unchanged: answer.unchanged,
    };
    emit(format, &shown, || {
        let mut out = format!("installed {}@{} from {}\n", shown.name, shown.version, shown.source);
        for (verb, names) in [
            ("created", &shown.created),
            ("updated", &shown.updated),
            ("unchanged", &shown.unchanged),
        ] {
            for n in names {
                out.push_str(&format!("{verb} {n}\n"));
            }
        }
        out
    })
}

/// Asks for one variable on the terminal; `None` keeps the default.
fn prompt(v: &pb::PackVariable) -> anyhow::Result<Option<String>> {
    let mut stderr = std::io::stderr().lock();
    let secret = if v.secret {
        " (secret: give a ${VAR} reference)"
    } else {
        ""
    };
    let default = if v.has_default {
        format!(" [{}]", v.default_value)
    } else {
        String::new()
    };
    loop {
        write!(stderr, "{}{secret}: {}{default}: ", v.name, v.description)?;
        stderr.flush()?;
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if !line.is_empty() {
            return Ok(Some(line.to_string()));
        }
        if v.has_default {
            return Ok(None);
        }
    }
}

/// `rate` and `review` (docs/cli-json.md, "Catalog rating").
#[derive(Debug, Serialize)]
struct Rating {
    name: String,
    average: Option<f64>,
    count: u32,
    source: String,
}

fn print_summary(s: pb::RatingSummary, format: Format) -> anyhow::Result<()> {
    let shown = Rating {
        average: (s.count > 0).then_some(s.average),
        name: s.name,
        count: s.count,
        source: s.source,
    };
    emit(format, &shown, || {
        format!(
            "{} ({}): rating {}\n",
            shown.name,
            shown.source,
            rating_text(shown.average, shown.count)
        )
    })
}

/// `publish`'s answer.
#[derive(Debug, Serialize)]
struct Published {
    name: String,
    version: String,
    created: bool,
}

/// The files of a pack directory by relative path, within the limits.
pub fn read_pack_dir(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, CliError> {
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((at, prefix)) = stack.pop() {
        let entries =
            std::fs::read_dir(&at).map_err(|e| CliError::usage(format!("cannot read {}: {e}", at.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| CliError::usage(format!("cannot read {}: {e}", at.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let kind = entry
                .file_type()
                .map_err(|e| CliError::usage(format!("{rel}: cannot read: {e}")))?;
            if kind.is_dir() {
                stack.push((entry.path(), rel));
            } else if kind.is_file() {
                if files.len() >= MAX_FILES {
                    return Err(CliError::usage(format!(
                        "{}: more than {MAX_FILES} files",
                        dir.display()
                    )));
                }
                total += entry.metadata().map(|m| m.len()).unwrap_or(0);
                if total > MAX_PACK_BYTES {
                    return Err(CliError::usage(format!(
                        "{}: more than {MAX_PACK_BYTES} bytes",
                        dir.display()
                    )));
                }
                let content =
                    std::fs::read(entry.path()).map_err(|e| CliError::usage(format!("{rel}: cannot read: {e}")))?;
                files.insert(rel, content);
            } else {
                return Err(CliError::usage(format!(
                    "{rel}: not a regular file (packs hold plain files only)"
                )));
            }
        }
    }
    if !files.contains_key("pack.yaml") {
        return Err(CliError::usage(format!("{}: no pack.yaml", dir.display())));
    }
    Ok(files)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compares every file with the manifest's `files:` digests; lists every
/// mismatch, missing and unlisted file.
pub fn verify(files: &BTreeMap<String, Vec<u8>>) -> Result<(), CliError> {
    let manifest = std::str::from_utf8(&files["pack.yaml"]).map_err(|_| CliError::usage("pack.yaml: not UTF-8"))?;
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(manifest).map_err(|e| CliError::usage(format!("pack.yaml: invalid YAML: {e}")))?;
    let listed = value
        .get("files")
        .and_then(|f| f.as_mapping())
        .ok_or_else(|| CliError::usage("pack.yaml: no `files:` mapping (workerctl catalog checksum DIR writes it)"))?;
    let mut problems = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (path, expected) in listed {
        let (Some(path), Some(expected)) = (path.as_str(), expected.as_str()) else {
            problems.push("pack.yaml: files: expected `PATH: SHA256` entries".to_string());
            continue;
        };
        names.insert(path.to_string());
        match files.get(path) {
            None => problems.push(format!("{path}: listed in pack.yaml but missing")),
            Some(content) => {
                let actual = sha256_hex(content);
                if actual != expected {
                    problems.push(format!("{path}: expected sha256 {expected}, found {actual}"));
                }
            }
        }
    }
    for path in files.keys() {
        if path != "pack.yaml" && !names.contains(path) {
            problems.push(format!("{path}: not listed in pack.yaml's files"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "checksum verification failed (nothing was sent):\n{}",
            problems.join("\n")
        )))
    }
}

/// `pack.yaml` with its `files:` block (a top-level key and its indented
/// lines) replaced by `files` at the end; every other line kept as written.
pub fn rewrite_files_block(manifest: &str, files: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in manifest.lines() {
        if skipping {
            if line.starts_with(' ') || line.starts_with('\t') || line.trim().is_empty() {
                continue;
            }
            skipping = false;
        }
        if line.starts_with("files:") {
            skipping = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out.push_str("files:\n");
    for (path, sha) in files {
        out.push_str(&format!("  {path}: {sha}\n"));
    }
    out
}

/// `catalog checksum`'s answer.
#[derive(Debug, Serialize)]
struct Checksums {
    dir: String,
    files: BTreeMap<String, String>,
}

fn checksum(dir: &Path, format: Format) -> anyhow::Result<()> {
    let files = read_pack_dir(dir)?;
    let digests: BTreeMap<String, String> = files
        .iter()
        .filter(|(path, _)| path.as_str() != "pack.yaml")
        .map(|(path, content)| (path.clone(), sha256_hex(content)))
        .collect();
    let manifest = std::str::from_utf8(&files["pack.yaml"]).map_err(|_| CliError::usage("pack.yaml: not UTF-8"))?;
    let rewritten = rewrite_files_block(manifest, &digests);
    std::fs::write(dir.join("pack.yaml"), rewritten)
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", dir.join("pack.yaml").display())))?;
    let shown = Checksums {
        dir: dir.display().to_string(),
        files: digests,
    };
    emit(format, &shown, || {
        let mut out = format!("wrote {}/pack.yaml\n", shown.dir);
        for (path, sha) in &shown.files {
            out.push_str(&format!("  {path}: {sha}\n"));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_specs_split() {
        assert_eq!(split_pack("a@1.2.3"), ("a".into(), "1.2.3".into()));
        assert_eq!(split_pack("a"), ("a".into(), String::new()));
    }

    #[test]
    fn checksum_rewrites_only_the_files_block_and_verify_agrees() {
        let dir = std::env::temp_dir().join(format!("workerctl-pack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("scripts")).unwrap();
        std::fs::write(
            dir.join("pack.yaml"),
            "# my pack\nname: p\nfiles:\n  old.sh: 00\n\nversion: 1.0.0 # keep\ndescription: d\n",
        )
        .unwrap();
        std::fs::write(dir.join("job.yaml"), "jobs: {}\n").unwrap();
        std::fs::write(dir.join("scripts/run.sh"), "echo\n").unwrap();
        checksum(&dir, Format::Json).unwrap();
        let text = std::fs::read_to_string(dir.join("pack.yaml")).unwrap();
        assert!(
            text.starts_with("# my pack\nname: p\nversion: 1.0.0 # keep\ndescription: d\nfiles:\n"),
            "{text}"
        );
        assert!(text.contains(&format!("  scripts/run.sh: {}\n", sha256_hex(b"echo\n"))));
        assert!(!text.contains("old.sh"));
        let mut files = read_pack_dir(&dir).unwrap();
        verify(&files).unwrap();
        files.insert("scripts/run.sh".into(), b"rm -rf /\n".to_vec());
        let err = verify(&files).unwrap_err().message;
        assert!(err.contains("scripts/run.sh: expected sha256"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
