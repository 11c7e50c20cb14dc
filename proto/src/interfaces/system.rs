//! System: state synchronisation, inactivity, endpoint changes, software info, exceptions.

use serde::{Deserialize, Serialize};

use super::AnyObject;

pub const NAMESPACE: &str = "System";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Directive {
    ResetUserInactivity(AnyObject),
    SetEndpoint(SetEndpoint),
    ReportSoftwareInfo(AnyObject),
    RevokeAuthorization(AnyObject),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetEndpoint {
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Event {
    SynchronizeState(AnyObject),
    UserInactivityReport(UserInactivityReport),
    ExceptionEncountered(ExceptionEncountered),
    SoftwareInfo(SoftwareInfo),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInactivityReport {
    pub inactive_time_in_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionEncountered {
    /// The whole received directive JSON, as a string.
    pub unparsed_directive: String,
    pub error: ExceptionError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionError {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SoftwareInfo {
    pub firmware_version: String,
}
