//! avsd: an Alexa Voice Service device daemon for Pi-class speakers.
//!
//! Layout:
//! - `auth`: Login with Amazon code-based linking, token persistence and refresh.
//! - `transport`: the one HTTP/2 connection to AVS: downchannel, events (outbox), ping,
//!   reconnect with backoff, attachments.
//! - `audio`: devices, capture (16 kHz frames), decoding, the mixer and playback, earcons.

pub mod audio;
pub mod auth;
pub mod transport;
