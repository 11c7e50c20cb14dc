//! avsd: an Alexa Voice Service device daemon for Pi-class speakers.
//!
//! Layout:
//! - `auth`: Login with Amazon code-based linking, token persistence and refresh.
//! - `transport`: the one HTTP/2 connection to AVS: downchannel, events (outbox), ping,
//!   reconnect with backoff, attachments.
//! - `config`: the TOML file and hardware profiles, validated once into `Config`.
//! - `directives`: the blocking policy and the sequencer (order per dialogRequestId).
//! - `audio`: devices, capture (16 kHz frames), decoding, the mixer and playback, earcons.

pub mod audio;
pub mod auth;
pub mod config;
pub mod directives;
pub mod transport;
