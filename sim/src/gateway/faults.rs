//! Faults on demand: what can be injected (from `/admin/fault` or a scenario turn) and the
//! armed state the gateway consults on each stream. Faults aimed at a connection (GOAWAY,
//! RST_STREAM on the downchannel, TCP drop, pushed bad directives) are carried out by the
//! connection's task; the counters here cover the per-stream ones.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

/// One fault. `device` selects a device by serial number; none means every connected device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// HTTP/2 GOAWAY (graceful: in-flight streams finish), then the downchannel ends.
    GoAway {
        #[serde(default)]
        device: Option<String>,
    },
    /// RST_STREAM (INTERNAL_ERROR) on the downchannel; the connection stays.
    ResetDownchannel {
        #[serde(default)]
        device: Option<String>,
    },
    /// Close the TCP connection without GOAWAY or TLS close_notify.
    DropConnection {
        #[serde(default)]
        device: Option<String>,
    },
    /// Answer the next `count` events with `status` (400, 403, 429, 500 or 503) and its exception
    /// body.
    FailEvents { status: u16, count: u32 },
    /// Never answer `/ping` while enabled.
    SilencePings {
        #[serde(default = "yes")]
        enabled: bool,
    },
    /// Never answer the next `count` events (the stream stays open, no headers).
    StallEvents { count: u32 },
    /// Push a directive part whose JSON does not parse on the downchannel.
    MalformedDirective {
        #[serde(default)]
        device: Option<String>,
    },
    /// Push a well-formed directive of an unknown namespace on the downchannel.
    UnknownDirective {
        #[serde(default)]
        device: Option<String>,
    },
    /// Reset the next Recognize response stream halfway through its first attachment.
    KillMidAttachment,
    /// Accept the next `count` Discovery reports (`202`) but never send their
    /// `Alexa.EventProcessed`.
    DropEventProcessed { count: u32 },
}

fn yes() -> bool {
    true
}

/// Why a fault was refused.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("status {0} is not one of 400, 403, 429, 500, 503")]
    BadStatus(u16),
    #[error("no connected device matches {0:?}")]
    NoDevice(Option<String>),
}

/// The per-stream faults currently armed.
#[derive(Debug, Default)]
pub struct FaultState {
    fail_events: Mutex<Option<(u16, u32)>>,
    silence_pings: AtomicBool,
    stall_events: AtomicU32,
    kill_mid_attachment: AtomicBool,
    drop_event_processed: AtomicU32,
}

fn take_one(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl FaultState {
    /// Arms a per-stream fault; returns false when `fault` targets connections instead.
    pub fn arm(&self, fault: &Fault) -> Result<bool, FaultError> {
        match fault {
            Fault::FailEvents { status, count } => {
                if ![400, 403, 429, 500, 503].contains(status) {
                    return Err(FaultError::BadStatus(*status));
                }
                *self.fail_events.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((*status, *count));
            }
            Fault::SilencePings { enabled } => self.silence_pings.store(*enabled, Ordering::SeqCst),
            Fault::StallEvents { count } => self.stall_events.store(*count, Ordering::SeqCst),
            Fault::KillMidAttachment => self.kill_mid_attachment.store(true, Ordering::SeqCst),
            Fault::DropEventProcessed { count } => {
                self.drop_event_processed.store(*count, Ordering::SeqCst)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The status to fail this event with, if a failure is armed.
    pub fn take_event_failure(&self) -> Option<u16> {
        let mut armed = self.fail_events.lock().unwrap_or_else(|p| p.into_inner());
        match *armed {
            Some((status, n)) if n > 0 => {
                *armed = if n > 1 { Some((status, n - 1)) } else { None };
                Some(status)
            }
            _ => None,
        }
    }

    pub fn take_stall(&self) -> bool {
        take_one(&self.stall_events)
    }

    pub fn pings_silenced(&self) -> bool {
        self.silence_pings.load(Ordering::SeqCst)
    }

    pub fn take_drop_event_processed(&self) -> bool {
        take_one(&self.drop_event_processed)
    }

    pub fn take_kill_mid_attachment(&self) -> bool {
        self.kill_mid_attachment.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_events_counts_down_and_parses_from_json() {
        let f: Fault =
            serde_json::from_str(r#"{"kind":"fail_events","status":503,"count":2}"#).unwrap();
        let s = FaultState::default();
        assert!(s.arm(&f).unwrap());
        assert_eq!(s.take_event_failure(), Some(503));
        assert_eq!(s.take_event_failure(), Some(503));
        assert_eq!(s.take_event_failure(), None);
        assert!(
            s.arm(&Fault::FailEvents {
                status: 404,
                count: 1
            })
            .is_err()
        );
        let g: Fault = serde_json::from_str(r#"{"kind":"go_away"}"#).unwrap();
        assert!(!s.arm(&g).unwrap());
    }
}
