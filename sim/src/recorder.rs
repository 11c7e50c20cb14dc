//! The recorder: every request the sim answered and every event it parsed, with arrival time
//! (offset from sim start and wall clock), and the audio of each Recognize saved as a WAV file.
//! Tests read it in-process and wait for an event by name; `GET /admin/recorder` serves it as
//! JSON. It does not decide anything; the gateway and LWA write to it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

/// One recorded request or event.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Position in the recording, from 0.
    pub seq: usize,
    /// Time since the sim started.
    #[serde(serialize_with = "ser_ms")]
    pub at: Duration,
    /// Wall clock, RFC 3339.
    pub wall: String,
    pub method: String,
    pub path: String,
    /// The HTTP status answered (for events, the status of the event's response).
    pub status: Option<u16>,
    /// Serial number of the device the bearer token belongs to.
    pub device: Option<String>,
    /// The parsed event, for `POST /v20160207/events`.
    pub event: Option<RecordedEvent>,
    /// The Recognize audio saved as 16 kHz mono WAV.
    pub audio_wav: Option<PathBuf>,
    /// `host:port` of the listener whose connection carried it (downchannels and events).
    pub listener: Option<String>,
}

/// The parts of an event a test asserts on.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedEvent {
    pub namespace: String,
    pub name: String,
    pub message_id: String,
    pub dialog_request_id: Option<String>,
    pub payload: Value,
    pub has_context: bool,
    /// The context entries as sent (a JSON array), when the event carried them.
    pub context: Option<Value>,
}

impl RecordedEvent {
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Why a wait ended without a match.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("no {what} recorded within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
}

struct Inner {
    records: Vec<Record>,
}

/// Cheaply cloneable handle on the recording.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
    started: Instant,
    changed: watch::Sender<usize>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                records: Vec::new(),
            })),
            started: Instant::now(),
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the Vec half-updated in a way that
        // matters for a test log, so a poisoned lock is simply reused.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record and returns its sequence number.
    pub fn record(
        &self,
        method: &str,
        path: &str,
        status: Option<u16>,
        device: Option<String>,
        event: Option<RecordedEvent>,
    ) -> usize {
        self.record_via(method, path, status, device, event, None)
    }

    /// [`Recorder::record`] noting the listener (`host:port`) whose connection carried it.
    pub fn record_via(
        &self,
        method: &str,
        path: &str,
        status: Option<u16>,
        device: Option<String>,
        event: Option<RecordedEvent>,
        listener: Option<&str>,
    ) -> usize {
        let wall = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let seq = {
            let mut inner = self.lock();
            let seq = inner.records.len();
            inner.records.push(Record {
                seq,
                at: self.started.elapsed(),
                wall,
                method: method.to_owned(),
                path: path.to_owned(),
                status,
                device,
                event,
                audio_wav: None,
                listener: listener.map(str::to_owned),
            });
            seq
        };
        self.changed.send_replace(seq + 1);
        seq
    }

    /// Sets the answered status of a record made before the answer was known.
    pub fn set_status(&self, seq: usize, status: u16) {
        if let Some(r) = self.lock().records.get_mut(seq) {
            r.status = Some(status);
        }
        self.changed.send_modify(|_| {});
    }

    /// Attaches the saved Recognize audio to its record.
    pub fn set_audio(&self, seq: usize, wav: PathBuf) {
        if let Some(r) = self.lock().records.get_mut(seq) {
            r.audio_wav = Some(wav);
        }
        self.changed.send_modify(|_| {});
    }

    /// A copy of everything recorded so far.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// The events recorded from record `mark` on (a [`Recorder::len`] taken earlier), in order.
    pub fn events_since(&self, mark: usize) -> Vec<RecordedEvent> {
        self.lock()
            .records
            .iter()
            .skip(mark)
            .filter_map(|r| r.event.clone())
            .collect()
    }

    /// The recorded events named `Namespace.Name`.
    pub fn events(&self, qualified_name: &str) -> Vec<Record> {
        self.lock()
            .records
            .iter()
            .filter(|r| matches(r, qualified_name))
            .cloned()
            .collect()
    }

    /// Number of records so far; pass it to [`Recorder::wait_for_event_after`] to wait only
    /// for later ones.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until an event named `Namespace.Name` has been recorded (at any time).
    pub async fn wait_for_event(
        &self,
        qualified_name: &str,
        timeout: Duration,
    ) -> Result<Record, RecorderError> {
        self.wait_for(0, timeout, qualified_name, |r| matches(r, qualified_name))
            .await
    }

    /// Waits for an event named `Namespace.Name` with sequence number `>= from_seq`.
    pub async fn wait_for_event_after(
        &self,
        from_seq: usize,
        qualified_name: &str,
        timeout: Duration,
    ) -> Result<Record, RecorderError> {
        self.wait_for(from_seq, timeout, qualified_name, |r| {
            matches(r, qualified_name)
        })
        .await
    }

    /// Waits for any record with sequence number `>= from_seq` that satisfies `pred`.
    pub async fn wait_for<F: Fn(&Record) -> bool>(
        &self,
        from_seq: usize,
        timeout: Duration,
        what: &str,
        pred: F,
    ) -> Result<Record, RecorderError> {
        let mut rx = self.changed.subscribe();
        let search = || {
            self.lock()
                .records
                .iter()
                .skip(from_seq)
                .find(|r| pred(r))
                .cloned()
        };
        let wait = async {
            loop {
                rx.borrow_and_update();
                if let Some(r) = search() {
                    return Some(r);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Some(r)) => Ok(r),
            _ => Err(RecorderError::Timeout {
                what: what.to_owned(),
                timeout,
            }),
        }
    }
}

fn matches(r: &Record, qualified_name: &str) -> bool {
    r.event
        .as_ref()
        .is_some_and(|e| e.qualified_name() == qualified_name)
}

/// Writes 16 kHz mono s16le PCM as a WAV file (blocking).
pub fn write_wav(path: &std::path::Path, pcm_s16le: &[u8]) -> Result<(), hound::Error> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)?;
    for s in pcm_s16le.chunks_exact(2) {
        w.write_sample(i16::from_le_bytes([s[0], s[1]]))?;
    }
    w.finalize()
}
