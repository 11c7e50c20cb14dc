//! AudioPlayer: music and podcasts on the Content channel. Play (REPLACE_ALL, ENQUEUE,
//! REPLACE_ENQUEUED, expectedPreviousToken), `cid:` attachments and http(s) streams (playlists
//! resolved by `media`), Stop, ClearQueue, and every playback event with the item's token and
//! offset; PlaybackState in context. One PlaybackStarted/Finished pair per Play token, however
//! many playlist entries it has. A Play's `offsetInMilliseconds` is where the decoder starts, and
//! every offset reported (events, context) is in stream time from there. Stream tags (ID3, ICY)
//! become StreamMetadataExtracted, once per distinct set, never before PlaybackStarted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avs_proto::interfaces::audio_player::{
    self as ap, ClearBehavior, MediaError, Play, PlayBehavior, PlaybackFailed, ProgressReport,
    StutterFinished,
};
use avs_proto::interfaces::{AnyObject, TokenOffset, playback_controller as pc};
use avs_proto::multipart::content_id_of_url;
use avs_proto::{ContextEntry, Event};
use serde_json::json;
use url::Url;

use super::AgentOutput;
use crate::audio::{
    Channel, PlaybackHandle, PlaybackUpdate, Source, SourceId, StreamSource, StreamTags,
};
use crate::context::ContextBoard;
use crate::focus::Focus;
use crate::media::fetch::{MediaFailure, MediaFetcher};
use crate::transport::Attachments;

#[derive(Debug, Clone)]
struct QueuedItem {
    token: String,
    url: String,
    offset_ms: u64,
    progress: Option<ProgressReport>,
}

struct Item {
    q: QueuedItem,
    source: SourceId,
    started: bool,
    /// Where in the stream playback started (the Play's offset).
    start: Duration,
    /// Current position in stream time.
    offset: Duration,
    delay_sent: bool,
    next_interval_ms: Option<u64>,
    failure: Option<Arc<Mutex<Option<MediaFailure>>>>,
    stutter_since: Option<Instant>,
    paused: bool,
    /// Tags found before PlaybackStarted, sent right after it.
    pending_tags: Option<StreamTags>,
    last_tags: Option<StreamTags>,
}

/// The first ProgressReportIntervalElapsed position after `start` (a multiple of the interval,
/// strictly after the start, as the reference SDK's ProgressTimer does).
fn first_interval_ms(interval_ms: u64, start_ms: u64) -> u64 {
    interval_ms.saturating_mul(start_ms / interval_ms + 1)
}

/// StreamMetadataExtracted's `metadata` object.
fn metadata_event(token: &str, tags: &StreamTags) -> AgentOutput {
    let metadata: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    event(&ap::Event::StreamMetadataExtracted(ap::StreamMetadata {
        token: token.to_owned(),
        metadata: serde_json::Value::Object(metadata),
    }))
}

/// `playerActivity` of PlaybackState.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    Idle,
    Playing,
    Paused,
    BufferUnderrun,
    Finished,
    Stopped,
}

impl Activity {
    fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Playing => "PLAYING",
            Self::Paused => "PAUSED",
            Self::BufferUnderrun => "BUFFER_UNDERRUN",
            Self::Finished => "FINISHED",
            Self::Stopped => "STOPPED",
        }
    }
}

/// A source the core must route updates for.
pub struct Started {
    pub source: SourceId,
    pub updates: tokio::sync::mpsc::Receiver<PlaybackUpdate>,
}

/// Local transport buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Play,
    Pause,
    Next,
    Previous,
}

pub struct AudioPlayer {
    playback: PlaybackHandle,
    attachments: Attachments,
    fetcher: Option<MediaFetcher>,
    board: ContextBoard,
    current: Option<Item>,
    queue: VecDeque<QueuedItem>,
    activity: Activity,
    last_token: String,
    last_offset_ms: u64,
    /// A Stop directive (or local stop) ended the item: do not advance the queue.
    hold_queue: bool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn event(e: &ap::Event) -> AgentOutput {
    AgentOutput::Event(Event::new(ap::NAMESPACE, e))
}

impl AudioPlayer {
    pub fn new(
        playback: PlaybackHandle,
        attachments: Attachments,
        fetcher: Option<MediaFetcher>,
        board: ContextBoard,
    ) -> Self {
        let me = Self {
            playback,
            attachments,
            fetcher,
            board,
            current: None,
            queue: VecDeque::new(),
            activity: Activity::Idle,
            last_token: String::new(),
            last_offset_ms: 0,
            hold_queue: false,
        };
        me.publish();
        me
    }

    pub fn owns(&self, source: SourceId) -> bool {
        self.current.as_ref().is_some_and(|c| c.source == source)
    }

    fn publish(&self) {
        let (token, offset) = match &self.current {
            Some(c) => (c.q.token.as_str(), ms(c.offset)),
            None => (self.last_token.as_str(), self.last_offset_ms),
        };
        self.board.set(ContextEntry::playback_state(
            token,
            offset,
            self.activity.as_str(),
        ));
    }

    fn token_offset(&self) -> TokenOffset {
        match &self.current {
            Some(c) => TokenOffset {
                token: c.q.token.clone(),
                offset_in_milliseconds: ms(c.offset),
            },
            None => TokenOffset {
                token: self.last_token.clone(),
                offset_in_milliseconds: self.last_offset_ms,
            },
        }
    }

    /// Handles Play. Returns the source to route when playback started now.
    pub fn play(
        &mut self,
        play: &Play,
        next_source: SourceId,
    ) -> (Vec<AgentOutput>, Option<Started>) {
        let stream = &play.audio_item.stream;
        let item = QueuedItem {
            token: stream.token.clone(),
            url: stream.url.clone(),
            offset_ms: stream.offset_in_milliseconds,
            progress: stream.progress_report.clone(),
        };
        let mut out = Vec::new();
        match play.play_behavior.unwrap_or(PlayBehavior::Enqueue) {
            PlayBehavior::ReplaceAll => {
                self.queue.clear();
                if let Some(c) = &self.current {
                    self.playback.stop(c.source);
                }
                self.queue.push_back(item);
            }
            PlayBehavior::Enqueue => {
                if let Some(expected) = &stream.expected_previous_token {
                    let last = self
                        .queue
                        .back()
                        .map(|q| q.token.as_str())
                        .or(self.current.as_ref().map(|c| c.q.token.as_str()))
                        .unwrap_or(self.last_token.as_str());
                    if last != expected {
                        tracing::info!(token = %item.token, %expected, %last, "Play ignored: expectedPreviousToken does not match");
                        return (out, None);
                    }
                }
                self.queue.push_back(item);
            }
            PlayBehavior::ReplaceEnqueued => {
                self.queue.clear();
                self.queue.push_back(item);
            }
        }
        if self.current.is_some() {
            return (out, None);
        }
        let started = self.start_next(next_source, &mut out);
        (out, started)
    }

    fn start_next(&mut self, source: SourceId, out: &mut Vec<AgentOutput>) -> Option<Started> {
        let q = self.queue.pop_front()?;
        let start = Duration::from_millis(q.offset_ms);
        type Reader = Box<dyn std::io::Read + Send + Sync>;
        let (reader, failure, side_tags): (Reader, _, _) =
            if let Some(cid) = content_id_of_url(&q.url) {
                (
                    Box::new(self.attachments.reader(&cid).into_blocking_read()),
                    None,
                    None,
                )
            } else {
                match (Url::parse(&q.url), &self.fetcher) {
                    (Ok(url), Some(fetcher)) if matches!(url.scheme(), "http" | "https") => {
                        let stream = fetcher.open(url);
                        (
                            Box::new(stream.reader),
                            Some(stream.failure),
                            Some(stream.tags),
                        )
                    }
                    _ => {
                        out.push(self.failed_event(
                            &q.token,
                            "MEDIA_ERROR_INVALID_REQUEST",
                            &format!("cannot play {:?}", q.url),
                        ));
                        return None;
                    }
                }
            };
        let updates = self.playback.enqueue(
            Channel::Content,
            source,
            Source::Stream(StreamSource {
                reader,
                start,
                side_tags,
            }),
        );
        let next_interval_ms = q
            .progress
            .as_ref()
            .and_then(|p| p.progress_report_interval_in_milliseconds)
            .filter(|i| *i > 0)
            .map(|i| first_interval_ms(i, q.offset_ms));
        // A delay the start offset has already passed is never reported (reference SDK).
        let delay_sent = q
            .progress
            .as_ref()
            .and_then(|p| p.progress_report_delay_in_milliseconds)
            .is_some_and(|d| d < q.offset_ms);
        self.current = Some(Item {
            q,
            source,
            started: false,
            start,
            offset: start,
            delay_sent,
            next_interval_ms,
            failure,
            stutter_since: None,
            paused: false,
            pending_tags: None,
            last_tags: None,
        });
        out.push(AgentOutput::AcquireFocus(Channel::Content));
        Some(Started { source, updates })
    }

    fn failed_event(&self, token: &str, kind: &str, message: &str) -> AgentOutput {
        let state = self.token_offset();
        event(&ap::Event::PlaybackFailed(PlaybackFailed {
            token: token.to_owned(),
            current_playback_state: json!({
                "token": state.token,
                "offsetInMilliseconds": state.offset_in_milliseconds,
                "playerActivity": self.activity.as_str(),
            }),
            error: MediaError {
                kind: kind.to_owned(),
                message: message.to_owned(),
            },
        }))
    }

    /// Stop: the current item stops (PlaybackStopped follows), the queue does not advance.
    pub fn stop(&mut self) {
        if let Some(c) = &self.current {
            self.hold_queue = true;
            self.playback.stop(c.source);
        }
    }

    pub fn clear_queue(&mut self, behavior: ClearBehavior) -> Vec<AgentOutput> {
        self.queue.clear();
        if behavior == ClearBehavior::ClearAll {
            self.stop();
        }
        vec![event(&ap::Event::PlaybackQueueCleared(AnyObject {}))]
    }

    /// The Content channel's focus changed (the core decided duck vs pause).
    pub fn on_focus(&mut self, focus: Focus, pause_in_background: bool) -> Vec<AgentOutput> {
        let mut out = Vec::new();
        let Some(c) = self.current.as_mut() else {
            return out;
        };
        match focus {
            Focus::Background if pause_in_background && !c.paused => {
                c.paused = true;
                self.playback.pause(Channel::Content);
                self.activity = Activity::Paused;
                out.push(event(&ap::Event::PlaybackPaused(self.token_offset())));
            }
            Focus::Foreground if c.paused => {
                c.paused = false;
                self.playback.resume(Channel::Content);
                self.activity = Activity::Playing;
                out.push(event(&ap::Event::PlaybackResumed(self.token_offset())));
            }
            Focus::None => self.stop(),
            _ => {}
        }
        self.publish();
        out
    }

    /// A transport button: tell the cloud (it answers with AudioPlayer directives).
    /// Music is playing (for a play/pause toggle button).
    pub fn is_playing(&self) -> bool {
        self.activity == Activity::Playing
    }

    pub fn button(&self, button: Button) -> AgentOutput {
        let e = match button {
            Button::Play => pc::Event::PlayCommandIssued(AnyObject {}),
            Button::Pause => pc::Event::PauseCommandIssued(AnyObject {}),
            Button::Next => pc::Event::NextCommandIssued(AnyObject {}),
            Button::Previous => pc::Event::PreviousCommandIssued(AnyObject {}),
        };
        AgentOutput::EventWithContext(Event::new(pc::NAMESPACE, &e))
    }

    /// An update about the current source. `next_source` is used when the queue advances.
    pub fn on_update(
        &mut self,
        source: SourceId,
        update: PlaybackUpdate,
        next_source: SourceId,
    ) -> (Vec<AgentOutput>, Option<Started>) {
        let mut out = Vec::new();
        let Some(c) = self.current.as_mut().filter(|c| c.source == source) else {
            return (out, None);
        };
        let mut ended = false;
        match update {
            PlaybackUpdate::Started => {
                c.started = true;
                self.activity = Activity::Playing;
                let to = TokenOffset {
                    token: c.q.token.clone(),
                    offset_in_milliseconds: ms(c.start),
                };
                out.push(event(&ap::Event::PlaybackStarted(to.clone())));
                // Downloads are progressive: the device is ready for the next item at once.
                out.push(event(&ap::Event::PlaybackNearlyFinished(to)));
                if let Some(tags) = c.pending_tags.take() {
                    out.push(metadata_event(&c.q.token, &tags));
                    c.last_tags = Some(tags);
                }
            }
            PlaybackUpdate::Metadata { tags } => {
                let new = !tags.is_empty() && c.last_tags.as_ref() != Some(&tags);
                if new && c.started {
                    out.push(metadata_event(&c.q.token, &tags));
                    c.last_tags = Some(tags);
                } else if new {
                    c.pending_tags = Some(tags);
                }
            }
            PlaybackUpdate::Progress { offset } => {
                let offset = c.start + offset;
                c.offset = offset;
                let pos = ms(offset);
                let token = c.q.token.clone();
                if let Some(delay) =
                    c.q.progress
                        .as_ref()
                        .and_then(|p| p.progress_report_delay_in_milliseconds)
                    && !c.delay_sent
                    && pos >= delay
                {
                    c.delay_sent = true;
                    out.push(event(&ap::Event::ProgressReportDelayElapsed(TokenOffset {
                        token: token.clone(),
                        offset_in_milliseconds: delay,
                    })));
                }
                let interval =
                    c.q.progress
                        .as_ref()
                        .and_then(|p| p.progress_report_interval_in_milliseconds)
                        .unwrap_or(0);
                while let Some(next) = c.next_interval_ms.filter(|n| pos >= *n && interval > 0) {
                    out.push(event(&ap::Event::ProgressReportIntervalElapsed(
                        TokenOffset {
                            token: token.clone(),
                            offset_in_milliseconds: next,
                        },
                    )));
                    c.next_interval_ms = Some(next + interval);
                }
            }
            PlaybackUpdate::StutterStarted => {
                c.stutter_since = Some(Instant::now());
                self.activity = Activity::BufferUnderrun;
                out.push(event(&ap::Event::PlaybackStutterStarted(TokenOffset {
                    token: c.q.token.clone(),
                    offset_in_milliseconds: ms(c.offset),
                })));
            }
            PlaybackUpdate::StutterFinished { stutter } => {
                c.stutter_since = None;
                self.activity = Activity::Playing;
                out.push(event(&ap::Event::PlaybackStutterFinished(
                    StutterFinished {
                        token: c.q.token.clone(),
                        offset_in_milliseconds: ms(c.offset),
                        stutter_duration_in_milliseconds: ms(stutter),
                    },
                )));
            }
            PlaybackUpdate::Finished { offset } => {
                let offset = c.start + offset;
                c.offset = offset;
                let failure = c
                    .failure
                    .as_ref()
                    .and_then(|f| f.lock().ok().and_then(|f| f.clone()));
                let token = c.q.token.clone();
                if let Some(f) = failure {
                    // The download broke off: the decoder saw a short stream, not a real end.
                    out.push(self.failed_event(&token, f.error_type(), f.message()));
                } else {
                    self.activity = Activity::Finished;
                    out.push(event(&ap::Event::PlaybackFinished(TokenOffset {
                        token,
                        offset_in_milliseconds: ms(offset),
                    })));
                }
                ended = true;
            }
            PlaybackUpdate::Stopped { offset } => {
                let offset = c.start + offset;
                c.offset = offset;
                self.activity = Activity::Stopped;
                if c.started {
                    out.push(event(&ap::Event::PlaybackStopped(TokenOffset {
                        token: c.q.token.clone(),
                        offset_in_milliseconds: ms(offset),
                    })));
                }
                ended = true;
            }
            PlaybackUpdate::Failed { error } => {
                let failure = c
                    .failure
                    .as_ref()
                    .and_then(|f| f.lock().ok().and_then(|f| f.clone()));
                let token = c.q.token.clone();
                let (kind, message) = match failure {
                    Some(f) => (f.error_type(), f.message().to_owned()),
                    None => ("MEDIA_ERROR_UNKNOWN", error),
                };
                out.push(self.failed_event(&token, kind, &message));
                self.activity = Activity::Stopped;
                ended = true;
            }
        }
        let mut started = None;
        if ended {
            if let Some(c) = self.current.take() {
                self.last_token = c.q.token;
                self.last_offset_ms = ms(c.offset);
            }
            if !std::mem::take(&mut self.hold_queue) {
                started = self.start_next(next_source, &mut out);
            }
            if started.is_none() {
                out.push(AgentOutput::ReleaseFocus(Channel::Content));
            }
        }
        self.publish();
        (out, started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_interval_report_is_the_next_multiple_after_the_start() {
        assert_eq!(first_interval_ms(1000, 0), 1000);
        assert_eq!(first_interval_ms(1000, 3000), 4000);
        assert_eq!(first_interval_ms(1000, 3500), 4000);
        assert_eq!(first_interval_ms(60_000, 15_000), 60_000);
    }
}
