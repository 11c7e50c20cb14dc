//! Buttons: key codes from an input device mapped to speaker actions. [`ButtonMachine`] is the
//! pure part (debounce, press-and-hold for `listen`, autorepeat for volume keys), with time as
//! an input; [`run`] is the task around it that finds the device, reads it, turns actions into
//! `DialogCommand`s and looks for the device again when it is missing or goes away.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::input::{
    self, EV_KEY, InputEvent, InputReader, KEY_PRESSED, KEY_RELEASED, KEY_REPEATED,
};
use crate::agents::audio_player::Button;
use crate::agents::speaker::VolumeCommand;
use crate::dialog::{DialogCommand, DialogHandle};

/// What a button can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonAction {
    Listen,
    Stop,
    VolumeUp,
    VolumeDown,
    Mute,
    Play,
    Pause,
    PlayPause,
    Next,
    Previous,
}

impl ButtonAction {
    pub const ALL: [ButtonAction; 10] = [
        Self::Listen,
        Self::Stop,
        Self::VolumeUp,
        Self::VolumeDown,
        Self::Mute,
        Self::Play,
        Self::Pause,
        Self::PlayPause,
        Self::Next,
        Self::Previous,
    ];

    /// The name used in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Listen => "listen",
            Self::Stop => "stop",
            Self::VolumeUp => "volume_up",
            Self::VolumeDown => "volume_down",
            Self::Mute => "mute",
            Self::Play => "play",
            Self::Pause => "pause",
            Self::PlayPause => "play_pause",
            Self::Next => "next",
            Self::Previous => "previous",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Keys held down repeat these (the kernel's autorepeat).
    fn repeats(self) -> bool {
        matches!(self, Self::VolumeUp | Self::VolumeDown)
    }
}

/// The validated `[buttons]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonsConfig {
    /// A path (`/dev/input/event0`, `/dev/input/by-path/...`) or an input device name.
    pub device: String,
    /// Edges closer together than this are contact bounce.
    pub debounce: Duration,
    /// Volume change per `volume_up` / `volume_down` press (or autorepeat).
    pub volume_step: u8,
    /// Key code to action.
    pub keys: Vec<(u16, ButtonAction)>,
}

/// What the machine asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ButtonOutput {
    Action(ButtonAction),
    /// The `listen` key was let go while the dialog is press-and-hold: end the capture.
    ListenReleased,
}

#[derive(Debug, Clone, Copy)]
struct KeyState {
    code: u16,
    action: ButtonAction,
    down: bool,
    last_edge: Option<Instant>,
    /// A release that came within the debounce time of the press: honoured at this instant
    /// unless the key goes down again first.
    release_at: Option<Instant>,
}

/// Debounce and press-and-hold over the key events of one device.
#[derive(Debug)]
pub struct ButtonMachine {
    keys: Vec<KeyState>,
    debounce: Duration,
    press_and_hold: bool,
}

impl ButtonMachine {
    /// `press_and_hold`: the dialog initiator is PRESS_AND_HOLD, so releasing `listen` ends
    /// the capture.
    pub fn new(keys: &[(u16, ButtonAction)], debounce: Duration, press_and_hold: bool) -> Self {
        Self {
            keys: keys
                .iter()
                .map(|&(code, action)| KeyState {
                    code,
                    action,
                    down: false,
                    last_edge: None,
                    release_at: None,
                })
                .collect(),
            debounce,
            press_and_hold,
        }
    }

    /// One event from the device, read at `now`.
    pub fn on(&mut self, event: InputEvent, now: Instant) -> Option<ButtonOutput> {
        if event.kind != EV_KEY {
            return None;
        }
        let debounce = self.debounce;
        let press_and_hold = self.press_and_hold;
        let key = self.keys.iter_mut().find(|k| k.code == event.code)?;
        let bouncing = key
            .last_edge
            .is_some_and(|t| now.saturating_duration_since(t) < debounce);
        match event.value {
            KEY_PRESSED => {
                if key.release_at.take().is_some() {
                    // Bounced back down before the release counted: still the same press.
                    key.down = true;
                    return None;
                }
                if key.down || bouncing {
                    return None;
                }
                key.down = true;
                key.last_edge = Some(now);
                Some(ButtonOutput::Action(key.action))
            }
            KEY_RELEASED => {
                if !key.down {
                    return None;
                }
                key.down = false;
                if bouncing {
                    key.release_at = key.last_edge.map(|t| t + debounce);
                    return None;
                }
                key.last_edge = Some(now);
                released(key.action, press_and_hold)
            }
            KEY_REPEATED if key.down && key.action.repeats() => {
                Some(ButtonOutput::Action(key.action))
            }
            _ => None,
        }
    }

    /// When [`ButtonMachine::tick`] must run next, if at all.
    pub fn deadline(&self) -> Option<Instant> {
        self.keys.iter().filter_map(|k| k.release_at).min()
    }

    /// Time passing: a release held back by the debounce counts now.
    pub fn tick(&mut self, now: Instant) -> Option<ButtonOutput> {
        let press_and_hold = self.press_and_hold;
        let key = self
            .keys
            .iter_mut()
            .find(|k| k.release_at.is_some_and(|t| t <= now))?;
        key.release_at = None;
        key.last_edge = Some(now);
        released(key.action, press_and_hold)
    }
}

fn released(action: ButtonAction, press_and_hold: bool) -> Option<ButtonOutput> {
    (action == ButtonAction::Listen && press_and_hold).then_some(ButtonOutput::ListenReleased)
}

/// Reads the buttons until `shutdown`. A missing device is logged with what exists and looked
/// for again every [`super::RETRY_DELAY`]; the daemon runs on without buttons meanwhile.
pub async fn run(
    config: ButtonsConfig,
    press_and_hold: bool,
    dialog: DialogHandle,
    shutdown: CancellationToken,
) {
    let sys = Path::new(input::SYS_CLASS_INPUT);
    let mut machine = ButtonMachine::new(&config.keys, config.debounce, press_and_hold);
    let mut last_error = String::new();
    loop {
        let opened = input::resolve(&config.device, sys).and_then(|p| {
            let reader = InputReader::open(&p)?;
            Ok((p, reader))
        });
        let (path, mut reader) = match opened {
            Ok(r) => r,
            Err(e) => {
                let message = e.to_string();
                if message != last_error {
                    tracing::warn!(error = %message, "buttons unavailable; looking again every few seconds");
                    last_error = message;
                }
                if !super::pause(super::RETRY_DELAY, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        tracing::info!(device = %path.display(), "buttons: reading");
        last_error.clear();
        loop {
            let deadline = machine.deadline();
            let tick = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let output = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tick => machine.tick(Instant::now()),
                read = reader.next() => match read {
                    Ok(Some(event)) => machine.on(event, Instant::now()),
                    Ok(None) => {
                        tracing::warn!(device = %path.display(), "button device went away; looking for it again");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(device = %path.display(), error = %e, "cannot read the buttons; looking for them again");
                        break;
                    }
                },
            };
            if let Some(output) = output {
                tracing::debug!(?output, "button");
                if !send(&dialog, output, config.volume_step).await {
                    return;
                }
            }
        }
        if !super::pause(super::RETRY_DELAY, &shutdown).await {
            return;
        }
    }
}

/// Carries out a button's output; false when the dialog core is gone.
async fn send(dialog: &DialogHandle, output: ButtonOutput, volume_step: u8) -> bool {
    let step = i16::from(volume_step);
    let command = match output {
        ButtonOutput::ListenReleased => DialogCommand::EndCapture,
        ButtonOutput::Action(action) => match action {
            ButtonAction::Listen => DialogCommand::Listen,
            ButtonAction::Stop => DialogCommand::Stop,
            ButtonAction::VolumeUp => DialogCommand::Volume(VolumeCommand::Adjust(step)),
            ButtonAction::VolumeDown => DialogCommand::Volume(VolumeCommand::Adjust(-step)),
            ButtonAction::Mute => {
                // A toggle: the dialog core owns the mute state, so ask it.
                match dialog.status().await {
                    Some(status) => DialogCommand::Volume(VolumeCommand::Mute(!status.muted)),
                    None => return false,
                }
            }
            ButtonAction::Play => DialogCommand::Button(Button::Play),
            ButtonAction::Pause => DialogCommand::Button(Button::Pause),
            ButtonAction::PlayPause => DialogCommand::PlayPause,
            ButtonAction::Next => DialogCommand::Button(Button::Next),
            ButtonAction::Previous => DialogCommand::Button(Button::Previous),
        },
    };
    dialog.commands.send(command).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ButtonAction as A;

    const LISTEN: u16 = 582;
    const VOL_UP: u16 = 115;
    const NEXT: u16 = 163;

    fn machine(press_and_hold: bool) -> ButtonMachine {
        ButtonMachine::new(
            &[(LISTEN, A::Listen), (VOL_UP, A::VolumeUp), (NEXT, A::Next)],
            Duration::from_millis(30),
            press_and_hold,
        )
    }

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn names_round_trip() {
        for a in ButtonAction::ALL {
            assert_eq!(ButtonAction::from_name(a.name()), Some(a));
        }
        assert_eq!(ButtonAction::from_name("shout"), None);
    }

    #[test]
    fn a_tap_listens_once_and_ignores_syn_repeat_and_unmapped_keys() {
        let t0 = Instant::now();
        let mut m = machine(false);
        let press = InputEvent::key(LISTEN, KEY_PRESSED);
        assert_eq!(m.on(press, t0), Some(ButtonOutput::Action(A::Listen)));
        assert_eq!(m.on(InputEvent::syn(), t0), None);
        assert_eq!(
            m.on(InputEvent::key(LISTEN, KEY_REPEATED), ms(t0, 300)),
            None
        );
        assert_eq!(m.on(press, ms(t0, 310)), None, "already down");
        assert_eq!(
            m.on(InputEvent::key(LISTEN, KEY_RELEASED), ms(t0, 400)),
            None
        );
        assert_eq!(m.on(InputEvent::key(30, KEY_PRESSED), ms(t0, 500)), None);
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn bounces_are_one_press() {
        let t0 = Instant::now();
        let mut m = machine(false);
        let (down, up) = (
            InputEvent::key(NEXT, KEY_PRESSED),
            InputEvent::key(NEXT, KEY_RELEASED),
        );
        assert_eq!(m.on(down, t0), Some(ButtonOutput::Action(A::Next)));
        assert_eq!(m.on(up, ms(t0, 3)), None);
        assert_eq!(m.on(down, ms(t0, 6)), None, "bounce");
        assert_eq!(m.on(up, ms(t0, 120)), None);
        assert_eq!(m.on(down, ms(t0, 130)), None, "bounce after the release");
        assert_eq!(m.on(up, ms(t0, 131)), None);
        assert_eq!(m.tick(ms(t0, 200)), None);
        assert_eq!(m.on(down, ms(t0, 400)), Some(ButtonOutput::Action(A::Next)));
    }

    #[test]
    fn press_and_hold_ends_the_capture_on_release() {
        let t0 = Instant::now();
        let mut m = machine(true);
        assert_eq!(
            m.on(InputEvent::key(LISTEN, KEY_PRESSED), t0),
            Some(ButtonOutput::Action(A::Listen))
        );
        assert_eq!(
            m.on(InputEvent::key(LISTEN, KEY_REPEATED), ms(t0, 500)),
            None
        );
        assert_eq!(
            m.on(InputEvent::key(LISTEN, KEY_RELEASED), ms(t0, 2000)),
            Some(ButtonOutput::ListenReleased)
        );
        // Other keys do nothing on release.
        m.on(InputEvent::key(NEXT, KEY_PRESSED), ms(t0, 3000));
        assert_eq!(
            m.on(InputEvent::key(NEXT, KEY_RELEASED), ms(t0, 3100)),
            None
        );
    }

    #[test]
    fn a_very_short_hold_still_releases_after_the_debounce() {
        let t0 = Instant::now();
        let mut m = machine(true);
        m.on(InputEvent::key(LISTEN, KEY_PRESSED), t0);
        assert_eq!(
            m.on(InputEvent::key(LISTEN, KEY_RELEASED), ms(t0, 10)),
            None
        );
        assert_eq!(m.deadline(), Some(ms(t0, 30)));
        assert_eq!(m.tick(ms(t0, 29)), None);
        assert_eq!(m.tick(ms(t0, 30)), Some(ButtonOutput::ListenReleased));
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn volume_keys_repeat_while_held() {
        let t0 = Instant::now();
        let mut m = machine(false);
        let up = ButtonOutput::Action(A::VolumeUp);
        assert_eq!(m.on(InputEvent::key(VOL_UP, KEY_PRESSED), t0), Some(up));
        assert_eq!(
            m.on(InputEvent::key(VOL_UP, KEY_REPEATED), ms(t0, 250)),
            Some(up)
        );
        assert_eq!(
            m.on(InputEvent::key(VOL_UP, KEY_REPEATED), ms(t0, 283)),
            Some(up)
        );
        assert_eq!(
            m.on(InputEvent::key(VOL_UP, KEY_RELEASED), ms(t0, 300)),
            None
        );
        assert_eq!(
            m.on(InputEvent::key(VOL_UP, KEY_REPEATED), ms(t0, 320)),
            None
        );
    }
}
