//! Where backups are kept: a directory, or a bucket (and prefix) of an
//! S3-compatible store.
//!
//! A directory gets each object written under a hidden temporary name
//! (`.NAME.tmp-ULID`), synced, then renamed: a reader never sees a
//! half-written backup under its final name. An S3 `PUT` (or multipart
//! upload) is atomic by itself.
//!
//! S3 goes through Apache Arrow's `object_store` with path-style requests
//! (`http://endpoint/bucket/key`, what MinIO, Ceph, moto and most
//! self-hosted stores expect), plain `http://` allowed when the endpoint says
//! so, credentials from the standard AWS variables of the process
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
//! `AWS_SESSION_TOKEN`; region from the job, else `AWS_REGION`, else
//! `AWS_DEFAULT_REGION`, else `us-east-1`). HTTPS uses the TLS configuration
//! of the agent's `http` executor (rustls with ring; the system's roots plus
//! `--http-ca`), handed to reqwest by [`TlsConnector`]: no second crypto
//! provider is linked.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::client::{HttpClient, HttpConnector};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore as _, ObjectStoreExt as _};
use tokio::io::AsyncWriteExt as _;

/// What went wrong with a destination.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The backup or object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Anything else, with a message for the operator.
    #[error("{0}")]
    Failed(String),
}

impl BackupError {
    fn failed(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        BackupError::Failed(format!("{what}: {e}"))
    }
}

/// An S3-compatible location.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Location {
    /// Endpoint URL (`http://127.0.0.1:9000`); `None`: AWS itself.
    pub endpoint: Option<String>,
    /// The bucket.
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (empty: the bucket's root).
    pub prefix: String,
    /// Region; `None`: from the environment (see the module's docs).
    pub region: Option<String>,
}

impl S3Location {
    /// Parses `s3://BUCKET/PREFIX` (what `workerctl backup --from` takes).
    pub fn parse_url(url: &str) -> Option<S3Location> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        Some(S3Location {
            endpoint: None,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            region: None,
        })
    }
}

/// A directory or an S3 location holding backups.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A local directory (created when missing).
    Dir(PathBuf),
    /// A bucket and prefix.
    S3 {
        /// The client.
        store: Arc<AmazonS3>,
        /// Where, as configured.
        location: S3Location,
    },
}

/// Hands `object_store` a reqwest client on the agent's TLS configuration.
#[derive(Debug)]
pub struct TlsConnector {
    tls: rustls::ClientConfig,
}

impl HttpConnector for TlsConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(self.tls.clone())
            .user_agent(concat!("worker-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(client))
    }
}

/// Reads an AWS variable (empty counts as unset).
fn aws_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Destination {
    /// The S3 location `location`, with credentials from the environment and
    /// `tls` for HTTPS endpoints.
    ///
    /// # Errors
    ///
    /// [`BackupError::Failed`] when a credential variable is missing or the
    /// endpoint is not a URL.
    pub fn s3(location: &S3Location, tls: rustls::ClientConfig) -> Result<Destination, BackupError> {
        let key = aws_env("AWS_ACCESS_KEY_ID");
        let secret = aws_env("AWS_SECRET_ACCESS_KEY");
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(BackupError::Failed(
                "S3 credentials missing: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN \
                 for temporary credentials) in the environment"
                    .into(),
            ));
        };
        let region = location
            .region
            .clone()
            .or_else(|| aws_env("AWS_REGION"))
            .or_else(|| aws_env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&location.bucket)
            .with_region(region)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_virtual_hosted_style_request(false)
            .with_http_connector(TlsConnector { tls });
        if let Some(token) = aws_env("AWS_SESSION_TOKEN") {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &location.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(BackupError::Failed(format!(
                    "S3 endpoint `{endpoint}` must start with http:// or https://"
                )));
            }
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder
            .build()
            .map_err(|e| BackupError::failed(format!("S3 bucket {}", location.bucket), e))?;
        Ok(Destination::S3 {
            store: Arc::new(store),
            location: location.clone(),
        })
    }

    /// `dir /var/backups` or `s3://bucket/prefix`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Destination::Dir(dir) => format!("dir {}", dir.display()),
            Destination::S3 { location, .. } if location.prefix.is_empty() => format!("s3://{}", location.bucket),
            Destination::S3 { location, .. } => format!("s3://{}/{}", location.bucket, location.prefix),
        }
    }

    /// Where object `name` is, for messages.
    pub fn describe_object(&self, name: &str) -> String {
        match self {
            Destination::Dir(dir) => dir.join(name).display().to_string(),
            Destination::S3 { .. } => format!("{}/{name}", self.describe()),
        }
    }

    fn key(location: &S3Location, name: &str) -> ObjectPath {
        if location.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", location.prefix))
        }
    }

    /// Stores the file at `file` as object `name`.
    pub async fn put_file(&self, name: &str, file: &Path) -> Result<(), BackupError> {
        match self {
            Destination::Dir(dir) => {
                let (dir, name, file) = (dir.clone(), name.to_string(), file.to_path_buf());
                blocking(move || put_in_dir(&dir, &name, |tmp| std::fs::copy(&file, tmp).map(drop))).await
            }
            Destination::S3 { store, location } => {
                let key = Self::key(location, name);
                let what = || format!("uploading {}", self.describe_object(name));
                let mut input = tokio::fs::File::open(file)
                    .await
                    .map_err(|e| BackupError::failed(what(), e))?;
                let store: Arc<dyn object_store::ObjectStore> = store.clone();
                let mut writer = object_store::buffered::BufWriter::new(store, key);
                if let Err(e) = tokio::io::copy(&mut input, &mut writer).await {
                    let _ = writer.abort().await;
                    return Err(BackupError::failed(what(), e));
                }
                writer.shutdown().await.map_err(|e| BackupError::failed(what(), e))
            }
        }
    }

    /// Stores `bytes` as object `name`.
    pub async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), BackupError> {
        match self {
            Destination::Dir(dir) => {
                let (dir, name) = (dir.clone(), name.to_string());
                blocking(move || put_in_dir(&dir, &name, |tmp| std::fs::write(tmp, &bytes))).await
            }
            Destination::S3 { store, location } => store
                .put(&Self::key(location, name), bytes.into())
                .await
                .map(drop)
                .map_err(|e| BackupError::failed(format!("uploading {}", self.describe_object(name)), e)),
        }
    }

    /// The names of the objects directly in the directory or under the
    /// prefix (all of them; callers filter with
    /// [`super::naming::parse_name`]).
    pub async fn list(&self) -> Result<Vec<String>, BackupError> {
        match self {
            Destination::Dir(dir) => {
                let dir = dir.clone();
                blocking(move || {
                    let mut names = Vec::new();
                    let entries = std::fs::read_dir(&dir).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            BackupError::NotFound(format!("directory {} does not exist", dir.display()))
                        } else {
                            BackupError::failed(format!("listing {}", dir.display()), e)
                        }
                    })?;
                    for entry in entries {
                        let entry = entry.map_err(|e| BackupError::failed(format!("listing {}", dir.display()), e))?;
                        if entry.file_type().is_ok_and(|t| t.is_file())
                            && let Some(name) = entry.file_name().to_str()
                        {
                            names.push(name.to_string());
                        }
                    }
                    names.sort();
                    Ok(names)
                })
                .await
            }
            Destination::S3 { store, location } => {
                let prefix = (!location.prefix.is_empty()).then(|| ObjectPath::from(location.prefix.as_str()));
                let listed = store
                    .list_with_delimiter(prefix.as_ref())
                    .await
                    .map_err(|e| BackupError::failed(format!("listing {}", self.describe()), e))?;
                let mut names: Vec<String> = listed
                    .objects
                    .iter()
                    .filter_map(|o| o.location.filename().map(str::to_string))
                    .collect();
                names.sort();
                Ok(names)
            }
        }
    }

    /// The bytes of object `name`, refusing more than `limit`.
    pub async fn get_bytes(&self, name: &str, limit: u64) -> Result<Vec<u8>, BackupError> {
        let what = || format!("reading {}", self.describe_object(name));
        match self {
            Destination::Dir(dir) => {
                let path = dir.join(name);
                let meta = tokio::fs::metadata(&path).await.map_err(|e| not_found_or(e, what()))?;
                if meta.len() > limit {
                    return Err(BackupError::Failed(format!("{}: larger than {limit} bytes", what())));
                }
                tokio::fs::read(&path).await.map_err(|e| BackupError::failed(what(), e))
            }
            Destination::S3 { store, location } => {
                let got = store
                    .get(&Self::key(location, name))
                    .await
                    .map_err(|e| s3_error(e, what()))?;
                if got.meta.size > limit {
                    return Err(BackupError::Failed(format!("{}: larger than {limit} bytes", what())));
                }
                got.bytes()
                    .await
                    .map(|b| b.to_vec())
                    .map_err(|e| BackupError::failed(what(), e))
            }
        }
    }

    /// Copies object `name` into the new local file `out`.
    pub async fn get_to_file(&self, name: &str, out: &Path) -> Result<(), BackupError> {
        let what = || format!("downloading {}", self.describe_object(name));
        match self {
            Destination::Dir(dir) => {
                let path = dir.join(name);
                tokio::fs::metadata(&path).await.map_err(|e| not_found_or(e, what()))?;
                tokio::fs::copy(&path, out)
                    .await
                    .map(drop)
                    .map_err(|e| BackupError::failed(what(), e))
            }
            Destination::S3 { store, location } => {
                let got = store
                    .get(&Self::key(location, name))
                    .await
                    .map_err(|e| s3_error(e, what()))?;
                let mut file = tokio::fs::File::create(out)
                    .await
                    .map_err(|e| BackupError::failed(what(), e))?;
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| BackupError::failed(what(), e))?;
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| BackupError::failed(what(), e))?;
                }
                file.sync_all().await.map_err(|e| BackupError::failed(what(), e))
            }
        }
    }

    /// Deletes object `name`.
    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        let what = || format!("deleting {}", self.describe_object(name));
        match self {
            Destination::Dir(dir) => tokio::fs::remove_file(dir.join(name))
                .await
                .map_err(|e| BackupError::failed(what(), e)),
            Destination::S3 { store, location } => store
                .delete(&Self::key(location, name))
                .await
                .map_err(|e| BackupError::failed(what(), e)),
        }
    }
}

fn not_found_or(e: std::io::Error, what: String) -> BackupError {
    if e.kind() == std::io::ErrorKind::NotFound {
        BackupError::NotFound(format!("{what}: no such file"))
    } else {
        BackupError::failed(what, e)
    }
}

fn s3_error(e: object_store::Error, what: String) -> BackupError {
    if matches!(e, object_store::Error::NotFound { .. }) {
        BackupError::NotFound(format!("{what}: no such object"))
    } else {
        BackupError::failed(what, e)
    }
}

/// Writes `dir/name` through `write(tmp)` on a hidden temporary name, syncs
/// it, then renames it into place; the temporary file is removed on failure.
fn put_in_dir(dir: &Path, name: &str, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), BackupError> {
    std::fs::create_dir_all(dir).map_err(|e| BackupError::failed(format!("creating {}", dir.display()), e))?;
    let tmp = dir.join(format!(".{name}.tmp-{}", ulid::Ulid::new()));
    let target = dir.join(name);
    let result = write(&tmp)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &target))
        .and_then(|()| std::fs::File::open(dir)?.sync_all());
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(BackupError::failed(format!("writing {}", target.display()), e));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackupError> + Send + 'static,
) -> Result<T, BackupError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(BackupError::Failed(format!("file task failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_parse() {
        assert_eq!(
            S3Location::parse_url("s3://b/some/prefix/"),
            Some(S3Location {
                bucket: "b".into(),
                prefix: "some/prefix".into(),
                ..Default::default()
            })
        );
        assert_eq!(S3Location::parse_url("s3://b").unwrap().prefix, "");
        assert_eq!(S3Location::parse_url("s3:///x"), None);
        assert_eq!(S3Location::parse_url("/tmp/x"), None);
    }

    #[tokio::test]
    async fn a_directory_gets_whole_files_only() {
        let dir = std::env::temp_dir().join(format!("worker-dest-test-{}", ulid::Ulid::new()));
        let dest = Destination::Dir(dir.clone());
        dest.put_bytes("a.json", b"{}".to_vec()).await.unwrap();
        assert_eq!(dest.list().await.unwrap(), vec!["a.json".to_string()]);
        assert_eq!(dest.get_bytes("a.json", 10).await.unwrap(), b"{}");
        assert!(matches!(dest.get_bytes("a.json", 1).await, Err(BackupError::Failed(_))));
        assert!(matches!(
            dest.get_bytes("b.json", 10).await,
            Err(BackupError::NotFound(_))
        ));
        dest.delete("a.json").await.unwrap();
        assert!(dest.list().await.unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
