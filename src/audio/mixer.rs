//! The mixer: the output callback body (copy from the output ring × a smoothed master gain,
//! silence and a counter on underrun) and the mixer thread, which plays each channel's queue of
//! sources one after another (gapless: the next source starts in the same period the previous
//! one ended), applies per-channel gains with a short ramp, keeps the output ring at a few
//! periods, and tells each source's owner when its samples actually reached the device.
//!
//! Idle cost and first-sample latency: with nothing to play the mixer lets the output ring run
//! dry (the callback then plays silence without counting an underrun), parks until a command or
//! a decoder's first PCM wakes it, and pauses the output device after a while (5 s default). A
//! source that arrives on an idle output starts as soon as two periods are decoded and goes
//! straight into the empty ring, so its first sample reaches the device at the next callback.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use cpal::{FromSample, Sample};
use tokio::sync::mpsc;

use super::decode::SourceShared;
use super::devices::{self, Backend, OpenedOutput};
use super::recovery::{Direction, Health, Verdict, report_back, report_lost};
use super::{AudioConfig, Channel, Counters, LossReporter, PlaybackUpdate, SharedInfo, SourceId};

/// Gain ramps (master, channel) take this long from one value to another.
pub const GAIN_RAMP: Duration = Duration::from_millis(5);
/// How far the mixer may grow its lead over the device after underruns (periods).
const MAX_EXTRA_PERIODS: usize = 7;
/// Progress updates at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Updates kept free in a source's channel for the ones that must not be dropped.
const RESERVED_UPDATE_SLOTS: usize = 4;
/// Default of `AudioConfig::output_idle_pause`: with nothing to play for this long the output
/// device is paused (resumed on the next source).
/// Long enough that a dialog's think time (end of speech → Speak, usually under 2 s) does not
/// pause it, short enough that an idle speaker costs no device wakeups.
pub const OUTPUT_IDLE_PAUSE: Duration = Duration::from_secs(5);

/// Wakes the mixer thread (a command, a decoder's first PCM or its end, shutdown). Unparking a
/// thread that is not parked only sets its token, so extra wakes cost an atomic swap.
#[derive(Clone, Debug, Default)]
pub(crate) struct MixerWaker(Arc<OnceLock<std::thread::Thread>>);

impl MixerWaker {
    pub(crate) fn wake(&self) {
        if let Some(t) = self.0.get() {
            t.unpark();
        }
    }

    fn register_current(&self) {
        let _ = self.0.set(std::thread::current());
    }
}

/// The body of the output device callback. No allocation, lock, log, channel send or syscall.
pub struct OutputCallback {
    consumer: rtrb::Consumer<f32>,
    channels: usize,
    master: Arc<AtomicU32>,
    gain: f32,
    step: f32,
    counters: Arc<Counters>,
}

impl OutputCallback {
    pub fn new(
        consumer: rtrb::Consumer<f32>,
        channels: u16,
        rate: u32,
        master: Arc<AtomicU32>,
        counters: Arc<Counters>,
    ) -> Self {
        let gain = f32::from_bits(master.load(Ordering::Relaxed));
        Self {
            consumer,
            channels: usize::from(channels.max(1)),
            master,
            gain,
            step: ramp_step(rate),
            counters,
        }
    }

    pub fn process<T>(&mut self, out: &mut [T])
    where
        T: Sample + FromSample<f32>,
    {
        let c = &self.counters;
        c.output_callbacks.fetch_add(1, Ordering::Relaxed);
        let frames = out.len() / self.channels;
        c.output_period_frames
            .store(frames as u32, Ordering::Relaxed);
        let target = f32::from_bits(self.master.load(Ordering::Relaxed));
        // Read before the ring: the mixer writes its data first and clears `idle` after.
        let idle = c.output_idle.load(Ordering::Acquire);
        let avail = self.consumer.slots();
        let n = out.len().min(avail);
        let n = n - n % self.channels;
        if let Ok(chunk) = self.consumer.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            let mut i = 0usize;
            for part in [a, b] {
                for s in part {
                    if i.is_multiple_of(self.channels) {
                        self.gain = approach(self.gain, target, self.step);
                    }
                    out[i] = T::from_sample_(*s * self.gain);
                    i += 1;
                }
            }
            chunk.commit_all();
        }
        for s in &mut out[n..] {
            *s = T::EQUILIBRIUM;
        }
        c.output_frames_consumed
            .fetch_add((n / self.channels) as u64, Ordering::Relaxed);
        if n < out.len() && !idle {
            c.output_underruns.fetch_add(1, Ordering::Relaxed);
            c.output_underrun_frames
                .fetch_add(((out.len() - n) / self.channels) as u64, Ordering::Relaxed);
        }
    }
}

fn ramp_step(rate: u32) -> f32 {
    1.0 / (GAIN_RAMP.as_secs_f32() * rate.max(1) as f32)
}

#[inline]
fn approach(current: f32, target: f32, step: f32) -> f32 {
    if (target - current).abs() <= step {
        target
    } else if target > current {
        current + step
    } else {
        current - step
    }
}

/// A source waiting or playing on a channel.
pub(crate) struct QueuedSource {
    pub(crate) id: SourceId,
    pub(crate) consumer: rtrb::Consumer<f32>,
    pub(crate) shared: Arc<SourceShared>,
    pub(crate) updates: mpsc::Sender<PlaybackUpdate>,
    started: bool,
    mixed_frames: u64,
    last_progress_frames: u64,
    stutter_since: Option<u64>,
}

impl QueuedSource {
    pub(crate) fn new(
        id: SourceId,
        consumer: rtrb::Consumer<f32>,
        shared: Arc<SourceShared>,
        updates: mpsc::Sender<PlaybackUpdate>,
    ) -> Self {
        Self {
            id,
            consumer,
            shared,
            updates,
            started: false,
            mixed_frames: 0,
            last_progress_frames: 0,
            stutter_since: None,
        }
    }
}

impl Drop for QueuedSource {
    fn drop(&mut self) {
        // Frees a decoder blocked on a full ring.
        self.shared.cancel.store(true, Ordering::Relaxed);
    }
}

pub(crate) enum MixerCommand {
    Enqueue {
        channel: Channel,
        source: QueuedSource,
    },
    Stop(SourceId),
    Pause(Channel),
    Resume(Channel),
    Gain(Channel, f32),
}

/// An update to deliver once the output clock reaches `at` (frames consumed by the device).
struct Marker {
    at: u64,
    id: SourceId,
    tx: mpsc::Sender<PlaybackUpdate>,
    update: PlaybackUpdate,
}

#[derive(Default)]
struct ChannelState {
    queue: VecDeque<QueuedSource>,
    paused: bool,
    gain: f32,
    target: f32,
}

/// The mixer thread's state.
pub(crate) struct Mixer {
    producer: rtrb::Producer<f32>,
    channels: usize,
    rate: u32,
    period_frames: usize,
    commands: Receiver<MixerCommand>,
    lanes: [ChannelState; 3],
    markers: VecDeque<Marker>,
    written: u64,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
    step: f32,
    start_frames: usize,
    seen_underruns: u64,
    extra_periods: usize,
    mix: Vec<f32>,
    lane_gain: Vec<f32>,
    waker: MixerWaker,
    /// The output device, paused after `pause_after` of silence (None in unit tests).
    output: Option<OutputDevice>,
    /// Since when nothing audible has been mixed (None while playing).
    idle_since: Option<Instant>,
}

/// The output device as the mixer drives it.
pub(crate) struct OutputDevice {
    pub(crate) backend: Backend,
    pub(crate) id: String,
    /// After this long idle the device is paused; `None`: never.
    pub(crate) pause_after: Option<Duration>,
    pub(crate) paused: bool,
    /// The device said it cannot pause: it keeps running (the callback plays silence).
    pub(crate) cannot_pause: bool,
    /// Whether the device is there; while it is lost `backend` is the void stand-in.
    health: Health,
    /// How to open it again after a loss.
    reopen: OutputReopen,
    /// Tells the input's owner that this device was lost (see `Counters::input_suspect`).
    tell_input: Option<Box<dyn Fn() + Send>>,
}

/// What reopening the output device takes: the config (rate pinned to the mixer's), the
/// master gain the playback handle sets, and the stream info the engine reports.
pub(crate) struct OutputReopen {
    pub(crate) cfg: AudioConfig,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) master_gain: Arc<AtomicU32>,
    pub(crate) info: SharedInfo,
}

fn send_update(tx: &mpsc::Sender<PlaybackUpdate>, update: PlaybackUpdate) {
    let droppable = matches!(update, PlaybackUpdate::Progress { .. });
    if droppable && tx.capacity() <= RESERVED_UPDATE_SLOTS {
        return;
    }
    if let Err(mpsc::error::TrySendError::Full(u)) = tx.try_send(update) {
        tracing::warn!(update = ?u, "playback update dropped: receiver not reading");
    }
}

fn frames_to_duration(frames: u64, rate: u32) -> Duration {
    Duration::from_secs_f64(frames as f64 / f64::from(rate.max(1)))
}

impl Mixer {
    pub(crate) fn new(
        producer: rtrb::Producer<f32>,
        channels: u16,
        rate: u32,
        period: Duration,
        commands: Receiver<MixerCommand>,
        counters: Arc<Counters>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        let period_frames = ((f64::from(rate) * period.as_secs_f64()) as usize).max(1);
        let mut lanes: [ChannelState; 3] = Default::default();
        for l in &mut lanes {
            l.gain = 1.0;
            l.target = 1.0;
        }
        Self {
            producer,
            channels: usize::from(channels.max(1)),
            rate,
            period_frames,
            commands,
            lanes,
            markers: VecDeque::new(),
            written: 0,
            counters,
            shutdown,
            step: ramp_step(rate),
            // Two periods in hand to start (was 100 ms): the ring is never padded with silence
            // behind a playing source while it holds `low_water` (see `step_once`), so the
            // decoder has a period's time after the first callback before it could stutter.
            // One period was tried: a debug build's first MP3 frames through the resampler
            // then stuttered now and then (tests/audio_playback.rs music test, 1 run in 3).
            start_frames: 2 * period_frames,
            seen_underruns: 0,
            extra_periods: 0,
            mix: Vec::new(),
            lane_gain: Vec::new(),
            waker: MixerWaker::default(),
            output: None,
            idle_since: Some(Instant::now()),
        }
    }

    pub(crate) fn waker(&self) -> MixerWaker {
        self.waker.clone()
    }

    /// Hands the (already playing) output device to the mixer, which pauses it when idle and
    /// closes it when the engine stops.
    pub(crate) fn set_output(
        &mut self,
        backend: Backend,
        id: String,
        pause_after: Option<Duration>,
        mut reopen: OutputReopen,
    ) {
        // A reopened device must take what the mixer, the decoders and the sources' rings were
        // set up for.
        reopen.cfg.output_rate = Some(self.rate);
        let count = self.counters.output_callbacks.load(Ordering::Relaxed);
        self.output = Some(OutputDevice {
            backend,
            id,
            pause_after,
            paused: false,
            cannot_pause: false,
            health: Health::healthy(count, Instant::now()),
            reopen,
            tell_input: None,
        });
    }

    /// What to call when the output is lost: the input may be on the same (dead) server.
    pub(crate) fn on_device_lost(&mut self, tell: Box<dyn Fn() + Send>) {
        if let Some(o) = self.output.as_mut() {
            o.tell_input = Some(tell);
        }
    }

    /// Declares the output lost when its stream said so or stopped calling back while it should
    /// run, and retries a lost one when due. Checked on the mixer's own wakeups: a healthy idle
    /// mixer adds none.
    fn check_output(&mut self, now: Instant) {
        let Some(o) = self.output.as_mut() else {
            return;
        };
        if o.health.is_lost() {
            if o.health.retry_due(now) {
                self.reopen_output(now);
            }
            return;
        }
        if !o.backend.is_cpal() {
            return;
        }
        let c = &self.counters;
        let (flagged, suspect) = Direction::Output.take_signals(c);
        let callbacks = c.output_callbacks.load(Ordering::Relaxed);
        match o
            .health
            .verdict(callbacks, now, !o.paused, flagged, suspect)
        {
            Verdict::Fine => {}
            Verdict::Lost(why) => self.lose_output(now, Some(why)),
            Verdict::Reopen => {
                tracing::info!(device = %o.id, "the input was lost: reopening the paused output too");
                self.lose_output(now, None);
            }
        }
    }

    /// Swaps the dead stream for the void stand-in, which keeps the mixer's clock running.
    /// `why` is None when the stream is only suspect (the input was lost, see
    /// `Counters::output_suspect`): then it is neither logged nor counted as a loss.
    fn lose_output(&mut self, now: Instant, why: Option<&'static str>) {
        let Some(o) = self.output.as_mut() else {
            return;
        };
        let info = o
            .reopen
            .info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(why) = why {
            let tell = o.tell_input.as_deref();
            report_lost(Direction::Output, &o.id, why, &self.counters, tell);
        }
        o.health.lose(now);
        let Some(info) = info else {
            return;
        };
        let period = o.reopen.cfg.period;
        match super::wavdev::open_void_output(
            &info,
            period,
            self.counters.clone(),
            o.reopen.shutdown.clone(),
            o.reopen.master_gain.clone(),
        ) {
            Ok(void) => self.swap_output(void),
            Err(e) => {
                // The clock then stands still until the device is back: sources wait. The dead
                // stream still goes now (see `swap_output`).
                tracing::error!(error = %e, "cannot stand in for the lost output device");
                if let Some(o) = self.output.as_mut() {
                    std::mem::replace(&mut o.backend, Backend::Closed).close();
                }
            }
        }
    }

    /// Tries the configured device again; on success it replaces the void stand-in.
    fn reopen_output(&mut self, now: Instant) {
        let Some(o) = self.output.as_mut() else {
            return;
        };
        let channels = self.channels as u16;
        let opened = devices::open_output(
            &o.reopen.cfg,
            self.counters.clone(),
            o.reopen.shutdown.clone(),
            o.reopen.master_gain.clone(),
            Some(channels),
        )
        .and_then(|new| {
            new.backend.play(&o.id)?;
            Ok(new)
        });
        match opened {
            Ok(new) => {
                let lost_for = o.health.lost_for(now);
                report_back(
                    Direction::Output,
                    &o.id,
                    &new.info,
                    lost_for,
                    &self.counters,
                );
                *o.reopen.info.lock().unwrap_or_else(|e| e.into_inner()) = Some(new.info.clone());
                self.swap_output(new);
                if let Some(o) = self.output.as_mut() {
                    let count = self.counters.output_callbacks.load(Ordering::Relaxed);
                    o.health = Health::healthy(count, now);
                }
            }
            Err(e) => {
                o.health.retry_failed(now);
                tracing::debug!(device = %o.id, error = %e, retry_in = ?o.health.retry_in(now),
                    "audio device still lost");
            }
        }
    }

    /// Puts `new` in place of the current output stream. What the old one had not played yet
    /// is dropped with its ring and counted as played, so the updates due for it still come.
    fn swap_output(&mut self, new: OpenedOutput) {
        let Some(o) = self.output.as_mut() else {
            new.backend.close();
            return;
        };
        let old = std::mem::replace(&mut o.backend, new.backend);
        // Closed first: its callback no longer moves the clock while we square it. A dead
        // stream must go before its server is back: closing it after a new stream reached the
        // new server crashed libjack (SIGSEGV, seen with the test rig).
        old.close();
        o.paused = false;
        o.cannot_pause = false;
        self.producer = new.producer;
        let consumed = self.counters.output_frames_consumed.load(Ordering::Relaxed);
        if self.written > consumed {
            self.counters
                .output_frames_consumed
                .fetch_add(self.written - consumed, Ordering::Relaxed);
        }
        self.seen_underruns = self.counters.output_underruns.load(Ordering::Relaxed);
    }

    /// How long until the lost output's next reopen attempt (`None` while it is healthy).
    fn retry_in(&self, now: Instant) -> Option<Duration> {
        self.output.as_ref().and_then(|o| o.health.retry_in(now))
    }

    /// Below this fill the device could find the ring short at its next callback: a playing
    /// source that has no data then gets silence (a stutter) rather than the device an underrun.
    /// One device period: the mixer looks at least twice per period, so once a callback has
    /// taken the ring below it there is still a period's time to pad. A source started with
    /// one period in hand thus gives its decoder a full period before it can stutter.
    fn low_water(&self) -> u64 {
        let granted = self.counters.output_period_frames.load(Ordering::Relaxed) as usize;
        self.period_frames.max(granted) as u64
    }

    /// How many frames the mixer keeps queued ahead of the device: three of our periods, or two
    /// of the device's callbacks if it asks for bigger blocks.
    /// Each underrun (the mixer was not scheduled in time, e.g. on a loaded CPU) adds one
    /// period, up to `MAX_EXTRA_PERIODS`: a few glitches, then a latency the machine can hold.
    fn target_fill(&mut self) -> u64 {
        let underruns = self.counters.output_underruns.load(Ordering::Relaxed);
        if underruns > self.seen_underruns {
            // The first callbacks of a stream may run before any data: not the mixer's fault.
            if self.counters.output_frames_consumed.load(Ordering::Relaxed) > 0
                && self.extra_periods < MAX_EXTRA_PERIODS
            {
                self.extra_periods += 1;
                tracing::debug!(
                    extra_periods = self.extra_periods,
                    underruns,
                    "output underrun; mixing further ahead"
                );
            }
            self.seen_underruns = underruns;
        }
        let granted = self.counters.output_period_frames.load(Ordering::Relaxed) as usize;
        let cap = self.producer.buffer().capacity() / self.channels;
        ((3 + self.extra_periods) * self.period_frames)
            .max(2 * granted)
            .min(cap) as u64
    }

    pub(crate) fn run(mut self) {
        self.waker.register_current();
        let period = self.period_frames as f64 / f64::from(self.rate);
        // A source about to start is timed finely (its Started is a latency figure); steady
        // playback only has to top the ring up well before it falls under `low_water`.
        let fine_tick = Duration::from_secs_f64((period / 4.0).clamp(0.001, 0.005));
        let tick = Duration::from_secs_f64((period / 2.0).clamp(0.001, 0.010));
        let mut underruns = LossReporter::new("output underrun frames");
        let mut stutters = LossReporter::new("stutters");
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
            match self.drain_commands() {
                Ok(()) => {}
                Err(()) => break,
            }
            self.check_output(Instant::now());
            self.step_once();
            underruns.check(self.counters.output_underrun_frames.load(Ordering::Relaxed));
            stutters.check(self.counters.stutters.load(Ordering::Relaxed));
            let wait = match self.idle_wait() {
                // Playing, or updates still due: follow the device clock.
                None if self.start_pending() => Some(fine_tick),
                None => Some(tick),
                Some(None) => None,
                Some(Some(d)) => Some(d),
            };
            // A lost device is retried on time, also while idle (only while it is lost).
            let wait = match (wait, self.retry_in(Instant::now())) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match wait {
                Some(d) => std::thread::park_timeout(d),
                None => std::thread::park(),
            }
        }
        if let Some(out) = self.output.take() {
            out.backend.close();
        }
        // Whoever still waits learns the source will not finish.
        for lane in &mut self.lanes {
            for s in lane.queue.drain(..) {
                send_update(
                    &s.updates,
                    PlaybackUpdate::Stopped {
                        offset: frames_to_duration(s.mixed_frames, self.rate),
                    },
                );
            }
        }
    }

    /// Marks the output idle before the stream starts: its first callbacks play silence
    /// without counting underruns, and the first source goes into an empty ring.
    pub(crate) fn prefill(&mut self) {
        self.counters.output_idle.store(true, Ordering::Release);
    }

    /// How long the mixer thread may sleep: `None` = one tick (playing, or updates due),
    /// `Some(None)` = until woken, `Some(Some(d))` = until the output should be paused.
    fn idle_wait(&self) -> Option<Option<Duration>> {
        let since = self.idle_since?;
        // A source that can start may find the ring still full of the silence written after
        // the previous one ended: no decoder will wake us again, so follow the device clock
        // until there is room (sleeping here held a new source back until the pause timeout).
        if !self.markers.is_empty() || self.starved_playing() || self.audible() {
            return None;
        }
        match &self.output {
            Some(OutputDevice {
                pause_after: Some(after),
                paused: false,
                cannot_pause: false,
                ..
            }) => {
                // At least a little: the ring may still be draining when the time is up.
                let left = after.saturating_sub(since.elapsed());
                Some(Some(left.max(Duration::from_millis(50))))
            }
            _ => Some(None),
        }
    }

    /// Whether a lane would put a source's samples into the next block: its front source is
    /// playing, or has the frames to start (or is complete).
    fn audible(&self) -> bool {
        self.lanes.iter().any(|l| {
            !l.paused
                && l.queue.front().is_some_and(|s| {
                    s.started
                        || s.shared.done.load(Ordering::Acquire)
                        || s.consumer.slots() / self.channels >= self.start_frames
                })
        })
    }

    /// Frames every playing (or startable) front source can supply without running dry. A
    /// complete source ends inside the block, so its successor (gapless) counts after it.
    fn ready_frames(&self) -> usize {
        let mut ready = usize::MAX;
        for l in &self.lanes {
            if l.paused {
                continue;
            }
            let Some(s) = l.queue.front() else {
                continue;
            };
            let avail = s.consumer.slots() / self.channels;
            if !(s.started || avail >= self.start_frames) {
                continue;
            }
            if !s.shared.done.load(Ordering::Acquire) {
                ready = ready.min(avail);
            } else if let Some(next) = l.queue.get(1)
                && !next.shared.done.load(Ordering::Acquire)
            {
                ready = ready.min(avail + next.consumer.slots() / self.channels);
            }
        }
        ready
    }

    fn start_pending(&self) -> bool {
        self.markers
            .iter()
            .any(|m| m.update == PlaybackUpdate::Started)
    }

    /// A playing source is waiting for data: keep checking (its decoder only wakes the mixer
    /// before the source has started).
    fn starved_playing(&self) -> bool {
        self.lanes
            .iter()
            .any(|l| !l.paused && l.queue.front().is_some_and(|s| s.started))
    }

    fn pause_output_if_idle(&mut self) {
        let (Some(since), Some(after)) = (
            self.idle_since,
            self.output.as_ref().and_then(|o| o.pause_after),
        ) else {
            return;
        };
        if since.elapsed() < after || !self.markers.is_empty() {
            return;
        }
        let consumed = self.counters.output_frames_consumed.load(Ordering::Relaxed);
        if self.written > consumed {
            return;
        }
        if let Some(o) = self.output.as_mut()
            && !o.paused
            && !o.cannot_pause
        {
            match o.backend.pause() {
                Ok(()) => {
                    o.paused = true;
                    tracing::debug!(device = %o.id, "output idle: device paused");
                }
                Err(e) => {
                    o.cannot_pause = true;
                    tracing::info!(device = %o.id, error = %e, "output cannot pause; it keeps running while idle");
                }
            }
        }
    }

    fn resume_output(&mut self) {
        if let Some(o) = self.output.as_mut()
            && o.paused
        {
            let t = Instant::now();
            match o.backend.play(&o.id) {
                Ok(()) => {
                    o.paused = false;
                    let count = self.counters.output_callbacks.load(Ordering::Relaxed);
                    o.health.restart_watch(count, Instant::now());
                    tracing::debug!(device = %o.id, took_us = t.elapsed().as_micros() as u64, "output device resumed");
                }
                Err(e) => {
                    // Treated as lost at the next check: the void stand-in keeps the clock
                    // while the device is reopened.
                    tracing::warn!(device = %o.id, error = %e, "cannot resume the output device");
                    o.paused = false;
                    self.counters.output_lost.store(true, Ordering::Release);
                }
            }
        }
    }

    /// Emits due updates and tops the output ring up. Public within the crate for tests.
    pub(crate) fn step_once(&mut self) {
        self.emit_due();
        let audible = self.audible();
        if !audible {
            if self.idle_since.is_none() {
                self.idle_since = Some(Instant::now());
                // The ring plays out what it holds; after that the callback plays silence.
                self.counters.output_idle.store(true, Ordering::Release);
            }
            // No audio to ramp: a later source starts at the level asked for.
            for l in &mut self.lanes {
                l.gain = l.target;
            }
            self.pause_output_if_idle();
            self.emit_due();
            return;
        }
        let was_idle = self.idle_since.is_some();
        if was_idle {
            self.resume_output();
        }
        let consumed = self.counters.output_frames_consumed.load(Ordering::Relaxed);
        let fill = self.written.saturating_sub(consumed);
        let target = self.target_fill();
        if fill < target {
            let room = (self.producer.slots() / self.channels) as u64;
            let mut n = (target - fill).min(room) as usize;
            // While the ring holds a period (or the callback plays idle silence), wait for the
            // decoders instead of writing silence behind a playing source.
            if was_idle || fill >= self.low_water() {
                n = n.min(self.ready_frames());
            }
            if n > 0 {
                self.mix_frames(n);
                if was_idle {
                    self.idle_since = None;
                    self.counters.output_idle.store(false, Ordering::Release);
                }
            }
        }
        self.emit_due();
    }

    fn drain_commands(&mut self) -> Result<(), ()> {
        loop {
            match self.commands.try_recv() {
                Ok(cmd) => self.apply(cmd),
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => return Err(()),
            }
        }
    }

    fn apply(&mut self, cmd: MixerCommand) {
        match cmd {
            MixerCommand::Enqueue { channel, source } => {
                // The decoder wakes us with its first PCM (and at its end).
                let _ = source.shared.mixer.set(self.waker.clone());
                self.lanes[channel.index()].queue.push_back(source)
            }
            MixerCommand::Stop(id) => self.stop(id),
            MixerCommand::Pause(c) => self.lanes[c.index()].paused = true,
            MixerCommand::Resume(c) => self.lanes[c.index()].paused = false,
            MixerCommand::Gain(c, g) => {
                self.lanes[c.index()].target = if g.is_finite() {
                    g.clamp(0.0, 4.0)
                } else {
                    0.0
                }
            }
        }
    }

    fn stop(&mut self, id: SourceId) {
        let consumed = self.counters.output_frames_consumed.load(Ordering::Relaxed);
        let in_ring = self.written.saturating_sub(consumed);
        for lane in &mut self.lanes {
            if let Some(pos) = lane.queue.iter().position(|s| s.id == id) {
                if let Some(s) = lane.queue.remove(pos) {
                    self.markers.retain(|m| m.id != id);
                    let played = s.mixed_frames.saturating_sub(in_ring);
                    send_update(
                        &s.updates,
                        PlaybackUpdate::Stopped {
                            offset: frames_to_duration(played, self.rate),
                        },
                    );
                }
                return;
            }
        }
    }

    fn emit_due(&mut self) {
        let consumed = self.counters.output_frames_consumed.load(Ordering::Relaxed);
        while self.markers.front().is_some_and(|m| m.at <= consumed) {
            if let Some(m) = self.markers.pop_front() {
                if m.update == PlaybackUpdate::Started {
                    // Benches time alerts and speech by this event (mixer thread, not callback).
                    tracing::debug!(source = m.id.0, "first sample handed to the device");
                }
                send_update(&m.tx, m.update);
            }
        }
    }

    fn mix_frames(&mut self, n: usize) {
        let ch = self.channels;
        self.mix.clear();
        self.mix.resize(n * ch, 0.0);
        self.lane_gain.resize(n, 0.0);
        let rate = self.rate;
        let progress_frames = (PROGRESS_EVERY.as_secs_f64() * f64::from(rate)) as u64;
        for li in 0..self.lanes.len() {
            let lane = &mut self.lanes[li];
            for g in self.lane_gain.iter_mut() {
                lane.gain = approach(lane.gain, lane.target, self.step);
                *g = lane.gain;
            }
            if lane.paused {
                continue;
            }
            let mut pos = 0usize;
            while pos < n {
                let Some(src) = lane.queue.front_mut() else {
                    break;
                };
                let at = self.written + pos as u64;
                let avail = src.consumer.slots() / ch;
                if avail == 0 {
                    if src.shared.done.load(Ordering::Acquire) && src.consumer.slots() == 0 {
                        let failed = src
                            .shared
                            .failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .take();
                        let end = match failed {
                            Some(error) => PlaybackUpdate::Failed { error },
                            None => {
                                if !src.started {
                                    self.markers.push_back(Marker {
                                        at,
                                        id: src.id,
                                        tx: src.updates.clone(),
                                        update: PlaybackUpdate::Started,
                                    });
                                }
                                PlaybackUpdate::Finished {
                                    offset: frames_to_duration(src.mixed_frames, rate),
                                }
                            }
                        };
                        self.markers.push_back(Marker {
                            at,
                            id: src.id,
                            tx: src.updates.clone(),
                            update: end,
                        });
                        lane.queue.pop_front();
                        continue;
                    }
                    if src.started && src.stutter_since.is_none() {
                        src.stutter_since = Some(at);
                        self.counters.stutters.fetch_add(1, Ordering::Relaxed);
                        self.markers.push_back(Marker {
                            at,
                            id: src.id,
                            tx: src.updates.clone(),
                            update: PlaybackUpdate::StutterStarted,
                        });
                    }
                    break;
                }
                if !src.started {
                    // One period in hand before starting (see `start_frames`).
                    if avail < self.start_frames && !src.shared.done.load(Ordering::Acquire) {
                        break;
                    }
                    src.started = true;
                    src.shared.started.store(true, Ordering::Relaxed);
                    // Started once the first sample has been taken by the device.
                    self.markers.push_back(Marker {
                        at: at + 1,
                        id: src.id,
                        tx: src.updates.clone(),
                        update: PlaybackUpdate::Started,
                    });
                }
                if let Some(since) = src.stutter_since.take() {
                    self.counters
                        .stutter_frames
                        .fetch_add(at - since, Ordering::Relaxed);
                    self.markers.push_back(Marker {
                        at,
                        id: src.id,
                        tx: src.updates.clone(),
                        update: PlaybackUpdate::StutterFinished {
                            stutter: frames_to_duration(at - since, rate),
                        },
                    });
                }
                let take = avail.min(n - pos);
                if let Ok(chunk) = src.consumer.read_chunk(take * ch) {
                    let (a, b) = chunk.as_slices();
                    let dst = &mut self.mix[pos * ch..(pos + take) * ch];
                    for (i, s) in a.iter().chain(b.iter()).enumerate() {
                        dst[i] += *s * self.lane_gain[pos + i / ch];
                    }
                    chunk.commit_all();
                }
                src.mixed_frames += take as u64;
                pos += take;
                if src.mixed_frames - src.last_progress_frames >= progress_frames {
                    src.last_progress_frames = src.mixed_frames;
                    self.markers.push_back(Marker {
                        at: self.written + pos as u64,
                        id: src.id,
                        tx: src.updates.clone(),
                        update: PlaybackUpdate::Progress {
                            offset: frames_to_duration(src.mixed_frames, rate),
                        },
                    });
                }
            }
        }
        // Markers from different lanes interleave; keep them in clock order.
        self.markers.make_contiguous().sort_by_key(|m| m.at);
        if let Ok(chunk) = self.producer.write_chunk_uninit(n * ch) {
            chunk.fill_from_iter(self.mix.iter().map(|s| s.clamp(-1.0, 1.0)));
        }
        self.written += n as u64;
    }
}
