//! Speaker: SetVolume, AdjustVolume, SetMute and the change events.

use serde::{Deserialize, Serialize};

pub const NAMESPACE: &str = "Speaker";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Directive {
    SetVolume(Volume),
    AdjustVolume(VolumeDelta),
    SetMute(Mute),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub volume: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDelta {
    pub volume: i16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mute {
    pub mute: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Event {
    VolumeChanged(VolumeState),
    MuteChanged(VolumeState),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeState {
    pub volume: u8,
    pub muted: bool,
}
