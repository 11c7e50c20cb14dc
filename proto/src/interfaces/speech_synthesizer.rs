//! SpeechSynthesizer: Speak and the speech lifecycle events.

use serde::{Deserialize, Serialize};

use super::{TokenOffset, TokenPayload};

pub const NAMESPACE: &str = "SpeechSynthesizer";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Directive {
    Speak(Speak),
}

/// How a Speak relates to speech already queued or playing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlayBehavior {
    Enqueue,
    ReplaceEnqueued,
    ReplaceAll,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Speak {
    /// `cid:<content-id>` of the MP3 attachment.
    pub url: String,
    pub format: String,
    pub token: String,
    /// Absent means REPLACE_ALL in the current reference client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_behavior: Option<PlayBehavior>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Event {
    SpeechStarted(TokenPayload),
    SpeechFinished(TokenPayload),
    SpeechInterrupted(TokenOffset),
}
