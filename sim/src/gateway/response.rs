//! Streaming a turn's directives as the `multipart/related` response of an event: headers go
//! out with the first directive, each directive (and its attachment) is flushed as it comes,
//! and the body ends when the producer is done (`204` when it produced nothing). Used by
//! Recognize and by the events a skill session answers (ExpectSpeechTimedOut).

use bytes::Bytes;
use h2::SendStream;
use h2::server::SendResponse;
use http::{Response, StatusCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ConnCtx, SendError, respond_bytes, send_bytes};
use crate::Shared;
use crate::turn::TurnDirective;

/// How long the half attachment is left to be read before the stream is reset.
const KILL_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

/// An event's response stream once its headers are sent.
pub struct Out {
    pub stream: SendStream<Bytes>,
    pub writer: avs_proto::multipart::RelatedWriter,
}

/// Sends `200 multipart/related` headers.
pub fn start(respond: &mut SendResponse<Bytes>) -> Option<Out> {
    let writer = avs_proto::multipart::RelatedWriter::new();
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, writer.content_type())
        .header("x-amzn-requestid", avs_proto::new_message_id())
        .body(())
        .ok()?;
    let stream = respond.send_response(response, false).ok()?;
    Some(Out { stream, writer })
}

/// Ends the response: closes the multipart body if one was started, else answers `204`.
pub async fn finish(
    shared: &Shared,
    seq: usize,
    respond: &mut SendResponse<Bytes>,
    out: Option<Out>,
) {
    match out {
        Some(mut o) => {
            shared.recorder.set_status(seq, 200);
            let _ = send_bytes(&mut o.stream, o.writer.finish(), true).await;
        }
        None => {
            shared.recorder.set_status(seq, 204);
            respond_bytes(respond, StatusCode::NO_CONTENT, None, Bytes::new()).await;
        }
    }
}

/// Why a turn's stream ended before its producer finished.
#[derive(Debug, thiserror::Error)]
pub enum StreamTurnError {
    #[error("the connection is going away")]
    ConnectionClosing,
    #[error("response headers could not be sent")]
    NoResponse,
    #[error("writing the response failed: {0}")]
    Send(#[from] SendError),
    #[error("reset in mid-attachment (injected fault)")]
    KilledMidAttachment,
}

/// Writes what `producer` puts into `directives` until it is done, then ends the response.
#[allow(clippy::too_many_arguments)]
pub async fn stream_turn<E: std::fmt::Display>(
    shared: &Shared,
    conn: &ConnCtx,
    seq: usize,
    respond: &mut SendResponse<Bytes>,
    mut out: Option<Out>,
    mut producer: JoinHandle<Result<(), E>>,
    mut directives: mpsc::Receiver<TurnDirective>,
    kill_mid_attachment: bool,
) -> Result<(), StreamTurnError> {
    // The stream ends when the producer is done, even if a clone of the sink lives on (the
    // progressive-response registry may keep one until it prunes the request).
    let mut producer_result = None;
    let outcome = loop {
        let next = if producer_result.is_some() {
            directives.try_recv().ok()
        } else {
            tokio::select! {
                biased;
                d = directives.recv() => d,
                r = &mut producer => { producer_result = Some(r); continue; }
                _ = conn.closing.cancelled() => break Err(StreamTurnError::ConnectionClosing),
            }
        };
        let Some(d) = next else { break Ok(()) };
        if out.is_none() {
            out = start(respond);
        }
        let Some(o) = out.as_mut() else {
            break Err(StreamTurnError::NoResponse);
        };
        if kill_mid_attachment && let Some((cid, mp3)) = &d.attachment {
            let _ = send_bytes(&mut o.stream, o.writer.json_part(&d.json), false).await;
            let _ = send_bytes(&mut o.stream, o.writer.binary_part_start(cid), false).await;
            let _ = send_bytes(&mut o.stream, mp3.slice(..mp3.len() / 2), false).await;
            // A reset discards whatever the peer has not read yet; give it the first half.
            tokio::time::sleep(KILL_DELAY).await;
            o.stream.send_reset(h2::Reason::INTERNAL_ERROR);
            shared.recorder.set_status(seq, 200);
            break Err(StreamTurnError::KilledMidAttachment);
        }
        if let Err(e) = super::write_directive(
            &mut o.stream,
            &mut o.writer,
            &d,
            shared.config.attachments_first,
        )
        .await
        {
            break Err(e.into());
        }
    };
    if let Err(e) = outcome {
        producer.abort();
        return Err(e);
    }
    let result = match producer_result {
        Some(r) => r,
        None => producer.await,
    };
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "turn failed"),
        Err(e) => tracing::warn!(error = %e, "turn task failed"),
    }
    finish(shared, seq, respond, out).await;
    Ok(())
}
