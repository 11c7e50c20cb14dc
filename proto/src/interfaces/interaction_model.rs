//! InteractionModel 1.2: cloud-initiated dialogs and request-processing markers (no events).

use serde::{Deserialize, Serialize};

use super::AnyObject;

pub const NAMESPACE: &str = "InteractionModel";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Directive {
    NewDialogRequest(NewDialogRequest),
    RequestProcessingStarted(AnyObject),
    RequestProcessingCompleted(AnyObject),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewDialogRequest {
    pub dialog_request_id: String,
}
