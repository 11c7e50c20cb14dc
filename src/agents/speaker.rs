//! Speaker: volume and mute (0–100), from directives and local controls, applied to the mixer,
//! reported with VolumeChanged / MuteChanged, kept in context and persisted across restarts.

use std::path::PathBuf;

use avs_proto::ContextEntry;
use avs_proto::Event;
use avs_proto::interfaces::speaker::{self, VolumeState};
use serde::{Deserialize, Serialize};

use super::AgentOutput;
use crate::audio::PlaybackHandle;
use crate::context::ContextBoard;
use crate::persist;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    volume: u8,
    muted: bool,
}

pub struct Speaker {
    playback: PlaybackHandle,
    board: ContextBoard,
    path: PathBuf,
    state: Stored,
}

/// What changed the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeCommand {
    Set(u8),
    Adjust(i16),
    Mute(bool),
}

impl Speaker {
    /// Restores the persisted volume (or `initial_volume` on first start).
    pub fn new(
        playback: PlaybackHandle,
        board: ContextBoard,
        state_dir: &std::path::Path,
        initial_volume: u8,
    ) -> Self {
        let path = state_dir.join("speaker.json");
        let state = match persist::read_json::<Stored>(&path) {
            Ok(Some(s)) => Stored {
                volume: s.volume.min(100),
                muted: s.muted,
            },
            Ok(None) => Stored {
                volume: initial_volume,
                muted: false,
            },
            Err(e) => {
                tracing::warn!(error = %e, "volume state unreadable, using the initial volume");
                Stored {
                    volume: initial_volume,
                    muted: false,
                }
            }
        };
        playback.set_volume(state.volume);
        playback.set_muted(state.muted);
        board.set(ContextEntry::volume_state(state.volume, state.muted));
        Self {
            playback,
            board,
            path,
            state,
        }
    }

    pub fn volume(&self) -> u8 {
        self.state.volume
    }

    pub fn muted(&self) -> bool {
        self.state.muted
    }

    /// Applies a change (directive or local); returns the event to report it.
    pub fn apply(&mut self, cmd: VolumeCommand) -> Vec<AgentOutput> {
        let before = self.state;
        match cmd {
            VolumeCommand::Set(v) => {
                self.state.volume = v.min(100);
                self.state.muted = false;
            }
            VolumeCommand::Adjust(d) => {
                self.state.volume = (i16::from(self.state.volume) + d).clamp(0, 100) as u8;
                self.state.muted = false;
            }
            VolumeCommand::Mute(m) => self.state.muted = m,
        }
        self.playback.set_volume(self.state.volume);
        self.playback.set_muted(self.state.muted);
        self.board.set(ContextEntry::volume_state(
            self.state.volume,
            self.state.muted,
        ));
        if self.state != before
            && let Err(e) = persist::write_json(&self.path, &self.state, 0o644)
        {
            tracing::warn!(error = %e, "volume not persisted");
        }
        let payload = VolumeState {
            volume: self.state.volume,
            muted: self.state.muted,
        };
        let event = match cmd {
            VolumeCommand::Mute(_) => speaker::Event::MuteChanged(payload),
            _ => speaker::Event::VolumeChanged(payload),
        };
        vec![AgentOutput::Event(Event::new(speaker::NAMESPACE, &event))]
    }
}
