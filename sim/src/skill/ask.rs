//! The ASK wire format of "Handle Requests Sent by Alexa": request envelopes (session,
//! context.System, request) and the parts of a skill's response the sim acts on.

use std::collections::BTreeMap;

use avs_proto::interfaces::speech_synthesizer;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::SkillSession;

/// `outputSpeech` of a skill response.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct OutputSpeech {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) text: Option<String>,
    pub(super) ssml: Option<String>,
    pub(super) play_behavior: Option<speech_synthesizer::PlayBehavior>,
}

impl OutputSpeech {
    /// The text or SSML to speak, by `type` (falling back to whichever is present).
    pub(super) fn speech(&self) -> Option<&str> {
        let speech = match self.kind.as_deref() {
            Some("SSML") => self.ssml.as_deref(),
            Some("PlainText") => self.text.as_deref(),
            _ => self.ssml.as_deref().or(self.text.as_deref()),
        };
        speech.filter(|s| !s.trim().is_empty())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Reprompt {
    pub(super) output_speech: Option<OutputSpeech>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SkillResponse {
    pub(super) output_speech: Option<OutputSpeech>,
    pub(super) reprompt: Option<Reprompt>,
    pub(super) should_end_session: Option<bool>,
    #[serde(default)]
    pub(super) directives: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResponseEnvelope {
    pub(super) session_attributes: Option<Map<String, Value>>,
    pub(super) response: Option<SkillResponse>,
}

/// The request envelope of "Handle Requests Sent by Alexa".
pub(super) fn envelope(
    session: &SkillSession,
    new: bool,
    api_access_token: &str,
    request: Value,
) -> Value {
    let application = json!({ "applicationId": session.application_id });
    let user = json!({ "userId": session.user_id });
    json!({
        "version": "1.0",
        "session": {
            "new": new,
            "sessionId": session.session_id,
            "application": application,
            "user": user,
            "attributes": session.attributes,
        },
        "context": {
            "System": {
                "application": application,
                "user": user,
                "device": {
                    "deviceId": session.device_id,
                    "supportedInterfaces": { "AudioPlayer": {} },
                },
                // No trailing '/': SDKs append "/v1/directives" to it.
                "apiEndpoint": session.api_endpoint.as_str().trim_end_matches('/'),
                "apiAccessToken": api_access_token,
            },
            "AudioPlayer": { "playerActivity": "IDLE" },
        },
        "request": request,
    })
}

pub(super) fn launch_request(request_id: &str, locale: &str) -> Value {
    json!({
        "type": "LaunchRequest",
        "requestId": request_id,
        "timestamp": timestamp(),
        "locale": locale,
        "shouldLinkResultBeReturned": false,
    })
}

pub(super) fn intent_request(
    request_id: &str,
    locale: &str,
    intent: &str,
    slots: &BTreeMap<String, String>,
) -> Value {
    let slots: Map<String, Value> = slots
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                json!({ "name": name, "value": value, "confirmationStatus": "NONE", "source": "USER" }),
            )
        })
        .collect();
    json!({
        "type": "IntentRequest",
        "requestId": request_id,
        "timestamp": timestamp(),
        "locale": locale,
        "dialogState": "COMPLETED",
        "intent": { "name": intent, "confirmationStatus": "NONE", "slots": slots },
    })
}

pub(super) fn session_ended_request(
    request_id: &str,
    locale: &str,
    reason: &str,
    error: Option<(&str, String)>,
) -> Value {
    let mut request = json!({
        "type": "SessionEndedRequest",
        "requestId": request_id,
        "timestamp": timestamp(),
        "locale": locale,
        "reason": reason,
    });
    if let Some((kind, message)) = error {
        request["error"] = json!({ "type": kind, "message": message });
    }
    request
}

pub(super) fn new_request_id() -> String {
    format!("amzn1.echo-api.request.{}", uuid::Uuid::new_v4())
}

/// Opaque and unguessable, like Alexa's (which is a JWT; skills must not parse it).
pub(super) fn new_api_access_token() -> String {
    format!(
        "sim.{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// A stable applicationId per skill endpoint, so a skill sees the same id on every request.
pub(super) fn application_id(endpoint: &url::Url) -> String {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in endpoint.as_str().bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    format!("amzn1.ask.skill.{}", uuid::Uuid::from_u128(h))
}

/// ISO 8601 in UTC to the second, as Alexa stamps requests.
pub(super) fn timestamp() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}
