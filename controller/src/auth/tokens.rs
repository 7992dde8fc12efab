//! The token cache: every stored token (by the SHA-256 of its secret and by
//! name), loaded at start-up and updated on create and revoke, so checking a
//! call costs no store query. Expiry is compared with the clock on every call.
//!
//! Secrets are 32 bytes from the operating system's RNG, shown once as
//! `wkr_` + 64 hex digits; only their SHA-256 is stored. A presented secret is
//! hashed, looked up by hash, and the hash compared again in constant time
//! (`subtle`), so no comparison on secret material exits early.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;

use super::principal::Principal;
use super::roles::Role;
use crate::store::{Store, TokenRecord};
use crate::time::{now_ms, rfc3339};

/// The name of the token `--bootstrap-token-file` defines.
pub const BOOTSTRAP_NAME: &str = "bootstrap";
/// Shortest bootstrap secret accepted, in characters.
pub const MIN_BOOTSTRAP_SECRET: usize = 16;
/// Prefix of generated secrets.
pub const SECRET_PREFIX: &str = "wkr_";
/// Longest token name by default, in bytes (the `token_name_bytes` limit,
/// `--limit token_name_bytes=N`).
pub const MAX_TOKEN_NAME: usize = 128;

/// What the "no token" answer says.
pub const NO_TOKEN: &str = "this controller requires a token (workerctl: --token or WORKER_TOKEN)";

/// One token in memory: its row, and what its open streams share.
#[derive(Debug)]
pub struct TokenEntry {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    hash: [u8; 32],
    created_at: i64,
    expires_at: Option<i64>,
    /// When it was revoked (`None`: not revoked); stream tasks wait on it.
    revoked: tokio::sync::watch::Sender<Option<i64>>,
    /// Open streams (agent connections and event watches).
    pub(super) streams: AtomicUsize,
    /// In memory only (the `--dev` agent's token), never stored.
    ephemeral: bool,
}

impl TokenEntry {
    fn new(record: &TokenRecord, role: Role, hash: [u8; 32], ephemeral: bool) -> TokenEntry {
        TokenEntry {
            name: record.name.clone(),
            role,
            hash,
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked: tokio::sync::watch::channel(record.revoked_at).0,
            streams: AtomicUsize::new(0),
            ephemeral,
        }
    }

    /// When it stops being accepted.
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at
    }

    /// When it was revoked.
    pub fn revoked_at(&self) -> Option<i64> {
        *self.revoked.borrow()
    }

    /// Waits until it is revoked; returns when.
    pub async fn wait_revoked(&self) -> i64 {
        let mut rx = self.revoked.subscribe();
        let at = rx.wait_for(|r| r.is_some()).await.ok().and_then(|at| *at);
        match at {
            Some(at) => at,
            // The sender lives as long as the entry: not reached.
            None => std::future::pending().await,
        }
    }

    /// The token as the API shows it (never the secret).
    pub fn to_proto(&self) -> worker_proto::v1::Token {
        worker_proto::v1::Token {
            name: self.name.clone(),
            role: self.role.to_string(),
            created_at: rfc3339(self.created_at),
            expires_at: self.expires_at.map(rfc3339).unwrap_or_default(),
            revoked_at: self.revoked_at().map(rfc3339).unwrap_or_default(),
        }
    }
}

#[derive(Default)]
struct Inner {
    by_hash: HashMap<[u8; 32], Arc<TokenEntry>>,
    by_name: BTreeMap<String, Arc<TokenEntry>>,
}

impl Inner {
    fn insert(&mut self, entry: Arc<TokenEntry>) {
        if let Some(old) = self.by_name.insert(entry.name.clone(), entry.clone()) {
            self.by_hash.remove(&old.hash);
        }
        self.by_hash.insert(entry.hash, entry);
    }

    /// Authentication is on once the store holds any token row.
    fn enabled(&self) -> bool {
        self.by_name.values().any(|t| !t.ephemeral)
    }
}

/// The controller's tokens, in memory, with the store behind them.
pub struct Tokens {
    store: Store,
    inner: RwLock<Inner>,
    /// Serializes creates and revokes (store first, then memory).
    writes: tokio::sync::Mutex<()>,
    /// Open streams allowed per token.
    max_streams: usize,
}

/// A new token, with the secret shown once.
#[derive(Debug)]
pub struct Created {
    /// The token.
    pub token: Arc<TokenEntry>,
    /// The secret.
    pub secret: String,
    /// It was the first token: authentication is on from now on.
    pub turned_on: bool,
}

/// Why the bootstrap token cannot be installed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The secret is too short.
    #[error("the bootstrap token is {0} characters long; it must be at least {MIN_BOOTSTRAP_SECRET}")]
    TooShort(usize),
    /// The store refused.
    #[error("cannot store the bootstrap token: {0}")]
    Store(crate::error::Error),
}

/// SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random secret: `wkr_` and 32 bytes of the OS RNG in hex.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random number generator failed");
    format!("{SECRET_PREFIX}{}", hex::encode(bytes))
}

/// Checks a token name: the rules of job names (`[a-z0-9][a-z0-9._-]*`, at
/// most `token_name_bytes` bytes, a limit: [`MAX_TOKEN_NAME`] by default).
pub fn validate_name(name: &str) -> Result<(), String> {
    let max = crate::limits::current().token_name_bytes;
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if name.len() > max {
        Err(format!(
            "token name is {}",
            crate::limits::exceeds(format!("{} bytes", name.len()), "token_name_bytes", max)
        ))
    } else if !first_ok || !rest_ok {
        let shown: String = name.chars().take(64).flat_map(char::escape_default).collect();
        Err(format!(
            "invalid token name \"{shown}\": use a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ))
    } else {
        Ok(())
    }
}

fn parse_hash(hex_text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_text).ok()?;
    bytes.try_into().ok()
}

/// Every stored token as an entry; one with an unknown role or a bad hash is
/// never accepted but still counts (authentication stays on).
async fn stored_entries(store: &Store) -> crate::error::Result<Vec<Arc<TokenEntry>>> {
    let mut entries = Vec::new();
    for record in store.tokens().await? {
        let (Ok(role), Some(hash)) = (record.role.parse::<Role>(), parse_hash(&record.hash)) else {
            tracing::warn!(token = %record.name, "stored token with an unknown role or a bad hash is ignored");
            let entry = TokenEntry::new(&record, Role::Viewer, [0; 32], false);
            let _ = entry
                .revoked
                .send_replace(Some(record.revoked_at.unwrap_or(record.created_at)));
            entries.push(Arc::new(entry));
            continue;
        };
        entries.push(Arc::new(TokenEntry::new(&record, role, hash, false)));
    }
    Ok(entries)
}

impl Tokens {
    /// Loads every stored token.
    pub async fn load(store: Store, max_streams: usize) -> crate::error::Result<Tokens> {
        let mut inner = Inner::default();
        for entry in stored_entries(&store).await? {
            inner.insert(entry);
        }
        Ok(Tokens {
            store,
            inner: RwLock::new(inner),
            writes: tokio::sync::Mutex::new(()),
            max_streams,
        })
    }

    /// Reads the stored tokens again: with high availability another
    /// controller of the same database creates and revokes them. New tokens
    /// are added, revocations reach the entries in memory (ending their
    /// streams); the in-memory `--dev` token stays.
    pub async fn refresh(&self) -> crate::error::Result<()> {
        let _writes = self.writes.lock().await;
        let stored = stored_entries(&self.store).await?;
        let mut inner = self.inner.write().expect("token cache poisoned");
        for entry in stored {
            match inner.by_name.get(&entry.name) {
                Some(known) if known.hash == entry.hash && known.role == entry.role => {
                    if let (None, Some(at)) = (known.revoked_at(), entry.revoked_at()) {
                        known.revoked.send_replace(Some(at));
                    }
                }
                _ => inner.insert(entry),
            }
        }
        Ok(())
    }

    /// The caller a standby authenticated as `name` ("": the anonymous admin
    /// of a controller without tokens), checked again here: a call relayed
    /// through the store (`crate::ha::relay`) runs as this principal.
    pub fn principal_named(&self, name: &str, now: i64) -> Result<Principal, Status> {
        let inner = self.inner.read().expect("token cache poisoned");
        if name.is_empty() {
            return if inner.enabled() {
                Err(Status::unauthenticated(NO_TOKEN))
            } else {
                Ok(Principal::anonymous())
            };
        }
        let Some(entry) = inner.by_name.get(name).filter(|e| !e.ephemeral).cloned() else {
            return Err(Status::unauthenticated(format!(
                "token refused: unknown token \"{name}\""
            )));
        };
        drop(inner);
        if let Some(at) = entry.revoked_at() {
            return Err(Status::unauthenticated(format!(
                "token refused: token \"{name}\" was revoked at {}",
                rfc3339(at)
            )));
        }
        if let Some(at) = entry.expires_at.filter(|at| *at <= now) {
            return Err(Status::unauthenticated(format!(
                "token refused: token \"{name}\" expired at {}",
                rfc3339(at)
            )));
        }
        Ok(Principal::token(entry, self.max_streams))
    }

    /// Whether every call needs a token.
    pub fn enabled(&self) -> bool {
        self.inner.read().expect("token cache poisoned").enabled()
    }

    /// Every token, by name (not the in-memory `--dev` agent's).
    pub fn list(&self) -> Vec<Arc<TokenEntry>> {
        let inner = self.inner.read().expect("token cache poisoned");
        inner.by_name.values().filter(|t| !t.ephemeral).cloned().collect()
    }

    /// Installs the bootstrap admin token with `secret` (trimmed): created, or
    /// its hash replaced when it differs. A revoked bootstrap token stays
    /// revoked (with a warning).
    pub async fn install_bootstrap(&self, secret: &str) -> Result<(), BootstrapError> {
        let secret = secret.trim();
        if secret.chars().count() < MIN_BOOTSTRAP_SECRET {
            return Err(BootstrapError::TooShort(secret.chars().count()));
        }
        let _writes = self.writes.lock().await;
        let hash = hash_secret(secret);
        let existing = self
            .inner
            .read()
            .expect("token cache poisoned")
            .by_name
            .get(BOOTSTRAP_NAME)
            .cloned();
        let record = TokenRecord {
            name: BOOTSTRAP_NAME.to_string(),
            role: Role::Admin.to_string(),
            hash: hex::encode(hash),
            created_at: existing.as_ref().map_or_else(now_ms, |e| e.created_at),
            expires_at: existing.as_ref().and_then(|e| e.expires_at),
            revoked_at: existing.as_ref().and_then(|e| e.revoked_at()),
        };
        if let Some(e) = &existing {
            if record.revoked_at.is_some() {
                tracing::warn!(
                    "the bootstrap token was revoked and stays revoked; --bootstrap-token-file has no effect"
                );
            }
            if bool::from(e.hash.ct_eq(&hash)) && e.role == Role::Admin {
                return Ok(());
            }
            tracing::info!("the bootstrap token's secret changed: the stored hash is replaced");
        }
        self.store.upsert_token(&record).await.map_err(BootstrapError::Store)?;
        let entry = TokenEntry::new(&record, Role::Admin, hash, false);
        self.inner
            .write()
            .expect("token cache poisoned")
            .insert(Arc::new(entry));
        Ok(())
    }

    /// An in-memory token for the `--dev` agent (never stored; it does not
    /// turn authentication on). Returns its secret.
    pub fn mint_ephemeral(&self, name: &str, role: Role) -> String {
        let secret = generate_secret();
        let record = TokenRecord {
            name: name.to_string(),
            role: role.to_string(),
            hash: String::new(),
            created_at: now_ms(),
            expires_at: None,
            revoked_at: None,
        };
        let entry = TokenEntry::new(&record, role, hash_secret(&secret), true);
        self.inner
            .write()
            .expect("token cache poisoned")
            .insert(Arc::new(entry));
        secret
    }

    /// Creates a token: validated, stored (hash only), then cached.
    pub async fn create(&self, name: &str, role: &str, expires_in_ms: u64) -> Result<Created, Status> {
        validate_name(name).map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
        if name == BOOTSTRAP_NAME {
            return Err(Status::invalid_argument(
                "name: \"bootstrap\" is reserved for the token of --bootstrap-token-file",
            ));
        }
        let role: Role = role
            .parse()
            .map_err(|e| Status::invalid_argument(format!("role: {e}")))?;
        const MAX_EXPIRY_MS: u64 = 100 * 365 * 86_400_000;
        if expires_in_ms > MAX_EXPIRY_MS {
            return Err(Status::invalid_argument(format!(
                "expires: {expires_in_ms} ms is over the limit of 100 years"
            )));
        }
        let _writes = self.writes.lock().await;
        if self
            .inner
            .read()
            .expect("token cache poisoned")
            .by_name
            .contains_key(name)
        {
            return Err(Status::already_exists(format!(
                "token \"{name}\" exists (names are never reused)"
            )));
        }
        let secret = generate_secret();
        let hash = hash_secret(&secret);
        let now = now_ms();
        let record = TokenRecord {
            name: name.to_string(),
            role: role.to_string(),
            hash: hex::encode(hash),
            created_at: now,
            expires_at: (expires_in_ms > 0).then(|| now + expires_in_ms as i64),
            revoked_at: None,
        };
        if !self.store.insert_token(&record).await.map_err(Status::from)? {
            return Err(Status::already_exists(format!(
                "token \"{name}\" exists (names are never reused)"
            )));
        }
        let entry = Arc::new(TokenEntry::new(&record, role, hash, false));
        let mut inner = self.inner.write().expect("token cache poisoned");
        let turned_on = !inner.enabled();
        inner.insert(entry.clone());
        Ok(Created {
            token: entry,
            secret,
            turned_on,
        })
    }

    /// Revokes a token at once: stored, then its open streams are told.
    /// Revoking a revoked token changes nothing and answers it as it is.
    pub async fn revoke(&self, name: &str) -> Result<Arc<TokenEntry>, Status> {
        let _writes = self.writes.lock().await;
        let entry = self
            .inner
            .read()
            .expect("token cache poisoned")
            .by_name
            .get(name)
            .filter(|t| !t.ephemeral)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("token \"{name}\" does not exist")))?;
        if entry.revoked_at().is_some() {
            return Ok(entry);
        }
        let now = now_ms();
        self.store.revoke_token(name, now).await.map_err(Status::from)?;
        entry.revoked.send_replace(Some(now));
        tracing::info!(token = %name, "token revoked");
        Ok(entry)
    }

    /// Who presents `authorization` (the header's value, if any) at `now`.
    pub fn authenticate(&self, authorization: Option<&[u8]>, now: i64) -> Result<Principal, Status> {
        let inner = self.inner.read().expect("token cache poisoned");
        let enabled = inner.enabled();
        let Some(value) = authorization else {
            return if enabled {
                Err(Status::unauthenticated(NO_TOKEN))
            } else {
                Ok(Principal::anonymous())
            };
        };
        let secret = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(secret) = secret else {
            return if enabled {
                Err(Status::unauthenticated(
                    "token refused: the authorization header must be \"Bearer <token>\"",
                ))
            } else {
                Ok(Principal::anonymous())
            };
        };
        let hash = hash_secret(secret);
        let entry = match inner.by_hash.get(&hash) {
            Some(entry) if bool::from(entry.hash.ct_eq(&hash)) => entry.clone(),
            _ if !enabled => return Ok(Principal::anonymous()),
            _ => return Err(Status::unauthenticated("token refused: unknown token")),
        };
        drop(inner);
        if let Some(at) = entry.revoked_at() {
            return Err(Status::unauthenticated(format!(
                "token refused: token \"{}\" was revoked at {}",
                entry.name,
                rfc3339(at)
            )));
        }
        if let Some(at) = entry.expires_at.filter(|at| *at <= now) {
            return Err(Status::unauthenticated(format!(
                "token refused: token \"{}\" expired at {}",
                entry.name,
                rfc3339(at)
            )));
        }
        Ok(Principal::token(entry, self.max_streams))
    }
}

/// Streams counted against a token; the count goes down on drop.
#[derive(Debug)]
pub struct StreamGuard(pub(super) Arc<TokenEntry>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_prefixed() {
        let (a, b) = (generate_secret(), generate_secret());
        assert!(
            a.starts_with(SECRET_PREFIX) && a.len() == SECRET_PREFIX.len() + 64,
            "{a}"
        );
        assert_ne!(a, b);
        assert_eq!(hex::encode(hash_secret("x")).len(), 64);
    }

    async fn tokens_in(dir: &tempfile::TempDir) -> Tokens {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        Tokens::load(Store::open(&url).await.unwrap(), 2).await.unwrap()
    }

    fn bearer(secret: &str) -> Vec<u8> {
        format!("Bearer {secret}").into_bytes()
    }

    /// Authentication turns on with the first stored token and stays on after
    /// it is revoked; the answers say which case it is and never the secret.
    #[tokio::test]
    async fn authentication_follows_the_stored_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = tokens_in(&dir).await;
        assert!(!tokens.enabled());
        assert!(tokens.authenticate(None, 0).unwrap().is_anonymous());
        let dev = tokens.mint_ephemeral("dev-agent (in-process)", Role::Agent);
        assert!(
            !tokens.enabled(),
            "the --dev agent's token does not turn authentication on"
        );
        assert_eq!(tokens.authenticate(Some(&bearer(&dev)), 0).unwrap().role, Role::Agent);

        let created = tokens.create("ops", "operator", 0).await.unwrap();
        assert!(created.turned_on && tokens.enabled());
        let v = tokens.create("v", "viewer", 60_000).await.unwrap();
        assert!(!v.turned_on);
        assert!(tokens.authenticate(Some(&bearer(&v.secret)), now_ms()).is_ok());
        let expired = tokens
            .authenticate(Some(&bearer(&v.secret)), now_ms() + 120_000)
            .unwrap_err();
        assert!(
            expired.message().starts_with("token refused: token \"v\" expired at "),
            "{expired:?}"
        );
        let no = tokens.authenticate(None, 0).unwrap_err();
        assert_eq!((no.code(), no.message()), (tonic::Code::Unauthenticated, NO_TOKEN));
        let unknown = tokens.authenticate(Some(&bearer("wkr_nope")), 0).unwrap_err();
        assert_eq!(unknown.message(), "token refused: unknown token");
        let ops = tokens.authenticate(Some(&bearer(&created.secret)), now_ms()).unwrap();
        assert_eq!((ops.name.as_str(), ops.role), ("ops", Role::Operator));
        let denied = ops.authorize("ControllerService/CreateToken").unwrap_err();
        assert_eq!(
            denied.message(),
            "token \"ops\" (role operator) may not call CreateToken; it needs admin"
        );
        assert!(ops.authorize("ControllerService/ApplyJobs").is_ok());

        // Streams: the limit (2 here) counts open streams and frees on drop.
        let (a, b) = (ops.open_stream().unwrap(), ops.open_stream().unwrap());
        let over = ops.open_stream().unwrap_err();
        assert_eq!(over.code(), tonic::Code::ResourceExhausted);
        assert!(over.message().contains("the limit is 2"), "{over:?}");
        drop((a, b));
        let _c = ops.open_stream().unwrap();

        let revoked = tokens.revoke("ops").await.unwrap();
        assert!(revoked.revoked_at().is_some());
        let ended = tokio::time::timeout(std::time::Duration::from_secs(1), ops.ended())
            .await
            .unwrap();
        assert!(ended.message().contains("\"ops\" was revoked"), "{ended:?}");
        let refused = tokens
            .authenticate(Some(&bearer(&created.secret)), now_ms())
            .unwrap_err();
        assert!(
            refused
                .message()
                .starts_with("token refused: token \"ops\" was revoked at "),
            "{refused:?}"
        );
        assert!(!refused.message().contains(&created.secret));
        tokens.revoke("v").await.unwrap();
        assert!(tokens.enabled(), "revoking every token keeps authentication on");
        let reloaded = tokens_in(&dir).await;
        assert!(reloaded.enabled());
        assert_eq!(reloaded.list().len(), 2);
        assert_eq!(
            tokens.create("ops", "viewer", 0).await.unwrap_err().code(),
            tonic::Code::AlreadyExists
        );
        assert_eq!(
            tokens.create("bootstrap", "admin", 0).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    /// The bootstrap file is the bootstrap token's source of truth, but a
    /// revoked bootstrap token stays revoked.
    #[tokio::test]
    async fn the_bootstrap_token_follows_its_file_and_stays_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = tokens_in(&dir).await;
        assert!(matches!(
            tokens.install_bootstrap(" short ").await,
            Err(BootstrapError::TooShort(5))
        ));
        tokens.install_bootstrap("first-secret-0123456789\n").await.unwrap();
        assert!(tokens.enabled());
        let admin = tokens
            .authenticate(Some(&bearer("first-secret-0123456789")), 0)
            .unwrap();
        assert_eq!((admin.name.as_str(), admin.role), (BOOTSTRAP_NAME, Role::Admin));
        let tokens = tokens_in(&dir).await;
        tokens.install_bootstrap("second-secret-0123456789").await.unwrap();
        assert!(
            tokens
                .authenticate(Some(&bearer("first-secret-0123456789")), 0)
                .is_err()
        );
        assert!(
            tokens
                .authenticate(Some(&bearer("second-secret-0123456789")), 0)
                .is_ok()
        );
        tokens.revoke(BOOTSTRAP_NAME).await.unwrap();
        let tokens = tokens_in(&dir).await;
        tokens.install_bootstrap("third-secret-0123456789").await.unwrap();
        let refused = tokens
            .authenticate(Some(&bearer("third-secret-0123456789")), 0)
            .unwrap_err();
        assert!(refused.message().contains("\"bootstrap\" was revoked"), "{refused:?}");
        assert_eq!(tokens.list().len(), 1);
    }

    #[test]
    fn names_follow_the_job_name_rules() {
        assert!(validate_name("ci-deploy.1_a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("Admin").unwrap_err().contains("invalid token name"));
        assert!(validate_name("a/../b").is_err());
        assert!(
            validate_name(&"a".repeat(129))
                .unwrap_err()
                .contains("129 bytes exceeds the limit token_name_bytes=128")
        );
    }
}
