//! Retry delays as pure state machines: the reconnect backoff (AVS §2.5, the 2017 SDK table
//! with its asymmetric ×0.67…×1.5 jitter and a 20 s cap), a rate limit on connection attempts
//! per time window, and the same jittered-table shape reused for token refresh and event
//! retries. Time and randomness are inputs, so tests never sleep.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// AVS reconnect table (2017 SDK): 250 ms, 1 s, 3 s, 5 s, 10 s, then 20 s for ever.
pub const RECONNECT_TABLE: &[Duration] = &[
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(20),
];

/// LWA refresh retry table (AVS §8.2): 0, 1, 2, 4, 10, 30, 60 s.
pub const REFRESH_RETRY_TABLE: &[Duration] = &[
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// Lower and upper jitter factors: 100/150 and 150/100 (the SDK's asymmetric "50 %").
pub const JITTER_MIN: f64 = 100.0 / 150.0;
pub const JITTER_MAX: f64 = 1.5;

/// Scales `base` by a factor drawn from `unit` (uniform in `[0, 1)`) over
/// `[JITTER_MIN, JITTER_MAX]`.
pub fn jittered(base: Duration, unit: f64) -> Duration {
    let unit = unit.clamp(0.0, 1.0);
    base.mul_f64(JITTER_MIN + (JITTER_MAX - JITTER_MIN) * unit)
}

/// A uniform draw in `[0, 1)` for the jitter.
pub fn random_unit() -> f64 {
    rand::random::<f64>()
}

/// Consecutive-failure backoff over a table; the last entry repeats.
#[derive(Debug, Clone)]
pub struct Backoff {
    table: &'static [Duration],
    failures: u32,
}

impl Backoff {
    pub fn new(table: &'static [Duration]) -> Self {
        Self { table, failures: 0 }
    }

    /// Records one more failure and returns the delay before the next try.
    pub fn on_failure(&mut self, unit: f64) -> Duration {
        let idx = (self.failures as usize).min(self.table.len().saturating_sub(1));
        self.failures = self.failures.saturating_add(1);
        self.table
            .get(idx)
            .map_or(Duration::ZERO, |base| jittered(*base, unit))
    }

    /// Consecutive failures so far (the attempt number of the next try).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Back to the first entry (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// At most `max_attempts` starts within any `window`.
#[derive(Debug, Clone)]
pub struct RateLimit {
    window: Duration,
    max_attempts: usize,
    starts: VecDeque<Instant>,
}

impl RateLimit {
    pub fn new(window: Duration, max_attempts: usize) -> Self {
        Self {
            window,
            max_attempts: max_attempts.max(1),
            starts: VecDeque::new(),
        }
    }

    /// How long from `now` until another start is allowed (zero when it is).
    pub fn wait_before_next(&mut self, now: Instant) -> Duration {
        while let Some(first) = self.starts.front() {
            if now.saturating_duration_since(*first) >= self.window {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        if self.starts.len() < self.max_attempts {
            return Duration::ZERO;
        }
        self.starts.front().map_or(Duration::ZERO, |first| {
            (*first + self.window).saturating_duration_since(now)
        })
    }

    /// Records a start at `now`.
    pub fn record(&mut self, now: Instant) {
        self.starts.push_back(now);
        while self.starts.len() > self.max_attempts {
            self.starts.pop_front();
        }
    }
}

/// The reconnect policy of the link: a backoff after failures plus a rate limit on attempts.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    backoff: Backoff,
    limit: RateLimit,
}

impl ReconnectPolicy {
    pub fn new(table: &'static [Duration], window: Duration, max_attempts: usize) -> Self {
        Self {
            backoff: Backoff::new(table),
            limit: RateLimit::new(window, max_attempts),
        }
    }

    /// Delay before the first attempt or one that follows a clean hand-over (GOAWAY): only the
    /// rate limit applies.
    pub fn before_attempt(&mut self, now: Instant) -> Duration {
        self.limit.wait_before_next(now)
    }

    /// A connection attempt starts at `now`.
    pub fn on_attempt(&mut self, now: Instant) {
        self.limit.record(now);
    }

    /// The connection reached CONNECTED: the backoff starts over.
    pub fn on_connected(&mut self) {
        self.backoff.reset();
    }

    /// The attempt or the connection failed at `now`; returns `(attempt, delay)` for the retry:
    /// the jittered backoff, stretched when the rate limit demands more.
    pub fn on_failure(&mut self, now: Instant, unit: f64) -> (u32, Duration) {
        let delay = self.backoff.on_failure(unit);
        let limited = self.limit.wait_before_next(now + delay);
        (self.backoff.failures(), delay + limited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn table_grows_caps_and_resets() {
        let mut b = Backoff::new(RECONNECT_TABLE);
        // unit 0.4 gives factor 0.6667 + 0.8333*0.4 = 1.0 exactly.
        let unit = 0.4;
        let got: Vec<u128> = (0..8).map(|_| ms(b.on_failure(unit))).collect();
        assert_eq!(got, vec![250, 1000, 3000, 5000, 10000, 20000, 20000, 20000]);
        b.reset();
        assert_eq!(ms(b.on_failure(unit)), 250);
    }

    #[test]
    fn jitter_spans_two_thirds_to_one_and_a_half() {
        let base = Duration::from_secs(3);
        assert_eq!(ms(jittered(base, 0.0)), 2000);
        assert_eq!(ms(jittered(base, 1.0)), 4500);
        for i in 0..1000 {
            let d = jittered(base, random_unit());
            assert!(
                d >= Duration::from_secs(2) && d <= Duration::from_millis(4500),
                "{i}: {d:?}"
            );
        }
    }

    #[test]
    fn rate_limit_holds_back_the_n_plus_first_start() {
        let t0 = Instant::now();
        let mut rl = RateLimit::new(Duration::from_secs(60), 3);
        for i in 0..3 {
            let now = t0 + Duration::from_secs(i);
            assert_eq!(rl.wait_before_next(now), Duration::ZERO);
            rl.record(now);
        }
        assert_eq!(
            rl.wait_before_next(t0 + Duration::from_secs(10)),
            Duration::from_secs(50)
        );
        assert_eq!(
            rl.wait_before_next(t0 + Duration::from_secs(60)),
            Duration::ZERO
        );
    }

    #[test]
    fn policy_adds_rate_limit_to_backoff_and_resets_on_connect() {
        let t0 = Instant::now();
        let mut p = ReconnectPolicy::new(RECONNECT_TABLE, Duration::from_secs(10), 2);
        p.on_attempt(t0);
        let (attempt, d) = p.on_failure(t0, 0.4);
        assert_eq!((attempt, ms(d)), (1, 250));
        p.on_attempt(t0 + d);
        // Two starts in the window: the third waits until the first leaves it (t0 + 10 s).
        let (attempt, d) = p.on_failure(t0 + Duration::from_millis(300), 0.4);
        assert_eq!(attempt, 2);
        assert_eq!(ms(d), 9700);
        p.on_connected();
        let (attempt, _) = p.on_failure(t0 + Duration::from_secs(30), 0.4);
        assert_eq!(attempt, 1);
    }
}
