//! The turn engine's contract: how a turn's directives reach the open Recognize response
//! stream. The gateway owns the stream; whoever produces a turn's answer (a scenario, a skill
//! through `skill::run_turn`) only holds a [`TurnSink`], and the stream ends when every sink
//! clone is dropped.

/// One directive for the open Recognize response stream, with its MP3 attachment if it has one.
pub struct TurnDirective {
    pub json: String,
    pub attachment: Option<(String /* content id */, bytes::Bytes)>,
}

/// Where a turn's directives go: the writer of the Recognize's response stream.
pub type TurnSink = tokio::sync::mpsc::Sender<TurnDirective>;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::Shared;
use crate::scenario::{PlaySource, Turn};

/// Who and what a turn answers.
#[derive(Debug, Clone)]
pub struct TurnContext {
    pub dialog_request_id: String,
    pub device_serial: String,
    pub client_id: String,
}

/// Why a turn could not be played to its end.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    #[error("speech synthesis failed: {0}")]
    Speech(#[from] crate::speech::SpeechError),
    #[error("the synthesis task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the Recognize response stream is gone")]
    StreamGone,
    #[error("the skill turn failed: {0}")]
    Skill(#[from] crate::skill::SkillError),
    #[error("the skill endpoint {0:?} is not a URL")]
    BadSkillEndpoint(String),
    #[error("no skill endpoint: set --skill-endpoint or the turn's skill.endpoint")]
    NoSkillEndpoint,
}

/// How long a held final speech waits for the device's SpeechFinished.
const HOLD_FINAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Real MP3 speech for `text`, produced on a blocking thread.
pub async fn synthesize(text: &str) -> Result<bytes::Bytes, TurnError> {
    let text = text.to_owned();
    Ok(tokio::task::spawn_blocking(move || crate::speech::synthesize_mp3(&text)).await??)
}

/// A `SpeechSynthesizer.Speak` for `mp3`, its attachment named after `token`.
pub fn speak(
    dialog_request_id: &str,
    token: &str,
    play_behavior: &str,
    mp3: bytes::Bytes,
) -> TurnDirective {
    let header = avs_proto::Header::new("SpeechSynthesizer", "Speak")
        .with_dialog(dialog_id(dialog_request_id));
    let payload = json!({
        "url": format!("cid:{token}"),
        "format": "AUDIO_MPEG",
        "token": token,
        "playBehavior": play_behavior,
    });
    TurnDirective {
        json: avs_proto::DirectiveEnvelope::new(header, payload).to_json(),
        attachment: Some((token.to_owned(), mp3)),
    }
}

/// The header's dialogRequestId: none for an answer to an event outside a dialog.
fn dialog_id(dialog_request_id: &str) -> Option<String> {
    (!dialog_request_id.is_empty()).then(|| dialog_request_id.to_owned())
}

async fn send(sink: &TurnSink, d: TurnDirective) -> Result<(), TurnError> {
    sink.send(d).await.map_err(|_| TurnError::StreamGone)
}

/// Sends a directive that has no attachment.
async fn send_json(sink: &TurnSink, json: String) -> Result<(), TurnError> {
    send(
        sink,
        TurnDirective {
            json,
            attachment: None,
        },
    )
    .await
}

/// Plays `turn` into `sink`; returns when every directive of the response stream is written
/// (downchannel pushes continue on their own task).
pub async fn run(
    shared: Arc<Shared>,
    ctx: TurnContext,
    turn: Turn,
    sink: TurnSink,
) -> Result<(), TurnError> {
    if let Some(skill) = turn.skill.clone() {
        return run_skill(&shared, &ctx, &skill, sink).await;
    }
    // Answers to other events (no dialog) never go to the skill on their own.
    if turn.interim.is_empty()
        && turn.final_speech.is_none()
        && !ctx.dialog_request_id.is_empty()
        && shared.config.skill_endpoint.is_some()
    {
        return run_skill(&shared, &ctx, &crate::scenario::SkillSpec::default(), sink).await;
    }
    let dialog = ctx.dialog_request_id.as_str();
    // Tokens double as Content-IDs (a MIME header): only safe characters from the device's id.
    let dialog_tag = token_safe(dialog);
    let mut last_interim_token = None;
    for (n, interim) in turn.interim.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(interim.delay_ms)).await;
        let mp3 = synthesize(&interim.text).await?;
        let token = format!("interim-{dialog_tag}-{n}");
        send(&sink, speak(dialog, &token, "ENQUEUE", mp3)).await?;
        last_interim_token = Some(token);
    }
    if let Some(text) = &turn.final_speech {
        let mp3 = synthesize(text).await?;
        if turn.hold_final_until_speech_finished
            && let Some(token) = &last_interim_token
        {
            let waited = shared
                .recorder
                .wait_for(
                    0,
                    HOLD_FINAL_TIMEOUT,
                    "SpeechFinished of the last interim",
                    |r| {
                        r.event.as_ref().is_some_and(|e| {
                            e.qualified_name() == "SpeechSynthesizer.SpeechFinished"
                                && e.payload["token"].as_str() == Some(token.as_str())
                        })
                    },
                )
                .await;
            if let Err(e) = waited {
                tracing::warn!(error = %e, "sending the final speech without SpeechFinished");
            }
        }
        let token = format!("final-{dialog_tag}");
        send(
            &sink,
            speak(dialog, &token, turn.play_behavior.as_str(), mp3),
        )
        .await?;
    }
    if let Some(timeout_ms) = turn.expect_speech_timeout_ms {
        let header = avs_proto::Header::new("SpeechRecognizer", "ExpectSpeech")
            .with_dialog(dialog_id(dialog));
        let json =
            avs_proto::DirectiveEnvelope::new(header, json!({"timeoutInMilliseconds": timeout_ms}))
                .to_json();
        send_json(&sink, json).await?;
    }
    if let Some(play) = &turn.play {
        let mp3 = synthesize(&play.text).await?;
        let token = play
            .token
            .clone()
            .unwrap_or_else(|| format!("play-{dialog_tag}"));
        let (url, attachment) = match play.source {
            PlaySource::Attachment => (format!("cid:{token}"), Some((token.clone(), mp3))),
            PlaySource::Url => {
                let id = format!("{}.mp3", uuid::Uuid::new_v4().simple());
                let url = shared
                    .base_url
                    .join(&format!("media/{id}"))
                    .map(|u| u.to_string());
                shared.put_media(id, mp3);
                (url.unwrap_or_default(), None)
            }
        };
        let header = avs_proto::Header::new("AudioPlayer", "Play").with_dialog(dialog_id(dialog));
        let payload = json!({
            "playBehavior": play.play_behavior,
            "audioItem": {
                "audioItemId": token,
                "stream": {"url": url, "streamFormat": "AUDIO_MPEG", "offsetInMilliseconds": 0, "token": token},
            },
        });
        let json = avs_proto::DirectiveEnvelope::new(header, payload).to_json();
        send(&sink, TurnDirective { json, attachment }).await?;
    }
    for d in &turn.directives {
        let with_dialog = d.with_dialog.unwrap_or(true);
        let json = d.to_json(with_dialog.then_some(dialog).filter(|d| !d.is_empty()));
        send_json(&sink, json).await?;
    }
    if !turn.downchannel.is_empty() {
        let pushes = turn.downchannel.clone();
        let shared = shared.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            for p in pushes {
                tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
                let with_dialog = p.directive.with_dialog.unwrap_or(false);
                let json = p
                    .directive
                    .to_json(with_dialog.then_some(ctx.dialog_request_id.as_str()));
                if let Err(e) = crate::admin::push(&shared, Some(&ctx.device_serial), json).await {
                    tracing::warn!(error = %e, "scenario downchannel push failed");
                }
            }
        });
    }
    Ok(())
}

async fn run_skill(
    shared: &Arc<Shared>,
    ctx: &TurnContext,
    skill: &crate::scenario::SkillSpec,
    sink: TurnSink,
) -> Result<(), TurnError> {
    let endpoint = match &skill.endpoint {
        Some(e) => url::Url::parse(e).map_err(|_| TurnError::BadSkillEndpoint(e.clone()))?,
        None => shared
            .config
            .skill_endpoint
            .clone()
            .ok_or(TurnError::NoSkillEndpoint)?,
    };
    let turn = crate::skill::SkillTurn {
        endpoint,
        api_endpoint: shared.base_url.clone(),
        dialog_request_id: ctx.dialog_request_id.clone(),
        intent: skill.intent.clone(),
        slots: skill.slots.clone(),
        locale: shared.config.locale.clone(),
        device_id: ctx.device_serial.clone(),
        user_id: format!("amzn1.ask.account.{}", ctx.client_id),
    };
    crate::skill::run_turn(turn, &shared.live, sink).await?;
    Ok(())
}

/// `s` reduced to characters safe in a token, a Content-ID and a file name (at most 64).
pub fn token_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}
