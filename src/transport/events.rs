//! Posting events: each on its own HTTP/2 stream with a streamed `multipart/form-data` body
//! written only as flow control grants capacity (`reserve_capacity` → `poll_capacity` →
//! `send_data`), never buffered without bound. Owns the per-event retry policy: `403` → one
//! retry with a refreshed token, `429`/`5xx` → retries with backoff, other `4xx` → given up.
//! A `Recognize` streams its audio part live while its response is read.

use std::future::poll_fn;
use std::time::Duration;

use avs_proto::Event;
use avs_proto::multipart::FormDataWriter;
use bytes::Bytes;
use h2::SendStream;
use h2::client::{ResponseFuture, SendRequest};
use http::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::backoff::{Backoff, RECONNECT_TABLE, random_unit};
use super::connection::{LinkCtx, wait_for_new_token, wait_for_token};
use super::downchannel::read_parts;
use super::outbox::{RecognizeRequest, ResponseOutcome};
use crate::auth::AccessToken;

/// A stream-level failure.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    H2(#[from] h2::Error),
    #[error("the stream was closed by the peer")]
    Closed,
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

impl StreamError {
    /// The server sent GOAWAY: open a new connection and carry on there.
    pub fn is_go_away(&self) -> bool {
        matches!(self, Self::H2(e) if e.is_go_away())
    }
}

/// Builds a request for `path` on the endpoint with the bearer token.
pub(crate) fn request(
    ctx: &LinkCtx,
    method: Method,
    path: &str,
    token: &AccessToken,
    content_type: Option<&str>,
) -> Request<()> {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("{}{path}", ctx.origin))
        .header(http::header::AUTHORIZATION, token.bearer());
    if let Some(ct) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    // Only static, valid parts go in; an error here would be a bug in the endpoint URL check.
    builder.body(()).unwrap_or_default()
}

/// Writes `data` honouring flow control; `eos` ends the stream with the last byte.
pub(crate) async fn send_all(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    eos: bool,
) -> Result<(), StreamError> {
    if data.is_empty() {
        if eos {
            stream.send_data(Bytes::new(), true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| stream.poll_capacity(cx)).await {
            None => return Err(StreamError::Closed),
            Some(r) => r?,
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        stream.send_data(chunk, eos && data.is_empty())?;
    }
    Ok(())
}

/// Opens a POST /events stream.
async fn open_event_stream(
    ctx: &LinkCtx,
    send: &SendRequest<Bytes>,
    token: &AccessToken,
    writer: &FormDataWriter,
) -> Result<(ResponseFuture, SendStream<Bytes>), StreamError> {
    let req = request(
        ctx,
        Method::POST,
        avs_proto::EVENTS_PATH,
        token,
        Some(&writer.content_type()),
    );
    let mut ready = send.clone().ready().await?;
    Ok(ready.send_request(req, false)?)
}

/// Sends one metadata-only event and waits for its response headers.
pub(crate) async fn post_event(
    ctx: &LinkCtx,
    send: &SendRequest<Bytes>,
    event: &Event,
    token: &AccessToken,
) -> Result<Response<h2::RecvStream>, StreamError> {
    let writer = FormDataWriter::new();
    let (resp, mut stream) = open_event_stream(ctx, send, token, &writer).await?;
    let sent = send_all(&mut stream, writer.metadata_only(&event.to_json()), true).await;
    ctx.activity.touch();
    let timeout = ctx.tuning.event_response_timeout;
    match tokio::time::timeout(timeout, resp).await {
        Ok(Ok(r)) => Ok(r),
        // The server may answer (e.g. 4xx) and reset before reading the whole body.
        Ok(Err(e)) => Err(sent.err().unwrap_or(StreamError::H2(e))),
        Err(_) => Err(StreamError::Timeout(timeout)),
    }
}

/// What happened to one queued event.
pub(crate) enum Delivery {
    /// AVS accepted it (2xx); its response body is being read by the returned future.
    Accepted,
    /// AVS refused it for good (or retries ran out): drop it.
    GivenUp,
}

/// Sends `event` with the retry policy. `Err` means the connection is unusable; the event stays
/// queued for the next one. `bodies` collects the readers of accepted responses.
pub(crate) async fn deliver(
    ctx: &LinkCtx,
    send: &SendRequest<Bytes>,
    event: &Event,
    bodies: &mut tokio::task::JoinSet<()>,
) -> Result<Delivery, StreamError> {
    let name = event.qualified_name();
    let mut retried_auth = false;
    let mut backoff = Backoff::new(RECONNECT_TABLE);
    let mut token_rx = ctx.auth.access_token();
    loop {
        let token = wait_for_token(&mut token_rx).await;
        let resp = post_event(ctx, send, event, &token).await?;
        let status = resp.status();
        if status.is_success() {
            debug!(event = %name, %status, "event accepted");
            if status == StatusCode::OK {
                let ctx2 = ctx.clone();
                let name2 = name.clone();
                bodies.spawn(async move {
                    if let Err(e) = read_parts(&ctx2, resp, &name2).await {
                        warn!(event = %name2, error = %e, "reading the event response failed");
                    }
                });
            }
            return Ok(Delivery::Accepted);
        }
        let body = exception_text(resp).await;
        match status {
            StatusCode::FORBIDDEN if !retried_auth => {
                info!(event = %name, "event refused with 403; refreshing the token and retrying once");
                retried_auth = true;
                ctx.auth.refresh_now();
                if !wait_for_new_token(&mut token_rx, &token, ctx.tuning.token_wait).await {
                    warn!(event = %name, "no new token arrived; retrying with the current one");
                }
            }
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT => {
                if backoff.failures() >= ctx.tuning.event_retries {
                    warn!(event = %name, %status, %body, "event still refused after retries; giving up");
                    return Ok(Delivery::GivenUp);
                }
                let delay = backoff.on_failure(random_unit());
                info!(event = %name, %status, ?delay, "event refused for now; retrying");
                tokio::time::sleep(delay).await;
            }
            _ => {
                warn!(event = %name, %status, %body, "event refused; dropped");
                return Ok(Delivery::GivenUp);
            }
        }
    }
}

/// Reads a short error body (AVS's System.Exception JSON) for the log.
pub(crate) async fn exception_text(resp: Response<h2::RecvStream>) -> String {
    let mut body = resp.into_body();
    let mut text = Vec::new();
    let read = async {
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            if text.len() < 2048 {
                text.extend_from_slice(&chunk[..chunk.len().min(2048 - text.len())]);
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read).await;
    String::from_utf8_lossy(&text).into_owned()
}

/// Streams a Recognize: metadata, then the audio part live until `audio` ends, then the
/// closing delimiter, while reading its response; completes the outcome when the response ends.
pub(crate) async fn recognize(ctx: LinkCtx, send: SendRequest<Bytes>, req: RecognizeRequest) {
    let RecognizeRequest {
        event,
        mut audio,
        outcome,
        after: _,
    } = req;
    let mut token_rx = ctx.auth.access_token();
    let token = wait_for_token(&mut token_rx).await;
    let writer = FormDataWriter::new();
    let (resp_fut, mut stream) = match open_event_stream(&ctx, &send, &token, &writer).await {
        Ok(s) => s,
        Err(e) => {
            outcome.complete(ResponseOutcome::Failed(format!(
                "cannot open the Recognize stream: {e}"
            )));
            return;
        }
    };
    let activity = ctx.activity.clone();
    let upload = async move {
        send_all(&mut stream, writer.metadata(&event.to_json()), false).await?;
        send_all(&mut stream, writer.audio_header(), false).await?;
        loop {
            // A reset from the server must end the upload even while no audio is coming.
            let next = tokio::select! {
                chunk = audio.recv() => chunk,
                r = poll_fn(|cx| stream.poll_reset(cx)) => {
                    return Err(match r {
                        Ok(_reason) => StreamError::Closed,
                        Err(e) => StreamError::H2(e),
                    });
                }
            };
            match next {
                Some(chunk) => {
                    send_all(&mut stream, chunk, false).await?;
                    activity.touch();
                }
                None => break,
            }
        }
        send_all(&mut stream, writer.finish(), true).await?;
        Ok::<_, StreamError>(stream)
    };
    let ctx2 = ctx.clone();
    let response = async move {
        let resp = resp_fut
            .await
            .map_err(|e| format!("no Recognize response: {e}"))?;
        let status = resp.status();
        if status == StatusCode::FORBIDDEN {
            ctx2.auth.refresh_now();
        }
        if status == StatusCode::OK {
            read_parts(&ctx2, resp, "SpeechRecognizer.Recognize")
                .await
                .map_err(|e| format!("Recognize response broke off: {e}"))?;
        } else if !status.is_success() {
            let text = exception_text(resp).await;
            info!(%status, %text, "Recognize refused");
        }
        Ok::<_, String>(status.as_u16())
    };
    tokio::pin!(upload);
    tokio::pin!(response);
    let result = tokio::select! {
        r = &mut response => r,
        u = &mut upload => {
            let keep_open = match u {
                Ok(stream) => Some(stream),
                Err(e) => {
                    debug!(error = %e, "Recognize upload ended early");
                    None
                }
            };
            let r = response.await;
            drop(keep_open);
            r
        }
    };
    outcome.complete(match result {
        Ok(status) => ResponseOutcome::Status(status),
        Err(e) => {
            info!(error = %e, "Recognize response failed");
            ResponseOutcome::Failed(e)
        }
    });
}

/// A bounded audio channel pair for callers that stream a Recognize (10 ms chunks, ~2 s).
pub fn audio_channel() -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
    mpsc::channel(200)
}
