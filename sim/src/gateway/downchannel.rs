//! The downchannel (`GET /v20160207/directives`): checks the token, answers `200
//! multipart/related`, registers the device (a newer connection of the same device GOAWAYs the
//! older one) and writes each pushed directive as its own part, flushed at once, until the
//! connection goes away, the device resets the stream or a fault ends it.

use std::sync::Arc;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Request, Response, StatusCode};
use tokio::sync::mpsc;

use super::{ConnCommand, ConnCtx, DeviceEntry, DownchannelCommand, authorization, authorize};
use crate::Shared;

/// How many directives may wait for a slow downchannel before pushes are refused.
const QUEUE_DEPTH: usize = 32;

pub async fn serve(
    shared: Arc<Shared>,
    conn: ConnCtx,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let auth = authorization(&req);
    let path = avs_proto::DIRECTIVES_PATH;
    let Some(grant) = authorize(&shared, auth, "GET", path, &mut respond).await else {
        return;
    };
    let serial = grant.device_serial;
    let mut writer = avs_proto::multipart::RelatedWriter::new();
    let Ok(response) = Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, writer.content_type())
        .body(())
    else {
        return;
    };
    let mut stream = match respond.send_response(response, false) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "downchannel response not sent");
            return;
        }
    };

    let (tx, mut rx) = mpsc::channel(QUEUE_DEPTH);
    let replaced = shared.devices.register(
        &serial,
        DeviceEntry {
            conn_id: conn.id,
            conn: conn.commands.clone(),
            downchannel: tx.clone(),
        },
    );
    if let Some(old) = replaced.filter(|old| old.conn_id != conn.id) {
        tracing::info!(%serial, old = old.conn_id, new = conn.id, "second connection: GOAWAY the older one");
        let _ = old.conn.send(ConnCommand::GoAway).await;
    }
    // Recorded after registering, so a test that saw this record can push at once.
    shared.recorder.record_via(
        "GET",
        avs_proto::DIRECTIVES_PATH,
        Some(200),
        Some(serial.clone()),
        None,
        Some(&conn.listener),
    );
    tracing::info!(%serial, conn = conn.id, "downchannel open");

    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(DownchannelCommand::Push(d)) => {
                    if let Err(e) = super::write_directive(&mut stream, &mut writer, &d, shared.config.attachments_first).await {
                        tracing::debug!(error = %e, "downchannel write failed");
                        break;
                    }
                }
                Some(DownchannelCommand::Reset) => {
                    stream.send_reset(h2::Reason::INTERNAL_ERROR);
                    break;
                }
                None => break,
            },
            _ = std::future::poll_fn(|cx| stream.poll_reset(cx)) => {
                tracing::debug!(%serial, "device reset the downchannel");
                break;
            }
            _ = conn.closing.cancelled() => {
                let _ = super::send_bytes(&mut stream, writer.finish(), true).await;
                break;
            }
        }
    }
    shared.devices.unregister(&serial, &tx);
    tracing::info!(%serial, conn = conn.id, "downchannel closed");
}
