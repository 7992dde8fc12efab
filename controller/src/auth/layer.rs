//! The tower layer in front of every gRPC service: authenticates the caller
//! from `authorization: Bearer <token>`, checks the role matrix for the
//! method named by the request path (`/worker.v1.ControllerService/ListJobs`)
//! and puts the [`Principal`] into the request's extensions. A refusal is
//! answered here, before the request reaches a service.
//!
//! gRPC health (`/grpc.health.v1.Health/`) and server reflection
//! (`/grpc.reflection.v1.ServerReflection/`) stay open: load balancers and
//! supervisors probe health without credentials, and reflection only
//! describes the public proto files; neither reads or changes any state.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::codegen::http;

use super::Tokens;
use crate::time::now_ms;

/// Paths that need no token.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/"];
/// The package prefix of the role matrix's methods.
const PACKAGE_PREFIX: &str = "/worker.v1.";

/// Adds [`AuthService`] around the server's routes.
#[derive(Clone)]
pub struct AuthLayer {
    tokens: Arc<Tokens>,
}

impl AuthLayer {
    /// A layer checking calls against `tokens`.
    pub fn new(tokens: Arc<Tokens>) -> AuthLayer {
        AuthLayer { tokens }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// Authenticates and authorizes each request before `inner` sees it.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    tokens: Arc<Tokens>,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>> + Clone,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Either::Left(self.inner.call(request));
        }
        let method = path.strip_prefix(PACKAGE_PREFIX).unwrap_or(path).to_string();
        let header = request.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        let checked = self
            .tokens
            .authenticate(header, now_ms())
            .and_then(|principal| principal.authorize(&method).map(|()| principal));
        match checked {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                Either::Left(self.inner.call(request))
            }
            Err(status) => {
                tracing::debug!(%method, code = ?status.code(), "call refused");
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}
