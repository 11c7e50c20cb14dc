//! The context board: every agent publishes its state entry here and events read a snapshot
//! without waiting on any task (style.md, "Where state lives").

use std::sync::Arc;

use avs_proto::ContextEntry;
use tokio::sync::watch;

use crate::transport::ContextProvider;

/// Writer side, cheap to clone.
#[derive(Clone)]
pub struct ContextBoard {
    tx: Arc<watch::Sender<Vec<ContextEntry>>>,
}

impl ContextBoard {
    /// A board holding `initial` entries.
    pub fn new(initial: Vec<ContextEntry>) -> Self {
        let (tx, _) = watch::channel(initial);
        Self { tx: Arc::new(tx) }
    }

    /// Replaces the entry with the same namespace and name (or adds it).
    pub fn set(&self, entry: ContextEntry) {
        self.tx.send_modify(|entries| {
            match entries.iter_mut().find(|e| e.header == entry.header) {
                Some(e) => *e = entry,
                None => entries.push(entry),
            }
        });
    }

    pub fn snapshot(&self) -> Vec<ContextEntry> {
        self.tx.borrow().clone()
    }

    /// The provider the transport calls for SynchronizeState.
    pub fn provider(&self) -> ContextProvider {
        let rx = self.tx.subscribe();
        Arc::new(move || rx.borrow().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_by_name() {
        let board = ContextBoard::new(vec![ContextEntry::volume_state(10, false)]);
        let provider = board.provider();
        board.set(ContextEntry::volume_state(20, true));
        board.set(ContextEntry::speech_state("t", 5, "PLAYING"));
        let snap = provider();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].payload["volume"], 20);
        assert_eq!(snap[1].qualified_name(), "SpeechSynthesizer.SpeechState");
    }
}
