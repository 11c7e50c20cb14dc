//! avsd: an Alexa Voice Service device daemon for Pi-class speakers.
//!
//! Layout:
//! - `auth`: Login with Amazon code-based linking, token persistence and refresh.
//! - `transport`: the one HTTP/2 connection to AVS: downchannel, events (outbox), ping,
//!   reconnect with backoff, attachments.
//! - `capabilities`: the Alexa.Discovery report of what this build implements, and its checksum.
//! - `config`: the TOML file and hardware profiles, validated once into `Config`.
//! - `directives`: the blocking policy and the sequencer (order per dialogRequestId).
//! - `dialog`: the dialog core task: sequencer, attention, focus and the dialog agents.
//! - `agents`: one module per AVS interface (SpeechRecognizer, SpeechSynthesizer, Speaker, System).
//! - `attention`, `focus`: pure state machines (attention state; Dialog > Alerts > Content).
//! - `context`: the board of context entries events carry.
//! - `media`: http(s) media streams and playlists for AudioPlayer.
//! - `persist`: atomic JSON state files.
//! - `daemon`: wiring and supervision; `service`: systemd notify and signals; `control`: the
//!   control socket (JSON lines) and its client.
//! - `hw`: buttons (Linux input devices) and status LEDs (APA102 over spidev, sysfs LEDs).
//! - `selftest`: hidden `avsd selftest` smoke checks (decode, TLS + HTTP/2) for cross builds.
//! - `audio`: devices, capture (16 kHz frames), decoding, the mixer and playback, earcons.

pub mod agents;
pub mod attention;
pub mod audio;
pub mod auth;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod context;
pub mod control;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dialog;
pub mod directives;
pub mod focus;
pub mod hw;
pub mod media;
pub mod persist;
pub mod selftest;
pub mod service;
pub mod transport;
