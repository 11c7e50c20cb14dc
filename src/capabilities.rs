//! What avsd tells Alexa it is: the `Alexa.Discovery.AddOrUpdateReport` endpoint for this device
//! (avs-protocol.md §5.13) and the checksum that decides whether it must be sent again.
//!
//! The capability list names only interfaces and versions the agents really implement; it is
//! code, not configuration, because declaring an interface promises the cloud behaviour. The
//! checksum covers the report without its token plus a hash of the account (the refresh token),
//! so a firmware or capability change, or a login with another account, re-sends the report.
//! Not owned here: sending it and waiting for `Alexa.EventProcessed` (`transport::gateway`).

use std::path::{Path, PathBuf};

use avs_proto::interfaces::discovery::{
    self, AddOrUpdateReport, AdditionalAttributes, Capability, Endpoint, Registration, Scope,
};
use avs_proto::interfaces::{
    alerts, api_gateway, audio_player, interaction_model, playback_controller, speaker,
    speech_recognizer, speech_synthesizer, system,
};
use avs_proto::{Event, Header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::DeviceIdentity;
use crate::persist::{self, PersistError};

/// The state file holding the checksum of the last report AVS confirmed.
pub const DISCOVERY_FILE: &str = "discovery.json";

/// Interface versions this build implements. Why each version, not a newer one:
/// - SpeechRecognizer 2.3: ExpectSpeech, StopCapture, SetEndOfSpeechOffset and the wake-word /
///   speech confirmation settings (2.1–2.3) are handled.
/// - SpeechSynthesizer 1.3: `playBehavior` on Speak is honoured.
/// - AudioPlayer 1.0: Play/Stop/ClearQueue and the 1.0 events; nothing of the later versions.
/// - PlaybackController 1.0: the four *CommandIssued events, no ButtonCommandIssued (1.1).
/// - Speaker 1.0. Alerts 1.3: DeleteAlerts and the alert volume directives, without the 1.5
///   `scheduledTime`/`eventTime` fields.
/// - System 1.0: SetEndpoint is handled (removed in 2.0) and SetLocales is not.
/// - InteractionModel 1.2: NewDialogRequest and RequestProcessing* with streamed directives.
/// - Alexa.ApiGateway 1.0.
pub const INTERFACES: &[(&str, &str)] = &[
    (speech_recognizer::NAMESPACE, "2.3"),
    (speech_synthesizer::NAMESPACE, "1.3"),
    (audio_player::NAMESPACE, "1.0"),
    (playback_controller::NAMESPACE, "1.0"),
    (speaker::NAMESPACE, "1.0"),
    (alerts::NAMESPACE, "1.3"),
    (system::NAMESPACE, "1.0"),
    (interaction_model::NAMESPACE, "1.2"),
    (api_gateway::NAMESPACE, api_gateway::VERSION),
];

/// Everything the report says about the device, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub client_id: String,
    pub product_id: String,
    pub serial_number: String,
    pub firmware_version: String,
    pub manufacturer: String,
    pub model: String,
    pub description: String,
    /// avsd's own version (additionalAttributes.softwareVersion).
    pub software_version: String,
    /// Wake words the device listens for; empty while avsd has no wake-word engine, in which
    /// case SpeechRecognizer declares no `wakeWords` configuration (as the SDK does).
    pub wake_words: Vec<String>,
}

impl DeviceInfo {
    pub fn from_config(device: &DeviceIdentity) -> Self {
        Self {
            client_id: device.client_id.clone(),
            product_id: device.product_id.clone(),
            serial_number: device.serial_number.clone(),
            firmware_version: device.firmware_version.clone(),
            manufacturer: device.manufacturer.clone(),
            model: device.model.clone(),
            description: device.description.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            wake_words: Vec::new(),
        }
    }

    /// `clientId::productId::deviceSerialNumber`.
    pub fn endpoint_id(&self) -> String {
        format!(
            "{}::{}::{}",
            self.client_id, self.product_id, self.serial_number
        )
    }
}

/// The capabilities list of [`INTERFACES`] (plus wake words when there are any).
pub fn capabilities(wake_words: &[String]) -> Vec<Capability> {
    INTERFACES
        .iter()
        .map(|(interface, version)| {
            let mut c = Capability::interface(interface, version);
            if *interface == speech_recognizer::NAMESPACE && !wake_words.is_empty() {
                let mut config = Map::new();
                config.insert(
                    "wakeWords".into(),
                    json!([{ "scopes": ["DEFAULT"], "values": [wake_words] }]),
                );
                c.configurations = Some(config);
            }
            c
        })
        .collect()
}

/// The device's own endpoint.
pub fn endpoint(info: &DeviceInfo) -> Endpoint {
    Endpoint {
        endpoint_id: info.endpoint_id(),
        friendly_name: String::new(),
        description: info.description.clone(),
        manufacturer_name: info.manufacturer.clone(),
        display_categories: vec![discovery::ALEXA_VOICE_ENABLED.to_owned()],
        additional_attributes: Some(AdditionalAttributes {
            manufacturer: Some(info.manufacturer.clone()),
            model: Some(info.model.clone()),
            serial_number: Some(info.serial_number.clone()),
            firmware_version: Some(info.firmware_version.clone()),
            software_version: Some(info.software_version.clone()),
            custom_identifier: None,
        }),
        registration: Some(Registration {
            product_id: info.product_id.clone(),
            device_serial_number: info.serial_number.clone(),
        }),
        capabilities: capabilities(&info.wake_words),
    }
}

/// The report event, scoped to `access_token`, with a fresh eventCorrelationToken.
pub fn report_event(info: &DeviceInfo, access_token: &str) -> Event {
    let report = AddOrUpdateReport {
        scope: Scope::bearer(access_token),
        endpoints: vec![endpoint(info)],
    };
    let mut event = Event::new(
        discovery::NAMESPACE,
        &discovery::Event::AddOrUpdateReport(report),
    );
    event.header = Header {
        payload_version: Some(discovery::PAYLOAD_VERSION.to_owned()),
        event_correlation_token: Some(uuid::Uuid::new_v4().to_string()),
        ..event.header
    };
    event
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        // Length-prefixed so that no two different part lists hash the same bytes.
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Identifies the logged-in account without storing anything secret: a hash of the refresh
/// token (LWA issues a new one on every login; refreshing keeps it).
pub fn account_id(refresh_token: &str) -> String {
    sha256_hex(&[b"avsd-account", refresh_token.as_bytes()])
}

/// Checksum of (report without token, account).
pub fn checksum(info: &DeviceInfo, account: &str) -> String {
    // serde_json maps keep their keys sorted, so equal endpoints serialise to equal bytes.
    let endpoint: Value = serde_json::to_value(endpoint(info)).unwrap_or(Value::Null);
    sha256_hex(&[endpoint.to_string().as_bytes(), account.as_bytes()])
}

#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    checksum: String,
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(DISCOVERY_FILE)
}

/// The checksum of the last confirmed report; `None` when none was confirmed (or the file is
/// unreadable, which only costs one more report).
pub fn stored_checksum(state_dir: &Path) -> Option<String> {
    match persist::read_json::<Stored>(&path(state_dir)) {
        Ok(s) => s.map(|s| s.checksum),
        Err(e) => {
            tracing::warn!(error = %e, "discovery state unreadable; the report will be sent again");
            None
        }
    }
}

/// Records that AVS confirmed the report with `checksum`.
pub fn store_checksum(state_dir: &Path, checksum: &str) -> Result<(), PersistError> {
    persist::write_json(
        &path(state_dir),
        &Stored {
            checksum: checksum.to_owned(),
        },
        0o600,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DeviceInfo {
        DeviceInfo {
            client_id: "cid".into(),
            product_id: "pid".into(),
            serial_number: "SN1".into(),
            firmware_version: "7".into(),
            manufacturer: "Acme".into(),
            model: "X1".into(),
            description: "desc".into(),
            software_version: "0.1.0".into(),
            wake_words: Vec::new(),
        }
    }

    #[test]
    fn report_names_the_device_and_what_it_implements() {
        let e = report_event(&info(), "Atza|tok");
        assert_eq!(
            e.header.qualified_name(),
            "Alexa.Discovery.AddOrUpdateReport"
        );
        assert_eq!(e.header.payload_version.as_deref(), Some("3"));
        assert!(e.header.event_correlation_token.is_some());
        let p = &e.payload;
        assert_eq!(
            p["scope"],
            json!({"type": "BearerToken", "token": "Atza|tok"})
        );
        let ep = &p["endpoints"][0];
        assert_eq!(ep["endpointId"], "cid::pid::SN1");
        assert_eq!(ep["displayCategories"], json!(["ALEXA_VOICE_ENABLED"]));
        assert_eq!(ep["manufacturerName"], "Acme");
        assert_eq!(ep["additionalAttributes"]["model"], "X1");
        assert_eq!(ep["additionalAttributes"]["firmwareVersion"], "7");
        assert_eq!(ep["registration"]["deviceSerialNumber"], "SN1");
        let caps = ep["capabilities"].as_array().unwrap();
        let named: Vec<(String, String)> = caps
            .iter()
            .map(|c| {
                assert_eq!(c["type"], "AlexaInterface");
                (
                    c["interface"].as_str().unwrap().to_owned(),
                    c["version"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert!(named.contains(&("SpeechRecognizer".into(), "2.3".into())));
        assert!(named.contains(&("System".into(), "1.0".into())));
        assert!(named.contains(&("Alexa.ApiGateway".into(), "1.0".into())));
        // Not implemented, so not declared.
        for absent in ["Notifications", "AudioActivityTracker", "Alexa.Discovery"] {
            assert!(!named.iter().any(|(n, _)| n == absent), "{absent}");
        }
        // No wake word configured: no wakeWords configuration.
        assert!(caps.iter().all(|c| c.get("configurations").is_none()));
        // Each report gets its own correlation token.
        assert_ne!(
            report_event(&info(), "t").header.event_correlation_token,
            e.header.event_correlation_token
        );
    }

    #[test]
    fn wake_words_appear_only_when_configured() {
        let caps = capabilities(&["ALEXA".to_owned()]);
        let sr = caps
            .iter()
            .find(|c| c.interface == "SpeechRecognizer")
            .unwrap();
        assert_eq!(
            Value::Object(sr.configurations.clone().unwrap()),
            json!({"wakeWords": [{"scopes": ["DEFAULT"], "values": [["ALEXA"]]}]})
        );
    }

    #[test]
    fn checksum_follows_report_and_account_but_not_the_token() {
        let a = account_id("refresh-1");
        let base = checksum(&info(), &a);
        assert_eq!(base, checksum(&info(), &a));
        assert_eq!(base.len(), 64);
        let mut newer = info();
        newer.firmware_version = "8".into();
        assert_ne!(base, checksum(&newer, &a));
        assert_ne!(base, checksum(&info(), &account_id("refresh-2")));
        assert!(!a.contains("refresh"));
    }

    #[test]
    fn checksum_persists_atomically() {
        let dir = std::env::temp_dir().join(format!("avsd-caps-{}", std::process::id()));
        assert_eq!(stored_checksum(&dir), None);
        store_checksum(&dir, "abc").unwrap();
        assert_eq!(stored_checksum(&dir).as_deref(), Some("abc"));
        std::fs::write(dir.join(DISCOVERY_FILE), b"{torn").unwrap();
        assert_eq!(stored_checksum(&dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
