//! A Recognize turn on the gateway side: the audio part is read live (chunk by chunk, saved as
//! WAV for the recorder) and fed to the energy VAD; at the end of speech the sim sends
//! `SpeechRecognizer.StopCapture` (downchannel by default, the event stream on request), or for
//! PRESS_AND_HOLD waits for the upload to end. Then the turn's producer (scenario or skill)
//! writes directives into a [`TurnSink`](crate::turn::TurnSink) and this module streams them as
//! `multipart/related` parts on the Recognize's response, ending the stream when the producer
//! is done (`204` when it produced nothing).

use std::sync::Arc;
use std::time::Duration;

use avs_proto::multipart::{PartEvent, PartReader};
use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use http::StatusCode;
use tokio::sync::mpsc;

use super::{ConnCtx, DownchannelCommand, respond_exception, response};
use crate::Shared;
use crate::lwa::Grant;
use crate::turn::{self, TurnDirective};
use crate::vad::{EndOfSpeechDetector, VadConfig, VadEvent};

/// Wall-clock slack over twice the longest utterance before a silent upload is given up on.
const UPLOAD_GRACE: Duration = Duration::from_secs(5);

/// What the audio reader tells the turn.
#[derive(Debug)]
enum AudioUpdate {
    SpeechStarted,
    /// The utterance is over (trailing silence, or the cap with or without speech).
    EndOfSpeech {
        at: Duration,
        heard_speech: bool,
    },
    /// The request body ended (or broke) after `audio_bytes` of audio.
    BodyEnded {
        audio_bytes: usize,
    },
    Malformed(String),
}

fn stop_capture(dialog_request_id: &str) -> TurnDirective {
    let header = avs_proto::Header::new("SpeechRecognizer", "StopCapture")
        .with_dialog(Some(dialog_request_id.to_owned()));
    TurnDirective {
        json: avs_proto::DirectiveEnvelope::new(header, serde_json::json!({})).to_json(),
        attachment: None,
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn serve(
    shared: Arc<Shared>,
    conn: ConnCtx,
    grant: Grant,
    event: avs_proto::Event,
    seq: usize,
    reader: PartReader,
    mut respond: SendResponse<Bytes>,
) {
    let Some(dialog) = event.header.dialog_request_id.clone() else {
        shared.recorder.set_status(seq, 400);
        respond_exception(
            &mut respond,
            StatusCode::BAD_REQUEST,
            "Recognize needs a dialogRequestId",
        )
        .await;
        return;
    };
    let press_and_hold = event.payload["initiator"]["type"].as_str() == Some("PRESS_AND_HOLD");
    let turn_index = shared.next_turn();
    let turn = shared
        .config
        .scenario
        .turn(turn_index)
        .cloned()
        .unwrap_or_default();
    for fault in &turn.faults {
        if let Err(e) = crate::admin::apply_fault(&shared, fault).await {
            tracing::warn!(error = %e, "scenario fault not applied");
        }
    }

    let (audio_tx, mut audio_rx) = mpsc::channel(8);
    let wav_path = shared
        .state_dir
        .join(format!("recognize-{seq}-{}.wav", turn::token_safe(&dialog)));
    tokio::spawn(read_audio(
        reader,
        audio_tx,
        shared.config.max_recognize_audio,
        shared.clone(),
        seq,
        wav_path,
    ));

    let mut heard_speech = false;
    let mut end_of_speech = false;
    let mut audio_bytes_seen = 0;
    // A device that stops sending audio without ending the upload still gets its turn ended.
    let stalled = tokio::time::sleep(shared.config.max_recognize_audio * 2 + UPLOAD_GRACE);
    tokio::pin!(stalled);
    loop {
        let update = tokio::select! {
            u = audio_rx.recv() => u,
            _ = &mut stalled => {
                tracing::warn!(%dialog, "Recognize upload stalled; ending capture");
                end_of_speech = !press_and_hold;
                break;
            }
            _ = conn.closing.cancelled() => return,
        };
        match update {
            Some(AudioUpdate::SpeechStarted) => heard_speech = true,
            Some(AudioUpdate::EndOfSpeech {
                at,
                heard_speech: heard,
            }) => {
                tracing::info!(%dialog, ?at, heard, "end of speech");
                heard_speech = heard;
                if !press_and_hold {
                    end_of_speech = true;
                    break;
                }
            }
            Some(AudioUpdate::BodyEnded { audio_bytes }) => {
                audio_bytes_seen = audio_bytes;
                break;
            }
            Some(AudioUpdate::Malformed(why)) => {
                shared.recorder.set_status(seq, 400);
                respond_exception(&mut respond, StatusCode::BAD_REQUEST, &why).await;
                return;
            }
            None => return,
        }
    }

    let mut out: Option<response::Out> = None;
    if end_of_speech {
        if shared.config.stop_capture_on_event_stream {
            out = response::start(&mut respond);
            if let Some(o) = out.as_mut()
                && super::write_directive(
                    &mut o.stream,
                    &mut o.writer,
                    &stop_capture(&dialog),
                    false,
                )
                .await
                .is_err()
            {
                return;
            }
        } else if let Some(dev) = shared.devices.get(&grant.device_serial) {
            // A device that stopped reading its downchannel must not hold up the turn.
            let push = dev
                .downchannel
                .send(DownchannelCommand::Push(stop_capture(&dialog)));
            if !matches!(tokio::time::timeout(UPLOAD_GRACE, push).await, Ok(Ok(()))) {
                tracing::warn!(serial = %grant.device_serial, "StopCapture not queued on the downchannel");
            }
        } else {
            tracing::warn!(serial = %grant.device_serial, "no downchannel for StopCapture");
        }
    }

    if turn.reject || !heard_speech {
        tracing::info!(%dialog, audio_bytes_seen, reject = turn.reject, "no answer (false wake or silence)");
        response::finish(&shared, seq, &mut respond, out).await;
        return;
    }

    let (sink, directives) = mpsc::channel::<TurnDirective>(4);
    let ctx = turn::TurnContext {
        dialog_request_id: dialog.clone(),
        device_serial: grant.device_serial.clone(),
        client_id: grant.client_id.clone(),
    };
    let producer = tokio::spawn(turn::run(shared.clone(), ctx, turn, sink));
    let kill_mid_attachment = shared.faults.take_kill_mid_attachment();
    let ended = response::stream_turn(
        &shared,
        &conn,
        seq,
        &mut respond,
        out,
        producer,
        directives,
        kill_mid_attachment,
    )
    .await;
    if let Err(e) = ended {
        tracing::info!(error = %e, %dialog, "Recognize turn ended early");
    }
}

/// Reads the rest of the Recognize body: finds the `audio` part by name, runs the VAD on it and
/// keeps the PCM for the WAV; the detector ends the utterance after `max_audio` at the latest.
async fn read_audio(
    mut reader: PartReader,
    updates: mpsc::Sender<AudioUpdate>,
    max_audio: Duration,
    shared: Arc<Shared>,
    seq: usize,
    wav_path: std::path::PathBuf,
) {
    let mut vad = EndOfSpeechDetector::new(VadConfig {
        max_utterance: max_audio,
        ..VadConfig::default()
    });
    let mut in_audio = false;
    let mut pcm = BytesMut::new();
    loop {
        match reader.next().await {
            Ok(Some(PartEvent::BinaryStart { name, .. })) => {
                in_audio = name.as_deref() == Some("audio");
            }
            Ok(Some(PartEvent::BinaryChunk(chunk))) if in_audio => {
                pcm.extend_from_slice(&chunk);
                // One push may hold several decisions; the detector keeps the rest until
                // drained with empty pushes.
                let mut input: &[u8] = &chunk;
                while let Some(decision) = vad.push(input) {
                    input = &[];
                    let update = match decision {
                        VadEvent::SpeechStarted { .. } => AudioUpdate::SpeechStarted,
                        VadEvent::EndOfSpeech { at } => AudioUpdate::EndOfSpeech {
                            at,
                            heard_speech: vad.speech_started().is_some(),
                        },
                    };
                    let _ = updates.send(update).await;
                }
            }
            Ok(Some(PartEvent::BinaryEnd)) => in_audio = false,
            Ok(Some(PartEvent::Oversized { limit_bytes, .. })) => {
                let why = format!("a part is larger than {limit_bytes} bytes");
                let _ = updates.send(AudioUpdate::Malformed(why)).await;
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                let _ = updates
                    .send(AudioUpdate::BodyEnded {
                        audio_bytes: pcm.len(),
                    })
                    .await;
                break;
            }
            Err(e) if e.is_stream_error() => {
                // The device stopped the upload by resetting; what arrived still counts.
                let _ = updates
                    .send(AudioUpdate::BodyEnded {
                        audio_bytes: pcm.len(),
                    })
                    .await;
                break;
            }
            Err(e) => {
                let _ = updates.send(AudioUpdate::Malformed(e.to_string())).await;
                break;
            }
        }
    }
    if pcm.is_empty() {
        return;
    }
    let pcm = pcm.freeze();
    let path = wav_path.clone();
    match tokio::task::spawn_blocking(move || crate::recorder::write_wav(&path, &pcm)).await {
        Ok(Ok(())) => shared.recorder.set_audio(seq, wav_path),
        Ok(Err(e)) => tracing::warn!(error = %e, "saving Recognize audio failed"),
        Err(e) => tracing::warn!(error = %e, "saving Recognize audio failed"),
    }
}
