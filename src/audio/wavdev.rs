//! The `wav:PATH` stand-in devices: a WAV file played as the mic (paced in real time, then
//! silence) and a WAV file that receives everything played (paced in real time). Each is a plain
//! thread with a clock that runs the very same callback bodies as a cpal stream, for demos, tests
//! and machines without sound hardware.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::capture::InputCallback;
use super::devices::{Backend, OpenedInput, OpenedOutput, input_ring, output_ring, period_frames};
use super::mixer::OutputCallback;
use super::{AudioConfig, AudioError, Counters, StreamInfo};

/// Rate of the `wav:PATH` output when `output_rate` is not set.
pub const WAV_OUTPUT_DEFAULT_RATE: u32 = 48_000;
/// The `wav:PATH` output is mono.
pub const WAV_OUTPUT_CHANNELS: u16 = 1;

/// Runs `tick` every `period` on an absolute schedule until `stop` (or `tick` returns false).
/// While `paused` the thread parks (no wakeups); on resume `resumed` gets the time it was
/// paused (so the file keeps the wall-clock timeline) and the schedule restarts, with a tick at
/// once if `tick_at_resume` (an output device wants data as soon as it runs; an input device
/// has a period to record first).
fn paced(
    period: Duration,
    stop: &AtomicBool,
    paused: &AtomicBool,
    tick_at_resume: bool,
    mut resumed: impl FnMut(Duration),
    mut tick: impl FnMut() -> bool,
) {
    let mut start = Instant::now();
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        if paused.load(Ordering::SeqCst) {
            let since = Instant::now();
            while paused.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                std::thread::park();
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            resumed(since.elapsed());
            start = Instant::now();
            n = 0;
            if tick_at_resume && !tick() {
                break;
            }
            continue;
        }
        n = n.saturating_add(1);
        let deadline = start + period * n;
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        if !tick() {
            break;
        }
    }
}

fn read_wav_f32(path: &Path) -> Result<(Vec<f32>, u32, u16), AudioError> {
    let wav_err = |source| AudioError::WavFile {
        path: path.display().to_string(),
        source,
    };
    let mut reader = hound::WavReader::open(path).map_err(wav_err)?;
    let spec = reader.spec();
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(wav_err)?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(wav_err)?
        }
    };
    Ok((samples, spec.sample_rate, spec.channels))
}

pub(crate) fn open_wav_input(
    cfg: &AudioConfig,
    path: &Path,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
) -> Result<OpenedInput, AudioError> {
    let (samples, rate, channels) = read_wav_f32(path)?;
    let frames = period_frames(rate, cfg.period) as usize;
    let (producer, consumer) = input_ring(rate, channels);
    let mut cb = InputCallback::new(producer, channels, counters);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let paused = Arc::new(AtomicBool::new(false));
    let paused2 = paused.clone();
    let period = cfg.period;
    let block = frames * usize::from(channels);
    let ch = usize::from(channels.max(1));
    let handle = std::thread::Builder::new()
        .name("avsd-wav-in".into())
        .spawn(move || {
            let silence = vec![0.0f32; block];
            // The file goes on "playing" while the mic is paused, as the world does.
            let pos = std::cell::Cell::new(0usize);
            paced(
                period,
                &stop2,
                &paused2,
                false,
                |gap| {
                    let frames = (gap.as_secs_f64() * f64::from(rate)) as usize;
                    pos.set(pos.get().saturating_add(frames.saturating_mul(ch)));
                },
                || {
                    if shutdown.load(Ordering::Relaxed) {
                        return false;
                    }
                    let p = pos.get();
                    if p < samples.len() {
                        let end = (p + block).min(samples.len());
                        cb.process(&samples[p..end]);
                        if end - p < block {
                            cb.process(&silence[..block - (end - p)]);
                        }
                        pos.set(end);
                    } else {
                        cb.process(&silence);
                    }
                    true
                },
            );
        })
        .map_err(|source| AudioError::Thread {
            name: "wav-in",
            source,
        })?;
    tracing::info!(path = %path.display(), rate, channels, "WAV file open as the mic");
    Ok(OpenedInput {
        backend: Backend::Thread {
            handle,
            stop,
            paused,
        },
        consumer,
        info: StreamInfo {
            device: cfg.input.clone(),
            rate,
            channels,
            sample_format: "f32".into(),
            requested_period_frames: frames as u32,
            granted_period_frames: frames as u32,
        },
    })
}

/// An output device played by one of our threads: a ring and the output callback as for a cpal
/// stream, handed to `run` with the thread's stop and pause flags.
fn thread_output(
    name: &'static str,
    rate: u32,
    channels: u16,
    period: Duration,
    counters: Arc<Counters>,
    master_gain: Arc<AtomicU32>,
    run: impl FnOnce(OutputCallback, &AtomicBool, &AtomicBool) + Send + 'static,
) -> Result<(Backend, rtrb::Producer<f32>), AudioError> {
    let frames = period_frames(rate, period);
    let (producer, consumer) = output_ring(frames, channels);
    let cb = OutputCallback::new(consumer, channels, rate, master_gain, counters);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let paused = Arc::new(AtomicBool::new(false));
    let paused2 = paused.clone();
    let handle = std::thread::Builder::new()
        .name(format!("avsd-{name}"))
        .spawn(move || run(cb, &stop2, &paused2))
        .map_err(|source| AudioError::Thread { name, source })?;
    Ok((
        Backend::Thread {
            handle,
            stop,
            paused,
        },
        producer,
    ))
}

pub(crate) fn open_wav_output(
    cfg: &AudioConfig,
    path: &Path,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
    master_gain: Arc<AtomicU32>,
) -> Result<OpenedOutput, AudioError> {
    let rate = cfg.output_rate.unwrap_or(WAV_OUTPUT_DEFAULT_RATE);
    let channels = WAV_OUTPUT_CHANNELS;
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let wav_err = |source| AudioError::WavFile {
        path: path.display().to_string(),
        source,
    };
    let writer = hound::WavWriter::create(path, spec).map_err(wav_err)?;
    let frames = period_frames(rate, cfg.period);
    let period = cfg.period;
    let path_s = path.display().to_string();
    let run = move |mut cb: OutputCallback, stop: &AtomicBool, paused: &AtomicBool| {
        let mut buf = vec![0i16; frames as usize * usize::from(channels)];
        let mut ticks = 0u32;
        let failed = std::cell::Cell::new(false);
        let writer = std::cell::RefCell::new(writer);
        paced(
            period,
            stop,
            paused,
            true,
            |gap| {
                // Silence for the paused time keeps the file on the wall clock.
                let samples = (gap.as_secs_f64() * f64::from(rate)) as u64 * u64::from(channels);
                let mut w = writer.borrow_mut();
                for _ in 0..samples {
                    if w.write_sample(0i16).is_err() {
                        failed.set(true);
                        break;
                    }
                }
            },
            || {
                if failed.get() {
                    return false;
                }
                let mut writer = writer.borrow_mut();
                if shutdown.load(Ordering::Relaxed) {
                    return false;
                }
                cb.process(&mut buf);
                for s in &buf {
                    if let Err(e) = writer.write_sample(*s) {
                        tracing::error!(path = %path_s, error = %e, "cannot write the WAV output");
                        failed.set(true);
                        return false;
                    }
                }
                ticks += 1;
                // Keep the header valid for readers while we run (about every second).
                if ticks.is_multiple_of(100) && writer.flush().is_err() {
                    failed.set(true);
                    return false;
                }
                true
            },
        );
        if !failed.get()
            && let Err(e) = writer.into_inner().finalize()
        {
            tracing::error!(path = %path_s, error = %e, "cannot finalize the WAV output");
        }
    };
    let (backend, producer) = thread_output(
        "wav-out",
        rate,
        channels,
        period,
        counters,
        master_gain,
        run,
    )?;
    tracing::info!(path = %path.display(), rate, channels, "WAV file open as the speaker");
    Ok(OpenedOutput {
        backend,
        producer,
        info: StreamInfo {
            device: cfg.output.clone(),
            rate,
            channels,
            sample_format: "i16".into(),
            requested_period_frames: frames,
            granted_period_frames: frames,
        },
    })
}

/// Stands in for a lost output device: the output callback body run by a thread paced in real
/// time, its samples thrown away. The mixer keeps its clock, so sources play to their end
/// (unheard) and their owners get Progress and Finished on time while the device is reopened.
pub(crate) fn open_void_output(
    info: &StreamInfo,
    period: Duration,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
    master_gain: Arc<AtomicU32>,
) -> Result<OpenedOutput, AudioError> {
    let (rate, channels) = (info.rate, info.channels);
    let frames = period_frames(rate, period);
    let run = move |mut cb: OutputCallback, stop: &AtomicBool, paused: &AtomicBool| {
        let mut buf = vec![0f32; frames as usize * usize::from(channels.max(1))];
        paced(
            period,
            stop,
            paused,
            true,
            |_| {},
            || {
                if shutdown.load(Ordering::Relaxed) {
                    return false;
                }
                cb.process(&mut buf);
                true
            },
        );
    };
    let (backend, producer) = thread_output(
        "void-out",
        rate,
        channels,
        period,
        counters,
        master_gain,
        run,
    )?;
    Ok(OpenedOutput {
        backend,
        producer,
        info: StreamInfo {
            device: info.device.clone(),
            rate,
            channels,
            sample_format: "none".into(),
            requested_period_frames: frames,
            granted_period_frames: frames,
        },
    })
}
