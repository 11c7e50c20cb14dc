//! PlaybackController: transport-button events (they carry full context, payload `{}`).

use serde::{Deserialize, Serialize};

use super::AnyObject;

pub const NAMESPACE: &str = "PlaybackController";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Event {
    PlayCommandIssued(AnyObject),
    PauseCommandIssued(AnyObject),
    NextCommandIssued(AnyObject),
    PreviousCommandIssued(AnyObject),
}
