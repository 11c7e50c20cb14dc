//! `POST /v20160207/events`: token check, armed faults, the multipart/form-data body read
//! incrementally (metadata first, found by name), and the reply for every event but Recognize
//! (which `recognize.rs` answers): `204`, `202` + `Alexa.EventProcessed` for Discovery, the
//! skill session's reprompt for `ExpectSpeechTimedOut`, `400` for malformed input.

use std::sync::Arc;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Request, StatusCode};

use super::discovery;
use super::{
    ConnCtx, DownchannelCommand, authorization, authorize, body_stream, peer_reset, respond_bytes,
    respond_exception,
};
use crate::Shared;
use crate::recorder::RecordedEvent;
use crate::turn::TurnDirective;
use avs_proto::multipart::{Limits, MultipartKind, PartEvent, PartReader};

/// Limits on event bodies: metadata JSON and the streamed audio part.
pub fn limits() -> Limits {
    Limits {
        json_part_bytes: 256 * 1024,
        // 5 minutes of 16 kHz s16le mono.
        binary_part_bytes: 5 * 60 * 32_000,
    }
}

pub async fn serve(
    shared: Arc<Shared>,
    conn: ConnCtx,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let path = avs_proto::EVENTS_PATH;
    let auth = authorization(&req);
    let Some(grant) = authorize(&shared, auth, "POST", path, &mut respond).await else {
        return;
    };
    let bearer = auth
        .and_then(|a| a.split_once(' '))
        .map(|(_, t)| t.trim().to_owned())
        .unwrap_or_default();
    let device = Some(grant.device_serial.clone());
    if let Some(status) = shared.faults.take_event_failure() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        shared
            .recorder
            .record("POST", path, Some(status.as_u16()), device, None);
        respond_exception(&mut respond, status, "injected fault").await;
        return;
    }
    if shared.faults.take_stall() {
        shared.recorder.record("POST", path, None, device, None);
        tokio::select! {
            _ = peer_reset(&mut respond) => {}
            _ = conn.closing.cancelled() => {}
        }
        return;
    }

    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = body_stream(req.into_body());
    let mut reader = match PartReader::new(&content_type, MultipartKind::FormData, body, limits()) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(&shared, &mut respond, device, &e.to_string()).await;
        }
    };
    let metadata = match reader.next().await {
        Ok(Some(PartEvent::Json {
            name: Some(name),
            body,
            ..
        })) if name == "metadata" => body,
        Ok(Some(PartEvent::Oversized { limit_bytes, .. })) => {
            let why = format!("metadata part larger than {limit_bytes} bytes");
            return bad_request(&shared, &mut respond, device, &why).await;
        }
        Ok(_) => {
            let why = "the first part must be the metadata JSON part";
            return bad_request(&shared, &mut respond, device, why).await;
        }
        Err(e) if e.is_stream_error() => {
            shared.recorder.record("POST", path, None, device, None);
            return;
        }
        Err(e) => return bad_request(&shared, &mut respond, device, &e.to_string()).await,
    };
    let event = match avs_proto::Event::from_json(&metadata) {
        Ok(e) => e,
        Err(e) => return bad_request(&shared, &mut respond, device, &e.to_string()).await,
    };
    let recorded = RecordedEvent {
        namespace: event.header.namespace.clone(),
        name: event.header.name.clone(),
        message_id: event.header.message_id.clone(),
        dialog_request_id: event.header.dialog_request_id.clone(),
        payload: event.payload.clone(),
        has_context: event.context.is_some(),
        context: event
            .context
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok()),
    };
    tracing::info!(event = %event.qualified_name(), serial = %grant.device_serial, "event");
    let seq = shared.recorder.record_via(
        "POST",
        path,
        None,
        device.clone(),
        Some(recorded),
        Some(&conn.listener),
    );

    if event.header.namespace == "SpeechRecognizer" && event.header.name == "Recognize" {
        super::recognize::serve(shared, conn, grant, event, seq, reader, respond).await;
        return;
    }

    // Everything else is metadata only; the rest of the body must still be well formed.
    loop {
        match reader.next().await {
            Ok(None) => break,
            Ok(Some(PartEvent::Json { .. })) => {}
            Ok(Some(PartEvent::Oversized { limit_bytes, .. })) => {
                let why = format!("a part is larger than {limit_bytes} bytes");
                return bad_request_recorded(&shared, &mut respond, seq, &why).await;
            }
            Ok(Some(PartEvent::BinaryStart { name, .. })) if name.as_deref() == Some("audio") => {
                let why = "an audio part is only allowed on SpeechRecognizer.Recognize";
                return bad_request_recorded(&shared, &mut respond, seq, why).await;
            }
            Ok(Some(_)) => {}
            Err(e) if e.is_stream_error() => return,
            Err(e) => {
                return bad_request_recorded(&shared, &mut respond, seq, &e.to_string()).await;
            }
        }
    }

    let name = event.qualified_name();
    if name == "System.SoftwareInfo"
        && event.payload["firmwareVersion"]
            .as_str()
            .is_none_or(|v| v.parse::<u32>().map_or(true, |n| n == 0))
    {
        let why = "firmwareVersion must be a positive 32-bit integer string";
        return bad_request_recorded(&shared, &mut respond, seq, why).await;
    }
    if event.header.namespace == "PlaybackController" && event.context.is_none() {
        let why = "PlaybackController events must carry the context";
        return bad_request_recorded(&shared, &mut respond, seq, why).await;
    }
    if name == "Alexa.Discovery.AddOrUpdateReport" {
        let report = match discovery::validate_report(&event, &bearer, &grant) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, serial = %grant.device_serial, "AddOrUpdateReport refused");
                return bad_request_recorded(&shared, &mut respond, seq, &e.to_string()).await;
            }
        };
        shared.discovery.accepted(&grant.device_serial, report);
        return accept_discovery(&shared, &mut respond, seq, &event, &grant.device_serial).await;
    }
    if name == "Alexa.Discovery.DeleteReport" {
        return accept_discovery(&shared, &mut respond, seq, &event, &grant.device_serial).await;
    }
    if name == "Alexa.ApiGateway.VerifyGateway"
        && let Some(target) = shared.discovery.move_target(&conn.listener)
    {
        tracing::info!(serial = %grant.device_serial, %target, "VerifyGateway: moving the device");
        if let Some(mut out) = super::response::start(&mut respond) {
            let d = TurnDirective {
                json: discovery::set_gateway(target.as_str()),
                attachment: None,
            };
            let _ = super::write_directive(&mut out.stream, &mut out.writer, &d, false).await;
            super::response::finish(&shared, seq, &mut respond, Some(out)).await;
        }
        return;
    }
    if name == "SpeechRecognizer.ExpectSpeechTimedOut" {
        // A skill session waiting for an answer reprompts once, else ends (skill.rs decides);
        // whatever it says goes on this event's response.
        let live = shared.live.clone();
        let serial = grant.device_serial.clone();
        answer_with(
            &shared,
            &conn,
            seq,
            &mut respond,
            &name,
            |sink| async move {
                crate::skill::expect_speech_timed_out(&live, &serial, sink)
                    .await
                    .map(|_still_open| ())
            },
        )
        .await;
        return;
    }
    if let Some(turn) = shared.config.scenario.on_event.get(&name).cloned() {
        // The scenario answers this event (e.g. a transport button) on its response stream.
        let ctx = crate::turn::TurnContext {
            dialog_request_id: String::new(),
            device_serial: grant.device_serial.clone(),
            client_id: grant.client_id.clone(),
        };
        let turn_shared = shared.clone();
        answer_with(&shared, &conn, seq, &mut respond, &name, |sink| {
            crate::turn::run(turn_shared, ctx, turn, sink)
        })
        .await;
        return;
    }
    shared.recorder.set_status(seq, 204);
    respond_bytes(&mut respond, StatusCode::NO_CONTENT, None, Bytes::new()).await;
}

/// `202`, then `Alexa.EventProcessed` on the device's downchannel (unless a fault drops it).
async fn accept_discovery(
    shared: &Shared,
    respond: &mut SendResponse<Bytes>,
    seq: usize,
    event: &avs_proto::Event,
    serial: &str,
) {
    shared.recorder.set_status(seq, 202);
    respond_bytes(respond, StatusCode::ACCEPTED, None, Bytes::new()).await;
    let Some(token) = event.header.event_correlation_token.as_deref() else {
        return;
    };
    if shared.faults.take_drop_event_processed() {
        tracing::info!(serial, "EventProcessed dropped (fault)");
        return;
    }
    if let Some(dev) = shared.devices.get(serial) {
        let _ = dev
            .downchannel
            .try_send(DownchannelCommand::Push(TurnDirective {
                json: discovery::event_processed(token),
                attachment: None,
            }));
    }
}

async fn bad_request(
    shared: &Shared,
    respond: &mut SendResponse<Bytes>,
    device: Option<String>,
    why: &str,
) {
    tracing::info!(why, "event refused with 400");
    shared
        .recorder
        .record("POST", avs_proto::EVENTS_PATH, Some(400), device, None);
    respond_exception(respond, StatusCode::BAD_REQUEST, why).await;
}

async fn finish(
    shared: &Shared,
    respond: &mut SendResponse<Bytes>,
    seq: usize,
    status: StatusCode,
    why: &str,
) {
    shared.recorder.set_status(seq, status.as_u16());
    respond_exception(respond, status, why).await;
}

/// Answers event `seq` (already recorded) 400 with an exception naming `why`.
async fn bad_request_recorded(
    shared: &Shared,
    respond: &mut SendResponse<Bytes>,
    seq: usize,
    why: &str,
) {
    finish(shared, respond, seq, StatusCode::BAD_REQUEST, why).await;
}

/// Answers event `seq` on its own response stream with whatever `produce` sends to its sink
/// (a skill's reprompt, a scripted answer to a button), ending when the producer is done.
async fn answer_with<F, Fut, E>(
    shared: &Shared,
    conn: &ConnCtx,
    seq: usize,
    respond: &mut SendResponse<Bytes>,
    event: &str,
    produce: F,
) where
    F: FnOnce(crate::turn::TurnSink) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (sink, directives) = tokio::sync::mpsc::channel(4);
    let producer = tokio::spawn(produce(sink));
    let streamed = super::response::stream_turn(
        shared, conn, seq, respond, None, producer, directives, false,
    )
    .await;
    if let Err(e) = streamed {
        tracing::info!(error = %e, %event, "event answer ended early");
    }
}
