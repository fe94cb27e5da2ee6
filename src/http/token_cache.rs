//! An access-token cache for one credential: one token request in flight however many tasks
//! ask, proactive renewal when `min(5 min, 20 % of the lifetime)` remains, and invalidation
//! of exactly the token a 401 was answered to. Whatever lifetime a partner states is taken
//! within [`MIN_LIFETIME`] and [`MAX_LIFETIME`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::SecretString;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// What a token endpoint handed out.
pub struct IssuedToken {
    pub secret: SecretString,
    pub lifetime: Duration,
}

/// Why no token could be had. Every variant is final for the run: retrying transient failures
/// already happened inside the HTTP stack.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "{partner} rejected the client credentials (check {settings_prefix}.client_id and {settings_prefix}.client_secret): {detail}"
    )]
    CredentialsRejected {
        partner: &'static str,
        settings_prefix: &'static str,
        detail: String,
    },
    #[error(
        "{partner} refused the requested scopes [{scopes}] (set {settings_prefix}.scopes to what the partner grants this client): {detail}"
    )]
    ScopeRejected {
        partner: &'static str,
        settings_prefix: &'static str,
        scopes: String,
        detail: String,
    },
    #[error(transparent)]
    Http(#[from] super::HttpError),
}

/// Fetches a fresh token; implemented per partner (client credentials, impersonation, …).
pub trait TokenSource: Send + Sync {
    fn fetch(&self) -> BoxFuture<'_, Result<IssuedToken, AuthError>>;
}

/// A token handed to a caller. `generation` identifies it so a 401 invalidates only this one.
#[derive(Clone)]
pub struct AccessToken {
    secret: SecretString,
    generation: u64,
    lifetime: Duration,
    renew_at: Instant,
    expires_at: Instant,
}

impl AccessToken {
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }

    /// The lifetime the cache works with: the one issued, kept between [`MIN_LIFETIME`] and
    /// [`MAX_LIFETIME`].
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

/// The shortest lifetime a token is taken to have. A partner that says `expires_in: 0` (or a
/// negative number) would otherwise make every call fetch a new token; with this floor that
/// is at most one token request a second, and a 401 still renews a token that died sooner.
pub const MIN_LIFETIME: Duration = Duration::from_secs(1);
/// The longest lifetime a token is taken to have: a day, well above what RABOT (1 hour) and
/// EnergyZero (5 minutes, 1 hour) document. Beyond it a token is renewed anyway, and no
/// `expires_in` however large can overflow the clock arithmetic.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// `lifetime` kept between [`MIN_LIFETIME`] and [`MAX_LIFETIME`].
pub fn bounded_lifetime(lifetime: Duration) -> Duration {
    lifetime.clamp(MIN_LIFETIME, MAX_LIFETIME)
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// How soon a failed proactive renewal is tried again.
const RENEWAL_RETRY: Duration = Duration::from_secs(15);

/// How long before expiry a token is renewed: `min(5 min, 20 % of its lifetime)`.
pub fn renewal_margin(lifetime: Duration) -> Duration {
    Duration::from_secs(300).min(lifetime / 5)
}

pub struct TokenCache {
    source: Box<dyn TokenSource>,
    /// Held across the fetch: that is what makes concurrent callers share one token request.
    current: Mutex<Option<AccessToken>>,
    generations: AtomicU64,
    requests: Arc<AtomicU64>,
    /// Labels the token-request metric.
    partner: &'static str,
}

impl TokenCache {
    pub fn new(partner: &'static str, source: impl TokenSource + 'static) -> Self {
        Self {
            partner,
            source: Box::new(source),
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            requests: Arc::default(),
        }
    }

    /// Token requests made so far (for metrics and tests).
    pub fn token_requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A token that is valid now, fetched only when none is cached or renewal is due.
    pub async fn token(&self) -> Result<AccessToken, AuthError> {
        let mut current = self.current.lock().await;
        let now = Instant::now();
        if let Some(token) = current.as_ref().filter(|t| now < t.renew_at) {
            return Ok(token.clone());
        }

        let requested_at = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        crate::metrics::token_requested(self.partner);
        match self.source.fetch().await {
            Ok(issued) => {
                let lifetime = bounded_lifetime(issued.lifetime);
                if lifetime != issued.lifetime {
                    tracing::warn!(
                        stated_s = issued.lifetime.as_secs_f64(),
                        used_s = lifetime.as_secs(),
                        "token lifetime outside 1 s to 24 h; using the nearest bound"
                    );
                }
                // Measured from when we asked, so network time never makes us overestimate.
                let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
                let token = AccessToken {
                    secret: issued.secret,
                    generation,
                    lifetime,
                    renew_at: requested_at + lifetime - renewal_margin(lifetime),
                    expires_at: requested_at + lifetime,
                };
                tracing::info!(
                    generation,
                    lifetime_s = lifetime.as_secs(),
                    "obtained access token"
                );
                *current = Some(token.clone());
                Ok(token)
            }
            // A renewal that fails transiently while the old token is still valid is not yet a
            // problem: keep using it and try again a little later (not on every call).
            Err(AuthError::Http(error)) => {
                let now = Instant::now();
                match current.as_mut().filter(|t| now < t.expires_at) {
                    Some(still_valid) => {
                        still_valid.renew_at =
                            now + RENEWAL_RETRY.min((still_valid.expires_at - now) / 2);
                        tracing::warn!(error = %error, "token renewal failed; using the current token meanwhile");
                        Ok(still_valid.clone())
                    }
                    None => Err(AuthError::Http(error)),
                }
            }
            // Rejected credentials or scopes are final: no retry loop.
            Err(error) => Err(error),
        }
    }

    /// Drops `rejected` if it is still the cached token; a newer token fetched by another
    /// task in the meantime is kept.
    pub async fn invalidate(&self, rejected: &AccessToken) {
        let mut current = self.current.lock().await;
        if current
            .as_ref()
            .is_some_and(|t| t.generation == rejected.generation)
        {
            tracing::info!(
                generation = rejected.generation,
                "access token rejected; dropping it"
            );
            *current = None;
        }
    }
}
