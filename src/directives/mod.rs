//! Directive handling: the blocking policy of each directive and the sequencer that orders
//! them per dialogRequestId and medium (avs-protocol.md §6).

pub mod sequencer;

pub use sequencer::{Sequencer, SequencerAction};
