//! Status LEDs: what the device is doing, shown the Alexa way (avs-protocol.md §6.5: cyan on
//! blue for listening, thinking and speaking; red, orange and yellow for the rest). The pure
//! part maps the device's situation to a [`LedState`] and a state plus an animation step to
//! pixel colours or an on/off level; the drivers write APA102 frames to spidev or brightness
//! values to sysfs LEDs. The task wakes only when something changes or while an animation
//! runs: an idle speaker costs no wakeups.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::attention::Attention;
use crate::dialog::{DialogCommand, DialogHandle, DialogStep};
use crate::transport::LinkState;

/// The validated `[leds]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedsConfig {
    None,
    /// APA102 (DotStar) pixels on a spidev device, e.g. the ReSpeaker 2-mic HAT's three.
    Apa102 {
        spi: PathBuf,
        count: usize,
        /// The pixels' 5-bit global brightness, 1..=31.
        brightness: u8,
        spi_hz: u32,
    },
    /// Single-colour LEDs under `/sys/class/leds/<name>/brightness`, all showing the same.
    Sysfs {
        dir: PathBuf,
        names: Vec<String>,
    },
}

/// What the LEDs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedState {
    Idle,
    Listening,
    Thinking,
    Speaking,
    Alerting,
    Muted,
    Offline,
    /// A short flash after a volume change: a bar as long as the volume (0..=100).
    Volume(u8),
}

/// Everything the LED state depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    pub attention: Attention,
    pub alerting: bool,
    pub muted: bool,
    pub online: bool,
    /// The volume to flash, while a flash is showing.
    pub volume_flash: Option<u8>,
}

/// How long a volume change is shown.
pub const VOLUME_FLASH: Duration = Duration::from_millis(1200);

/// The state to show. LISTENING wins over everything (the user must always see that the mic
/// is open), then a volume flash, the dialog states, a ringing alert, then the lasting
/// conditions (offline, muted).
pub fn state_of(s: Situation) -> LedState {
    match s.attention {
        Attention::Listening => LedState::Listening,
        _ if s.volume_flash.is_some() => LedState::Volume(s.volume_flash.unwrap_or(0)),
        Attention::Thinking => LedState::Thinking,
        Attention::Speaking => LedState::Speaking,
        Attention::Idle if s.alerting => LedState::Alerting,
        Attention::Idle if !s.online => LedState::Offline,
        Attention::Idle if s.muted => LedState::Muted,
        Attention::Idle => LedState::Idle,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rgb(pub u8, pub u8, pub u8);

pub const OFF: Rgb = Rgb(0, 0, 0);
pub const BLUE: Rgb = Rgb(0, 0, 255);
pub const CYAN: Rgb = Rgb(0, 255, 255);
pub const RED: Rgb = Rgb(255, 0, 0);
pub const ORANGE: Rgb = Rgb(255, 80, 0);
pub const YELLOW: Rgb = Rgb(255, 180, 0);
pub const WHITE: Rgb = Rgb(255, 255, 255);

fn scale(c: Rgb, num: u16, den: u16) -> Rgb {
    let s = |v: u8| u8::try_from(u16::from(v) * num / den.max(1)).unwrap_or(u8::MAX);
    Rgb(s(c.0), s(c.1), s(c.2))
}

/// Time between animation steps of `state`; `None` for a still picture.
pub fn step_interval(state: LedState) -> Option<Duration> {
    match state {
        LedState::Thinking => Some(Duration::from_millis(200)),
        LedState::Speaking => Some(Duration::from_millis(100)),
        LedState::Alerting => Some(Duration::from_millis(500)),
        _ => None,
    }
}

/// Fills `pixels` with the picture of `state` at animation step `step`.
pub fn render(state: LedState, step: u32, pixels: &mut [Rgb]) {
    let n = pixels.len();
    let centre = n / 2;
    for (i, p) in pixels.iter_mut().enumerate() {
        *p = match state {
            LedState::Idle => OFF,
            // Cyan on blue: the mic is open.
            LedState::Listening if i == centre => CYAN,
            LedState::Listening => BLUE,
            // Every other pixel blinking cyan over blue. (Swapping cyan and blue would, on three
            // pixels, show the listening picture every other step.)
            LedState::Thinking if step.is_multiple_of(2) && i.is_multiple_of(2) => CYAN,
            LedState::Thinking => BLUE,
            // Cyan pulsing over a blue floor: a triangle over 8 steps.
            LedState::Speaking => {
                let phase = (step % 8) as u16;
                let level = if phase < 4 { phase } else { 8 - phase };
                let c = scale(CYAN, 2 + level, 6);
                Rgb(0, c.1, c.2.max(BLUE.2 / 2))
            }
            LedState::Alerting if step.is_multiple_of(2) => YELLOW,
            LedState::Alerting => OFF,
            LedState::Muted => RED,
            LedState::Offline => ORANGE,
            LedState::Volume(v) => {
                let lit = (usize::from(v.min(100)) * n).div_ceil(100).max(1);
                if i < lit { WHITE } else { OFF }
            }
        };
    }
}

/// On or off for single-colour LEDs: on while listening (steady), blinking while thinking
/// (fast), speaking (slower) or ringing, on for a volume flash, off otherwise.
pub fn lit(state: LedState, step: u32) -> bool {
    match state {
        LedState::Listening | LedState::Volume(_) => true,
        LedState::Thinking | LedState::Alerting => step.is_multiple_of(2),
        LedState::Speaking => step % 8 < 4,
        LedState::Idle | LedState::Muted | LedState::Offline => false,
    }
}

/// Writes one APA102 update into `out`: a start frame of 32 zero bits, one
/// `111bbbbb B G R` frame per pixel, and an end frame of zeros long enough (n/2 bits, at
/// least 32) to clock the last pixel's data through the chain.
pub fn apa102_frame(pixels: &[Rgb], brightness: u8, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    for p in pixels {
        out.extend_from_slice(&[0xE0 | (brightness & 0x1F), p.2, p.1, p.0]);
    }
    let end = pixels.len().div_ceil(16).max(4);
    out.extend(std::iter::repeat_n(0u8, end));
}

/// Why the LEDs cannot be driven.
#[derive(Debug, thiserror::Error)]
pub enum LedError {
    #[error("leds.spi: cannot open {path} ({available}): {source}")]
    Spi {
        path: PathBuf,
        available: String,
        #[source]
        source: std::io::Error,
    },
    #[error("leds.names: no LED {name:?} in {dir} ({available})")]
    NoSysfsLed {
        name: String,
        dir: PathBuf,
        available: String,
    },
    #[error("leds: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn listing(dir: &Path, prefix: &str) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        format!("{} has none", dir.display())
    } else {
        format!("{} has {}", dir.display(), names.join(", "))
    }
}

/// APA102 pixels on spidev.
pub struct Apa102 {
    dev: spidev::Spidev,
    path: PathBuf,
    pixels: Vec<Rgb>,
    /// What the strip shows (the last frame written).
    shown: Vec<Rgb>,
    brightness: u8,
    frame: Vec<u8>,
    /// A frame went out: the pixels are what the strip shows.
    written: bool,
}

impl Apa102 {
    /// Opens the SPI device and sets mode 0 and the clock. A path that is not a spidev device
    /// (a file or FIFO standing in for one in tests) is written to as it is.
    pub fn open(path: &Path, count: usize, brightness: u8, spi_hz: u32) -> Result<Self, LedError> {
        let mut dev = spidev::Spidev::open(path).map_err(|source| LedError::Spi {
            path: path.to_owned(),
            available: listing(Path::new("/dev"), "spidev"),
            source,
        })?;
        let options = spidev::SpidevOptions::new()
            .bits_per_word(8)
            .max_speed_hz(spi_hz)
            .mode(spidev::SpiModeFlags::SPI_MODE_0)
            .build();
        if let Err(e) = dev.configure(&options) {
            tracing::warn!(path = %path.display(), error = %e, "not a spidev device (no SPI clock set); writing LED frames to it anyway");
        }
        Ok(Self {
            dev,
            path: path.to_owned(),
            pixels: vec![OFF; count],
            shown: vec![OFF; count],
            brightness,
            frame: Vec::with_capacity(8 + 4 * count + count.div_ceil(16)),
            written: false,
        })
    }

    fn show(&mut self, state: LedState, step: u32) -> Result<(), LedError> {
        render(state, step, &mut self.pixels);
        if self.written && self.shown == self.pixels {
            return Ok(());
        }
        self.shown.copy_from_slice(&self.pixels);
        apa102_frame(&self.pixels, self.brightness, &mut self.frame);
        self.written = true;
        self.dev
            .write_all(&self.frame)
            .map_err(|source| LedError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

/// Single-colour LEDs in sysfs.
pub struct SysfsLeds {
    leds: Vec<(PathBuf, String)>,
    shown: Option<bool>,
}

impl SysfsLeds {
    /// Finds `names` under `dir` (normally `/sys/class/leds`); "on" is each LED's
    /// `max_brightness` (1 when it cannot be read).
    pub fn open(dir: &Path, names: &[String]) -> Result<Self, LedError> {
        let mut leds = Vec::with_capacity(names.len());
        for name in names {
            let led = dir.join(name);
            let brightness = led.join("brightness");
            if !brightness.exists() {
                return Err(LedError::NoSysfsLed {
                    name: name.clone(),
                    dir: dir.to_owned(),
                    available: listing(dir, ""),
                });
            }
            let max = std::fs::read_to_string(led.join("max_brightness"))
                .ok()
                .and_then(|m| m.trim().parse::<u32>().ok())
                .filter(|m| *m > 0)
                .unwrap_or(1);
            leds.push((brightness, max.to_string()));
        }
        Ok(Self { leds, shown: None })
    }

    fn show(&mut self, state: LedState, step: u32) -> Result<(), LedError> {
        let on = lit(state, step);
        if self.shown == Some(on) {
            return Ok(());
        }
        for (path, max) in &self.leds {
            let value = if on { max.as_str() } else { "0" };
            std::fs::write(path, value).map_err(|source| LedError::Write {
                path: path.clone(),
                source,
            })?;
        }
        self.shown = Some(on);
        Ok(())
    }
}

/// An opened LED driver.
pub enum Leds {
    Apa102(Apa102),
    Sysfs(SysfsLeds),
}

impl Leds {
    /// Opens what `config` names; `Ok(None)` for `driver = "none"`.
    pub fn open(config: &LedsConfig) -> Result<Option<Self>, LedError> {
        Ok(match config {
            LedsConfig::None => None,
            LedsConfig::Apa102 {
                spi,
                count,
                brightness,
                spi_hz,
            } => Some(Self::Apa102(Apa102::open(
                spi,
                *count,
                *brightness,
                *spi_hz,
            )?)),
            LedsConfig::Sysfs { dir, names } => Some(Self::Sysfs(SysfsLeds::open(dir, names)?)),
        })
    }

    /// Shows `state` at animation step `step`.
    pub fn show(&mut self, state: LedState, step: u32) -> Result<(), LedError> {
        match self {
            Self::Apa102(a) => a.show(state, step),
            Self::Sysfs(s) => s.show(state, step),
        }
    }
}

/// Drives the LEDs until `shutdown`, then turns them off. A device that cannot be opened is
/// logged with what exists and tried again every [`super::RETRY_DELAY`].
pub async fn run(
    config: LedsConfig,
    dialog: DialogHandle,
    mut link: watch::Receiver<LinkState>,
    shutdown: CancellationToken,
) {
    let mut last_error = String::new();
    let mut leds = loop {
        match Leds::open(&config) {
            Ok(Some(l)) => break l,
            Ok(None) => return,
            Err(e) => {
                let message = e.to_string();
                if message != last_error {
                    tracing::warn!(error = %message, "LEDs unavailable; trying again every few seconds");
                    last_error = message;
                }
                if !super::pause(super::RETRY_DELAY, &shutdown).await {
                    return;
                }
            }
        }
    };
    let mut updates = dialog.updates.subscribe();
    let mut attention = dialog.attention.clone();
    let (tx, rx) = oneshot::channel();
    let muted = match dialog.commands.send(DialogCommand::Status(tx)).await {
        Ok(()) => rx.await.map(|s| s.muted).unwrap_or(false),
        Err(_) => false,
    };
    let mut situation = Situation {
        attention: *attention.borrow_and_update(),
        alerting: false,
        muted,
        online: *link.borrow_and_update() == LinkState::Connected,
        volume_flash: None,
    };
    let mut flash_until: Option<Instant> = None;
    let mut shown: Option<LedState> = None;
    let mut step = 0u32;
    let mut next_step: Option<Instant> = None;
    let mut failed = false;
    loop {
        let state = state_of(situation);
        if shown != Some(state) {
            shown = Some(state);
            step = 0;
            next_step = step_interval(state).map(|d| Instant::now() + d);
            show(&mut leds, state, step, &mut failed);
        }
        let wake = [next_step, flash_until].into_iter().flatten().min();
        let timer = async {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = attention.changed() => {
                if changed.is_err() { break; }
                situation.attention = *attention.borrow_and_update();
            }
            changed = link.changed() => {
                if changed.is_err() { break; }
                situation.online = *link.borrow_and_update() == LinkState::Connected;
            }
            update = updates.recv() => match update {
                Ok(u) => match u.step {
                    DialogStep::VolumeChanged { volume, muted } => {
                        situation.muted = muted;
                        situation.volume_flash = Some(if muted { 0 } else { volume });
                        flash_until = Some(Instant::now() + VOLUME_FLASH);
                        // A new volume is a new picture even if a flash is already showing.
                        shown = None;
                    }
                    DialogStep::AlertStarted { .. } => situation.alerting = true,
                    DialogStep::AlertStopped { .. } => situation.alerting = false,
                    _ => {}
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = timer => {
                let now = Instant::now();
                if flash_until.is_some_and(|t| t <= now) {
                    flash_until = None;
                    situation.volume_flash = None;
                }
                if let (Some(t), Some(state)) = (next_step, shown)
                    && t <= now
                {
                    step = step.wrapping_add(1);
                    next_step = step_interval(state).map(|d| t + d);
                    show(&mut leds, state, step, &mut failed);
                }
            }
        }
    }
    show(&mut leds, LedState::Idle, 0, &mut failed);
}

/// Shows a state, logging the first failure of a run of them (a write error must not flood
/// the journal at animation speed).
fn show(leds: &mut Leds, state: LedState, step: u32, failed: &mut bool) {
    match leds.show(state, step) {
        Ok(()) => *failed = false,
        Err(e) if !*failed => {
            tracing::warn!(error = %e, "LED update failed");
            *failed = true;
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn situation(attention: Attention) -> Situation {
        Situation {
            attention,
            alerting: false,
            muted: false,
            online: true,
            volume_flash: None,
        }
    }

    #[test]
    fn listening_always_shows_and_lasting_conditions_only_when_idle() {
        let mut s = situation(Attention::Listening);
        s.volume_flash = Some(40);
        s.alerting = true;
        s.online = false;
        assert_eq!(state_of(s), LedState::Listening);
        s.attention = Attention::Speaking;
        assert_eq!(state_of(s), LedState::Volume(40));
        s.volume_flash = None;
        assert_eq!(state_of(s), LedState::Speaking);
        s.attention = Attention::Idle;
        assert_eq!(state_of(s), LedState::Alerting);
        s.alerting = false;
        assert_eq!(state_of(s), LedState::Offline);
        s.online = true;
        s.muted = true;
        assert_eq!(state_of(s), LedState::Muted);
        s.muted = false;
        assert_eq!(state_of(s), LedState::Idle);
    }

    #[test]
    fn apa102_frames_are_start_pixels_end() {
        let mut out = Vec::new();
        let mut px = [OFF; 3];
        render(LedState::Listening, 0, &mut px);
        apa102_frame(&px, 8, &mut out);
        assert_eq!(
            out,
            [
                0, 0, 0, 0, //
                0xE8, 255, 0, 0, //
                0xE8, 255, 255, 0, //
                0xE8, 255, 0, 0, //
                0, 0, 0, 0
            ]
        );
        apa102_frame(&[RED; 40], 31, &mut out);
        assert_eq!(out.len(), 4 + 160 + 4);
        assert_eq!(&out[4..8], [0xFF, 0, 0, 255]);
    }

    #[test]
    fn only_animations_have_steps() {
        for s in [
            LedState::Idle,
            LedState::Listening,
            LedState::Muted,
            LedState::Offline,
            LedState::Volume(50),
        ] {
            assert_eq!(step_interval(s), None, "{s:?}");
        }
        let mut a = [OFF; 3];
        let mut b = [OFF; 3];
        render(LedState::Thinking, 0, &mut a);
        render(LedState::Thinking, 1, &mut b);
        assert_eq!(a, [CYAN, BLUE, CYAN]);
        assert_eq!(b, [BLUE, BLUE, BLUE]);
        render(LedState::Speaking, 0, &mut a);
        render(LedState::Speaking, 4, &mut b);
        assert!(b[0].1 > a[0].1 && a[0].0 == 0, "{a:?} {b:?}");
    }

    #[test]
    fn volume_bar_and_single_colour_levels() {
        let mut px = [OFF; 3];
        render(LedState::Volume(50), 0, &mut px);
        assert_eq!(px, [WHITE, WHITE, OFF]);
        render(LedState::Volume(0), 0, &mut px);
        assert_eq!(
            px,
            [WHITE, OFF, OFF],
            "one pixel shows that the flash happened"
        );
        assert!(lit(LedState::Listening, 7));
        assert!(lit(LedState::Thinking, 0) && !lit(LedState::Thinking, 1));
        assert!(!lit(LedState::Idle, 0) && !lit(LedState::Muted, 0));
    }
}
