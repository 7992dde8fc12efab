//! `SnapshotStore`: a consistent snapshot of the controller's own store,
//! streamed in chunks to the caller (the `backup` builtin, on an agent that
//! may run on another host; `docs/backup.md`). Admin role only (the role
//! matrix): the snapshot holds every token hash and alert channel secret.
//!
//! * SQLite: `VACUUM INTO` a temporary file next to the store (same file
//!   system, same permissions), read from a reader connection so writers go
//!   on meanwhile; the file is streamed, then deleted (also when the caller
//!   goes away mid-stream, or on an error).
//! * PostgreSQL: `pg_dump --format=custom` of the store's database, run by
//!   the controller, its standard output streamed as it comes (the dump is
//!   one repeatable-read transaction); a password in `--db` goes to
//!   `pg_dump` through `PGPASSWORD`, not its command line. A dump that fails
//!   ends the stream with an error (its message redacted of the URL's
//!   password), so the caller never takes a partial dump for a whole one.
//!   `pg_dump` missing on the controller's host is `FailedPrecondition`.
//!
//! Like the other streams, it counts against its token's stream limit while
//! open.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::str::FromStr as _;

use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use worker_proto::v1 as pb;

use crate::store::{Store, redact_url};

/// The stream of `SnapshotStore`.
pub type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

/// Bytes per chunk (well under gRPC's default 4 MiB message limit).
pub const CHUNK: usize = 256 * 1024;

/// Chunks queued ahead of a slow reader.
const QUEUE: usize = 4;

/// The format of a SQLite snapshot.
const FORMAT_SQLITE: &str = "sqlite";
/// The format of a PostgreSQL snapshot.
const FORMAT_PG_DUMP: &str = "pg_dump-custom";

/// Serves one `SnapshotStore` call for the store `store` opened from `db_url`.
pub async fn snapshot_store(
    store: &Store,
    db_url: &str,
    request: Request<pb::SnapshotStoreRequest>,
) -> Result<Response<SnapshotStream>, Status> {
    let principal = crate::auth::Principal::of(&request);
    let guard = principal.open_stream()?;
    let (tx, rx) = mpsc::channel(QUEUE);
    if db_url.starts_with("sqlite") {
        let path = sqlite_path(db_url)?;
        let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("worker.db");
        let temp = TempFile(path.with_file_name(format!(".{file_name}.snapshot-{}", ulid::Ulid::new())));
        if !store.vacuum_into(&temp.0).await? {
            return Err(Status::internal("the store is not SQLite"));
        }
        tracing::info!(snapshot = %temp.0.display(), "store snapshot taken for SnapshotStore");
        tokio::spawn(async move {
            let _guard = guard;
            stream_file(temp, tx).await;
        });
    } else {
        let (child, password) = spawn_pg_dump(db_url)?;
        let shown = redact_url(db_url);
        tokio::spawn(async move {
            let _guard = guard;
            stream_pg_dump(child, &shown, password, tx).await;
        });
    }
    Ok(Response::new(Box::pin(ReceiverStream::new(rx)) as SnapshotStream))
}

/// The database file of a `sqlite://` URL.
fn sqlite_path(db_url: &str) -> Result<PathBuf, Status> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(db_url)
        .map_err(|e| Status::internal(format!("the store's URL: {e}")))?;
    let path = options.get_filename().to_path_buf();
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return Err(Status::failed_precondition(
            "an in-memory SQLite store has no file to snapshot",
        ));
    }
    Ok(path)
}

/// A file deleted when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(file = %self.0.display(), error = %e, "cannot delete the store snapshot");
        }
    }
}

async fn stream_file(temp: TempFile, tx: mpsc::Sender<Result<pb::SnapshotChunk, Status>>) {
    let mut file = match tokio::fs::File::open(&temp.0).await {
        Ok(file) => file,
        Err(e) => {
            let _ = tx
                .send(Err(Status::internal(format!("reading the snapshot: {e}"))))
                .await;
            return;
        }
    };
    loop {
        let mut data = vec![0u8; CHUNK];
        let n = match read_full(&mut file, &mut data).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tx
                    .send(Err(Status::internal(format!("reading the snapshot: {e}"))))
                    .await;
                return;
            }
        };
        if n == 0 {
            return;
        }
        data.truncate(n);
        let chunk = pb::SnapshotChunk {
            format: FORMAT_SQLITE.to_string(),
            data,
        };
        if tx.send(Ok(chunk)).await.is_err() {
            return; // The caller went away; the guard deletes the file.
        }
    }
}

/// Reads until `buf` is full or the input ends.
async fn read_full(input: &mut (impl tokio::io::AsyncRead + Unpin), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = input.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Starts `pg_dump --format=custom` of `db_url` to its standard output;
/// returns it and the URL's password (to redact).
fn spawn_pg_dump(db_url: &str) -> Result<(tokio::process::Child, Option<String>), Status> {
    let mut parsed = reqwest::Url::parse(db_url).map_err(|e| Status::internal(format!("the store's URL: {e}")))?;
    let password = parsed.password().map(percent_decode);
    if password.is_some() {
        let _ = parsed.set_password(None);
    }
    let mut command = tokio::process::Command::new("pg_dump");
    command
        .arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--dbname={parsed}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(password) = &password {
        command.env("PGPASSWORD", password);
    }
    let child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Status::failed_precondition(
                "pg_dump is not installed on the controller's host: install the PostgreSQL client tools \
                 (the same major version as the server, or newer) to snapshot a PostgreSQL store",
            )
        } else {
            Status::internal(format!("cannot run pg_dump: {e}"))
        }
    })?;
    Ok((child, password))
}

/// Percent-decodes the password part of a URL.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn stream_pg_dump(
    mut child: tokio::process::Child,
    shown_url: &str,
    password: Option<String>,
    tx: mpsc::Sender<Result<pb::SnapshotChunk, Status>>,
) {
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // At most 64 KiB of stderr kept, read alongside so pg_dump never blocks on it.
    let errors = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut text).await;
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        String::from_utf8_lossy(&text).into_owned()
    });
    loop {
        let mut data = vec![0u8; CHUNK];
        let n = match read_full(&mut stdout, &mut data).await {
            Ok(n) => n,
            Err(e) => {
                let _ = tx
                    .send(Err(Status::internal(format!("reading pg_dump's output: {e}"))))
                    .await;
                return;
            }
        };
        if n == 0 {
            break;
        }
        data.truncate(n);
        let chunk = pb::SnapshotChunk {
            format: FORMAT_PG_DUMP.to_string(),
            data,
        };
        if tx.send(Ok(chunk)).await.is_err() {
            return; // The caller went away: dropping `child` kills pg_dump.
        }
    }
    let status = child.wait().await;
    let stderr = errors.await.unwrap_or_default();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            let mut stderr = stderr.trim().to_string();
            if let Some(password) = password.as_deref().filter(|p| !p.is_empty()) {
                stderr = stderr.replace(password, "***");
            }
            let _ = tx
                .send(Err(Status::internal(format!(
                    "pg_dump of {shown_url} failed ({status}): {stderr}"
                ))))
                .await;
        }
        Err(e) => {
            let _ = tx
                .send(Err(Status::internal(format!("waiting for pg_dump: {e}"))))
                .await;
        }
    }
}
