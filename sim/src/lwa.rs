//! The Login with Amazon stub (avs-protocol.md §8): code-based linking (`create/codepair`,
//! `token` with the `device_code` grant), refresh, approval of a user code, and the access
//! tokens the gateway checks. Pure state behind a lock plus the form handling; the router
//! decides which path lands here.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::StatusCode;
use rand::Rng;
use serde_json::{Value, json};

/// Settings of the stub.
#[derive(Debug, Clone)]
pub struct LwaConfig {
    /// Client ids accepted; empty accepts any `amzn1.application-oa2-client.*`.
    pub client_ids: Vec<String>,
    pub code_pair_lifetime: Duration,
    pub poll_interval: Duration,
    pub access_token_lifetime: Duration,
    /// Approve every code pair at once (no `/admin/approve` needed).
    pub auto_approve: bool,
    /// What `verification_uri` says.
    pub verification_uri: String,
}

impl Default for LwaConfig {
    fn default() -> Self {
        Self {
            client_ids: Vec::new(),
            code_pair_lifetime: Duration::from_secs(600),
            poll_interval: Duration::from_secs(5),
            access_token_lifetime: Duration::from_secs(3600),
            auto_approve: false,
            verification_uri: "https://amazon.com/us/code".to_owned(),
        }
    }
}

/// Who a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub client_id: String,
    pub product_id: String,
    pub device_serial: String,
}

struct CodePair {
    user_code: String,
    grant: Grant,
    expires_at: Instant,
    last_poll: Option<Instant>,
    approved: bool,
}

struct AccessToken {
    grant: Grant,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    /// By device_code.
    pairs: HashMap<String, CodePair>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, Grant>,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("no bearer token")]
    Missing,
    #[error("unknown token")]
    Unknown,
    #[error("expired token")]
    Expired,
}

/// The LWA stub.
pub struct Lwa {
    config: LwaConfig,
    state: Mutex<State>,
}

type Reply = (StatusCode, Value);

fn error(code: &str, description: &str) -> Reply {
    (
        StatusCode::BAD_REQUEST,
        json!({ "error": code, "error_description": description }),
    )
}

fn random_token(prefix: &str) -> String {
    let mut rng = rand::rng();
    let body: String = (0..96)
        .map(|_| {
            let i = rng.random_range(0..62u8);
            char::from(match i {
                0..=9 => b'0' + i,
                10..=35 => b'A' + i - 10,
                _ => b'a' + i - 36,
            })
        })
        .collect();
    format!("{prefix}IwEB{body}")
}

fn random_user_code() -> String {
    // No 0/O/1/I: the code is read off a console or spoken.
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..6)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl Lwa {
    pub fn new(config: LwaConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client_known(&self, client_id: &str) -> bool {
        if self.config.client_ids.is_empty() {
            client_id.starts_with("amzn1.application-oa2-client.")
        } else {
            self.config.client_ids.iter().any(|c| c == client_id)
        }
    }

    /// `POST /auth/O2/create/codepair` with a form-encoded body.
    pub fn create_codepair(&self, form: &HashMap<String, String>) -> Reply {
        if form.get("response_type").map(String::as_str) != Some("device_code") {
            return error("invalid_request", "response_type must be device_code");
        }
        let Some(client_id) = form.get("client_id") else {
            return error("invalid_request", "client_id is missing");
        };
        if !self.client_known(client_id) {
            return error("invalid_client", "unknown client_id");
        }
        let scopes_ok = form
            .get("scope")
            .is_some_and(|s| s.split(' ').any(|s| s == "alexa:all"));
        if !scopes_ok {
            return error("invalid_scope", "scope must contain alexa:all");
        }
        let scope_data: Option<Value> = form
            .get("scope_data")
            .and_then(|s| serde_json::from_str(s).ok());
        let alexa = scope_data.as_ref().map(|v| &v["alexa:all"]);
        let product_id = alexa.and_then(|a| a["productID"].as_str());
        let serial =
            alexa.and_then(|a| a["productInstanceAttributes"]["deviceSerialNumber"].as_str());
        let (Some(product_id), Some(serial)) = (product_id, serial) else {
            return error(
                "invalid_request",
                "scope_data must name alexa:all productID and deviceSerialNumber",
            );
        };
        let device_code = uuid::Uuid::new_v4().to_string();
        let user_code = random_user_code();
        let pair = CodePair {
            user_code: user_code.clone(),
            grant: Grant {
                client_id: client_id.clone(),
                product_id: product_id.to_owned(),
                device_serial: serial.to_owned(),
            },
            expires_at: Instant::now() + self.config.code_pair_lifetime,
            last_poll: None,
            approved: self.config.auto_approve,
        };
        self.lock().pairs.insert(device_code.clone(), pair);
        (
            StatusCode::OK,
            json!({
                "user_code": user_code,
                "device_code": device_code,
                "verification_uri": self.config.verification_uri,
                "expires_in": self.config.code_pair_lifetime.as_secs(),
                "interval": self.config.poll_interval.as_secs(),
            }),
        )
    }

    /// `POST /auth/O2/token` with a form-encoded body.
    pub fn token(&self, form: &HashMap<String, String>) -> Reply {
        match form.get("grant_type").map(String::as_str) {
            Some("device_code") => self.device_code_grant(form),
            Some("refresh_token") => self.refresh_grant(form),
            Some(_) => error("unsupported_grant_type", "grant_type not supported"),
            None => error("invalid_request", "grant_type is missing"),
        }
    }

    fn device_code_grant(&self, form: &HashMap<String, String>) -> Reply {
        let (Some(device_code), Some(user_code)) = (form.get("device_code"), form.get("user_code"))
        else {
            return error("invalid_request", "device_code and user_code are required");
        };
        let now = Instant::now();
        let mut state = self.lock();
        let Some(pair) = state.pairs.get_mut(device_code) else {
            return error("invalid_code_pair", "unknown code pair");
        };
        if pair.user_code != *user_code {
            return error("invalid_code_pair", "user_code does not match device_code");
        }
        if now >= pair.expires_at {
            state.pairs.remove(device_code);
            return error("invalid_code_pair", "code pair expired");
        }
        let too_fast = pair
            .last_poll
            .is_some_and(|t| now.duration_since(t) < self.config.poll_interval);
        pair.last_poll = Some(now);
        if too_fast {
            return error("slow_down", "polling faster than interval");
        }
        if !pair.approved {
            return error(
                "authorization_pending",
                "the user has not entered the code yet",
            );
        }
        let Some(pair) = state.pairs.remove(device_code) else {
            return error("invalid_code_pair", "unknown code pair");
        };
        let refresh = random_token("Atzr|");
        state.refresh.insert(refresh.clone(), pair.grant.clone());
        Self::issue(&self.config, &mut state, pair.grant, refresh)
    }

    fn refresh_grant(&self, form: &HashMap<String, String>) -> Reply {
        let (Some(refresh), Some(client_id)) = (form.get("refresh_token"), form.get("client_id"))
        else {
            return error(
                "invalid_request",
                "refresh_token and client_id are required",
            );
        };
        if !self.client_known(client_id) {
            return error("invalid_client", "unknown client_id");
        }
        let mut state = self.lock();
        let Some(grant) = state.refresh.get(refresh).cloned() else {
            return error("invalid_grant", "unknown refresh token");
        };
        if grant.client_id != *client_id {
            return error("invalid_grant", "refresh token belongs to another client");
        }
        Self::issue(&self.config, &mut state, grant, refresh.clone())
    }

    fn issue(config: &LwaConfig, state: &mut State, grant: Grant, refresh: String) -> Reply {
        let now = Instant::now();
        state.access.retain(|_, t| t.expires_at > now);
        let access = random_token("Atza|");
        state.access.insert(
            access.clone(),
            AccessToken {
                grant,
                expires_at: now + config.access_token_lifetime,
            },
        );
        (
            StatusCode::OK,
            json!({
                "access_token": access,
                "refresh_token": refresh,
                "token_type": "bearer",
                "expires_in": config.access_token_lifetime.as_secs(),
            }),
        )
    }

    /// Approves the code pair showing `user_code`; false when no live pair shows it.
    pub fn approve(&self, user_code: &str) -> bool {
        let now = Instant::now();
        let mut state = self.lock();
        match state
            .pairs
            .values_mut()
            .find(|p| p.user_code.eq_ignore_ascii_case(user_code) && p.expires_at > now)
        {
            Some(p) => {
                p.approved = true;
                true
            }
            None => false,
        }
    }

    /// Issues a token pair directly, for tests and scripts that do not exercise linking.
    pub fn issue_for(&self, grant: Grant) -> (String, String) {
        let refresh = random_token("Atzr|");
        let mut state = self.lock();
        state.refresh.insert(refresh.clone(), grant.clone());
        let (_, v) = Self::issue(&self.config, &mut state, grant, refresh.clone());
        (
            v["access_token"].as_str().unwrap_or_default().to_owned(),
            refresh,
        )
    }

    /// Checks an `authorization` header value.
    pub fn check_bearer(&self, authorization: Option<&str>) -> Result<Grant, TokenRejection> {
        let token = authorization
            .and_then(|a| {
                a.strip_prefix("Bearer ")
                    .or_else(|| a.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(TokenRejection::Missing)?;
        let state = self.lock();
        let t = state.access.get(token).ok_or(TokenRejection::Unknown)?;
        if Instant::now() >= t.expires_at {
            return Err(TokenRejection::Expired);
        }
        Ok(t.grant.clone())
    }
}

/// Parses an `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const CLIENT: &str = "amzn1.application-oa2-client.test";
    const SCOPE_DATA: &str = r#"{"alexa:all":{"productID":"P","productInstanceAttributes":{"deviceSerialNumber":"SN1"}}}"#;

    #[test]
    fn code_pair_then_pending_slow_down_and_token() {
        let lwa = Lwa::new(LwaConfig {
            poll_interval: Duration::from_millis(50),
            ..LwaConfig::default()
        });
        let (s, v) = lwa.create_codepair(&form(&[
            ("response_type", "device_code"),
            ("client_id", CLIENT),
            ("scope", "alexa:all profile:user_id"),
            ("scope_data", SCOPE_DATA),
        ]));
        assert_eq!(s, StatusCode::OK);
        let dc = v["device_code"].as_str().unwrap();
        let uc = v["user_code"].as_str().unwrap();
        let poll = form(&[
            ("grant_type", "device_code"),
            ("device_code", dc),
            ("user_code", uc),
        ]);
        assert_eq!(lwa.token(&poll).1["error"], "authorization_pending");
        assert_eq!(lwa.token(&poll).1["error"], "slow_down");
        assert!(lwa.approve(uc));
        std::thread::sleep(Duration::from_millis(60));
        let (s, v) = lwa.token(&poll);
        assert_eq!(s, StatusCode::OK, "{v}");
        let access = v["access_token"].as_str().unwrap();
        assert!(access.starts_with("Atza|"));
        assert_eq!(
            lwa.check_bearer(Some(&format!("Bearer {access}")))
                .unwrap()
                .device_serial,
            "SN1"
        );
        // A used pair is gone.
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(lwa.token(&poll).1["error"], "invalid_code_pair");
    }
}
