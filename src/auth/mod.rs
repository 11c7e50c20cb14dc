//! Login with Amazon for avsd: code-based linking (`avsd login`), the token file, and the auth
//! task that keeps a fresh access token published on a watch channel for the transport.
//!
//! - [`login`] runs code-based linking to completion and writes `<state_dir>/tokens.json`.
//! - [`spawn_auth`] loads that file and returns an [`AuthHandle`] plus the task future; the task
//!   refreshes ahead of expiry and on [`AuthHandle::refresh_now`] (the transport calls it after a
//!   `403`), retries with the §8.2 delays, and moves to [`AuthState::NeedsLogin`] when LWA says
//!   the grant is gone. In NeedsLogin it watches for the token file a new `avsd login` writes
//!   (a `stat` every [`RELOGIN_POLL`]) and carries on with it: no restart needed.
//! - Tokens never reach a log: [`AccessToken`]'s `Debug` and `Display` redact it.
//!
//! Not owned here: what the transport does with a `403` (it decides when to call `refresh_now`).

pub mod lwa;
pub mod token_store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

use crate::transport::backoff::{Backoff, REFRESH_RETRY_TABLE, random_unit};
use lwa::{LwaClient, LwaError};
use token_store::{StoredTokens, TokenStoreError};

/// Refresh this long before expiry (AVS §8.2) when the lifetime allows it.
pub const REFRESH_LEAD: Duration = Duration::from_secs(600);
/// Slowest polling interval after repeated `slow_down` answers.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// How often the token file is looked for while the login is gone.
pub const RELOGIN_POLL: Duration = Duration::from_secs(1);
/// Fastest polling interval we accept from a server.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What login and the auth task need to know.
#[derive(Clone)]
pub struct AuthConfig {
    /// `https://api.amazon.com` (or avs-sim's LWA stub).
    pub lwa_base_url: Url,
    pub client_id: String,
    pub product_id: String,
    pub device_serial_number: String,
    pub state_dir: PathBuf,
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("lwa_base_url", &self.lwa_base_url.as_str())
            .field("client_id", &self.client_id)
            .field("product_id", &self.product_id)
            .field("device_serial_number", &self.device_serial_number)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// What the user must do to link the device: visit `verification_uri` and enter `user_code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodePair {
    pub user_code: String,
    pub verification_uri: String,
    pub expires_in: Duration,
    pub interval: Duration,
}

/// Why login, logout or the auth task failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    TokenStore(#[from] TokenStoreError),
    #[error("cannot build the HTTP client for Login with Amazon: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("Login with Amazon refused the device: {0}")]
    Lwa(#[source] LwaError),
    #[error("login cancelled")]
    Cancelled,
}

impl AuthError {
    /// True when the user has to run `avsd login` (again).
    pub fn requires_relogin(&self) -> bool {
        matches!(
            self,
            Self::TokenStore(
                TokenStoreError::Missing { .. }
                    | TokenStoreError::Corrupt { .. }
                    | TokenStoreError::Read { .. }
            ) | Self::Lwa(LwaError::InvalidGrant { .. })
        )
    }
}

/// An LWA access token. The string never appears in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the few payloads that carry it (the Discovery report's scope).
    /// Never log it.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The `authorization` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl std::fmt::Display for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted access token>")
    }
}

/// What the auth task is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthState {
    /// A token is published and not due for refresh.
    Authorized,
    /// A refresh request is in flight.
    Refreshing,
    /// The last refresh failed transiently; the next try is after `delay`.
    RetryingRefresh { attempt: u32, delay: Duration },
    /// LWA rejected the refresh token (or it is gone): run `avsd login`.
    NeedsLogin,
}

enum AuthCommand {
    RefreshNow,
}

/// Cheap handle on the auth task.
#[derive(Clone)]
pub struct AuthHandle {
    token: watch::Receiver<Option<AccessToken>>,
    state: watch::Receiver<AuthState>,
    commands: mpsc::Sender<AuthCommand>,
}

impl AuthHandle {
    /// The current access token (`None` while there is none worth using).
    pub fn access_token(&self) -> watch::Receiver<Option<AccessToken>> {
        self.token.clone()
    }

    /// Asks for a refresh now (after a `403`). Requests made while one is pending coalesce.
    pub fn refresh_now(&self) {
        let _ = self.commands.try_send(AuthCommand::RefreshNow);
    }

    pub fn state(&self) -> watch::Receiver<AuthState> {
        self.state.clone()
    }

    /// A handle whose token the caller controls (tests and benches of the transport that run
    /// without an LWA server).
    pub fn manual(token: Option<AccessToken>) -> (Self, ManualAuth) {
        let (token_tx, token) = watch::channel(token);
        let (state_tx, state) = watch::channel(AuthState::Authorized);
        let (commands, refresh_requests) = mpsc::channel(1);
        (
            Self {
                token,
                state,
                commands,
            },
            ManualAuth {
                token: token_tx,
                state: state_tx,
                refresh_requests,
            },
        )
    }
}

/// The controlling side of [`AuthHandle::manual`].
pub struct ManualAuth {
    pub token: watch::Sender<Option<AccessToken>>,
    pub state: watch::Sender<AuthState>,
    refresh_requests: mpsc::Receiver<AuthCommand>,
}

impl ManualAuth {
    /// Waits for the next `refresh_now()`; `false` once every handle is gone.
    pub async fn refresh_requested(&mut self) -> bool {
        self.refresh_requests.recv().await.is_some()
    }
}

/// True when a token file exists in `state_dir`.
pub fn has_tokens(state_dir: &Path) -> bool {
    token_store::token_path(state_dir).is_file()
}

/// Forgets the tokens.
/// Removes the tokens and the account's unsent events, so a different account logged in later
/// never receives the previous account's events.
pub fn logout(state_dir: &Path) -> Result<(), AuthError> {
    token_store::remove(state_dir)?;
    let outbox = state_dir.join(crate::transport::outbox::store::OUTBOX_FILE);
    match std::fs::remove_file(&outbox) {
        Ok(()) => {
            tracing::info!(path = %outbox.display(), "unsent events of the old account removed")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %outbox.display(), error = %e, "could not remove unsent events")
        }
    }
    Ok(())
}

/// How long before expiry to refresh: 10 minutes, or a quarter of lifetimes shorter than 40 min.
pub fn refresh_lead(lifetime: Duration) -> Duration {
    REFRESH_LEAD.min(lifetime / 4)
}

/// Code-based linking (AVS §8.1): shows each code pair through `on_code`, polls honouring
/// `interval`, `slow_down` (interval doubled up to 60 s) and `authorization_pending`, starts over
/// with a new code pair when the old one expires, and stores the tokens. Transient failures are
/// retried; configuration errors end the login.
pub async fn login(cfg: &AuthConfig, mut on_code: impl FnMut(&CodePair)) -> Result<(), AuthError> {
    let client = LwaClient::new(&cfg.lwa_base_url, &cfg.client_id, &cfg.tls)
        .map_err(AuthError::HttpClient)?;
    let mut retry = Backoff::new(REFRESH_RETRY_TABLE);
    loop {
        let pair = match client
            .create_code_pair(&cfg.product_id, &cfg.device_serial_number)
            .await
        {
            Ok(p) => {
                retry.reset();
                p
            }
            Err(e) if e.is_transient() => {
                let delay = retry
                    .on_failure(random_unit())
                    .max(Duration::from_millis(500));
                warn!(error = %e, ?delay, "cannot get a code pair; retrying");
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(e) => return Err(AuthError::Lwa(e)),
        };
        let expires_in = Duration::from_secs(pair.expires_in);
        let mut interval = Duration::from_secs(pair.interval).max(MIN_POLL_INTERVAL);
        on_code(&CodePair {
            user_code: pair.user_code.clone(),
            verification_uri: pair.verification_uri.clone(),
            expires_in,
            interval,
        });
        info!(user_code = %pair.user_code, uri = %pair.verification_uri, ?expires_in, "waiting for the user to enter the code");
        let deadline = Instant::now() + expires_in;
        loop {
            let next = Instant::now() + interval;
            if next >= deadline {
                tokio::time::sleep_until(deadline).await;
                info!("code pair expired; requesting a new one");
                break;
            }
            tokio::time::sleep_until(next).await;
            match client.poll_token(&pair.device_code, &pair.user_code).await {
                Ok(tokens) => {
                    let Some(refresh) = tokens.refresh_token.clone() else {
                        return Err(AuthError::Lwa(LwaError::Transient(
                            "token answer without refresh_token".into(),
                        )));
                    };
                    let stored = StoredTokens::issued(
                        tokens.access_token,
                        refresh,
                        Duration::from_secs(tokens.expires_in),
                        SystemTime::now(),
                    );
                    token_store::save(&cfg.state_dir, &stored)?;
                    info!(path = %token_store::token_path(&cfg.state_dir).display(), "device linked; tokens stored");
                    return Ok(());
                }
                Err(LwaError::Pending) => {}
                Err(LwaError::SlowDown) => {
                    interval = (interval * 2).min(MAX_POLL_INTERVAL);
                    info!(?interval, "LWA asked to slow down");
                }
                Err(LwaError::CodePairExpired(why)) => {
                    info!(%why, "code pair no longer valid; requesting a new one");
                    break;
                }
                Err(LwaError::InvalidGrant { error, .. }) => {
                    info!(%error, "grant rejected; restarting code-based linking");
                    break;
                }
                Err(e @ LwaError::Config { .. }) => return Err(AuthError::Lwa(e)),
                Err(e @ LwaError::Transient(_)) => {
                    warn!(error = %e, "token poll failed; polling again")
                }
            }
        }
    }
}

/// Loads the token file and returns the handle plus the auth task. The task publishes the token
/// at once (if unexpired), refreshes ahead of expiry and on demand, and ends on `shutdown`.
pub fn spawn_auth(
    cfg: AuthConfig,
    shutdown: CancellationToken,
) -> Result<
    (
        AuthHandle,
        impl std::future::Future<Output = ()> + Send + 'static,
    ),
    AuthError,
> {
    let tokens = token_store::load(&cfg.state_dir)?;
    let client = LwaClient::new(&cfg.lwa_base_url, &cfg.client_id, &cfg.tls)
        .map_err(AuthError::HttpClient)?;
    let now = SystemTime::now();
    let initial = (tokens.remaining(now) > Duration::ZERO)
        .then(|| AccessToken::new(tokens.access_token.clone()));
    let (token_tx, token_rx) = watch::channel(initial);
    let (state_tx, state_rx) = watch::channel(AuthState::Authorized);
    let (cmd_tx, cmd_rx) = mpsc::channel(1);
    let task = AuthTask {
        cfg,
        client,
        tokens,
        token_tx,
        state_tx,
        commands: cmd_rx,
        retry: Backoff::new(REFRESH_RETRY_TABLE),
    };
    let handle = AuthHandle {
        token: token_rx,
        state: state_rx,
        commands: cmd_tx,
    };
    Ok((handle, task.run(shutdown)))
}

struct AuthTask {
    cfg: AuthConfig,
    client: LwaClient,
    tokens: StoredTokens,
    token_tx: watch::Sender<Option<AccessToken>>,
    state_tx: watch::Sender<AuthState>,
    commands: mpsc::Receiver<AuthCommand>,
    retry: Backoff,
}

enum Wake {
    Shutdown,
    Refresh,
}

impl AuthTask {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let due = self.refresh_due();
            let wake = tokio::select! {
                _ = shutdown.cancelled() => Wake::Shutdown,
                _ = tokio::time::sleep_until(due) => Wake::Refresh,
                cmd = self.commands.recv() => match cmd {
                    Some(AuthCommand::RefreshNow) => Wake::Refresh,
                    None => Wake::Shutdown,
                },
            };
            match wake {
                Wake::Shutdown => return,
                Wake::Refresh => {
                    if !self.refresh_until_done(&shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    fn refresh_due(&self) -> Instant {
        let lead = refresh_lead(Duration::from_secs(self.tokens.lifetime_s));
        let remaining = self.tokens.remaining(SystemTime::now());
        Instant::now() + remaining.saturating_sub(lead)
    }

    /// Refreshes, retrying transient failures. Returns false when the task should end
    /// (shutdown, or the login is gone and only `avsd login` can help).
    async fn refresh_until_done(&mut self, shutdown: &CancellationToken) -> bool {
        loop {
            self.state_tx.send_replace(AuthState::Refreshing);
            let result = tokio::select! {
                _ = shutdown.cancelled() => return false,
                r = self.client.refresh(&self.tokens.refresh_token) => r,
            };
            match result {
                Ok(resp) => {
                    let refresh = resp
                        .refresh_token
                        .unwrap_or_else(|| self.tokens.refresh_token.clone());
                    let lifetime = Duration::from_secs(resp.expires_in);
                    self.tokens = StoredTokens::issued(
                        resp.access_token,
                        refresh,
                        lifetime,
                        SystemTime::now(),
                    );
                    if let Err(e) = token_store::save(&self.cfg.state_dir, &self.tokens) {
                        // The fresh token still works in memory; only a restart would miss it.
                        warn!(error = %e, "refreshed the access token but could not store it");
                    }
                    self.retry.reset();
                    // State first: whoever wakes on the new token then sees Authorized.
                    self.state_tx.send_replace(AuthState::Authorized);
                    self.token_tx
                        .send_replace(Some(AccessToken::new(self.tokens.access_token.clone())));
                    info!(?lifetime, "access token refreshed");
                    return true;
                }
                Err(LwaError::InvalidGrant { error, .. }) => {
                    warn!(%error, "LWA rejected the refresh token; run `avsd login` again");
                    if let Err(e) = token_store::remove(&self.cfg.state_dir) {
                        warn!(error = %e, "cannot remove the rejected token file");
                    }
                    self.token_tx.send_replace(None);
                    self.state_tx.send_replace(AuthState::NeedsLogin);
                    let rejected = self.tokens.refresh_token.clone();
                    let Some(tokens) = self.wait_for_login(&rejected, shutdown).await else {
                        return false;
                    };
                    info!("new login found; using it");
                    self.tokens = tokens;
                    self.retry.reset();
                    if self.tokens.remaining(SystemTime::now()) > Duration::ZERO {
                        self.state_tx.send_replace(AuthState::Authorized);
                        self.token_tx
                            .send_replace(Some(AccessToken::new(self.tokens.access_token.clone())));
                        return true;
                    }
                    // Already expired: refresh it (next turn of this loop).
                }
                Err(e) => {
                    let delay = self.retry.on_failure(random_unit());
                    let attempt = self.retry.failures();
                    warn!(error = %e, attempt, ?delay, "token refresh failed; retrying");
                    if self.tokens.remaining(SystemTime::now()).is_zero() {
                        self.token_tx.send_if_modified(|t| t.take().is_some());
                    }
                    self.state_tx
                        .send_replace(AuthState::RetryingRefresh { attempt, delay });
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

impl AuthTask {
    /// Waits (in NeedsLogin) until a token file with a refresh token other than `rejected`
    /// appears, looking every [`RELOGIN_POLL`] (one `stat`; `avsd login` runs as another process,
    /// possibly as another user, and writes the file atomically). Refresh requests meanwhile are
    /// moot: there is nothing to refresh with. `None` on shutdown.
    async fn wait_for_login(
        &mut self,
        rejected: &str,
        shutdown: &CancellationToken,
    ) -> Option<StoredTokens> {
        let mut reported: Option<String> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(RELOGIN_POLL) => {}
                cmd = self.commands.recv() => if cmd.is_none() {
                    shutdown.cancelled().await;
                    return None;
                },
            }
            if !has_tokens(&self.cfg.state_dir) {
                continue;
            }
            match token_store::load(&self.cfg.state_dir) {
                Ok(t) if t.refresh_token != rejected => return Some(t),
                Ok(_) => {}
                Err(e) => {
                    // `avsd login` writes atomically, so this is a damaged file: say so once.
                    let text = e.to_string();
                    if reported.as_deref() != Some(text.as_str()) {
                        warn!(error = %text, "token file unusable; still waiting for `avsd login`");
                        reported = Some(text);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_lead_is_ten_minutes_or_a_quarter_of_short_lifetimes() {
        assert_eq!(
            refresh_lead(Duration::from_secs(3600)),
            Duration::from_secs(600)
        );
        assert_eq!(
            refresh_lead(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn access_token_is_redacted() {
        let t = AccessToken::new("Atza|very-secret");
        assert!(!format!("{t:?}").contains("secret"));
        assert!(!format!("{t}").contains("secret"));
        assert_eq!(t.bearer(), "Bearer Atza|very-secret");
    }

    #[test]
    fn logout_removes_tokens_and_unsent_events_but_not_other_state() {
        let dir = std::env::temp_dir().join(format!("avsd-logout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = dir.join(token_store::TOKEN_FILE);
        let outbox = dir.join(crate::transport::outbox::store::OUTBOX_FILE);
        let volume = dir.join("speaker.json");
        for f in [&tokens, &outbox, &volume] {
            std::fs::write(f, b"{}").unwrap();
        }
        logout(&dir).unwrap();
        assert!(!tokens.exists());
        assert!(!outbox.exists());
        assert!(volume.exists());
        // Nothing to remove is not an error.
        logout(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
