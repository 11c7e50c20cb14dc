//! Alexa.Discovery 3 (capabilities publishing, avs-protocol.md §5.13) and the `Alexa`
//! namespace's `EventProcessed` directive that confirms a report asynchronously.
//!
//! `AddOrUpdateReport` travels as an ordinary event with `payloadVersion: "3"` and an
//! `eventCorrelationToken` in its header; the cloud answers `202` on the event stream and later
//! pushes `Alexa.EventProcessed` with the same token on the downchannel.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AnyObject;

pub const NAMESPACE: &str = "Alexa.Discovery";
pub const PAYLOAD_VERSION: &str = "3";
/// Namespace of [`AlexaDirective`].
pub const ALEXA_NAMESPACE: &str = "Alexa";
/// The display category of a device with Alexa built in.
pub const ALEXA_VOICE_ENABLED: &str = "ALEXA_VOICE_ENABLED";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Event {
    AddOrUpdateReport(AddOrUpdateReport),
    DeleteReport(DeleteReport),
}

/// Directives of the bare `Alexa` namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum AlexaDirective {
    /// The report whose header carried the same `eventCorrelationToken` was processed.
    EventProcessed(AnyObject),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddOrUpdateReport {
    pub scope: Scope,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteReport {
    pub scope: Scope,
    pub endpoints: Vec<EndpointId>,
}

/// `{"type": "BearerToken", "token": "<LWA access token>"}`. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub kind: String,
    pub token: String,
}

impl Scope {
    pub fn bearer(token: &str) -> Self {
        Self {
            kind: "BearerToken".to_owned(),
            token: token.to_owned(),
        }
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("type", &self.kind)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointId {
    pub endpoint_id: String,
}

/// One endpoint of a report: for an AVS device, the device itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `clientId::productId::deviceSerialNumber` for the device's own endpoint.
    pub endpoint_id: String,
    pub friendly_name: String,
    pub description: String,
    pub manufacturer_name: String,
    pub display_categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_attributes: Option<AdditionalAttributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
    pub capabilities: Vec<Capability>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_identifier: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub product_id: String,
    pub device_serial_number: String,
}

/// `{"type": "AlexaInterface", "interface": "...", "version": "...", "configurations": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    #[serde(rename = "type")]
    pub kind: String,
    pub interface: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configurations: Option<Map<String, Value>>,
}

impl Capability {
    /// An `AlexaInterface` capability without configuration.
    pub fn interface(interface: &str, version: &str) -> Self {
        Self {
            kind: "AlexaInterface".to_owned(),
            interface: interface.to_owned(),
            version: version.to_owned(),
            configurations: None,
        }
    }
}

/// Checks the shape AVS requires of a device endpoint id: three non-empty `::`-separated parts.
pub fn is_device_endpoint_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split("::").collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Directive, DirectiveKind, Event as AvsEvent, EventKind, Header};
    use serde_json::json;

    fn report() -> AddOrUpdateReport {
        AddOrUpdateReport {
            scope: Scope::bearer("Atza|secret"),
            endpoints: vec![Endpoint {
                endpoint_id: "cid::pid::dsn".into(),
                friendly_name: String::new(),
                description: "A speaker".into(),
                manufacturer_name: "Acme".into(),
                display_categories: vec![ALEXA_VOICE_ENABLED.into()],
                additional_attributes: Some(AdditionalAttributes {
                    manufacturer: Some("Acme".into()),
                    firmware_version: Some("3".into()),
                    ..Default::default()
                }),
                registration: Some(Registration {
                    product_id: "pid".into(),
                    device_serial_number: "dsn".into(),
                }),
                capabilities: vec![Capability::interface("Speaker", "1.0")],
            }],
        }
    }

    #[test]
    fn add_or_update_report_round_trips_through_the_event_parser() {
        let mut ev = AvsEvent::new(NAMESPACE, &Event::AddOrUpdateReport(report()));
        ev.header.payload_version = Some(PAYLOAD_VERSION.into());
        ev.header.event_correlation_token = Some("corr-1".into());
        let text = ev.to_json();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["event"]["header"]["payloadVersion"], "3");
        assert_eq!(v["event"]["header"]["eventCorrelationToken"], "corr-1");
        let ep = &v["event"]["payload"]["endpoints"][0];
        assert_eq!(ep["endpointId"], "cid::pid::dsn");
        assert_eq!(ep["displayCategories"][0], "ALEXA_VOICE_ENABLED");
        assert_eq!(ep["additionalAttributes"]["firmwareVersion"], "3");
        assert!(ep["additionalAttributes"].get("model").is_none());
        assert_eq!(ep["registration"]["deviceSerialNumber"], "dsn");
        assert_eq!(ep["capabilities"][0]["type"], "AlexaInterface");
        assert!(ep["capabilities"][0].get("configurations").is_none());
        assert_eq!(v["event"]["payload"]["scope"]["type"], "BearerToken");

        let parsed = AvsEvent::from_json(text.as_bytes()).unwrap();
        assert_eq!(
            parsed.kind,
            EventKind::Discovery(Event::AddOrUpdateReport(report()))
        );
        assert!(!format!("{:?}", report()).contains("secret"));
    }

    #[test]
    fn event_processed_is_typed_and_keeps_its_correlation_token() {
        let mut header = Header::new(ALEXA_NAMESPACE, "EventProcessed");
        header.event_correlation_token = Some("corr-9".into());
        let d = Directive::from_json(Directive::build(header, json!({})).as_bytes()).unwrap();
        assert_eq!(
            d.kind,
            DirectiveKind::Alexa(AlexaDirective::EventProcessed(AnyObject {}))
        );
        assert_eq!(d.header.event_correlation_token.as_deref(), Some("corr-9"));
    }

    #[test]
    fn endpoint_id_pattern() {
        assert!(is_device_endpoint_id("a::b::c"));
        for bad in ["a::b", "a::::c", "a::b::c::d", "", "a:b:c"] {
            assert!(!is_device_endpoint_id(bad), "{bad}");
        }
    }
}
