//! Sound devices: listing and diagnosing them (`avsd devices`), choosing a configuration a device
//! supports, opening cpal streams with a fixed 10-20 ms period, and routing the `none` and
//! `wav:PATH` ids (the latter to `wavdev.rs`: threads paced by a clock, for demos and machines
//! without sound hardware).
//! The callbacks wired here are the bodies in `capture.rs` and `mixer.rs`; this module only
//! decides formats and owns the streams.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{BufferSize, DeviceId, SizedSample, StreamConfig, SupportedStreamConfigRange};

use super::capture::InputCallback;
use super::mixer::OutputCallback;
use super::{AudioConfig, AudioError, Counters, StreamInfo, wavdev};

pub use super::wavdev::{WAV_OUTPUT_CHANNELS, WAV_OUTPUT_DEFAULT_RATE};

/// One device as cpal sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The id to put in the config, e.g. `alsa:plughw:CARD=Device,DEV=0`.
    pub id: String,
    pub description: String,
    pub input: Vec<ConfigRange>,
    pub output: Vec<ConfigRange>,
}

/// One supported configuration range of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRange {
    pub channels: u16,
    pub min_rate: u32,
    pub max_rate: u32,
    pub sample_format: String,
}

impl From<&SupportedStreamConfigRange> for ConfigRange {
    fn from(r: &SupportedStreamConfigRange) -> Self {
        Self {
            channels: r.channels(),
            min_rate: r.min_sample_rate(),
            max_rate: r.max_sample_rate(),
            sample_format: r.sample_format().to_string(),
        }
    }
}

/// Every device of the default cpal host (ALSA on Linux) with what it supports.
pub fn list_devices() -> Vec<DeviceInfo> {
    let host = cpal::default_host();
    let Ok(devices) = host.devices() else {
        return Vec::new();
    };
    devices
        .filter_map(|d| {
            let id = d.id().ok()?.to_string();
            let description = d.description().map(|x| x.to_string()).unwrap_or_default();
            let input = d
                .supported_input_configs()
                .map(|it| it.map(|r| ConfigRange::from(&r)).collect())
                .unwrap_or_default();
            let output = d
                .supported_output_configs()
                .map(|it| it.map(|r| ConfigRange::from(&r)).collect())
                .unwrap_or_default();
            Some(DeviceInfo {
                id,
                description,
                input,
                output,
            })
        })
        .collect()
}

fn device_ids() -> Vec<String> {
    let host = cpal::default_host();
    host.devices()
        .map(|it| {
            it.filter_map(|d| d.id().ok().map(|i| i.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The `avsd devices` text: each device, its supported rates, formats and channels, and a
/// config line that would work for it.
pub fn report(devices: &[DeviceInfo]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if devices.is_empty() {
        s.push_str("no audio devices found (no sound card? use input = \"wav:PATH\" / output = \"wav:PATH\")\n");
        return s;
    }
    for d in devices {
        let _ = writeln!(
            s,
            "{}  ({})",
            d.id,
            d.description.lines().next().unwrap_or("")
        );
        for (dir, ranges) in [("input", &d.input), ("output", &d.output)] {
            if ranges.is_empty() {
                let _ = writeln!(s, "  {dir}: not supported");
                continue;
            }
            for line in summarize(ranges) {
                let _ = writeln!(s, "  {dir}: {line}");
            }
            let is_input = dir == "input";
            if let Some(c) = choose_from(ranges, is_input, None, None) {
                let _ = writeln!(
                    s,
                    "  config: {dir} = \"{}\"  {dir}_rate = {}{}",
                    d.id,
                    c.rate,
                    if is_input {
                        format!("  input_channels = {}", c.channels)
                    } else {
                        String::new()
                    }
                );
            } else {
                let _ = writeln!(s, "  config: no {dir} configuration avsd can use");
            }
        }
    }
    s
}

/// One line per rate range: the channel counts and sample formats offered with it
/// (plug-type PCMs list every combination, which would be hundreds of lines).
fn summarize(ranges: &[ConfigRange]) -> Vec<String> {
    let mut keys: Vec<(u32, u32)> = ranges.iter().map(|r| (r.min_rate, r.max_rate)).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .map(|(lo, hi)| {
            let mut chans: Vec<u16> = ranges
                .iter()
                .filter(|r| (r.min_rate, r.max_rate) == (lo, hi))
                .map(|r| r.channels)
                .collect();
            chans.sort_unstable();
            chans.dedup();
            let mut formats: Vec<&str> = ranges
                .iter()
                .filter(|r| (r.min_rate, r.max_rate) == (lo, hi))
                .map(|r| r.sample_format.as_str())
                .collect();
            formats.sort_unstable();
            formats.dedup();
            let ch = match (chans.first(), chans.last()) {
                (Some(a), Some(b)) if a == b => format!("{a}"),
                (Some(a), Some(b)) if usize::from(b - a) + 1 == chans.len() => format!("{a}-{b}"),
                _ => chans
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            };
            let rate = if lo == hi {
                format!("{lo} Hz")
            } else {
                format!("{lo}-{hi} Hz")
            };
            format!("{ch} ch, {rate}, {}", formats.join(" "))
        })
        .collect()
}

/// A configuration chosen from a device's ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chosen {
    pub rate: u32,
    pub channels: u16,
    pub format: SampleFormatKind,
}

/// The sample formats the callbacks are instantiated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormatKind {
    I16,
    F32,
    I32,
    U16,
}

impl SampleFormatKind {
    fn name(self) -> &'static str {
        match self {
            Self::I16 => "i16",
            Self::F32 => "f32",
            Self::I32 => "i32",
            Self::U16 => "u16",
        }
    }
}

const FORMAT_PREF: [SampleFormatKind; 4] = [
    SampleFormatKind::I16,
    SampleFormatKind::F32,
    SampleFormatKind::I32,
    SampleFormatKind::U16,
];
const INPUT_RATES: [u32; 7] = [16_000, 48_000, 44_100, 32_000, 24_000, 22_050, 8_000];
const OUTPUT_RATES: [u32; 6] = [48_000, 44_100, 24_000, 32_000, 22_050, 16_000];

fn choose_from(
    ranges: &[ConfigRange],
    input: bool,
    want_rate: Option<u32>,
    want_ch: Option<u16>,
) -> Option<Chosen> {
    let pref_ch: &[u16] = if input { &[1, 2] } else { &[2, 1] };
    let mut channels: Vec<u16> = match want_ch {
        Some(c) => vec![c],
        None => pref_ch.to_vec(),
    };
    if want_ch.is_none() {
        let mut others: Vec<u16> = ranges
            .iter()
            .map(|r| r.channels)
            .filter(|c| !pref_ch.contains(c))
            .collect();
        others.sort_unstable();
        channels.extend(others);
    }
    let rates: Vec<u32> = match want_rate {
        Some(r) => vec![r],
        None => (if input {
            &INPUT_RATES[..]
        } else {
            &OUTPUT_RATES[..]
        })
        .to_vec(),
    };
    for ch in &channels {
        for rate in &rates {
            for fmt in FORMAT_PREF {
                if ranges.iter().any(|r| {
                    r.channels == *ch
                        && r.min_rate <= *rate
                        && *rate <= r.max_rate
                        && r.sample_format == fmt.name()
                }) {
                    return Some(Chosen {
                        rate: *rate,
                        channels: *ch,
                        format: fmt,
                    });
                }
            }
        }
    }
    if want_rate.is_none() {
        // A device with none of the usual rates: take its own rate, clamped into range.
        for ch in &channels {
            for fmt in FORMAT_PREF {
                if let Some(r) = ranges
                    .iter()
                    .find(|r| r.channels == *ch && r.sample_format == fmt.name())
                {
                    return Some(Chosen {
                        rate: r.max_rate.min(48_000).max(r.min_rate),
                        channels: *ch,
                        format: fmt,
                    });
                }
            }
        }
    }
    None
}

/// What the id string in the config means.
enum DeviceSpec {
    None,
    Wav(PathBuf),
    Cpal(DeviceId),
}

fn parse_spec(id: &str) -> Result<DeviceSpec, AudioError> {
    if id == "none" {
        return Ok(DeviceSpec::None);
    }
    if let Some(path) = id.strip_prefix("wav:") {
        if path.is_empty() {
            return Err(AudioError::InvalidDeviceId {
                id: id.to_owned(),
                reason: "empty WAV path".into(),
            });
        }
        return Ok(DeviceSpec::Wav(PathBuf::from(path)));
    }
    id.parse::<DeviceId>()
        .map(DeviceSpec::Cpal)
        .map_err(|e| AudioError::InvalidDeviceId {
            id: id.to_owned(),
            reason: e.to_string(),
        })
}

fn find_device(id: &str, dev_id: &DeviceId) -> Result<cpal::Device, AudioError> {
    let host = cpal::host_from_id(dev_id.host()).map_err(|e| AudioError::InvalidDeviceId {
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    host.device_by_id(dev_id)
        .ok_or_else(|| AudioError::DeviceNotFound {
            id: id.to_owned(),
            available: device_ids(),
        })
}

/// A running device stream, or the thread standing in for one.
pub(crate) enum Backend {
    Cpal(cpal::Stream),
    Thread {
        handle: JoinHandle<()>,
        stop: Arc<AtomicBool>,
        /// The thread parks while this is set (see `wavdev::paced`).
        paused: Arc<AtomicBool>,
    },
    /// No stream: the device was lost and is not open again yet.
    Closed,
}

impl Backend {
    /// A real device stream (the only kind that can be lost: the threads are ours).
    pub(crate) fn is_cpal(&self) -> bool {
        matches!(self, Backend::Cpal(_))
    }

    pub(crate) fn play(&self, id: &str) -> Result<(), AudioError> {
        match self {
            Backend::Cpal(s) => s.play().map_err(|source| AudioError::OpenFailed {
                id: id.to_owned(),
                direction: "starting",
                source,
                available: device_ids(),
            }),
            Backend::Thread { handle, paused, .. } => {
                paused.store(false, Ordering::SeqCst);
                handle.thread().unpark();
                Ok(())
            }
            Backend::Closed => Ok(()),
        }
    }

    /// Stops the device's callbacks until `play`. Devices that cannot pause say so (cpal's
    /// `UnsupportedOperation`); the caller then leaves them running.
    pub(crate) fn pause(&self) -> Result<(), cpal::Error> {
        match self {
            Backend::Cpal(s) => s.pause(),
            Backend::Thread { paused, .. } => {
                paused.store(true, Ordering::SeqCst);
                Ok(())
            }
            Backend::Closed => Ok(()),
        }
    }

    pub(crate) fn close(self) {
        match self {
            Backend::Cpal(s) => drop(s),
            Backend::Thread { handle, stop, .. } => {
                stop.store(true, Ordering::SeqCst);
                handle.thread().unpark();
                if handle.join().is_err() {
                    tracing::error!("a wav device thread panicked");
                }
            }
            Backend::Closed => {}
        }
    }
}

pub(crate) struct OpenedInput {
    pub(crate) backend: Backend,
    pub(crate) consumer: rtrb::Consumer<f32>,
    pub(crate) info: StreamInfo,
}

pub(crate) struct OpenedOutput {
    pub(crate) backend: Backend,
    pub(crate) producer: rtrb::Producer<f32>,
    pub(crate) info: StreamInfo,
}

pub(crate) fn period_frames(rate: u32, period: Duration) -> u32 {
    ((u64::from(rate) * period.as_micros() as u64) / 1_000_000).max(1) as u32
}

/// Half a second of input, whole frames (so a frame never wraps around the ring's end).
pub(crate) fn input_ring(rate: u32, channels: u16) -> (rtrb::Producer<f32>, rtrb::Consumer<f32>) {
    rtrb::RingBuffer::new((rate as usize / 2).max(1024) * usize::from(channels.max(1)))
}

pub(crate) fn open_input(
    cfg: &AudioConfig,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
) -> Result<Option<OpenedInput>, AudioError> {
    match parse_spec(&cfg.input)? {
        DeviceSpec::None => Ok(None),
        DeviceSpec::Wav(path) => wavdev::open_wav_input(cfg, &path, counters, shutdown).map(Some),
        DeviceSpec::Cpal(dev_id) => open_cpal_input(cfg, &dev_id, counters).map(Some),
    }
}

/// Which way a stream goes; the parts of opening one that differ by direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

/// A cpal device and the configuration chosen for it, before the stream is built.
struct CpalPlan {
    device: cpal::Device,
    chosen: Chosen,
    frames: u32,
    config: StreamConfig,
}

/// Finds the device, lists what it supports in `dir` and picks a configuration.
fn plan_cpal(
    id: &str,
    dev_id: &DeviceId,
    dir: Direction,
    want_rate: Option<u32>,
    want_channels: Option<u16>,
    period: Duration,
) -> Result<CpalPlan, AudioError> {
    let device = find_device(id, dev_id)?;
    let open_failed = |source| AudioError::OpenFailed {
        id: id.to_owned(),
        direction: dir.name(),
        source,
        available: device_ids(),
    };
    let ranges: Vec<ConfigRange> = match dir {
        Direction::Input => device
            .supported_input_configs()
            .map_err(open_failed)?
            .map(|r| ConfigRange::from(&r))
            .collect(),
        Direction::Output => device
            .supported_output_configs()
            .map_err(open_failed)?
            .map(|r| ConfigRange::from(&r))
            .collect(),
    };
    let chosen = choose_from(&ranges, dir == Direction::Input, want_rate, want_channels)
        .ok_or_else(|| AudioError::NoUsableConfig {
            id: id.to_owned(),
            direction: dir.name(),
            wanted: format!("rate {want_rate:?}, channels {want_channels:?}"),
            supported: describe_ranges(&ranges),
            available: device_ids(),
        })?;
    let frames = period_frames(chosen.rate, period);
    let config = StreamConfig {
        channels: chosen.channels,
        sample_rate: chosen.rate,
        buffer_size: BufferSize::Fixed(frames),
    };
    Ok(CpalPlan {
        device,
        chosen,
        frames,
        config,
    })
}

/// The stream as built (or why not), logged and described.
fn finish_cpal(
    id: &str,
    dir: Direction,
    plan: &CpalPlan,
    built: Result<cpal::Stream, cpal::Error>,
) -> Result<(Backend, StreamInfo), AudioError> {
    let stream = built.map_err(|source| AudioError::OpenFailed {
        id: id.to_owned(),
        direction: dir.name(),
        source,
        available: device_ids(),
    })?;
    let c = plan.chosen;
    let granted = stream.buffer_size().unwrap_or(0);
    tracing::info!(device = %id, direction = dir.name(), rate = c.rate, channels = c.channels,
        format = c.format.name(), requested_period_frames = plan.frames,
        granted_period_frames = granted, "device open");
    Ok((
        Backend::Cpal(stream),
        StreamInfo {
            device: id.to_owned(),
            rate: c.rate,
            channels: c.channels,
            sample_format: c.format.name().to_owned(),
            requested_period_frames: plan.frames,
            granted_period_frames: granted,
        },
    ))
}

fn open_cpal_input(
    cfg: &AudioConfig,
    dev_id: &DeviceId,
    counters: Arc<Counters>,
) -> Result<OpenedInput, AudioError> {
    let dir = Direction::Input;
    let plan = plan_cpal(
        &cfg.input,
        dev_id,
        dir,
        cfg.input_rate,
        cfg.input_channels,
        cfg.period,
    )?;
    let (producer, consumer) = input_ring(plan.chosen.rate, plan.chosen.channels);
    let cb = InputCallback::new(producer, plan.chosen.channels, counters.clone());
    let err_fn = stream_error_handler(counters, dir, |c| &c.input_overruns, |c| &c.input_lost);
    let (d, config) = (&plan.device, plan.config);
    let built = match plan.chosen.format {
        SampleFormatKind::I16 => build_input::<i16>(d, config, cb, err_fn),
        SampleFormatKind::F32 => build_input::<f32>(d, config, cb, err_fn),
        SampleFormatKind::I32 => build_input::<i32>(d, config, cb, err_fn),
        SampleFormatKind::U16 => build_input::<u16>(d, config, cb, err_fn),
    };
    let (backend, info) = finish_cpal(&cfg.input, dir, &plan, built)?;
    Ok(OpenedInput {
        backend,
        consumer,
        info,
    })
}

fn build_input<T>(
    device: &cpal::Device,
    config: StreamConfig,
    mut cb: InputCallback,
    err_fn: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: cpal::FromSample<T>,
{
    device.build_input_stream::<T, _, _>(
        config,
        move |data: &[T], _| cb.process(data),
        err_fn,
        None,
    )
}

fn build_output<T>(
    device: &cpal::Device,
    config: StreamConfig,
    mut cb: OutputCallback,
    err_fn: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + cpal::FromSample<f32>,
{
    device.build_output_stream::<T, _, _>(
        config,
        move |data: &mut [T], _| cb.process(data),
        err_fn,
        None,
    )
}

fn list_ids(ids: &[String]) -> String {
    if ids.is_empty() {
        "(none)".into()
    } else {
        ids.join(", ")
    }
}

fn describe_ranges(ranges: &[ConfigRange]) -> String {
    if ranges.is_empty() {
        return "nothing".into();
    }
    ranges
        .iter()
        .map(|r| {
            format!(
                "{} ch {}-{} Hz {}",
                r.channels, r.min_rate, r.max_rate, r.sample_format
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Output ring: generous capacity (the mixer decides the fill level, which sets latency).
pub(crate) fn output_ring(
    period_frames: u32,
    channels: u16,
) -> (rtrb::Producer<f32>, rtrb::Consumer<f32>) {
    let frames = (period_frames as usize * 8).max(8192);
    rtrb::RingBuffer::new(frames * usize::from(channels.max(1)))
}

/// Opens the output device. The callback scales by `master_gain`, which outlives a reopened
/// stream (the playback handle sets it). `channels` pins the channel count (a reopen must
/// match the mixer; `None` lets the device choose).
pub(crate) fn open_output(
    cfg: &AudioConfig,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
    master_gain: Arc<AtomicU32>,
    channels: Option<u16>,
) -> Result<OpenedOutput, AudioError> {
    match parse_spec(&cfg.output)? {
        DeviceSpec::None => Err(AudioError::InvalidDeviceId {
            id: cfg.output.clone(),
            reason: "output cannot be \"none\"; use \"wav:/dev/null\" to discard audio".into(),
        }),
        DeviceSpec::Wav(path) => {
            wavdev::open_wav_output(cfg, &path, counters, shutdown, master_gain)
        }
        DeviceSpec::Cpal(dev_id) => open_cpal_output(cfg, &dev_id, counters, master_gain, channels),
    }
}

fn open_cpal_output(
    cfg: &AudioConfig,
    dev_id: &DeviceId,
    counters: Arc<Counters>,
    master_gain: Arc<AtomicU32>,
    channels: Option<u16>,
) -> Result<OpenedOutput, AudioError> {
    let dir = Direction::Output;
    let plan = plan_cpal(
        &cfg.output,
        dev_id,
        dir,
        cfg.output_rate,
        channels,
        cfg.period,
    )?;
    let (producer, consumer) = output_ring(plan.frames, plan.chosen.channels);
    let cb = OutputCallback::new(
        consumer,
        plan.chosen.channels,
        plan.chosen.rate,
        master_gain,
        counters.clone(),
    );
    let err_fn = stream_error_handler(counters, dir, |c| &c.output_underruns, |c| &c.output_lost);
    let (d, config) = (&plan.device, plan.config);
    let built = match plan.chosen.format {
        SampleFormatKind::I16 => build_output::<i16>(d, config, cb, err_fn),
        SampleFormatKind::F32 => build_output::<f32>(d, config, cb, err_fn),
        SampleFormatKind::I32 => build_output::<i32>(d, config, cb, err_fn),
        SampleFormatKind::U16 => build_output::<u16>(d, config, cb, err_fn),
    };
    let (backend, info) = finish_cpal(&cfg.output, dir, &plan, built)?;
    Ok(OpenedOutput {
        backend,
        producer,
        info,
    })
}

/// The error callback of a cpal stream (it runs on cpal's stream thread, not in the audio
/// callback): xruns bump the direction's counter; an error that ends the stream (unplugged,
/// server gone) raises the direction's `lost` flag for the thread that owns the stream, which
/// logs it and reopens the device; anything else is counted and logged.
fn stream_error_handler(
    counters: Arc<Counters>,
    dir: Direction,
    xruns: fn(&Counters) -> &AtomicU64,
    lost: fn(&Counters) -> &AtomicBool,
) -> impl FnMut(cpal::Error) + Send + 'static {
    move |e: cpal::Error| match e.kind() {
        cpal::ErrorKind::Xrun => {
            xruns(&counters).fetch_add(1, Ordering::Relaxed);
        }
        cpal::ErrorKind::DeviceNotAvailable
        | cpal::ErrorKind::HostUnavailable
        | cpal::ErrorKind::StreamInvalidated => {
            counters.stream_errors.fetch_add(1, Ordering::Relaxed);
            lost(&counters).store(true, Ordering::Release);
        }
        _ => {
            counters.stream_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, direction = dir.name(), "stream error");
        }
    }
}

/// Every device id that exists now, for the "device lost" log line.
pub(crate) fn existing_devices() -> String {
    list_ids(&device_ids())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(ch: u16, min: u32, max: u32, f: &str) -> ConfigRange {
        ConfigRange {
            channels: ch,
            min_rate: min,
            max_rate: max,
            sample_format: f.into(),
        }
    }

    #[test]
    fn prefers_16k_mono_i16_for_input() {
        let r = [
            range(2, 8000, 192_000, "f32"),
            range(1, 8000, 192_000, "i16"),
            range(2, 8000, 192_000, "i16"),
        ];
        assert_eq!(
            choose_from(&r, true, None, None),
            Some(Chosen {
                rate: 16_000,
                channels: 1,
                format: SampleFormatKind::I16
            })
        );
    }

    #[test]
    fn hw_device_with_fixed_rate_and_two_channels() {
        let r = [range(2, 48_000, 48_000, "i32")];
        assert_eq!(
            choose_from(&r, true, None, None),
            Some(Chosen {
                rate: 48_000,
                channels: 2,
                format: SampleFormatKind::I32
            })
        );
        assert_eq!(choose_from(&r, true, Some(16_000), None), None);
        let odd = [range(2, 96_000, 96_000, "i16")];
        assert_eq!(
            choose_from(&odd, false, None, None).map(|c| c.rate),
            Some(96_000)
        );
    }

    #[test]
    fn unknown_device_error_lists_what_exists() {
        let cfg = AudioConfig {
            output: "alsa:no_such_pcm_xyz".into(),
            ..AudioConfig::default()
        };
        let err = match open_output(
            &cfg,
            Counters::new(),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU32::new(0)),
            None,
        ) {
            Err(e) => e,
            Ok(_) => panic!("opened a device that does not exist"),
        };
        let msg = err.to_string();
        assert!(msg.contains("no_such_pcm_xyz"), "{msg}");
        assert!(msg.contains("devices that exist"), "{msg}");
    }

    #[test]
    fn report_has_a_config_line() {
        let d = DeviceInfo {
            id: "alsa:hw:0,0".into(),
            description: "Card".into(),
            input: vec![range(2, 48_000, 48_000, "i16")],
            output: vec![range(2, 44_100, 48_000, "i16")],
        };
        let text = report(&[d]);
        assert!(
            text.contains("input = \"alsa:hw:0,0\"  input_rate = 48000  input_channels = 2"),
            "{text}"
        );
        assert!(
            text.contains("output = \"alsa:hw:0,0\"  output_rate = 48000"),
            "{text}"
        );
    }
}
