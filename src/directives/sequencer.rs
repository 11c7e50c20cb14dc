//! The directive sequencer: a pure state machine (no I/O, no clock) deciding when each directive
//! is handled, following the reference client's rules (avs-protocol.md §6.1–6.3):
//!
//! - One current dialogRequestId. Directives carrying another one are stale and dropped
//!   silently (StopCapture excepted: it is honoured while a capture is active whatever it
//!   carries). `InteractionModel.NewDialogRequest` makes its id current.
//! - Directives that use no medium run at once.
//! - `Speak` is handled on arrival (its agent applies `playBehavior` and queues the speech in
//!   the mixer, so consecutive speeches play gaplessly) and blocks the AUDIO medium until it
//!   completes. `ExpectSpeech` waits for every blocker that arrived before it, then blocks.
//!   Other AUDIO directives (AudioPlayer.*) wait for the blockers that arrived before them.
//!   Arrival order is preserved among waiting directives.
//! - A new dialog cancels what is left of the old one; a failed directive cancels the rest of
//!   its dialog.

use std::collections::{BTreeMap, VecDeque};

use avs_proto::interfaces::{interaction_model, speech_recognizer, speech_synthesizer};
use avs_proto::{Directive, DirectiveKind};

/// What a directive needs from the audio output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    Audio,
    None,
}

/// How a directive is scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub medium: Medium,
    pub blocking: bool,
}

/// The blocking policy table (avs-protocol.md §6.2).
pub fn policy(d: &Directive) -> Policy {
    match &d.kind {
        DirectiveKind::SpeechSynthesizer(_) => Policy {
            medium: Medium::Audio,
            blocking: true,
        },
        DirectiveKind::SpeechRecognizer(speech_recognizer::Directive::ExpectSpeech(_)) => Policy {
            medium: Medium::Audio,
            blocking: true,
        },
        DirectiveKind::AudioPlayer(_) => Policy {
            medium: Medium::Audio,
            blocking: false,
        },
        _ => Policy {
            medium: Medium::None,
            blocking: false,
        },
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum SequencerAction {
    /// Give the directive to its agent now.
    Handle(Directive),
    /// A directive of an old dialog arrived or was still queued: forget it (no exception).
    Drop(Directive),
    /// A blocking directive being handled must stop (barge-in, failure of its dialog).
    Cancel { message_id: String },
}

#[derive(Debug, Clone)]
struct Blocker {
    message_id: String,
    dialog: Option<String>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Sequencer {
    current: Option<String>,
    next_seq: u64,
    blockers: BTreeMap<u64, Blocker>,
    waiting: VecDeque<(u64, Directive)>,
}

fn is_stop_capture(d: &Directive) -> bool {
    matches!(
        d.kind,
        DirectiveKind::SpeechRecognizer(speech_recognizer::Directive::StopCapture(_))
    )
}

fn is_speak(d: &Directive) -> bool {
    matches!(
        d.kind,
        DirectiveKind::SpeechSynthesizer(speech_synthesizer::Directive::Speak(_))
    )
}

impl Sequencer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current dialogRequestId.
    pub fn current_dialog(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// True while a blocking AUDIO directive is outstanding or directives wait for one.
    pub fn is_busy(&self) -> bool {
        !self.blockers.is_empty() || !self.waiting.is_empty()
    }

    /// A new dialog starts (a Recognize, or NewDialogRequest): everything left of other dialogs
    /// is cancelled or dropped.
    pub fn new_dialog(&mut self, dialog_request_id: &str) -> Vec<SequencerAction> {
        self.current = Some(dialog_request_id.to_owned());
        let mut actions = Vec::new();
        let old: Vec<u64> = self
            .blockers
            .iter()
            .filter(|(_, b)| b.dialog.is_some() && b.dialog.as_deref() != Some(dialog_request_id))
            .map(|(s, _)| *s)
            .collect();
        for seq in old {
            if let Some(b) = self.blockers.remove(&seq) {
                actions.push(SequencerAction::Cancel {
                    message_id: b.message_id,
                });
            }
        }
        let (keep, drop): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(_, d)| {
                d.dialog_request_id()
                    .is_none_or(|id| id == dialog_request_id)
            });
        self.waiting = keep;
        actions.extend(drop.into_iter().map(|(_, d)| SequencerAction::Drop(d)));
        actions.extend(self.release());
        actions
    }

    /// A directive arrived (from any stream).
    pub fn on_directive(&mut self, d: Directive) -> Vec<SequencerAction> {
        if let DirectiveKind::InteractionModel(interaction_model::Directive::NewDialogRequest(n)) =
            &d.kind
        {
            let mut actions = self.new_dialog(&n.dialog_request_id.clone());
            actions.push(SequencerAction::Handle(d));
            return actions;
        }
        if let Some(id) = d.dialog_request_id()
            && self.current.as_deref() != Some(id)
            && !is_stop_capture(&d)
        {
            return vec![SequencerAction::Drop(d)];
        }
        let p = policy(&d);
        if p.medium == Medium::None {
            return vec![SequencerAction::Handle(d)];
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if is_speak(&d) {
            self.blockers.insert(
                seq,
                Blocker {
                    message_id: d.header.message_id.clone(),
                    dialog: d.header.dialog_request_id.clone(),
                },
            );
            return vec![SequencerAction::Handle(d)];
        }
        self.waiting.push_back((seq, d));
        self.release()
    }

    /// A blocking directive finished (speech ended, mic window closed).
    pub fn on_completed(&mut self, message_id: &str) -> Vec<SequencerAction> {
        self.blockers.retain(|_, b| b.message_id != message_id);
        self.release()
    }

    /// A directive failed: the rest of its dialog is cancelled.
    pub fn on_failed(
        &mut self,
        message_id: &str,
        dialog_request_id: Option<&str>,
    ) -> Vec<SequencerAction> {
        self.blockers.retain(|_, b| b.message_id != message_id);
        let mut actions = Vec::new();
        if let Some(dialog) = dialog_request_id {
            let cancelled: Vec<u64> = self
                .blockers
                .iter()
                .filter(|(_, b)| b.dialog.as_deref() == Some(dialog))
                .map(|(s, _)| *s)
                .collect();
            for seq in cancelled {
                if let Some(b) = self.blockers.remove(&seq) {
                    actions.push(SequencerAction::Cancel {
                        message_id: b.message_id,
                    });
                }
            }
            let (drop, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting)
                .into_iter()
                .partition(|(_, d)| d.dialog_request_id() == Some(dialog));
            self.waiting = keep;
            actions.extend(drop.into_iter().map(|(_, d)| SequencerAction::Drop(d)));
        }
        actions.extend(self.release());
        actions
    }

    /// Hands out waiting directives, in order, while nothing that arrived before them blocks.
    fn release(&mut self) -> Vec<SequencerAction> {
        let mut actions = Vec::new();
        while let Some((seq, _)) = self.waiting.front() {
            let seq = *seq;
            if self.blockers.range(..seq).next().is_some() {
                break;
            }
            let Some((seq, d)) = self.waiting.pop_front() else {
                break;
            };
            if policy(&d).blocking {
                self.blockers.insert(
                    seq,
                    Blocker {
                        message_id: d.header.message_id.clone(),
                        dialog: d.header.dialog_request_id.clone(),
                    },
                );
            }
            actions.push(SequencerAction::Handle(d));
        }
        actions
    }
}

#[cfg(test)]
mod tests;
