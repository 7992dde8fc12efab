//! `CatalogService`: the gRPC face of [`super::Catalog`]. Roles are in
//! `auth::roles::MATRIX` (viewer: list, search, show; operator: install, rate,
//! review, publish).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use worker_proto::v1 as pb;
use worker_proto::v1::catalog_service_server::CatalogService;

use super::{Catalog, Found, pack};
use crate::auth::Principal;

/// The service; one instance per controller.
pub struct CatalogApi {
    catalog: Arc<Catalog>,
}

impl CatalogApi {
    /// Serves `catalog`.
    pub fn new(catalog: Arc<Catalog>) -> CatalogApi {
        CatalogApi { catalog }
    }
}

/// The detail of a found pack: pack.yaml first, then the files by path.
pub fn detail(found: Found) -> pb::PackDetail {
    let m = &found.pack.manifest;
    let mut files = vec![pb::PackFile {
        path: pack::MANIFEST.into(),
        content: found.pack.manifest_text.clone().into_bytes(),
        sha256: String::new(),
    }];
    files.extend(m.files.iter().map(|(path, sha)| pb::PackFile {
        path: path.clone(),
        content: found.pack.files.get(path).cloned().unwrap_or_default(),
        sha256: sha.clone(),
    }));
    let (published_at, publisher) = found
        .published
        .as_ref()
        .map(|(at, who)| (crate::time::rfc3339(*at), who.clone()))
        .unwrap_or_default();
    pb::PackDetail {
        summary: Some(pb::PackSummary {
            name: m.name.clone(),
            version: m.version.to_string(),
            description: m.description.clone(),
            author: m.author.clone(),
            executors: m.executors.clone(),
            source: found.source.clone(),
            versions: found.versions.clone(),
            rating_average: found.rating.0,
            rating_count: found.rating.1,
            published_at,
            publisher,
        }),
        variables: m
            .variables
            .iter()
            .map(|v| pb::PackVariable {
                name: v.name.clone(),
                description: v.description.clone(),
                has_default: v.default.is_some(),
                default_value: v.default.clone().unwrap_or_default(),
                secret: v.secret,
            })
            .collect(),
        files,
        checksum_errors: found.pack.checksum_errors(),
        reviews: found.reviews,
    }
}

#[tonic::async_trait]
impl CatalogService for CatalogApi {
    async fn list_packs(
        &self,
        request: Request<pb::ListPacksRequest>,
    ) -> Result<Response<pb::ListPacksResponse>, Status> {
        let r = request.into_inner();
        Ok(Response::new(self.catalog.list(&r.source, r.local_only, "").await?))
    }

    async fn search_packs(
        &self,
        request: Request<pb::SearchPacksRequest>,
    ) -> Result<Response<pb::ListPacksResponse>, Status> {
        let r = request.into_inner();
        if r.text.len() > 256 {
            return Err(crate::error::Error::invalid("text", "more than 256 bytes").into());
        }
        Ok(Response::new(
            self.catalog.list(&r.source, r.local_only, &r.text).await?,
        ))
    }

    async fn show_pack(&self, request: Request<pb::ShowPackRequest>) -> Result<Response<pb::PackDetail>, Status> {
        let r = request.into_inner();
        let found = self.catalog.find(&r.name, &r.version, &r.source, r.local_only).await?;
        Ok(Response::new(detail(found)))
    }

    async fn publish_pack(
        &self,
        request: Request<pb::PublishPackRequest>,
    ) -> Result<Response<pb::PublishPackResponse>, Status> {
        let caller = Principal::of(&request).name;
        Ok(Response::new(
            self.catalog.publish(request.into_inner().files, &caller).await?,
        ))
    }

    async fn install_pack(
        &self,
        request: Request<pb::InstallPackRequest>,
    ) -> Result<Response<pb::InstallPackResponse>, Status> {
        Ok(Response::new(self.catalog.install(request.into_inner()).await?))
    }

    async fn rate_pack(&self, request: Request<pb::RatePackRequest>) -> Result<Response<pb::RatingSummary>, Status> {
        let caller = Principal::of(&request).name;
        Ok(Response::new(self.catalog.rate(request.into_inner(), &caller).await?))
    }

    async fn review_pack(
        &self,
        request: Request<pb::ReviewPackRequest>,
    ) -> Result<Response<pb::RatingSummary>, Status> {
        let caller = Principal::of(&request).name;
        Ok(Response::new(self.catalog.review(request.into_inner(), &caller).await?))
    }
}
