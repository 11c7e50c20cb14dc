//! Alerts: SetAlert, DeleteAlert(s), alert volume, and the alert lifecycle events.

use serde::{Deserialize, Serialize};

use super::TokenPayload;
use super::speaker::{Volume, VolumeDelta};

pub const NAMESPACE: &str = "Alerts";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Directive {
    SetAlert(SetAlert),
    DeleteAlert(TokenPayload),
    DeleteAlerts(Tokens),
    SetVolume(Volume),
    AdjustVolume(VolumeDelta),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetAlert {
    pub token: String,
    /// TIMER, ALARM or REMINDER (anything else is treated as ALARM).
    #[serde(rename = "type")]
    pub kind: String,
    /// ISO 8601, e.g. `2024-05-02T06:30:00+0000`.
    pub scheduled_time: String,
    #[serde(default)]
    pub assets: Vec<Asset>,
    #[serde(default)]
    pub asset_play_order: Vec<String>,
    #[serde(default)]
    pub background_alert_asset: Option<String>,
    #[serde(default)]
    pub loop_count: Option<u32>,
    #[serde(default, rename = "loopPauseInMilliSeconds")]
    pub loop_pause_in_milliseconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Asset {
    pub asset_id: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Event {
    SetAlertSucceeded(TokenPayload),
    SetAlertFailed(TokenPayload),
    DeleteAlertSucceeded(TokenPayload),
    DeleteAlertFailed(TokenPayload),
    DeleteAlertsSucceeded(Tokens),
    DeleteAlertsFailed(Tokens),
    AlertStarted(TokenPayload),
    AlertStopped(TokenPayload),
    AlertEnteredForeground(TokenPayload),
    AlertEnteredBackground(TokenPayload),
    VolumeChanged(Volume),
}
