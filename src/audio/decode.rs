//! Decoding: symphonia over a blocking reader whose bytes may still be arriving (MP3, AAC in ADTS
//! or MP4, FLAC, Vorbis, WAV), producing PCM before the stream ends. Corrupt packets are skipped
//! and counted; what cannot be recovered becomes a `DecodeError` saying what and where. Also the
//! per-source thread body that turns any `Source` into device-rate frames in the source's ring.
//! AudioPlayer streams may start at an offset: packets before it are demuxed and dropped by
//! timestamp (never decoded), the last two are decoded only to prime the decoder, and the packet
//! holding the start is trimmed to the exact frame. Stream tags (ID3v2 from the demuxer, ICY
//! from the fetcher) go out as `PlaybackUpdate::Metadata` on the source's update channel.
//! It never runs in a device callback and never panics on bad input.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatReader;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource};
use symphonia::core::meta::{MetadataOptions, MetadataRevision, RawValue, StandardTag};
use symphonia::core::packet::Packet;
use symphonia::core::units::TimeBase;
use tokio::sync::mpsc;

use super::resample::StreamResampler;
use super::{Counters, PlaybackUpdate, SideTags, Source, StreamSource, StreamTags, earcons};

/// symphonia requires a power of two > 32 KiB.
const MSS_BUFFER_BYTES: usize = 64 * 1024;
/// This many undecodable packets in a row means the stream is not audio we can play.
const MAX_CONSECUTIVE_CORRUPT: u32 = 32;
/// Per-source ring: how far a decoder may run ahead of the mixer (decode-ahead for gapless).
pub(crate) const SOURCE_RING: Duration = Duration::from_millis(1000);
/// Packets before the start packet that are decoded (output thrown away) when starting at an
/// offset: they refill the MP3 bit reservoir (main_data_begin reaches up to 511 bytes back) and
/// the IMDCT overlap, so the first frame heard is whole rather than a click.
pub(crate) const PRIME_PACKETS: usize = 2;
/// Tags kept per metadata set, and bytes per value: enough for any real title, bounded for a
/// hostile stream.
const MAX_TAGS: usize = 16;
const MAX_TAG_VALUE_BYTES: usize = 512;
/// Side tags waiting for the demuxer to reach their position; the oldest go first.
const MAX_PENDING_SIDE_TAGS: usize = 16;
/// Update slots left free for the terminal updates the mixer sends (Metadata is droppable).
const METADATA_RESERVED_SLOTS: usize = 8;

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
    /// Packets dropped undecoded because they lay before the start position.
    pub skipped_packets: u64,
}

/// What to do with one demuxed packet when playback starts at a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SkipAction {
    /// Wholly before the start: keep it undecoded as a possible primer (only the last
    /// [`PRIME_PACKETS`] are kept; older ones are dropped).
    Hold,
    /// The start lies in this packet (or before it): decode the primers and throw their output
    /// away, then decode this one and drop its first `trim` time-base units.
    Start { trim: u64 },
    /// At or after the start: decode and play.
    Play,
}

/// Finds the packet holding the start position from packet timestamps alone. Pure: the caller
/// feeds it each packet's presented start (`pts + trim_start`) and presented duration (`dur`),
/// in the track's time base.
#[derive(Debug)]
pub(crate) struct StartSkipper {
    target: i64,
    started: bool,
}

impl StartSkipper {
    pub(crate) fn new(target: i64) -> Self {
        Self {
            target,
            started: target <= 0,
        }
    }

    pub(crate) fn on_packet(&mut self, start: i64, dur: u64) -> SkipAction {
        if self.started {
            return SkipAction::Play;
        }
        let end = start.saturating_add(i64::try_from(dur).unwrap_or(i64::MAX));
        if end <= self.target {
            return SkipAction::Hold;
        }
        self.started = true;
        SkipAction::Start {
            trim: u64::try_from(self.target.saturating_sub(start)).unwrap_or(0),
        }
    }
}

/// `t` in `tb` units, rounded down.
fn timestamp_of(tb: TimeBase, t: Duration) -> i64 {
    let units = t.as_secs_f64() * f64::from(tb.denom.get()) / f64::from(tb.numer.get());
    units.floor() as i64
}

/// `units` of `tb` as frames at `rate`, rounded to the nearest frame.
fn frames_of(tb: TimeBase, units: u64, rate: u32) -> u64 {
    let secs = units as f64 * f64::from(tb.numer.get()) / f64::from(tb.denom.get());
    (secs * f64::from(rate)).round() as u64
}

/// How a stream is decoded beyond the plain case.
#[derive(Default)]
pub struct StreamOptions {
    /// Start position; `Duration::ZERO` plays from the beginning.
    pub start: Duration,
    /// Tags found outside the demuxer (ICY), polled between packets and passed on once the
    /// demuxer has read up to their byte position.
    pub side_tags: Option<std::sync::mpsc::Receiver<SideTags>>,
}

fn tag_value(v: &RawValue) -> Option<String> {
    match v {
        RawValue::String(s) => Some(s.as_str().to_owned()),
        RawValue::StringList(l) => Some(l.join(", ")),
        RawValue::UnsignedInt(n) => Some(n.to_string()),
        RawValue::SignedInt(n) => Some(n.to_string()),
        RawValue::Float(f) => Some(f.to_string()),
        RawValue::Boolean(b) => Some(b.to_string()),
        // Pictures and other binary frames are never sent (the SDK filters them too).
        _ => None,
    }
}

/// The tag keys we report: GStreamer's tag names, which the reference SDK forwards as is.
fn std_key(tag: &StandardTag) -> Option<&'static str> {
    Some(match tag {
        StandardTag::TrackTitle(_) => "title",
        StandardTag::Artist(_) => "artist",
        StandardTag::Album(_) => "album",
        StandardTag::AlbumArtist(_) => "album-artist",
        StandardTag::Genre(_) => "genre",
        StandardTag::Comment(_) => "comment",
        StandardTag::Composer(_) => "composer",
        StandardTag::TrackNumber(_) => "track-number",
        StandardTag::RecordingDate(_) | StandardTag::ReleaseDate(_) => "date",
        StandardTag::RecordingYear(_) | StandardTag::ReleaseYear(_) => "date",
        StandardTag::Label(_) => "organization",
        StandardTag::Copyright(_) => "copyright",
        StandardTag::Url(_) | StandardTag::UrlOfficial(_) => "homepage",
        _ => return None,
    })
}

/// The known tags of a metadata revision, bounded in count and length.
pub(crate) fn tags_of(rev: &MetadataRevision) -> StreamTags {
    let mut out: StreamTags = Vec::new();
    let all = rev
        .media
        .tags
        .iter()
        .chain(rev.per_track.iter().flat_map(|t| t.metadata.tags.iter()));
    for tag in all {
        let Some(key) = tag.std.as_ref().and_then(std_key) else {
            continue;
        };
        let Some(value) = tag_value(&tag.raw.value) else {
            continue;
        };
        if out.iter().any(|(k, _)| k == key) || out.len() >= MAX_TAGS {
            continue;
        }
        out.push((key.to_owned(), truncate(value.trim(), MAX_TAG_VALUE_BYTES)));
    }
    out
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// New tags from the demuxer's metadata log, if a revision arrived since the last look.
fn new_demuxer_tags(format: &mut dyn FormatReader, first: &mut bool) -> Option<StreamTags> {
    let mut meta = format.metadata();
    let rev = if std::mem::take(first) {
        meta.skip_to_latest()
    } else {
        meta.pop()?;
        meta.skip_to_latest()
    }?;
    let tags = tags_of(rev);
    (!tags.is_empty()).then_some(tags)
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
    on_pcm: F,
) -> Result<DecodeSummary, DecodeError>
where
    R: Read + Send + Sync + 'static,
    F: FnMut(&[f32], u32, usize) -> Result<(), DecodeError>,
{
    decode_stream_with(reader, counters, StreamOptions::default(), on_pcm, |_| {})
}

/// [`decode_stream`] from `opts.start`, calling `on_tags` with each new set of stream tags.
/// A start past the end of the stream plays nothing and is not an error.
pub fn decode_stream_with<R, F, T>(
    reader: R,
    counters: Option<&Counters>,
    opts: StreamOptions,
    mut on_pcm: F,
    mut on_tags: T,
) -> Result<DecodeSummary, DecodeError>
where
    R: Read + Send + Sync + 'static,
    F: FnMut(&[f32], u32, usize) -> Result<(), DecodeError>,
    T: FnMut(StreamTags),
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
    let time_base = track.time_base;
    let codec_rate = params.sample_rate.unwrap_or(0);
    // Without a time base the start is found by counting decoded frames instead.
    let mut skipper = time_base.map(|tb| StartSkipper::new(timestamp_of(tb, opts.start)));
    let mut discard_frames = match time_base {
        Some(_) => 0,
        None => (opts.start.as_secs_f64() * f64::from(codec_rate)).round() as u64,
    };
    let mut primers: std::collections::VecDeque<Packet> = std::collections::VecDeque::new();
    let mut side: std::collections::VecDeque<SideTags> = std::collections::VecDeque::new();
    let mut first_meta = true;
    if let Some(tags) = new_demuxer_tags(format.as_mut(), &mut first_meta) {
        on_tags(tags);
    }

    let mut summary = DecodeSummary::default();
    let mut consecutive = 0u32;
    let mut last_error = String::new();
    let mut samples: Vec<f32> = Vec::new();
    // A corrupt packet is skipped; more than MAX_CONSECUTIVE_CORRUPT in a row end the decode.
    let corrupt = |summary: &mut DecodeSummary,
                   consecutive: &mut u32,
                   last: &mut String,
                   what: String|
     -> Result<(), DecodeError> {
        summary.corrupt_packets += 1;
        if let Some(c) = counters {
            c.decode_corrupt_packets.fetch_add(1, Ordering::Relaxed);
        }
        *consecutive += 1;
        if *consecutive > MAX_CONSECUTIVE_CORRUPT {
            return Err(DecodeError::Corrupt {
                codec,
                at_byte: at(),
                what,
            });
        }
        *last = what;
        Ok(())
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
                    &mut last_error,
                    msg.to_owned(),
                )?;
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
        if let Some(rx) = &opts.side_tags {
            while let Ok(t) = rx.try_recv() {
                if side.len() == MAX_PENDING_SIDE_TAGS {
                    side.pop_front();
                }
                side.push_back(t);
            }
            // Released when the demuxer has read that far: early by its read-ahead buffer
            // (< 64 KiB) and the source ring (1 s) at most, not by the whole download.
            while side.front().is_some_and(|t| t.at_byte <= at()) {
                if let Some(t) = side.pop_front() {
                    on_tags(t.tags);
                }
            }
        }
        if !format.metadata().is_latest()
            && let Some(tags) = new_demuxer_tags(format.as_mut(), &mut first_meta)
        {
            on_tags(tags);
        }
        if packet.track_id != track_id {
            continue;
        }
        if let (Some(skip), Some(tb)) = (skipper.as_mut(), time_base) {
            let start = packet
                .pts
                .get()
                .saturating_add(i64::try_from(packet.trim_start.get()).unwrap_or(i64::MAX));
            match skip.on_packet(start, packet.dur.get()) {
                SkipAction::Hold => {
                    summary.skipped_packets += 1;
                    primers.push_back(packet);
                    if primers.len() > PRIME_PACKETS {
                        primers.pop_front();
                    }
                    continue;
                }
                SkipAction::Start { trim } => {
                    for p in primers.drain(..) {
                        // Output and errors are both thrown away: a primer only sets state.
                        let _ = decoder.decode(&p);
                    }
                    discard_frames = frames_of(tb, trim, codec_rate);
                    skipper = None;
                }
                SkipAction::Play => skipper = None,
            }
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
                let drop = (discard_frames.min(frames as u64)) as usize;
                discard_frames -= drop as u64;
                if drop == frames {
                    continue;
                }
                summary.frames += (frames - drop) as u64;
                summary.rate = rate;
                summary.channels = channels;
                on_pcm(&samples[drop * channels..], rate, channels)?;
            }
            Err(SymError::DecodeError(msg)) => corrupt(
                &mut summary,
                &mut consecutive,
                &mut last_error,
                msg.to_owned(),
            )?,
            Err(SymError::IoError(e)) => corrupt(
                &mut summary,
                &mut consecutive,
                &mut last_error,
                e.to_string(),
            )?,
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
    if summary.frames == 0 && !opts.start.is_zero() && summary.skipped_packets > 0 {
        // The start lies past the end: nothing to play, like a seek to the end.
        return Ok(summary);
    }
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

/// Sends a set of tags unless it repeats the last one or the channel is nearly full.
fn send_tags(
    updates: &mpsc::WeakSender<PlaybackUpdate>,
    last: &mut Option<StreamTags>,
    tags: StreamTags,
) {
    if last.as_ref() == Some(&tags) {
        return;
    }
    // Weak: a decoder stuck on a stalled download must not keep the update channel open.
    let Some(updates) = updates.upgrade() else {
        return;
    };
    if updates.capacity() <= METADATA_RESERVED_SLOTS {
        tracing::debug!(?tags, "stream metadata dropped: updates not read");
        return;
    }
    *last = Some(tags.clone());
    let _ = updates.try_send(PlaybackUpdate::Metadata { tags });
}

/// The body of a source's thread: decode (or copy) the source into its ring, then mark it done.
/// `updates` carries the stream's tags (the mixer sends every other update).
pub(crate) fn run_source(
    source: Source,
    mut sink: SourceSink,
    counters: Arc<Counters>,
    updates: mpsc::WeakSender<PlaybackUpdate>,
) {
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
        Source::Stream(StreamSource {
            reader,
            start,
            side_tags,
        }) => {
            let mut last = None;
            decode_stream_with(
                reader,
                Some(&counters),
                StreamOptions { start, side_tags },
                |pcm, rate, ch| sink.push(pcm, rate, ch),
                |tags| send_tags(&updates, &mut last, tags),
            )
            .map(|summary| {
                if summary.frames == 0 {
                    tracing::info!(?start, "start position is past the end of the stream");
                }
            })
        }
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
    #[test]
    fn skipper_holds_packets_before_the_start_and_trims_the_one_holding_it() {
        // MP3 at 1/rate: a first packet that is mostly encoder delay, then 1152-frame packets.
        let mut packets = vec![(0i64, 47u64)];
        for k in 0..10 {
            packets.push((47 + k * 1152, 1152));
        }
        let target = 3000;
        let mut s = StartSkipper::new(target);
        let actions: Vec<SkipAction> = packets.iter().map(|(p, d)| s.on_packet(*p, *d)).collect();
        // Packets ending at 47, 1199, 2351 lie before 3000; 2351..3503 holds it.
        assert_eq!(
            actions[..5],
            [
                SkipAction::Hold,
                SkipAction::Hold,
                SkipAction::Hold,
                SkipAction::Start { trim: 3000 - 2351 },
                SkipAction::Play
            ]
        );
        assert!(actions[5..].iter().all(|a| *a == SkipAction::Play));
        // A start on a packet boundary trims nothing; zero plays everything.
        let mut s = StartSkipper::new(1199);
        assert_eq!(s.on_packet(47, 1152), SkipAction::Hold);
        assert_eq!(s.on_packet(1199, 1152), SkipAction::Start { trim: 0 });
        let mut s = StartSkipper::new(0);
        assert_eq!(s.on_packet(-1105, 1152), SkipAction::Play);
    }

    fn decode_all(bytes: Vec<u8>, start: Duration) -> (Vec<f32>, DecodeSummary, Vec<StreamTags>) {
        let mut pcm = Vec::new();
        let mut tags = Vec::new();
        let s = decode_stream_with(
            std::io::Cursor::new(bytes),
            None,
            StreamOptions {
                start,
                side_tags: None,
            },
            |p, _, _| {
                pcm.extend_from_slice(p);
                Ok(())
            },
            |t| tags.push(t),
        )
        .unwrap();
        (pcm, s, tags)
    }

    fn fixture_bytes(name: &str) -> Vec<u8> {
        let mut v = Vec::new();
        fixture(name).read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn start_offset_plays_exactly_the_rest_without_decoding_the_skipped_part() {
        let mp3 = fixture_bytes("audio_music_44k_stereo.mp3");
        let (full, whole, _) = decode_all(mp3.clone(), Duration::ZERO);
        let (from3, s, _) = decode_all(mp3, Duration::from_millis(3000));
        let skip = 3 * 44_100;
        assert_eq!(s.frames, whole.frames - skip as u64);
        // Whole packets before the start were dropped, not decoded.
        assert!(s.skipped_packets >= 3 * 44_100 / 1152 - 1, "{s:?}");
        let want = &full[skip * 2..];
        assert_eq!(from3.len(), want.len());
        // Primed decoder: the very first frames already match the full decode.
        let worst = from3
            .iter()
            .zip(want)
            .take(2 * 1152 * 2)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "first frames differ by {worst}");
    }

    #[test]
    fn start_past_the_end_plays_nothing_and_is_not_an_error() {
        let mp3 = fixture_bytes("audio_speech_24k_mono.mp3");
        let (pcm, s, _) = decode_all(mp3, Duration::from_secs(60));
        assert!(pcm.is_empty());
        assert_eq!(s.frames, 0);
        assert!(s.skipped_packets > 100, "{s:?}");
    }

    #[test]
    fn id3v2_tags_are_reported_once_before_the_audio() {
        let mp3 = fixture_bytes("audio_speech_24k_mono.mp3");
        let tagged = avs_sim::media::with_id3v2(
            &mp3,
            &[
                ("TIT2", "Morning Song"),
                ("TPE1", "The Testers"),
                ("TALB", "Fixtures"),
            ],
        );
        let (pcm, s, tags) = decode_all(tagged.to_vec(), Duration::ZERO);
        assert!(!pcm.is_empty());
        assert_eq!(s.corrupt_packets, 0);
        assert_eq!(tags.len(), 1, "{tags:?}");
        let get = |k: &str| {
            tags[0]
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("title"), Some("Morning Song"));
        assert_eq!(get("artist"), Some("The Testers"));
        assert_eq!(get("album"), Some("Fixtures"));
    }
}
