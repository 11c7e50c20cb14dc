//! Typed events. avsd builds them with [`Event::new`]; avs-sim parses a metadata part with
//! [`Event::from_json`], accepting both context shapes peers send (the documented array and the
//! reference SDK's `{"properties": [...]}` object).

use serde::Serialize;
use serde_json::Value;

use crate::context::ContextEntry;
use crate::directive::typed;
use crate::envelope::{EventEnvelope, Header, Message};
use crate::interfaces::{
    alerts, api_gateway, audio_player, discovery, playback_controller, speaker, speech_recognizer,
    speech_synthesizer, system,
};

/// The typed content of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    SpeechRecognizer(speech_recognizer::Event),
    SpeechSynthesizer(speech_synthesizer::Event),
    AudioPlayer(audio_player::Event),
    PlaybackController(playback_controller::Event),
    Speaker(speaker::Event),
    Alerts(alerts::Event),
    System(system::Event),
    ApiGateway(api_gateway::Event),
    Discovery(discovery::Event),
    Unknown,
}

/// Why an event metadata part was rejected.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("metadata is not an event envelope: {0}")]
    Envelope(String),
    #[error("bad payload for {name}: {reason}")]
    Payload { name: String, reason: String },
}

/// An event: header, typed content, payload and context.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub header: Header,
    pub kind: EventKind,
    pub payload: Value,
    pub context: Option<Vec<ContextEntry>>,
}

impl Event {
    /// Builds an event from a typed, adjacently tagged interface enum (e.g.
    /// `speech_synthesizer::Event::SpeechStarted(..)`).
    pub fn new<T: Serialize>(namespace: &str, typed_event: &T) -> Self {
        let v = serde_json::to_value(typed_event).unwrap_or(Value::Null);
        let name = v["name"].as_str().unwrap_or_default().to_owned();
        let payload = v
            .get("payload")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        Self {
            header: Header::new(namespace, &name),
            kind: EventKind::Unknown,
            payload,
            context: None,
        }
    }

    /// A free-form event (namespace, name, payload), for interfaces not modelled here.
    pub fn raw(namespace: &str, name: &str, payload: Value) -> Self {
        Self {
            header: Header::new(namespace, name),
            kind: EventKind::Unknown,
            payload,
            context: None,
        }
    }

    pub fn with_dialog(mut self, dialog_request_id: Option<String>) -> Self {
        self.header.dialog_request_id = dialog_request_id;
        self
    }

    pub fn with_context(mut self, context: Vec<ContextEntry>) -> Self {
        self.context = Some(context);
        self
    }

    /// The metadata part JSON.
    pub fn to_json(&self) -> String {
        EventEnvelope {
            context: self.context.clone(),
            event: Message {
                header: self.header.clone(),
                payload: self.payload.clone(),
            },
        }
        .to_json()
    }

    pub fn qualified_name(&self) -> String {
        self.header.qualified_name()
    }

    /// Parses a metadata part.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EventError> {
        let mut root: Value =
            serde_json::from_slice(bytes).map_err(|e| EventError::Envelope(e.to_string()))?;
        let context = match root.get_mut("context").map(Value::take) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(parse_entries(items)?),
            Some(Value::Object(mut o)) => match o.remove("properties") {
                Some(Value::Array(props)) => Some(props.into_iter().map(sdk_property).collect()),
                _ => {
                    return Err(EventError::Envelope(
                        "context object without properties".into(),
                    ));
                }
            },
            Some(_) => return Err(EventError::Envelope("context is not an array".into())),
        };
        // `get_mut`, not `root["event"]`: indexing a non-object JSON value panics (found by the
        // directive_from_json fuzz target with the input `6`).
        let event = root
            .get_mut("event")
            .map(Value::take)
            .unwrap_or(Value::Null);
        let message: Message = serde_json::from_value(event)
            .map_err(|e| EventError::Envelope(format!("event: {e}")))?;
        if !message.payload.is_object() {
            return Err(EventError::Envelope("payload is not an object".into()));
        }
        let h = &message.header;
        let p = &message.payload;
        let bad = |reason: String| EventError::Payload {
            name: h.qualified_name(),
            reason,
        };
        let kind = match h.namespace.as_str() {
            speech_recognizer::NAMESPACE => {
                typed(h, p).map_err(bad)?.map(EventKind::SpeechRecognizer)
            }
            speech_synthesizer::NAMESPACE => {
                typed(h, p).map_err(bad)?.map(EventKind::SpeechSynthesizer)
            }
            audio_player::NAMESPACE => typed(h, p).map_err(bad)?.map(EventKind::AudioPlayer),
            playback_controller::NAMESPACE => {
                typed(h, p).map_err(bad)?.map(EventKind::PlaybackController)
            }
            speaker::NAMESPACE => typed(h, p).map_err(bad)?.map(EventKind::Speaker),
            alerts::NAMESPACE => typed(h, p).map_err(bad)?.map(EventKind::Alerts),
            system::NAMESPACE => typed(h, p).map_err(bad)?.map(EventKind::System),
            api_gateway::NAMESPACE => typed(h, p).map_err(bad)?.map(EventKind::ApiGateway),
            discovery::NAMESPACE => typed(h, p).map_err(bad)?.map(EventKind::Discovery),
            _ => None,
        }
        .unwrap_or(EventKind::Unknown);
        Ok(Self {
            header: message.header,
            kind,
            payload: message.payload,
            context,
        })
    }
}

fn parse_entries(items: Vec<Value>) -> Result<Vec<ContextEntry>, EventError> {
    items
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| EventError::Envelope(format!("context: {e}")))
        })
        .collect()
}

/// The SDK v1.26 property shape `{"namespace","name","value",...}` as a documented entry.
fn sdk_property(mut v: Value) -> ContextEntry {
    let namespace = v["namespace"].as_str().unwrap_or_default().to_owned();
    let name = v["name"].as_str().unwrap_or_default().to_owned();
    let value = match v["value"].take() {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    };
    ContextEntry::new(&namespace, &name, value)
}

#[cfg(test)]
mod tests {
    /// Fuzz regression (fuzz/artifacts/directive_from_json/crash-c1dfd96e…): metadata that is
    /// valid JSON but not an object must be an error, not a panic.
    #[test]
    fn non_object_metadata_is_an_error_not_a_panic() {
        for input in [
            &b"6"[..],
            b"[]",
            b"\"x\"",
            b"null",
            b"true",
            b"[{\"event\":{}}]",
        ] {
            assert!(
                Event::from_json(input).is_err(),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    use super::*;
    use crate::interfaces::{TokenPayload, speech_synthesizer};

    #[test]
    fn round_trip_typed_event() {
        let e = Event::new(
            speech_synthesizer::NAMESPACE,
            &speech_synthesizer::Event::SpeechStarted(TokenPayload { token: "t1".into() }),
        )
        .with_context(vec![ContextEntry::volume_state(40, false)]);
        let parsed = Event::from_json(e.to_json().as_bytes()).unwrap();
        assert_eq!(parsed.header.name, "SpeechStarted");
        assert_eq!(
            parsed.kind,
            EventKind::SpeechSynthesizer(speech_synthesizer::Event::SpeechStarted(TokenPayload {
                token: "t1".into()
            }))
        );
        assert_eq!(parsed.context.unwrap()[0].payload["volume"], 40);
    }

    #[test]
    fn accepts_sdk_context_shape_and_rejects_bad_payloads() {
        let sdk = br#"{"context":{"properties":[{"namespace":"Speaker","name":"VolumeState","value":"{\"volume\":10,\"muted\":false}"}]},"event":{"header":{"namespace":"System","name":"SynchronizeState","messageId":"m"},"payload":{}}}"#;
        let e = Event::from_json(sdk).unwrap();
        assert_eq!(e.context.unwrap()[0].payload["volume"], 10);
        let bad = br#"{"event":{"header":{"namespace":"SpeechSynthesizer","name":"SpeechStarted","messageId":"m"},"payload":{}}}"#;
        assert!(matches!(
            Event::from_json(bad),
            Err(EventError::Payload { .. })
        ));
        assert!(Event::from_json(b"{").is_err());
    }
}
