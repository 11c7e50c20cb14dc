//! The outbox on disk: `<state_dir>/outbox.json` holds the events not yet accepted by AVS, so
//! they survive a stop, a crash or a power cut, and which of them are worth sending after a
//! restart.
//!
//! - While the daemon runs, [`OutboxStore::run`] rewrites the file (atomically, mode 0600,
//!   through [`crate::persist`]) at most `interval` after each change of the queue, and only when
//!   the set of queued events differs from what is on disk: online, events leave the queue within
//!   the interval and nothing is written; offline, a SIGKILL loses at most the last interval.
//! - At shutdown [`OutboxStore::save_now`] writes the final queue.
//! - At start [`OutboxStore::restore`] reads the file and requeues, in their original order and
//!   with the context they were built with, the events [`replay_verdict`] keeps and that are
//!   younger than the configured maximum age.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use avs_proto::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Outbox, QueuedEvent};
use crate::persist::{self, PersistError};

/// File name inside the state directory.
pub const OUTBOX_FILE: &str = "outbox.json";
/// Format version written; other versions are ignored (and replaced) on load.
const VERSION: u32 = 1;

/// Whether an event from an earlier run is sent after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// State the cloud must learn even late (a directive's result, something that happened).
    Replay,
    /// Meaningless or harmful once the process that raised it is gone; the reason is logged.
    Drop(&'static str),
}

/// The replay rule per event kind (avs-protocol.md §2.1 step 5, §5): what AVS's own persistent
/// queue keeps (alert results, volume) plus the terminal AudioPlayer reports; nothing that
/// belongs to a dialog, a rendering or a user gesture of the previous run.
pub fn replay_verdict(namespace: &str, name: &str) -> Verdict {
    match (namespace, name) {
        ("Alerts", "AlertEnteredForeground" | "AlertEnteredBackground") => {
            Verdict::Drop("describes a rendering that ended with the previous run")
        }
        ("Alerts", _) => Verdict::Replay,
        ("Speaker", "VolumeChanged" | "MuteChanged") => Verdict::Replay,
        (
            "AudioPlayer",
            "PlaybackStopped" | "PlaybackFinished" | "PlaybackFailed" | "PlaybackQueueCleared",
        ) => Verdict::Replay,
        ("AudioPlayer", "PlaybackNearlyFinished") => {
            Verdict::Drop("would make the cloud queue the next track for an idle player")
        }
        ("AudioPlayer", _) => {
            Verdict::Drop("describes a playback that ended with the previous run")
        }
        ("SpeechRecognizer" | "SpeechSynthesizer", _) => {
            Verdict::Drop("belongs to a dialog that ended with the previous run")
        }
        ("PlaybackController", _) => Verdict::Drop("a button press is only meant for its moment"),
        ("System", "SoftwareInfo") | ("Settings", "SettingsUpdated") => Verdict::Replay,
        ("System", "LocalesChanged" | "LocaleCombinationsChanged") => Verdict::Replay,
        ("System", "UserInactivityReport") => {
            Verdict::Drop("a fresh report with the true inactive time follows on schedule")
        }
        ("System", "ExceptionEncountered") => {
            Verdict::Drop("refers to a directive of a connection that is gone")
        }
        ("System", "SynchronizeState") => Verdict::Drop("every connection sends a fresh one"),
        _ => Verdict::Drop("not known to be safe to send late"),
    }
}

/// Keeps, in order, the events worth sending after a restart at `now`; returns them and the
/// dropped ones with the reason.
pub fn select_for_replay(
    events: Vec<QueuedEvent>,
    now: SystemTime,
    max_age: Duration,
) -> (Vec<QueuedEvent>, Vec<(QueuedEvent, &'static str)>) {
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    for q in events {
        let age = now.duration_since(q.queued_at).unwrap_or(Duration::ZERO);
        match replay_verdict(&q.event.header.namespace, &q.event.header.name) {
            Verdict::Drop(why) => dropped.push((q, why)),
            Verdict::Replay if age > max_age => {
                dropped.push((q, "older than cloud.offline_event_max_age_s"))
            }
            Verdict::Replay => keep.push(q),
        }
    }
    (keep, dropped)
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent {
    queued_at_unix_ms: u64,
    /// The event's metadata part exactly as it would be sent (header, payload, context).
    metadata: Value,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredOutbox {
    version: u32,
    events: Vec<StoredEvent>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// Writes `events` to `path` atomically (0600: contexts may name what the user listened to).
pub fn save(path: &Path, events: &[QueuedEvent]) -> Result<(), PersistError> {
    let stored = StoredOutbox {
        version: VERSION,
        events: events
            .iter()
            .map(|q| StoredEvent {
                queued_at_unix_ms: unix_ms(q.queued_at),
                metadata: serde_json::from_str(&q.event.to_json()).unwrap_or(Value::Null),
            })
            .collect(),
    };
    persist::write_json(path, &stored, 0o600)
}

/// Reads the events stored at `path`, oldest first; an unreadable entry is skipped with a log
/// line, a missing file is an empty queue.
pub fn load(path: &Path) -> Result<Vec<QueuedEvent>, PersistError> {
    let Some(stored) = persist::read_json::<StoredOutbox>(path)? else {
        return Ok(Vec::new());
    };
    if stored.version != VERSION {
        warn!(
            version = stored.version,
            "stored outbox has an unknown format; ignored"
        );
        return Ok(Vec::new());
    }
    Ok(stored
        .events
        .into_iter()
        .filter_map(|s| {
            let bytes = serde_json::to_vec(&s.metadata).ok()?;
            match Event::from_json(&bytes) {
                Ok(event) => Some(QueuedEvent {
                    event,
                    queued_at: UNIX_EPOCH + Duration::from_millis(s.queued_at_unix_ms),
                }),
                Err(e) => {
                    warn!(error = %e, "stored event unreadable; skipped");
                    None
                }
            }
        })
        .collect())
}

/// Keeps the outbox file in step with an [`Outbox`].
pub struct OutboxStore {
    path: PathBuf,
    outbox: Outbox,
    /// messageIds of what the file holds (`None`: unknown, write on the next occasion).
    on_disk: Mutex<Option<Vec<String>>>,
}

impl OutboxStore {
    pub fn new(state_dir: &Path, outbox: Outbox) -> Self {
        Self {
            path: state_dir.join(OUTBOX_FILE),
            outbox,
            on_disk: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events queued now.
    pub fn queued_len(&self) -> usize {
        self.outbox.queued_len()
    }

    /// Requeues the events of the previous run that are worth sending (ahead of anything queued
    /// since), logs the others, and rewrites the file to match. Returns how many were requeued.
    pub fn restore(&self, now: SystemTime, max_age: Duration) -> usize {
        let stored = match load(&self.path) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "stored outbox unreadable; starting without it");
                let _ = std::fs::rename(&self.path, self.path.with_extension("json.corrupt"));
                Vec::new()
            }
        };
        let (keep, dropped) = select_for_replay(stored, now, max_age);
        for (q, why) in &dropped {
            info!(event = %q.event.qualified_name(), message_id = %q.event.header.message_id, why, "unsent event from the previous run not replayed");
        }
        let n = keep.len();
        let no_room = self.outbox.restore(keep);
        if no_room > 0 {
            warn!(
                dropped = no_room,
                "outbox full; the oldest events of the previous run were dropped"
            );
        }
        if n > 0 {
            info!(
                events = n - no_room,
                "unsent events from the previous run queued"
            );
        }
        if let Err(e) = self.save_now() {
            warn!(error = %e, "outbox not persisted");
        }
        n - no_room
    }

    /// Writes the queue now if it differs from the file.
    pub fn save_now(&self) -> Result<(), PersistError> {
        let (_, events) = self.outbox.snapshot();
        let ids: Vec<String> = events
            .iter()
            .map(|q| q.event.header.message_id.clone())
            .collect();
        let mut on_disk = self.on_disk.lock().unwrap_or_else(PoisonError::into_inner);
        if on_disk.as_ref() == Some(&ids) {
            return Ok(());
        }
        save(&self.path, &events)?;
        *on_disk = Some(ids);
        Ok(())
    }

    /// Rewrites the file at most `interval` after each change of the queue, until `shutdown`.
    pub async fn run(self: std::sync::Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.outbox.shared.changed.notified() => {}
            }
            // Changes during the wait coalesce into this one write.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            // fsync may take tens of milliseconds on an SD card: off the async workers.
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.save_now()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "outbox not persisted"),
                Err(e) => warn!(error = %e, "outbox writer failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn q(ns: &str, name: &str, s: u64) -> QueuedEvent {
        QueuedEvent {
            event: Event::raw(ns, name, json!({"token": name})),
            queued_at: at(s),
        }
    }

    #[test]
    fn replay_keeps_state_drops_dialog_and_gestures_and_old_events() {
        let events = vec![
            q("Speaker", "VolumeChanged", 100),
            q("SpeechRecognizer", "ExpectSpeechTimedOut", 100),
            q("Alerts", "AlertStarted", 100),
            q("SpeechSynthesizer", "SpeechFinished", 100),
            q("Alerts", "SetAlertSucceeded", 1),
            q("AudioPlayer", "PlaybackNearlyFinished", 100),
            q("AudioPlayer", "PlaybackStopped", 100),
            q("PlaybackController", "NextCommandIssued", 100),
            q("Alerts", "AlertStopped", 100),
        ];
        let (keep, dropped) = select_for_replay(events, at(200), Duration::from_secs(150));
        let names: Vec<_> = keep.iter().map(|q| q.event.header.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "VolumeChanged",
                "AlertStarted",
                "PlaybackStopped",
                "AlertStopped"
            ]
        );
        assert_eq!(dropped.len(), 5);
        assert!(
            dropped
                .iter()
                .any(|(q, why)| q.event.header.name == "SetAlertSucceeded"
                    && why.contains("max_age"))
        );
    }

    #[test]
    fn file_round_trip_keeps_ids_order_time_and_context() {
        let dir = std::env::temp_dir().join(format!("avsd-outbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join(OUTBOX_FILE);
        let mut a = q("Speaker", "VolumeChanged", 5);
        a.event.payload = json!({"volume": 40, "muted": false});
        a.event = a.event.with_context(vec![avs_proto::ContextEntry::new(
            "Speaker",
            "VolumeState",
            json!({"volume": 40, "muted": false}),
        )]);
        let b = q("Alerts", "AlertStopped", 6);
        save(&path, &[a.clone(), b.clone()]).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].event.header, a.event.header);
        assert_eq!(back[0].event.context, a.event.context);
        assert_eq!(back[0].queued_at, a.queued_at);
        assert_eq!(back[1].event.header.message_id, b.event.header.message_id);
        assert_eq!(load(&dir.join("none.json")).unwrap(), Vec::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
