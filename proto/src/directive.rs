//! Parsing one directive JSON part into a typed [`Directive`].
//!
//! Three outcomes, each with its own consequence for the device (AVS §6.2):
//! - the envelope is not `{"directive":{"header":{namespace,name,messageId},"payload":{}}}`, or a
//!   known directive's payload does not fit: [`DirectiveError`], answered with
//!   `ExceptionEncountered` / `UNEXPECTED_INFORMATION_RECEIVED`;
//! - the namespace/name is one this crate does not know: [`DirectiveKind::Unknown`], answered with
//!   `UNSUPPORTED_OPERATION` by whoever has no handler for it;
//! - otherwise a typed variant.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::envelope::{DirectiveEnvelope, Header};
use crate::interfaces::{
    alerts, api_gateway, audio_player, discovery, interaction_model, speaker, speech_recognizer,
    speech_synthesizer, system,
};

/// `error.type` of `System.ExceptionEncountered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionType {
    UnexpectedInformationReceived,
    UnsupportedOperation,
    InternalError,
}

impl ExceptionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnexpectedInformationReceived => "UNEXPECTED_INFORMATION_RECEIVED",
            Self::UnsupportedOperation => "UNSUPPORTED_OPERATION",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// A directive part that could not be understood. Keeps the raw text for the exception event.
#[derive(Debug, thiserror::Error)]
#[error("malformed directive: {reason}")]
pub struct DirectiveError {
    pub reason: String,
    /// The received text (lossily decoded), for `unparsedDirective`.
    pub raw: String,
    /// The header, when at least that much parsed.
    pub header: Option<Box<Header>>,
}

impl DirectiveError {
    pub fn exception_type(&self) -> ExceptionType {
        ExceptionType::UnexpectedInformationReceived
    }
}

/// The typed content of a directive.
#[derive(Debug, Clone, PartialEq)]
pub enum DirectiveKind {
    SpeechRecognizer(speech_recognizer::Directive),
    SpeechSynthesizer(speech_synthesizer::Directive),
    AudioPlayer(audio_player::Directive),
    Speaker(speaker::Directive),
    Alerts(alerts::Directive),
    System(system::Directive),
    InteractionModel(interaction_model::Directive),
    ApiGateway(api_gateway::Directive),
    /// The bare `Alexa` namespace (`EventProcessed`).
    Alexa(discovery::AlexaDirective),
    /// A namespace or name this crate does not model; the payload is kept in [`Directive::payload`].
    Unknown,
}

/// A parsed directive: header, typed content, raw payload and the raw text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub header: Header,
    pub kind: DirectiveKind,
    pub payload: Value,
    pub raw: String,
}

impl Directive {
    /// Parses the JSON body of one `multipart/related` part.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DirectiveError> {
        let raw = String::from_utf8_lossy(bytes).into_owned();
        let envelope: DirectiveEnvelope = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            Err(e) => {
                let header = serde_json::from_slice::<Value>(bytes)
                    .ok()
                    .and_then(|v| serde_json::from_value(v["directive"]["header"].clone()).ok())
                    .map(Box::new);
                return Err(DirectiveError {
                    reason: e.to_string(),
                    raw,
                    header,
                });
            }
        };
        let header = envelope.directive.header;
        let payload = envelope.directive.payload;
        if !payload.is_object() {
            return Err(DirectiveError {
                reason: "payload is not a JSON object".into(),
                raw,
                header: Some(Box::new(header.clone())),
            });
        }
        let kind = match typed_kind(&header, &payload) {
            Ok(kind) => kind,
            Err(reason) => {
                return Err(DirectiveError {
                    reason,
                    raw,
                    header: Some(Box::new(header.clone())),
                });
            }
        };
        Ok(Self {
            header,
            kind,
            payload,
            raw,
        })
    }

    /// `Namespace.Name`.
    pub fn qualified_name(&self) -> String {
        self.header.qualified_name()
    }

    pub fn dialog_request_id(&self) -> Option<&str> {
        self.header.dialog_request_id.as_deref()
    }

    /// Builds the JSON text of a directive (used by avs-sim and tests).
    pub fn build(header: Header, payload: Value) -> String {
        DirectiveEnvelope::new(header, payload).to_json()
    }
}

fn typed_kind(header: &Header, payload: &Value) -> Result<DirectiveKind, String> {
    Ok(match header.namespace.as_str() {
        speech_recognizer::NAMESPACE => {
            typed(header, payload)?.map_or(DirectiveKind::Unknown, DirectiveKind::SpeechRecognizer)
        }
        speech_synthesizer::NAMESPACE => {
            typed(header, payload)?.map_or(DirectiveKind::Unknown, DirectiveKind::SpeechSynthesizer)
        }
        audio_player::NAMESPACE => {
            typed(header, payload)?.map_or(DirectiveKind::Unknown, DirectiveKind::AudioPlayer)
        }
        speaker::NAMESPACE => {
            typed(header, payload)?.map_or(DirectiveKind::Unknown, DirectiveKind::Speaker)
        }
        alerts::NAMESPACE => {
            typed(header, payload)?.map_or(DirectiveKind::Unknown, DirectiveKind::Alerts)
        }
        system::NAMESPACE => {
            typed(header, payload)?.map_or(DirectiveKind::Unknown, DirectiveKind::System)
        }
        interaction_model::NAMESPACE => {
            typed(header, payload)?.map_or(DirectiveKind::Unknown, DirectiveKind::InteractionModel)
        }
        api_gateway::NAMESPACE => {
            typed(header, payload)?.map_or(DirectiveKind::Unknown, DirectiveKind::ApiGateway)
        }
        discovery::ALEXA_NAMESPACE => {
            typed(header, payload)?.map_or(DirectiveKind::Unknown, DirectiveKind::Alexa)
        }
        _ => DirectiveKind::Unknown,
    })
}

/// Deserialises `(name, payload)` into an adjacently tagged enum `T`. `Ok(None)` when `T` has no
/// variant of that name; `Err` when it has one but the payload does not fit.
pub(crate) fn typed<T: DeserializeOwned>(
    header: &Header,
    payload: &Value,
) -> Result<Option<T>, String> {
    let tagged = json!({ "name": header.name, "payload": payload });
    match serde_json::from_value::<T>(tagged) {
        Ok(t) => Ok(Some(t)),
        Err(e) => {
            let msg = e.to_string();
            if msg.starts_with("unknown variant") {
                Ok(None)
            } else {
                Err(format!("{}: {msg}", header.qualified_name()))
            }
        }
    }
}

#[cfg(test)]
mod tests;
