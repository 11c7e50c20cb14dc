//! Alexa.ApiGateway 1.0: the device asks whether it talks to the right regional gateway
//! (`VerifyGateway`, answered `204` when it does) and the cloud moves it (`SetGateway`).

use serde::{Deserialize, Serialize};

use super::AnyObject;

pub const NAMESPACE: &str = "Alexa.ApiGateway";
pub const VERSION: &str = "1.0";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Directive {
    SetGateway(SetGateway),
}

/// `{"gateway": "https://alexa.eu.gateway.devices.a2z.com"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetGateway {
    pub gateway: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Event {
    VerifyGateway(AnyObject),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Directive as AvsDirective, DirectiveKind, Event as AvsEvent, EventKind, Header};
    use serde_json::json;

    #[test]
    fn set_gateway_parses_and_verify_gateway_round_trips() {
        let text = AvsDirective::build(
            Header::new(NAMESPACE, "SetGateway"),
            json!({"gateway": "https://alexa.eu.gateway.devices.a2z.com"}),
        );
        let d = AvsDirective::from_json(text.as_bytes()).unwrap();
        assert_eq!(
            d.kind,
            DirectiveKind::ApiGateway(Directive::SetGateway(SetGateway {
                gateway: "https://alexa.eu.gateway.devices.a2z.com".into()
            }))
        );
        // A SetGateway without its URL is malformed, not unknown.
        let bad = AvsDirective::build(Header::new(NAMESPACE, "SetGateway"), json!({}));
        assert!(AvsDirective::from_json(bad.as_bytes()).is_err());

        let ev = AvsEvent::new(NAMESPACE, &Event::VerifyGateway(AnyObject {}));
        let parsed = AvsEvent::from_json(ev.to_json().as_bytes()).unwrap();
        assert_eq!(parsed.qualified_name(), "Alexa.ApiGateway.VerifyGateway");
        assert_eq!(
            parsed.kind,
            EventKind::ApiGateway(Event::VerifyGateway(AnyObject {}))
        );
    }
}
