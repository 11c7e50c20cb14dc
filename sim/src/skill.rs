//! Hosting a real Alexa skill web service behind a turn: the JSON request/response format of
//! "Handle Requests Sent by Alexa" (ASK), spoken to the device as AVS directives.
//!
//! Owns: building `LaunchRequest` / `IntentRequest` / `SessionEndedRequest` envelopes (session,
//! context.System with `apiEndpoint` and a fresh `apiAccessToken` pointing back at the sim),
//! posting them with a deadline while the skill's progressive responses flow through
//! [`crate::progressive`], turning the skill's response into `SpeechSynthesizer.Speak` (real MP3),
//! `AudioPlayer.*` and `SpeechRecognizer.ExpectSpeech` directives on the turn's sink, and the
//! skill session of each device across turns (attributes, reprompt, `new: false`).
//! Does not own the device's streams (the gateway does) nor the PR rules (progressive.rs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

mod ask;
mod directives;

use ask::{
    OutputSpeech, ResponseEnvelope, application_id, envelope, intent_request, launch_request,
    new_api_access_token, new_request_id, session_ended_request,
};
use directives::{audio_directive, expect_speech_directive, speak_directive};

use crate::progressive::LiveRequests;
use crate::speech::SpeechError;
use crate::turn::{TurnDirective, TurnSink};

/// How long a skill has for its whole answer, progressive responses included (ASK: ~8 s).
pub const SKILL_TIMEOUT: Duration = Duration::from_secs(8);
/// How long `SessionEndedRequest` may take; its answer is ignored anyway.
const SESSION_ENDED_TIMEOUT: Duration = Duration::from_secs(3);
/// `ExpectSpeech.timeoutInMilliseconds` when a skill keeps its session open.
pub const EXPECT_SPEECH_TIMEOUT_MS: u64 = 8000;
/// An open session with no turn for this long has been abandoned: the device's ExpectSpeech
/// (8 s), a reprompt and a second ExpectSpeech are over, so Alexa would have ended it.
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// What Alexa says when a skill fails.
pub const SKILL_FAILURE_SPEECH: &str = "There was a problem with the requested skill's response.";
/// Largest skill response read.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// One turn to be answered by a skill.
#[derive(Debug, Clone)]
pub struct SkillTurn {
    /// The skill's web service (`POST` target).
    pub endpoint: url::Url,
    /// The sim's base URL, given to the skill as `context.System.apiEndpoint`.
    pub api_endpoint: url::Url,
    /// The Recognize's dialogRequestId, carried by every directive of the answer.
    pub dialog_request_id: String,
    /// `None` for a `LaunchRequest`, else the intent of an `IntentRequest`.
    pub intent: Option<String>,
    pub slots: BTreeMap<String, String>,
    pub locale: String,
    pub device_id: String,
    pub user_id: String,
}

/// Why a skill turn failed. The device has been answered regardless (with
/// [`SKILL_FAILURE_SPEECH`]) unless the error is [`SkillError::TurnClosed`].
#[derive(Debug, thiserror::Error)]
pub enum SkillError {
    #[error("the HTTP client could not be built")]
    Client(#[source] reqwest::Error),
    #[error("the skill endpoint could not be reached")]
    Unreachable(#[source] reqwest::Error),
    #[error("the skill did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the skill answered HTTP {0}")]
    Status(http::StatusCode),
    #[error("the skill's response is not a response envelope")]
    InvalidResponse(#[source] serde_json::Error),
    #[error("the skill's response is larger than {MAX_RESPONSE_BYTES} bytes")]
    ResponseTooLarge,
    #[error("the skill's speech could not be synthesized")]
    Speech(#[source] SpeechError),
    #[error("the speech synthesis task died")]
    SpeechTask(#[source] tokio::task::JoinError),
    #[error("the turn's response stream closed before the answer was written")]
    TurnClosed,
}

impl SkillError {
    /// `request.error.type` of the `SessionEndedRequest` this failure causes.
    fn session_error_type(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "ENDPOINT_TIMEOUT",
            Self::Status(_) | Self::InvalidResponse(_) | Self::ResponseTooLarge => {
                "INVALID_RESPONSE"
            }
            Self::TurnClosed => "DEVICE_COMMUNICATION_ERROR",
            Self::Client(_) | Self::Unreachable(_) | Self::Speech(_) | Self::SpeechTask(_) => {
                "INTERNAL_SERVICE_ERROR"
            }
        }
    }
}

/// Why a session ends without the skill ending it (`SessionEndedRequest.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEndReason {
    UserInitiated,
    ExceededMaxReprompts,
    Error,
}

impl SessionEndReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::UserInitiated => "USER_INITIATED",
            Self::ExceededMaxReprompts => "EXCEEDED_MAX_REPROMPTS",
            Self::Error => "ERROR",
        }
    }
}

/// A device's open session with a skill, kept between turns.
#[derive(Debug, Clone)]
pub(crate) struct SkillSession {
    endpoint: url::Url,
    api_endpoint: url::Url,
    session_id: String,
    application_id: String,
    user_id: String,
    device_id: String,
    locale: String,
    attributes: Map<String, Value>,
    reprompt: Option<OutputSpeech>,
    reprompt_used: bool,
    dialog_request_id: String,
    /// When the last turn of the session ended.
    idle_since: Instant,
}

impl SkillSession {
    fn open(turn: &SkillTurn) -> Self {
        Self {
            endpoint: turn.endpoint.clone(),
            api_endpoint: turn.api_endpoint.clone(),
            session_id: format!("amzn1.echo-api.session.{}", uuid::Uuid::new_v4()),
            application_id: application_id(&turn.endpoint),
            user_id: turn.user_id.clone(),
            device_id: turn.device_id.clone(),
            locale: turn.locale.clone(),
            attributes: Map::new(),
            reprompt: None,
            reprompt_used: false,
            dialog_request_id: turn.dialog_request_id.clone(),
            idle_since: Instant::now(),
        }
    }
}

/// Answers one turn with the skill at `turn.endpoint`. Progressive responses the skill sends
/// while it works reach `sink` first (through `live`); then its final answer. On failure the
/// device hears [`SKILL_FAILURE_SPEECH`], the skill gets a `SessionEndedRequest`, and the error
/// is returned for the caller's records.
pub async fn run_turn(
    turn: SkillTurn,
    live: &LiveRequests,
    sink: TurnSink,
) -> Result<(), SkillError> {
    run_turn_with_deadline(turn, live, sink, SKILL_TIMEOUT).await
}

/// [`run_turn`] with another deadline for the skill's answer (tests, slow skills).
pub async fn run_turn_with_deadline(
    turn: SkillTurn,
    live: &LiveRequests,
    sink: TurnSink,
    deadline: Duration,
) -> Result<(), SkillError> {
    let client = http_client()?;
    let (mut session, new) = match live.take_session(&turn.device_id) {
        Some(open) if open.idle_since.elapsed() > live.session_idle_timeout() => {
            // Nobody answered its ExpectSpeech: Alexa would have ended it long ago.
            end_with(
                &client,
                live,
                open,
                SessionEndReason::ExceededMaxReprompts,
                None,
            )
            .await;
            (SkillSession::open(&turn), true)
        }
        Some(open) if open.endpoint == turn.endpoint => (open, false),
        Some(other) => {
            // The user moved on to another skill: the old one hears that its session is over.
            end_with(&client, live, other, SessionEndReason::UserInitiated, None).await;
            (SkillSession::open(&turn), true)
        }
        None => (SkillSession::open(&turn), true),
    };
    session.api_endpoint = turn.api_endpoint.clone();
    session.dialog_request_id = turn.dialog_request_id.clone();
    session.locale = turn.locale.clone();
    session.reprompt_used = false;

    let request_id = new_request_id();
    let api_access_token = new_api_access_token();
    let request = match &turn.intent {
        Some(name) => intent_request(&request_id, &turn.locale, name, &turn.slots),
        None => launch_request(&request_id, &turn.locale),
    };
    let request_type = if turn.intent.is_some() {
        "IntentRequest"
    } else {
        "LaunchRequest"
    };
    let envelope = envelope(&session, new, &api_access_token, request);

    let guard = live.register(
        &request_id,
        &api_access_token,
        request_type,
        &turn.dialog_request_id,
        sink.clone(),
    );
    tracing::info!(%request_id, request_type, endpoint = %turn.endpoint, new_session = new, "calling skill");
    let answer = post(&client, &turn.endpoint, &envelope, deadline).await;
    // Interim speech accepted before the answer arrived goes out first; later PRs get 403.
    guard.complete_and_flush().await;
    drop(guard);

    let outcome = match answer {
        Ok(envelope) => render(&turn.dialog_request_id, envelope, &mut session, &sink).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(keep_open) => {
            if keep_open {
                session.idle_since = Instant::now();
                live.store_session(&turn.device_id, session);
            }
            Ok(())
        }
        Err(SkillError::TurnClosed) => {
            end_with(
                &client,
                live,
                session,
                SessionEndReason::Error,
                Some(&SkillError::TurnClosed),
            )
            .await;
            Err(SkillError::TurnClosed)
        }
        Err(e) => {
            tracing::warn!(%request_id, error = %e, "skill turn failed");
            let apology =
                speak_directive(&turn.dialog_request_id, SKILL_FAILURE_SPEECH, None).await;
            let told = match apology {
                Ok(directive) => sink.send(directive).await.is_ok(),
                Err(_) => false,
            };
            if !told {
                tracing::warn!(%request_id, "could not tell the device the skill failed");
            }
            // The device's answer is complete: its stream need not wait for the skill's goodbye.
            drop(sink);
            end_with(&client, live, session, SessionEndReason::Error, Some(&e)).await;
            Err(e)
        }
    }
}

/// Ends the device's open session, if any, with a `SessionEndedRequest` (e.g. when the user
/// says "stop" or the device's ExpectSpeech timed out twice). Returns whether there was one.
pub async fn end_session(
    live: &LiveRequests,
    device_id: &str,
    reason: SessionEndReason,
) -> Result<bool, SkillError> {
    let Some(session) = live.take_session(device_id) else {
        return Ok(false);
    };
    let client = http_client()?;
    end_with(&client, live, session, reason, None).await;
    Ok(true)
}

/// The device's `ExpectSpeechTimedOut`: the first time, the skill's reprompt is spoken and the
/// mic reopened (directives on `sink`, with the session's last dialogRequestId); after that, or
/// without a reprompt, the session ends with `EXCEEDED_MAX_REPROMPTS`. Returns whether the
/// session is still open.
pub async fn expect_speech_timed_out(
    live: &LiveRequests,
    device_id: &str,
    sink: TurnSink,
) -> Result<bool, SkillError> {
    let Some(mut session) = live.take_session(device_id) else {
        return Ok(false);
    };
    let reprompt = session
        .reprompt
        .as_ref()
        .and_then(|r| r.speech().map(|s| (s.to_owned(), r.play_behavior)));
    match reprompt {
        Some((speech, behavior)) if !session.reprompt_used => {
            session.reprompt_used = true;
            let dialog = session.dialog_request_id.clone();
            let directive = speak_directive(&dialog, &speech, behavior).await?;
            sink.send(directive)
                .await
                .map_err(|_| SkillError::TurnClosed)?;
            sink.send(expect_speech_directive(&dialog))
                .await
                .map_err(|_| SkillError::TurnClosed)?;
            session.idle_since = Instant::now();
            live.store_session(device_id, session);
            Ok(true)
        }
        _ => {
            let client = http_client()?;
            end_with(
                &client,
                live,
                session,
                SessionEndReason::ExceededMaxReprompts,
                None,
            )
            .await;
            Ok(false)
        }
    }
}

/// Writes the skill's answer to the sink; returns whether the session stays open.
async fn render(
    dialog_request_id: &str,
    envelope: ResponseEnvelope,
    session: &mut SkillSession,
    sink: &TurnSink,
) -> Result<bool, SkillError> {
    let response = envelope.response.unwrap_or_default();
    if let Some(attributes) = envelope.session_attributes {
        session.attributes = attributes;
    }
    session.reprompt = response.reprompt.and_then(|r| r.output_speech);
    // Absent means "end" on a voice-only device.
    let keep_open = response.should_end_session == Some(false);

    let mut directives = Vec::new();
    if let Some(output) = &response.output_speech
        && let Some(speech) = output.speech()
    {
        directives.push(speak_directive(dialog_request_id, speech, output.play_behavior).await?);
    }
    for directive in response.directives.unwrap_or_default() {
        match audio_directive(dialog_request_id, &directive) {
            Some(json) => directives.push(TurnDirective {
                json,
                attachment: None,
            }),
            None => {
                let kind = directive.get("type").and_then(Value::as_str).unwrap_or("?");
                tracing::info!(kind, "skill directive has no device counterpart; ignored");
            }
        }
    }
    if keep_open {
        directives.push(expect_speech_directive(dialog_request_id));
    }
    for directive in directives {
        sink.send(directive)
            .await
            .map_err(|_| SkillError::TurnClosed)?;
    }
    Ok(keep_open)
}

/// Sends `SessionEndedRequest` (best effort: its answer does not matter, and a skill that just
/// failed may well fail this too).
async fn end_with(
    client: &reqwest::Client,
    live: &LiveRequests,
    session: SkillSession,
    reason: SessionEndReason,
    error: Option<&SkillError>,
) {
    let request_id = new_request_id();
    let token = new_api_access_token();
    let error = error.map(|e| (e.session_error_type(), e.to_string()));
    let request = session_ended_request(&request_id, &session.locale, reason.as_str(), error);
    let envelope = envelope(&session, false, &token, request);
    // PRs are not allowed for a SessionEndedRequest; registering its token makes them 400, not 401.
    let (sink, _closed) = tokio::sync::mpsc::channel(1);
    let _guard = live.register(&request_id, &token, "SessionEndedRequest", "", sink);
    match post(client, &session.endpoint, &envelope, SESSION_ENDED_TIMEOUT).await {
        Ok(_) => tracing::info!(%request_id, reason = reason.as_str(), "skill session ended"),
        Err(e) => tracing::info!(%request_id, error = %e, "SessionEndedRequest not answered"),
    }
}

/// POSTs `envelope` and parses the answer, all within `deadline`.
async fn post(
    client: &reqwest::Client,
    endpoint: &url::Url,
    envelope: &Value,
    deadline: Duration,
) -> Result<ResponseEnvelope, SkillError> {
    let exchange = async {
        let response = client
            .post(endpoint.clone())
            .json(envelope)
            .send()
            .await
            .map_err(SkillError::Unreachable)?;
        let status = response.status();
        if !status.is_success() {
            return Err(SkillError::Status(status));
        }
        let body = read_limited(response).await?;
        serde_json::from_slice::<ResponseEnvelope>(&body).map_err(SkillError::InvalidResponse)
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| SkillError::Timeout(deadline))?
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, SkillError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(SkillError::Unreachable)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(SkillError::ResponseTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An HTTP client on rustls with ring and the Mozilla roots (skills in the wild are HTTPS; the
/// local test skill is plain HTTP).
fn http_client() -> Result<reqwest::Client, SkillError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    let builder = match tls {
        Ok(config) => builder.tls_backend_preconfigured(config),
        Err(e) => {
            tracing::warn!(error = %e, "rustls setup failed; HTTPS skills will not be reachable");
            builder
        }
    };
    builder.build().map_err(SkillError::Client)
}

#[cfg(test)]
mod tests;
