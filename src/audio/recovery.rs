//! When a device stream is lost and when to try it again: a watchdog on the device's callback
//! counter (a stream whose server died may stop calling back without any error: the ALSA jack
//! plugin does) and the reopen backoff. Pure logic with time as an input; the mixer (output)
//! and the capture thread (input) own the streams and act on what it says.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Counters, StreamInfo, devices};

/// A running stream that has not called back for this long is lost. Device periods are
/// 10-20 ms, so this is 100+ missed periods: a loaded board does not get there, and while a
/// device is really gone its sources wait only this long before the stand-in takes over. A
/// false alarm would cost a reopen (and the audio in the ring).
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(2);
/// First reopen attempt after a loss; each failure doubles the wait up to `RETRY_MAX`.
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(500);
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(8);

/// What the owner of a healthy stream should do after a look at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Fine,
    /// It is gone (the reason, for the log): close it, stand in, reopen with backoff.
    Lost(&'static str),
    /// The other direction lost its device and this stream is paused, so nothing would show
    /// that it is dead too: close it now (safe while its server is down) and reopen it. Not a
    /// loss: nothing was playing.
    Reopen,
}

/// Whether a device is usable, and if not, when to try it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Health {
    /// Running: `last_count` callbacks were seen, the last change at `since`.
    Healthy { last_count: u64, since: Instant },
    /// Lost at `since`; `failures` reopen attempts failed; the next one is due at `next_try`.
    Lost {
        since: Instant,
        failures: u32,
        next_try: Instant,
    },
}

impl Health {
    pub(crate) fn healthy(count: u64, now: Instant) -> Self {
        Health::Healthy {
            last_count: count,
            since: now,
        }
    }

    pub(crate) fn is_lost(&self) -> bool {
        matches!(self, Health::Lost { .. })
    }

    /// The stream (re)starts or resumes: its callbacks are due from now on, not since the pause.
    pub(crate) fn restart_watch(&mut self, count: u64, now: Instant) {
        if let Health::Healthy { .. } = self {
            *self = Self::healthy(count, now);
        }
    }

    /// Looks at the callback counter of a stream that should be running. Returns true when it
    /// has not moved for `STALL_LIMIT`: the caller then declares the device lost.
    pub(crate) fn stalled(&mut self, count: u64, now: Instant) -> bool {
        match self {
            Health::Healthy { last_count, since } => {
                if count != *last_count {
                    *last_count = count;
                    *since = now;
                    false
                } else {
                    now.saturating_duration_since(*since) >= STALL_LIMIT
                }
            }
            Health::Lost { .. } => false,
        }
    }

    /// Looks at a healthy stream: `count` is its callback counter, `running` whether it should
    /// be calling back (not paused), `flagged` whether its error callback reported it gone,
    /// `suspect` whether the other direction's device was just lost.
    pub(crate) fn verdict(
        &mut self,
        count: u64,
        now: Instant,
        running: bool,
        flagged: bool,
        suspect: bool,
    ) -> Verdict {
        if self.is_lost() {
            return Verdict::Fine;
        }
        if flagged {
            return Verdict::Lost("stream error");
        }
        if running {
            if self.stalled(count, now) {
                return Verdict::Lost("callbacks stopped");
            }
            // Running and watched: a dead server shows as a stall.
            return Verdict::Fine;
        }
        if suspect {
            Verdict::Reopen
        } else {
            Verdict::Fine
        }
    }

    /// The device is gone: the first reopen attempt comes after `RETRY_FIRST`.
    pub(crate) fn lose(&mut self, now: Instant) {
        if !self.is_lost() {
            *self = Health::Lost {
                since: now,
                failures: 0,
                next_try: now + RETRY_FIRST,
            };
        }
    }

    /// Whether a reopen attempt is due.
    pub(crate) fn retry_due(&self, now: Instant) -> bool {
        matches!(self, Health::Lost { next_try, .. } if now >= *next_try)
    }

    /// How long until the next attempt (`None` while healthy): the owner's thread may sleep
    /// this long, so retries cost wakeups only while the device is lost.
    pub(crate) fn retry_in(&self, now: Instant) -> Option<Duration> {
        match self {
            Health::Lost { next_try, .. } => Some(next_try.saturating_duration_since(now)),
            Health::Healthy { .. } => None,
        }
    }

    /// How long the device has been lost (zero while healthy).
    pub(crate) fn lost_for(&self, now: Instant) -> Duration {
        match self {
            Health::Lost { since, .. } => now.saturating_duration_since(*since),
            Health::Healthy { .. } => Duration::ZERO,
        }
    }

    /// A reopen attempt failed: wait twice as long (up to `RETRY_MAX`) before the next.
    pub(crate) fn retry_failed(&mut self, now: Instant) {
        if let Health::Lost {
            failures, next_try, ..
        } = self
        {
            *failures = failures.saturating_add(1);
            *next_try = now + backoff(*failures);
        }
    }
}

/// Which side of the engine a device serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Input,
    Output,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }

    /// Set by the stream's error callback when the device is gone.
    fn lost_flag(self, c: &Counters) -> &AtomicBool {
        match self {
            Direction::Input => &c.input_lost,
            Direction::Output => &c.output_lost,
        }
    }

    /// Set when the other direction's device was lost (this one may be on the same server).
    fn suspect_flag(self, c: &Counters) -> &AtomicBool {
        match self {
            Direction::Input => &c.input_suspect,
            Direction::Output => &c.output_suspect,
        }
    }

    /// Takes the error callback's and the other direction's signals: (flagged, suspect).
    pub(crate) fn take_signals(self, c: &Counters) -> (bool, bool) {
        (
            self.lost_flag(c).swap(false, Ordering::AcqRel),
            self.suspect_flag(c).swap(false, Ordering::AcqRel),
        )
    }
}

/// A device was lost: said once at error level with the devices that still exist (gone or
/// renamed?), counted, and the other direction told, since it may be on the same dead server.
pub(crate) fn report_lost(
    direction: Direction,
    id: &str,
    why: &'static str,
    counters: &Counters,
    tell_other: Option<&(dyn Fn() + Send)>,
) {
    tracing::error!(device = %id, direction = direction.name(), why,
        devices_that_exist = %devices::existing_devices(), "audio device lost");
    counters.device_losses.fetch_add(1, Ordering::Relaxed);
    if let Some(tell) = tell_other {
        tell();
    }
}

/// A lost device opened again: said with its new stream, its signals cleared, counted.
pub(crate) fn report_back(
    direction: Direction,
    id: &str,
    info: &StreamInfo,
    lost_for: Duration,
    counters: &Counters,
) {
    tracing::info!(device = %id, stream = ?info, ?lost_for, "audio device back");
    direction
        .lost_flag(counters)
        .store(false, Ordering::Release);
    direction
        .suspect_flag(counters)
        .store(false, Ordering::Release);
    counters.device_reopens.fetch_add(1, Ordering::Relaxed);
}

/// The wait after `failures` failed attempts: 0.5 s, 1, 2, 4, 8, 8, ... s.
pub(crate) fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.min(5);
    (RETRY_FIRST * factor).min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_keeps_calling_back_is_never_stalled() {
        let t0 = Instant::now();
        let mut h = Health::healthy(0, t0);
        for i in 1..500u64 {
            let now = t0 + Duration::from_millis(10 * i);
            assert!(!h.stalled(i, now), "at {i}");
        }
    }

    #[test]
    fn a_stream_silent_for_the_stall_limit_is_lost() {
        let t0 = Instant::now();
        let mut h = Health::healthy(0, t0);
        assert!(!h.stalled(5, t0 + Duration::from_millis(50)));
        // The last change was at 50 ms: stalled only from 2.05 s on.
        assert!(!h.stalled(5, t0 + Duration::from_millis(2049)));
        assert!(h.stalled(5, t0 + Duration::from_millis(2050)));
    }

    #[test]
    fn a_resumed_stream_gets_a_fresh_watch() {
        let t0 = Instant::now();
        let mut h = Health::healthy(7, t0);
        // Paused for a minute (no callbacks, not watched), then resumed.
        let resumed = t0 + Duration::from_secs(60);
        h.restart_watch(7, resumed);
        assert!(!h.stalled(7, resumed + Duration::from_millis(1999)));
        assert!(h.stalled(7, resumed + STALL_LIMIT));
    }

    #[test]
    fn verdicts() {
        let t0 = Instant::now();
        let later = t0 + STALL_LIMIT;
        let fresh = || Health::healthy(10, t0);
        // The error callback's flag wins, running or not.
        assert_eq!(
            fresh().verdict(11, t0, true, true, false),
            Verdict::Lost("stream error")
        );
        assert_eq!(
            fresh().verdict(10, t0, false, true, true),
            Verdict::Lost("stream error")
        );
        // A running stream that stopped calling back.
        assert_eq!(
            fresh().verdict(10, later, true, false, false),
            Verdict::Lost("callbacks stopped")
        );
        // A running stream is watched, so a suspicion changes nothing.
        assert_eq!(fresh().verdict(11, later, true, false, true), Verdict::Fine);
        // A paused one is not watched (no callbacks is normal)...
        assert_eq!(
            fresh().verdict(10, later, false, false, false),
            Verdict::Fine
        );
        // ...but is reopened when the other direction was lost.
        assert_eq!(fresh().verdict(10, t0, false, false, true), Verdict::Reopen);
        // A lost one is the retry schedule's business.
        let mut lost = fresh();
        lost.lose(t0);
        assert_eq!(lost.verdict(10, later, true, true, true), Verdict::Fine);
    }

    #[test]
    fn reopen_backs_off_from_half_a_second_to_eight() {
        let t0 = Instant::now();
        let mut h = Health::healthy(0, t0);
        h.lose(t0);
        assert!(h.is_lost());
        assert!(
            !h.stalled(0, t0 + Duration::from_secs(5)),
            "a lost device is not watched"
        );
        assert!(!h.retry_due(t0 + Duration::from_millis(499)));
        assert_eq!(h.retry_in(t0), Some(Duration::from_millis(500)));
        let mut now = t0 + Duration::from_millis(500);
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert!(h.retry_due(now));
            h.retry_failed(now);
            let wait = h.retry_in(now).unwrap_or_default();
            assert!(!h.retry_due(now + wait - Duration::from_millis(1)));
            waits.push(wait.as_millis());
            now += wait;
        }
        assert_eq!(waits, [1000, 2000, 4000, 8000, 8000, 8000, 8000]);
        // Losing it again while lost keeps the schedule.
        let before = h.retry_in(t0);
        h.lose(now);
        assert_eq!(h.retry_in(t0), before);
    }

    #[test]
    fn back_to_healthy_after_a_reopen() {
        let t0 = Instant::now();
        let mut h = Health::healthy(3, t0);
        h.lose(t0);
        let back = t0 + Duration::from_secs(2);
        h = Health::healthy(0, back);
        assert!(!h.is_lost());
        assert_eq!(h.retry_in(back), None);
        assert!(!h.stalled(1, back + Duration::from_millis(20)));
    }
}
