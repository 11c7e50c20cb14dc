//! The capture path: the input callback body (copy into a ring, count what did not fit), the
//! capture thread (channel pick or downmix, resample to 16 kHz, s16le, 10 ms frames, a 500 ms
//! pre-roll) and the handle a listener (SpeechRecognizer, a wake word engine) opens the mic with.
//! It does not decide when to listen.
//!
//! Unless the mic is kept open for the pre-roll (`AudioConfig::keep_mic_open`, for a wake word
//! engine), the capture thread pauses the input device and parks while nobody listens, and
//! `open` wakes it: an idle daemon costs no capture wakeups.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpal::{FromSample, Sample};
use tokio::sync::mpsc;

use super::devices::{self, Backend, OpenedInput};
use super::recovery::{Direction, Health, Verdict, report_back, report_lost};
use super::resample::StreamResampler;
use super::{
    AudioConfig, AudioError, CAPTURE_FRAME_SAMPLES, CAPTURE_RATE, Counters, LossReporter,
    PREROLL_FRAMES, SharedInfo,
};

/// Frames the listener's channel holds (1 s); a slower listener then loses the oldest frames
/// of a further second of backlog, counted in `capture_dropped_frames`.
const LISTENER_QUEUE_FRAMES: usize = 100;
const LISTENER_BACKLOG_FRAMES: usize = 100;
/// How often the capture thread drains the input ring while the mic runs.
const CAPTURE_TICK: Duration = Duration::from_millis(5);
/// How often it empties the ring of a device that cannot pause while nobody listens (the
/// ring holds 500 ms, so nothing overruns).
const DISCARD_TICK: Duration = Duration::from_millis(200);

/// The body of the input device callback: copies interleaved samples (as f32) into the capture
/// ring, whole frames only, and counts what did not fit. No allocation, lock or syscall.
pub struct InputCallback {
    producer: rtrb::Producer<f32>,
    channels: usize,
    counters: Arc<Counters>,
}

impl InputCallback {
    pub fn new(producer: rtrb::Producer<f32>, channels: u16, counters: Arc<Counters>) -> Self {
        Self {
            producer,
            channels: usize::from(channels.max(1)),
            counters,
        }
    }

    pub fn process<T>(&mut self, data: &[T])
    where
        T: Sample,
        f32: FromSample<T>,
    {
        let c = &self.counters;
        c.input_callbacks.fetch_add(1, Ordering::Relaxed);
        c.input_period_frames
            .store((data.len() / self.channels) as u32, Ordering::Relaxed);
        let room = self.producer.slots();
        let n = data.len().min(room);
        let n = n - n % self.channels;
        if n > 0
            && let Ok(chunk) = self.producer.write_chunk_uninit(n)
        {
            chunk.fill_from_iter(data[..n].iter().map(|s| f32::from_sample_(*s)));
        }
        if n < data.len() {
            c.input_overruns.fetch_add(1, Ordering::Relaxed);
            c.input_overrun_samples
                .fetch_add((data.len() - n) as u64, Ordering::Relaxed);
        }
    }
}

struct Listener {
    tx: mpsc::Sender<Bytes>,
    backlog: VecDeque<Bytes>,
}

struct CaptureState {
    preroll: VecDeque<Bytes>,
    listener: Option<Listener>,
}

/// State shared by the capture thread and every `CaptureHandle`.
pub struct CaptureShared {
    state: Mutex<CaptureState>,
    counters: Arc<Counters>,
    /// The capture thread, parked while the mic is paused.
    thread: OnceLock<std::thread::Thread>,
}

impl CaptureShared {
    pub(crate) fn new(counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(CaptureState {
                preroll: VecDeque::with_capacity(PREROLL_FRAMES),
                listener: None,
            }),
            counters,
            thread: OnceLock::new(),
        })
    }

    pub(crate) fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Whether a listener holds the mic open (forgets one whose receiver is gone).
    fn has_listener(&self) -> bool {
        let mut st = self.lock();
        if st.listener.as_ref().is_some_and(|l| l.tx.is_closed()) {
            st.listener = None;
        }
        st.listener.is_some()
    }

    /// Ends the listener's frames (its receiver sees the end): the mic is gone.
    fn close_listener(&self) {
        if self.lock().listener.take().is_some() {
            tracing::warn!("the mic is lost: the capture ends here");
        }
    }

    fn clear_preroll(&self) {
        self.lock().preroll.clear();
    }

    fn lock(&self) -> MutexGuard<'_, CaptureState> {
        // A panic while holding this lock leaves plain queues behind, still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the capture thread for each new frame.
    fn deliver(&self, frame: Bytes) {
        let mut st = self.lock();
        if st.preroll.len() == PREROLL_FRAMES {
            st.preroll.pop_front();
        }
        st.preroll.push_back(frame.clone());
        let Some(l) = st.listener.as_mut() else {
            return;
        };
        l.backlog.push_back(frame);
        if l.backlog.len() > LISTENER_BACKLOG_FRAMES {
            l.backlog.pop_front();
            self.counters
                .capture_dropped_frames
                .fetch_add(1, Ordering::Relaxed);
        }
        while let Some(f) = l.backlog.pop_front() {
            match l.tx.try_send(f) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(f)) => {
                    l.backlog.push_front(f);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::debug!("capture listener closed the mic");
                    st.listener = None;
                    break;
                }
            }
        }
    }
}

/// Opens the mic for one listener at a time.
#[derive(Clone)]
pub struct CaptureHandle {
    pub(crate) shared: Arc<CaptureShared>,
}

impl CaptureHandle {
    /// Frames of exactly 10 ms (320 bytes, 16 kHz s16le mono), starting with up to 500 ms of
    /// pre-roll when asked. Frames stop when the receiver is dropped. Opening again replaces the
    /// previous listener (its receiver ends). A slow reader loses the oldest frames, counted.
    pub fn open(&self, with_preroll: bool) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(LISTENER_QUEUE_FRAMES);
        let mut st = self.shared.lock();
        if with_preroll {
            for f in &st.preroll {
                // The queue is larger than the pre-roll, so this cannot be full.
                let _ = tx.try_send(f.clone());
            }
        }
        st.listener = Some(Listener {
            tx,
            backlog: VecDeque::new(),
        });
        drop(st);
        self.shared.wake();
        rx
    }

    /// Whether a listener currently holds the mic open.
    pub fn is_open(&self) -> bool {
        self.shared
            .lock()
            .listener
            .as_ref()
            .is_some_and(|l| !l.tx.is_closed())
    }
}

#[derive(Debug)]
pub(crate) enum CaptureSetupError {
    NoSuchChannel { channel: u16, channels: u16 },
}

/// Rates are validated by the device layer; an impossible ratio falls back to no resampling and
/// is logged rather than killing the mic.
fn capture_resampler(rate: u32) -> Option<StreamResampler> {
    match StreamResampler::new(rate, CAPTURE_RATE, 1, (rate / 100) as usize) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, "capture resampler unavailable; passing samples through");
            None
        }
    }
}

/// Turns device samples into 16 kHz frames on its own thread.
pub struct CaptureWorker {
    consumer: rtrb::Consumer<f32>,
    channels: usize,
    pick: Option<usize>,
    resampler: Option<StreamResampler>,
    shared: Arc<CaptureShared>,
    shutdown: Arc<AtomicBool>,
    mono: Vec<f32>,
    resampled: Vec<f32>,
    pending: Vec<i16>,
    device: Option<InputDevice>,
}

/// The input stream as the capture thread drives it.
struct InputDevice {
    backend: Backend,
    id: String,
    keep_open: bool,
    running: bool,
    /// The device cannot pause: it runs and its samples are thrown away while nobody listens.
    cannot_pause: bool,
    /// Whether the device is there; while it is lost there is no stream and no frames.
    health: Health,
    reopen: InputReopen,
    /// Tells the output's owner that this device was lost (see `Counters::output_suspect`).
    tell_output: Option<Box<dyn Fn() + Send>>,
}

/// What reopening the input device takes, and the stream info the engine reports.
pub(crate) struct InputReopen {
    pub(crate) cfg: AudioConfig,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) info: SharedInfo,
}

impl CaptureWorker {
    pub(crate) fn new(
        consumer: rtrb::Consumer<f32>,
        rate: u32,
        channels: u16,
        capture_channel: Option<u16>,
        shared: Arc<CaptureShared>,
        shutdown: Arc<AtomicBool>,
    ) -> Result<Self, CaptureSetupError> {
        if let Some(c) = capture_channel
            && c >= channels
        {
            return Err(CaptureSetupError::NoSuchChannel {
                channel: c,
                channels,
            });
        }
        Ok(Self {
            consumer,
            channels: usize::from(channels.max(1)),
            pick: capture_channel.map(usize::from),
            resampler: capture_resampler(rate),
            shared,
            shutdown,
            mono: Vec::new(),
            resampled: Vec::new(),
            pending: Vec::new(),
            device: None,
        })
    }

    /// Gives the worker its input stream: it runs only while a listener has the mic open,
    /// unless `keep_open` (pre-roll for a wake word).
    pub(crate) fn with_device(
        mut self,
        backend: Backend,
        keep_open: bool,
        reopen: InputReopen,
    ) -> Self {
        let count = self.shared.counters.input_callbacks.load(Ordering::Relaxed);
        self.device = Some(InputDevice {
            backend,
            id: reopen.cfg.input.clone(),
            keep_open,
            running: false,
            cannot_pause: false,
            health: Health::healthy(count, Instant::now()),
            reopen,
            tell_output: None,
        });
        self
    }

    /// What to call when the input is lost: the output may be on the same (dead) server.
    pub(crate) fn on_device_lost(&mut self, tell: Box<dyn Fn() + Send>) {
        if let Some(d) = self.device.as_mut() {
            d.tell_output = Some(tell);
        }
    }

    /// Starts the input stream (at engine start, so a device that cannot run is an error then).
    pub(crate) fn play_device(&self) -> Result<(), AudioError> {
        if let Some(d) = self.device.as_ref() {
            d.backend.play(&d.id)?;
        }
        Ok(())
    }

    pub(crate) fn run(mut self) {
        let _ = self.shared.thread.set(std::thread::current());
        if let Some(d) = self.device.as_mut() {
            d.running = true;
        }
        let mut overruns = LossReporter::new("input overrun samples");
        let mut dropped = LossReporter::new("capture frames dropped (slow listener)");
        while !self.shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            if let Some(retry) = self.check_device(now) {
                // No mic: whoever listens learns it now rather than waiting for frames.
                self.shared.close_listener();
                std::thread::park_timeout(retry);
                continue;
            }
            let wanted =
                self.device.as_ref().is_none_or(|d| d.keep_open) || self.shared.has_listener();
            self.switch_device(wanted);
            let running = self.device.as_ref().is_none_or(|d| d.running);
            if wanted {
                self.drain();
            } else if running {
                self.discard();
            }
            let c = &self.shared.counters;
            overruns.check(c.input_overrun_samples.load(Ordering::Relaxed));
            dropped.check(c.capture_dropped_frames.load(Ordering::Relaxed));
            if wanted {
                std::thread::park_timeout(CAPTURE_TICK);
            } else if running {
                std::thread::park_timeout(DISCARD_TICK);
            } else {
                // `open` and shutdown unpark us.
                std::thread::park();
            }
        }
        if let Some(d) = self.device.take() {
            d.backend.close();
        }
    }

    /// Declares the input lost when its stream said so or stopped calling back while running,
    /// and retries a lost one when due. Returns how long to wait for the next attempt while
    /// it stays lost.
    fn check_device(&mut self, now: Instant) -> Option<Duration> {
        let d = self.device.as_mut()?;
        if d.health.is_lost() {
            if d.health.retry_due(now) {
                self.reopen_device(now);
            }
            return self.device.as_ref().and_then(|d| d.health.retry_in(now));
        }
        if !d.backend.is_cpal() {
            return None;
        }
        let c = &self.shared.counters;
        let (flagged, suspect) = Direction::Input.take_signals(c);
        let callbacks = c.input_callbacks.load(Ordering::Relaxed);
        match d
            .health
            .verdict(callbacks, now, d.running, flagged, suspect)
        {
            Verdict::Fine => return None,
            Verdict::Lost(why) => {
                report_lost(Direction::Input, &d.id, why, c, d.tell_output.as_deref())
            }
            Verdict::Reopen => {
                tracing::info!(device = %d.id, "the output was lost: reopening the paused mic too");
            }
        }
        d.health.lose(now);
        // The dead stream goes now: closing it after its server came back can crash libjack.
        let dead = std::mem::replace(&mut d.backend, Backend::Closed);
        dead.close();
        d.running = false;
        self.shared.clear_preroll();
        d.health.retry_in(now)
    }

    /// Opens the configured input again; the new stream may have another rate or channel count.
    fn reopen_device(&mut self, now: Instant) {
        let Some(d) = self.device.as_mut() else {
            return;
        };
        let opened = devices::open_input(
            &d.reopen.cfg,
            self.shared.counters.clone(),
            d.reopen.shutdown.clone(),
        );
        let opened = match opened {
            Ok(Some(o)) if self.pick.is_none_or(|p| p < usize::from(o.info.channels)) => o,
            Ok(Some(o)) => {
                o.backend.close();
                d.health.retry_failed(now);
                tracing::debug!(device = %d.id, "input back without the capture channel");
                return;
            }
            Ok(None) => return,
            Err(e) => {
                d.health.retry_failed(now);
                tracing::debug!(device = %d.id, error = %e, retry_in = ?d.health.retry_in(now),
                    "audio device still lost");
                return;
            }
        };
        let OpenedInput {
            backend,
            consumer,
            info,
        } = opened;
        let c = &self.shared.counters;
        report_back(Direction::Input, &d.id, &info, d.health.lost_for(now), c);
        d.backend = backend;
        d.running = false;
        d.cannot_pause = false;
        d.health = Health::healthy(c.input_callbacks.load(Ordering::Relaxed), now);
        self.consumer = consumer;
        self.channels = usize::from(info.channels.max(1));
        self.resampler = capture_resampler(info.rate);
        self.pending.clear();
        *d.reopen.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
    }

    /// Runs or pauses the input device to match whether anyone listens.
    fn switch_device(&mut self, wanted: bool) {
        let Some(d) = self.device.as_mut() else {
            return;
        };
        if wanted == d.running || (!wanted && d.cannot_pause) {
            return;
        }
        if wanted {
            // What sat in the ring since the pause is not what the listener asked for.
            let stale = self.consumer.slots();
            if let Ok(chunk) = self.consumer.read_chunk(stale) {
                chunk.commit_all();
            }
            match d.backend.play(&d.id) {
                Ok(()) => {
                    d.running = true;
                    let count = self.shared.counters.input_callbacks.load(Ordering::Relaxed);
                    d.health.restart_watch(count, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot resume the mic");
                    // Lost at the next check: the stream is reopened.
                    self.shared
                        .counters
                        .input_lost
                        .store(true, Ordering::Release);
                }
            }
        } else {
            match d.backend.pause() {
                Ok(()) => {
                    d.running = false;
                    // The pre-roll would be stale by the time someone listens again.
                    self.shared.clear_preroll();
                    tracing::debug!(device = %d.id, "nobody listens: mic paused");
                }
                Err(e) => {
                    d.cannot_pause = true;
                    tracing::info!(device = %d.id, error = %e, "the mic cannot pause; it keeps running while nobody listens");
                }
            }
        }
    }

    /// Throws away what a running device captured while nobody listens.
    fn discard(&mut self) {
        let n = self.consumer.slots();
        if let Ok(chunk) = self.consumer.read_chunk(n) {
            chunk.commit_all();
        }
    }

    /// Moves everything in the ring through the pipeline. Public for benches.
    pub fn drain(&mut self) {
        let avail = self.consumer.slots();
        let n = avail - avail % self.channels;
        if n == 0 {
            return;
        }
        self.mono.clear();
        if let Ok(chunk) = self.consumer.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            // A frame never straddles the two slices: both lengths are whole frames because
            // the callback writes and we read whole frames only.
            for part in [a, b] {
                for frame in part.chunks_exact(self.channels) {
                    let v = match self.pick {
                        Some(i) => frame[i],
                        None => frame.iter().sum::<f32>() / self.channels as f32,
                    };
                    self.mono.push(v);
                }
            }
            chunk.commit_all();
        }
        self.resampled.clear();
        match self.resampler.as_mut() {
            Some(r) => {
                if let Err(e) = r.push(&self.mono, &mut self.resampled) {
                    tracing::warn!(error = %e, "capture resampling failed; dropping a block");
                }
            }
            None => self.resampled.extend_from_slice(&self.mono),
        }
        self.pending.extend(
            self.resampled
                .iter()
                .map(|s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16),
        );
        let whole = self.pending.len() / CAPTURE_FRAME_SAMPLES;
        for i in 0..whole {
            let samples = &self.pending[i * CAPTURE_FRAME_SAMPLES..(i + 1) * CAPTURE_FRAME_SAMPLES];
            let mut bytes = Vec::with_capacity(CAPTURE_FRAME_SAMPLES * 2);
            for s in samples {
                bytes.extend_from_slice(&s.to_le_bytes());
            }
            self.shared
                .counters
                .capture_frames
                .fetch_add(1, Ordering::Relaxed);
            self.shared.deliver(Bytes::from(bytes));
        }
        self.pending.drain(..whole * CAPTURE_FRAME_SAMPLES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(
        rate: u32,
        channels: u16,
        pick: Option<u16>,
    ) -> (rtrb::Producer<f32>, CaptureWorker, Arc<CaptureShared>) {
        let (p, c) = rtrb::RingBuffer::new(rate as usize * channels as usize);
        let counters = Counters::new();
        let shared = CaptureShared::new(counters);
        let w = CaptureWorker::new(
            c,
            rate,
            channels,
            pick,
            shared.clone(),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        (p, w, shared)
    }

    #[test]
    fn frames_are_320_bytes_and_preroll_is_capped() {
        let (p, mut w, shared) = worker(16_000, 1, None);
        let mut cb = InputCallback::new(p, 1, shared.counters.clone());
        let samples: Vec<i16> = (0..16_000).map(|i| (i % 100) as i16).collect();
        for chunk in samples.chunks(160) {
            cb.process(chunk);
            w.drain();
        }
        let handle = CaptureHandle {
            shared: shared.clone(),
        };
        let mut rx = handle.open(true);
        let mut n = 0;
        while let Ok(f) = rx.try_recv() {
            assert_eq!(f.len(), 320);
            n += 1;
        }
        assert_eq!(n, PREROLL_FRAMES);
        let mut rx2 = handle.open(false);
        assert!(rx2.try_recv().is_err());
        // the first listener was replaced: its channel is closed
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn picks_the_requested_channel() {
        let (p, mut w, shared) = worker(16_000, 2, Some(1));
        let mut cb = InputCallback::new(p, 2, shared.counters.clone());
        let rx_handle = CaptureHandle {
            shared: shared.clone(),
        };
        let mut rx = rx_handle.open(false);
        let data: Vec<i16> = (0..320).flat_map(|_| [0i16, 16384]).collect();
        cb.process(&data);
        w.drain();
        let f = rx.try_recv().unwrap();
        let s = i16::from_le_bytes([f[0], f[1]]);
        assert!((16380..=16388).contains(&s), "{s}");
    }

    #[test]
    fn slow_reader_loses_oldest_and_it_is_counted() {
        let (p, mut w, shared) = worker(16_000, 1, None);
        let mut cb = InputCallback::new(p, 1, shared.counters.clone());
        let rx_handle = CaptureHandle {
            shared: shared.clone(),
        };
        let _rx = rx_handle.open(false);
        let zeros = vec![0i16; 160];
        for _ in 0..(LISTENER_QUEUE_FRAMES + LISTENER_BACKLOG_FRAMES + 7) {
            cb.process(&zeros);
            w.drain();
        }
        assert_eq!(
            shared
                .counters
                .capture_dropped_frames
                .load(Ordering::Relaxed),
            7
        );
    }

    #[test]
    fn overrun_is_counted_not_silent() {
        let (p, c) = rtrb::RingBuffer::new(100);
        drop(c);
        let counters = Counters::new();
        let mut cb = InputCallback::new(p, 2, counters.clone());
        cb.process(&[0.0f32; 300]);
        assert_eq!(counters.input_overrun_samples.load(Ordering::Relaxed), 200);
        assert_eq!(counters.input_overruns.load(Ordering::Relaxed), 1);
    }
}
