//! Authentication and authorization of gRPC calls (docs/security.md).
//!
//! * [`roles`]: the five roles and the role matrix, one table
//!   ([`roles::MATRIX`]) that the server enforces and the document shows;
//! * [`tokens`]: the token cache ([`Tokens`]): every stored token in memory
//!   (by hash and by name), creation, revocation, the bootstrap token,
//!   secrets and their hashes;
//! * [`principal`]: who calls ([`Principal`]), role checks, the per-token
//!   stream count and the signal that ends a revoked token's streams;
//! * [`layer`]: the tower layer that checks every call before a service
//!   sees it.
//!
//! Authentication is on as soon as the store holds a token (revoked or not)
//! or a bootstrap token is given; without any, every caller is an anonymous
//! admin and the controller listens on loopback only.

pub mod layer;
pub mod principal;
pub mod roles;
pub mod tokens;

pub use layer::AuthLayer;
pub use principal::Principal;
pub use roles::{Role, allowed_roles};
pub use tokens::Tokens;

/// Open streams (agent connections and event watches) one token may hold
/// at once, unless `--max-streams-per-token` or `--limit streams_per_token=N`
/// says otherwise.
pub const DEFAULT_MAX_STREAMS_PER_TOKEN: usize = 256;

/// The per-token stream limit in force: `--max-streams-per-token` when it is
/// given (`flag`), else the `streams_per_token` limit (`--limit
/// streams_per_token=N`, default [`DEFAULT_MAX_STREAMS_PER_TOKEN`]). Both
/// spellings set the one value [`AuthSettings::max_streams_per_token`].
pub fn max_streams_per_token(flag: Option<usize>, limits: &crate::limits::Limits) -> usize {
    flag.unwrap_or(limits.streams_per_token)
}

/// Authentication settings chosen at start-up. Its `Debug` hides the secret.
#[derive(Clone)]
pub struct AuthSettings {
    /// The bootstrap admin token's secret (`--bootstrap-token-file` or
    /// `WORKER_BOOTSTRAP_TOKEN`), untrimmed.
    pub bootstrap_secret: Option<String>,
    /// Open streams allowed per token.
    pub max_streams_per_token: usize,
}

impl AuthSettings {
    /// No bootstrap token, the default stream limit.
    pub fn new() -> AuthSettings {
        AuthSettings {
            bootstrap_secret: None,
            max_streams_per_token: DEFAULT_MAX_STREAMS_PER_TOKEN,
        }
    }
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings::new()
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field(
                "bootstrap_secret",
                &self.bootstrap_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("max_streams_per_token", &self.max_streams_per_token)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    #[test]
    fn both_spellings_set_the_stream_limit_and_the_flag_wins() {
        let default = Limits::default();
        assert_eq!(max_streams_per_token(None, &default), DEFAULT_MAX_STREAMS_PER_TOKEN);
        assert_eq!(AuthSettings::new().max_streams_per_token, DEFAULT_MAX_STREAMS_PER_TOKEN);
        let limited = Limits::from_assignments(["streams_per_token=3"]).unwrap();
        assert_eq!(max_streams_per_token(None, &limited), 3);
        assert_eq!(max_streams_per_token(Some(7), &limited), 7);
        assert_eq!(max_streams_per_token(Some(7), &default), 7);
    }
}
