//! The HTTP client of one `http` attempt: TLS, redirects, and timing of the
//! connections it opens.
//!
//! # TLS
//!
//! rustls with the *ring* provider, configured here and handed to reqwest
//! (whose `rustls-no-provider` build brings no crypto of its own, so no
//! aws-lc). Trusted: the system's CA certificates (`rustls-native-certs`:
//! `/etc/ssl/certs` and friends, `SSL_CERT_FILE` / `SSL_CERT_DIR`), or the
//! Mozilla roots compiled in (`webpki-roots`) when the system has none, plus
//! every certificate of the agent's `--http-ca` file. The system store is read
//! once per process; `--http-ca` is read and checked when the agent starts, so
//! a bad file stops it before it connects.
//!
//! # One client per attempt
//!
//! Each attempt builds its own client (cheap: the TLS configuration is built
//! once and shared): its redirect limit and its refusal of cross-origin
//! redirects are per job, and a fresh connection per attempt makes the
//! `connect` span mean the same thing every time (TCP and TLS to the job's
//! host, not "whatever the pool had"). The cost is a handshake per attempt,
//! which a job that runs every few seconds at most can afford. A connector
//! layer ([`ConnectTimer`]) records how long each new connection took.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use reqwest::redirect;
use rustls::RootCertStore;
use tokio::time::Instant;

use crate::config::EnvPattern;
use crate::{AgentConfig, AgentError};

/// What every `http` attempt of an agent shares: the variables header values
/// may read and the TLS configuration. Cheap to clone.
#[derive(Clone)]
pub struct HttpSettings(Arc<Inner>);

struct Inner {
    allow_env: Vec<EnvPattern>,
    /// The system's roots plus `--http-ca`, built on the first `http`
    /// attempt: reading the system's certificates takes tens of
    /// milliseconds that an agent running no `http` job never pays.
    tls: OnceLock<rustls::ClientConfig>,
    /// The certificates of `--http-ca` (checked at start-up).
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// How many `--http-ca` holds.
    extra_cas: usize,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("allow_env", &self.0.allow_env)
            .field("extra_cas", &self.0.extra_cas)
            .finish_non_exhaustive()
    }
}

impl Default for HttpSettings {
    /// The system's roots, no extra CA, no variable allowed.
    fn default() -> Self {
        HttpSettings::new(Vec::new(), None).expect("the system roots alone always make a TLS configuration")
    }
}

impl HttpSettings {
    /// The settings of `config` (`--allow-env`, `--http-ca`).
    ///
    /// # Errors
    ///
    /// [`AgentError::Config`] naming `--http-ca` and the file when it cannot
    /// be read or holds no usable CA certificate.
    pub fn from_config(config: &AgentConfig) -> Result<Self, AgentError> {
        HttpSettings::new(config.allow_env.clone(), config.http_ca.as_deref())
    }

    /// Settings allowing `allow_env`, trusting the system's roots and the
    /// certificates of the PEM file `extra_ca`.
    ///
    /// # Errors
    ///
    /// As [`HttpSettings::from_config`].
    pub fn new(allow_env: Vec<EnvPattern>, extra_ca: Option<&Path>) -> Result<Self, AgentError> {
        let mut extra = Vec::new();
        if let Some(path) = extra_ca {
            let certs = crate::tls::load_certs("--http-ca", path).map_err(|e| AgentError::Config(e.to_string()))?;
            // Checked now, so that a bad file stops the agent before it connects.
            let mut check = RootCertStore::empty();
            for (i, cert) in certs.certs.into_iter().enumerate() {
                check.add(cert.clone()).map_err(|e| {
                    AgentError::Config(format!(
                        "--http-ca {}: certificate {} cannot be a trust anchor: {e}",
                        path.display(),
                        i + 1
                    ))
                })?;
                extra.push(cert);
            }
        }
        Ok(HttpSettings(Arc::new(Inner {
            allow_env,
            tls: OnceLock::new(),
            extra_cas: extra.len(),
            extra,
        })))
    }

    /// The TLS configuration of `http` attempts (built on first use); the
    /// `backup` builtin's S3 client and `workerctl backup` use it too.
    pub fn tls(&self) -> &rustls::ClientConfig {
        self.0.tls.get_or_init(|| {
            let mut roots = system_roots().clone();
            for cert in &self.0.extra {
                // Each was added to a store at start-up already.
                let _ = roots.add(cert.clone());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            tls
        })
    }

    /// The variables `${VAR}` in header values may read.
    pub fn allow_env(&self) -> &[EnvPattern] {
        &self.0.allow_env
    }
}

/// The system's CA certificates, or the Mozilla roots when it has none (read
/// once per process).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "reading the system's CA certificates");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::debug!(ignored, "system CA certificates that could not be used");
        }
        if added == 0 {
            tracing::info!("no CA certificates found on the system; http jobs trust the built-in Mozilla roots");
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    })
}

/// What an attempt's client tells the executor after the fact.
#[derive(Debug, Default)]
pub struct Trace {
    /// How long each new connection took (TCP and TLS), in order.
    connects: Mutex<Vec<Duration>>,
    /// Why a redirect was refused, when one was (the message of the failure).
    refused_redirect: Mutex<Option<String>>,
    /// A redirect was not followed because `max_redirects` were.
    redirect_limit_hit: AtomicBool,
}

impl Trace {
    /// The connections' durations so far.
    pub fn connects(&self) -> Vec<Duration> {
        self.connects.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The message of a refused redirect, if any.
    pub fn refused_redirect(&self) -> Option<String> {
        self.refused_redirect.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the redirect limit stopped a redirect.
    pub fn redirect_limit_hit(&self) -> bool {
        self.redirect_limit_hit.load(Ordering::Acquire)
    }
}

/// The client of one attempt: follows at most `max_redirects` (a further
/// redirect is the answer), refuses cross-origin redirects when `secrets`
/// (the request carries interpolated headers), and reports into `trace`.
pub fn build(
    settings: &HttpSettings,
    max_redirects: u32,
    secrets: bool,
    trace: Arc<Trace>,
) -> Result<reqwest::Client, reqwest::Error> {
    let policy_trace = trace.clone();
    let policy = redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max_redirects as usize {
            policy_trace.redirect_limit_hit.store(true, Ordering::Release);
            return attempt.stop();
        }
        let from = attempt.previous().last().cloned();
        if secrets
            && let Some(from) = from
            && from.origin() != attempt.url().origin()
        {
            let message = format!(
                "redirect from {} to {} not followed: the request's headers hold ${{VAR}} values, \
                 which are sent only to the origin the job names",
                super::describe(&from),
                super::describe(attempt.url())
            );
            *policy_trace.refused_redirect.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.clone());
            return attempt.error(message);
        }
        attempt.follow()
    });
    reqwest::Client::builder()
        .tls_backend_preconfigured(settings.tls().clone())
        .user_agent(concat!("worker-agent/", env!("CARGO_PKG_VERSION")))
        .redirect(policy)
        // A followed redirect must not carry the job's URL (its query may hold a key).
        .referer(false)
        .connector_layer(ConnectTimer { trace })
        .build()
}

/// A connector layer that records how long each new connection takes.
#[derive(Clone)]
struct ConnectTimer {
    trace: Arc<Trace>,
}

impl<S> tower_layer::Layer<S> for ConnectTimer {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed {
            inner,
            trace: self.trace.clone(),
        }
    }
}

/// The connector of [`ConnectTimer`].
#[derive(Clone)]
struct Timed<S> {
    inner: S,
    trace: Arc<Trace>,
}

impl<S, R> tower_service::Service<R> for Timed<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let started = Instant::now();
        let connecting = self.inner.call(request);
        let trace = self.trace.clone();
        Box::pin(async move {
            let connected = connecting.await;
            if connected.is_ok() {
                trace
                    .connects
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(started.elapsed());
            }
            connected
        })
    }
}
