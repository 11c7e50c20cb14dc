//! Text or SSML to real MP3 speech, the audio avs-sim puts behind every `SpeechSynthesizer.Speak`.
//!
//! Owns: choosing a voice (espeak-ng run as a process when it is installed, otherwise a
//! deterministic synthetic voice), resampling that voice to 24 kHz mono, encoding it with LAME,
//! and decoding MP3 back (duration, PCM) for tests and checks. Does not own where the MP3 goes:
//! turns, progressive responses and scenarios attach it to directives themselves.
//!
//! Everything here blocks (a child process, the encoder): async callers use `spawn_blocking`.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

/// Sample rate of every MP3 avs-sim produces (AVS TTS is 24 kHz mono).
pub const SAMPLE_RATE_HZ: u32 = 24_000;
/// espeak-ng's native output rate.
const ESPEAK_RATE_HZ: u32 = 22_050;
/// MPEG-2 Layer III frame length at 24 kHz.
pub const MP3_FRAME_SAMPLES: usize = 576;
/// 64 kbit/s rather than 48: at 48 a 24 kHz frame is too small for LAME's Info tag, and without
/// that tag decoders cannot trim the encoder delay, so durations drift by up to two frames.
const BITRATE: mp3lame_encoder::Bitrate = mp3lame_encoder::Bitrate::Kbps64;

/// Why speech could not be produced or read.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    #[error("nothing to say: the text is empty once SSML markup is removed")]
    NothingToSay,
    #[error("espeak-ng is not installed")]
    EspeakMissing,
    #[error("could not run espeak-ng")]
    EspeakIo(#[source] std::io::Error),
    #[error("espeak-ng exited with {status}: {stderr}")]
    EspeakFailed { status: ExitStatus, stderr: String },
    #[error("espeak-ng produced an unreadable WAV: {0}")]
    BadWav(&'static str),
    #[error("the LAME encoder could not be set up: {0}")]
    EncoderSetup(mp3lame_encoder::BuildError),
    #[error("the LAME encoder failed: {0}")]
    Encode(mp3lame_encoder::EncodeError),
    #[error("the MP3 could not be decoded")]
    Decode(#[source] symphonia::core::errors::Error),
    #[error("the MP3 holds no audio track")]
    NoAudioTrack,
}

/// Which voice renders the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Voice {
    /// espeak-ng when it is installed and works, else [`Voice::Synthetic`].
    #[default]
    Auto,
    /// espeak-ng only; [`SpeechError::EspeakMissing`] when it is not installed.
    Espeak,
    /// The built-in deterministic voice (same text, same bytes, on every machine).
    Synthetic,
}

/// Speaks `text_or_ssml` with the best available voice and encodes it as 24 kHz mono MP3.
pub fn synthesize_mp3(text_or_ssml: &str) -> Result<Bytes, SpeechError> {
    synthesize_mp3_with(Voice::Auto, text_or_ssml)
}

/// [`synthesize_mp3`] with an explicit voice.
pub fn synthesize_mp3_with(voice: Voice, text_or_ssml: &str) -> Result<Bytes, SpeechError> {
    let (pcm, rate) = synthesize_pcm_with(voice, text_or_ssml)?;
    encode_mp3(&pcm, rate)
}

/// Speaks `text` into mono PCM with the best available voice; returns the samples and their rate
/// ([`SAMPLE_RATE_HZ`]).
pub fn synthesize_pcm(text: &str) -> Result<(Vec<i16>, u32), SpeechError> {
    synthesize_pcm_with(Voice::Auto, text)
}

/// [`synthesize_pcm`] with an explicit voice.
pub fn synthesize_pcm_with(
    voice: Voice,
    text_or_ssml: &str,
) -> Result<(Vec<i16>, u32), SpeechError> {
    let segments = parse_ssml(text_or_ssml);
    if !segments
        .iter()
        .any(|s| matches!(s, Segment::Text(t) if t.chars().any(char::is_alphanumeric)))
    {
        return Err(SpeechError::NothingToSay);
    }
    let pcm = match voice {
        Voice::Synthetic => synthetic::render(&segments),
        Voice::Espeak => espeak(text_or_ssml)?,
        Voice::Auto => match espeak(text_or_ssml) {
            Ok(pcm) => pcm,
            Err(SpeechError::EspeakMissing) => synthetic::render(&segments),
            Err(e) => {
                tracing::warn!(error = %e, "espeak-ng failed, using the synthetic voice");
                synthetic::render(&segments)
            }
        },
    };
    Ok((pcm, SAMPLE_RATE_HZ))
}

/// Encodes mono 16-bit PCM as CBR MP3 with a LAME Info tag (so decoders trim the encoder delay).
pub fn encode_mp3(pcm: &[i16], rate: u32) -> Result<Bytes, SpeechError> {
    let mut builder = mp3lame_encoder::Builder::new().ok_or(SpeechError::EncoderSetup(
        mp3lame_encoder::BuildError::NoMem,
    ))?;
    builder
        .set_num_channels(1)
        .map_err(SpeechError::EncoderSetup)?;
    builder
        .set_sample_rate(rate)
        .map_err(SpeechError::EncoderSetup)?;
    builder
        .set_output_sample_rate(std::num::NonZeroU32::new(rate))
        .map_err(SpeechError::EncoderSetup)?;
    builder
        .set_mode(mp3lame_encoder::Mode::Mono)
        .map_err(SpeechError::EncoderSetup)?;
    builder
        .set_brate(BITRATE)
        .map_err(SpeechError::EncoderSetup)?;
    builder
        .set_quality(mp3lame_encoder::Quality::Good)
        .map_err(SpeechError::EncoderSetup)?;
    builder
        .set_vbr_mode(mp3lame_encoder::VbrMode::Off)
        .map_err(SpeechError::EncoderSetup)?;
    builder
        .set_to_write_vbr_tag(true)
        .map_err(SpeechError::EncoderSetup)?;
    let mut encoder = builder.build().map_err(SpeechError::EncoderSetup)?;

    let mut body = Vec::with_capacity(mp3lame_encoder::max_required_buffer_size(pcm.len()));
    encoder
        .encode_to_vec(mp3lame_encoder::MonoPcm(pcm), &mut body)
        .map_err(SpeechError::Encode)?;
    body.reserve(7200);
    encoder
        .flush_to_vec::<mp3lame_encoder::FlushNoGap>(&mut body)
        .map_err(SpeechError::Encode)?;

    // LAME leaves the first frame as a placeholder for the Info tag; it is filled in only now that
    // the whole stream (and so the frame count and padding) is known.
    let mut tag = Vec::with_capacity(encoder.lame_tag_size().max(1024));
    match encoder.lame_tag_encode_to_vec(&mut tag) {
        Some(len) if len.get() <= body.len() && body[..len.get()].iter().all(|b| *b == 0) => {
            body[..len.get()].copy_from_slice(&tag[..len.get()]);
        }
        _ => tracing::debug!("LAME wrote no Info tag; MP3 duration will include encoder delay"),
    }
    Ok(Bytes::from(body))
}

/// Decodes an MP3 to mono PCM (the first channel when there are several) and its sample rate.
pub fn decode_mp3(mp3: &[u8]) -> Result<(Vec<i16>, u32), SpeechError> {
    let source = std::io::Cursor::new(mp3.to_vec());
    let mss = MediaSourceStream::new(Box::new(source), MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    hint.with_extension("mp3");
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(SpeechError::Decode)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or(SpeechError::NoAudioTrack)?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(SpeechError::NoAudioTrack)?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(SpeechError::Decode)?;

    let mut out = Vec::new();
    let mut rate = 0;
    let mut scratch: Vec<i16> = Vec::new();
    while let Some(packet) = format.next_packet().map_err(SpeechError::Decode)? {
        if packet.track_id != track_id {
            continue;
        }
        let buf = decoder.decode(&packet).map_err(SpeechError::Decode)?;
        rate = buf.spec().rate();
        let channels = buf.spec().channels().count().max(1);
        scratch.resize(buf.samples_interleaved(), 0);
        buf.copy_to_slice_interleaved(&mut scratch);
        out.extend(scratch.iter().step_by(channels));
    }
    if rate == 0 {
        return Err(SpeechError::NoAudioTrack);
    }
    Ok((out, rate))
}

/// Duration of an MP3, counted from its decoded frames (encoder delay and padding trimmed when the
/// file carries a LAME Info tag).
pub fn mp3_duration(mp3: &[u8]) -> Result<Duration, SpeechError> {
    let (pcm, rate) = decode_mp3(mp3)?;
    Ok(samples_to_duration(pcm.len(), rate))
}

/// Length of `samples` mono samples at `rate`.
pub fn samples_to_duration(samples: usize, rate: u32) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(samples as f64 / f64::from(rate))
}

/// Linear-interpolation resampler. Good enough for speech going up (22.05 to 24 kHz) and for test
/// fixtures going down; not a substitute for a band-limited resampler on music.
pub fn resample_linear(pcm: &[i16], from_hz: u32, to_hz: u32) -> Vec<i16> {
    if from_hz == to_hz || pcm.is_empty() || from_hz == 0 || to_hz == 0 {
        return pcm.to_vec();
    }
    let out_len = (pcm.len() as u64 * u64::from(to_hz) / u64::from(from_hz)) as usize;
    let step = f64::from(from_hz) / f64::from(to_hz);
    let last = pcm.len() - 1;
    (0..out_len)
        .map(|i| {
            let pos = i as f64 * step;
            let idx = pos.floor() as usize;
            let frac = pos - idx as f64;
            let a = f64::from(pcm[idx.min(last)]);
            let b = f64::from(pcm[(idx + 1).min(last)]);
            (a + (b - a) * frac).round() as i16
        })
        .collect()
}

/// Runs `espeak-ng --stdout -v en-us` (`-m` for SSML), text on stdin, and returns 24 kHz PCM.
fn espeak(text_or_ssml: &str) -> Result<Vec<i16>, SpeechError> {
    let mut cmd = Command::new("espeak-ng");
    cmd.args(["--stdout", "-v", "en-us"]);
    if text_or_ssml.contains('<') {
        cmd.arg("-m");
    }
    // Text on stdin, not argv: a leading '-' would otherwise be read as an option.
    cmd.arg("--stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SpeechError::EspeakMissing);
        }
        Err(e) => return Err(SpeechError::EspeakIo(e)),
    };
    let mut stdin = child
        .stdin
        .take()
        .ok_or(SpeechError::BadWav("no stdin pipe"))?;
    let text = text_or_ssml.to_owned();
    // A separate writer so a long text cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let mut wav = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout
            .read_to_end(&mut wav)
            .map_err(SpeechError::EspeakIo)?;
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        // Best effort: stderr only decorates the error message.
        let _ = err.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(SpeechError::EspeakIo)?;
    match writer.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(SpeechError::EspeakIo(e)),
        Err(_) => return Err(SpeechError::BadWav("stdin writer thread died")),
    }
    if !status.success() {
        return Err(SpeechError::EspeakFailed {
            status,
            stderr: stderr.trim().to_owned(),
        });
    }
    let (pcm, rate) = parse_wav(&wav)?;
    if pcm.is_empty() {
        return Err(SpeechError::BadWav("no samples"));
    }
    Ok(resample_linear(
        &pcm,
        if rate == 0 { ESPEAK_RATE_HZ } else { rate },
        SAMPLE_RATE_HZ,
    ))
}

/// Reads mono s16le PCM from a RIFF/WAVE stream. espeak-ng writes to a pipe, so its size fields
/// are placeholders (0x7ffff000): the data chunk is taken to run to the end of the stream.
fn parse_wav(wav: &[u8]) -> Result<(Vec<i16>, u32), SpeechError> {
    if wav.len() < 12 || &wav[0..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return Err(SpeechError::BadWav("not RIFF/WAVE"));
    }
    let mut pos = 12;
    let mut rate = 0u32;
    let mut channels = 1u16;
    while pos + 8 <= wav.len() {
        let id = &wav[pos..pos + 4];
        let size =
            u32::from_le_bytes([wav[pos + 4], wav[pos + 5], wav[pos + 6], wav[pos + 7]]) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            if body + 16 > wav.len() {
                return Err(SpeechError::BadWav("short fmt chunk"));
            }
            let format = u16::from_le_bytes([wav[body], wav[body + 1]]);
            channels = u16::from_le_bytes([wav[body + 2], wav[body + 3]]).max(1);
            rate = u32::from_le_bytes([wav[body + 4], wav[body + 5], wav[body + 6], wav[body + 7]]);
            let bits = u16::from_le_bytes([wav[body + 14], wav[body + 15]]);
            if format != 1 || bits != 16 {
                return Err(SpeechError::BadWav("not 16-bit PCM"));
            }
        } else if id == b"data" {
            let end = body.saturating_add(size).min(wav.len());
            let pcm = wav[body..end]
                .chunks_exact(2 * usize::from(channels))
                .map(|frame| i16::from_le_bytes([frame[0], frame[1]]))
                .collect();
            return Ok((pcm, rate));
        }
        pos = body.saturating_add(size).saturating_add(size & 1);
    }
    Err(SpeechError::BadWav("no data chunk"))
}

/// A piece of the input after SSML markup is interpreted.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Silence(Duration),
}

/// Strips SSML tags, keeping `<break>` as silence (and a short pause at paragraph and sentence
/// ends). Plain text comes back as one text segment.
fn parse_ssml(input: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = input;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            // An unterminated '<' is just text.
            text.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let tag = &rest[open + 1..open + close];
        rest = &rest[open + close + 1..];
        let pause = tag_pause(tag);
        if let Some(pause) = pause {
            if !text.is_empty() {
                out.push(Segment::Text(decode_entities(&std::mem::take(&mut text))));
            }
            out.push(Segment::Silence(pause));
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Segment::Text(decode_entities(&text)));
    }
    out
}

/// The silence a tag stands for, if any.
fn tag_pause(tag: &str) -> Option<Duration> {
    let tag = tag.trim();
    let name: String = tag
        .trim_start_matches('/')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
        .collect();
    match name.as_str() {
        "break" => {
            if let Some(time) = attribute(tag, "time") {
                return Some(parse_break_time(&time).unwrap_or(Duration::from_millis(400)));
            }
            Some(match attribute(tag, "strength").as_deref() {
                Some("none") => Duration::ZERO,
                Some("x-weak") => Duration::from_millis(100),
                Some("weak") => Duration::from_millis(250),
                Some("strong") => Duration::from_millis(700),
                Some("x-strong") => Duration::from_millis(1000),
                _ => Duration::from_millis(400),
            })
        }
        "p" if tag.starts_with('/') => Some(Duration::from_millis(500)),
        "s" if tag.starts_with('/') => Some(Duration::from_millis(300)),
        _ => None,
    }
}

/// `time="500ms"` / `time="1.5s"`; SSML caps breaks at 10 s.
fn parse_break_time(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1.0)
    } else {
        return None;
    };
    let secs = number.trim().parse::<f64>().ok()? * scale;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(10.0)))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag;
    while let Some(at) = rest.find(name) {
        let after = rest[at + name.len()..].trim_start();
        let before_ok = at == 0 || rest[..at].ends_with(char::is_whitespace);
        if before_ok && let Some(value) = after.strip_prefix('=') {
            let value = value.trim_start();
            let quote = value.chars().next()?;
            if quote == '"' || quote == '\'' {
                let inner = &value[1..];
                return inner.find(quote).map(|end| inner[..end].to_owned());
            }
        }
        rest = &rest[at + name.len()..];
    }
    None
}

fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The built-in voice: formant-filtered harmonic tones, one per syllable, with noise bursts for
/// consonants and a falling (or, for questions, rising) pitch contour. Not intelligible, but it
/// has speech's rhythm, spectrum and energy envelope, which is what VAD, decoders and players care
/// about, and it is a pure function of the text.
mod synthetic {
    use super::{SAMPLE_RATE_HZ, Segment};
    use std::f64::consts::TAU;
    use std::time::Duration;

    const RATE: f64 = SAMPLE_RATE_HZ as f64;
    const PEAK: f64 = 0.6 * i16::MAX as f64;

    /// A sound to render: voiced with formants, or noise.
    enum Sound {
        Voiced {
            formants: [f64; 3],
            length: Duration,
            stress: f64,
        },
        Noise {
            length: Duration,
            bright: bool,
        },
        Pause(Duration),
    }

    pub(super) fn render(segments: &[Segment]) -> Vec<i16> {
        let mut sounds = vec![Sound::Pause(Duration::from_millis(60))];
        let mut question = false;
        for segment in segments {
            match segment {
                Segment::Silence(d) => sounds.push(Sound::Pause(*d)),
                Segment::Text(text) => {
                    question = text.trim_end().ends_with('?');
                    plan_text(text, &mut sounds);
                }
            }
        }
        sounds.push(Sound::Pause(Duration::from_millis(60)));
        synthesize(&sounds, seed(segments), question)
    }

    fn seed(segments: &[Segment]) -> u64 {
        // FNV-1a: stable across platforms and releases, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for segment in segments {
            let bytes: Vec<u8> = match segment {
                Segment::Text(t) => t.bytes().collect(),
                Segment::Silence(d) => d.as_millis().to_le_bytes().to_vec(),
            };
            for b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    fn vowel_formants(c: char) -> Option<[f64; 3]> {
        Some(match c {
            'a' => [730.0, 1090.0, 2440.0],
            'e' => [530.0, 1840.0, 2480.0],
            'i' => [270.0, 2290.0, 3010.0],
            'o' => [570.0, 840.0, 2410.0],
            'u' => [300.0, 870.0, 2240.0],
            'y' => [400.0, 1900.0, 2600.0],
            _ => return None,
        })
    }

    fn plan_text(text: &str, sounds: &mut Vec<Sound>) {
        let mut word = String::new();
        for c in text.chars().chain(std::iter::once(' ')) {
            if c.is_alphanumeric() || c == '\'' {
                word.extend(c.to_lowercase());
                continue;
            }
            if !word.is_empty() {
                plan_word(&std::mem::take(&mut word), sounds);
                sounds.push(Sound::Pause(Duration::from_millis(45)));
            }
            let pause = match c {
                ',' | ';' | ':' | '-' => 180,
                '.' | '!' | '?' => 330,
                _ => 0,
            };
            if pause > 0 {
                sounds.push(Sound::Pause(Duration::from_millis(pause)));
            }
        }
    }

    fn plan_word(word: &str, sounds: &mut Vec<Sound>) {
        // Digits read as a syllable each, with a vowel picked from the digit.
        let spelled: String = word
            .chars()
            .map(|c| match c.to_digit(10) {
                Some(d) => [
                    "zi", "wa", "tu", "thri", "fo", "fai", "siks", "se", "eit", "nai",
                ][d as usize]
                    .to_owned(),
                None => c.to_string(),
            })
            .collect();
        let chars: Vec<char> = spelled.chars().collect();
        let mut i = 0;
        let mut first = true;
        while i < chars.len() {
            while i < chars.len() && vowel_formants(chars[i]).is_none() {
                let c = chars[i];
                if c.is_alphabetic() {
                    sounds.push(consonant(c));
                }
                i += 1;
            }
            let start = i;
            while i < chars.len() && vowel_formants(chars[i]).is_some() {
                i += 1;
            }
            if start < i {
                let vowels = &chars[start..i];
                let a = vowel_formants(vowels[0]).unwrap_or([500.0, 1500.0, 2500.0]);
                let b = vowel_formants(vowels[vowels.len() - 1]).unwrap_or(a);
                let mix = |k: usize| (a[k] + b[k]) / 2.0;
                sounds.push(Sound::Voiced {
                    formants: [mix(0), mix(1), mix(2)],
                    length: Duration::from_millis(95 + 35 * (vowels.len() as u64 - 1).min(2)),
                    stress: if first { 1.0 } else { 0.75 },
                });
                first = false;
            }
        }
    }

    fn consonant(c: char) -> Sound {
        match c {
            's' | 'z' | 'c' | 'x' => Sound::Noise {
                length: Duration::from_millis(70),
                bright: true,
            },
            'f' | 'h' | 'v' | 'j' | 'q' => Sound::Noise {
                length: Duration::from_millis(55),
                bright: false,
            },
            'p' | 't' | 'k' | 'b' | 'd' | 'g' => Sound::Noise {
                length: Duration::from_millis(22),
                bright: true,
            },
            'm' | 'n' => Sound::Voiced {
                formants: [280.0, 1100.0, 2300.0],
                length: Duration::from_millis(55),
                stress: 0.45,
            },
            _ => Sound::Voiced {
                formants: [360.0, 1300.0, 2200.0],
                length: Duration::from_millis(50),
                stress: 0.55,
            },
        }
    }

    fn synthesize(sounds: &[Sound], seed: u64, question: bool) -> Vec<i16> {
        let total: Duration = sounds
            .iter()
            .map(|s| match s {
                Sound::Voiced { length, .. }
                | Sound::Noise { length, .. }
                | Sound::Pause(length) => *length,
            })
            .sum();
        let total_samples = (total.as_secs_f64() * RATE).ceil() as usize;
        let mut out = Vec::with_capacity(total_samples);
        let mut rng = seed | 1;
        let mut phase = 0.0f64;
        let mut highpass_prev = 0.0f64;
        let mut syllable = 0u64;
        for sound in sounds {
            match sound {
                Sound::Pause(d) => out.extend(std::iter::repeat_n(0.0, samples(*d))),
                Sound::Noise { length, bright } => {
                    let n = samples(*length);
                    for i in 0..n {
                        let white = next_noise(&mut rng);
                        let shaped = if *bright {
                            let hp = white - highpass_prev;
                            highpass_prev = white;
                            hp * 0.5
                        } else {
                            highpass_prev = 0.6 * highpass_prev + 0.4 * white;
                            highpass_prev
                        };
                        out.push(shaped * 0.18 * envelope(i, n));
                    }
                }
                Sound::Voiced {
                    formants,
                    length,
                    stress,
                } => {
                    syllable += 1;
                    let n = samples(*length);
                    // Per-syllable pitch jitter from the text's seed keeps texts distinct.
                    let jitter = ((seed.rotate_left((syllable % 64) as u32) % 31) as f64) - 15.0;
                    for i in 0..n {
                        let progress = out.len() as f64 / total_samples.max(1) as f64;
                        let contour = if question && progress > 0.7 {
                            (progress - 0.7) * 150.0
                        } else {
                            -35.0 * progress
                        };
                        let f0 = 135.0 + contour + jitter * stress;
                        phase = (phase + TAU * f0 / RATE) % TAU;
                        let mut value = 0.0;
                        let mut k = 1.0;
                        while k * f0 < 4000.0 {
                            let freq = k * f0;
                            let gain: f64 = formants
                                .iter()
                                .zip([1.0, 0.6, 0.25])
                                .map(|(f, g)| g / (1.0 + ((freq - f) / (60.0 + f * 0.08)).powi(2)))
                                .sum();
                            value += gain / k.sqrt() * (k * phase).sin();
                            k += 1.0;
                        }
                        out.push(value * 0.25 * stress * envelope(i, n));
                    }
                }
            }
        }
        let peak = out.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-9);
        out.iter()
            .map(|v| (v / peak * PEAK).round() as i16)
            .collect()
    }

    fn samples(d: Duration) -> usize {
        (d.as_secs_f64() * RATE).round() as usize
    }

    /// 8 ms raised-cosine ramps so sounds start and stop without clicks.
    fn envelope(i: usize, n: usize) -> f64 {
        let ramp = (0.008 * RATE) as usize;
        let edge = i.min(n.saturating_sub(i + 1));
        if edge >= ramp {
            1.0
        } else {
            0.5 - 0.5 * (std::f64::consts::PI * edge as f64 / ramp as f64).cos()
        }
    }

    /// xorshift64*: deterministic noise in [-1, 1).
    fn next_noise(state: &mut u64) -> f64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        v as f64 / (1u64 << 52) as f64 - 1.0
    }
}

#[cfg(test)]
mod tests;
