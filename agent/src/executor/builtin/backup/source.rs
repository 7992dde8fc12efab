//! Where the snapshot comes from.
//!
//! * `store`: the controller's own store, streamed by the controller
//!   (`ControllerService.SnapshotStore`, admin role only) into a local file.
//!   The agent may run on another host: nothing but the API is shared. The
//!   call is made with the token of `WORKER_BACKUP_TOKEN` when that variable
//!   is set in the agent's environment, else with the agent's own `--token`
//!   (which, when authentication is on, has the `agent` role and is refused:
//!   an operator gives the backup agent an admin token that way, without
//!   letting every job of that agent act as admin through its connection).
//! * `postgres`: the agent runs `pg_dump --format=custom` itself against
//!   the job's `database_url`, a `${VAR}` resolved from the agent's
//!   environment under its `--allow-env` list (as in `http` headers). A
//!   password in the URL goes to `pg_dump` through `PGPASSWORD`, not its
//!   command line, and is redacted from any error shown.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;
use tonic::metadata::AsciiMetadataValue;
use worker_proto::v1::SnapshotStoreRequest;
use worker_proto::v1::controller_service_client::ControllerServiceClient;

use super::naming::FORMAT_PG_DUMP;
use crate::ControllerLink;
use crate::executor::http::secrets::{self, Redactor};

/// The environment variable whose token the `store` source uses.
pub const BACKUP_TOKEN_ENV: &str = "WORKER_BACKUP_TOKEN";

/// A failure of the source; `permanent` when retrying cannot help.
#[derive(Debug)]
pub struct SourceError {
    /// For the run's error.
    pub message: String,
    /// Retrying cannot help (a configuration problem).
    pub permanent: bool,
}

impl SourceError {
    fn permanent(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            permanent: true,
        }
    }

    fn transient(message: impl Into<String>) -> Self {
        SourceError {
            message: message.into(),
            permanent: false,
        }
    }
}

/// Streams the controller's store snapshot into the new file `out`; returns
/// its format (`sqlite` or `pg_dump-custom`).
pub async fn store_snapshot(link: Option<&ControllerLink>, out: &Path) -> Result<String, SourceError> {
    let Some(link) = link else {
        return Err(SourceError::permanent(
            "this agent has no controller connection to take a store snapshot from",
        ));
    };
    let channel = link
        .endpoint()
        .connect()
        .await
        .map_err(|e| SourceError::transient(format!("cannot reach the controller for a snapshot: {e}")))?;
    let mut client = ControllerServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    let mut request = tonic::Request::new(SnapshotStoreRequest {});
    match std::env::var(BACKUP_TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
        Some(token) => {
            let value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| SourceError::permanent(format!("{BACKUP_TOKEN_ENV}: not valid in a gRPC header")))?;
            request.metadata_mut().insert("authorization", value);
        }
        None => {
            if let Some(auth) = link.authorization() {
                request.metadata_mut().insert("authorization", auth.clone());
            }
        }
    }
    let status_error = |status: tonic::Status| {
        let permanent = matches!(
            status.code(),
            tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::Unimplemented
                | tonic::Code::FailedPrecondition
        );
        let mut message = format!("store snapshot refused by the controller: {}", status.message());
        if status.code() == tonic::Code::PermissionDenied {
            message.push_str(&format!(
                " (the snapshot needs an admin token: set {BACKUP_TOKEN_ENV} in the agent's environment)"
            ));
        }
        SourceError { message, permanent }
    };
    let mut stream = client.snapshot_store(request).await.map_err(status_error)?.into_inner();
    let mut file = tokio::fs::File::create(out)
        .await
        .map_err(|e| SourceError::transient(format!("creating {}: {e}", out.display())))?;
    let mut format = String::new();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        if format.is_empty() {
            format = chunk.format;
        }
        file.write_all(&chunk.data)
            .await
            .map_err(|e| SourceError::transient(format!("writing {}: {e}", out.display())))?;
    }
    file.sync_all()
        .await
        .map_err(|e| SourceError::transient(format!("writing {}: {e}", out.display())))?;
    if format.is_empty() {
        return Err(SourceError::transient("the controller's snapshot stream was empty"));
    }
    Ok(format)
}

/// Runs `pg_dump --format=custom` of the database `database_url` (a
/// `${VAR}` reference, resolved under `allowed`) into `out`.
pub async fn postgres_dump(
    database_url: &str,
    allowed: &[crate::config::EnvPattern],
    out: &Path,
) -> Result<String, SourceError> {
    let mut values = Vec::new();
    let url = secrets::interpolate(database_url, allowed, &secrets::process_env, &mut values)
        .map_err(|e| SourceError::permanent(format!("database_url: {e}")))?;
    let redactor = Redactor::new(values);
    run_pg_dump(&url, out).await.map_err(|e| SourceError {
        message: redactor.redact(&e.message),
        permanent: e.permanent,
    })?;
    Ok(FORMAT_PG_DUMP.to_string())
}

/// `pg_dump --format=custom --file=OUT` of `url` (its password passed in
/// `PGPASSWORD`). Shared with `workerctl`'s restore in spirit; the controller
/// has its own copy for its store.
async fn run_pg_dump(url: &str, out: &Path) -> Result<(), SourceError> {
    let (url, password) = split_password(url)
        .ok_or_else(|| SourceError::permanent("database_url: not a postgres:// or postgresql:// URL"))?;
    let mut command = tokio::process::Command::new("pg_dump");
    command
        .arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--file={}", out.display()))
        .arg(format!("--dbname={url}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            SourceError::permanent("pg_dump is not installed on this agent (install the PostgreSQL client tools)")
        } else {
            SourceError::transient(format!("running pg_dump: {e}"))
        }
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(SourceError::transient(format!(
            "pg_dump failed ({}): {}",
            output.status,
            stderr.trim()
        )));
    }
    Ok(())
}

/// `url` without its password, and the password (percent-decoded); `None`
/// when `url` is not a PostgreSQL URL.
pub fn split_password(url: &str) -> Option<(String, Option<String>)> {
    let mut parsed = reqwest::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return None;
    }
    let password = parsed
        .password()
        .map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
    if password.is_some() {
        parsed.set_password(None).ok()?;
    }
    Some((parsed.to_string(), password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_url() {
        assert_eq!(
            split_password("postgres://u:p%40ss@db:5432/app?sslmode=require"),
            Some((
                "postgres://u@db:5432/app?sslmode=require".to_string(),
                Some("p@ss".to_string())
            ))
        );
        assert_eq!(
            split_password("postgresql://u@db/app"),
            Some(("postgresql://u@db/app".to_string(), None))
        );
        assert_eq!(split_password("mysql://u@db/app"), None);
        assert_eq!(split_password("not a url"), None);
    }

    #[tokio::test]
    async fn a_url_variable_must_be_allowed() {
        let out = std::env::temp_dir().join("never-written");
        let err = postgres_dump("${WORKER_TEST_NOT_ALLOWED}", &[], &out)
            .await
            .unwrap_err();
        assert!(err.permanent);
        assert!(err.message.contains("--allow-env"), "{}", err.message);
    }
}
