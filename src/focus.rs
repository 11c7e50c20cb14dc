//! Audio focus: Dialog > Alerts > Content (avs-protocol.md §6.4). A pure state machine: channels
//! are acquired and released, and every change of a channel's focus (FOREGROUND, BACKGROUND,
//! NONE) is returned so the owner can duck, pause or resume and send its events.

use crate::audio::Channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Foreground,
    Background,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FocusChange {
    pub channel: Channel,
    pub focus: Focus,
}

/// Highest priority first.
const ORDER: [Channel; 3] = [Channel::Dialog, Channel::Alerts, Channel::Content];

#[derive(Debug, Default)]
pub struct FocusManager {
    active: [bool; 3],
}

fn index(c: Channel) -> usize {
    match c {
        Channel::Dialog => 0,
        Channel::Alerts => 1,
        Channel::Content => 2,
    }
}

impl FocusManager {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn focus(&self, channel: Channel) -> Focus {
        let i = index(channel);
        if !self.active[i] {
            Focus::None
        } else if self.active[..i].iter().any(|a| *a) {
            Focus::Background
        } else {
            Focus::Foreground
        }
    }

    pub fn acquire(&mut self, channel: Channel) -> Vec<FocusChange> {
        self.set(channel, true)
    }

    pub fn release(&mut self, channel: Channel) -> Vec<FocusChange> {
        self.set(channel, false)
    }

    fn set(&mut self, channel: Channel, active: bool) -> Vec<FocusChange> {
        let before: Vec<Focus> = ORDER.iter().map(|c| self.focus(*c)).collect();
        self.active[index(channel)] = active;
        ORDER
            .iter()
            .zip(before)
            .filter_map(|(c, old)| {
                let now = self.focus(*c);
                (now != old).then_some(FocusChange {
                    channel: *c,
                    focus: now,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(channel: Channel, focus: Focus) -> FocusChange {
        FocusChange { channel, focus }
    }

    #[test]
    fn dialog_backgrounds_content_and_gives_it_back() {
        let mut f = FocusManager::new();
        assert_eq!(
            f.acquire(Channel::Content),
            [change(Channel::Content, Focus::Foreground)]
        );
        assert_eq!(
            f.acquire(Channel::Dialog),
            [
                change(Channel::Dialog, Focus::Foreground),
                change(Channel::Content, Focus::Background)
            ]
        );
        assert_eq!(
            f.acquire(Channel::Dialog),
            [],
            "re-acquiring changes nothing"
        );
        assert_eq!(
            f.release(Channel::Dialog),
            [
                change(Channel::Dialog, Focus::None),
                change(Channel::Content, Focus::Foreground)
            ]
        );
    }

    #[test]
    fn alerts_sit_between_dialog_and_content() {
        let mut f = FocusManager::new();
        f.acquire(Channel::Content);
        f.acquire(Channel::Alerts);
        assert_eq!(f.focus(Channel::Content), Focus::Background);
        let changes = f.acquire(Channel::Dialog);
        assert!(changes.contains(&change(Channel::Alerts, Focus::Background)));
        assert!(
            !changes.iter().any(|c| c.channel == Channel::Content),
            "content was already background"
        );
        f.release(Channel::Dialog);
        assert_eq!(f.focus(Channel::Alerts), Focus::Foreground);
        assert_eq!(
            f.release(Channel::Alerts),
            [
                change(Channel::Alerts, Focus::None),
                change(Channel::Content, Focus::Foreground)
            ]
        );
    }
}
