//! Liveness: `GET /ping` once the connection has carried no traffic for `ping_idle`, and a
//! verdict on the answer. A ping that takes longer than `ping_timeout`, or any answer but
//! `204`, ends the connection (AVS §2.3); a `403` also asks for a token refresh.

use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{Method, StatusCode};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::connection::{LinkCtx, wait_for_token};
use super::events::{StreamError, request};

/// Why the ping loop gave up on the connection.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("ping unanswered within {0:?}")]
    Timeout(Duration),
    #[error("ping answered {0} instead of 204")]
    Status(StatusCode),
    #[error("ping failed: {0}")]
    Stream(#[from] StreamError),
}

/// Runs until the connection looks dead; returns why.
pub(crate) async fn ping_loop(ctx: LinkCtx, send: SendRequest<Bytes>) -> PingError {
    loop {
        let due = ctx.activity.last() + ctx.ping_idle;
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
            continue;
        }
        debug!("connection idle; sending a ping");
        let timeout = ctx.ping_timeout;
        let started = Instant::now();
        match tokio::time::timeout(timeout, ping_once(&ctx, &send)).await {
            Err(_) => return PingError::Timeout(timeout),
            Ok(Err(e)) => return PingError::Stream(e),
            Ok(Ok(StatusCode::NO_CONTENT)) => {
                debug!(rtt = ?started.elapsed(), "ping answered");
                ctx.activity.touch();
            }
            Ok(Ok(status)) => {
                if status == StatusCode::FORBIDDEN {
                    ctx.auth.refresh_now();
                }
                warn!(%status, "unexpected ping answer");
                return PingError::Status(status);
            }
        }
    }
}

async fn ping_once(ctx: &LinkCtx, send: &SendRequest<Bytes>) -> Result<StatusCode, StreamError> {
    let mut token_rx = ctx.auth.access_token();
    let token = wait_for_token(&mut token_rx).await;
    let req = request(ctx, Method::GET, avs_proto::PING_PATH, &token, None);
    let mut ready = send.clone().ready().await?;
    let (resp, _) = ready.send_request(req, true)?;
    let resp = resp.await?;
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}
