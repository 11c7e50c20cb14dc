//! The audio engine (owned by the audio work; placeholder).
