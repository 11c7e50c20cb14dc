//! Media for AudioPlayer and alert assets: HTTP(S) streams read while they download, and the
//! playlists (M3U, extended M3U / HLS, PLS) that point at them, and the ICY metadata that
//! radio streams interleave with their audio.

pub mod fetch;
pub mod icy;
pub mod playlist;
