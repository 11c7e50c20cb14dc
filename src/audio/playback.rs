//! The playback handle the agents use: enqueue a source on a focus channel and get its updates,
//! stop it, pause or resume a channel, duck a channel, set the master volume and mute. Each
//! enqueued source gets a decode thread and a ring right away, so the next source is decoded
//! ahead while the current one plays. The mixing itself lives in `mixer.rs`.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::decode::{self, SOURCE_RING, SourceShared, SourceSink};
use super::mixer::{Mixer, MixerCommand, MixerWaker, QueuedSource};
use super::{Channel, Counters, PlaybackUpdate, Source, SourceId, volume_gain};

impl PlaybackUpdate {
    /// The last update of a source: nothing follows Finished, Stopped or Failed.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Finished { .. } | Self::Stopped { .. } | Self::Failed { .. }
        )
    }
}

/// Updates a source's receiver can hold; Progress is dropped first when it fills up.
const UPDATE_QUEUE: usize = 64;
const COMMAND_QUEUE: usize = 256;

struct Master {
    volume: u8,
    muted: bool,
}

/// Cheap to clone. Every method returns at once (it only queues a command for the mixer thread,
/// which it wakes at once; only with 256 commands already waiting does it wait for room).
#[derive(Clone)]
pub struct PlaybackHandle {
    commands: SyncSender<MixerCommand>,
    master_gain: Arc<AtomicU32>,
    master: Arc<Mutex<Master>>,
    rate: u32,
    channels: u16,
    counters: Arc<Counters>,
    waker: MixerWaker,
}

impl PlaybackHandle {
    pub(crate) fn new(
        producer: rtrb::Producer<f32>,
        master_gain: Arc<AtomicU32>,
        rate: u32,
        channels: u16,
        period: Duration,
        counters: Arc<Counters>,
        shutdown: Arc<AtomicBool>,
    ) -> (PlaybackHandle, Mixer) {
        let (tx, rx) = std::sync::mpsc::sync_channel(COMMAND_QUEUE);
        let mixer = Mixer::new(
            producer,
            channels,
            rate,
            period,
            rx,
            counters.clone(),
            shutdown,
        );
        master_gain.store(volume_gain(100).to_bits(), Ordering::Relaxed);
        let handle = PlaybackHandle {
            commands: tx,
            master_gain,
            master: Arc::new(Mutex::new(Master {
                volume: 100,
                muted: false,
            })),
            rate,
            channels,
            counters,
            waker: mixer.waker(),
        };
        (handle, mixer)
    }

    fn send(&self, cmd: MixerCommand) {
        match self.commands.try_send(cmd) {
            Ok(()) => self.waker.wake(),
            // The mixer drains as soon as it is woken; a full queue means a burst: wait for room.
            Err(TrySendError::Full(cmd)) => {
                self.waker.wake();
                if self.commands.send(cmd).is_err() {
                    tracing::warn!("audio mixer is gone; command dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!("audio mixer is gone; command dropped")
            }
        }
    }

    /// Queues `source` on `channel` after what is already there. Updates arrive on the receiver:
    /// `Started` when its first sample is handed to the device, `Progress` at most every 100 ms,
    /// then `Finished`, `Stopped` or `Failed`.
    pub fn enqueue(
        &self,
        channel: Channel,
        id: SourceId,
        source: Source,
    ) -> mpsc::Receiver<PlaybackUpdate> {
        let (tx, rx) = mpsc::channel(UPDATE_QUEUE);
        let ring_frames = ((f64::from(self.rate) * SOURCE_RING.as_secs_f64()) as usize).max(4096);
        let (producer, consumer) =
            rtrb::RingBuffer::new(ring_frames * usize::from(self.channels.max(1)));
        let shared = Arc::new(SourceShared::default());
        let sink = SourceSink::new(producer, shared.clone(), self.rate, self.channels);
        let counters = self.counters.clone();
        let tags_tx = tx.downgrade();
        let spawned = std::thread::Builder::new()
            .name(format!("avsd-decode-{}", id.0))
            .spawn(move || decode::run_source(source, sink, counters, tags_tx));
        if let Err(e) = spawned {
            let _ = tx.try_send(PlaybackUpdate::Failed {
                error: format!("cannot start a decoder thread: {e}"),
            });
            return rx;
        }
        self.send(MixerCommand::Enqueue {
            channel,
            source: QueuedSource::new(id, consumer, shared, tx),
        });
        rx
    }

    /// Removes the source (playing or still waiting); its receiver gets `Stopped { offset }`.
    pub fn stop(&self, id: SourceId) {
        self.send(MixerCommand::Stop(id));
    }

    /// The channel holds its place and plays nothing until `resume`.
    pub fn pause(&self, channel: Channel) {
        self.send(MixerCommand::Pause(channel));
    }

    pub fn resume(&self, channel: Channel) {
        self.send(MixerCommand::Resume(channel));
    }

    /// Ducking: 1.0 is full level; applied with a few ms ramp.
    pub fn set_channel_gain(&self, channel: Channel, gain: f32) {
        self.send(MixerCommand::Gain(channel, gain));
    }

    /// Master volume 0-100 (see `volume_gain` for the curve), applied smoothly in the callback.
    pub fn set_volume(&self, volume: u8) {
        let mut m = self.master.lock().unwrap_or_else(|e| e.into_inner());
        m.volume = volume.min(100);
        self.publish(&m);
    }

    pub fn set_muted(&self, muted: bool) {
        let mut m = self.master.lock().unwrap_or_else(|e| e.into_inner());
        m.muted = muted;
        self.publish(&m);
    }

    fn publish(&self, m: &Master) {
        let g = if m.muted { 0.0 } else { volume_gain(m.volume) };
        self.master_gain.store(g.to_bits(), Ordering::Relaxed);
    }

    /// Wakes the mixer thread (the engine does so at shutdown).
    pub(crate) fn wake_mixer(&self) {
        self.waker.wake();
    }

    /// Device output rate and channel count the mixer works at.
    pub fn device_format(&self) -> (u32, u16) {
        (self.rate, self.channels)
    }
}

#[cfg(test)]
mod tests;
