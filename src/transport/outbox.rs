//! The outbox: the handle every agent uses to send events, outliving reconnects.
//!
//! Ordinary events queue here (bounded; when full the oldest is dropped and counted) and the
//! connection's sender takes them one at a time, in order, removing each only once AVS accepted
//! it with a 2xx, so an event in flight when a connection dies is sent again on the next one
//! and an accepted one never is. `Recognize` is not queued: it needs a live connection to stream
//! its audio, so it is handed straight to the current connection or refused.
//!
//! Each queued event keeps the wall-clock time it was queued, and every change bumps a revision
//! counter, so [`store`] can keep a copy on disk across restarts and power cuts.

pub mod store;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use avs_proto::Event;
use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::warn;

/// How a response stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// The response ended; its directives were all delivered. The HTTP status.
    Status(u16),
    /// No complete response: the connection or the stream failed.
    Failed(String),
}

/// Fires when the Recognize's response stream has ended.
#[derive(Debug)]
pub struct RecognizeHandle {
    pub response: oneshot::Receiver<ResponseOutcome>,
}

/// Why a Recognize could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("not connected to AVS")]
    NotConnected,
    #[error("the connection is busy starting other recognize streams")]
    Busy,
}

/// Delivers an outcome exactly once; dropping it unsent reports the connection as lost.
pub(crate) struct OutcomeGuard(Option<oneshot::Sender<ResponseOutcome>>);

impl OutcomeGuard {
    pub(crate) fn new() -> (Self, oneshot::Receiver<ResponseOutcome>) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(tx)), rx)
    }

    pub(crate) fn complete(mut self, outcome: ResponseOutcome) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(outcome);
        }
    }
}

impl Drop for OutcomeGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(ResponseOutcome::Failed(
                "connection closed before the response ended".into(),
            ));
        }
    }
}

/// A Recognize handed to the current connection.
pub(crate) struct RecognizeRequest {
    pub event: Event,
    pub audio: mpsc::Receiver<Bytes>,
    pub outcome: OutcomeGuard,
    /// Message ids of the events queued before it: the cloud must see them first (a question's
    /// SpeechFinished before the answer's Recognize).
    pub after: Vec<String>,
}

/// An event waiting to be sent, with the wall-clock time it was queued.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedEvent {
    pub event: Event,
    pub queued_at: SystemTime,
}

/// The ordered, bounded queue itself (pure; no I/O, no waiting).
#[derive(Debug)]
pub struct EventQueue {
    events: VecDeque<QueuedEvent>,
    capacity: usize,
    dropped: u64,
}

impl EventQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    /// Appends an event queued at `queued_at`; returns the event dropped to make room, if any.
    pub fn push(&mut self, event: Event, queued_at: SystemTime) -> Option<Event> {
        self.events.push_back(QueuedEvent { event, queued_at });
        if self.events.len() > self.capacity {
            self.dropped += 1;
            return self.events.pop_front().map(|q| q.event);
        }
        None
    }

    /// Puts events from an earlier run in front of everything queued since (they are older),
    /// oldest first. The capacity still holds: the oldest go first. Returns how many were
    /// dropped for room.
    pub fn restore(&mut self, older: Vec<QueuedEvent>) -> usize {
        let before = self.dropped;
        for q in older.into_iter().rev() {
            if self.events.len() >= self.capacity {
                // Everything left in `older` is older still than what is queued: drop it.
                self.dropped += 1;
                continue;
            }
            self.events.push_front(q);
        }
        (self.dropped - before) as usize
    }

    /// The next event to send (it stays queued until [`EventQueue::delivered`]).
    pub fn front(&self) -> Option<&Event> {
        self.events.front().map(|q| &q.event)
    }

    /// Every queued event, oldest first, with its queue time.
    pub fn iter(&self) -> impl Iterator<Item = &QueuedEvent> {
        self.events.iter()
    }

    /// AVS accepted (or finally refused) the event with this messageId: forget it. Does nothing
    /// if it is no longer at the front (dropped meanwhile for room).
    pub fn delivered(&mut self, message_id: &str) {
        if self
            .events
            .front()
            .is_some_and(|q| q.event.header.message_id == message_id)
        {
            self.events.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Events dropped for room since start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

pub(crate) struct OutboxShared {
    queue: Mutex<EventQueue>,
    pub(crate) queued: Notify,
    session: Mutex<Option<mpsc::Sender<RecognizeRequest>>>,
    /// Bumped (under the queue lock) on every change of the queue's content.
    revision: AtomicU64,
    /// Wakes the store's writer after a change.
    pub(crate) changed: Notify,
    /// The revision, for any number of waiters (a Recognize waiting for earlier events).
    revision_tx: watch::Sender<u64>,
}

/// Handle for sending events; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pub(crate) shared: Arc<OutboxShared>,
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(OutboxShared {
                queue: Mutex::new(EventQueue::new(capacity)),
                queued: Notify::new(),
                session: Mutex::new(None),
                revision: AtomicU64::new(0),
                changed: Notify::new(),
                revision_tx: watch::Sender::new(0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EventQueue> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Call with the queue lock held, after changing the queue.
    fn bump(&self) {
        let rev = self.shared.revision.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.changed.notify_one();
        self.shared.revision_tx.send_replace(rev);
    }

    /// Returns once none of `ids` is queued any more (accepted by AVS, or dropped), or after
    /// `limit`; `false` when the limit ran out.
    pub(crate) async fn wait_sent(&self, ids: &[String], limit: std::time::Duration) -> bool {
        if ids.is_empty() {
            return true;
        }
        let mut rx = self.shared.revision_tx.subscribe();
        let pending = |q: &EventQueue| q.iter().any(|e| ids.contains(&e.event.header.message_id));
        let wait = async {
            loop {
                rx.borrow_and_update();
                if !pending(&self.lock()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Queues an event; never blocks. Kept while offline (bounded, oldest dropped with a counted
    /// log line) and sent once, in order, when connected.
    pub fn send(&self, event: Event) {
        let dropped = {
            let mut q = self.lock();
            let dropped = q.push(event, SystemTime::now()).map(|e| (e, q.dropped()));
            self.bump();
            dropped
        };
        if let Some((old, total)) = dropped {
            warn!(event = %old.qualified_name(), message_id = %old.header.message_id, dropped_total = total,
                "outbox full; dropped the oldest queued event");
        }
        self.shared.queued.notify_one();
    }

    /// Starts a Recognize on the current connection, streaming `audio` as its audio part until
    /// the sender is dropped. Not queued: `Err(NotConnected)` when offline.
    pub fn send_recognize(
        &self,
        event: Event,
        audio: mpsc::Receiver<Bytes>,
    ) -> Result<RecognizeHandle, SendError> {
        let session = self
            .shared
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(session) = session else {
            return Err(SendError::NotConnected);
        };
        let after = self
            .lock()
            .iter()
            .map(|e| e.event.header.message_id.clone())
            .collect();
        let (outcome, response) = OutcomeGuard::new();
        match session.try_send(RecognizeRequest {
            event,
            audio,
            outcome,
            after,
        }) {
            Ok(()) => Ok(RecognizeHandle { response }),
            Err(mpsc::error::TrySendError::Full(_)) => Err(SendError::Busy),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::NotConnected),
        }
    }

    /// Events waiting to be sent.
    pub fn queued_len(&self) -> usize {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Removes and returns every queued event, oldest first (to persist them at shutdown).
    pub fn take_queued(&self) -> Vec<Event> {
        let mut q = self.lock();
        let taken = std::iter::from_fn(|| {
            let e = q.front()?.clone();
            q.delivered(&e.header.message_id);
            Some(e)
        })
        .collect();
        self.bump();
        taken
    }

    /// A copy of the queue (oldest first) and its revision; the queue is left as it is.
    pub fn snapshot(&self) -> (u64, Vec<QueuedEvent>) {
        let q = self.lock();
        (
            self.shared.revision.load(Ordering::Relaxed),
            q.iter().cloned().collect(),
        )
    }

    /// Queues events kept from an earlier run ahead of anything queued since; returns how many
    /// did not fit.
    pub fn restore(&self, older: Vec<QueuedEvent>) -> usize {
        if older.is_empty() {
            return 0;
        }
        let dropped = {
            let mut q = self.lock();
            let dropped = q.restore(older);
            self.bump();
            dropped
        };
        self.shared.queued.notify_one();
        dropped
    }

    /// Events dropped for room since start.
    pub fn dropped_count(&self) -> u64 {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dropped()
    }

    pub(crate) fn front(&self) -> Option<Event> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .front()
            .cloned()
    }

    pub(crate) fn delivered(&self, message_id: &str) {
        let mut q = self.lock();
        q.delivered(message_id);
        self.bump();
    }

    pub(crate) fn set_session(&self, session: Option<mpsc::Sender<RecognizeRequest>>) {
        *self
            .shared
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = session;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(n: u32) -> Event {
        Event::raw("Test", &format!("E{n}"), json!({}))
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)
    }

    #[tokio::test]
    async fn a_recognize_waits_for_the_events_queued_before_it() {
        let outbox = Outbox::new(8);
        let (tx, mut rx) = mpsc::channel(1);
        outbox.set_session(Some(tx));
        outbox.send(ev(0));
        outbox.send(ev(1));
        let (_audio_tx, audio) = mpsc::channel(1);
        let _handle = outbox.send_recognize(ev(2), audio).unwrap();
        let req = rx.recv().await.unwrap();
        assert_eq!(req.after.len(), 2, "both earlier events are waited for");

        let limit = std::time::Duration::from_secs(30);
        let waiter = {
            let outbox = outbox.clone();
            let after = req.after.clone();
            tokio::spawn(async move { outbox.wait_sent(&after, limit).await })
        };
        // Only a delivery can release it before the (long) limit.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "two events still queued");
        for id in &req.after[..1] {
            outbox.delivered(id);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one event still queued");
        outbox.delivered(&req.after[1]);
        assert!(waiter.await.unwrap(), "released once both were accepted");

        // An event queued after the Recognize is not waited for, and the wait is bounded.
        outbox.send(ev(3));
        assert!(outbox.wait_sent(&req.after, limit).await);
        let stuck = vec![outbox.front().unwrap().header.message_id];
        let short = std::time::Duration::from_millis(10);
        assert!(
            !outbox.wait_sent(&stuck, short).await,
            "gives up after the limit"
        );
    }

    #[test]
    fn keeps_order_and_removes_only_what_was_delivered() {
        let mut q = EventQueue::new(8);
        for n in 0..3 {
            assert!(q.push(ev(n), at(1)).is_none());
        }
        let first = q.front().unwrap().clone();
        assert_eq!(first.header.name, "E0");
        // A failed send leaves it at the front: the next connection sends it again.
        assert_eq!(
            q.front().unwrap().header.message_id,
            first.header.message_id
        );
        q.delivered(&first.header.message_id);
        // Delivering the same id twice does not remove the next event.
        q.delivered(&first.header.message_id);
        let names: Vec<_> = std::iter::from_fn(|| {
            let e = q.front()?.clone();
            q.delivered(&e.header.message_id);
            Some(e.header.name)
        })
        .collect();
        assert_eq!(names, vec!["E1", "E2"]);
        assert!(q.is_empty());
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let mut q = EventQueue::new(2);
        q.push(ev(0), at(0));
        q.push(ev(1), at(1));
        let dropped = q.push(ev(2), at(2)).unwrap();
        assert_eq!(dropped.header.name, "E0");
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.len(), 2);
        assert_eq!(q.front().unwrap().header.name, "E1");
        // The in-flight front was dropped meanwhile: delivering it must not remove E2.
        let inflight = q.front().unwrap().clone();
        q.push(ev(3), at(3));
        q.delivered(&inflight.header.message_id);
        assert_eq!(q.front().unwrap().header.name, "E2");
    }

    #[test]
    fn restored_events_go_first_and_the_oldest_make_room() {
        let mut q = EventQueue::new(3);
        q.push(ev(10), at(10));
        let older = (0..4)
            .map(|n| QueuedEvent {
                event: ev(n),
                queued_at: at(u64::from(n)),
            })
            .collect();
        assert_eq!(q.restore(older), 2, "E0 and E1 do not fit");
        let names: Vec<_> = q.iter().map(|x| x.event.header.name.clone()).collect();
        assert_eq!(names, vec!["E2", "E3", "E10"]);
        assert_eq!(q.dropped(), 2);
    }

    #[tokio::test]
    async fn recognize_needs_a_connection_and_a_dropped_guard_reports_failure() {
        let outbox = Outbox::new(4);
        let (_tx, rx) = mpsc::channel(1);
        assert_eq!(
            outbox.send_recognize(ev(0), rx).unwrap_err(),
            SendError::NotConnected
        );
        let (stx, mut srx) = mpsc::channel(1);
        outbox.set_session(Some(stx));
        let (_tx, rx) = mpsc::channel(1);
        let handle = outbox.send_recognize(ev(1), rx).unwrap();
        let (_tx2, rx2) = mpsc::channel(1);
        assert_eq!(
            outbox.send_recognize(ev(2), rx2).unwrap_err(),
            SendError::Busy
        );
        drop(srx.recv().await.unwrap());
        assert!(matches!(
            handle.response.await.unwrap(),
            ResponseOutcome::Failed(_)
        ));
    }
}
