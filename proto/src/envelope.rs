//! The AVS envelope: a header (namespace, name, messageId, optional dialogRequestId) and a
//! payload, wrapped as `{"event": ...}` (device to cloud) or `{"directive": ...}` (cloud to
//! device). Unknown header fields are kept so nothing a peer sent is lost on the way through.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::context::ContextEntry;

/// The header of an event or a directive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub namespace: String,
    pub name: String,
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialog_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_correlation_token: Option<String>,
    /// Fields this crate does not model (`instance`, `correlationToken`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Header {
    /// A header with a fresh messageId.
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            message_id: crate::new_message_id(),
            dialog_request_id: None,
            payload_version: None,
            event_correlation_token: None,
            extra: Map::new(),
        }
    }

    /// The same header carrying a dialogRequestId.
    pub fn with_dialog(mut self, dialog_request_id: Option<String>) -> Self {
        self.dialog_request_id = dialog_request_id;
        self
    }

    /// `Namespace.Name`, for logs.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// A header plus its payload: the body of an event or a directive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub header: Header,
    pub payload: Value,
}

/// `{"context": [...], "event": {...}}`: the metadata part of an event request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<ContextEntry>>,
    pub event: Message,
}

impl EventEnvelope {
    /// Serialises to the JSON text of the metadata part.
    pub fn to_json(&self) -> String {
        // Serialising plain data (strings, maps, numbers) cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `{"directive": {...}}`: one JSON part of a `multipart/related` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectiveEnvelope {
    pub directive: Message,
}

impl DirectiveEnvelope {
    pub fn new(header: Header, payload: Value) -> Self {
        Self {
            directive: Message { header, payload },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
