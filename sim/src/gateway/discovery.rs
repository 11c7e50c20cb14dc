//! Capabilities and gateway events (avs-protocol.md §5.11, §5.13): the checks a real AVS makes
//! on `Alexa.Discovery.AddOrUpdateReport` before answering `202` (and, later, pushing
//! `Alexa.EventProcessed`), the reports accepted per device, and the `Alexa.ApiGateway`
//! answer: `204`, or a `SetGateway` directive when the sim is told to move devices elsewhere.

use std::collections::HashMap;
use std::sync::Mutex;

use avs_proto::interfaces::discovery::{self, AddOrUpdateReport, is_device_endpoint_id};
use avs_proto::{Event, EventKind, Header};
use serde_json::{Value, json};

use crate::lwa::Grant;

/// Most endpoints one report may carry.
const MAX_ENDPOINTS: usize = 300;

/// Why a report was refused with `400`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("payloadVersion must be \"3\"")]
    PayloadVersion,
    #[error("the header has no eventCorrelationToken")]
    NoCorrelationToken,
    #[error("the payload is not an AddOrUpdateReport")]
    NotAReport,
    #[error("scope must be a BearerToken equal to the connection's access token")]
    Scope,
    #[error("a report needs 1 to {MAX_ENDPOINTS} endpoints, got {0}")]
    EndpointCount(usize),
    #[error("endpointId {0:?} is not clientId::productId::deviceSerialNumber of this device")]
    EndpointId(String),
    #[error("endpoint {0:?} declares no capabilities")]
    NoCapabilities(String),
}

/// Checks an `AddOrUpdateReport` sent with `bearer` by the device `grant` names.
pub fn validate_report<'a>(
    event: &'a Event,
    bearer: &str,
    grant: &Grant,
) -> Result<&'a AddOrUpdateReport, ReportError> {
    if event.header.payload_version.as_deref() != Some(discovery::PAYLOAD_VERSION) {
        return Err(ReportError::PayloadVersion);
    }
    if event
        .header
        .event_correlation_token
        .as_deref()
        .is_none_or(str::is_empty)
    {
        return Err(ReportError::NoCorrelationToken);
    }
    let EventKind::Discovery(discovery::Event::AddOrUpdateReport(report)) = &event.kind else {
        return Err(ReportError::NotAReport);
    };
    if report.scope.kind != "BearerToken" || report.scope.token != bearer {
        return Err(ReportError::Scope);
    }
    if report.endpoints.is_empty() || report.endpoints.len() > MAX_ENDPOINTS {
        return Err(ReportError::EndpointCount(report.endpoints.len()));
    }
    let own = format!(
        "{}::{}::{}",
        grant.client_id, grant.product_id, grant.device_serial
    );
    for ep in &report.endpoints {
        if !is_device_endpoint_id(&ep.endpoint_id) || ep.endpoint_id != own {
            return Err(ReportError::EndpointId(ep.endpoint_id.clone()));
        }
        if ep.capabilities.is_empty() {
            return Err(ReportError::NoCapabilities(ep.endpoint_id.clone()));
        }
    }
    Ok(report)
}

/// The JSON text of `Alexa.EventProcessed` for `correlation_token`.
pub fn event_processed(correlation_token: &str) -> String {
    let mut header = Header::new(discovery::ALEXA_NAMESPACE, "EventProcessed");
    header.event_correlation_token = Some(correlation_token.to_owned());
    header.payload_version = Some(discovery::PAYLOAD_VERSION.to_owned());
    avs_proto::Directive::build(header, json!({}))
}

/// The JSON text of `Alexa.ApiGateway.SetGateway` pointing at `gateway`.
pub fn set_gateway(gateway: &str) -> String {
    let header = Header::new(avs_proto::interfaces::api_gateway::NAMESPACE, "SetGateway");
    avs_proto::Directive::build(header, json!({ "gateway": gateway }))
}

/// `host:port` of a URL (the form a listener's address is recorded in).
pub fn authority_of(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(format!("{host}:{}", url.port_or_known_default()?))
}

/// What the sim decided about gateways and what devices reported.
#[derive(Default)]
pub struct DiscoveryState {
    /// Where VerifyGateway sends devices that connected elsewhere.
    gateway: Mutex<Option<url::Url>>,
    /// The endpoints of the last accepted report, by device serial.
    reports: Mutex<HashMap<String, Value>>,
}

impl DiscoveryState {
    pub fn set_gateway(&self, gateway: Option<url::Url>) {
        *self.gateway.lock().unwrap_or_else(|p| p.into_inner()) = gateway;
    }

    /// The gateway a device that connected through `listener` (`host:port`) must move to.
    pub fn move_target(&self, listener: &str) -> Option<url::Url> {
        let gateway = self
            .gateway
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        (authority_of(&gateway).as_deref() != Some(listener)).then_some(gateway)
    }

    /// Keeps an accepted report (its endpoints; the scope token is not kept).
    pub fn accepted(&self, serial: &str, report: &AddOrUpdateReport) {
        let endpoints = serde_json::to_value(&report.endpoints).unwrap_or(Value::Null);
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(serial.to_owned(), endpoints);
    }

    pub fn report(&self, serial: &str) -> Option<Value> {
        self.reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(serial)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avs_proto::interfaces::discovery::{Capability, Endpoint, Scope};

    fn grant() -> Grant {
        Grant {
            client_id: "cid".into(),
            product_id: "pid".into(),
            device_serial: "SN1".into(),
        }
    }

    fn event(token: &str, endpoint_id: &str, caps: usize, version: Option<&str>) -> Event {
        let report = AddOrUpdateReport {
            scope: Scope::bearer(token),
            endpoints: vec![Endpoint {
                endpoint_id: endpoint_id.into(),
                friendly_name: String::new(),
                description: "d".into(),
                manufacturer_name: "m".into(),
                display_categories: vec![discovery::ALEXA_VOICE_ENABLED.into()],
                additional_attributes: None,
                registration: None,
                capabilities: (0..caps)
                    .map(|_| Capability::interface("Speaker", "1.0"))
                    .collect(),
            }],
        };
        let mut e = Event::new(
            discovery::NAMESPACE,
            &discovery::Event::AddOrUpdateReport(report),
        );
        e.header.payload_version = version.map(str::to_owned);
        e.header.event_correlation_token = Some("c".into());
        // Through the parser, as the gateway sees it.
        Event::from_json(e.to_json().as_bytes()).unwrap()
    }

    #[test]
    fn a_good_report_passes_and_each_defect_is_named() {
        let g = grant();
        assert!(validate_report(&event("tok", "cid::pid::SN1", 2, Some("3")), "tok", &g).is_ok());
        assert_eq!(
            validate_report(&event("tok", "cid::pid::SN1", 2, None), "tok", &g),
            Err(ReportError::PayloadVersion)
        );
        assert_eq!(
            validate_report(&event("old", "cid::pid::SN1", 2, Some("3")), "tok", &g),
            Err(ReportError::Scope)
        );
        assert!(matches!(
            validate_report(&event("tok", "cid::pid::SN2", 2, Some("3")), "tok", &g),
            Err(ReportError::EndpointId(_))
        ));
        assert!(matches!(
            validate_report(&event("tok", "SN1", 2, Some("3")), "tok", &g),
            Err(ReportError::EndpointId(_))
        ));
        assert!(matches!(
            validate_report(&event("tok", "cid::pid::SN1", 0, Some("3")), "tok", &g),
            Err(ReportError::NoCapabilities(_))
        ));
    }

    #[test]
    fn devices_move_only_when_they_are_not_at_the_gateway_yet() {
        let s = DiscoveryState::default();
        assert_eq!(s.move_target("127.0.0.1:1000"), None);
        s.set_gateway(Some(url::Url::parse("https://127.0.0.1:2000").unwrap()));
        assert!(s.move_target("127.0.0.1:1000").is_some());
        assert_eq!(s.move_target("127.0.0.1:2000"), None);
    }
}
