//! `workerctl backup list|restore`: the backups the `backup` builtin made,
//! read straight from their directory or S3 location (the controller is not
//! called: a restore is what one does when the controller is gone).
//!
//! The format (names, manifest, gzip, SHA-256) and the S3 client are the
//! agent's own (`worker_agent::executor::builtin::backup`), so writer and
//! reader cannot drift apart. A restore downloads the backup into a private
//! temporary file, checks its size and SHA-256 against the manifest, and
//! only then writes anything where `--to` says (exit code 5 on a mismatch,
//! with nothing written). A SQLite backup becomes a new file (written under
//! a temporary name and then linked or renamed into place; an existing file
//! is refused without `--force`); a PostgreSQL one is loaded with
//! `pg_restore` into a database that must have no tables without `--force`
//! (with it: `pg_restore --clean --if-exists`).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;
use worker_agent::executor::builtin::backup::dest::{BackupError, Destination, S3Location};
use worker_agent::executor::builtin::backup::naming::{
    self, DATA_SUFFIX, FORMAT_PG_DUMP, FORMAT_SQLITE, MANIFEST_SUFFIX, Manifest, ObjectKind,
};
use worker_agent::executor::builtin::backup::{pack, source::split_password};
use worker_agent::executor::http::HttpSettings;

use crate::cli::{BackupCmd, BackupS3Args};
use crate::error::{CliError, DATA, NOT_FOUND};
use crate::output::{Format, Table, emit};

/// Largest manifest read (a real one is a few hundred bytes).
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

/// Runs `workerctl backup ...`.
pub async fn run(cmd: BackupCmd, format: Format) -> anyhow::Result<()> {
    match cmd {
        BackupCmd::List { from, s3 } => list(&from, &s3, format).await,
        BackupCmd::Restore {
            id,
            from,
            to,
            force,
            s3,
        } => restore(&id, &from, &to, force, &s3, format).await,
    }
}

/// The destination `--from` names.
fn destination(from: &str, s3: &BackupS3Args) -> Result<Destination, CliError> {
    if from.starts_with("s3://") {
        let mut location = S3Location::parse_url(from)
            .ok_or_else(|| CliError::usage(format!("--from {from}: expected s3://BUCKET/PREFIX")))?;
        location.endpoint = s3.s3_endpoint.clone();
        location.region = s3.s3_region.clone();
        Destination::s3(&location, HttpSettings::default().tls().clone()).map_err(|e| CliError::usage(e.to_string()))
    } else {
        if s3.s3_endpoint.is_some() || s3.s3_region.is_some() {
            return Err(CliError::usage(format!(
                "--s3-endpoint and --s3-region are for an s3:// --from, not the directory {from}"
            )));
        }
        Ok(Destination::Dir(PathBuf::from(from)))
    }
}

fn backup_error(e: BackupError) -> CliError {
    match e {
        BackupError::NotFound(message) => CliError {
            code: NOT_FOUND,
            message,
        },
        BackupError::Failed(message) => CliError::failed(message),
    }
}

/// One backup as `list` shows it.
#[derive(Debug, Serialize)]
struct Listed {
    #[serde(flatten)]
    manifest: Manifest,
    /// Where its data object is.
    location: String,
}

async fn list(from: &str, s3: &BackupS3Args, format: Format) -> anyhow::Result<()> {
    let dest = destination(from, s3)?;
    let names = dest.list().await.map_err(backup_error)?;
    let mut listed = Vec::new();
    for name in &names {
        let Some(parsed) = naming::parse_name(name) else {
            continue;
        };
        if parsed.kind != ObjectKind::Manifest {
            continue;
        }
        let data = format!("{}{DATA_SUFFIX}", parsed.id);
        if !names.contains(&data) {
            continue;
        }
        let manifest = match read_manifest(&dest, &parsed.id).await {
            Ok(manifest) => manifest,
            Err(e) => {
                eprintln!("warning: {e}; left out");
                continue;
            }
        };
        listed.push(Listed {
            location: dest.describe_object(&data),
            manifest,
        });
    }
    listed.sort_by(|a, b| b.manifest.created_at.cmp(&a.manifest.created_at));
    emit(format, &listed, || {
        if listed.is_empty() {
            return format!("no backups in {}", dest.describe());
        }
        let mut table = Table::new(["ID", "CREATED", "SOURCE", "FORMAT", "SIZE", "SHA256", "JOB"]);
        for l in &listed {
            let m = &l.manifest;
            table.row([
                m.id.clone(),
                m.created_at.clone(),
                m.source.clone(),
                m.format.clone(),
                m.size.to_string(),
                m.sha256.chars().take(12).collect(),
                m.job.clone(),
            ]);
        }
        table.render()
    })
}

/// The manifest of backup `id`, checked to be about it.
async fn read_manifest(dest: &Destination, id: &str) -> Result<Manifest, CliError> {
    let name = format!("{id}{MANIFEST_SUFFIX}");
    let bytes = dest.get_bytes(&name, MAX_MANIFEST_BYTES).await.map_err(|e| match e {
        BackupError::NotFound(_) => CliError {
            code: NOT_FOUND,
            message: format!("backup {id} not found in {} (no {name})", dest.describe()),
        },
        other => backup_error(other),
    })?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| CliError::failed(format!("{}: not a backup manifest: {e}", dest.describe_object(&name))))?;
    if manifest.id != id || manifest.object != format!("{id}{DATA_SUFFIX}") {
        return Err(CliError::failed(format!(
            "{}: the manifest is about {} ({}), not {id}",
            dest.describe_object(&name),
            manifest.id,
            manifest.object
        )));
    }
    Ok(manifest)
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where a restore goes.
enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

/// What `restore` reports.
#[derive(Debug, Serialize)]
struct Restored {
    id: String,
    format: String,
    to: String,
    /// Bytes of the snapshot as restored (decompressed).
    bytes: u64,
}

async fn restore(id: &str, from: &str, to: &str, force: bool, s3: &BackupS3Args, format: Format) -> anyhow::Result<()> {
    if naming::parse_id(id).is_none() {
        return Err(CliError::usage(format!(
            "`{id}` is not a backup id (worker-backup-YYYYMMDDTHHMMSSZ-RUN; `workerctl backup list` shows them)"
        ))
        .into());
    }
    let target = if to.starts_with("postgres://") || to.starts_with("postgresql://") {
        Target::Postgres(to.to_string())
    } else {
        Target::Sqlite(PathBuf::from(to))
    };
    let dest = destination(from, s3)?;
    let manifest = read_manifest(&dest, id).await?;
    match (&target, manifest.format.as_str()) {
        (Target::Sqlite(path), FORMAT_SQLITE) => {
            if !force && std::fs::symlink_metadata(path).is_ok() {
                return Err(CliError::usage(format!(
                    "{} exists: restore into a new file, or pass --force to replace it (never over a running store)",
                    path.display()
                ))
                .into());
            }
        }
        (Target::Postgres(_), FORMAT_PG_DUMP) => {}
        (Target::Sqlite(_), FORMAT_PG_DUMP) => {
            return Err(CliError::usage(format!(
                "backup {id} is a PostgreSQL dump: restore it into a database (--to postgres://...)"
            ))
            .into());
        }
        (Target::Postgres(_), FORMAT_SQLITE) => {
            return Err(CliError::usage(format!(
                "backup {id} is a SQLite database: restore it into a file (--to PATH)"
            ))
            .into());
        }
        (_, other) => {
            return Err(CliError::failed(format!(
                "backup {id} has a format this workerctl does not know: {other}"
            ))
            .into());
        }
    }

    // Download into a private file and check it before anything is written.
    let download = TempFile(std::env::temp_dir().join(format!(".workerctl-restore-{}.gz", ulid_like())));
    dest.get_to_file(&manifest.object, &download.0)
        .await
        .map_err(backup_error)?;
    let packed = {
        let path = download.0.clone();
        tokio::task::spawn_blocking(move || pack::checksum(&path))
            .await?
            .map_err(|e| CliError::failed(format!("reading the download: {e}")))?
    };
    if packed.sha256 != manifest.sha256 || packed.size != manifest.size {
        return Err(CliError {
            code: DATA,
            message: format!(
                "backup {id}: checksum mismatch: the manifest says {} bytes with sha256 {}, the object {} has {} bytes \
                 with sha256 {}; nothing was restored",
                manifest.size,
                manifest.sha256,
                dest.describe_object(&manifest.object),
                packed.size,
                packed.sha256
            ),
        }
        .into());
    }

    let bytes = match &target {
        Target::Sqlite(path) => restore_sqlite(&download.0, path, force).await?,
        Target::Postgres(url) => restore_postgres(&download.0, url, force).await?,
    };
    let restored = Restored {
        id: id.to_string(),
        format: manifest.format.clone(),
        to: match &target {
            Target::Sqlite(path) => path.display().to_string(),
            Target::Postgres(url) => redact(url),
        },
        bytes,
    };
    emit(format, &restored, || {
        format!(
            "restored backup {} ({}, {} bytes, sha256 verified) into {}",
            restored.id, restored.format, restored.bytes, restored.to
        )
    })
}

/// A unique-enough suffix for temporary names (process id and time).
fn ulid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// The URL with its password hidden.
fn redact(url: &str) -> String {
    match split_password(url) {
        Some((without, Some(_))) => without.replacen('@', ":***@", 1),
        Some((without, None)) => without,
        None => url.to_string(),
    }
}

/// Decompresses `download` into the new SQLite file `path` (temporary name,
/// then into place); returns its size.
async fn restore_sqlite(download: &Path, path: &Path, force: bool) -> Result<u64, CliError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(CliError::usage(format!("{}: no such directory", dir.display())));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("worker.db");
    let temp = TempFile(dir.join(format!(".{name}.restore-{}", ulid_like())));
    let (download, temp_path, target) = (download.to_path_buf(), temp.0.clone(), path.to_path_buf());
    tokio::task::spawn_blocking(move || -> Result<u64, CliError> {
        let bytes = pack::decompress(&download, &temp_path)
            .map_err(|e| CliError::failed(format!("decompressing the backup: {e}")))?;
        let mut head = [0u8; 16];
        let is_sqlite = std::fs::File::open(&temp_path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok()
            && &head == b"SQLite format 3\0";
        if !is_sqlite {
            return Err(CliError::failed(
                "the backup does not hold a SQLite database; nothing was restored",
            ));
        }
        if force {
            // A stale write-ahead log of the replaced file would be applied to the restored one.
            for suffix in ["-wal", "-shm"] {
                let mut side = target.clone().into_os_string();
                side.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(side));
            }
            std::fs::rename(&temp_path, &target)
        } else {
            // A link never replaces a file that appeared meanwhile.
            std::fs::hard_link(&temp_path, &target)
        }
        .map_err(|e| CliError::failed(format!("writing {}: {e}", target.display())))?;
        if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(bytes)
    })
    .await
    .map_err(|e| CliError::failed(format!("restore task failed: {e}")))?
}

/// Runs a PostgreSQL client tool with `url`'s password in `PGPASSWORD`.
async fn pg_tool(program: &str, args: &[String], url: &str) -> Result<String, CliError> {
    let (without, password) =
        split_password(url).ok_or_else(|| CliError::usage(format!("--to {}: not a PostgreSQL URL", redact(url))))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .arg(format!("--dbname={without}"))
        .arg("--no-password")
        .stdin(Stdio::null());
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CliError::failed(format!(
                "{program} is not installed: install the PostgreSQL client tools to restore into PostgreSQL"
            ))
        } else {
            CliError::failed(format!("running {program}: {e}"))
        }
    })?;
    if !output.status.success() {
        return Err(CliError::failed(format!(
            "{program} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Loads the dump in `download` into the database `url`; returns the dump's size.
async fn restore_postgres(download: &Path, url: &str, force: bool) -> Result<u64, CliError> {
    let tables = pg_tool(
        "psql",
        &[
            "--tuples-only".into(),
            "--no-align".into(),
            "--command=SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')".into(),
        ],
        url,
    )
    .await?;
    let tables: u64 = tables.trim().parse().unwrap_or(0);
    if tables > 0 && !force {
        return Err(CliError::usage(format!(
            "{} has {tables} tables: restore into an empty database, or pass --force to replace what the dump holds \
             (pg_restore --clean; never over a running store)",
            redact(url)
        )));
    }
    let dump = TempFile(std::env::temp_dir().join(format!(".workerctl-restore-{}.dump", ulid_like())));
    let bytes = {
        let (download, dump) = (download.to_path_buf(), dump.0.clone());
        tokio::task::spawn_blocking(move || pack::decompress(&download, &dump))
            .await
            .map_err(|e| CliError::failed(format!("restore task failed: {e}")))?
            .map_err(|e| CliError::failed(format!("decompressing the backup: {e}")))?
    };
    let mut args = vec!["--no-owner".to_string(), "--exit-on-error".to_string()];
    if force {
        args.push("--clean".into());
        args.push("--if-exists".into());
    }
    args.push(dump.0.display().to_string());
    pg_tool("pg_restore", &args, url).await?;
    Ok(bytes)
}
