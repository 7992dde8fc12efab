//! The `backup` builtin: a consistent snapshot, compressed, checksummed and
//! kept in a directory and/or an S3-compatible bucket, with old backups
//! deleted (`docs/backup.md`).
//!
//! Layout:
//!
//! * this module: the arguments ([`BackupArgs`], as the controller's checker
//!   flattened them) and [`run`], which puts the steps together;
//! * [`source`]: the snapshot — the controller's store over the API, or
//!   `pg_dump` of a PostgreSQL database;
//! * [`pack`]: gzip and SHA-256;
//! * [`dest`]: a directory or an S3 location ([`dest::Destination`]);
//! * [`retention`]: which old backups go;
//! * [`naming`]: backup ids, object names and the [`naming::Manifest`].
//!
//! `workerctl backup list|restore` reads what this writes through the same
//! [`naming`], [`pack`] and [`dest`] (public for that reason), so the format
//! has one definition.
//!
//! The steps: snapshot into a private temporary directory, compress it
//! there, then for each destination the data object and then its manifest
//! (so a listing never shows a backup whose data is incomplete), then
//! retention on each destination. A failure before anything is stored is
//! retryable (a network blip); a bad argument or a refused token is
//! permanent. When the backup is stored but retention fails, the attempt
//! fails permanently (a retry would only make another backup) and says so.

pub mod dest;
pub mod naming;
pub mod pack;
pub mod retention;
pub mod source;

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{SubsecRound as _, Utc};
use worker_proto::v1::BuiltinSpec;

use self::dest::{Destination, S3Location};
use self::naming::{DATA_SUFFIX, MANIFEST_SUFFIX, Manifest};
use super::super::{Context, Report, StopSignal};

/// `keep_days` when the job does not say.
pub const DEFAULT_KEEP_DAYS: u32 = 30;

/// Largest `keep_days` (ten years).
pub const MAX_KEEP_DAYS: u32 = 3650;

/// What to back up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The controller's own store.
    Store,
    /// A PostgreSQL database; the URL as the job wrote it (a `${VAR}`).
    Postgres {
        /// `${VAR}`, resolved on the agent.
        database_url: String,
    },
}

/// The arguments of one `backup` job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupArgs {
    /// What to back up.
    pub source: Source,
    /// A directory to keep backups in.
    pub dir: Option<PathBuf>,
    /// An S3 location to keep backups in.
    pub s3: Option<S3Location>,
    /// Backups older than this many days are deleted.
    pub keep_days: u32,
}

impl BackupArgs {
    /// Reads the flat argument map (`s3.bucket` for nested fields). The
    /// controller checked them already; this refuses what an older or
    /// newer controller might send that this agent cannot do.
    pub fn parse(args: &HashMap<String, String>) -> Result<BackupArgs, String> {
        const KNOWN: &[&str] = &[
            "source",
            "database_url",
            "dir",
            "s3.endpoint",
            "s3.bucket",
            "s3.prefix",
            "s3.region",
            "keep_days",
        ];
        if let Some(unknown) = args.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(format!("backup argument `{unknown}` is not known to this agent"));
        }
        let source = match args.get("source").map(String::as_str).unwrap_or("store") {
            "store" => Source::Store,
            "postgres" => Source::Postgres {
                database_url: args
                    .get("database_url")
                    .cloned()
                    .ok_or("backup argument `database_url` is required with source postgres")?,
            },
            other => {
                return Err(format!(
                    "backup argument `source`: unknown source `{other}` (store, postgres)"
                ));
            }
        };
        let s3 = match args.get("s3.bucket") {
            Some(bucket) => Some(S3Location {
                endpoint: args.get("s3.endpoint").cloned(),
                bucket: bucket.clone(),
                prefix: args
                    .get("s3.prefix")
                    .map(|p| p.trim_matches('/').to_string())
                    .unwrap_or_default(),
                region: args.get("s3.region").cloned(),
            }),
            None if args.keys().any(|k| k.starts_with("s3.")) => {
                return Err("backup argument `s3.bucket` is required with s3".into());
            }
            None => None,
        };
        let dir = args.get("dir").map(PathBuf::from);
        if dir.is_none() && s3.is_none() {
            return Err("backup needs a destination: `dir`, `s3` or both".into());
        }
        let keep_days = match args.get("keep_days") {
            Some(text) => match text.parse::<u32>() {
                Ok(days) if (1..=MAX_KEEP_DAYS).contains(&days) => days,
                _ => {
                    return Err(format!(
                        "backup argument `keep_days`: {text} is not a number of days from 1 to {MAX_KEEP_DAYS}"
                    ));
                }
            },
            None => DEFAULT_KEEP_DAYS,
        };
        Ok(BackupArgs {
            source,
            dir,
            s3,
            keep_days,
        })
    }
}

/// Runs the `backup` builtin.
pub async fn run(spec: &BuiltinSpec, ctx: &Context, mut stop: StopSignal) -> Report {
    let args = match BackupArgs::parse(&spec.args) {
        Ok(args) => args,
        Err(error) => return Report::failed(error, true),
    };
    tokio::select! {
        result = backup(&args, ctx) => match result {
            Ok(output) => Report::succeeded(output),
            Err(failure) => {
                let mut report = Report::failed(failure.message, failure.permanent);
                report.output = failure.output;
                report
            }
        },
        stop = stop.wait() => Report::stopped(stop, String::new()),
    }
}

/// Why a backup failed, and what it had done by then.
struct Failure {
    message: String,
    permanent: bool,
    output: String,
}

impl Failure {
    fn transient(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            permanent: false,
            output: String::new(),
        }
    }
}

/// Removes the attempt's temporary directory when dropped (also when the
/// attempt is cancelled mid-way).
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn backup(args: &BackupArgs, ctx: &Context) -> Result<String, Failure> {
    // Destinations first: a missing credential fails before any snapshot.
    let mut destinations = Vec::new();
    if let Some(dir) = &args.dir {
        destinations.push(Destination::Dir(dir.clone()));
    }
    if let Some(s3) = &args.s3 {
        let dest = Destination::s3(s3, ctx.http.tls().clone()).map_err(|e| Failure {
            message: e.to_string(),
            permanent: true,
            output: String::new(),
        })?;
        destinations.push(dest);
    }

    let created = Utc::now().trunc_subsecs(0);
    let id = naming::backup_id(created, &ctx.run_id);
    let work = WorkDir(std::env::temp_dir().join(format!(".worker-backup-{}", ulid::Ulid::new())));
    tokio::fs::create_dir_all(&work.0)
        .await
        .map_err(|e| Failure::transient(format!("creating {}: {e}", work.0.display())))?;
    let raw = work.0.join("snapshot");
    let (source_kind, format) = match &args.source {
        Source::Store => ("store", source::store_snapshot(ctx.controller.as_ref(), &raw).await),
        Source::Postgres { database_url } => (
            "postgres",
            source::postgres_dump(database_url, ctx.http.allow_env(), &raw).await,
        ),
    };
    let format = format.map_err(|e| Failure {
        message: e.message,
        permanent: e.permanent,
        output: String::new(),
    })?;

    let data_name = format!("{id}{DATA_SUFFIX}");
    let packed_path = work.0.join(&data_name);
    let packed = {
        let (raw, packed_path) = (raw.clone(), packed_path.clone());
        tokio::task::spawn_blocking(move || {
            let packed = pack::compress(&raw, &packed_path);
            let _ = std::fs::remove_file(&raw);
            packed
        })
        .await
        .map_err(|e| Failure::transient(format!("compression task failed: {e}")))?
        .map_err(|e| Failure::transient(format!("compressing the snapshot: {e}")))?
    };
    let manifest = Manifest {
        id: id.clone(),
        created_at: created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        source: source_kind.to_string(),
        format,
        object: data_name.clone(),
        size: packed.size,
        sha256: packed.sha256.clone(),
        job: ctx.job.clone(),
        run_id: ctx.run_id.clone(),
        worker_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest always serializes");

    let mut lines = vec![format!(
        "backup {id} ({}, {} bytes, sha256 {})",
        manifest.format, packed.size, packed.sha256
    )];
    for dest in &destinations {
        dest.put_file(&data_name, &packed_path)
            .await
            .and(
                dest.put_bytes(&format!("{id}{MANIFEST_SUFFIX}"), manifest_bytes.clone())
                    .await,
            )
            .map_err(|e| Failure {
                message: e.to_string(),
                permanent: false,
                output: lines.join("\n"),
            })?;
        lines.push(format!("stored {}", dest.describe_object(&data_name)));
    }
    drop(work);

    for dest in &destinations {
        match retention::prune(dest, created, args.keep_days).await {
            Ok(deleted) if deleted.is_empty() => lines.push(format!(
                "retention ({}, keep_days {}): nothing older",
                dest.describe(),
                args.keep_days
            )),
            Ok(deleted) => lines.push(format!(
                "retention ({}, keep_days {}): deleted {}",
                dest.describe(),
                args.keep_days,
                deleted.join(", ")
            )),
            Err(e) => {
                return Err(Failure {
                    message: format!(
                        "backup {id} is stored, but retention failed on {}: {e}",
                        dest.describe()
                    ),
                    permanent: true,
                    output: lines.join("\n"),
                });
            }
        }
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn arguments_parse_and_refuse() {
        let parsed = BackupArgs::parse(&args(&[("dir", "/b"), ("s3.bucket", "x"), ("s3.prefix", "/p/")])).unwrap();
        assert_eq!(parsed.source, Source::Store);
        assert_eq!(parsed.keep_days, DEFAULT_KEEP_DAYS);
        assert_eq!(parsed.s3.unwrap().prefix, "p");
        for (bad, says) in [
            (args(&[]), "destination"),
            (args(&[("dir", "/b"), ("keep_days", "0")]), "keep_days"),
            (args(&[("dir", "/b"), ("source", "postgres")]), "database_url"),
            (args(&[("dir", "/b"), ("colour", "red")]), "colour"),
            (args(&[("s3.prefix", "p")]), "s3.bucket"),
        ] {
            let err = BackupArgs::parse(&bad).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
