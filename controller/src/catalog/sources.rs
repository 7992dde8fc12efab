//! Other controllers' catalogs: `DIR/catalogs.yaml` and the client that asks
//! them (docs/catalog.md, "Remote sources").
//!
//! ```yaml
//! catalogs:
//!   - name: hub
//!     url: https://hub.example.com:7070
//!     token: ${HUB_CATALOG_TOKEN}   # optional; resolved like alert channel secrets
//!     ca: /etc/worker/hub-ca.pem    # optional; else the Mozilla roots for https
//! ```
//!
//! The file is validated with the rest of the configuration directory, every
//! error with file, line and field. Requests to a remote ask for its *local*
//! packs only (`local_only`, or a non-empty `via` for ratings), so catalogs
//! that name each other never loop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use worker_proto::v1 as pb;
use worker_proto::v1::catalog_service_client::CatalogServiceClient;

use crate::config::jobs::Checker;
use crate::config::{ConfigError, ConfigErrors};
use crate::error::ErrorCode;

/// The file of remote sources in the configuration directory.
pub const FILE: &str = "catalogs.yaml";
/// Source names a remote may not take (the local sources).
pub const RESERVED: [&str; 2] = ["published", "directory"];
/// Time limit of one call to a remote catalog.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most remote sources.
pub const MAX_REMOTES: usize = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    catalogs: Vec<RawRemote>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    name: String,
    url: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    ca: Option<PathBuf>,
}

/// One remote source, validated (its CA file read, its token resolved).
#[derive(Clone)]
pub struct Remote {
    /// Its name in answers and `--source`.
    pub name: String,
    /// The controller's gRPC address.
    pub url: String,
    channel: Channel,
    auth: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &self.auth.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Loads `dir/catalogs.yaml` (none: no remotes). All or nothing.
pub fn load(dir: &Path) -> Result<Vec<Remote>, ConfigErrors> {
    let file = dir.join(FILE);
    match crate::config::read_bounded(&file) {
        Ok(None) => Ok(Vec::new()),
        Ok(Some(text)) => parse(&file, &text, &crate::config::env::lookup),
        Err(e) => Err(ConfigErrors(vec![e])),
    }
}

/// Validates `dir/catalogs.yaml` without keeping anything (the binary's
/// start-up check; [`load`] needs a runtime for its lazy channels).
pub fn check(dir: &Path) -> Result<(), ConfigErrors> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: dir.join(FILE),
                line: None,
                path: String::new(),
                message: format!("cannot check: {e}"),
            }])
        })?;
    let _guard = runtime.enter();
    load(dir).map(drop)
}

/// Parses and validates a `catalogs.yaml` text (`file` for messages).
pub fn parse(file: &Path, text: &str, env: crate::config::env::Lookup<'_>) -> Result<Vec<Remote>, ConfigErrors> {
    if let Err(e) = crate::config::check_document(file, text) {
        return Err(ConfigErrors(vec![e]));
    }
    let value: Value = match serde_yaml_ng::from_str(text) {
        Ok(Value::Null) => return Ok(Vec::new()),
        Ok(v) => v,
        Err(e) => {
            return Err(ConfigErrors(vec![ConfigError {
                file: file.into(),
                line: e.location().map(|l| l.line()),
                path: String::new(),
                message: format!("invalid YAML: {e}"),
            }]));
        }
    };
    let mut c = Checker::new(file, text, env);
    let Some(raw) = c.deserialize::<RawFile>(&[], value) else {
        return Err(ConfigErrors(c.errors));
    };
    if raw.catalogs.len() > MAX_REMOTES {
        c.error(
            &["catalogs"],
            format!("{} catalogs, more than {MAX_REMOTES}", raw.catalogs.len()),
        );
    }
    let mut remotes: Vec<Remote> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in raw.catalogs.into_iter().enumerate() {
        let index = format!("[{i}]");
        let at = |field: &'static str| ["catalogs".to_string(), index.clone(), field.to_string()];
        let name_ok = match super::pack::check_pack_name(&r.name) {
            Err(e) => {
                c.error(&as_refs(&at("name")), e.replace("pack name", "catalog name"));
                false
            }
            Ok(()) if RESERVED.contains(&r.name.as_str()) => {
                c.error(
                    &as_refs(&at("name")),
                    format!("\"{}\" names a local source; choose another name", r.name),
                );
                false
            }
            Ok(()) if !seen.insert(r.name.clone()) => {
                c.error(&as_refs(&at("name")), format!("catalog \"{}\" is named twice", r.name));
                false
            }
            Ok(()) => true,
        };
        let token = match &r.token {
            None => None,
            Some(t) => match crate::config::interpolate_str(t, env) {
                Ok(v) if v.trim().is_empty() => {
                    c.error(&as_refs(&at("token")), "is empty");
                    None
                }
                Ok(v) => match AsciiMetadataValue::try_from(format!("Bearer {}", v.trim())) {
                    Ok(h) => Some(h),
                    Err(_) => {
                        c.error(&as_refs(&at("token")), "holds characters not allowed in a header");
                        None
                    }
                },
                Err(e) => {
                    c.error(&as_refs(&at("token")), e);
                    None
                }
            },
        };
        let endpoint = match endpoint(&r.url, r.ca.as_deref()) {
            Ok(e) => Some(e),
            Err((field, e)) => {
                c.error(&as_refs(&at(field)), e);
                None
            }
        };
        if let (true, Some(endpoint)) = (name_ok, endpoint)
            && (r.token.is_none() || token.is_some())
        {
            remotes.push(Remote {
                name: r.name,
                url: r.url,
                channel: endpoint.connect_lazy(),
                auth: token,
            });
        }
    }
    if c.errors.is_empty() {
        Ok(remotes)
    } else {
        Err(ConfigErrors(c.errors))
    }
}

fn as_refs(path: &[String; 3]) -> [&str; 3] {
    [&path[0], &path[1], &path[2]]
}

/// The endpoint of `url` (http or https), with TLS for https: the `ca` file,
/// else the Mozilla roots. Errors name the field.
fn endpoint(url: &str, ca: Option<&Path>) -> Result<Endpoint, (&'static str, String)> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err((
            "url",
            format!("\"{}\": expected an http:// or https:// URL", crate::limits::echo(url)),
        ));
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| ("url", format!("\"{}\": {e}", crate::limits::echo(url))))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(CALL_TIMEOUT);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match ca {
            Some(path) => {
                let certs = worker_agent::tls::load_certs("ca", path).map_err(|e| ("ca", e.reason))?;
                tls = tls.ca_certificate(Certificate::from_pem(certs.pem));
            }
            None => tls = tls.with_webpki_roots(),
        }
        endpoint.tls_config(tls).map_err(|e| ("ca", e.to_string()))
    } else if ca.is_some() {
        Err(("ca", "a CA is for an https:// url".into()))
    } else {
        Ok(endpoint)
    }
}

impl Remote {
    fn client(&self) -> CatalogServiceClient<Channel> {
        CatalogServiceClient::new(self.channel.clone()).max_decoding_message_size(16 * 1024 * 1024)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(auth) = &self.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        request.set_timeout(CALL_TIMEOUT);
        request
    }

    /// What went wrong talking to it, as this controller answers it: the
    /// remote's own refusals keep their code (not found, invalid, permission
    /// denied), the rest is "unavailable" naming the source.
    fn error(&self, status: tonic::Status) -> tonic::Status {
        let message = format!("catalog \"{}\" ({}): {}", self.name, self.url, status.message());
        let code = match status.code() {
            code @ (tonic::Code::NotFound
            | tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated) => code,
            _ => ErrorCode::Unavailable.to_grpc(),
        };
        tonic::Status::new(code, message)
    }

    /// Its own packs (not its remotes').
    pub async fn list(&self) -> Result<pb::ListPacksResponse, tonic::Status> {
        self.client()
            .list_packs(self.request(pb::ListPacksRequest {
                source: String::new(),
                local_only: true,
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error(s))
    }

    /// One of its packs, with files.
    pub async fn show(&self, name: &str, version: &str) -> Result<pb::PackDetail, tonic::Status> {
        self.client()
            .show_pack(self.request(pb::ShowPackRequest {
                name: name.into(),
                version: version.into(),
                source: String::new(),
                local_only: true,
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error(s))
    }

    /// Forwards a rating (`via`: the caller's token name here).
    pub async fn rate(&self, name: &str, rating: u32, via: &str) -> Result<pb::RatingSummary, tonic::Status> {
        self.client()
            .rate_pack(self.request(pb::RatePackRequest {
                name: name.into(),
                rating,
                source: String::new(),
                via: via.into(),
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error(s))
    }

    /// Forwards a review (`via`: the caller's token name here).
    pub async fn review(&self, name: &str, text: &str, via: &str) -> Result<pb::RatingSummary, tonic::Status> {
        self.client()
            .review_pack(self.request(pb::ReviewPackRequest {
                name: name.into(),
                text: text.into(),
                source: String::new(),
                via: via.into(),
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.error(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Result<String, String> {
        match name {
            "HUB_TOKEN" => Ok("s3cret".into()),
            other => Err(format!("${{{other}}} may not be interpolated")),
        }
    }

    #[tokio::test]
    async fn a_good_file_loads() {
        let text = "catalogs:\n  - name: hub\n    url: http://127.0.0.1:7070\n    token: ${HUB_TOKEN}\n  - name: other\n    url: https://catalog.example.com\n";
        let remotes = parse(Path::new("catalogs.yaml"), text, &env).unwrap();
        assert_eq!(remotes.len(), 2);
        assert_eq!(remotes[0].name, "hub");
        assert!(format!("{:?}", remotes[0]).contains("***"));
        assert!(!format!("{:?}", remotes[0]).contains("s3cret"));
    }

    #[tokio::test]
    async fn errors_name_file_line_and_field() {
        let text = "catalogs:\n  - name: hub\n    url: ftp://x\n  - name: published\n    url: http://a\n    token: ${NOPE}\n  - name: hub2\n    url: http://b\n    colour: red\n";
        let err = parse(Path::new("catalogs.yaml"), text, &env).unwrap_err().to_string();
        assert!(
            err.contains("catalogs.yaml:9: catalogs[2].colour: unknown field `colour`"),
            "{err}"
        );
        let text = "catalogs:\n  - name: hub\n    url: ftp://x\n  - name: published\n    url: http://a\n    token: ${NOPE}\n  - name: hub\n    url: http://b\n    ca: /nonexistent.pem\n";
        let err = parse(Path::new("catalogs.yaml"), text, &env).unwrap_err().to_string();
        for expected in [
            "catalogs.yaml:3: catalogs[0].url: \"ftp://x\": expected an http:// or https:// URL",
            "catalogs.yaml:4: catalogs[1].name: \"published\" names a local source",
            "catalogs.yaml:6: catalogs[1].token: ${NOPE} may not be interpolated",
            "catalogs.yaml:7: catalogs[2].name: catalog \"hub\" is named twice",
            "catalogs.yaml:9: catalogs[2].ca: a CA is for an https:// url",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in\n{err}");
        }
    }
}
