//! avs-proto: the Alexa Voice Service messages and wire codec shared by avsd (the device) and
//! avs-sim (the cloud). Pure data and parsing: no tokio, no sockets.
//!
//! Layout:
//! - [`envelope`]: headers, the event and directive envelopes, raw messages.
//! - [`context`]: context entries (state objects) sent with events.
//! - [`interfaces`]: one module per AVS interface with its directives and events, typed.
//! - [`directive`]: parse a directive part into a typed [`directive::Directive`] (with an
//!   `Unknown` arm that keeps the raw JSON) and the errors that map to `ExceptionEncountered`.
//! - [`event`]: typed events for both directions (avsd builds them, avs-sim parses them).
//! - [`multipart`]: the streaming `multipart/form-data` encoder for event bodies, the
//!   `multipart/related` encoder for responses, and one incremental decoder for both.

pub mod context;
pub mod directive;
pub mod envelope;
pub mod event;
pub mod interfaces;
pub mod multipart;

pub use context::ContextEntry;
pub use directive::{Directive, DirectiveError, DirectiveKind, ExceptionType};
pub use envelope::{DirectiveEnvelope, EventEnvelope, Header, Message};
pub use event::{Event, EventKind};

/// The AVS API version path segment (`/v20160207/...`).
pub const API_VERSION: &str = "v20160207";
/// Path of the downchannel.
pub const DIRECTIVES_PATH: &str = "/v20160207/directives";
/// Path events are posted to.
pub const EVENTS_PATH: &str = "/v20160207/events";
/// Path of the liveness ping.
pub const PING_PATH: &str = "/ping";
/// The only capture format avsd streams: 16 kHz, 16-bit little-endian, mono LPCM.
pub const AUDIO_FORMAT_L16: &str = "AUDIO_L16_RATE_16000_CHANNELS_1";

/// A fresh message id (UUID v4), as AVS expects on every message.
pub fn new_message_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
