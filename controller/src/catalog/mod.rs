//! The job catalog (docs/catalog.md): packs of job definitions that a
//! controller serves, and their installation.
//!
//! * [`pack`] — the pack format: `pack.yaml`, limits, SHA-256 verification;
//! * [`install`] — variables and `{{vars.NAME}}`/`{{file:PATH}}` substitution
//!   on the parsed `job.yaml`;
//! * [`sources`] — `catalogs.yaml` and the client of other controllers' catalogs;
//! * [`service`] — the `CatalogService` gRPC API.
//!
//! A controller serves three kinds of source, searched in this order when a
//! request names no source: `published` (packs published to it, in its
//! store), `directory` (`--config DIR`'s `catalog/`, read on every request,
//! one pack per sub-directory) and the remotes of `catalogs.yaml`, in file
//! order. Installing verifies every checksum here, whatever the source,
//! before anything is applied, and applies through the same path as
//! `workerctl apply` ([`crate::api::controller::ControllerApi`]'s
//! `ApplyJobs`): the jobs are stored like any API-defined job, all or none.

pub mod install;
pub mod pack;
pub mod service;
pub mod sources;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use worker_proto::v1 as pb;

use crate::api::controller::ControllerApi;
use crate::error::Error;
use crate::store::{CatalogPackRecord, Store};
use pack::Pack;

/// The source name of the packs published to this controller.
pub const PUBLISHED: &str = "published";
/// The source name of the packs of the configuration directory's `catalog/`.
pub const DIRECTORY: &str = "directory";

/// What a controller serves: its store's packs, a directory, remotes.
pub struct Catalog {
    store: Store,
    dir: Option<PathBuf>,
    remotes: Vec<sources::Remote>,
    api: Arc<ControllerApi>,
}

/// A pack found in one source, with what is known about it there.
pub struct Found {
    /// The pack (not verified yet).
    pub pack: Pack,
    /// Its source's name.
    pub source: String,
    /// Publication time and publisher (published packs).
    pub published: Option<(i64, String)>,
    /// Every version the source has, newest first.
    pub versions: Vec<String>,
    /// Ratings and reviews (the source's own, for a remote).
    pub rating: (f64, u32),
    /// Reviews, newest first.
    pub reviews: Vec<pb::PackReview>,
}

fn newest_first(versions: &mut [String]) {
    versions.sort_by(|a, b| match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => b.cmp(&a),
        _ => b.cmp(a),
    });
}

impl Catalog {
    /// A catalog over `store`, the pack directory `dir` (when it exists) and
    /// `remotes`, installing through `api`.
    pub fn new(store: Store, dir: Option<PathBuf>, remotes: Vec<sources::Remote>, api: Arc<ControllerApi>) -> Catalog {
        Catalog {
            store,
            dir: dir.filter(|d| d.is_dir()),
            remotes,
            api,
        }
    }

    fn check_source(&self, source: &str) -> Result<(), Error> {
        if source.is_empty()
            || source == PUBLISHED
            || source == DIRECTORY
            || self.remotes.iter().any(|r| r.name == source)
        {
            Ok(())
        } else {
            let mut names = vec![PUBLISHED.to_string(), DIRECTORY.to_string()];
            names.extend(self.remotes.iter().map(|r| r.name.clone()));
            Err(Error::invalid(
                "source",
                format!(
                    "unknown source \"{}\" (this controller has: {})",
                    crate::limits::echo(source),
                    names.join(", ")
                ),
            ))
        }
    }

    /// The packs of the directory source (unusable ones as warnings).
    fn directory_packs(&self) -> (Vec<Pack>, Vec<String>) {
        let mut packs = Vec::new();
        let mut warnings = Vec::new();
        let Some(dir) = &self.dir else { return (packs, warnings) };
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect(),
            Err(e) => {
                warnings.push(format!("{DIRECTORY}: cannot read {}: {e}", dir.display()));
                return (packs, warnings);
            }
        };
        entries.sort();
        for path in entries {
            match Pack::read_dir(&path) {
                Ok(pack) => packs.push(pack),
                Err(e) => warnings.push(format!("{DIRECTORY}: {}: {e}", path.display())),
            }
        }
        (packs, warnings)
    }

    async fn ratings(&self) -> Result<BTreeMap<String, (f64, u32)>, Error> {
        Ok(self
            .store
            .catalog_ratings()
            .await?
            .into_iter()
            .map(|r| (r.pack, (r.average, u32::try_from(r.count).unwrap_or(u32::MAX))))
            .collect())
    }

    /// Every pack (newest version per source and name), filtered by source
    /// and by `text` (in name, description or author, any case).
    pub async fn list(
        &self,
        source: &str,
        local_only: bool,
        text: &str,
    ) -> Result<pb::ListPacksResponse, tonic::Status> {
        self.check_source(source)?;
        let wants = |s: &str| source.is_empty() || source == s;
        let ratings = self.ratings().await?;
        let rating = |name: &str| ratings.get(name).copied().unwrap_or((0.0, 0));
        let mut packs = Vec::new();
        let mut warnings = Vec::new();
        if wants(PUBLISHED) {
            let mut by_name: BTreeMap<String, Vec<CatalogPackRecord>> = BTreeMap::new();
            for record in self.store.catalog_packs().await? {
                by_name.entry(record.name.clone()).or_default().push(record);
            }
            for (name, records) in by_name {
                let mut versions: Vec<String> = records.iter().map(|r| r.version.clone()).collect();
                newest_first(&mut versions);
                let Some(newest) = records.iter().find(|r| r.version == versions[0]) else {
                    continue;
                };
                let Ok(manifest) = pack::parse_manifest(pack::MANIFEST, &newest.manifest) else {
                    continue;
                };
                let (average, count) = rating(&name);
                packs.push(pb::PackSummary {
                    name,
                    version: newest.version.clone(),
                    description: manifest.description,
                    author: manifest.author,
                    executors: manifest.executors,
                    source: PUBLISHED.into(),
                    versions,
                    rating_average: average,
                    rating_count: count,
                    published_at: crate::time::rfc3339(newest.published_at),
                    publisher: newest.publisher.clone(),
                });
            }
        }
        if wants(DIRECTORY) {
            let (dir_packs, dir_warnings) = self.directory_packs();
            warnings.extend(dir_warnings);
            let mut by_name: BTreeMap<String, Vec<Pack>> = BTreeMap::new();
            for p in dir_packs {
                by_name.entry(p.manifest.name.clone()).or_default().push(p);
            }
            for (name, mut list) in by_name {
                list.sort_by(|a, b| b.manifest.version.cmp(&a.manifest.version));
                let newest = &list[0].manifest;
                let (average, count) = rating(&name);
                packs.push(pb::PackSummary {
                    name,
                    version: newest.version.to_string(),
                    description: newest.description.clone(),
                    author: newest.author.clone(),
                    executors: newest.executors.clone(),
                    source: DIRECTORY.into(),
                    versions: list.iter().map(|p| p.manifest.version.to_string()).collect(),
                    rating_average: average,
                    rating_count: count,
                    published_at: String::new(),
                    publisher: String::new(),
                });
            }
        }
        if !local_only {
            for remote in self.remotes.iter().filter(|r| wants(&r.name)) {
                match remote.list().await {
                    Ok(answer) => {
                        packs.extend(answer.packs.into_iter().map(|mut p| {
                            p.source = remote.name.clone();
                            p
                        }));
                        warnings.extend(answer.warnings.into_iter().map(|w| format!("{}: {w}", remote.name)));
                    }
                    Err(status) => warnings.push(status.message().to_string()),
                }
            }
        }
        let needle = text.to_lowercase();
        packs.retain(|p| {
            needle.is_empty()
                || [&p.name, &p.description, &p.author]
                    .iter()
                    .any(|f| f.to_lowercase().contains(&needle))
        });
        Ok(pb::ListPacksResponse { packs, warnings })
    }

    async fn local_reviews(&self, name: &str) -> Result<Vec<pb::PackReview>, Error> {
        Ok(self
            .store
            .catalog_reviews(name)
            .await?
            .into_iter()
            .map(|r| pb::PackReview {
                token: r.token,
                via: r.via,
                rating: r.rating.unwrap_or(0),
                text: r.review.unwrap_or_default(),
                updated_at: crate::time::rfc3339(r.updated_at),
            })
            .collect())
    }

    /// Finds `name` (`version`, or the newest) in `source` (or the first
    /// source that has it). `local_only` leaves the remotes out.
    pub async fn find(
        &self,
        name: &str,
        version: &str,
        source: &str,
        local_only: bool,
    ) -> Result<Found, tonic::Status> {
        self.check_source(source)?;
        pack::check_pack_name(name).map_err(|e| Error::invalid("name", e))?;
        if !version.is_empty() {
            semver::Version::parse(version)
                .map_err(|e| Error::invalid("version", format!("\"{}\": {e}", crate::limits::echo(version))))?;
        }
        let wants = |s: &str| source.is_empty() || source == s;
        let ratings = self.ratings().await?;
        let rating = ratings.get(name).copied().unwrap_or((0.0, 0));
        if wants(PUBLISHED) {
            let records: Vec<CatalogPackRecord> = self
                .store
                .catalog_packs()
                .await?
                .into_iter()
                .filter(|r| r.name == name)
                .collect();
            let mut versions: Vec<String> = records.iter().map(|r| r.version.clone()).collect();
            newest_first(&mut versions);
            let wanted = if version.is_empty() {
                versions.first().cloned()
            } else {
                versions.iter().find(|v| *v == version).cloned()
            };
            if let Some(wanted) = wanted {
                let record = records.iter().find(|r| r.version == wanted).expect("listed");
                let mut files: BTreeMap<String, Vec<u8>> = self
                    .store
                    .catalog_pack_files(name, &wanted)
                    .await?
                    .into_iter()
                    .map(|f| (f.path, f.content))
                    .collect();
                files.insert(pack::MANIFEST.into(), record.manifest.clone().into_bytes());
                let pack = Pack::from_files(files)
                    .map_err(|e| Error::internal(format!("stored pack {name}@{wanted} is unusable: {e}")))?;
                return Ok(Found {
                    pack,
                    source: PUBLISHED.into(),
                    published: Some((record.published_at, record.publisher.clone())),
                    versions,
                    rating,
                    reviews: self.local_reviews(name).await?,
                });
            }
        }
        if wants(DIRECTORY) {
            let (packs, _) = self.directory_packs();
            let mut matching: Vec<Pack> = packs.into_iter().filter(|p| p.manifest.name == name).collect();
            matching.sort_by(|a, b| b.manifest.version.cmp(&a.manifest.version));
            let versions: Vec<String> = matching.iter().map(|p| p.manifest.version.to_string()).collect();
            if let Some(pack) = matching
                .into_iter()
                .find(|p| version.is_empty() || p.manifest.version.to_string() == version)
            {
                return Ok(Found {
                    pack,
                    source: DIRECTORY.into(),
                    published: None,
                    versions,
                    rating,
                    reviews: self.local_reviews(name).await?,
                });
            }
        }
        if !local_only {
            let mut unreachable = Vec::new();
            for remote in self.remotes.iter().filter(|r| wants(&r.name)) {
                match remote.show(name, version).await {
                    Ok(detail) => {
                        let files: BTreeMap<String, Vec<u8>> =
                            detail.files.into_iter().map(|f| (f.path, f.content)).collect();
                        let pack = Pack::from_files(files).map_err(|e| {
                            Error::precondition(format!(
                                "pack {name} from catalog \"{}\" is unusable: {e}",
                                remote.name
                            ))
                        })?;
                        let summary = detail.summary.unwrap_or_default();
                        return Ok(Found {
                            pack,
                            source: remote.name.clone(),
                            published: None,
                            versions: summary.versions,
                            rating: (summary.rating_average, summary.rating_count),
                            reviews: detail.reviews,
                        });
                    }
                    Err(status) if status.code() == tonic::Code::NotFound => {}
                    Err(status) => unreachable.push(status.message().to_string()),
                }
            }
            if !unreachable.is_empty() {
                return Err(Error {
                    code: crate::error::ErrorCode::Unavailable,
                    message: format!("pack \"{name}\" not found here; {}", unreachable.join("; ")),
                }
                .into());
            }
        }
        let what = if version.is_empty() {
            name.to_string()
        } else {
            format!("{name}@{version}")
        };
        Err(Error::not_found(format!(
            "pack \"{}\" not found{}",
            crate::limits::echo(&what),
            if source.is_empty() {
                String::new()
            } else {
                format!(" in source \"{source}\"")
            }
        ))
        .into())
    }

    /// Verifies a pack sent for publication and stores it.
    pub async fn publish(&self, files: Vec<pb::PackFile>, publisher: &str) -> Result<pb::PublishPackResponse, Error> {
        if files.len() > pack::MAX_FILES {
            return Err(Error::invalid(
                "files",
                format!("{} files, more than {}", files.len(), pack::MAX_FILES),
            ));
        }
        let mut map = BTreeMap::new();
        for f in files {
            if map.insert(f.path.clone(), f.content).is_some() {
                return Err(Error::invalid(
                    "files",
                    format!("\"{}\" is sent twice", crate::limits::echo(&f.path)),
                ));
            }
        }
        let pack = Pack::from_files(map).map_err(|e| Error::invalid("pack", e))?;
        pack.verify()
            .map_err(|e| Error::invalid("pack", format!("{}@{}: {e}", pack.manifest.name, pack.manifest.version)))?;
        // Every placeholder must resolve (with sample values for variables without a default).
        let samples: BTreeMap<String, String> = pack
            .manifest
            .variables
            .iter()
            .map(|v| {
                let value = v.default.clone().unwrap_or_else(|| {
                    if v.secret {
                        format!("${{{}}}", v.name)
                    } else {
                        "sample".into()
                    }
                });
                (v.name.clone(), value)
            })
            .collect();
        install::render(&pack, &samples).map_err(|e| Error::invalid("pack", e))?;
        let record = CatalogPackRecord {
            name: pack.manifest.name.clone(),
            version: pack.manifest.version.to_string(),
            manifest: pack.manifest_text.clone(),
            digest: pack.digest(),
            description: pack.manifest.description.clone(),
            author: pack.manifest.author.clone(),
            published_at: crate::time::now_ms(),
            publisher: publisher.to_string(),
        };
        let files: Vec<crate::store::CatalogFileRecord> = pack
            .files
            .iter()
            .filter(|(path, _)| path.as_str() != pack::MANIFEST)
            .map(|(path, content)| crate::store::CatalogFileRecord {
                path: path.clone(),
                sha256: pack::sha256_hex(content),
                content: content.clone(),
            })
            .collect();
        let created = match self.store.publish_pack(&record, &files).await? {
            crate::store::CatalogPublish::Created => true,
            crate::store::CatalogPublish::Unchanged => false,
            crate::store::CatalogPublish::Conflict(digest) => {
                return Err(Error::precondition(format!(
                    "{}@{} is published already with other content (manifest sha256 {digest}, this one {}): a published version never changes, publish a new version",
                    record.name, record.version, record.digest
                )));
            }
        };
        tracing::info!(pack = %record.name, version = %record.version, publisher, created, "catalog pack published");
        Ok(pb::PublishPackResponse {
            name: record.name,
            version: record.version,
            created,
        })
    }

    /// Finds, verifies, substitutes and applies a pack.
    pub async fn install(&self, r: pb::InstallPackRequest) -> Result<pb::InstallPackResponse, tonic::Status> {
        let found = self.find(&r.name, &r.version, &r.source, false).await?;
        let label = format!(
            "{}@{} from {}",
            found.pack.manifest.name, found.pack.manifest.version, found.source
        );
        found
            .pack
            .verify()
            .map_err(|e| Error::precondition(format!("{label}: {e}; nothing was applied")))?;
        let given: BTreeMap<String, String> = r.variables.into_iter().collect();
        let values = install::resolve_variables(&found.pack, &given).map_err(|e| Error::invalid("variables", e))?;
        let yaml =
            install::render(&found.pack, &values).map_err(|e| Error::invalid("pack", format!("{label}: {e}")))?;
        let applied = <ControllerApi as worker_proto::v1::controller_service_server::ControllerService>::apply_jobs(
            &self.api,
            tonic::Request::new(pb::ApplyJobsRequest {
                yaml,
                source_name: format!(
                    "catalog:{}@{}/job.yaml",
                    found.pack.manifest.name, found.pack.manifest.version
                ),
            }),
        )
        .await?
        .into_inner();
        tracing::info!(pack = %label, created = ?applied.created, updated = ?applied.updated, "catalog pack installed");
        Ok(pb::InstallPackResponse {
            name: found.pack.manifest.name.clone(),
            version: found.pack.manifest.version.to_string(),
            source: found.source,
            created: applied.created,
            updated: applied.updated,
            unchanged: applied.unchanged,
        })
    }

    /// Where a rating or review of `name` goes: `None` here, or a remote.
    async fn rating_target(
        &self,
        name: &str,
        source: &str,
        via: &str,
    ) -> Result<(Option<&sources::Remote>, String), tonic::Status> {
        // A forwarded request (non-empty `via`) is for this controller's own packs.
        let found = self.find(name, "", source, !via.is_empty()).await?;
        Ok((self.remotes.iter().find(|r| r.name == found.source), found.source))
    }

    async fn summary(&self, name: &str, source: &str) -> Result<pb::RatingSummary, Error> {
        let (average, count) = self.ratings().await?.get(name).copied().unwrap_or((0.0, 0));
        Ok(pb::RatingSummary {
            name: name.into(),
            average,
            count,
            source: source.into(),
        })
    }

    /// Rates `name` as `caller` (forwarded to its remote source when it comes from one).
    pub async fn rate(&self, r: pb::RatePackRequest, caller: &str) -> Result<pb::RatingSummary, tonic::Status> {
        if !(1..=5).contains(&r.rating) {
            return Err(Error::invalid("rating", format!("{} is not between 1 and 5", r.rating)).into());
        }
        check_via(&r.via)?;
        match self.rating_target(&r.name, &r.source, &r.via).await? {
            (Some(remote), _) => {
                let mut summary = remote.rate(&r.name, r.rating, caller).await?;
                summary.source = remote.name.clone();
                Ok(summary)
            }
            (None, source) => {
                self.store
                    .put_catalog_rating(&r.name, caller, &r.via, r.rating, crate::time::now_ms())
                    .await?;
                Ok(self.summary(&r.name, &source).await?)
            }
        }
    }

    /// Reviews `name` as `caller` (forwarded like [`Catalog::rate`]).
    pub async fn review(&self, r: pb::ReviewPackRequest, caller: &str) -> Result<pb::RatingSummary, tonic::Status> {
        let text = r.text.trim();
        if text.is_empty() {
            return Err(Error::invalid("text", "the review is empty").into());
        }
        if text.len() > MAX_REVIEW_BYTES {
            return Err(Error::invalid(
                "text",
                format!("the review is {} bytes, more than {MAX_REVIEW_BYTES}", text.len()),
            )
            .into());
        }
        check_via(&r.via)?;
        match self.rating_target(&r.name, &r.source, &r.via).await? {
            (Some(remote), _) => {
                let mut summary = remote.review(&r.name, text, caller).await?;
                summary.source = remote.name.clone();
                Ok(summary)
            }
            (None, source) => {
                self.store
                    .put_catalog_review(&r.name, caller, &r.via, text, crate::time::now_ms())
                    .await?;
                Ok(self.summary(&r.name, &source).await?)
            }
        }
    }
}

/// Longest review, in bytes.
pub const MAX_REVIEW_BYTES: usize = 4096;

fn check_via(via: &str) -> Result<(), Error> {
    if via.len() > 128 || via.chars().any(char::is_control) {
        return Err(Error::invalid("via", "at most 128 characters, no control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values for the variables without a default, per shipped pack.
    fn samples(pack: &str) -> BTreeMap<String, String> {
        let pairs: &[(&str, &str)] = match pack {
            "http-health-check" => &[("URL", "https://example.com/healthz")],
            "stale-file-cleanup" => &[("DIR", "/var/tmp/uploads")],
            "github-repo-sync" => &[("REPO", "me/my-fork")],
            "postgres-backup-s3" => &[("S3_BUCKET", "backups")],
            "weekly-digest" => &[("CHANNEL", "ops-email")],
            _ => &[],
        };
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_shipped_pack_verifies_and_its_jobs_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/catalog");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let pack = Pack::read_dir(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            pack.verify().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = pack.manifest.name.clone();
            assert_eq!(
                path.file_name().unwrap().to_str(),
                Some(name.as_str()),
                "directory named after its pack"
            );
            assert!(pack.files.contains_key("README.md"), "{name} has a README.md");
            let values = install::resolve_variables(&pack, &samples(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let yaml = install::render(&pack, &values).unwrap_or_else(|e| panic!("{name}: {e}"));
            let lookup = crate::config::env::from_pairs(&[]);
            crate::config::parse_document(
                std::path::Path::new(&format!("{name}/job.yaml")),
                &yaml,
                &lookup,
                crate::config::Source::Api,
            )
            .unwrap_or_else(|e| panic!("{name}:\n{e}\n{yaml}"));
            names.push(name);
        }
        names.sort();
        assert_eq!(
            names,
            [
                "disk-usage-alert",
                "github-repo-sync",
                "http-health-check",
                "postgres-backup-s3",
                "stale-file-cleanup",
                "weekly-digest"
            ]
        );
    }
}
