//! The turn engine's contract: how a turn's directives reach the open Recognize response
//! stream. The gateway owns the stream; whoever produces a turn's answer (a scenario, a skill
//! through `skill::run_turn`) only holds a [`TurnSink`], and the stream ends when every sink
//! clone is dropped.

/// One directive for the open Recognize response stream, with its MP3 attachment if it has one.
pub struct TurnDirective {
    pub json: String,
    pub attachment: Option<(String /* content id */, bytes::Bytes)>,
}

/// Where a turn's directives go: the writer of the Recognize's response stream.
pub type TurnSink = tokio::sync::mpsc::Sender<TurnDirective>;
