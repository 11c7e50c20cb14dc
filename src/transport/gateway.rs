//! Which AVS gateway the link connects to, and the cloud's requests to move it.
//!
//! [`GatewayStore`] owns `state_dir/gateway.json`: the gateway AVS assigned
//! (`Alexa.ApiGateway.SetGateway`, or the legacy `System.SetEndpoint`), whether it was verified
//! (`VerifyGateway` answered without a move) and for which account (the SDK forgets the
//! gateway on logout; we keep it but verify it again for a new login), and the configured
//! endpoint it replaced. Like the
//! SDK's AVSGatewayManager, a stored gateway wins over the configured one, but only while the
//! configuration still names the endpoint it was assigned under: editing `[cloud] endpoint` or
//! `region` starts over from the new value.
//!
//! The link intercepts the directives that belong to it (they are about the connection, not a
//! dialog) before they reach the dialog core: see [`LinkDirective::from_directive`].

use std::path::{Path, PathBuf};

use avs_proto::interfaces::{api_gateway, discovery, system};
use avs_proto::{Directive, DirectiveKind};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use url::Url;

use crate::persist::{self, PersistError};

/// The state file.
pub const GATEWAY_FILE: &str = "gateway.json";

/// Why a gateway URL from the cloud was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    #[error("{0:?} is not a URL")]
    NotAUrl(String),
    #[error("{0} is not https (TLS is required)")]
    NotHttps(String),
    #[error("{0} has no host")]
    NoHost(String),
    #[error("{0} carries credentials, a query or a fragment")]
    Extra(String),
}

/// Checks a gateway URL given by the cloud: `https://host[:port]` and at most a path.
pub fn parse_gateway(text: &str) -> Result<Url, GatewayError> {
    let url = Url::parse(text.trim()).map_err(|_| GatewayError::NotAUrl(text.to_owned()))?;
    if url.scheme() != "https" {
        return Err(GatewayError::NotHttps(url.to_string()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(GatewayError::NoHost(url.to_string()));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(GatewayError::Extra(url.to_string()));
    }
    Ok(url)
}

/// Two gateway URLs name the same gateway (scheme, host, port).
pub fn same_gateway(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    gateway: String,
    verified: bool,
    /// The configured endpoint when the gateway was stored.
    configured: String,
    /// Hash of the account the verification was made for (`capabilities::account_id`).
    #[serde(default)]
    account: String,
}

/// The gateway to connect to, persisted (see the module docs).
#[derive(Debug)]
pub struct GatewayStore {
    path: PathBuf,
    configured: Url,
    current: Url,
    verified: bool,
    account: String,
}

impl GatewayStore {
    /// Loads the stored gateway for `configured` (the endpoint the configuration names).
    pub fn load(state_dir: &Path, configured: Url) -> Self {
        let path = state_dir.join(GATEWAY_FILE);
        let stored = match persist::read_json::<Stored>(&path) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "gateway state unreadable; using the configured endpoint");
                None
            }
        };
        let mut store = Self {
            path,
            current: configured.clone(),
            configured,
            verified: false,
            account: String::new(),
        };
        match stored {
            Some(s) if s.configured == store.configured.as_str() => {
                match parse_gateway(&s.gateway) {
                    Ok(url) => {
                        if !same_gateway(&url, &store.configured) {
                            info!(gateway = %url, "using the gateway AVS assigned earlier");
                        }
                        store.current = url;
                        store.verified = s.verified;
                        store.account = s.account;
                    }
                    Err(e) => warn!(error = %e, "stored gateway ignored"),
                }
            }
            Some(_) => info!("configured endpoint changed; the stored gateway no longer applies"),
            None => {}
        }
        store
    }

    pub fn current(&self) -> &Url {
        &self.current
    }

    /// `VerifyGateway` is due: first connection to this gateway, or for this account.
    pub fn needs_verify(&self, account: &str) -> bool {
        !self.verified || self.account != account
    }

    /// `VerifyGateway` sent to `gateway` for `account` was answered without a move.
    pub fn verified(&mut self, gateway: &Url, account: &str) -> Result<(), PersistError> {
        if !same_gateway(gateway, &self.current) || !self.needs_verify(account) {
            return Ok(());
        }
        self.verified = true;
        self.account = account.to_owned();
        self.save()
    }

    /// Makes `gateway` the current one (to be verified). False when it already was.
    pub fn move_to(&mut self, gateway: Url) -> Result<bool, PersistError> {
        if same_gateway(&gateway, &self.current) {
            return Ok(false);
        }
        self.current = gateway;
        self.verified = false;
        self.save()?;
        Ok(true)
    }

    fn save(&self) -> Result<(), PersistError> {
        persist::write_json(
            &self.path,
            &Stored {
                gateway: self.current.to_string(),
                verified: self.verified,
                configured: self.configured.to_string(),
                account: self.account.clone(),
            },
            0o600,
        )
    }
}

/// Which directive asked for a move (they differ only in what is logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveSource {
    SetGateway,
    SetEndpoint,
}

/// A directive the link handles itself.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkDirective {
    /// `Alexa.EventProcessed` with this eventCorrelationToken.
    EventProcessed(String),
    /// Move to another gateway; `url` unchecked yet, `raw` for ExceptionEncountered.
    Move {
        source: MoveSource,
        url: String,
        raw: String,
    },
}

impl LinkDirective {
    /// The link's own directives; `None` for everything the dialog core handles.
    pub fn from_directive(d: &Directive) -> Option<Self> {
        match &d.kind {
            DirectiveKind::Alexa(discovery::AlexaDirective::EventProcessed(_)) => Some(
                Self::EventProcessed(d.header.event_correlation_token.clone().unwrap_or_default()),
            ),
            DirectiveKind::ApiGateway(api_gateway::Directive::SetGateway(s)) => Some(Self::Move {
                source: MoveSource::SetGateway,
                url: s.gateway.clone(),
                raw: d.raw.clone(),
            }),
            DirectiveKind::System(system::Directive::SetEndpoint(s)) => Some(Self::Move {
                source: MoveSource::SetEndpoint,
                url: s.endpoint.clone(),
                raw: d.raw.clone(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("avsd-gw-{name}-{}", std::process::id()))
    }

    #[test]
    fn only_plain_https_gateways_are_accepted() {
        assert!(parse_gateway("https://alexa.eu.gateway.devices.a2z.com").is_ok());
        assert!(parse_gateway("https://127.0.0.1:8443/").is_ok());
        assert!(matches!(
            parse_gateway("http://alexa.eu.gateway.devices.a2z.com"),
            Err(GatewayError::NotHttps(_))
        ));
        assert!(matches!(
            parse_gateway("alexa"),
            Err(GatewayError::NotAUrl(_))
        ));
        assert!(matches!(
            parse_gateway("https://u:p@host"),
            Err(GatewayError::Extra(_))
        ));
        assert!(matches!(
            parse_gateway("https://host/?x=1"),
            Err(GatewayError::Extra(_))
        ));
    }

    #[test]
    fn a_stored_gateway_wins_until_the_configuration_changes() {
        let d = dir("store");
        let _ = std::fs::remove_dir_all(&d);
        let configured = Url::parse("https://a.example:1").unwrap();
        let mut s = GatewayStore::load(&d, configured.clone());
        assert_eq!(s.current(), &configured);
        assert!(s.needs_verify("a1"));
        s.verified(&configured, "a1").unwrap();
        assert!(!s.needs_verify("a1"));
        assert!(s.needs_verify("a2"), "another account verifies again");
        let moved = Url::parse("https://b.example:2").unwrap();
        assert!(s.move_to(moved.clone()).unwrap());
        assert!(!s.move_to(moved.clone()).unwrap());
        assert!(s.needs_verify("a1"));
        // A late confirmation for the old gateway does not verify the new one.
        s.verified(&configured, "a1").unwrap();
        assert!(s.needs_verify("a1"));

        let mut again = GatewayStore::load(&d, configured.clone());
        assert!(same_gateway(again.current(), &moved));
        assert!(again.needs_verify("a1"));
        again.verified(&moved, "a1").unwrap();
        let reloaded = GatewayStore::load(&d, configured.clone());
        assert!(!reloaded.needs_verify("a1"));
        assert!(reloaded.needs_verify("a2"));

        let other = Url::parse("https://c.example").unwrap();
        let fresh = GatewayStore::load(&d, other.clone());
        assert_eq!(fresh.current(), &other);
        assert!(fresh.needs_verify("a1"));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_link_takes_gateway_and_discovery_directives_only() {
        let build = |ns: &str, name: &str, payload: serde_json::Value| {
            let mut h = avs_proto::Header::new(ns, name);
            h.event_correlation_token = Some("c1".into());
            Directive::from_json(Directive::build(h, payload).as_bytes()).unwrap()
        };
        assert_eq!(
            LinkDirective::from_directive(&build("Alexa", "EventProcessed", serde_json::json!({}))),
            Some(LinkDirective::EventProcessed("c1".into()))
        );
        assert!(matches!(
            LinkDirective::from_directive(&build(
                "System",
                "SetEndpoint",
                serde_json::json!({"endpoint": "http://x"})
            )),
            Some(LinkDirective::Move { source: MoveSource::SetEndpoint, ref url, .. }) if url == "http://x"
        ));
        assert!(matches!(
            LinkDirective::from_directive(&build(
                "Alexa.ApiGateway",
                "SetGateway",
                serde_json::json!({"gateway": "https://y"})
            )),
            Some(LinkDirective::Move {
                source: MoveSource::SetGateway,
                ..
            })
        ));
        assert_eq!(
            LinkDirective::from_directive(&build(
                "System",
                "ResetUserInactivity",
                serde_json::json!({})
            )),
            None
        );
    }
}
