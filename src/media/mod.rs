//! Media for AudioPlayer and alert assets: HTTP(S) streams read while they download, and the
//! playlists (M3U, extended M3U / HLS, PLS) that point at them.

pub mod fetch;
pub mod playlist;
