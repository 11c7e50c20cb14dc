//! The skill-side Progressive Response API: `POST {apiEndpoint}/v1/directives`
//! (avs-protocol.md §7.1, §7.4).
//!
//! Owns: the registry of skill requests a skill may still answer with interim speech
//! ([`LiveRequests`]), every validation rule of the API (token, live requestId, request type,
//! directive type, speech length and SSML wrapping, at most five per request, only before the final
//! response), and the delivery of each accepted one to the device as a `SpeechSynthesizer.Speak`
//! on the turn's sink, in the order accepted. Does not own HTTP: the gateway routes the request
//! here with its `Authorization` header and body and writes back what [`LiveRequests::handle_post`]
//! returns. Does not own the final response: [`crate::skill`] writes that, after
//! [`LiveRequestGuard::complete_and_flush`] so interim speech always comes first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use avs_proto::Header;
use avs_proto::interfaces::speech_synthesizer::{self, PlayBehavior, Speak};
use http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::speech;
use crate::turn::{TurnDirective, TurnSink};

/// Progressive responses allowed per requestId.
pub const MAX_PER_REQUEST: u32 = 5;
/// Longest accepted `directive.speech`, in characters.
pub const MAX_SPEECH_CHARS: usize = 600;
/// The only directive type of the API.
pub const SPEAK_TYPE: &str = "VoicePlayer.Speak";
/// Request types that may send progressive responses.
pub const ALLOWED_REQUEST_TYPES: [&str; 2] = ["LaunchRequest", "IntentRequest"];
/// Default lifetime of an `apiAccessToken`.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Bodies above this are refused before parsing (a PR body is a few hundred bytes).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest wait for earlier progressive responses to reach the sink.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The skill requests that hold an `apiAccessToken`, shared by the skill host (which registers
/// them) and the HTTP surface (which checks PRs against them). Cheap to clone.
#[derive(Clone, Debug)]
pub struct LiveRequests {
    inner: Arc<Mutex<Registry>>,
    token_lifetime: Duration,
    /// Open skill sessions by deviceId, kept here because a skill session spans turns exactly
    /// as long as the skill host's registry does (see [`crate::skill`]).
    sessions: Arc<Mutex<HashMap<String, crate::skill::SkillSession>>>,
    session_idle_timeout: Duration,
}

#[derive(Debug, Default)]
struct Registry {
    by_request: HashMap<String, Entry>,
    /// apiAccessToken to requestId.
    by_token: HashMap<String, String>,
}

#[derive(Debug)]
struct Entry {
    api_access_token: String,
    request_type: String,
    dialog_request_id: String,
    /// Dropped on completion: the turn's response stream ends when its last sink goes.
    sink: Option<TurnSink>,
    token_expires: Instant,
    completed: bool,
    /// PRs accepted so far; the n-th gets number n.
    accepted: u32,
    /// How many accepted PRs have been written to the sink (or given up): PR n waits for
    /// `n - 1` so they reach the device in the order they were accepted.
    delivered: watch::Sender<u32>,
}

/// Why a PR was refused: the HTTP status and the message of the error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// `{"code": <integer>, "message": "..."}`: the skill SDKs model `code` as an integer, and the
    /// Python one fails to deserialise anything else.
    pub fn body(&self) -> Value {
        json!({ "code": self.status.as_u16(), "message": self.message })
    }
}

/// An accepted PR, ready to be rendered and delivered.
struct Accepted {
    number: u32,
    request_id: String,
    dialog_request_id: String,
    speech: String,
    sink: TurnSink,
    delivered: watch::Sender<u32>,
}

impl Default for LiveRequests {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveRequests {
    pub fn new() -> Self {
        Self::with_token_lifetime(DEFAULT_TOKEN_LIFETIME)
    }

    /// Tokens expire `lifetime` after their request was registered (tests use short ones).
    pub fn with_token_lifetime(lifetime: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry::default())),
            token_lifetime: lifetime,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            session_idle_timeout: crate::skill::SESSION_IDLE_TIMEOUT,
        }
    }

    /// A skill session left open longer than `timeout` without a turn (the user never answered
    /// its ExpectSpeech) is ended before the device's next turn instead of continued.
    pub fn with_session_idle_timeout(mut self, timeout: Duration) -> Self {
        self.session_idle_timeout = timeout;
        self
    }

    pub(crate) fn session_idle_timeout(&self) -> Duration {
        self.session_idle_timeout
    }

    /// Makes `request_id` live: PRs with `api_access_token` and this requestId are delivered to
    /// `sink` with `dialog_request_id`, until the returned guard is completed or dropped.
    pub fn register(
        &self,
        request_id: &str,
        api_access_token: &str,
        request_type: &str,
        dialog_request_id: &str,
        sink: TurnSink,
    ) -> LiveRequestGuard {
        let now = Instant::now();
        let mut registry = self.lock();
        registry.prune(now);
        if let Some(old) = registry.by_request.remove(request_id) {
            registry.by_token.remove(&old.api_access_token);
        }
        registry
            .by_token
            .insert(api_access_token.to_owned(), request_id.to_owned());
        registry.by_request.insert(
            request_id.to_owned(),
            Entry {
                api_access_token: api_access_token.to_owned(),
                request_type: request_type.to_owned(),
                dialog_request_id: dialog_request_id.to_owned(),
                sink: Some(sink),
                token_expires: now + self.token_lifetime,
                completed: false,
                accepted: 0,
                delivered: watch::Sender::new(0),
            },
        );
        LiveRequestGuard {
            live: self.clone(),
            request_id: request_id.to_owned(),
        }
    }

    /// Handles `POST /v1/directives`: the status to answer and, for errors, the JSON body.
    /// An accepted PR is answered `204` at once; its Speak reaches the turn's sink shortly after,
    /// always ahead of the final response (see [`LiveRequestGuard::complete_and_flush`]).
    pub async fn handle_post(
        &self,
        authorization: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, Option<Value>) {
        let accepted = match self.accept(authorization, body) {
            Ok(accepted) => accepted,
            Err(rejection) => {
                tracing::info!(status = %rejection.status, message = %rejection.message, "progressive response refused");
                return (rejection.status, Some(rejection.body()));
            }
        };
        // Answered at once, as Alexa does; the speech is rendered and delivered on its own task
        // (bounded by FLUSH_TIMEOUT and the synthesis), in acceptance order, and the final
        // response waits for it in `complete_and_flush`. A skill hanging up cannot cancel it.
        tokio::spawn(deliver(accepted));
        (StatusCode::NO_CONTENT, None)
    }

    /// Number of PRs accepted for `request_id` (for tests and logs).
    pub fn accepted_count(&self, request_id: &str) -> Option<u32> {
        self.lock().by_request.get(request_id).map(|e| e.accepted)
    }

    /// Every rule of §7.1, in the order a real endpoint checks them: who is calling, what they
    /// sent, whether they may send it now.
    fn accept(&self, authorization: Option<&str>, body: &[u8]) -> Result<Accepted, Rejection> {
        let token = authorization.and_then(bearer_token).ok_or_else(|| {
            Rejection::new(StatusCode::UNAUTHORIZED, "missing bearer apiAccessToken")
        })?;

        let token_request = self.request_of_token(token)?;

        if body.len() > MAX_BODY_BYTES {
            return Err(Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
        let parsed: Value = serde_json::from_slice(body).map_err(|e| {
            Rejection::new(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}"))
        })?;
        let request_id = parsed
            .pointer("/header/requestId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Rejection::new(StatusCode::BAD_REQUEST, "header.requestId is missing")
            })?;
        let directive = parsed
            .get("directive")
            .filter(|d| d.is_object())
            .ok_or_else(|| Rejection::new(StatusCode::BAD_REQUEST, "directive is missing"))?;

        match directive.get("type").and_then(Value::as_str) {
            Some(SPEAK_TYPE) => {}
            Some(other) => {
                return Err(Rejection::new(
                    StatusCode::BAD_REQUEST,
                    format!("unsupported directive type {other:?}: only {SPEAK_TYPE}"),
                ));
            }
            None => {
                return Err(Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "directive.type is missing",
                ));
            }
        }
        let speech = directive
            .get("speech")
            .and_then(Value::as_str)
            .unwrap_or_default();
        validate_speech(speech)?;

        let mut registry = self.lock();
        if token_request != request_id {
            let message = if registry.by_request.contains_key(request_id) {
                "requestId does not belong to this apiAccessToken"
            } else {
                "unknown requestId"
            };
            return Err(Rejection::new(StatusCode::BAD_REQUEST, message));
        }
        let Some(entry) = registry.by_request.get_mut(request_id) else {
            return Err(Rejection::new(StatusCode::BAD_REQUEST, "unknown requestId"));
        };
        if !ALLOWED_REQUEST_TYPES.contains(&entry.request_type.as_str()) {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "progressive responses are not allowed for a {}",
                    entry.request_type
                ),
            ));
        }
        if entry.completed {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "the request already completed: progressive responses must come before the final response",
            ));
        }

        if entry.accepted >= MAX_PER_REQUEST {
            return Err(Rejection::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("at most {MAX_PER_REQUEST} progressive responses per request"),
            ));
        }
        let Some(sink) = entry.sink.clone() else {
            return Err(Rejection::new(
                StatusCode::FORBIDDEN,
                "the request already completed",
            ));
        };
        entry.accepted += 1;
        Ok(Accepted {
            number: entry.accepted,
            request_id: request_id.to_owned(),
            dialog_request_id: entry.dialog_request_id.clone(),
            speech: speech.to_owned(),
            sink,
            delivered: entry.delivered.clone(),
        })
    }

    /// Takes the open skill session of `device_id` out of the store (a turn owns it while it runs).
    pub(crate) fn take_session(&self, device_id: &str) -> Option<crate::skill::SkillSession> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(device_id)
    }

    /// Puts a session that stays open back for the device's next turn.
    pub(crate) fn store_session(&self, device_id: &str, session: crate::skill::SkillSession) {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(device_id.to_owned(), session);
    }

    /// Whether `device_id` has an open skill session.
    pub fn has_session(&self, device_id: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(device_id)
    }

    /// The requestId an unexpired `token` was issued for, or 401.
    fn request_of_token(&self, token: &str) -> Result<String, Rejection> {
        let now = Instant::now();
        let mut registry = self.lock();
        registry.prune(now);
        let unknown = || Rejection::new(StatusCode::UNAUTHORIZED, "unknown apiAccessToken");
        let request_id = registry.by_token.get(token).ok_or_else(unknown)?;
        let entry = registry.by_request.get(request_id).ok_or_else(unknown)?;
        if entry.token_expires <= now {
            return Err(Rejection::new(
                StatusCode::UNAUTHORIZED,
                "apiAccessToken expired",
            ));
        }
        Ok(request_id.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind, still consistent enough to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `request_id` completed; returns how many PRs were accepted and the delivery counter.
    fn complete(&self, request_id: &str) -> Option<(u32, watch::Receiver<u32>)> {
        let mut registry = self.lock();
        let entry = registry.by_request.get_mut(request_id)?;
        entry.completed = true;
        entry.sink = None;
        Some((entry.accepted, entry.delivered.subscribe()))
    }
}

impl Registry {
    /// Forgets requests whose token expired: their PRs now get 401, as for any unknown token.
    fn prune(&mut self, now: Instant) {
        // Kept a little past expiry so an expired token is reported as expired, not unknown.
        let grace = Duration::from_secs(600);
        let dead: Vec<String> = self
            .by_request
            .iter()
            .filter(|(_, e)| e.completed && e.token_expires + grace <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            if let Some(entry) = self.by_request.remove(&id) {
                self.by_token.remove(&entry.api_access_token);
            }
        }
    }
}

/// Keeps a skill request live; completes it when dropped.
#[derive(Debug)]
#[must_use = "the request is completed as soon as the guard is dropped"]
pub struct LiveRequestGuard {
    live: LiveRequests,
    request_id: String,
}

impl LiveRequestGuard {
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// From now on PRs for this request get 403.
    pub fn complete(&self) {
        self.live.complete(&self.request_id);
    }

    /// [`complete`](Self::complete), then waits until every PR accepted before it has been
    /// written to the sink, so the final response is queued behind them.
    pub async fn complete_and_flush(&self) {
        if let Some((accepted, mut delivered)) = self.live.complete(&self.request_id) {
            // Bounded: a delivery stuck on a full sink must not hold the final response forever.
            let wait = delivered.wait_for(|n| *n >= accepted);
            if tokio::time::timeout(FLUSH_TIMEOUT, wait).await.is_err() {
                tracing::warn!(request_id = %self.request_id, "progressive responses still undelivered; final response goes on");
            }
        }
    }
}

impl Drop for LiveRequestGuard {
    fn drop(&mut self) {
        self.complete();
    }
}

/// Renders the speech and writes the Speak to the sink, in acceptance order.
async fn deliver(pr: Accepted) {
    let token = format!("pr-{}-{}", pr.number, pr.request_id);
    let content_id = token.clone();
    let speech_text = pr.speech.clone();
    let rendered = tokio::task::spawn_blocking(move || speech::synthesize_mp3(&speech_text)).await;

    let mut delivered = pr.delivered.subscribe();
    // Earlier PRs may still be rendering: wait for their turn (bounded), then take ours.
    let turn = delivered.wait_for(|n| *n + 1 >= pr.number);
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, turn).await;
    match rendered {
        Ok(Ok(mp3)) => {
            let dialog = (!pr.dialog_request_id.is_empty()).then(|| pr.dialog_request_id.clone());
            let json = avs_proto::Directive::build(
                Header::new(speech_synthesizer::NAMESPACE, "Speak").with_dialog(dialog),
                speak_payload(&content_id, &token),
            );
            let directive = TurnDirective {
                json,
                attachment: Some((content_id, mp3)),
            };
            if pr.sink.send(directive).await.is_err() {
                // The device's stream is gone; the skill's call was still valid.
                tracing::warn!(request_id = %pr.request_id, number = pr.number, "turn closed before the progressive response could be delivered");
            } else {
                tracing::info!(request_id = %pr.request_id, number = pr.number, "progressive response delivered");
            }
        }
        Ok(Err(speech::SpeechError::NothingToSay)) => {
            // Valid but silent (punctuation only, say): Alexa would play nothing either.
            tracing::info!(request_id = %pr.request_id, number = pr.number, "progressive response has nothing to say");
        }
        Ok(Err(e)) => {
            tracing::warn!(request_id = %pr.request_id, error = %e, "progressive response speech failed");
        }
        Err(e) => {
            tracing::warn!(request_id = %pr.request_id, error = %e, "progressive response speech task failed");
        }
    }
    pr.delivered.send_modify(|n| *n = (*n).max(pr.number));
}

fn speak_payload(content_id: &str, token: &str) -> Value {
    let speak = Speak {
        url: format!("cid:{content_id}"),
        format: "AUDIO_MPEG".to_owned(),
        token: token.to_owned(),
        play_behavior: Some(PlayBehavior::Enqueue),
        caption: None,
    };
    serde_json::to_value(speak).unwrap_or(Value::Null)
}

/// `Bearer <token>` (scheme case-insensitive) to `<token>`.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Non-empty, at most 600 characters, and SSML (anything with tags) wrapped in a well-formed
/// `<speak>` element.
fn validate_speech(speech: &str) -> Result<(), Rejection> {
    if speech.trim().is_empty() {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "directive.speech is empty",
        ));
    }
    let chars = speech.chars().count();
    if chars > MAX_SPEECH_CHARS {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            format!(
                "directive.speech has {chars} characters; at most {MAX_SPEECH_CHARS} are allowed"
            ),
        ));
    }
    if !speech.contains('<') {
        return Ok(());
    }
    let trimmed = speech.trim();
    if !(trimmed.starts_with("<speak>") || trimmed.starts_with("<speak "))
        || !trimmed.ends_with("</speak>")
    {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "SSML must be wrapped in <speak>...</speak>",
        ));
    }
    check_ssml_nesting(trimmed).map_err(|reason| {
        Rejection::new(StatusCode::BAD_REQUEST, format!("invalid SSML: {reason}"))
    })?;
    if !has_ssml_content(trimmed) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "directive.speech is empty once its SSML tags are removed",
        ));
    }
    Ok(())
}

/// Whether well-formed SSML says or plays anything: text outside tags, or an `<audio>` clip.
fn has_ssml_content(ssml: &str) -> bool {
    let mut rest = ssml;
    while let Some(open) = rest.find('<') {
        if !rest[..open].trim().is_empty() {
            return true;
        }
        let tag = &rest[open + 1..];
        if tag.starts_with("audio") {
            return true;
        }
        rest = tag.find('>').map_or("", |close| &tag[close + 1..]);
    }
    !rest.trim().is_empty()
}

/// Tags open and close in order, and `<speak>` is the one root element.
fn check_ssml_nesting(ssml: &str) -> Result<(), String> {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = ssml;
    let mut roots = 0;
    while let Some(open) = rest.find('<') {
        if stack.is_empty() && !rest[..open].trim().is_empty() {
            return Err("text outside <speak>".into());
        }
        let after = &rest[open + 1..];
        let close = after.find('>').ok_or("unterminated tag")?;
        let tag = &after[..close];
        rest = &after[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim();
            match stack.pop() {
                Some(open_name) if open_name == name => {}
                Some(open_name) => return Err(format!("</{name}> closes <{open_name}>")),
                None => return Err(format!("</{name}> closes nothing")),
            }
        } else {
            let self_closing = tag.ends_with('/');
            let name = tag
                .trim_end_matches('/')
                .split_whitespace()
                .next()
                .filter(|n| {
                    n.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '-')
                })
                .ok_or("empty or malformed tag")?;
            if stack.is_empty() {
                roots += 1;
                if name != "speak" || roots > 1 {
                    return Err("<speak> must be the only root element".into());
                }
            }
            if !self_closing {
                stack.push(name);
            }
        }
    }
    if let Some(name) = stack.last() {
        return Err(format!("<{name}> is never closed"));
    }
    if !rest.trim().is_empty() {
        return Err("text outside <speak>".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
