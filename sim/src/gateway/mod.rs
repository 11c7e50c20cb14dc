//! The AVS gateway: the HTTP/2 streams of one device connection. This module dispatches each
//! stream by path (`downchannel`, `events`, `/ping`, everything else to the shared router),
//! checks bearer tokens, keeps the registry of connected devices (one connection per device)
//! and holds the small helpers for writing bodies with h2 flow control.

pub mod discovery;
pub mod downchannel;
pub mod events;
pub mod faults;
pub mod recognize;
pub mod response;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{Request, Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::turn::TurnDirective;

/// What a connection's task can be told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnCommand {
    /// GOAWAY, let in-flight streams finish, end the downchannel.
    GoAway,
    /// Close the TCP connection at once.
    Drop,
}

/// What a downchannel's task can be told to do.
pub enum DownchannelCommand {
    Push(TurnDirective),
    /// RST_STREAM with INTERNAL_ERROR.
    Reset,
}

/// The connection a stream belongs to.
#[derive(Clone)]
pub struct ConnCtx {
    pub id: u64,
    /// `host:port` of the listener that accepted the connection.
    pub listener: Arc<str>,
    pub commands: mpsc::Sender<ConnCommand>,
    /// Cancelled when the connection is going away; long streams end on it.
    pub closing: CancellationToken,
}

/// A device's live connection and downchannel.
#[derive(Clone)]
pub struct DeviceEntry {
    pub conn_id: u64,
    pub conn: mpsc::Sender<ConnCommand>,
    pub downchannel: mpsc::Sender<DownchannelCommand>,
}

/// The connected devices, by serial number.
#[derive(Default)]
pub struct DeviceRegistry {
    devices: Mutex<HashMap<String, DeviceEntry>>,
}

impl DeviceRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, DeviceEntry>> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a downchannel; returns the entry it replaced.
    pub fn register(&self, serial: &str, entry: DeviceEntry) -> Option<DeviceEntry> {
        self.lock().insert(serial.to_owned(), entry)
    }

    /// Removes `serial` if its downchannel is still `downchannel`.
    pub fn unregister(&self, serial: &str, downchannel: &mpsc::Sender<DownchannelCommand>) {
        let mut devices = self.lock();
        if devices
            .get(serial)
            .is_some_and(|e| e.downchannel.same_channel(downchannel))
        {
            devices.remove(serial);
        }
    }

    pub fn get(&self, serial: &str) -> Option<DeviceEntry> {
        self.lock().get(serial).cloned()
    }

    /// The devices `selector` names: one serial, or all when `None`.
    pub fn select(&self, selector: Option<&str>) -> Vec<(String, DeviceEntry)> {
        self.lock()
            .iter()
            .filter(|(s, _)| selector.is_none_or(|want| want == s.as_str()))
            .map(|(s, e)| (s.clone(), e.clone()))
            .collect()
    }

    pub fn serials(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }
}

/// Why writing a response body stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the stream was closed or reset by the peer")]
    Closed,
    #[error("h2: {0}")]
    H2(#[from] h2::Error),
}

/// Writes `data` respecting flow control (h2 buffers without limit otherwise).
pub async fn send_bytes(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end_of_stream: bool,
) -> Result<(), SendError> {
    if data.is_empty() {
        if end_of_stream {
            stream.send_data(Bytes::new(), true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let capacity = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(SendError::Closed),
        };
        if capacity == 0 {
            continue;
        }
        let chunk = data.split_to(capacity.min(data.len()));
        stream.send_data(chunk, end_of_stream && data.is_empty())?;
    }
    Ok(())
}

/// Writes one directive part and its attachment: right after it, or right before it when
/// `attachment_first` (both orders are legal; the second tests a reader's robustness).
pub async fn write_directive(
    stream: &mut SendStream<Bytes>,
    writer: &mut avs_proto::multipart::RelatedWriter,
    directive: &TurnDirective,
    attachment_first: bool,
) -> Result<(), SendError> {
    if !attachment_first {
        send_bytes(stream, writer.json_part(&directive.json), false).await?;
    }
    if let Some((cid, mp3)) = &directive.attachment {
        send_bytes(stream, writer.binary_part_start(cid), false).await?;
        send_bytes(stream, mp3.clone(), false).await?;
        send_bytes(stream, writer.binary_part_end(), false).await?;
    }
    if attachment_first {
        send_bytes(stream, writer.json_part(&directive.json), false).await?;
    }
    Ok(())
}

/// The `System.Exception` code AVS uses for `status`.
pub fn exception_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_REQUEST_EXCEPTION",
        403 => "UNAUTHORIZED_REQUEST_EXCEPTION",
        429 => "THROTTLING_EXCEPTION",
        500 => "INTERNAL_SERVICE_EXCEPTION",
        _ => "N/A",
    }
}

/// The JSON exception body for an error status.
pub fn exception_body(status: StatusCode, description: &str) -> Bytes {
    let body = json!({
        "header": {"namespace": "System", "name": "Exception", "messageId": avs_proto::new_message_id()},
        "payload": {"code": exception_code(status), "description": description},
    });
    Bytes::from(body.to_string())
}

/// Sends a whole response (headers and body) on a stream.
pub async fn respond_bytes(
    respond: &mut SendResponse<Bytes>,
    status: StatusCode,
    content_type: Option<&str>,
    body: Bytes,
) {
    respond_with_headers(respond, status, content_type, &[], body).await;
}

/// [`respond_bytes`] with extra response headers.
pub async fn respond_with_headers(
    respond: &mut SendResponse<Bytes>,
    status: StatusCode,
    content_type: Option<&str>,
    headers: &[(&'static str, String)],
    body: Bytes,
) {
    let mut builder = Response::builder().status(status);
    if let Some(ct) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    for (name, value) in headers {
        builder = builder.header(*name, value.as_str());
    }
    builder = builder.header("x-amzn-requestid", avs_proto::new_message_id());
    let Ok(response) = builder.body(()) else {
        return;
    };
    match respond.send_response(response, body.is_empty()) {
        Ok(mut stream) if !body.is_empty() => {
            if let Err(e) = send_bytes(&mut stream, body, true).await {
                tracing::debug!(error = %e, "response body not delivered");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "response not delivered"),
    }
}

/// Sends an AVS error: the exception JSON for 4xx/500, an empty body for 503.
pub async fn respond_exception(
    respond: &mut SendResponse<Bytes>,
    status: StatusCode,
    description: &str,
) {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        respond_bytes(respond, status, None, Bytes::new()).await;
    } else {
        respond_bytes(
            respond,
            status,
            Some("application/json"),
            exception_body(status, description),
        )
        .await;
    }
}

/// The request's `Authorization` header, if it is text.
pub fn authorization<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Checks the bearer token in `authorization`. Without a valid one the request is recorded as
/// `method path` answered 403 and gets the AVS exception naming why, and there is no grant.
pub async fn authorize(
    shared: &Shared,
    authorization: Option<&str>,
    method: &str,
    path: &str,
    respond: &mut SendResponse<Bytes>,
) -> Option<crate::lwa::Grant> {
    match shared.lwa.check_bearer(authorization) {
        Ok(grant) => Some(grant),
        Err(why) => {
            tracing::info!(%why, method, path, "refused");
            shared.recorder.record(method, path, Some(403), None, None);
            respond_exception(respond, StatusCode::FORBIDDEN, &why.to_string()).await;
            None
        }
    }
}

/// A request body as a stream that gives back flow-control capacity as it is read.
pub fn body_stream(body: RecvStream) -> impl Stream<Item = Result<Bytes, h2::Error>> + Send {
    futures_util::stream::unfold(Some(body), |body| async move {
        let mut body = body?;
        match body.data().await {
            Some(Ok(chunk)) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                Some((Ok(chunk), Some(body)))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None => None,
        }
    })
}

/// Reads a small body whole; `None` when it is larger than `limit_bytes` or broken.
pub async fn collect_body(mut body: RecvStream, limit_bytes: usize) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if buf.len() + chunk.len() > limit_bytes {
            return None;
        }
        buf.extend_from_slice(&chunk);
    }
    Some(buf.freeze())
}

/// Waits until the peer resets the stream (or the stream is otherwise gone).
pub async fn peer_reset(respond: &mut SendResponse<Bytes>) {
    let _ = std::future::poll_fn(|cx| respond.poll_reset(cx)).await;
}

/// Serves one HTTP/2 stream.
pub async fn handle_stream(
    shared: Arc<Shared>,
    conn: ConnCtx,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    match (method.as_str(), path.as_str()) {
        ("GET", avs_proto::DIRECTIVES_PATH) => downchannel::serve(shared, conn, req, respond).await,
        ("POST", avs_proto::EVENTS_PATH) => events::serve(shared, conn, req, respond).await,
        ("GET", avs_proto::PING_PATH) => serve_ping(shared, conn, req, respond).await,
        _ => {
            let (parts, body) = req.into_parts();
            let Some(body) = collect_body(body, crate::router::MAX_BODY_BYTES).await else {
                shared
                    .recorder
                    .record(method.as_str(), &path, Some(413), None, None);
                respond_bytes(
                    &mut respond,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    Bytes::new(),
                )
                .await;
                return;
            };
            let reply = crate::router::route(&shared, &parts, body).await;
            respond_with_headers(
                &mut respond,
                reply.status,
                reply.content_type,
                &reply.headers,
                reply.body,
            )
            .await;
        }
    }
}

async fn serve_ping(
    shared: Arc<Shared>,
    conn: ConnCtx,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let auth = authorization(&req);
    let Some(grant) = authorize(&shared, auth, "GET", avs_proto::PING_PATH, &mut respond).await
    else {
        return;
    };
    let device = Some(grant.device_serial);
    if shared.faults.pings_silenced() {
        shared
            .recorder
            .record("GET", avs_proto::PING_PATH, None, device, None);
        tokio::select! {
            _ = peer_reset(&mut respond) => {}
            _ = conn.closing.cancelled() => {}
        }
        return;
    }
    shared
        .recorder
        .record("GET", avs_proto::PING_PATH, Some(204), device, None);
    respond_bytes(&mut respond, StatusCode::NO_CONTENT, None, Bytes::new()).await;
}
