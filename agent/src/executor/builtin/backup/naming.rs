//! Names of backups and their manifests.
//!
//! A backup's id carries its creation time (UTC, to the second) and the start
//! of the run id that made it: `worker-backup-20261130T080000Z-01jd7x3k9qabcdef`.
//! Two objects stand for it, side by side in a directory or under an S3
//! prefix: `ID.gz` (the compressed snapshot) and `ID.json` (its
//! [`Manifest`]). The manifest is written last, so a listing shows only
//! backups whose data is complete.
//!
//! [`parse_name`] is the one test of "is this ours": retention and listings
//! consider nothing whose name it refuses, whatever else shares the bucket or
//! directory.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// What every backup id starts with.
pub const ID_PREFIX: &str = "worker-backup-";

/// Extension of the compressed snapshot.
pub const DATA_SUFFIX: &str = ".gz";

/// Extension of the manifest.
pub const MANIFEST_SUFFIX: &str = ".json";

/// Characters of the run id kept in a backup id.
const RUN_ID_CHARS: usize = 16;

/// The timestamp format inside an id (`20261130T080000Z`).
const STAMP: &str = "%Y%m%dT%H%M%SZ";

/// The id of a backup created at `created` by run `run_id`.
pub fn backup_id(created: DateTime<Utc>, run_id: &str) -> String {
    let run: String = run_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(RUN_ID_CHARS)
        .collect::<String>()
        .to_ascii_lowercase();
    let run = if run.is_empty() { "run".to_string() } else { run };
    format!("{ID_PREFIX}{}-{run}", created.format(STAMP))
}

/// Which of a backup's two objects a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `ID.gz`: the compressed snapshot.
    Data,
    /// `ID.json`: the manifest.
    Manifest,
}

/// A name that [`parse_name`] recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    /// The backup id (the name without its extension).
    pub id: String,
    /// When the backup was created (from the name).
    pub created: DateTime<Utc>,
    /// Which object it is.
    pub kind: ObjectKind,
}

/// Parses an object or file name (no directory part) as one of a backup's
/// objects; `None` for anything else.
pub fn parse_name(name: &str) -> Option<BackupName> {
    let (id, kind) = if let Some(id) = name.strip_suffix(DATA_SUFFIX) {
        (id, ObjectKind::Data)
    } else if let Some(id) = name.strip_suffix(MANIFEST_SUFFIX) {
        (id, ObjectKind::Manifest)
    } else {
        return None;
    };
    let created = parse_id(id)?;
    Some(BackupName {
        id: id.to_string(),
        created,
        kind,
    })
}

/// The creation time of a backup id; `None` when `id` is not one.
pub fn parse_id(id: &str) -> Option<DateTime<Utc>> {
    let rest = id.strip_prefix(ID_PREFIX)?;
    let (stamp, run) = rest.split_once('-')?;
    if stamp.len() != 16
        || run.is_empty()
        || run.len() > RUN_ID_CHARS
        || !run.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return None;
    }
    NaiveDateTime::parse_from_str(stamp, STAMP).ok().map(|t| t.and_utc())
}

/// The sidecar of a backup: what it holds and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The backup id.
    pub id: String,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// `store` (the controller's own store) or `postgres` (a database the job named).
    pub source: String,
    /// What the decompressed snapshot is: `sqlite` (a database file) or
    /// `pg_dump-custom` (`pg_dump --format=custom`).
    pub format: String,
    /// The name of the data object (`ID.gz`).
    pub object: String,
    /// Bytes of the data object as stored (compressed).
    pub size: u64,
    /// SHA-256 of the data object as stored (compressed), lower-case hex.
    pub sha256: String,
    /// The job that made it.
    pub job: String,
    /// The run that made it.
    pub run_id: String,
    /// Version of the agent that made it.
    pub worker_version: String,
}

/// The manifest's format name of a SQLite database file.
pub const FORMAT_SQLITE: &str = "sqlite";

/// The manifest's format name of a `pg_dump --format=custom` archive.
pub const FORMAT_PG_DUMP: &str = "pg_dump-custom";

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn ids_round_trip_and_strangers_are_refused() {
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap();
        let id = backup_id(at, "01JD7X3K9QABCDEFGHJKMNPQRS");
        assert_eq!(id, "worker-backup-20261130T080000Z-01jd7x3k9qabcdef");
        let data = parse_name(&format!("{id}.gz")).unwrap();
        assert_eq!(
            (data.created, data.kind, data.id.as_str()),
            (at, ObjectKind::Data, id.as_str())
        );
        assert_eq!(parse_name(&format!("{id}.json")).unwrap().kind, ObjectKind::Manifest);
        for other in [
            "notes.txt",
            "worker-backup-20261130T080000Z-abc.gz.tmp",
            ".worker-backup-20261130T080000Z-abc.gz.tmp",
            "worker-backup-20261130T080000Z-.gz",
            "worker-backup-2026113T080000Z-abc.gz",
            "worker-backup-20261330T080000Z-abc.gz",
            "worker-backup-20261130T080000Z-ABC.gz",
            "my-worker-backup-20261130T080000Z-abc.gz",
            "worker-backup-20261130T080000Z-abc.sql",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }
}
