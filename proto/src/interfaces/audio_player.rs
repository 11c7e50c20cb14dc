//! AudioPlayer: Play, Stop, ClearQueue and every playback event.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AnyObject, TokenOffset};

pub const NAMESPACE: &str = "AudioPlayer";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Directive {
    Play(Play),
    Stop(AnyObject),
    ClearQueue(ClearQueue),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlayBehavior {
    ReplaceAll,
    Enqueue,
    ReplaceEnqueued,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Play {
    /// Absent means ENQUEUE (reference client default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_behavior: Option<PlayBehavior>,
    pub audio_item: AudioItem,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioItem {
    #[serde(default)]
    pub audio_item_id: Option<String>,
    pub stream: Stream,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stream {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_format: Option<String>,
    #[serde(default)]
    pub offset_in_milliseconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_report: Option<ProgressReport>,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_previous_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressReport {
    #[serde(default)]
    pub progress_report_delay_in_milliseconds: Option<u64>,
    #[serde(default)]
    pub progress_report_interval_in_milliseconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClearBehavior {
    ClearEnqueued,
    ClearAll,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClearQueue {
    pub clear_behavior: ClearBehavior,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Event {
    PlaybackStarted(TokenOffset),
    PlaybackNearlyFinished(TokenOffset),
    ProgressReportDelayElapsed(TokenOffset),
    ProgressReportIntervalElapsed(TokenOffset),
    PlaybackStutterStarted(TokenOffset),
    PlaybackStutterFinished(StutterFinished),
    PlaybackFinished(TokenOffset),
    PlaybackStopped(TokenOffset),
    PlaybackPaused(TokenOffset),
    PlaybackResumed(TokenOffset),
    PlaybackFailed(PlaybackFailed),
    PlaybackQueueCleared(AnyObject),
    StreamMetadataExtracted(StreamMetadata),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StutterFinished {
    pub token: String,
    pub offset_in_milliseconds: u64,
    pub stutter_duration_in_milliseconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaybackFailed {
    pub token: String,
    pub current_playback_state: Value,
    pub error: MediaError,
}

/// `error` of PlaybackFailed; `type` is one of the MEDIA_ERROR_* values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaError {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMetadata {
    pub token: String,
    pub metadata: Value,
}
