//! The mixer: the output callback body (copy from the output ring × a smoothed master gain,
//! silence and a counter on underrun) and the mixer thread, which plays each channel's queue of
//! sources one after another (gapless: the next source starts in the same period the previous
//! one ended), applies per-channel gains with a short ramp, keeps the output ring at a few
//! periods, and tells each source's owner when its samples actually reached the device.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Duration;

use cpal::{FromSample, Sample};
use tokio::sync::mpsc;

use super::decode::SourceShared;
use super::{Channel, Counters, PlaybackUpdate, SourceId};

/// Gain ramps (master, channel) take this long from one value to another.
pub const GAIN_RAMP: Duration = Duration::from_millis(5);
/// Progress updates at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// Updates kept free in a source's channel for the ones that must not be dropped.
const RESERVED_UPDATE_SLOTS: usize = 4;

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
        if n < out.len() {
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
    mix: Vec<f32>,
    lane_gain: Vec<f32>,
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
            start_frames: 3 * period_frames,
            mix: Vec::new(),
            lane_gain: Vec::new(),
        }
    }

    /// How many frames the mixer keeps queued ahead of the device: three of our periods, or two
    /// of the device's callbacks if it asks for bigger blocks.
    fn target_fill(&self) -> u64 {
        let granted = self.counters.output_period_frames.load(Ordering::Relaxed) as usize;
        let cap = self.producer.buffer().capacity() / self.channels;
        (3 * self.period_frames).max(2 * granted).min(cap) as u64
    }

    pub(crate) fn run(mut self) {
        let tick = Duration::from_secs_f64(
            (self.period_frames as f64 / f64::from(self.rate) / 4.0).clamp(0.001, 0.005),
        );
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
            match self.drain_commands() {
                Ok(()) => {}
                Err(()) => break,
            }
            self.step_once();
            std::thread::sleep(tick);
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

    /// Fills the output ring with silence up to the target level, so the device's first
    /// callbacks find data (called before the stream starts).
    pub(crate) fn prefill(&mut self) {
        let n = self.target_fill() as usize;
        let room = self.producer.slots() / self.channels;
        self.mix_frames(n.min(room));
    }

    /// Emits due updates and tops the output ring up. Public within the crate for tests.
    pub(crate) fn step_once(&mut self) {
        self.emit_due();
        let consumed = self.counters.output_frames_consumed.load(Ordering::Relaxed);
        let fill = self.written.saturating_sub(consumed);
        let target = self.target_fill();
        if fill < target {
            let room = (self.producer.slots() / self.channels) as u64;
            let n = (target - fill).min(room) as usize;
            if n > 0 {
                self.mix_frames(n);
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
                    // A little audio in hand before starting, so a decoder that just produced its
                    // first packet does not stutter right away.
                    if avail < self.start_frames && !src.shared.done.load(Ordering::Acquire) {
                        break;
                    }
                    src.started = true;
                    // Started once the first sample has been taken by the device.
                    self.markers.push_back(Marker {
                        at: at + 1,
                        id: src.id,
                        tx: src.updates.clone(),
                        update: PlaybackUpdate::Started,
                    });
                }
                if let Some(since) = src.stutter_since.take() {
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
