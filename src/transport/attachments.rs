//! Attachments (binary parts with a `Content-ID`) of every response stream, matched to the
//! directives that name them (`cid:`), whichever arrives first.
//!
//! A reader may be created before the first byte arrives, or long after the part ended. Memory is
//! bounded: each attachment buffers at most `cap_bytes` of unread data; past that it is dropped
//! with a log line and its reader gets [`AttachmentError::Overflow`]. The network stream is never
//! stalled by a slow or absent reader. Finished attachments nobody asked for are forgotten after
//! [`UNREAD_TTL`]. Readers come in an async form and a blocking `std::io::Read` form for decoder
//! threads.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::sync::Notify;
use tracing::warn;

/// How long a complete attachment nobody reads is kept.
pub const UNREAD_TTL: Duration = Duration::from_secs(120);
/// Default per-attachment cap on unread bytes.
pub const DEFAULT_CAP_BYTES: usize = 8 * 1024 * 1024;

/// Why an attachment cannot be read to its end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    #[error("attachment {content_id} exceeded {cap_bytes} unread bytes and was dropped")]
    Overflow {
        content_id: String,
        cap_bytes: usize,
    },
    #[error("attachment {content_id} was cut off: {reason}")]
    Interrupted { content_id: String, reason: String },
    #[error("attachment {content_id} already has a reader")]
    AlreadyRead { content_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Open,
    Ended,
    Failed(AttachmentError),
}

#[derive(Debug)]
struct SlotState {
    chunks: VecDeque<Bytes>,
    buffered_bytes: usize,
    status: Status,
    has_reader: bool,
    touched: Instant,
}

#[derive(Debug)]
struct Slot {
    state: Mutex<SlotState>,
    cond: Condvar,
    notify: Notify,
}

impl Slot {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SlotState {
                chunks: VecDeque::new(),
                buffered_bytes: 0,
                status: Status::Open,
                has_reader: false,
                touched: Instant::now(),
            }),
            cond: Condvar::new(),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake(&self) {
        self.cond.notify_all();
        self.notify.notify_one();
    }
}

#[derive(Debug)]
struct Inner {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    cap_bytes: usize,
}

/// The attachment registry shared by every stream of the link; cheap to clone.
#[derive(Debug, Clone)]
pub struct Attachments {
    inner: Arc<Inner>,
}

impl Default for Attachments {
    fn default() -> Self {
        Self::new(DEFAULT_CAP_BYTES)
    }
}

impl Attachments {
    pub fn new(cap_bytes: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                slots: Mutex::new(HashMap::new()),
                cap_bytes: cap_bytes.max(1),
            }),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A reader for `content_id` (angle brackets already stripped, as in `cid:` urls). Works
    /// whether the part arrived before or after this call.
    pub fn reader(&self, content_id: &str) -> AttachmentReader {
        let slot = self
            .slots()
            .entry(content_id.to_owned())
            .or_insert_with(Slot::new)
            .clone();
        let taken = {
            let mut st = slot.lock();
            std::mem::replace(&mut st.has_reader, true)
        };
        AttachmentReader {
            content_id: content_id.to_owned(),
            slot: (!taken).then_some(slot),
            registry: self.clone(),
            finished: false,
            current: Bytes::new(),
        }
    }

    /// Starts receiving the part `content_id`.
    pub(crate) fn begin(&self, content_id: &str) -> AttachmentWriter {
        let mut slots = self.slots();
        let now = Instant::now();
        slots.retain(|_, s| {
            let st = s.lock();
            st.has_reader
                || st.status == Status::Open
                || now.saturating_duration_since(st.touched) < UNREAD_TTL
        });
        let slot = slots
            .entry(content_id.to_owned())
            .or_insert_with(Slot::new)
            .clone();
        drop(slots);
        AttachmentWriter {
            content_id: content_id.to_owned(),
            slot,
            cap_bytes: self.inner.cap_bytes,
            done: false,
        }
    }

    /// Attachments currently held (for tests and status).
    pub fn held(&self) -> usize {
        self.slots().len()
    }

    fn forget(&self, content_id: &str, slot: &Arc<Slot>) {
        let mut slots = self.slots();
        if slots.get(content_id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(content_id);
        }
    }
}

/// Feeds one attachment part; dropping it before [`AttachmentWriter::end`] marks the
/// attachment as cut off.
pub(crate) struct AttachmentWriter {
    content_id: String,
    slot: Arc<Slot>,
    cap_bytes: usize,
    done: bool,
}

impl AttachmentWriter {
    pub(crate) fn push(&mut self, chunk: Bytes) {
        let mut st = self.slot.lock();
        if st.status != Status::Open {
            return;
        }
        st.touched = Instant::now();
        if st.buffered_bytes + chunk.len() > self.cap_bytes {
            st.chunks.clear();
            st.buffered_bytes = 0;
            st.status = Status::Failed(AttachmentError::Overflow {
                content_id: self.content_id.clone(),
                cap_bytes: self.cap_bytes,
            });
            drop(st);
            warn!(content_id = %self.content_id, cap_bytes = self.cap_bytes,
                "attachment exceeded its unread-bytes cap; dropped");
            self.slot.wake();
            return;
        }
        st.buffered_bytes += chunk.len();
        st.chunks.push_back(chunk);
        drop(st);
        self.slot.wake();
    }

    pub(crate) fn end(mut self) {
        self.finish(Status::Ended);
    }

    pub(crate) fn fail(mut self, reason: String) {
        let content_id = self.content_id.clone();
        self.finish(Status::Failed(AttachmentError::Interrupted {
            content_id,
            reason,
        }));
    }

    fn finish(&mut self, status: Status) {
        self.done = true;
        let mut st = self.slot.lock();
        if st.status == Status::Open {
            st.status = status;
        }
        st.touched = Instant::now();
        drop(st);
        self.slot.wake();
    }
}

impl Drop for AttachmentWriter {
    fn drop(&mut self) {
        if !self.done {
            let content_id = self.content_id.clone();
            self.finish(Status::Failed(AttachmentError::Interrupted {
                content_id,
                reason: "the response stream ended inside the part".into(),
            }));
        }
    }
}

/// Reads one attachment's bytes as they arrive.
#[derive(Debug)]
pub struct AttachmentReader {
    content_id: String,
    /// `None` when another reader already owns the attachment.
    slot: Option<Arc<Slot>>,
    registry: Attachments,
    finished: bool,
    current: Bytes,
}

enum Step {
    Chunk(Bytes),
    End,
    Error(AttachmentError),
    Wait,
}

impl AttachmentReader {
    pub fn content_id(&self) -> &str {
        &self.content_id
    }

    fn step(&mut self) -> Step {
        if self.finished {
            return Step::End;
        }
        let Some(slot) = &self.slot else {
            self.finished = true;
            return Step::Error(AttachmentError::AlreadyRead {
                content_id: self.content_id.clone(),
            });
        };
        let mut st = slot.lock();
        if let Some(chunk) = st.chunks.pop_front() {
            st.buffered_bytes -= chunk.len();
            return Step::Chunk(chunk);
        }
        match st.status.clone() {
            Status::Open => Step::Wait,
            Status::Ended => {
                self.finished = true;
                Step::End
            }
            Status::Failed(e) => {
                self.finished = true;
                Step::Error(e)
            }
        }
    }

    /// The next chunk; `None` at the part's end.
    pub async fn next(&mut self) -> Option<Result<Bytes, AttachmentError>> {
        loop {
            let slot = self.slot.clone();
            let notified = slot.as_ref().map(|s| s.notify.notified());
            match self.step() {
                Step::Chunk(c) => return Some(Ok(c)),
                Step::End => return None,
                Step::Error(e) => return Some(Err(e)),
                Step::Wait => {
                    if let Some(n) = notified {
                        n.await;
                    }
                }
            }
        }
    }

    /// A blocking reader for a decoder thread (errors surface as `io::Error`).
    pub fn into_blocking_read(self) -> impl Read + Send + Sync {
        BlockingAttachmentReader { inner: self }
    }

    fn next_blocking(&mut self) -> Option<Result<Bytes, AttachmentError>> {
        loop {
            match self.step() {
                Step::Chunk(c) => return Some(Ok(c)),
                Step::End => return None,
                Step::Error(e) => return Some(Err(e)),
                Step::Wait => {
                    if let Some(slot) = &self.slot {
                        let st = slot.lock();
                        if st.chunks.is_empty() && st.status == Status::Open {
                            drop(slot.cond.wait(st).unwrap_or_else(PoisonError::into_inner));
                        }
                    }
                }
            }
        }
    }
}

impl Drop for AttachmentReader {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            self.registry.forget(&self.content_id, slot);
        }
    }
}

struct BlockingAttachmentReader {
    inner: AttachmentReader,
}

impl Read for BlockingAttachmentReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.inner.current.is_empty() {
            match self.inner.next_blocking() {
                Some(Ok(c)) => self.inner.current = c,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.inner.current.len());
        buf[..n].copy_from_slice(&self.inner.current[..n]);
        self.inner.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reader_before_and_after_the_part() {
        let a = Attachments::new(1024);
        let mut early = a.reader("tts-1");
        let mut w = a.begin("tts-1");
        w.push(Bytes::from_static(b"abc"));
        assert_eq!(
            early.next().await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        w.push(Bytes::from_static(b"de"));
        w.end();
        assert_eq!(
            early.next().await.unwrap().unwrap(),
            Bytes::from_static(b"de")
        );
        assert!(early.next().await.is_none());
        drop(early);
        assert_eq!(a.held(), 0);

        let mut w = a.begin("tts-2");
        w.push(Bytes::from_static(b"xyz"));
        w.end();
        let mut late = a.reader("tts-2");
        assert_eq!(
            late.next().await.unwrap().unwrap(),
            Bytes::from_static(b"xyz")
        );
        assert!(late.next().await.is_none());
        let mut second = a.reader("tts-2");
        assert!(matches!(
            second.next().await,
            Some(Err(AttachmentError::AlreadyRead { .. }))
        ));
    }

    #[tokio::test]
    async fn unread_attachment_over_cap_is_dropped_without_blocking_the_writer() {
        let a = Attachments::new(10);
        let mut w = a.begin("big");
        for _ in 0..100 {
            w.push(Bytes::from_static(b"0123"));
        }
        w.end();
        let mut r = a.reader("big");
        assert!(matches!(
            r.next().await,
            Some(Err(AttachmentError::Overflow { cap_bytes: 10, .. }))
        ));
        assert!(r.next().await.is_none());
    }

    #[tokio::test]
    async fn writer_dropped_mid_part_is_reported() {
        let a = Attachments::new(100);
        let mut r = a.reader("cut");
        let mut w = a.begin("cut");
        w.push(Bytes::from_static(b"12"));
        drop(w);
        assert!(r.next().await.unwrap().is_ok());
        assert!(matches!(
            r.next().await,
            Some(Err(AttachmentError::Interrupted { .. }))
        ));
    }

    #[test]
    fn blocking_reader_on_a_thread_sees_bytes_as_they_come() {
        let a = Attachments::new(1 << 20);
        let r = a.reader("mp3");
        let t = std::thread::spawn(move || {
            let mut all = Vec::new();
            r.into_blocking_read().read_to_end(&mut all).unwrap();
            all
        });
        let mut w = a.begin("mp3");
        for i in 0..50u8 {
            w.push(Bytes::from(vec![i; 100]));
            std::thread::yield_now();
        }
        w.end();
        let all = t.join().unwrap();
        assert_eq!(all.len(), 5000);
        assert_eq!(all[4999], 49);
    }
}
