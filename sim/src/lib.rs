//! avs-sim: a local Alexa Voice Service cloud for offline device development and tests.
//!
//! Layout (each module says what it owns):
//! - `gateway`: the AVS HTTP/2 surface (downchannel, events, ping) and the server loop.
//! - `speech`: text or SSML to real MP3 speech (espeak-ng when installed, else a synthetic voice).
//! - `vad`: energy-based end-of-speech detection on streamed Recognize audio.
//! - `skill`: hosting a real Alexa skill web service behind a turn.
//! - `turn`: the contract between a turn's producer and the Recognize response stream.
//! - `progressive`: the skill-side Progressive Response API (`POST /v1/directives`).

pub mod gateway;
pub mod progressive;
pub mod skill;
pub mod speech;
pub mod turn;
pub mod vad;
