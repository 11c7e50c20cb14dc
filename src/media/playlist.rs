//! Playlist parsing (pure): plain and extended M3U, HLS master and media playlists, PLS.
//! A master playlist yields its first variant (the caller fetches it and parses again); a media
//! playlist yields its segments in order. Relative entries are resolved against the playlist URL.

use url::Url;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playlist {
    /// Entries to play one after another as one item.
    Entries(Vec<Url>),
    /// An HLS master playlist: fetch this variant playlist next.
    Variant(Url),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlaylistError {
    #[error("playlist has no playable entry")]
    Empty,
    #[error("playlist entry {0:?} is not a URL")]
    BadEntry(String),
}

/// Whether a response is a playlist, judged by content type and URL.
pub fn is_playlist(url: &Url, content_type: Option<&str>) -> bool {
    let ct = content_type.unwrap_or_default().to_ascii_lowercase();
    let path = url.path().to_ascii_lowercase();
    ct.contains("mpegurl")
        || ct.contains("scpls")
        || [".m3u", ".m3u8", ".pls"].iter().any(|e| path.ends_with(e))
}

/// Parses a playlist text fetched from `base`.
pub fn parse(text: &str, base: &Url) -> Result<Playlist, PlaylistError> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.to_ascii_lowercase().starts_with("[playlist]") {
        return parse_pls(trimmed, base);
    }
    let mut entries = Vec::new();
    let mut next_is_variant = false;
    for line in trimmed.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if let Some(tag) = line.strip_prefix('#') {
            if tag.starts_with("EXT-X-STREAM-INF") {
                next_is_variant = true;
            }
            continue;
        }
        let url = base
            .join(line)
            .map_err(|_| PlaylistError::BadEntry(line.to_owned()))?;
        if next_is_variant {
            return Ok(Playlist::Variant(url));
        }
        entries.push(url);
    }
    if entries.is_empty() {
        return Err(PlaylistError::Empty);
    }
    Ok(Playlist::Entries(entries))
}

fn parse_pls(text: &str, base: &Url) -> Result<Playlist, PlaylistError> {
    let mut files: Vec<(u32, Url)> = Vec::new();
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        if let Some(n) = key.strip_prefix("file").and_then(|n| n.parse::<u32>().ok()) {
            let value = value.trim();
            let url = base
                .join(value)
                .map_err(|_| PlaylistError::BadEntry(value.to_owned()))?;
            files.push((n, url));
        }
    }
    files.sort_by_key(|(n, _)| *n);
    if files.is_empty() {
        return Err(PlaylistError::Empty);
    }
    Ok(Playlist::Entries(
        files.into_iter().map(|(_, u)| u).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://cdn.example.com/radio/list.m3u8").unwrap()
    }

    #[test]
    fn plain_m3u_with_relative_entries() {
        let p = parse(
            "#EXTM3U\n#EXTINF:10,Song\nsong1.mp3\n\nhttps://other.example/song2.mp3\n",
            &base(),
        )
        .unwrap();
        assert_eq!(
            p,
            Playlist::Entries(vec![
                Url::parse("https://cdn.example.com/radio/song1.mp3").unwrap(),
                Url::parse("https://other.example/song2.mp3").unwrap()
            ])
        );
    }

    #[test]
    fn hls_master_gives_first_variant_and_media_gives_segments() {
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS=\"mp4a.40.2\"\nlow/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=128000\nhigh/index.m3u8\n";
        assert_eq!(
            parse(master, &base()).unwrap(),
            Playlist::Variant(Url::parse("https://cdn.example.com/radio/low/index.m3u8").unwrap())
        );
        let media = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nseg0.aac\n#EXTINF:10.0,\nseg1.aac\n#EXT-X-ENDLIST\n";
        let Playlist::Entries(e) = parse(media, &base()).unwrap() else {
            panic!()
        };
        assert_eq!(e.len(), 2);
        assert!(e[1].as_str().ends_with("/radio/seg1.aac"));
    }

    #[test]
    fn pls_in_file_number_order() {
        let pls = "[playlist]\nNumberOfEntries=2\nFile2=http://b.example/2.mp3\nTitle2=B\nFile1=http://a.example/1.mp3\nVersion=2\n";
        assert_eq!(
            parse(pls, &base()).unwrap(),
            Playlist::Entries(vec![
                Url::parse("http://a.example/1.mp3").unwrap(),
                Url::parse("http://b.example/2.mp3").unwrap()
            ])
        );
    }

    #[test]
    fn empty_and_detection() {
        assert_eq!(
            parse("#EXTM3U\n# nothing\n", &base()),
            Err(PlaylistError::Empty)
        );
        assert_eq!(
            parse("[playlist]\nNumberOfEntries=0\n", &base()),
            Err(PlaylistError::Empty)
        );
        assert!(is_playlist(&base(), None));
        assert!(is_playlist(
            &Url::parse("https://x/stream").unwrap(),
            Some("audio/x-scpls")
        ));
        assert!(!is_playlist(
            &Url::parse("https://x/a.mp3").unwrap(),
            Some("audio/mpeg")
        ));
    }
}
