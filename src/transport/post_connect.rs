//! What a new connection sends before it counts as CONNECTED, besides `SynchronizeState`
//! (avs-protocol.md §2.1): `Alexa.ApiGateway.VerifyGateway` when the gateway is new to us, then
//! `Alexa.Discovery.AddOrUpdateReport` when the report's checksum changed.
//!
//! Both go out in that order on the connection's event streams, each waiting only for its
//! response headers, so a slow cloud never holds back `SynchronizeState` or a dialog. The report
//! is then confirmed in the background: AVS answers `202` and later pushes
//! `Alexa.EventProcessed` with the report's eventCorrelationToken on the downchannel. Without it
//! within [`LinkTuning::discovery_wait`] the report is sent again after 1, 2, 4 … 256 s; `403`
//! refreshes the token first; `400` is a permanent refusal (logged, not retried until the report
//! changes or avsd restarts). The checksum is stored only once AVS confirmed it.

use std::path::PathBuf;
use std::time::Duration;

use avs_proto::Event;
use avs_proto::interfaces::{AnyObject, api_gateway};
use bytes::Bytes;
use h2::client::SendRequest;
use http::StatusCode;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use url::Url;

use super::backoff::{Backoff, random_unit};
use super::connection::{LinkCtx, wait_for_new_token, wait_for_token};
use super::events::{self, Delivery, StreamError};
use super::gateway::GatewayStore;
use crate::capabilities::{self, DeviceInfo};

/// Retry delays of an unconfirmed capabilities report (SDK: exponential up to 256 s).
pub const DISCOVERY_RETRY_TABLE: &[Duration] = &[
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
    Duration::from_secs(64),
    Duration::from_secs(128),
    Duration::from_secs(256),
];

/// Gateway persistence, VerifyGateway and capabilities publishing for a link.
#[derive(Clone)]
pub struct PostConnectConfig {
    /// Where `gateway.json` and `discovery.json` live (and `tokens.json` is read from, to tell
    /// accounts apart).
    pub state_dir: PathBuf,
    /// The device to publish; `None` sends no Discovery report.
    pub device: Option<DeviceInfo>,
    /// `true` while no dialog is active; a gateway move waits for it. `None`: never wait.
    pub dialog_idle: Option<watch::Receiver<bool>>,
}

/// What one connection's post-connect has to do.
pub(crate) struct Plan {
    /// Verify this gateway (the one connected to).
    pub verify: Option<Url>,
    pub discovery: Option<DiscoveryJob>,
    /// Told when `verify` was answered without an error status (with the account it was for).
    pub verified: Option<mpsc::Sender<(Url, String)>>,
    account: String,
}

impl Plan {
    pub(crate) fn none() -> Self {
        Self {
            verify: None,
            discovery: None,
            verified: None,
            account: String::new(),
        }
    }

    /// The plan for a connection to `store.current()`; `processed` receives the
    /// eventCorrelationTokens of `Alexa.EventProcessed` directives.
    pub(crate) fn for_connection(
        cfg: &PostConnectConfig,
        store: &GatewayStore,
        processed: mpsc::Receiver<String>,
        verified: mpsc::Sender<(Url, String)>,
        retry_table: &'static [Duration],
        wait: Duration,
    ) -> Self {
        let account = account(&cfg.state_dir);
        let discovery = cfg.device.as_ref().and_then(|info| {
            let checksum = capabilities::checksum(info, &account);
            if capabilities::stored_checksum(&cfg.state_dir).as_deref() == Some(checksum.as_str()) {
                return None;
            }
            Some(DiscoveryJob {
                info: info.clone(),
                state_dir: cfg.state_dir.clone(),
                checksum,
                processed,
                sent: Vec::new(),
                backoff: Backoff::new(retry_table),
                wait,
            })
        });
        Self {
            verify: store
                .needs_verify(&account)
                .then(|| store.current().clone()),
            discovery,
            verified: Some(verified),
            account,
        }
    }

    /// Sends VerifyGateway and the first report; the report's confirmation continues in
    /// `background`. `Err`: the connection is unusable.
    pub(crate) async fn run(
        self,
        ctx: &LinkCtx,
        send: &SendRequest<Bytes>,
        background: &mut JoinSet<()>,
    ) -> Result<(), StreamError> {
        if let Some(gateway) = self.verify {
            let verify = Event::new(
                api_gateway::NAMESPACE,
                &api_gateway::Event::VerifyGateway(AnyObject {}),
            );
            match events::deliver(ctx, send, &verify, background).await? {
                Delivery::Accepted => {
                    // A SetGateway in the answer moves us on anyway: the store ignores a
                    // confirmation for a gateway that is no longer the current one.
                    info!(%gateway, "VerifyGateway answered");
                    if let Some(tx) = &self.verified {
                        let _ = tx.send((gateway, self.account.clone())).await;
                    }
                }
                Delivery::GivenUp => {
                    warn!(%gateway, "VerifyGateway refused; trying again on the next connection")
                }
            }
        }
        if let Some(mut job) = self.discovery {
            let first = job.post(ctx, send).await?;
            let (ctx, send) = (ctx.clone(), send.clone());
            background.spawn(async move { job.confirm(&ctx, &send, first).await });
        }
        Ok(())
    }
}

/// The account currently logged in, as a hash (empty when no token file is readable, e.g. a
/// token given by hand).
fn account(state_dir: &std::path::Path) -> String {
    crate::auth::token_store::load(state_dir)
        .map(|t| capabilities::account_id(&t.refresh_token))
        .unwrap_or_default()
}

/// What AVS answered to one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Posted {
    /// `2xx`: wait for EventProcessed.
    Accepted,
    /// `403`, `429`, `5xx`: send it again later.
    Retry,
    /// `400` (or another `4xx`): the report itself is wrong.
    Refused,
}

/// Publishing one report until AVS confirms it.
pub(crate) struct DiscoveryJob {
    info: DeviceInfo,
    state_dir: PathBuf,
    checksum: String,
    processed: mpsc::Receiver<String>,
    /// eventCorrelationTokens of the reports sent on this connection; a late confirmation of
    /// an earlier (identical) report counts.
    sent: Vec<String>,
    backoff: Backoff,
    wait: Duration,
}

impl DiscoveryJob {
    async fn post(
        &mut self,
        ctx: &LinkCtx,
        send: &SendRequest<Bytes>,
    ) -> Result<Posted, StreamError> {
        let mut token_rx = ctx.auth.access_token();
        let token = wait_for_token(&mut token_rx).await;
        let event = capabilities::report_event(&self.info, token.secret());
        if let Some(t) = &event.header.event_correlation_token {
            if self.sent.len() >= 16 {
                self.sent.remove(0);
            }
            self.sent.push(t.clone());
        }
        let resp = events::post_event(ctx, send, &event, &token).await?;
        let status = resp.status();
        if status.is_success() {
            info!(%status, "capabilities report accepted; waiting for Alexa.EventProcessed");
            return Ok(Posted::Accepted);
        }
        let body = events::exception_text(resp).await;
        Ok(match status {
            StatusCode::FORBIDDEN => {
                info!("capabilities report refused with 403; refreshing the token");
                ctx.auth.refresh_now();
                if !wait_for_new_token(&mut token_rx, &token, ctx.tuning.token_wait).await {
                    warn!("no new token after a 403 on the capabilities report");
                }
                Posted::Retry
            }
            s if s.is_client_error() && s != StatusCode::TOO_MANY_REQUESTS => {
                error!(%status, %body, "AVS refused the capabilities report as invalid; it will not be sent again until it changes or avsd restarts");
                Posted::Refused
            }
            _ => {
                warn!(%status, %body, "capabilities report refused for now");
                Posted::Retry
            }
        })
    }

    /// Waits for the confirmation of the last report, re-sending with backoff until it comes.
    async fn confirm(mut self, ctx: &LinkCtx, send: &SendRequest<Bytes>, mut last: Posted) {
        loop {
            match last {
                Posted::Refused => return,
                Posted::Accepted => {
                    if self.wait_processed().await {
                        match capabilities::store_checksum(&self.state_dir, &self.checksum) {
                            Ok(()) => info!("capabilities published"),
                            Err(e) => {
                                warn!(error = %e, "capabilities published but not recorded; they will be sent again next time")
                            }
                        }
                        return;
                    }
                    info!(wait = ?self.wait, "no Alexa.EventProcessed for the capabilities report");
                }
                Posted::Retry => {}
            }
            let delay = self.backoff.on_failure(random_unit());
            info!(
                ?delay,
                attempt = self.backoff.failures(),
                "sending the capabilities report again"
            );
            tokio::time::sleep(delay).await;
            last = match self.post(ctx, send).await {
                Ok(p) => p,
                // The connection is going; the next one starts over.
                Err(_) => return,
            };
        }
    }

    async fn wait_processed(&mut self) -> bool {
        let sent = &self.sent;
        let processed = &mut self.processed;
        let wait = async {
            while let Some(token) = processed.recv().await {
                if sent.contains(&token) {
                    return true;
                }
            }
            std::future::pending::<bool>().await
        };
        tokio::time::timeout(self.wait, wait).await.unwrap_or(false)
    }
}
