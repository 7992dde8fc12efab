//! The token part of `ControllerService` (docs/security.md): create, list and
//! revoke. The secret of a new token is in the create answer only; the
//! controller keeps its hash.

use std::sync::Arc;

use tonic::Status;
use worker_proto::v1 as pb;

use crate::auth::Tokens;

/// The token calls need the auth module's cache.
fn tokens(tokens: Option<&Arc<Tokens>>) -> Result<&Arc<Tokens>, Status> {
    tokens.ok_or_else(|| Status::unimplemented("tokens are not available in this controller"))
}

/// `CreateToken`.
pub async fn create(
    cache: Option<&Arc<Tokens>>,
    request: pb::CreateTokenRequest,
) -> Result<pb::CreateTokenResponse, Status> {
    let created = tokens(cache)?
        .create(&request.name, &request.role, request.expires_in_ms)
        .await?;
    tracing::info!(
        token = %created.token.name,
        role = %created.token.role,
        authentication_turned_on = created.turned_on,
        "token created"
    );
    Ok(pb::CreateTokenResponse {
        token: Some(created.token.to_proto()),
        secret: created.secret,
        authentication_turned_on: created.turned_on,
    })
}

/// `ListTokens`.
pub fn list(cache: Option<&Arc<Tokens>>) -> Result<pb::ListTokensResponse, Status> {
    Ok(pb::ListTokensResponse {
        tokens: tokens(cache)?.list().iter().map(|t| t.to_proto()).collect(),
    })
}

/// `RevokeToken`.
pub async fn revoke(cache: Option<&Arc<Tokens>>, request: pb::RevokeTokenRequest) -> Result<pb::Token, Status> {
    Ok(tokens(cache)?.revoke(&request.name).await?.to_proto())
}
