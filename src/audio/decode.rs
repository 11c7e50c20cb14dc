//! Decoding: symphonia over a blocking reader whose bytes may still be arriving (MP3, AAC in ADTS
//! or MP4, FLAC, Vorbis, WAV), producing PCM before the stream ends. Corrupt packets are skipped
//! and counted; what cannot be recovered becomes a `DecodeError` saying what and where. Also the
//! per-source thread body that turns any `Source` into device-rate frames in the source's ring.
//! It never runs in a device callback and never panics on bad input.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;

use super::resample::StreamResampler;
use super::{Counters, Source, earcons};

/// symphonia requires a power of two > 32 KiB.
const MSS_BUFFER_BYTES: usize = 64 * 1024;
/// This many undecodable packets in a row means the stream is not audio we can play.
const MAX_CONSECUTIVE_CORRUPT: u32 = 32;
/// Per-source ring: how far a decoder may run ahead of the mixer (decode-ahead for gapless).
pub(crate) const SOURCE_RING: Duration = Duration::from_millis(1000);

/// Why a stream could not be decoded (to the end).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "unrecognised or corrupt audio data (no known format found in the first {at_byte} bytes): {source}"
    )]
    Unrecognised {
        at_byte: u64,
        #[source]
        source: SymError,
    },
    #[error("the {format} stream has no audio track")]
    NoAudioTrack { format: &'static str },
    #[error("unsupported codec in the {format} stream: {source}")]
    UnsupportedCodec {
        format: &'static str,
        #[source]
        source: SymError,
    },
    #[error("corrupt {codec} data at byte {at_byte}: {what}")]
    Corrupt {
        codec: &'static str,
        at_byte: u64,
        what: String,
    },
    #[error("reading the {codec} stream failed at byte {at_byte}: {source}")]
    Read {
        codec: &'static str,
        at_byte: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("the {codec} stream contained no audio")]
    Empty { codec: &'static str },
    #[error("cannot resample: {0}")]
    Resample(#[from] super::resample::ResampleError),
    #[error("cancelled")]
    Cancelled,
}

/// What a complete decode produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeSummary {
    pub frames: u64,
    pub rate: u32,
    pub channels: usize,
    pub corrupt_packets: u64,
    pub bytes: u64,
}

struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Decodes `reader` to the end, calling `on_pcm(interleaved f32, rate, channels)` for each
/// decoded packet as soon as it is decoded. `on_pcm` returning `Err` stops decoding.
pub fn decode_stream<R, F>(
    reader: R,
    counters: Option<&Counters>,
    mut on_pcm: F,
) -> Result<DecodeSummary, DecodeError>
where
    R: Read + Send + Sync + 'static,
    F: FnMut(&[f32], u32, usize) -> Result<(), DecodeError>,
{
    let count = Arc::new(AtomicU64::new(0));
    let src = ReadOnlySource::new(CountingReader {
        inner: reader,
        count: count.clone(),
    });
    let mss = MediaSourceStream::new(
        Box::new(src),
        MediaSourceStreamOptions {
            buffer_len: MSS_BUFFER_BYTES,
        },
    );
    let at = || count.load(Ordering::Relaxed);
    let mut format = symphonia::default::get_probe()
        .probe(
            &Hint::new(),
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|source| DecodeError::Unrecognised {
            at_byte: at(),
            source,
        })?;
    let fmt_name = format.format_info().short_name;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or(DecodeError::NoAudioTrack { format: fmt_name })?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or(DecodeError::NoAudioTrack { format: fmt_name })?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|source| DecodeError::UnsupportedCodec {
            format: fmt_name,
            source,
        })?;
    let codec = decoder.codec_info().short_name;

    let mut summary = DecodeSummary::default();
    let mut consecutive = 0u32;
    let mut last_error = String::new();
    let mut samples: Vec<f32> = Vec::new();
    let corrupt =
        |summary: &mut DecodeSummary, consecutive: &mut u32, what: String, last: &mut String| {
            summary.corrupt_packets += 1;
            if let Some(c) = counters {
                c.decode_corrupt_packets.fetch_add(1, Ordering::Relaxed);
            }
            *consecutive += 1;
            *last = what;
        };
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::IoError(e)) => {
                return Err(DecodeError::Read {
                    codec,
                    at_byte: at(),
                    source: e,
                });
            }
            Err(SymError::DecodeError(msg)) => {
                corrupt(
                    &mut summary,
                    &mut consecutive,
                    msg.to_owned(),
                    &mut last_error,
                );
                if consecutive > MAX_CONSECUTIVE_CORRUPT {
                    return Err(DecodeError::Corrupt {
                        codec,
                        at_byte: at(),
                        what: last_error,
                    });
                }
                continue;
            }
            // A chained stream changed its tracks: what we have played is all we can play.
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    codec,
                    at_byte: at(),
                    what: e.to_string(),
                });
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(buf) => {
                consecutive = 0;
                let frames = buf.frames();
                if frames == 0 {
                    continue;
                }
                let rate = buf.spec().rate();
                let channels = buf.spec().channels().count().max(1);
                samples.resize(buf.samples_interleaved(), 0.0);
                buf.copy_to_slice_interleaved(&mut samples[..]);
                summary.frames += frames as u64;
                summary.rate = rate;
                summary.channels = channels;
                on_pcm(&samples, rate, channels)?;
            }
            Err(SymError::DecodeError(msg)) => {
                corrupt(
                    &mut summary,
                    &mut consecutive,
                    msg.to_owned(),
                    &mut last_error,
                );
                if consecutive > MAX_CONSECUTIVE_CORRUPT {
                    return Err(DecodeError::Corrupt {
                        codec,
                        at_byte: at(),
                        what: last_error,
                    });
                }
            }
            Err(SymError::IoError(e)) => {
                corrupt(
                    &mut summary,
                    &mut consecutive,
                    e.to_string(),
                    &mut last_error,
                );
                if consecutive > MAX_CONSECUTIVE_CORRUPT {
                    return Err(DecodeError::Corrupt {
                        codec,
                        at_byte: at(),
                        what: last_error,
                    });
                }
            }
            Err(e) => {
                return Err(DecodeError::Corrupt {
                    codec,
                    at_byte: at(),
                    what: e.to_string(),
                });
            }
        }
    }
    summary.bytes = at();
    if summary.frames == 0 {
        if summary.corrupt_packets > 0 {
            return Err(DecodeError::Corrupt {
                codec,
                at_byte: at(),
                what: last_error,
            });
        }
        return Err(DecodeError::Empty { codec });
    }
    Ok(summary)
}

/// State one source shares with the mixer.
#[derive(Debug, Default)]
pub(crate) struct SourceShared {
    /// The decoder has pushed its last frame.
    pub(crate) done: AtomicBool,
    /// Set before `done` when the source could not be played (to the end).
    pub(crate) failed: Mutex<Option<String>>,
    /// The mixer no longer wants this source (stopped, or the engine is shutting down).
    pub(crate) cancel: AtomicBool,
    /// Set by the mixer when the source starts playing.
    pub(crate) started: AtomicBool,
    /// Woken with the first PCM (until the source has started) and at the end.
    pub(crate) mixer: std::sync::OnceLock<super::mixer::MixerWaker>,
}

impl SourceShared {
    fn wake_mixer(&self) {
        if let Some(w) = self.mixer.get() {
            w.wake();
        }
    }
}

/// Converts decoded PCM (any rate, any channels) into device frames in the source's ring.
pub(crate) struct SourceSink {
    producer: rtrb::Producer<f32>,
    shared: Arc<SourceShared>,
    dev_rate: u32,
    dev_channels: usize,
    mix_channels: usize,
    resampler: Option<StreamResampler>,
    mapped: Vec<f32>,
    resampled: Vec<f32>,
    expanded: Vec<f32>,
}

impl SourceSink {
    pub(crate) fn new(
        producer: rtrb::Producer<f32>,
        shared: Arc<SourceShared>,
        dev_rate: u32,
        dev_channels: u16,
    ) -> Self {
        let dev_channels = usize::from(dev_channels.max(1));
        Self {
            producer,
            shared,
            dev_rate,
            dev_channels,
            mix_channels: dev_channels.min(2),
            resampler: None,
            mapped: Vec::new(),
            resampled: Vec::new(),
            expanded: Vec::new(),
        }
    }

    pub(crate) fn push(
        &mut self,
        input: &[f32],
        rate: u32,
        channels: usize,
    ) -> Result<(), DecodeError> {
        let channels = channels.max(1);
        let m = self.mix_channels;
        self.mapped.clear();
        for frame in input.chunks_exact(channels) {
            if m == 1 {
                self.mapped
                    .push(frame.iter().sum::<f32>() / channels as f32);
            } else if channels == 1 {
                self.mapped.extend_from_slice(&[frame[0], frame[0]]);
            } else {
                self.mapped.extend_from_slice(&frame[..2]);
            }
        }
        if self
            .resampler
            .as_ref()
            .is_none_or(|r| r.input_rate() != rate)
        {
            self.flush_resampler()?;
            let chunk = (rate as usize / 50).max(64);
            self.resampler = Some(StreamResampler::new(rate, self.dev_rate, m, chunk)?);
        }
        self.resampled.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.push(&self.mapped, &mut self.resampled)?;
        }
        self.write_resampled()
    }

    fn flush_resampler(&mut self) -> Result<(), DecodeError> {
        if let Some(mut r) = self.resampler.take() {
            self.resampled.clear();
            r.flush(&mut self.resampled)?;
            self.write_resampled()?;
        }
        Ok(())
    }

    fn write_resampled(&mut self) -> Result<(), DecodeError> {
        let m = self.mix_channels;
        let out: &[f32] = if self.dev_channels == m {
            &self.resampled
        } else {
            self.expanded.clear();
            for frame in self.resampled.chunks_exact(m) {
                self.expanded.extend_from_slice(frame);
                self.expanded
                    .extend(std::iter::repeat_n(0.0, self.dev_channels - m));
            }
            &self.expanded
        };
        let mut pos = 0;
        while pos < out.len() {
            if self.shared.cancel.load(Ordering::Relaxed) {
                return Err(DecodeError::Cancelled);
            }
            let room = self.producer.slots();
            let n = (out.len() - pos).min(room);
            let n = n - n % self.dev_channels;
            if n == 0 {
                // The ring is full (a second ahead of the mixer): no hurry.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            if let Ok(chunk) = self.producer.write_chunk_uninit(n) {
                chunk.fill_from_iter(out[pos..pos + n].iter().copied());
            }
            pos += n;
        }
        if !out.is_empty() && !self.shared.started.load(Ordering::Relaxed) {
            self.shared.wake_mixer();
        }
        Ok(())
    }

    /// Flushes the resampler tail and tells the mixer nothing more will come.
    pub(crate) fn finish(mut self, failure: Option<String>) {
        let flushed = self.flush_resampler();
        let failure = match (failure, flushed) {
            (Some(f), _) => Some(f),
            (None, Err(DecodeError::Cancelled)) => None,
            (None, Err(e)) => Some(e.to_string()),
            (None, Ok(())) => None,
        };
        if let Some(f) = failure {
            *self.shared.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        }
        self.shared.done.store(true, Ordering::Release);
        self.shared.wake_mixer();
    }
}

/// The body of a source's thread: decode (or copy) the source into its ring, then mark it done.
pub(crate) fn run_source(source: Source, mut sink: SourceSink, counters: Arc<Counters>) {
    let result = match source {
        Source::Pcm { samples, rate } => {
            let mut res = Ok(());
            let mut block = Vec::with_capacity(4096);
            for chunk in samples.chunks(4096) {
                block.clear();
                block.extend(chunk.iter().map(|s| f32::from(*s) / 32768.0));
                if let Err(e) = sink.push(&block, rate, 1) {
                    res = Err(e);
                    break;
                }
            }
            res
        }
        Source::Earcon(e) => decode_stream(
            std::io::Cursor::new(earcons::wav_bytes(e)),
            Some(&counters),
            |pcm, rate, ch| sink.push(pcm, rate, ch),
        )
        .map(|_| ()),
        Source::Encoded(reader) => decode_stream(reader, Some(&counters), |pcm, rate, ch| {
            sink.push(pcm, rate, ch)
        })
        .map(|_| ()),
    };
    let failure = match result {
        Ok(()) | Err(DecodeError::Cancelled) => None,
        Err(e) => {
            tracing::warn!(error = %e, "audio source failed");
            Some(e.to_string())
        }
    };
    sink.finish(failure);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_bytes(rate: u32, channels: u16, frames: usize) -> Vec<u8> {
        let mut cur = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for i in 0..frames * channels as usize {
            w.write_sample(((i % 200) as i16 - 100) * 100).unwrap();
        }
        w.finalize().unwrap();
        cur.into_inner()
    }

    #[test]
    fn decodes_wav_with_rate_and_channels() {
        let bytes = wav_bytes(22_050, 2, 22_050);
        let mut got = 0usize;
        let s = decode_stream(std::io::Cursor::new(bytes), None, |pcm, rate, ch| {
            assert_eq!((rate, ch), (22_050, 2));
            got += pcm.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(s.frames, 22_050);
        assert_eq!(got, 44_100);
    }

    fn fixture(name: &str) -> std::fs::File {
        std::fs::File::open(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    }

    fn zero_crossings_per_second(pcm: &[f32], channels: usize, rate: u32) -> f64 {
        let mono: Vec<f32> = pcm.chunks_exact(channels).map(|f| f[0]).collect();
        let zc = mono
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        zc as f64 * f64::from(rate) / mono.len() as f64
    }

    #[test]
    fn decodes_mp3_flac_and_vorbis_fixtures() {
        for (name, rate, channels, secs, hz) in [
            ("audio_speech_24k_mono.mp3", 24_000, 1, 7.74, None),
            ("audio_music_44k_stereo.mp3", 44_100, 2, 8.0, None),
            ("audio_tone_44k_stereo.flac", 44_100, 2, 1.0, Some(440.0)),
            ("audio_tone_22k_mono.ogg", 22_050, 1, 1.0, Some(440.0)),
        ] {
            let mut all = Vec::new();
            let s = decode_stream(fixture(name), None, |pcm, r, ch| {
                assert_eq!((r, ch), (rate, channels), "{name}");
                all.extend_from_slice(pcm);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let got = s.frames as f64 / f64::from(rate);
            assert!((got - secs).abs() < 0.06, "{name}: {got} s");
            assert_eq!(s.corrupt_packets, 0, "{name}");
            if let Some(hz) = hz {
                let f = zero_crossings_per_second(&all, channels, rate);
                assert!((f - hz).abs() < 5.0, "{name}: {f} Hz");
            }
        }
    }

    #[test]
    fn garbage_is_an_error_that_says_so() {
        let mut x = 12345u32;
        let junk: Vec<u8> = (0..20_000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let err = decode_stream(std::io::Cursor::new(junk), None, |_, _, _| Ok(())).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("corrupt") || msg.contains("unrecognised"),
            "{msg}"
        );
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(decode_stream(std::io::Cursor::new(Vec::new()), None, |_, _, _| Ok(())).is_err());
    }
}
