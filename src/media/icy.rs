//! ICY (SHOUTcast / Icecast) in-band metadata, pure: a response carrying `icy-metaint: N` has a
//! metadata block after every N audio bytes (one length byte L, then L × 16 bytes of
//! `StreamTitle='...';StreamUrl='...';` padded with NULs). [`IcyDeinterleaver`] splits such a
//! byte stream, however it is chunked, into the audio (all the decoder may see) and the parsed
//! blocks. It owns no I/O; `fetch` feeds it each downloaded chunk.

/// Largest `icy-metaint` accepted: real servers use 8-64 KiB; beyond this it is nonsense.
pub const MAX_METAINT: usize = 1 << 20;
/// Longest value kept from a block (a block is at most 255 × 16 = 4080 bytes anyway).
const MAX_VALUE_BYTES: usize = 512;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IcyError {
    #[error("icy-metaint {0:?} is not a number in 1..={MAX_METAINT}")]
    BadMetaint(String),
}

/// The fields of one metadata block we report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IcyMetadata {
    pub title: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug)]
enum State {
    /// This many audio bytes until the next length byte.
    Audio { left: usize },
    /// The next byte is a block's length (in 16-byte units).
    Length,
    /// Collecting a block of `len` bytes.
    Block { len: usize },
}

/// Splits an ICY byte stream into audio and metadata blocks.
#[derive(Debug)]
pub struct IcyDeinterleaver {
    metaint: usize,
    state: State,
    block: Vec<u8>,
    /// Blocks that held no field we know (skipped, counted for the logs).
    pub skipped_blocks: u64,
}

impl IcyDeinterleaver {
    /// From the `icy-metaint` response header value.
    pub fn new(metaint: &str) -> Result<Self, IcyError> {
        let n = metaint
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_METAINT).contains(n))
            .ok_or_else(|| IcyError::BadMetaint(metaint.chars().take(32).collect()))?;
        Ok(Self {
            metaint: n,
            state: State::Audio { left: n },
            block: Vec::new(),
            skipped_blocks: 0,
        })
    }

    /// Appends the audio bytes of `input` to `audio` and every metadata block completed by it
    /// (empty blocks excepted) to `blocks`, each with `audio.len()` where it stood.
    pub fn push(
        &mut self,
        mut input: &[u8],
        audio: &mut Vec<u8>,
        blocks: &mut Vec<(usize, IcyMetadata)>,
    ) {
        while !input.is_empty() {
            match self.state {
                State::Audio { left } => {
                    let n = left.min(input.len());
                    audio.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == left {
                        State::Length
                    } else {
                        State::Audio { left: left - n }
                    };
                }
                State::Length => {
                    let len = usize::from(input[0]) * 16;
                    input = &input[1..];
                    self.state = if len == 0 {
                        State::Audio { left: self.metaint }
                    } else {
                        self.block.clear();
                        State::Block { len }
                    };
                }
                State::Block { len } => {
                    let n = (len - self.block.len()).min(input.len());
                    self.block.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.block.len() == len {
                        match parse_block(&self.block) {
                            Some(m) => blocks.push((audio.len(), m)),
                            None => self.skipped_blocks += 1,
                        }
                        self.state = State::Audio { left: self.metaint };
                    }
                }
            }
        }
    }
}

/// The fields of one block, or `None` when it holds none we know.
pub fn parse_block(block: &[u8]) -> Option<IcyMetadata> {
    let end = block.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let text = decode_text(&block[..end]);
    let m = IcyMetadata {
        title: field(&text, "StreamTitle"),
        url: field(&text, "StreamUrl"),
    };
    (m.title.is_some() || m.url.is_some()).then_some(m)
}

/// ICY text is UTF-8 on modern servers and Latin-1 on old ones.
fn decode_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes.iter().map(|b| char::from(*b)).collect(),
    }
}

/// `key='value';` (the value may itself hold quotes, so it ends at the first `';`, or at the
/// last quote of the block).
fn field(text: &str, key: &str) -> Option<String> {
    let start = text.find(&format!("{key}='"))? + key.len() + 2;
    let rest = &text[start..];
    let end = rest.find("';").or_else(|| rest.rfind('\''))?;
    let value = rest[..end].trim();
    let mut cut = value.len().min(MAX_VALUE_BYTES);
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(value[..cut].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(text: &str) -> Vec<u8> {
        let mut b = text.as_bytes().to_vec();
        b.resize(text.len().div_ceil(16) * 16, 0);
        let mut out = vec![(b.len() / 16) as u8];
        out.extend(b);
        out
    }

    /// Audio of `n` bytes per interval (a counting pattern, so order is checked), with the
    /// given blocks after each interval.
    fn stream(metaint: usize, blocks: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let mut wire = Vec::new();
        let mut audio = Vec::new();
        let mut k = 0u8;
        for b in blocks {
            for _ in 0..metaint {
                wire.push(k);
                audio.push(k);
                k = k.wrapping_add(7);
            }
            wire.extend_from_slice(b);
        }
        for _ in 0..metaint / 2 {
            wire.push(k);
            audio.push(k);
            k = k.wrapping_add(7);
        }
        (wire, audio)
    }

    #[test]
    fn split_at_every_position_gives_the_same_audio_and_titles() {
        let blocks = vec![
            block("StreamTitle='First Song';StreamUrl='http://radio.example/1';"),
            vec![0],
            block("StreamTitle='Don't Stop - It's Fine';"),
            block("garbage without fields"),
            block("StreamTitle='Last';"),
        ];
        let (wire, want_audio) = stream(40, &blocks);
        let want = vec![
            IcyMetadata {
                title: Some("First Song".into()),
                url: Some("http://radio.example/1".into()),
            },
            IcyMetadata {
                title: Some("Don't Stop - It's Fine".into()),
                url: None,
            },
            IcyMetadata {
                title: Some("Last".into()),
                url: None,
            },
        ];
        for split in 0..=wire.len() {
            for second in [split, (split + 13).min(wire.len())] {
                let mut d = IcyDeinterleaver::new("40").unwrap();
                let (mut audio, mut got) = (Vec::new(), Vec::new());
                d.push(&wire[..split], &mut audio, &mut got);
                d.push(&wire[split..second], &mut audio, &mut got);
                d.push(&wire[second..], &mut audio, &mut got);
                assert_eq!(audio, want_audio, "split at {split}/{second}");
                let at: Vec<usize> = got.iter().map(|(a, _)| *a).collect();
                assert_eq!(at, [40, 120, 200], "split at {split}/{second}");
                let got: Vec<IcyMetadata> = got.into_iter().map(|(_, m)| m).collect();
                assert_eq!(got, want, "split at {split}/{second}");
                assert_eq!(d.skipped_blocks, 1);
            }
        }
        // Byte by byte.
        let mut d = IcyDeinterleaver::new("40").unwrap();
        let (mut audio, mut got) = (Vec::new(), Vec::new());
        for b in &wire {
            d.push(std::slice::from_ref(b), &mut audio, &mut got);
        }
        let got: Vec<IcyMetadata> = got.into_iter().map(|(_, m)| m).collect();
        assert_eq!((audio, got), (want_audio, want));
    }

    #[test]
    fn bad_metaint_is_refused() {
        for bad in ["0", "-3", "abc", "", "99999999999"] {
            assert!(IcyDeinterleaver::new(bad).is_err(), "{bad}");
        }
        assert!(IcyDeinterleaver::new(" 16000 ").is_ok());
    }

    #[test]
    fn latin1_and_unterminated_values_never_panic() {
        assert_eq!(parse_block(b"StreamTitle='Caf\xe9 del Mar"), None);
        let m = parse_block(b"StreamTitle='Caf\xe9';\0\0").unwrap();
        assert_eq!(m.title.as_deref(), Some("Caf\u{e9}"));
        assert_eq!(parse_block(b"StreamTitle="), None);
        assert_eq!(parse_block(&[0xff; 4080]), None);
        let long = format!("StreamTitle='{}';", "é".repeat(600));
        let m = parse_block(long.as_bytes()).unwrap();
        assert!(m.title.unwrap().len() <= MAX_VALUE_BYTES);
    }
}
