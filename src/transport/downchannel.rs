//! Opening the downchannel (`GET /v20160207/directives`) and reading any `multipart/related`
//! response body, the downchannel's or an event's, into [`Incoming`] items (each as soon as
//! its JSON parses) and [`Attachments`]. HTTP/2 flow-control capacity is released as each
//! chunk is handed to the parser, so the never-ending downchannel never stalls; parts are bounded
//! by the tuning's limits and an oversized or malformed part is logged and skipped.

use std::sync::Arc;

use avs_proto::Directive;
use avs_proto::multipart::{MultipartError, MultipartKind, PartEvent, PartReader};
use bytes::Bytes;
use futures_util::Stream;
use h2::RecvStream;
use http::{Method, Response, StatusCode};
use tracing::{debug, warn};

use super::Incoming;
use super::connection::{Activity, LinkCtx};
use super::events::{StreamError, request};
use super::gateway::LinkDirective;

/// Why reading a response body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("response is not multipart/related: {0}")]
    NotMultipart(#[source] MultipartError),
    #[error("response body broke off: {0}")]
    Broken(#[source] MultipartError),
}

impl BodyError {
    /// True when the stream or connection failed (rather than the content being bad).
    pub fn is_stream_error(&self) -> bool {
        matches!(self, Self::Broken(e) if e.is_stream_error())
    }
}

/// A response body as a stream of chunks; each chunk's capacity is released as the parser
/// takes it, and every chunk counts as traffic for the ping timer.
pub(crate) fn body_stream(
    body: RecvStream,
    activity: Arc<Activity>,
) -> impl Stream<Item = Result<Bytes, h2::Error>> + Send + 'static {
    futures_util::stream::unfold(Some(body), move |state| {
        let activity = activity.clone();
        async move {
            let mut body = state?;
            match body.data().await {
                None => None,
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    activity.touch();
                    Some((Ok(chunk), Some(body)))
                }
                Some(Err(e)) => Some((Err(e), None)),
            }
        }
    })
}

/// Reads a `multipart/related` response to its end. `origin` names the stream in logs.
pub(crate) async fn read_parts(
    ctx: &LinkCtx,
    response: Response<RecvStream>,
    origin: &str,
) -> Result<(), BodyError> {
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.into_body();
    let stream = body_stream(body, ctx.activity.clone());
    let mut reader = PartReader::new(
        &content_type,
        MultipartKind::Related,
        stream,
        ctx.tuning.part_limits,
    )
    .map_err(BodyError::NotMultipart)?;
    let mut writer: Option<super::attachments::AttachmentWriter> = None;
    loop {
        let event = match reader.next().await {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(()),
            Err(e) => {
                if let Some(w) = writer.take() {
                    w.fail(e.to_string());
                }
                return Err(BodyError::Broken(e));
            }
        };
        match event {
            PartEvent::Json { body, .. } => {
                let item = match Directive::from_json(&body) {
                    Ok(d) => {
                        debug!(origin, directive = %d.qualified_name(), message_id = %d.header.message_id, "directive");
                        if let Some(control) = &ctx.control
                            && let Some(own) = LinkDirective::from_directive(&d)
                        {
                            if control.send(own).await.is_err() {
                                debug!(origin, "the connection is ending; link directive dropped");
                            }
                            continue;
                        }
                        Incoming::Directive(d)
                    }
                    Err(e) => {
                        warn!(origin, error = %e, "malformed directive part");
                        Incoming::Malformed(e)
                    }
                };
                if ctx.incoming.send(item).await.is_err() {
                    debug!(origin, "nobody receives directives any more");
                }
            }
            PartEvent::BinaryStart {
                content_id: Some(id),
                ..
            } => {
                writer = Some(ctx.attachments.begin(&id));
            }
            PartEvent::BinaryStart {
                content_id: None,
                content_type,
                ..
            } => {
                warn!(
                    origin,
                    ?content_type,
                    "binary part without Content-ID; skipped"
                );
                writer = None;
            }
            PartEvent::BinaryChunk(chunk) => {
                if let Some(w) = writer.as_mut() {
                    w.push(chunk);
                }
            }
            PartEvent::BinaryEnd => {
                if let Some(w) = writer.take() {
                    w.end();
                }
            }
            PartEvent::Oversized {
                content_id,
                limit_bytes,
                ..
            } => {
                warn!(
                    origin,
                    ?content_id,
                    limit_bytes,
                    "part over its size limit; skipped"
                );
                if let Some(w) = writer.take() {
                    w.fail(format!("part over {limit_bytes} bytes"));
                }
            }
        }
    }
}

/// Why the downchannel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DownchannelError {
    #[error("downchannel request failed: {0}")]
    Stream(#[from] StreamError),
    #[error("downchannel refused with 403: the access token was rejected")]
    Forbidden,
    #[error("downchannel answered {0}")]
    Status(StatusCode),
    #[error("no downchannel response within {0:?}")]
    Timeout(std::time::Duration),
}

/// Opens the downchannel and waits for its response headers.
pub(crate) async fn open(
    ctx: &LinkCtx,
    send: &mut h2::client::SendRequest<Bytes>,
    token: &crate::auth::AccessToken,
) -> Result<Response<RecvStream>, DownchannelError> {
    let req = request(ctx, Method::GET, avs_proto::DIRECTIVES_PATH, token, None);
    let fut = async {
        let mut ready = send.clone().ready().await.map_err(StreamError::H2)?;
        let (resp, _) = ready.send_request(req, true).map_err(StreamError::H2)?;
        resp.await.map_err(StreamError::H2)
    };
    let timeout = ctx.tuning.downchannel_timeout;
    let resp = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| DownchannelError::Timeout(timeout))??;
    ctx.activity.touch();
    match resp.status() {
        StatusCode::OK => Ok(resp),
        StatusCode::FORBIDDEN => Err(DownchannelError::Forbidden),
        s => Err(DownchannelError::Status(s)),
    }
}
