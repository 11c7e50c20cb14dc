//! System: ExceptionEncountered for directives we cannot parse or do not support, user
//! inactivity (reset on every user request, reported once per full hour), software info.

use std::time::{Duration, Instant};

use avs_proto::interfaces::system::{
    self, ExceptionEncountered, ExceptionError, SoftwareInfo, UserInactivityReport,
};
use avs_proto::{Event, ExceptionType};

use super::AgentOutput;

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct System {
    firmware_version: String,
    last_activity: Instant,
    reported_hours: u64,
}

/// `System.ExceptionEncountered` for a directive (`unparsed` is its raw text).
pub fn exception(unparsed: &str, kind: ExceptionType, message: &str) -> AgentOutput {
    AgentOutput::EventWithContext(Event::new(
        system::NAMESPACE,
        &system::Event::ExceptionEncountered(ExceptionEncountered {
            unparsed_directive: unparsed.to_owned(),
            error: ExceptionError {
                kind: kind.as_str().to_owned(),
                message: message.to_owned(),
            },
        }),
    ))
}

impl System {
    pub fn new(firmware_version: String, now: Instant) -> Self {
        Self {
            firmware_version,
            last_activity: now,
            reported_hours: 0,
        }
    }

    pub fn user_activity(&mut self, now: Instant) {
        self.last_activity = now;
        self.reported_hours = 0;
    }

    pub fn software_info(&self) -> AgentOutput {
        AgentOutput::Event(Event::new(
            system::NAMESPACE,
            &system::Event::SoftwareInfo(SoftwareInfo {
                firmware_version: self.firmware_version.clone(),
            }),
        ))
    }

    /// When the next UserInactivityReport is due.
    pub fn next_report(&self) -> Instant {
        self.last_activity + HOUR * (self.reported_hours as u32 + 1)
    }

    /// Sends the hourly report when due.
    pub fn tick(&mut self, now: Instant) -> Option<AgentOutput> {
        if now < self.next_report() {
            return None;
        }
        self.reported_hours = now.saturating_duration_since(self.last_activity).as_secs() / 3600;
        Some(AgentOutput::Event(Event::new(
            system::NAMESPACE,
            &system::Event::UserInactivityReport(UserInactivityReport {
                inactive_time_in_seconds: self.reported_hours * 3600,
            }),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactivity_reported_each_full_hour_and_reset_by_activity() {
        let t0 = Instant::now();
        let mut s = System::new("1".into(), t0);
        assert!(s.tick(t0 + Duration::from_secs(3599)).is_none());
        let Some(AgentOutput::Event(e)) = s.tick(t0 + HOUR) else {
            panic!()
        };
        assert_eq!(e.payload["inactiveTimeInSeconds"], 3600);
        assert!(s.tick(t0 + HOUR + Duration::from_secs(10)).is_none());
        let Some(AgentOutput::Event(e)) = s.tick(t0 + HOUR * 2) else {
            panic!()
        };
        assert_eq!(e.payload["inactiveTimeInSeconds"], 7200);
        s.user_activity(t0 + HOUR * 2);
        assert_eq!(s.next_report(), t0 + HOUR * 3);
    }
}
