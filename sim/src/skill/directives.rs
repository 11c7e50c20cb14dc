//! A skill's answer as AVS directives: `SpeechSynthesizer.Speak` with real MP3,
//! `SpeechRecognizer.ExpectSpeech`, and ASK `AudioPlayer.*` mapped to their AVS counterparts.

use avs_proto::Header;
use avs_proto::interfaces::{audio_player, speech_recognizer, speech_synthesizer};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{EXPECT_SPEECH_TIMEOUT_MS, SkillError};
use crate::speech;
use crate::turn::TurnDirective;

/// A `SpeechSynthesizer.Speak` with the speech rendered to MP3 (ENQUEUE unless the skill said
/// otherwise, so it never cuts interim speech off).
pub(super) async fn speak_directive(
    dialog_request_id: &str,
    speech: &str,
    behavior: Option<speech_synthesizer::PlayBehavior>,
) -> Result<TurnDirective, SkillError> {
    let text = speech.to_owned();
    let mp3: Bytes = tokio::task::spawn_blocking(move || speech::synthesize_mp3(&text))
        .await
        .map_err(SkillError::SpeechTask)?
        .map_err(SkillError::Speech)?;
    let token = format!("amzn1.as-ct.v1.sim-tts.{}", uuid::Uuid::new_v4().simple());
    let content_id = format!("tts-{}", uuid::Uuid::new_v4().simple());
    let payload = speech_synthesizer::Speak {
        url: format!("cid:{content_id}"),
        format: "AUDIO_MPEG".to_owned(),
        token,
        play_behavior: Some(behavior.unwrap_or(speech_synthesizer::PlayBehavior::Enqueue)),
        caption: None,
    };
    let json = avs_proto::Directive::build(
        header(speech_synthesizer::NAMESPACE, "Speak", dialog_request_id),
        serde_json::to_value(payload).unwrap_or(Value::Null),
    );
    Ok(TurnDirective {
        json,
        attachment: Some((content_id, mp3)),
    })
}

pub(super) fn expect_speech_directive(dialog_request_id: &str) -> TurnDirective {
    let payload = speech_recognizer::ExpectSpeech {
        timeout_in_milliseconds: EXPECT_SPEECH_TIMEOUT_MS,
        initiator: None,
    };
    TurnDirective {
        json: avs_proto::Directive::build(
            header(
                speech_recognizer::NAMESPACE,
                "ExpectSpeech",
                dialog_request_id,
            ),
            serde_json::to_value(payload).unwrap_or(Value::Null),
        ),
        attachment: None,
    }
}

/// ASK `AudioPlayer.Play` / `Stop` / `ClearQueue` to their AVS counterparts.
pub(super) fn audio_directive(dialog_request_id: &str, directive: &Value) -> Option<String> {
    let kind = directive.get("type")?.as_str()?;
    let (name, payload) = match kind {
        "AudioPlayer.Play" => {
            let stream = directive.pointer("/audioItem/stream")?;
            let token = stream.get("token")?.as_str()?.to_owned();
            let play = audio_player::Play {
                play_behavior: directive
                    .get("playBehavior")
                    .and_then(|b| serde_json::from_value(b.clone()).ok()),
                audio_item: audio_player::AudioItem {
                    audio_item_id: Some(token.clone()),
                    stream: audio_player::Stream {
                        url: stream.get("url")?.as_str()?.to_owned(),
                        stream_format: None,
                        offset_in_milliseconds: stream
                            .get("offsetInMilliseconds")
                            .and_then(Value::as_u64)
                            .unwrap_or(0),
                        expiry_time: None,
                        progress_report: None,
                        token,
                        expected_previous_token: stream
                            .get("expectedPreviousToken")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    },
                },
            };
            ("Play", serde_json::to_value(play).ok()?)
        }
        "AudioPlayer.Stop" => ("Stop", json!({})),
        "AudioPlayer.ClearQueue" => {
            let behavior = directive
                .get("clearBehavior")
                .and_then(Value::as_str)
                .unwrap_or("CLEAR_ENQUEUED");
            ("ClearQueue", json!({ "clearBehavior": behavior }))
        }
        _ => return None,
    };
    Some(avs_proto::Directive::build(
        header(audio_player::NAMESPACE, name, dialog_request_id),
        payload,
    ))
}

fn header(namespace: &str, name: &str, dialog_request_id: &str) -> Header {
    Header::new(namespace, name)
        .with_dialog((!dialog_request_id.is_empty()).then(|| dialog_request_id.to_owned()))
}
