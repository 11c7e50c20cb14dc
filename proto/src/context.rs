//! Context entries: the state objects (`{"header":{namespace,name},"payload":{...}}`) a device
//! attaches to events such as Recognize and SynchronizeState.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Header of a context entry: namespace and name only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextHeader {
    pub namespace: String,
    pub name: String,
}

/// One state object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextEntry {
    pub header: ContextHeader,
    pub payload: Value,
}

impl ContextEntry {
    pub fn new(namespace: &str, name: &str, payload: Value) -> Self {
        Self {
            header: ContextHeader {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            payload,
        }
    }

    /// `SpeechRecognizer.RecognizerState`.
    pub fn recognizer_state(wakeword: &str) -> Self {
        Self::new(
            "SpeechRecognizer",
            "RecognizerState",
            json!({ "wakeword": wakeword }),
        )
    }

    /// `SpeechSynthesizer.SpeechState`; `player_activity` is PLAYING, FINISHED or INTERRUPTED.
    pub fn speech_state(token: &str, offset_ms: u64, player_activity: &str) -> Self {
        Self::new(
            "SpeechSynthesizer",
            "SpeechState",
            json!({ "token": token, "offsetInMilliseconds": offset_ms, "playerActivity": player_activity }),
        )
    }

    /// `AudioPlayer.PlaybackState`.
    pub fn playback_state(token: &str, offset_ms: u64, player_activity: &str) -> Self {
        Self::new(
            "AudioPlayer",
            "PlaybackState",
            json!({ "token": token, "offsetInMilliseconds": offset_ms, "playerActivity": player_activity }),
        )
    }

    /// `Speaker.VolumeState`.
    pub fn volume_state(volume: u8, muted: bool) -> Self {
        Self::new(
            "Speaker",
            "VolumeState",
            json!({ "volume": volume, "muted": muted }),
        )
    }

    /// `Alerts.AlertsState`; each list holds `{"token","type","scheduledTime"}` objects.
    pub fn alerts_state(all: Vec<Value>, active: Vec<Value>) -> Self {
        Self::new(
            "Alerts",
            "AlertsState",
            json!({ "allAlerts": all, "activeAlerts": active }),
        )
    }

    /// `namespace.name` of this entry.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.header.namespace, self.header.name)
    }
}

/// Finds the entry `namespace.name` in a context.
pub fn find<'a>(
    context: &'a [ContextEntry],
    namespace: &str,
    name: &str,
) -> Option<&'a ContextEntry> {
    context
        .iter()
        .find(|e| e.header.namespace == namespace && e.header.name == name)
}
