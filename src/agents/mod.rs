//! The AVS capability agents. Each owns its state and turns directives and audio updates into
//! [`AgentOutput`]s that the dialog core carries out (send an event, tell the sequencer a
//! directive completed or failed, move the attention state, take or give back an audio channel).

pub mod alerts;
pub mod audio_player;
pub mod speaker;
pub mod speech_recognizer;
pub mod speech_synthesizer;
pub mod system;

use avs_proto::Event;

use crate::attention::AttentionInput;
use crate::audio::Channel;

/// What an agent asks the dialog core to do.
#[derive(Debug)]
pub enum AgentOutput {
    /// Send this event (no context).
    Event(Event),
    /// Send this event with the full context.
    EventWithContext(Event),
    /// A blocking directive finished.
    Completed {
        message_id: String,
    },
    /// A directive failed: the rest of its dialog is cancelled.
    Failed {
        message_id: String,
        dialog_request_id: Option<String>,
    },
    Attention(AttentionInput),
    /// Take (or give back) an audio channel: focus changes follow.
    AcquireFocus(Channel),
    ReleaseFocus(Channel),
}
