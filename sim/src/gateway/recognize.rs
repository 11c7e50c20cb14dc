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
use h2::SendStream;
use h2::server::SendResponse;
use http::{Response, StatusCode};
use tokio::sync::mpsc;

use super::{ConnCtx, DownchannelCommand, respond_bytes, respond_exception, send_bytes};
use crate::Shared;
use crate::lwa::Grant;
use crate::turn::{self, TurnDirective};
use crate::vad::{EndOfSpeechDetector, VadConfig, VadEvent};

/// How long the half attachment is left to be read before the stream is reset.
const KILL_DELAY: Duration = Duration::from_millis(300);

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

/// The open response stream of the Recognize, once headers are sent.
struct Out {
    stream: SendStream<Bytes>,
    writer: avs_proto::multipart::RelatedWriter,
}

fn start_response(respond: &mut SendResponse<Bytes>) -> Option<Out> {
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
        .join(format!("recognize-{seq}-{}.wav", sanitize(&dialog)));
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
    loop {
        let update = tokio::select! {
            u = audio_rx.recv() => u,
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

    let mut out = None;
    if end_of_speech {
        if shared.config.stop_capture_on_event_stream {
            out = start_response(&mut respond);
            if let Some(o) = out.as_mut()
                && super::write_directive(&mut o.stream, &mut o.writer, &stop_capture(&dialog))
                    .await
                    .is_err()
            {
                return;
            }
        } else if let Some(dev) = shared.devices.get(&grant.device_serial) {
            let _ = dev
                .downchannel
                .send(DownchannelCommand::Push(stop_capture(&dialog)))
                .await;
        } else {
            tracing::warn!(serial = %grant.device_serial, "no downchannel for StopCapture");
        }
    }

    if turn.reject || !heard_speech {
        tracing::info!(%dialog, audio_bytes_seen, reject = turn.reject, "no answer (false wake or silence)");
        finish_empty(&shared, seq, &mut respond, out).await;
        return;
    }

    let (sink, mut directives) = mpsc::channel::<TurnDirective>(4);
    let ctx = turn::TurnContext {
        dialog_request_id: dialog.clone(),
        device_serial: grant.device_serial.clone(),
        client_id: grant.client_id.clone(),
    };
    let producer = tokio::spawn(turn::run(shared.clone(), ctx, turn, sink));

    let kill_mid_attachment = shared.faults.take_kill_mid_attachment();
    loop {
        let next = tokio::select! {
            d = directives.recv() => d,
            _ = conn.closing.cancelled() => { producer.abort(); return; }
        };
        let Some(d) = next else { break };
        if out.is_none() {
            out = start_response(&mut respond);
        }
        let Some(o) = out.as_mut() else {
            producer.abort();
            return;
        };
        if kill_mid_attachment && let Some((cid, mp3)) = &d.attachment {
            let _ = send_bytes(&mut o.stream, o.writer.json_part(&d.json), false).await;
            let _ = send_bytes(&mut o.stream, o.writer.binary_part_start(cid), false).await;
            let half = mp3.slice(..mp3.len() / 2);
            let _ = send_bytes(&mut o.stream, half, false).await;
            // A reset discards whatever the peer has not read yet; give it the first half.
            tokio::time::sleep(KILL_DELAY).await;
            o.stream.send_reset(h2::Reason::INTERNAL_ERROR);
            shared.recorder.set_status(seq, 200);
            producer.abort();
            return;
        }
        if let Err(e) = super::write_directive(&mut o.stream, &mut o.writer, &d).await {
            tracing::info!(error = %e, %dialog, "Recognize response stream broke");
            producer.abort();
            return;
        }
    }
    match producer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, %dialog, "turn failed"),
        Err(e) => tracing::warn!(error = %e, %dialog, "turn task failed"),
    }
    finish_empty(&shared, seq, &mut respond, out).await;
}

/// Ends the response: closes the multipart body if one was started, else answers `204`.
async fn finish_empty(
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

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
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
