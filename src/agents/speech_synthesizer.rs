//! SpeechSynthesizer: plays `Speak` attachments on the Dialog channel while they are still
//! arriving, obeys `playBehavior` when a Speak arrives (as the reference client does), and
//! reports SpeechStarted / SpeechFinished / SpeechInterrupted with the right token and offset.
//!
//! Speeches are queued in the mixer in arrival order, so an interim speech and the final one
//! that arrived before it ended play back to back with no gap. A speech dropped before it
//! started sends nothing (avs-protocol.md §5.3).

use std::collections::VecDeque;
use std::time::Duration;

use avs_proto::interfaces::speech_synthesizer::{self as ss, PlayBehavior, Speak};
use avs_proto::interfaces::{TokenOffset, TokenPayload};
use avs_proto::multipart::content_id_of_url;
use avs_proto::{ContextEntry, Directive, Event, ExceptionType};

use super::AgentOutput;
use super::system::exception;
use crate::attention::AttentionInput;
use crate::audio::{Channel, PlaybackHandle, PlaybackUpdate, Source, SourceId};
use crate::context::ContextBoard;
use crate::transport::Attachments;

#[derive(Debug)]
struct SpeakItem {
    message_id: String,
    dialog: Option<String>,
    token: String,
    source: SourceId,
    /// The mixer started it.
    started: bool,
    /// SpeechStarted was sent. Each source reports on its own channel, so the next speech's
    /// Started can overtake the previous one's Finished: events wait for their turn.
    announced: bool,
    offset: Duration,
}

/// A new source the core must route updates for.
pub struct Enqueued {
    pub source: SourceId,
    pub updates: tokio::sync::mpsc::Receiver<PlaybackUpdate>,
}

pub struct SpeechSynthesizer {
    playback: PlaybackHandle,
    attachments: Attachments,
    board: ContextBoard,
    queue: VecDeque<SpeakItem>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SpeechSynthesizer {
    pub fn new(playback: PlaybackHandle, attachments: Attachments, board: ContextBoard) -> Self {
        board.set(ContextEntry::speech_state("", 0, "FINISHED"));
        Self {
            playback,
            attachments,
            board,
            queue: VecDeque::new(),
        }
    }

    /// True while a speech plays or waits.
    pub fn is_active(&self) -> bool {
        !self.queue.is_empty()
    }

    pub fn owns(&self, source: SourceId) -> bool {
        self.queue.iter().any(|i| i.source == source)
    }

    /// Handles a Speak: validates it, applies playBehavior, queues it in the mixer.
    pub fn speak(
        &mut self,
        d: &Directive,
        speak: &Speak,
        source: SourceId,
    ) -> (Vec<AgentOutput>, Option<Enqueued>) {
        let mut out = Vec::new();
        let failed = |out: &mut Vec<AgentOutput>, why: &str| {
            out.push(exception(
                &d.raw,
                ExceptionType::UnexpectedInformationReceived,
                why,
            ));
            out.push(AgentOutput::Failed {
                message_id: d.header.message_id.clone(),
                dialog_request_id: d.header.dialog_request_id.clone(),
            });
        };
        if speak.format != "AUDIO_MPEG" {
            failed(
                &mut out,
                &format!("unsupported Speak format {:?}", speak.format),
            );
            return (out, None);
        }
        let Some(cid) = content_id_of_url(&speak.url) else {
            failed(
                &mut out,
                &format!("Speak url {:?} is not a cid: reference", speak.url),
            );
            return (out, None);
        };
        match speak.play_behavior.unwrap_or(PlayBehavior::ReplaceAll) {
            PlayBehavior::Enqueue => {}
            PlayBehavior::ReplaceEnqueued => {
                let keep_first = self.queue.front().is_some_and(|i| i.started);
                let skip = usize::from(keep_first);
                let ids: Vec<SourceId> = self.queue.iter().skip(skip).map(|i| i.source).collect();
                for id in ids {
                    self.playback.stop(id);
                }
            }
            PlayBehavior::ReplaceAll => {
                let ids: Vec<SourceId> = self.queue.iter().map(|i| i.source).collect();
                for id in ids {
                    self.playback.stop(id);
                }
            }
        }
        let reader = self.attachments.reader(&cid).into_blocking_read();
        let updates =
            self.playback
                .enqueue(Channel::Dialog, source, Source::Encoded(Box::new(reader)));
        self.queue.push_back(SpeakItem {
            message_id: d.header.message_id.clone(),
            dialog: d.header.dialog_request_id.clone(),
            token: speak.token.clone(),
            source,
            started: false,
            announced: false,
            offset: Duration::ZERO,
        });
        (out, Some(Enqueued { source, updates }))
    }

    /// Stops the speech of a cancelled directive (barge-in, failed dialog).
    pub fn cancel(&mut self, message_id: &str) {
        if let Some(item) = self.queue.iter().find(|i| i.message_id == message_id) {
            self.playback.stop(item.source);
        }
    }

    /// Stops everything (local stop, shutdown).
    pub fn stop_all(&mut self) {
        for item in &self.queue {
            self.playback.stop(item.source);
        }
    }

    /// SpeechStarted for the item at `idx`, once.
    fn announce(&mut self, idx: usize, out: &mut Vec<AgentOutput>) {
        let Some(item) = self.queue.get_mut(idx) else {
            return;
        };
        if item.announced {
            return;
        }
        item.announced = true;
        self.board.set(ContextEntry::speech_state(
            &item.token,
            ms(item.offset),
            "PLAYING",
        ));
        out.push(AgentOutput::Event(Event::new(
            ss::NAMESPACE,
            &ss::Event::SpeechStarted(TokenPayload {
                token: item.token.clone(),
            }),
        )));
        out.push(AgentOutput::Attention(AttentionInput::SpeechStarted));
    }

    /// The events and sequencer outcome of a speech that ended.
    fn ended(&self, item: SpeakItem, played: bool, update: PlaybackUpdate) -> Vec<AgentOutput> {
        let mut out = Vec::new();
        let interrupted = |offset: Duration, out: &mut Vec<AgentOutput>| {
            self.board.set(ContextEntry::speech_state(
                &item.token,
                ms(offset),
                "INTERRUPTED",
            ));
            out.push(AgentOutput::Event(Event::new(
                ss::NAMESPACE,
                &ss::Event::SpeechInterrupted(TokenOffset {
                    token: item.token.clone(),
                    offset_in_milliseconds: ms(offset),
                }),
            )));
        };
        match update {
            PlaybackUpdate::Finished { offset } => {
                self.board.set(ContextEntry::speech_state(
                    &item.token,
                    ms(offset),
                    "FINISHED",
                ));
                out.push(AgentOutput::Event(Event::new(
                    ss::NAMESPACE,
                    &ss::Event::SpeechFinished(TokenPayload {
                        token: item.token.clone(),
                    }),
                )));
                out.push(AgentOutput::Completed {
                    message_id: item.message_id,
                });
            }
            PlaybackUpdate::Failed { error } => {
                tracing::warn!(token = %item.token, %error, "speech failed");
                if played {
                    interrupted(item.offset, &mut out);
                }
                out.push(AgentOutput::Failed {
                    message_id: item.message_id,
                    dialog_request_id: item.dialog,
                });
            }
            PlaybackUpdate::Stopped { offset } => {
                if played {
                    interrupted(offset, &mut out);
                }
                out.push(AgentOutput::Completed {
                    message_id: item.message_id,
                });
            }
            _ => {}
        }
        out
    }

    /// An update from the mixer about one of our sources.
    pub fn on_update(&mut self, source: SourceId, update: PlaybackUpdate) -> Vec<AgentOutput> {
        let Some(pos) = self.queue.iter().position(|i| i.source == source) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match update {
            PlaybackUpdate::Started => {
                self.queue[pos].started = true;
                if pos == 0 {
                    self.announce(0, &mut out);
                }
            }
            PlaybackUpdate::Progress { offset } => {
                let item = &mut self.queue[pos];
                item.offset = offset;
                if item.announced {
                    self.board.set(ContextEntry::speech_state(
                        &item.token,
                        ms(offset),
                        "PLAYING",
                    ));
                }
            }
            PlaybackUpdate::Finished { .. }
            | PlaybackUpdate::Stopped { .. }
            | PlaybackUpdate::Failed { .. } => {
                if matches!(update, PlaybackUpdate::Finished { .. }) {
                    // A tiny source may report Finished without Started: it still played.
                    self.queue[pos].started = true;
                }
                let played = self.queue[pos].started;
                if played {
                    self.announce(pos, &mut out);
                }
                let Some(item) = self.queue.remove(pos) else {
                    return out;
                };
                out.extend(self.ended(item, played, update));
                // The next speech may have started already: its turn to be announced.
                if pos == 0 && self.queue.front().is_some_and(|i| i.started) {
                    self.announce(0, &mut out);
                }
            }
            PlaybackUpdate::StutterStarted
            | PlaybackUpdate::StutterFinished { .. }
            | PlaybackUpdate::Metadata { .. } => {}
        }
        let ended = out.iter().any(|o| {
            matches!(
                o,
                AgentOutput::Completed { .. } | AgentOutput::Failed { .. }
            )
        });
        if ended && self.queue.is_empty() {
            out.push(AgentOutput::Attention(AttentionInput::SpeechDrained));
        }
        out
    }
}
