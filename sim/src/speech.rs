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
use ssml::{Segment, parse_ssml};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

mod ssml;
mod synthetic;

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

#[cfg(test)]
mod tests;
