//! Who is calling: a token's name and role, or the anonymous admin of a
//! controller without tokens. The auth layer puts it into each request's
//! extensions; handlers read it with [`Principal::of`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tonic::Status;

use super::roles::{Role, allowed_roles, describe};
use super::tokens::{StreamGuard, TokenEntry};
use crate::time::{now_ms, rfc3339};

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name; "anonymous" without authentication.
    pub name: String,
    /// The token's role; `Admin` without authentication.
    pub role: Role,
    /// The token; `None` for the anonymous admin.
    token: Option<Arc<TokenEntry>>,
    /// Open streams allowed to the token.
    max_streams: usize,
}

impl Principal {
    /// Every caller of a controller without tokens: may do everything.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".to_string(),
            role: Role::Admin,
            token: None,
            max_streams: usize::MAX,
        }
    }

    /// The holder of `token`.
    pub fn token(token: Arc<TokenEntry>, max_streams: usize) -> Principal {
        Principal {
            name: token.name.clone(),
            role: token.role,
            token: Some(token),
            max_streams,
        }
    }

    /// Whether authentication is off for this caller.
    pub fn is_anonymous(&self) -> bool {
        self.token.is_none()
    }

    /// The principal of a request (the anonymous admin when no auth layer
    /// ran, as in tests that call a service directly).
    pub fn of<T>(request: &tonic::Request<T>) -> Principal {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(Principal::anonymous)
    }

    /// Whether the token is still good at `now` (not revoked, not expired):
    /// web sessions end when it is not. Always for the anonymous admin.
    pub fn still_valid(&self, now: i64) -> Result<(), String> {
        let Some(token) = &self.token else { return Ok(()) };
        if let Some(at) = token.revoked_at() {
            return Err(format!("token \"{}\" was revoked at {}", self.name, rfc3339(at)));
        }
        match token.expires_at() {
            Some(at) if at <= now => Err(format!("token \"{}\" expired at {}", self.name, rfc3339(at))),
            _ => Ok(()),
        }
    }

    /// Whether it may call `method` (`Service/Method`): the anonymous admin
    /// may call anything the role matrix knows, a token what its role is
    /// allowed.
    pub fn authorize(&self, method: &str) -> Result<(), Status> {
        let allowed = allowed_roles(method);
        if allowed.is_empty() {
            return Err(Status::permission_denied(format!(
                "{method} is not in the role matrix (docs/security.md)"
            )));
        }
        if self.is_anonymous() || allowed.contains(&self.role) {
            return Ok(());
        }
        let short = method.rsplit('/').next().unwrap_or(method);
        Err(Status::permission_denied(format!(
            "token \"{}\" (role {}) may not call {short}; it needs {}",
            self.name,
            self.role,
            describe(allowed)
        )))
    }

    /// Counts one more open stream against the token, refused past the limit.
    /// The guard gives it back when dropped.
    pub fn open_stream(&self) -> Result<Option<StreamGuard>, Status> {
        let Some(token) = &self.token else { return Ok(None) };
        let open = token.streams.fetch_add(1, Ordering::AcqRel);
        let guard = StreamGuard(token.clone());
        if open >= self.max_streams {
            return Err(Status::resource_exhausted(format!(
                "token \"{}\" has {open} open streams, the limit is {} (--max-streams-per-token or --limit streams_per_token=...)",
                self.name, self.max_streams
            )));
        }
        Ok(Some(guard))
    }

    /// Completes when the token stops being valid (revoked, or expired),
    /// with the status that ends its streams; never for the anonymous admin.
    pub async fn ended(&self) -> Status {
        let Some(token) = &self.token else {
            return std::future::pending().await;
        };
        let expiry = async {
            match token.expires_at() {
                Some(at) => {
                    let wait = (at - now_ms()).max(0) as u64;
                    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                    at
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            at = token.wait_revoked() => Status::unauthenticated(format!(
                "token \"{}\" was revoked at {}", self.name, rfc3339(at)
            )),
            at = expiry => Status::unauthenticated(format!(
                "token \"{}\" expired at {}", self.name, rfc3339(at)
            )),
        }
    }
}
