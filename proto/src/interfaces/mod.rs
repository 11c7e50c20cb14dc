//! One module per AVS interface. Each holds a `Directive` enum and an `Event` enum, both
//! adjacently tagged by `name` with the payload as content, so `(header.name, payload)` maps
//! straight onto a variant. Payload structs use the AVS field names (camelCase).

pub mod alerts;
pub mod api_gateway;
pub mod audio_player;
pub mod discovery;
pub mod interaction_model;
pub mod playback_controller;
pub mod speaker;
pub mod speech_recognizer;
pub mod speech_synthesizer;
pub mod system;

use serde::{Deserialize, Serialize};

/// An empty JSON object payload (`{}`), which AVS requires even where nothing is carried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `{"token": "..."}`, the payload of many events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPayload {
    pub token: String,
}

/// `{"token": "...", "offsetInMilliseconds": n}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenOffset {
    pub token: String,
    pub offset_in_milliseconds: u64,
}

/// Lenient variant of [`Empty`]: accepts any object and ignores its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnyObject {}
