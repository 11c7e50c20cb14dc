//! Media the sim serves at `/media/<name>` for AudioPlayer and alert URLs: plain files, and
//! radio-like ICY streams (metadata blocks interleaved every `metaint` bytes with a changing
//! `StreamTitle`, only for clients that ask with `Icy-MetaData: 1`, as SHOUTcast/Icecast do).
//! Also builds the ID3v2.3 tags tests put in front of an MP3. Pure: no I/O.

use bytes::Bytes;

/// One stored media item.
#[derive(Clone, Debug)]
pub(crate) enum Media {
    Plain(Bytes),
    Icy {
        audio: Bytes,
        metaint: usize,
        titles: Vec<String>,
    },
}

/// What `GET /media/<name>` answers: the body and the extra response headers.
pub(crate) fn response(media: &Media, wants_icy: bool) -> (Bytes, Vec<(&'static str, String)>) {
    match media {
        Media::Plain(b) => (b.clone(), Vec::new()),
        Media::Icy { audio, .. } if !wants_icy => (audio.clone(), Vec::new()),
        Media::Icy {
            audio,
            metaint,
            titles,
        } => (
            Bytes::from(icy_interleave(audio, *metaint, titles)),
            vec![
                ("icy-metaint", metaint.to_string()),
                ("icy-name", "avs-sim radio".to_owned()),
            ],
        ),
    }
}

/// One ICY metadata block: the length byte, then the text padded with NULs to 16-byte units.
pub fn icy_block(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let units = bytes.len().div_ceil(16).min(255);
    let mut out = Vec::with_capacity(1 + units * 16);
    out.push(units as u8);
    out.extend_from_slice(&bytes[..bytes.len().min(units * 16)]);
    out.resize(1 + units * 16, 0);
    out
}

/// `audio` with a metadata block after every `metaint` bytes. The titles are spread evenly over
/// the blocks, in order (each block repeats the current one, as real servers do); an empty list
/// gives empty blocks.
pub fn icy_interleave(audio: &[u8], metaint: usize, titles: &[String]) -> Vec<u8> {
    let metaint = metaint.max(1);
    let blocks = audio.len() / metaint;
    let mut out = Vec::with_capacity(audio.len() + blocks * 64);
    for (k, chunk) in audio.chunks(metaint).enumerate() {
        out.extend_from_slice(chunk);
        if chunk.len() < metaint {
            break;
        }
        if titles.is_empty() {
            out.push(0);
            continue;
        }
        let title = &titles[(k * titles.len() / blocks.max(1)).min(titles.len() - 1)];
        let escaped = title.replace('\'', "\u{2019}");
        out.extend(icy_block(&format!(
            "StreamTitle='{escaped}';StreamUrl='https://radio.example/now';"
        )));
    }
    out
}

/// An ID3v2.3 tag with text frames (`TIT2` title, `TPE1` artist, `TALB` album, `TCON` genre,
/// ...), each in ISO-8859-1 when it fits, else UTF-16 with a BOM.
pub fn id3v2_tag(frames: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, text) in frames {
        let mut data = Vec::new();
        if text.chars().all(|c| u32::from(c) < 0x100) {
            data.push(0);
            data.extend(text.chars().map(|c| u32::from(c) as u8));
        } else {
            data.push(1);
            data.extend_from_slice(&[0xff, 0xfe]);
            data.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        }
        body.extend_from_slice(&id.as_bytes()[..4.min(id.len())]);
        body.extend_from_slice(&(data.len() as u32).to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend(data);
    }
    let size = body.len() as u32;
    let mut out = b"ID3\x03\x00\x00".to_vec();
    // Sync-safe: 7 bits per byte.
    out.extend([21, 14, 7, 0].map(|shift| ((size >> shift) & 0x7f) as u8));
    out.extend(body);
    out
}

/// `mp3` with an ID3v2.3 tag in front.
pub fn with_id3v2(mp3: &[u8], frames: &[(&str, &str)]) -> Bytes {
    let mut out = id3v2_tag(frames);
    out.extend_from_slice(mp3);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_blocks_every_metaint_bytes_with_titles_in_order() {
        let audio: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let titles = vec!["A".to_owned(), "B".to_owned()];
        let wire = icy_interleave(&audio, 100, &titles);
        let mut pos = 0;
        let mut back = Vec::new();
        let mut seen = Vec::new();
        while pos < wire.len() {
            let n = 100.min(wire.len() - pos);
            back.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            if n < 100 || pos == wire.len() {
                break;
            }
            let len = usize::from(wire[pos]) * 16;
            seen.push(String::from_utf8_lossy(&wire[pos + 1..pos + 1 + len]).into_owned());
            pos += 1 + len;
        }
        assert_eq!(back, audio);
        assert_eq!(seen.len(), 10);
        assert!(seen[0].starts_with("StreamTitle='A';"), "{}", seen[0]);
        assert!(seen[9].starts_with("StreamTitle='B';"), "{}", seen[9]);
    }

    #[test]
    fn id3_header_has_a_syncsafe_size() {
        let tag = id3v2_tag(&[("TIT2", "Song"), ("TPE1", "Bánd ✓")]);
        assert_eq!(&tag[..4], b"ID3\x03");
        let size = tag[6..10]
            .iter()
            .fold(0usize, |a, b| (a << 7) | usize::from(*b));
        assert_eq!(size, tag.len() - 10);
    }
}
