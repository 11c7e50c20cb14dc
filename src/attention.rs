//! The attention state (IDLE, LISTENING, THINKING, SPEAKING) the device shows: a pure state
//! machine fed by what the dialog core observes, with time as an input (avs-protocol.md §6.5,
//! §7.3). THINKING is held between interim and final speech while the Recognize's response
//! stream is still open, so the user never sees IDLE in the middle of a turn.

use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Attention {
    Idle,
    Listening,
    Thinking,
    Speaking,
}

/// Things that move the attention state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionInput {
    CaptureStarted,
    CaptureStopped,
    /// The Recognize's response stream is open (a turn is in progress on the cloud side).
    TurnOpened,
    TurnClosed,
    /// A Speak is queued and about to play: THINKING holds until it starts.
    SpeechQueued,
    SpeechStarted,
    /// No speech playing or queued any more.
    SpeechDrained,
    ProcessingStarted,
    ProcessingCompleted,
    Disconnected,
}

#[derive(Debug)]
pub struct AttentionMachine {
    state: Attention,
    turn_open: bool,
    processing: bool,
    speaking: bool,
    speech_queued: bool,
    since: Instant,
    thinking_timeout: Duration,
}

impl AttentionMachine {
    pub fn new(thinking_timeout: Duration, now: Instant) -> Self {
        Self {
            state: Attention::Idle,
            turn_open: false,
            processing: false,
            speaking: false,
            speech_queued: false,
            since: now,
            thinking_timeout,
        }
    }

    pub fn state(&self) -> Attention {
        self.state
    }

    /// Applies an input; returns the new state when it changed.
    pub fn on(&mut self, input: AttentionInput, now: Instant) -> Option<Attention> {
        use AttentionInput as I;
        let next = match input {
            I::CaptureStarted => Attention::Listening,
            I::CaptureStopped if self.state == Attention::Listening => Attention::Thinking,
            I::CaptureStopped => self.state,
            I::TurnOpened => {
                self.turn_open = true;
                self.state
            }
            I::TurnClosed => {
                self.turn_open = false;
                self.settle()
            }
            I::SpeechQueued => {
                self.speech_queued = true;
                self.state
            }
            I::SpeechStarted => {
                self.speaking = true;
                Attention::Speaking
            }
            I::SpeechDrained => {
                self.speaking = false;
                self.speech_queued = false;
                self.settle()
            }
            I::ProcessingStarted => {
                self.processing = true;
                if self.state == Attention::Idle {
                    Attention::Thinking
                } else {
                    self.state
                }
            }
            I::ProcessingCompleted => {
                self.processing = false;
                self.settle()
            }
            I::Disconnected => {
                self.turn_open = false;
                self.processing = false;
                self.speech_queued = false;
                if self.speaking {
                    self.state
                } else {
                    Attention::Idle
                }
            }
        };
        self.set(next, now)
    }

    /// Time passing: THINKING with nothing pending falls back to IDLE after the timeout.
    pub fn tick(&mut self, now: Instant) -> Option<Attention> {
        if self.state == Attention::Thinking
            && !self.turn_open
            && !self.processing
            && now.saturating_duration_since(self.since) >= self.thinking_timeout
        {
            return self.set(Attention::Idle, now);
        }
        None
    }

    /// When [`AttentionMachine::tick`] next needs to run, if at all.
    pub fn deadline(&self) -> Option<Instant> {
        (self.state == Attention::Thinking && !self.turn_open && !self.processing)
            .then(|| self.since + self.thinking_timeout)
    }

    fn settle(&self) -> Attention {
        match self.state {
            Attention::Listening => Attention::Listening,
            _ if self.speaking => Attention::Speaking,
            _ if self.turn_open || self.processing || self.speech_queued => Attention::Thinking,
            _ => Attention::Idle,
        }
    }

    fn set(&mut self, next: Attention, now: Instant) -> Option<Attention> {
        if next == self.state {
            return None;
        }
        self.state = next;
        self.since = now;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AttentionInput as I;

    #[test]
    fn progressive_turn_holds_thinking_between_speeches() {
        let t0 = Instant::now();
        let mut m = AttentionMachine::new(Duration::from_secs(8), t0);
        assert_eq!(m.on(I::CaptureStarted, t0), Some(Attention::Listening));
        assert_eq!(m.on(I::TurnOpened, t0), None);
        assert_eq!(m.on(I::CaptureStopped, t0), Some(Attention::Thinking));
        assert_eq!(m.on(I::SpeechStarted, t0), Some(Attention::Speaking));
        assert_eq!(
            m.on(I::SpeechDrained, t0),
            Some(Attention::Thinking),
            "interim ended, turn open"
        );
        assert_eq!(
            m.tick(t0 + Duration::from_secs(60)),
            None,
            "no timeout while the turn is open"
        );
        assert_eq!(m.on(I::SpeechStarted, t0), Some(Attention::Speaking));
        assert_eq!(m.on(I::TurnClosed, t0), None);
        assert_eq!(m.on(I::SpeechDrained, t0), Some(Attention::Idle));
    }

    #[test]
    fn thinking_times_out_only_when_nothing_is_pending() {
        let t0 = Instant::now();
        let mut m = AttentionMachine::new(Duration::from_secs(8), t0);
        m.on(I::CaptureStarted, t0);
        m.on(I::CaptureStopped, t0);
        assert_eq!(m.deadline(), Some(t0 + Duration::from_secs(8)));
        assert_eq!(m.tick(t0 + Duration::from_secs(7)), None);
        assert_eq!(m.tick(t0 + Duration::from_secs(8)), Some(Attention::Idle));
    }

    #[test]
    fn a_queued_speech_holds_thinking_after_the_turn_closes() {
        let t0 = Instant::now();
        let mut m = AttentionMachine::new(Duration::from_secs(8), t0);
        m.on(I::CaptureStarted, t0);
        m.on(I::TurnOpened, t0);
        m.on(I::CaptureStopped, t0);
        assert_eq!(m.on(I::SpeechQueued, t0), None);
        assert_eq!(
            m.on(I::TurnClosed, t0),
            None,
            "the Speak has not started yet"
        );
        assert_eq!(m.on(I::SpeechStarted, t0), Some(Attention::Speaking));
        assert_eq!(m.on(I::SpeechDrained, t0), Some(Attention::Idle));
        // A queued speech that never starts still times out.
        m.on(I::CaptureStarted, t0);
        m.on(I::CaptureStopped, t0);
        m.on(I::SpeechQueued, t0);
        assert_eq!(m.tick(t0 + Duration::from_secs(8)), Some(Attention::Idle));
    }

    #[test]
    fn processing_markers_hold_thinking() {
        let t0 = Instant::now();
        let mut m = AttentionMachine::new(Duration::from_secs(1), t0);
        assert_eq!(m.on(I::ProcessingStarted, t0), Some(Attention::Thinking));
        assert_eq!(m.tick(t0 + Duration::from_secs(5)), None);
        assert_eq!(m.on(I::ProcessingCompleted, t0), Some(Attention::Idle));
    }
}
