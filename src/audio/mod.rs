//! The audio engine: it owns the sound devices, the capture path (mic → 16 kHz s16le mono 10 ms
//! frames with a 500 ms pre-roll), the decode threads (symphonia, fed by readers that may still be
//! receiving bytes), the mixer of the three focus channels and the output path, plus the bundled
//! earcons. It does not decide focus: the focus manager tells it to pause, resume or duck.
//!
//! Threads and data flow:
//!
//! ```text
//! input device callback ─copy─> [rtrb f32] ─> capture thread (downmix, resample, frames, pre-roll)
//!                                                 └─> bounded tokio mpsc<Bytes> ─> listener
//! Source ─> decode thread (symphonia, resample to device rate) ─> [rtrb per source]
//!        ─> mixer thread (queues per Channel, gains, gapless hand-over, updates) ─> [rtrb f32]
//!        ─copy × master gain─> output device callback
//! ```
//!
//! The device callbacks only copy, scale by an atomic gain and bump atomic counters (style P5).
//! `wav:PATH` devices run the very same callback bodies from a plain thread paced by a clock.

pub mod capture;
pub mod decode;
pub mod devices;
pub mod earcons;
pub mod mixer;
pub mod playback;
mod recovery;
pub mod resample;
mod wavdev;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use capture::CaptureHandle;
pub use devices::{DeviceInfo, list_devices, report};
pub use playback::PlaybackHandle;

/// 16 kHz mono s16le: the only format AVS Recognize gets from us.
pub const CAPTURE_RATE: u32 = 16_000;
/// One capture frame: 10 ms of 16 kHz s16le mono.
pub const CAPTURE_FRAME_SAMPLES: usize = 160;
/// Bytes in one capture frame.
pub const CAPTURE_FRAME_BYTES: usize = CAPTURE_FRAME_SAMPLES * 2;
/// Pre-roll kept for a wake word engine: 500 ms of frames.
pub const PREROLL_FRAMES: usize = 50;

/// Which devices to open and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// cpal id (`alsa:default`, `alsa:plughw:1,0`, ...), `wav:PATH` (a WAV file played as the mic,
    /// paced in real time, then silence) or `none`.
    pub input: String,
    /// cpal id, or `wav:PATH` (everything played is written there, paced in real time).
    pub output: String,
    /// Requested device period (10-20 ms); the granted one is logged and reported in stats.
    pub period: Duration,
    pub output_rate: Option<u32>,
    pub input_rate: Option<u32>,
    pub input_channels: Option<u16>,
    /// Which input channel to keep; `None` downmixes all channels.
    pub capture_channel: Option<u16>,
    /// Keep the mic running while nobody listens, so `CaptureHandle::open(true)` finds the
    /// 500 ms pre-roll (what a wake word engine needs). Off, the input device is paused while
    /// no listener has the mic open: no wakeups when idle, at the cost of one device period
    /// before the first frame after `open`.
    pub keep_mic_open: bool,
    /// Pause the output device after this long with nothing to play (`None`: never). It is
    /// resumed, before the first sample of the next source, where it paused.
    pub output_idle_pause: Option<Duration>,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            input: "alsa:default".to_owned(),
            output: "alsa:default".to_owned(),
            period: Duration::from_millis(10),
            output_rate: None,
            input_rate: None,
            input_channels: None,
            capture_channel: None,
            keep_mic_open: false,
            output_idle_pause: Some(mixer::OUTPUT_IDLE_PAUSE),
        }
    }
}

/// What went wrong while opening or running the audio devices.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error(
        "audio device {id:?} not found; devices that exist: {}",
        list_or_none(available)
    )]
    DeviceNotFound { id: String, available: Vec<String> },
    #[error(
        "invalid audio device id {id:?} (expected \"alsa:NAME\", \"wav:PATH\" or \"none\"): {reason}"
    )]
    InvalidDeviceId { id: String, reason: String },
    #[error(
        "audio device {id:?} has no usable {direction} configuration ({wanted}); it supports: {supported}; devices that exist: {}",
        list_or_none(available)
    )]
    NoUsableConfig {
        id: String,
        direction: &'static str,
        wanted: String,
        supported: String,
        available: Vec<String>,
    },
    #[error(
        "cannot open audio device {id:?} for {direction}: {source}; devices that exist: {}",
        list_or_none(available)
    )]
    OpenFailed {
        id: String,
        direction: &'static str,
        #[source]
        source: cpal::Error,
        available: Vec<String>,
    },
    #[error(
        "capture_channel {channel} does not exist on {id:?}, which has {channels} input channel(s)"
    )]
    NoSuchCaptureChannel {
        id: String,
        channel: u16,
        channels: u16,
    },
    #[error("WAV device file {path:?}: {source}")]
    WavFile {
        path: String,
        #[source]
        source: hound::Error,
    },
    #[error("period {period:?} is out of range (1-100 ms)")]
    BadPeriod { period: Duration },
    #[error("cannot start audio thread {name}: {source}")]
    Thread {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn list_or_none(ids: &[String]) -> String {
    if ids.is_empty() {
        "(none)".to_owned()
    } else {
        ids.join(", ")
    }
}

/// Focus channels, highest priority first. Each plays its sources one after another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    Dialog,
    Alerts,
    Content,
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Dialog, Channel::Alerts, Channel::Content];

    pub(crate) fn index(self) -> usize {
        match self {
            Channel::Dialog => 0,
            Channel::Alerts => 1,
            Channel::Content => 2,
        }
    }
}

/// Something to play.
pub enum Source {
    /// MP3/AAC/FLAC/Vorbis/WAV bytes that may still be arriving: a blocking reader that returns
    /// `Ok(0)` at the end.
    Encoded(Box<dyn std::io::Read + Send + Sync>),
    Earcon(Earcon),
    /// Mono samples at `rate`.
    Pcm {
        samples: Arc<[i16]>,
        rate: u32,
    },
    /// An AudioPlayer stream: encoded bytes played from a start position, with its tags.
    Stream(StreamSource),
}

/// A stream's metadata as key/value pairs (ID3 frames, ICY fields), in the order found.
pub type StreamTags = Vec<(String, String)>;

/// Encoded bytes (like [`Source::Encoded`]) played from `start`, reporting the stream's tags as
/// [`PlaybackUpdate::Metadata`].
pub struct StreamSource {
    pub reader: Box<dyn std::io::Read + Send + Sync>,
    /// Stream position to start at: packets before it are demuxed and dropped, not decoded.
    pub start: Duration,
    /// Tags found outside the decoder's view (ICY metadata stripped from an HTTP stream),
    /// polled by the decode thread.
    pub side_tags: Option<std::sync::mpsc::Receiver<SideTags>>,
}

/// Tags that hold from byte `at_byte` of what the stream's reader yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideTags {
    pub at_byte: u64,
    pub tags: StreamTags,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Encoded(_) => f.write_str("Source::Encoded(..)"),
            Source::Stream(s) => write!(f, "Source::Stream(.. from {:?})", s.start),
            Source::Earcon(e) => write!(f, "Source::Earcon({e:?})"),
            Source::Pcm { samples, rate } => {
                write!(f, "Source::Pcm {{ {} samples @ {rate} Hz }}", samples.len())
            }
        }
    }
}

/// The bundled short sounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Earcon {
    Wake,
    EndOfListening,
    Error,
    Offline,
    Alarm,
    Timer,
    Reminder,
    /// A sounding alert's reminder while a dialog holds the foreground.
    AlertShort,
}

/// Caller-chosen identity of an enqueued source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceId(pub u64);

/// What happened to an enqueued source. Offsets count the source's own audio handed to the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlaybackUpdate {
    /// Its first sample was handed to the device.
    Started,
    /// At most every 100 ms while playing.
    Progress {
        offset: Duration,
    },
    /// Its last sample was handed to the device.
    Finished {
        offset: Duration,
    },
    /// Removed by `stop`.
    Stopped {
        offset: Duration,
    },
    /// It cannot be played (or not to the end): what went wrong.
    Failed {
        error: String,
    },
    /// Its data did not arrive in time; the channel is silent.
    StutterStarted,
    StutterFinished {
        stutter: Duration,
    },
    /// The stream's tags (ID3 at its start, each new ICY block): sent by the decode thread when
    /// found, so possibly before `Started`; dropped rather than crowding out the updates above.
    Metadata {
        tags: StreamTags,
    },
}

/// Device-level information and counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AudioStats {
    pub input: Option<StreamInfo>,
    pub output: Option<StreamInfo>,
    /// Input samples the capture ring had no room for (the capture thread fell behind).
    pub input_overrun_samples: u64,
    /// Input callbacks that lost samples.
    pub input_overruns: u64,
    /// Input callbacks / wav ticks seen.
    pub input_callbacks: u64,
    /// 10 ms capture frames produced.
    pub capture_frames: u64,
    /// Capture frames dropped because the listener read too slowly.
    pub capture_dropped_frames: u64,
    /// Output callbacks that found the output ring short while something was playing (silence
    /// was played). The silence of an idle mixer is not counted.
    pub output_underruns: u64,
    /// Output frames filled with silence because of underruns.
    pub output_underrun_frames: u64,
    pub output_callbacks: u64,
    /// Output frames handed to the device from the mixer.
    pub output_frames: u64,
    /// Packets the decoders could not decode and skipped.
    pub decode_corrupt_packets: u64,
    /// Sources that stuttered (data late while playing).
    pub stutters: u64,
    /// Output frames of silence those stutters lasted.
    pub stutter_frames: u64,
    /// Device stream errors other than xruns (e.g. a USB device unplugged), each also logged.
    pub stream_errors: u64,
    /// Times a device was lost (stream error, or callbacks stopped while it should run).
    pub device_losses: u64,
    /// Times a lost device was opened again.
    pub device_reopens: u64,
}

/// The stream info a device's owner updates when it reopens the device, read by `stats`.
pub(crate) type SharedInfo = Arc<Mutex<Option<StreamInfo>>>;

/// One open stream as granted by the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub device: String,
    pub rate: u32,
    pub channels: u16,
    pub sample_format: String,
    pub requested_period_frames: u32,
    /// Frames per callback actually seen (0 until the first callback).
    pub granted_period_frames: u32,
}

/// Counters shared by callbacks and threads. Only atomics, so callbacks may touch them.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) input_overrun_samples: AtomicU64,
    pub(crate) input_overruns: AtomicU64,
    pub(crate) input_callbacks: AtomicU64,
    pub(crate) input_period_frames: AtomicU32,
    pub(crate) capture_frames: AtomicU64,
    pub(crate) capture_dropped_frames: AtomicU64,
    pub(crate) output_underruns: AtomicU64,
    pub(crate) output_underrun_frames: AtomicU64,
    pub(crate) output_callbacks: AtomicU64,
    pub(crate) output_period_frames: AtomicU32,
    /// Frames taken from the output ring by the device: the clock that Started/Finished use.
    pub(crate) output_frames_consumed: AtomicU64,
    pub(crate) decode_corrupt_packets: AtomicU64,
    pub(crate) stutters: AtomicU64,
    pub(crate) stutter_frames: AtomicU64,
    pub(crate) stream_errors: AtomicU64,
    pub(crate) device_losses: AtomicU64,
    pub(crate) device_reopens: AtomicU64,
    /// Raised by a stream's error callback when the device is gone, for the thread that owns
    /// the stream (the mixer, the capture thread): callbacks only signal, owners act and log.
    pub(crate) output_lost: AtomicBool,
    pub(crate) input_lost: AtomicBool,
    /// Raised by the other direction's owner when it lost its device: a paused stream on the
    /// same server cannot tell it is dead, and closing it only after the server is back (and
    /// a new stream opened) can crash libjack. Its owner closes a paused stream and reopens it.
    pub(crate) output_suspect: AtomicBool,
    pub(crate) input_suspect: AtomicBool,
    /// Set by the mixer when it has nothing to play: a short output ring is then not an underrun.
    pub(crate) output_idle: AtomicBool,
}

impl Counters {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Input samples lost to a full capture ring so far.
    pub fn snapshot_overrun_samples(&self) -> u64 {
        self.input_overrun_samples.load(Ordering::Relaxed)
    }

    /// Output callbacks that found the ring short so far.
    pub fn snapshot_underruns(&self) -> u64 {
        self.output_underruns.load(Ordering::Relaxed)
    }
}

/// Logs, at most every few seconds, when a counter of lost audio has grown: xruns are counted in
/// the callbacks (which must not log) and reported here, from a worker thread.
pub(crate) struct LossReporter {
    what: &'static str,
    last_value: u64,
    last_log: Option<std::time::Instant>,
}

impl LossReporter {
    const EVERY: Duration = Duration::from_secs(5);

    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            last_value: 0,
            last_log: None,
        }
    }

    pub(crate) fn check(&mut self, value: u64) {
        if value > self.last_value && self.last_log.is_none_or(|t| t.elapsed() >= Self::EVERY) {
            tracing::warn!(
                what = self.what,
                total = value,
                new = value - self.last_value,
                "audio lost"
            );
            self.last_value = value;
            self.last_log = Some(std::time::Instant::now());
        }
    }
}

/// Linear gain for a 0-100 volume: squared, a cheap approximation of loudness perception
/// (volume 50 is 0.25, about -12 dB).
pub fn volume_gain(volume: u8) -> f32 {
    let v = f32::from(volume.min(100)) / 100.0;
    v * v
}

/// The running engine. Dropping it stops every audio thread and closes the devices.
pub struct AudioEngine {
    counters: Arc<Counters>,
    capture: CaptureHandle,
    playback: PlaybackHandle,
    input_info: SharedInfo,
    output_info: SharedInfo,
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl AudioEngine {
    /// Opens the devices and starts the capture and mixer threads.
    pub fn start(cfg: &AudioConfig) -> Result<AudioEngine, AudioError> {
        let ms = cfg.period.as_millis();
        if !(1..=100).contains(&ms) {
            return Err(AudioError::BadPeriod { period: cfg.period });
        }
        let counters = Counters::new();
        let shutdown = Arc::new(AtomicBool::new(false));
        let threads = Vec::new();

        let capture_shared = capture::CaptureShared::new(counters.clone());
        // Open both devices before any thread starts, so an error leaves nothing running.
        let input = devices::open_input(cfg, counters.clone(), shutdown.clone())?;
        let master_gain = Arc::new(AtomicU32::new(volume_gain(100).to_bits()));
        let opened = devices::open_output(
            cfg,
            counters.clone(),
            shutdown.clone(),
            master_gain.clone(),
            None,
        )?;
        let output_info: SharedInfo = Arc::new(Mutex::new(Some(opened.info.clone())));
        let input_info: SharedInfo = Arc::new(Mutex::new(input.as_ref().map(|i| i.info.clone())));
        let worker = match input {
            Some(opened_in) => Some(
                capture::CaptureWorker::new(
                    opened_in.consumer,
                    opened_in.info.rate,
                    opened_in.info.channels,
                    cfg.capture_channel,
                    capture_shared.clone(),
                    shutdown.clone(),
                )
                .map_err(|e| match e {
                    capture::CaptureSetupError::NoSuchChannel { channel, channels } => {
                        AudioError::NoSuchCaptureChannel {
                            id: cfg.input.clone(),
                            channel,
                            channels,
                        }
                    }
                })?
                .with_device(
                    opened_in.backend,
                    cfg.keep_mic_open,
                    capture::InputReopen {
                        cfg: cfg.clone(),
                        shutdown: shutdown.clone(),
                        info: input_info.clone(),
                    },
                ),
            ),
            None => None,
        };
        let (playback, mut mixer) = playback::PlaybackHandle::new(
            opened.producer,
            master_gain.clone(),
            opened.info.rate,
            opened.info.channels,
            cfg.period,
            counters.clone(),
            shutdown.clone(),
        );
        mixer.prefill();
        // Started here so a device that cannot run is an error of `start`; the worker threads
        // own the streams from now on (they pause them while idle and close them at the end).
        opened.backend.play(&cfg.output)?;
        mixer.set_output(
            opened.backend,
            cfg.output.clone(),
            cfg.output_idle_pause,
            mixer::OutputReopen {
                cfg: cfg.clone(),
                shutdown: shutdown.clone(),
                master_gain,
                info: output_info.clone(),
            },
        );
        let mut worker = worker;
        if let Some(w) = worker.as_mut() {
            let (c, waker) = (counters.clone(), mixer.waker());
            w.on_device_lost(Box::new(move || {
                c.output_suspect.store(true, Ordering::Release);
                waker.wake();
            }));
            let (c, shared) = (counters.clone(), capture_shared.clone());
            mixer.on_device_lost(Box::new(move || {
                c.input_suspect.store(true, Ordering::Release);
                shared.wake();
            }));
        }
        if let Some(w) = worker.as_ref() {
            w.play_device()?;
        }
        let mut engine = AudioEngine {
            counters,
            capture: CaptureHandle {
                shared: capture_shared,
            },
            playback,
            input_info,
            output_info,
            shutdown,
            threads,
        };
        // From here on an error drops `engine`, which stops the threads already running.
        engine.threads.push(
            std::thread::Builder::new()
                .name("avsd-mixer".into())
                .spawn(move || mixer.run())
                .map_err(|source| AudioError::Thread {
                    name: "mixer",
                    source,
                })?,
        );
        if let Some(worker) = worker {
            engine.threads.push(
                std::thread::Builder::new()
                    .name("avsd-capture".into())
                    .spawn(move || worker.run())
                    .map_err(|source| AudioError::Thread {
                        name: "capture",
                        source,
                    })?,
            );
        }
        tracing::info!(
            input = ?read_info(&engine.input_info),
            output = ?read_info(&engine.output_info),
            "audio engine started"
        );
        Ok(engine)
    }

    pub fn capture(&self) -> CaptureHandle {
        self.capture.clone()
    }

    pub fn playback(&self) -> PlaybackHandle {
        self.playback.clone()
    }

    pub fn stats(&self) -> AudioStats {
        let c = &self.counters;
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut input = read_info(&self.input_info);
        if let Some(i) = input.as_mut() {
            i.granted_period_frames = c.input_period_frames.load(Ordering::Relaxed);
        }
        let mut output = read_info(&self.output_info);
        if let Some(o) = output.as_mut() {
            o.granted_period_frames = c.output_period_frames.load(Ordering::Relaxed);
        }
        AudioStats {
            input,
            output,
            input_overrun_samples: ld(&c.input_overrun_samples),
            input_overruns: ld(&c.input_overruns),
            input_callbacks: ld(&c.input_callbacks),
            capture_frames: ld(&c.capture_frames),
            capture_dropped_frames: ld(&c.capture_dropped_frames),
            output_underruns: ld(&c.output_underruns),
            output_underrun_frames: ld(&c.output_underrun_frames),
            output_callbacks: ld(&c.output_callbacks),
            output_frames: ld(&c.output_frames_consumed),
            decode_corrupt_packets: ld(&c.decode_corrupt_packets),
            stutters: ld(&c.stutters),
            stutter_frames: ld(&c.stutter_frames),
            stream_errors: ld(&c.stream_errors),
            device_losses: ld(&c.device_losses),
            device_reopens: ld(&c.device_reopens),
        }
    }
}

fn read_info(info: &SharedInfo) -> Option<StreamInfo> {
    info.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Drop for AudioEngine {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        // The mixer and capture threads close their devices on the way out.
        self.playback.wake_mixer();
        self.capture.shared.wake();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("an audio thread panicked");
            }
        }
        let stats = self.stats();
        tracing::info!(?stats, "audio engine stopped");
    }
}
