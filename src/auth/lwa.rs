//! The three Login with Amazon calls avsd makes (AVS §8): create a code pair, poll for tokens
//! with `grant_type=device_code`, refresh with `grant_type=refresh_token`. Hand-written form
//! posts over reqwest on avsd's own rustls configuration. Owns the wire format and the mapping
//! of LWA's error vocabulary to what the caller should do; the polling and refresh policies
//! live in `auth/mod.rs`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

/// Request timeout for every LWA call (the SDK uses one minute).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an LWA call failed, grouped by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum LwaError {
    /// The user has not entered the code yet: poll again after the interval.
    #[error("authorization pending")]
    Pending,
    /// Polling too fast: lengthen the interval.
    #[error("polling too fast (slow_down)")]
    SlowDown,
    /// The code pair expired or is unknown: get a new one.
    #[error("code pair expired or unknown ({0})")]
    CodePairExpired(String),
    /// The grant (device code or refresh token) is no longer valid: log in again.
    #[error("grant rejected ({error}): {description}")]
    InvalidGrant { error: String, description: String },
    /// Configuration error (client id, product, security profile): fatal until fixed.
    #[error("LWA refused the client configuration ({error}): {description}")]
    Config { error: String, description: String },
    /// Transient: network, timeout, 5xx, `server_error`, or an error LWA did not explain.
    #[error("LWA unavailable: {0}")]
    Transient(String),
}

impl LwaError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// A code pair as LWA returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct CodePairResponse {
    pub user_code: String,
    pub device_code: String,
    pub verification_uri: String,
    pub expires_in: u64,
    #[serde(default = "default_interval")]
    pub interval: u64,
}

fn default_interval() -> u64 {
    5
}

/// Tokens as LWA returns them.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
}

fn default_expires_in() -> u64 {
    3600
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// An LWA client for one device identity.
#[derive(Debug, Clone)]
pub struct LwaClient {
    http: reqwest::Client,
    codepair_url: Url,
    token_url: Url,
    client_id: String,
}

impl LwaClient {
    /// Builds the client. The TLS config is cloned with ALPN widened to h2 + http/1.1 because
    /// LWA endpoints (and stubs) may speak either.
    pub fn new(
        base: &Url,
        client_id: &str,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Self, reqwest::Error> {
        let mut tls = (**tls).clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            codepair_url: endpoint(base, "auth/O2/create/codepair"),
            token_url: endpoint(base, "auth/O2/token"),
            client_id: client_id.to_owned(),
        })
    }

    /// `POST /auth/O2/create/codepair` with scope `alexa:all` and the product's scope data.
    pub async fn create_code_pair(
        &self,
        product_id: &str,
        serial: &str,
    ) -> Result<CodePairResponse, LwaError> {
        let scope_data = serde_json::json!({
            "alexa:all": {
                "productID": product_id,
                "productInstanceAttributes": { "deviceSerialNumber": serial },
            }
        })
        .to_string();
        let form = [
            ("response_type", "device_code"),
            ("client_id", self.client_id.as_str()),
            ("scope", "alexa:all"),
            ("scope_data", scope_data.as_str()),
        ];
        self.post(&self.codepair_url, &form).await
    }

    /// `POST /auth/O2/token` with `grant_type=device_code`.
    pub async fn poll_token(
        &self,
        device_code: &str,
        user_code: &str,
    ) -> Result<TokenResponse, LwaError> {
        let form = [
            ("grant_type", "device_code"),
            ("device_code", device_code),
            ("user_code", user_code),
        ];
        self.post(&self.token_url, &form).await
    }

    /// `POST /auth/O2/token` with `grant_type=refresh_token`.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, LwaError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", self.client_id.as_str()),
        ];
        self.post(&self.token_url, &form).await
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<T, LwaError> {
        let resp = self
            .http
            .post(url.clone())
            .form(form)
            .send()
            .await
            .map_err(|e| LwaError::Transient(format!("POST {}: {e}", url.path())))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            LwaError::Transient(format!("reading the answer to {}: {e}", url.path()))
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                LwaError::Transient(format!(
                    "unexpected answer to {} ({status}): {e}",
                    url.path()
                ))
            });
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => Err(classify(
                &err.error,
                err.error_description.unwrap_or_default(),
            )),
            Err(_) => Err(LwaError::Transient(format!(
                "{} answered {status}",
                url.path()
            ))),
        }
    }
}

/// Maps LWA's `error` string (AVS §8.1) to an action.
pub fn classify(error: &str, description: String) -> LwaError {
    match error {
        "authorization_pending" => LwaError::Pending,
        "slow_down" => LwaError::SlowDown,
        "invalid_code_pair" | "expired_token" => LwaError::CodePairExpired(error.to_owned()),
        "invalid_grant" | "unauthorized_client" => LwaError::InvalidGrant {
            error: error.to_owned(),
            description,
        },
        "invalid_request" | "invalid_client" | "unsupported_grant_type" | "invalid_scope" => {
            LwaError::Config {
                error: error.to_owned(),
                description,
            }
        }
        other => LwaError::Transient(format!("{other}: {description}")),
    }
}

/// `base` + `/` + `path`, keeping any path prefix of `base`.
fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{prefix}/{path}"));
    url.set_query(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_base_prefix() {
        let base = Url::parse("https://api.amazon.com").unwrap();
        assert_eq!(
            endpoint(&base, "auth/O2/token").as_str(),
            "https://api.amazon.com/auth/O2/token"
        );
        let base = Url::parse("https://127.0.0.1:4443/lwa/").unwrap();
        assert_eq!(
            endpoint(&base, "auth/O2/token").as_str(),
            "https://127.0.0.1:4443/lwa/auth/O2/token"
        );
    }

    #[test]
    fn error_vocabulary_maps_to_actions() {
        assert!(matches!(
            classify("authorization_pending", String::new()),
            LwaError::Pending
        ));
        assert!(matches!(
            classify("slow_down", String::new()),
            LwaError::SlowDown
        ));
        assert!(matches!(
            classify("expired_token", String::new()),
            LwaError::CodePairExpired(_)
        ));
        assert!(matches!(
            classify("invalid_code_pair", String::new()),
            LwaError::CodePairExpired(_)
        ));
        assert!(matches!(
            classify("invalid_grant", String::new()),
            LwaError::InvalidGrant { .. }
        ));
        assert!(matches!(
            classify("invalid_client", String::new()),
            LwaError::Config { .. }
        ));
        assert!(classify("servererror", String::new()).is_transient());
    }
}
