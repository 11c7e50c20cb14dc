//! SpeechRecognizer: Recognize (with audio), StopCapture, ExpectSpeech and the 2.x settings.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AnyObject;

pub const NAMESPACE: &str = "SpeechRecognizer";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Directive {
    StopCapture(AnyObject),
    ExpectSpeech(ExpectSpeech),
    SetEndOfSpeechOffset(SetEndOfSpeechOffset),
    SetWakeWordConfirmation(WakeWordConfirmation),
    SetSpeechConfirmation(SpeechConfirmation),
    SetWakeWords(WakeWords),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpectSpeech {
    pub timeout_in_milliseconds: u64,
    /// Echoed verbatim as the next Recognize's initiator when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetEndOfSpeechOffset {
    pub end_of_speech_offset_in_milliseconds: u64,
    #[serde(default)]
    pub start_of_speech_timestamp: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WakeWordConfirmation {
    pub wake_word_confirmation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeechConfirmation {
    pub speech_confirmation: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WakeWords {
    pub wake_words: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Event {
    Recognize(Recognize),
    ExpectSpeechTimedOut(AnyObject),
    WakeWordConfirmationChanged(WakeWordConfirmation),
    WakeWordConfirmationReport(WakeWordConfirmation),
    SpeechConfirmationChanged(SpeechConfirmation),
    SpeechConfirmationReport(SpeechConfirmation),
    WakeWordsChanged(WakeWords),
    WakeWordsReport(WakeWords),
}

/// ASR profile: who decides the end of speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Profile {
    CloseTalk,
    NearField,
    FarField,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recognize {
    pub profile: Profile,
    pub format: String,
    /// `{"type": "TAP"|"PRESS_AND_HOLD"|"WAKEWORD", "payload": {...}}`, or the object echoed from
    /// ExpectSpeech; absent after an ExpectSpeech that carried none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_of_speech_timestamp: Option<String>,
}
