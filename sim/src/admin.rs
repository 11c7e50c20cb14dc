//! The admin surface: approving a user code, pushing any directive text on a device's
//! downchannel, injecting faults and reading the recorder, both in-process ([`Admin`]) and as
//! JSON over HTTPS (`/admin/...`).

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::gateway::faults::{Fault, FaultError};
use crate::gateway::{ConnCommand, DownchannelCommand};
use crate::lwa::Grant;
use crate::router::Reply;
use crate::turn::TurnDirective;

/// How long a fault waits to be queued on a busy connection or downchannel.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// In-process admin handle (cheap to clone).
#[derive(Clone)]
pub struct Admin {
    shared: Arc<Shared>,
}

impl Admin {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Approves the code pair showing `user_code`.
    pub fn approve(&self, user_code: &str) -> bool {
        self.shared.lwa.approve(user_code)
    }

    /// Issues an access and refresh token for a device without code-based linking.
    pub fn issue_token(&self, client_id: &str, product_id: &str, serial: &str) -> (String, String) {
        self.shared.lwa.issue_for(Grant {
            client_id: client_id.to_owned(),
            product_id: product_id.to_owned(),
            device_serial: serial.to_owned(),
        })
    }

    /// Pushes `json` (any text, well-formed or not) as one part on the downchannel of
    /// `device` (every device when `None`); returns how many devices got it.
    pub async fn push(&self, device: Option<&str>, json: String) -> Result<usize, FaultError> {
        push(&self.shared, device, json).await
    }

    /// Applies a fault; returns how many devices it touched (0 for per-stream faults).
    pub async fn fault(&self, fault: &Fault) -> Result<usize, FaultError> {
        apply_fault(&self.shared, fault).await
    }

    /// Serves `bytes` at `/media/<name>` (what AudioPlayer and alert asset URLs point at) and
    /// returns that URL.
    pub fn put_media(&self, name: &str, bytes: bytes::Bytes) -> Result<url::Url, url::ParseError> {
        let url = self.shared.base_url.join(&format!("media/{name}"))?;
        self.shared.put_media(name.to_owned(), bytes);
        Ok(url)
    }

    /// From now on, `Alexa.ApiGateway.VerifyGateway` from a connection that did not come in
    /// through `gateway` is answered with `SetGateway` to it (`None`: always `204`).
    pub fn set_gateway(&self, gateway: Option<url::Url>) {
        self.shared.discovery.set_gateway(gateway);
    }

    /// Pushes `Alexa.ApiGateway.SetGateway` to `gateway` on the downchannel of `device` (every
    /// device when `None`); returns how many devices got it.
    pub async fn push_set_gateway(
        &self,
        device: Option<&str>,
        gateway: &str,
    ) -> Result<usize, FaultError> {
        push(
            &self.shared,
            device,
            crate::gateway::discovery::set_gateway(gateway),
        )
        .await
    }

    /// The endpoints of the last `AddOrUpdateReport` accepted from `serial`.
    pub fn discovery_report(&self, serial: &str) -> Option<Value> {
        self.shared.discovery.report(serial)
    }

    /// Serves `bytes` at `/media/<name>` as an ICY radio stream: to a client sending
    /// `Icy-MetaData: 1`, a metadata block after every `metaint` bytes (with `icy-metaint` in
    /// the response), the `titles` spread evenly over them in order; to others, the plain bytes.
    pub fn put_media_icy(
        &self,
        name: &str,
        bytes: bytes::Bytes,
        metaint: usize,
        titles: &[&str],
    ) -> Result<url::Url, url::ParseError> {
        let url = self.shared.base_url.join(&format!("media/{name}"))?;
        self.shared.put_media_item(
            name.to_owned(),
            crate::media::Media::Icy {
                audio: bytes,
                metaint: metaint.max(1),
                titles: titles.iter().map(|t| (*t).to_owned()).collect(),
            },
        );
        Ok(url)
    }

    /// Serial numbers of the devices with an open downchannel.
    pub fn devices(&self) -> Vec<String> {
        self.shared.devices.serials()
    }
}

pub(crate) async fn push(
    shared: &Shared,
    device: Option<&str>,
    json: String,
) -> Result<usize, FaultError> {
    let targets = shared.devices.select(device);
    if targets.is_empty() {
        return Err(FaultError::NoDevice(device.map(str::to_owned)));
    }
    let mut n = 0;
    for (serial, entry) in targets {
        let cmd = DownchannelCommand::Push(TurnDirective {
            json: json.clone(),
            attachment: None,
        });
        match entry.downchannel.try_send(cmd) {
            Ok(()) => n += 1,
            Err(e) => tracing::warn!(%serial, error = %e, "downchannel push dropped"),
        }
    }
    Ok(n)
}

pub(crate) async fn apply_fault(shared: &Shared, fault: &Fault) -> Result<usize, FaultError> {
    if shared.faults.arm(fault)? {
        tracing::info!(?fault, "fault armed");
        return Ok(0);
    }
    tracing::info!(?fault, "fault applied");
    match fault {
        Fault::GoAway { device } | Fault::DropConnection { device } => {
            let cmd = if matches!(fault, Fault::GoAway { .. }) {
                ConnCommand::GoAway
            } else {
                ConnCommand::Drop
            };
            let targets = shared.devices.select(device.as_deref());
            if targets.is_empty() {
                return Err(FaultError::NoDevice(device.clone()));
            }
            for (serial, e) in &targets {
                if !matches!(
                    tokio::time::timeout(COMMAND_TIMEOUT, e.conn.send(cmd)).await,
                    Ok(Ok(()))
                ) {
                    tracing::warn!(%serial, ?cmd, "connection command not queued");
                }
            }
            Ok(targets.len())
        }
        Fault::ResetDownchannel { device } => {
            let targets = shared.devices.select(device.as_deref());
            if targets.is_empty() {
                return Err(FaultError::NoDevice(device.clone()));
            }
            for (serial, e) in &targets {
                // Queued behind pushes a slow device has not read yet; do not wait forever.
                let send = e.downchannel.send(DownchannelCommand::Reset);
                if !matches!(
                    tokio::time::timeout(COMMAND_TIMEOUT, send).await,
                    Ok(Ok(()))
                ) {
                    tracing::warn!(%serial, "downchannel reset not queued");
                }
            }
            Ok(targets.len())
        }
        Fault::MalformedDirective { device } => {
            let broken =
                r#"{"directive":{"header":{"namespace":"Speaker","name":"SetVolume","messageId":"#;
            push(shared, device.as_deref(), broken.to_owned()).await
        }
        Fault::UnknownDirective { device } => {
            let header = avs_proto::Header::new("Bogus", "DoSomethingUnheardOf");
            let json = avs_proto::DirectiveEnvelope::new(header, json!({"x": 1})).to_json();
            push(shared, device.as_deref(), json).await
        }
        // Armed above.
        Fault::FailEvents { .. }
        | Fault::SilencePings { .. }
        | Fault::StallEvents { .. }
        | Fault::KillMidAttachment
        | Fault::DropEventProcessed { .. } => Ok(0),
    }
}

#[derive(Deserialize)]
struct ApproveBody {
    user_code: String,
}

#[derive(Deserialize)]
struct GatewayBody {
    /// Where VerifyGateway sends devices; `null` stops moving them.
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct PushBody {
    #[serde(default)]
    device: Option<String>,
    /// A directive as JSON (sent as is).
    #[serde(default)]
    directive: Option<Value>,
    /// Raw text for the part, for malformed directives.
    #[serde(default)]
    raw: Option<String>,
}

fn bad(why: impl std::fmt::Display) -> Reply {
    Reply::json(StatusCode::BAD_REQUEST, &json!({"error": why.to_string()}))
}

pub(crate) async fn route(shared: &Arc<Shared>, method: &Method, path: &str, body: &[u8]) -> Reply {
    match (method, path) {
        (&Method::POST, "/admin/approve") => match serde_json::from_slice::<ApproveBody>(body) {
            Ok(b) if shared.lwa.approve(&b.user_code) => {
                Reply::json(StatusCode::OK, &json!({"approved": b.user_code}))
            }
            Ok(b) => Reply::json(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no live code pair shows {}", b.user_code)}),
            ),
            Err(e) => bad(e),
        },
        (&Method::POST, "/admin/push") => match serde_json::from_slice::<PushBody>(body) {
            Ok(b) => {
                let text = match (b.directive, b.raw) {
                    (Some(d), None) => d.to_string(),
                    (None, Some(raw)) => raw,
                    _ => return bad("give exactly one of directive or raw"),
                };
                match push(shared, b.device.as_deref(), text).await {
                    Ok(n) => Reply::json(StatusCode::OK, &json!({"pushed": n})),
                    Err(e) => Reply::json(StatusCode::NOT_FOUND, &json!({"error": e.to_string()})),
                }
            }
            Err(e) => bad(e),
        },
        (&Method::POST, "/admin/fault") => match serde_json::from_slice::<Fault>(body) {
            Ok(f) => match apply_fault(shared, &f).await {
                Ok(n) => Reply::json(StatusCode::OK, &json!({"applied": n})),
                Err(e @ FaultError::NoDevice(_)) => {
                    Reply::json(StatusCode::NOT_FOUND, &json!({"error": e.to_string()}))
                }
                Err(e) => bad(e),
            },
            Err(e) => bad(e),
        },
        (&Method::POST, "/admin/gateway") => match serde_json::from_slice::<GatewayBody>(body) {
            Ok(b) => match b.gateway.as_deref().map(url::Url::parse).transpose() {
                Ok(gateway) => {
                    let answer = json!({"gateway": gateway.as_ref().map(url::Url::as_str)});
                    shared.discovery.set_gateway(gateway);
                    Reply::json(StatusCode::OK, &answer)
                }
                Err(e) => bad(e),
            },
            Err(e) => bad(e),
        },
        (&Method::GET, "/admin/recorder") => {
            let records = serde_json::to_value(shared.recorder.records()).unwrap_or(Value::Null);
            Reply::json(StatusCode::OK, &records)
        }
        (&Method::GET, "/admin/devices") => Reply::json(
            StatusCode::OK,
            &json!({"devices": shared.devices.serials()}),
        ),
        _ => Reply::empty(StatusCode::NOT_FOUND),
    }
}
