//! Alert scheduling (pure): which alerts exist, which one sounds, what is due at a given wall
//! clock time, and the 30-minute past-due rule (avs-protocol.md §5.7). Time is an argument;
//! nothing here sleeps or reads the clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Alerts this late are discarded instead of rendered.
pub const PAST_DUE_LIMIT: time::Duration = time::Duration::minutes(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    Timer,
    Alarm,
    Reminder,
}

impl AlertKind {
    /// Unknown types are treated as ALARM, as the reference client does.
    pub fn parse(s: &str) -> Self {
        match s {
            "TIMER" => Self::Timer,
            "REMINDER" => Self::Reminder,
            _ => Self::Alarm,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timer => "TIMER",
            Self::Alarm => "ALARM",
            Self::Reminder => "REMINDER",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asset {
    pub id: String,
    pub url: String,
}

/// One alert as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub token: String,
    pub kind: AlertKind,
    #[serde(with = "time::serde::rfc3339")]
    pub scheduled: OffsetDateTime,
    /// Assets in play order (empty: the bundled alarm sound).
    #[serde(default)]
    pub assets: Vec<Asset>,
    /// What plays while a dialog holds the foreground (`backgroundAlertAsset`; none: the
    /// bundled short alert sound).
    #[serde(default)]
    pub background_asset: Option<Asset>,
    #[serde(default)]
    pub loop_count: Option<u32>,
    #[serde(default)]
    pub loop_pause_ms: Option<u64>,
}

impl Alert {
    /// `scheduledTime` as AVS writes it: `2024-05-02T06:30:00+0000`.
    /// Every asset URL the alert may play (foreground sequence and background sound).
    pub fn asset_urls(&self) -> impl Iterator<Item = &str> {
        self.assets
            .iter()
            .chain(self.background_asset.as_ref())
            .map(|a| a.url.as_str())
    }

    pub fn scheduled_time_avs(&self) -> String {
        let t = self.scheduled.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

/// Parses AVS's ISO 8601 times: `+0000`, `+00:00` or `Z` offsets, optional fractions.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    // `+hhmm` without a colon: insert one and retry.
    let (head, tail) = s.split_at(s.len().checked_sub(5)?);
    if (tail.starts_with('+') || tail.starts_with('-'))
        && tail[1..].bytes().all(|b| b.is_ascii_digit())
    {
        let fixed = format!("{head}{}:{}", &tail[..3], &tail[3..]);
        return OffsetDateTime::parse(&fixed, &Rfc3339).ok();
    }
    None
}

/// What became due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Render it now.
    Fire(Alert),
    /// More than 30 minutes late: drop it and report it stopped.
    Discard(Alert),
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scheduler {
    alerts: BTreeMap<String, Alert>,
    #[serde(skip)]
    active: Option<String>,
}

impl Scheduler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_alerts(alerts: Vec<Alert>) -> Self {
        Self {
            alerts: alerts.into_iter().map(|a| (a.token.clone(), a)).collect(),
            active: None,
        }
    }

    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    pub fn active(&self) -> Option<&Alert> {
        self.active.as_ref().and_then(|t| self.alerts.get(t))
    }

    /// Adds or replaces an alert. `Ok(true)` when it replaced the one sounding now.
    pub fn set(&mut self, alert: Alert, now: OffsetDateTime) -> Result<bool, String> {
        if alert.scheduled < now - PAST_DUE_LIMIT {
            return Err(format!(
                "{} is more than 30 minutes in the past",
                alert.scheduled_time_avs()
            ));
        }
        let was_active = self.active.as_deref() == Some(alert.token.as_str());
        if was_active {
            self.active = None;
        }
        self.alerts.insert(alert.token.clone(), alert);
        Ok(was_active)
    }

    /// Removes an alert. Returns it and whether it was sounding.
    pub fn delete(&mut self, token: &str) -> Option<(Alert, bool)> {
        let alert = self.alerts.remove(token)?;
        let was_active = self.active.as_deref() == Some(token);
        if was_active {
            self.active = None;
        }
        Some((alert, was_active))
    }

    /// The sounding alert ended (stopped or finished): it is removed.
    pub fn finish_active(&mut self) -> Option<Alert> {
        let token = self.active.take()?;
        self.alerts.remove(&token)
    }

    /// Alerts due at `now` (when none is sounding, the earliest due one fires; overdue ones
    /// beyond the limit are discarded).
    pub fn due(&mut self, now: OffsetDateTime) -> Vec<Due> {
        let mut out = Vec::new();
        let stale: Vec<String> = self
            .alerts
            .values()
            .filter(|a| {
                a.scheduled < now - PAST_DUE_LIMIT && self.active.as_deref() != Some(&a.token)
            })
            .map(|a| a.token.clone())
            .collect();
        for token in stale {
            if let Some(a) = self.alerts.remove(&token) {
                out.push(Due::Discard(a));
            }
        }
        if self.active.is_none()
            && let Some(next) = self
                .alerts
                .values()
                .filter(|a| a.scheduled <= now)
                .min_by_key(|a| a.scheduled)
        {
            self.active = Some(next.token.clone());
            out.push(Due::Fire(next.clone()));
        }
        out
    }

    /// When [`Scheduler::due`] next has something to do.
    pub fn next_deadline(&self) -> Option<OffsetDateTime> {
        self.alerts
            .values()
            .filter(|a| self.active.as_deref() != Some(&a.token))
            .map(|a| {
                if self.active.is_some() {
                    a.scheduled + PAST_DUE_LIMIT
                } else {
                    a.scheduled
                }
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn alert(token: &str, at: OffsetDateTime) -> Alert {
        Alert {
            token: token.into(),
            kind: AlertKind::Timer,
            scheduled: at,
            assets: vec![],
            loop_count: None,
            background_asset: None,
            loop_pause_ms: None,
        }
    }

    #[test]
    fn parses_avs_times() {
        assert_eq!(
            parse_time("2024-05-02T06:30:00+0000"),
            Some(datetime!(2024-05-02 06:30:00 UTC))
        );
        assert_eq!(
            parse_time("2024-05-02T08:30:00+02:00"),
            Some(datetime!(2024-05-02 06:30:00 UTC))
        );
        assert_eq!(
            parse_time("2024-05-02T06:30:00.500Z"),
            Some(datetime!(2024-05-02 06:30:00.5 UTC))
        );
        assert_eq!(parse_time("tomorrow"), None);
        assert_eq!(
            alert("a", datetime!(2024-05-02 06:30:00 UTC)).scheduled_time_avs(),
            "2024-05-02T06:30:00+0000"
        );
    }

    #[test]
    fn fires_in_time_order_one_at_a_time() {
        let t0 = datetime!(2026-01-01 07:00:00 UTC);
        let mut s = Scheduler::new();
        s.set(alert("b", t0 + time::Duration::seconds(20)), t0)
            .unwrap();
        s.set(alert("a", t0 + time::Duration::seconds(10)), t0)
            .unwrap();
        assert_eq!(s.next_deadline(), Some(t0 + time::Duration::seconds(10)));
        assert!(s.due(t0 + time::Duration::seconds(9)).is_empty());
        let d = s.due(t0 + time::Duration::seconds(25));
        assert_eq!(
            d,
            vec![Due::Fire(alert("a", t0 + time::Duration::seconds(10)))]
        );
        assert!(
            s.due(t0 + time::Duration::seconds(26)).is_empty(),
            "one sounds at a time"
        );
        assert_eq!(s.finish_active().map(|a| a.token), Some("a".into()));
        assert!(
            matches!(&s.due(t0 + time::Duration::seconds(26))[..], [Due::Fire(a)] if a.token == "b")
        );
    }

    #[test]
    fn past_due_rule() {
        let t0 = datetime!(2026-01-01 07:00:00 UTC);
        let mut s = Scheduler::from_alerts(vec![
            alert("late", t0 - time::Duration::minutes(29)),
            alert("stale", t0 - time::Duration::minutes(31)),
        ]);
        let d = s.due(t0);
        assert!(d.contains(&Due::Discard(alert(
            "stale",
            t0 - time::Duration::minutes(31)
        ))));
        assert!(d.contains(&Due::Fire(alert("late", t0 - time::Duration::minutes(29)))));
        assert!(
            s.set(alert("old", t0 - time::Duration::minutes(40)), t0)
                .is_err()
        );
    }

    #[test]
    fn replacing_or_deleting_the_sounding_alert() {
        let t0 = datetime!(2026-01-01 07:00:00 UTC);
        let mut s = Scheduler::new();
        s.set(alert("a", t0), t0).unwrap();
        s.due(t0);
        assert_eq!(s.active().map(|a| a.token.as_str()), Some("a"));
        assert_eq!(
            s.set(alert("a", t0 + time::Duration::minutes(9)), t0),
            Ok(true),
            "snooze"
        );
        assert!(s.active().is_none());
        assert_eq!(s.next_deadline(), Some(t0 + time::Duration::minutes(9)));
        s.due(t0 + time::Duration::minutes(9));
        assert_eq!(s.delete("a").map(|(_, active)| active), Some(true));
        assert_eq!(s.delete("nope"), None);
    }
}
