//! Configuration: one TOML file (`/etc/avsd/avsd.toml`, every key documented in
//! `config/avsd.toml`) merged with an optional hardware profile from `hw/`, validated once into
//! an immutable [`Config`] of real types. Every error names the key it is about.
//!
//! Merge rule: the profile provides `[audio]` (and `[buttons]`, `[leds]`) defaults; a key set in
//! the main file wins over the profile.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::audio::AudioConfig;
use crate::hw::buttons::{ButtonAction, ButtonsConfig};
use crate::hw::input::key_code;
use crate::hw::leds::LedsConfig;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("hardware.profile: no profile {name:?} (looked in {searched})")]
    NoProfile { name: String, searched: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    device: RawDevice,
    #[serde(default)]
    cloud: RawCloud,
    #[serde(default)]
    paths: RawPaths,
    #[serde(default)]
    audio: RawAudio,
    #[serde(default)]
    dialog: RawDialog,
    #[serde(default)]
    hardware: RawHardware,
    #[serde(default)]
    buttons: RawButtons,
    #[serde(default)]
    leds: RawLeds,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawButtons {
    device: Option<String>,
    debounce_ms: Option<u64>,
    volume_step: Option<u8>,
    #[serde(default)]
    keys: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeds {
    driver: Option<String>,
    spi: Option<PathBuf>,
    count: Option<usize>,
    brightness: Option<u8>,
    spi_hz: Option<u32>,
    sysfs_dir: Option<PathBuf>,
    names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    client_id: Option<String>,
    product_id: Option<String>,
    serial_number: Option<String>,
    firmware_version: Option<String>,
    locale: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    region: Option<String>,
    endpoint: Option<String>,
    lwa_url: Option<String>,
    extra_ca_file: Option<PathBuf>,
    ping_idle_s: Option<u64>,
    ping_timeout_s: Option<u64>,
    offline_queue_events: Option<usize>,
    offline_event_max_age_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    state_dir: Option<PathBuf>,
    control_socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudio {
    input: Option<String>,
    output: Option<String>,
    period_ms: Option<u64>,
    input_rate: Option<u32>,
    output_rate: Option<u32>,
    input_channels: Option<u16>,
    capture_channel: Option<u16>,
    keep_mic_open: Option<bool>,
    mixer_control: Option<String>,
    content_under_dialog: Option<String>,
    duck_level: Option<f32>,
    earcons: Option<bool>,
    initial_volume: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDialog {
    profile: Option<String>,
    initiator: Option<String>,
    max_capture_ms: Option<u64>,
    thinking_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHardware {
    profile: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
}

/// AVS regions and their gateway hosts (avs-protocol.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    NorthAmerica,
    Europe,
    FarEast,
}

impl Region {
    pub fn endpoint(self) -> &'static str {
        match self {
            Self::NorthAmerica => "https://alexa.na.gateway.devices.a2z.com",
            Self::Europe => "https://alexa.eu.gateway.devices.a2z.com",
            Self::FarEast => "https://alexa.fe.gateway.devices.a2z.com",
        }
    }
}

/// What happens to music while Alexa speaks or an alert sounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentUnderDialog {
    Duck,
    Pause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub client_id: String,
    pub product_id: String,
    pub serial_number: String,
    pub firmware_version: String,
    pub locale: String,
    /// Published in the Alexa.Discovery report (manufacturerName, additionalAttributes).
    pub manufacturer: String,
    pub model: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudConfig {
    pub region: Region,
    pub endpoint: Url,
    pub lwa_url: Url,
    /// Extra trusted CA (PEM), only when set explicitly (avs-sim, lab setups).
    pub extra_ca_file: Option<PathBuf>,
    pub ping_idle: Duration,
    pub ping_timeout: Duration,
    pub offline_queue_events: usize,
    /// Events queued longer than this are not replayed after a restart.
    pub offline_event_max_age: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DialogConfig {
    /// `CLOSE_TALK`, `NEAR_FIELD` or `FAR_FIELD`.
    pub profile: avs_proto::interfaces::speech_recognizer::Profile,
    /// `TAP` or `PRESS_AND_HOLD`.
    pub initiator: String,
    /// Local guard: capture never runs longer than this without a StopCapture.
    pub max_capture: Duration,
    /// THINKING falls back to IDLE when nothing answers for this long.
    pub thinking_timeout: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub device: DeviceIdentity,
    pub cloud: CloudConfig,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    pub audio: AudioConfig,
    pub content_under_dialog: ContentUnderDialog,
    pub duck_level: f32,
    pub earcons: bool,
    pub initial_volume: u8,
    pub mixer_control: Option<String>,
    pub dialog: DialogConfig,
    pub hardware_profile: Option<String>,
    /// `None` when no button device is configured.
    pub buttons: Option<ButtonsConfig>,
    pub leds: LedsConfig,
    pub log_level: String,
}

/// Where `hardware.profile = "<name>"` is looked up, in order.
pub fn profile_dirs(config_path: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = config_path.and_then(Path::parent) {
        dirs.push(dir.join("hw"));
    }
    dirs.push(PathBuf::from("/etc/avsd/hw"));
    dirs.push(PathBuf::from("/usr/share/avsd/hw"));
    dirs.push(PathBuf::from("hw"));
    dirs
}

impl Config {
    /// Reads and validates `path` (and the profile it names).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, &profile_dirs(Some(path)))
    }

    /// Defaults only (no file), e.g. for `avsd demo`.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_raw(RawConfig::default())
    }

    /// Parses config text; `path` is only used in messages.
    pub fn from_toml(
        text: &str,
        path: &Path,
        profile_dirs: &[PathBuf],
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let profile_name = table
            .get("hardware")
            .and_then(|h| h.get("profile"))
            .and_then(|p| p.as_str())
            .map(str::to_owned);
        if let Some(name) = profile_name {
            let profile = load_profile(&name, profile_dirs)?;
            merge_under(&mut table, profile);
        }
        let raw: RawConfig =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let region = match raw.cloud.region.as_deref().unwrap_or("NA") {
            "NA" => Region::NorthAmerica,
            "EU" => Region::Europe,
            "FE" => Region::FarEast,
            other => {
                return Err(invalid(
                    "cloud.region",
                    format!("{other:?} is not NA, EU or FE"),
                ));
            }
        };
        let endpoint = parse_https(
            "cloud.endpoint",
            raw.cloud.endpoint.as_deref().unwrap_or(region.endpoint()),
        )?;
        let lwa_url = parse_https(
            "cloud.lwa_url",
            raw.cloud
                .lwa_url
                .as_deref()
                .unwrap_or("https://api.amazon.com"),
        )?;
        let ping_idle = Duration::from_secs(raw.cloud.ping_idle_s.unwrap_or(300));
        if ping_idle.is_zero() || ping_idle > Duration::from_secs(300) {
            return Err(invalid(
                "cloud.ping_idle_s",
                "must be 1..=300 (AVS closes idle connections after 5 minutes)",
            ));
        }
        let ping_timeout = Duration::from_secs(raw.cloud.ping_timeout_s.unwrap_or(15));
        if ping_timeout.is_zero() || ping_timeout > Duration::from_secs(60) {
            return Err(invalid("cloud.ping_timeout_s", "must be 1..=60"));
        }
        let offline_queue_events = raw.cloud.offline_queue_events.unwrap_or(64);
        if offline_queue_events == 0 {
            return Err(invalid("cloud.offline_queue_events", "must be at least 1"));
        }
        let offline_event_max_age =
            Duration::from_secs(raw.cloud.offline_event_max_age_s.unwrap_or(24 * 3600));
        if offline_event_max_age.is_zero() {
            return Err(invalid(
                "cloud.offline_event_max_age_s",
                "must be at least 1",
            ));
        }

        let period_ms = raw.audio.period_ms.unwrap_or(20);
        if !(10..=20).contains(&period_ms) {
            return Err(invalid(
                "audio.period_ms",
                format!("{period_ms} is outside 10..=20"),
            ));
        }
        let content_under_dialog = match raw.audio.content_under_dialog.as_deref().unwrap_or("duck")
        {
            "duck" => ContentUnderDialog::Duck,
            "pause" => ContentUnderDialog::Pause,
            other => {
                return Err(invalid(
                    "audio.content_under_dialog",
                    format!("{other:?} is not \"duck\" or \"pause\""),
                ));
            }
        };
        let duck_level = raw.audio.duck_level.unwrap_or(0.2);
        if !(0.0..=1.0).contains(&duck_level) {
            return Err(invalid("audio.duck_level", "must be between 0.0 and 1.0"));
        }
        let initial_volume = raw.audio.initial_volume.unwrap_or(50);
        if initial_volume > 100 {
            return Err(invalid("audio.initial_volume", "must be 0..=100"));
        }
        let input = raw.audio.input.unwrap_or_else(|| "alsa:default".into());
        let output = raw.audio.output.unwrap_or_else(|| "alsa:default".into());
        for (key, id) in [("audio.input", &input), ("audio.output", &output)] {
            if id.is_empty() {
                return Err(invalid(
                    key,
                    "must name a device (e.g. \"alsa:default\", \"wav:/path.wav\")",
                ));
            }
        }

        use avs_proto::interfaces::speech_recognizer::Profile;
        let profile = match raw.dialog.profile.as_deref().unwrap_or("NEAR_FIELD") {
            "CLOSE_TALK" => Profile::CloseTalk,
            "NEAR_FIELD" => Profile::NearField,
            "FAR_FIELD" => Profile::FarField,
            other => {
                return Err(invalid(
                    "dialog.profile",
                    format!("{other:?} is not CLOSE_TALK, NEAR_FIELD or FAR_FIELD"),
                ));
            }
        };
        let initiator = raw.dialog.initiator.unwrap_or_else(|| "TAP".into());
        if initiator != "TAP" && initiator != "PRESS_AND_HOLD" {
            return Err(invalid(
                "dialog.initiator",
                format!("{initiator:?} is not TAP or PRESS_AND_HOLD"),
            ));
        }
        let max_capture = Duration::from_millis(raw.dialog.max_capture_ms.unwrap_or(10_000));
        if max_capture < Duration::from_secs(1) {
            return Err(invalid("dialog.max_capture_ms", "must be at least 1000"));
        }

        let serial_number = raw.device.serial_number.unwrap_or_else(default_serial);
        let firmware_version = raw.device.firmware_version.unwrap_or_else(|| "1".into());
        if firmware_version.parse::<u32>().map_or(true, |v| v == 0) {
            return Err(invalid(
                "device.firmware_version",
                "must be a positive 32-bit integer as a string",
            ));
        }
        let buttons = buttons(raw.buttons)?;
        let leds = leds(raw.leds)?;
        let log_level = raw.log.level.unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            return Err(invalid(
                "log.level",
                format!("{log_level:?} is not error, warn, info, debug or trace"),
            ));
        }
        Ok(Self {
            device: DeviceIdentity {
                client_id: raw
                    .device
                    .client_id
                    .unwrap_or_else(|| "amzn1.application-oa2-client.avsd".into()),
                product_id: raw
                    .device
                    .product_id
                    .unwrap_or_else(|| "avsd_speaker".into()),
                serial_number,
                firmware_version,
                locale: raw.device.locale.unwrap_or_else(|| "en-US".into()),
                manufacturer: non_empty("device.manufacturer", raw.device.manufacturer, "avsd")?,
                model: non_empty("device.model", raw.device.model, "avsd speaker")?,
                description: non_empty(
                    "device.description",
                    raw.device.description,
                    "Alexa built-in speaker running avsd",
                )?,
            },
            cloud: CloudConfig {
                region,
                endpoint,
                lwa_url,
                extra_ca_file: raw
                    .cloud
                    .extra_ca_file
                    .filter(|p| !p.as_os_str().is_empty()),
                ping_idle,
                ping_timeout,
                offline_queue_events,
                offline_event_max_age,
            },
            state_dir: raw
                .paths
                .state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/avsd")),
            control_socket: raw
                .paths
                .control_socket
                .unwrap_or_else(|| PathBuf::from("/run/avsd/control.sock")),
            audio: AudioConfig {
                input,
                output,
                period: Duration::from_millis(period_ms),
                output_rate: raw.audio.output_rate,
                input_rate: raw.audio.input_rate,
                input_channels: raw.audio.input_channels,
                capture_channel: raw.audio.capture_channel,
                // Off by default: no wake word engine reads the pre-roll yet.
                keep_mic_open: raw.audio.keep_mic_open.unwrap_or(false),
                // The output pauses after the engine's default idle time.
                ..AudioConfig::default()
            },
            content_under_dialog,
            duck_level,
            earcons: raw.audio.earcons.unwrap_or(true),
            initial_volume,
            mixer_control: raw.audio.mixer_control,
            dialog: DialogConfig {
                profile,
                initiator,
                max_capture,
                thinking_timeout: Duration::from_millis(
                    raw.dialog.thinking_timeout_ms.unwrap_or(8_000),
                ),
            },
            hardware_profile: raw.hardware.profile,
            buttons,
            leds,
            log_level,
        })
    }

    /// The effective configuration as TOML, for `avsd check`.
    pub fn to_effective_toml(&self) -> String {
        let mut out = self.effective_core_toml();
        out.push_str("\n[buttons]\n");
        if let Some(b) = &self.buttons {
            let keys = b
                .keys
                .iter()
                .map(|(code, action)| {
                    let key = crate::hw::input::key_name(*code)
                        .map_or_else(|| format!("\"{code}\""), str::to_owned);
                    format!("{key} = {:?}", action.name())
                })
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!(
                "device = {:?}\ndebounce_ms = {}\nvolume_step = {}\nkeys = {{ {keys} }}\n",
                b.device,
                b.debounce.as_millis(),
                b.volume_step
            ));
        }
        out.push_str("\n[leds]\n");
        out.push_str(&match &self.leds {
            LedsConfig::None => "driver = \"none\"\n".to_owned(),
            LedsConfig::Apa102 {
                spi,
                count,
                brightness,
                spi_hz,
            } => format!(
                "driver = \"apa102\"\nspi = {:?}\ncount = {count}\nbrightness = {brightness}\nspi_hz = {spi_hz}\n",
                spi.display().to_string()
            ),
            LedsConfig::Sysfs { dir, names } => format!(
                "driver = \"sysfs\"\nsysfs_dir = {:?}\nnames = {names:?}\n",
                dir.display().to_string()
            ),
        });
        out
    }

    fn effective_core_toml(&self) -> String {
        let region = match self.cloud.region {
            Region::NorthAmerica => "NA",
            Region::Europe => "EU",
            Region::FarEast => "FE",
        };
        let profile = match self.dialog.profile {
            avs_proto::interfaces::speech_recognizer::Profile::CloseTalk => "CLOSE_TALK",
            avs_proto::interfaces::speech_recognizer::Profile::NearField => "NEAR_FIELD",
            avs_proto::interfaces::speech_recognizer::Profile::FarField => "FAR_FIELD",
        };
        let opt = |v: Option<String>| v.unwrap_or_else(|| "(device default)".into());
        format!(
            "[device]\nclient_id = {:?}\nproduct_id = {:?}\nserial_number = {:?}\nfirmware_version = {:?}\nlocale = {:?}\nmanufacturer = {:?}\nmodel = {:?}\ndescription = {:?}\n\n\
             [cloud]\nregion = {region:?}\nendpoint = {:?}\nlwa_url = {:?}\nextra_ca_file = {:?}\nping_idle_s = {}\nping_timeout_s = {}\noffline_queue_events = {}\noffline_event_max_age_s = {}\n\n\
             [paths]\nstate_dir = {:?}\ncontrol_socket = {:?}\n\n\
             [audio]\ninput = {:?}\noutput = {:?}\nperiod_ms = {}\ninput_rate = {:?}\noutput_rate = {:?}\ninput_channels = {:?}\ncapture_channel = {:?}\nmixer_control = {:?}\ncontent_under_dialog = {:?}\nduck_level = {}\nearcons = {}\ninitial_volume = {}\n\n\
             [dialog]\nprofile = {profile:?}\ninitiator = {:?}\nmax_capture_ms = {}\nthinking_timeout_ms = {}\n\n\
             [hardware]\nprofile = {:?}\n\n[log]\nlevel = {:?}\n",
            self.device.client_id,
            self.device.product_id,
            self.device.serial_number,
            self.device.firmware_version,
            self.device.locale,
            self.device.manufacturer,
            self.device.model,
            self.device.description,
            self.cloud.endpoint.as_str(),
            self.cloud.lwa_url.as_str(),
            self.cloud
                .extra_ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            self.cloud.ping_idle.as_secs(),
            self.cloud.ping_timeout.as_secs(),
            self.cloud.offline_queue_events,
            self.cloud.offline_event_max_age.as_secs(),
            self.state_dir.display().to_string(),
            self.control_socket.display().to_string(),
            self.audio.input,
            self.audio.output,
            self.audio.period.as_millis(),
            opt(self.audio.input_rate.map(|r| r.to_string())),
            opt(self.audio.output_rate.map(|r| r.to_string())),
            opt(self.audio.input_channels.map(|r| r.to_string())),
            self.audio
                .capture_channel
                .map(|c| c.to_string())
                .unwrap_or_else(|| "(downmix)".into()),
            self.mixer_control
                .clone()
                .unwrap_or_else(|| "(software volume)".into()),
            match self.content_under_dialog {
                ContentUnderDialog::Duck => "duck",
                ContentUnderDialog::Pause => "pause",
            },
            self.duck_level,
            self.earcons,
            self.initial_volume,
            self.dialog.initiator,
            self.dialog.max_capture.as_millis(),
            self.dialog.thinking_timeout.as_millis(),
            self.hardware_profile.clone().unwrap_or_default(),
            self.log_level,
        )
    }
}

fn buttons(raw: RawButtons) -> Result<Option<ButtonsConfig>, ConfigError> {
    let debounce_ms = raw.debounce_ms.unwrap_or(30);
    if debounce_ms > 500 {
        return Err(invalid("buttons.debounce_ms", "must be 0..=500"));
    }
    let volume_step = raw.volume_step.unwrap_or(10);
    if !(1..=100).contains(&volume_step) {
        return Err(invalid("buttons.volume_step", "must be 1..=100"));
    }
    let mut keys = Vec::with_capacity(raw.keys.len());
    for (key, action) in &raw.keys {
        let code = key_code(key).ok_or_else(|| {
            invalid(
                "buttons.keys",
                format!("{key:?} is not a key name (KEY_VOLUMEUP, BTN_0, ...) or code"),
            )
        })?;
        let action = ButtonAction::from_name(action).ok_or_else(|| {
            let names: Vec<&str> = ButtonAction::ALL.iter().map(|a| a.name()).collect();
            invalid(
                "buttons.keys",
                format!(
                    "{key} = {action:?}: the action must be one of {}",
                    names.join(", ")
                ),
            )
        })?;
        if keys.iter().any(|(c, _)| *c == code) {
            return Err(invalid(
                "buttons.keys",
                format!("{key}: key code {code} is mapped twice"),
            ));
        }
        keys.push((code, action));
    }
    let Some(device) = raw.device.filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    if keys.is_empty() {
        return Err(invalid(
            "buttons.keys",
            "buttons.device is set but no key is mapped (e.g. keys = { KEY_VOICECOMMAND = \"listen\" })",
        ));
    }
    Ok(Some(ButtonsConfig {
        device,
        debounce: Duration::from_millis(debounce_ms),
        volume_step,
        keys,
    }))
}

fn leds(raw: RawLeds) -> Result<LedsConfig, ConfigError> {
    match raw.driver.as_deref().unwrap_or("none") {
        "none" => Ok(LedsConfig::None),
        "apa102" => {
            let count = raw.count.unwrap_or(3);
            if !(1..=256).contains(&count) {
                return Err(invalid("leds.count", "must be 1..=256"));
            }
            let brightness = raw.brightness.unwrap_or(8);
            if !(1..=31).contains(&brightness) {
                return Err(invalid(
                    "leds.brightness",
                    "must be 1..=31 (APA102 global brightness)",
                ));
            }
            let spi_hz = raw.spi_hz.unwrap_or(8_000_000);
            if !(10_000..=32_000_000).contains(&spi_hz) {
                return Err(invalid("leds.spi_hz", "must be 10000..=32000000"));
            }
            Ok(LedsConfig::Apa102 {
                spi: raw.spi.unwrap_or_else(|| PathBuf::from("/dev/spidev0.0")),
                count,
                brightness,
                spi_hz,
            })
        }
        "sysfs" => {
            let names = raw.names.unwrap_or_default();
            if names.is_empty() || names.iter().any(|n| n.is_empty() || n.contains('/')) {
                return Err(invalid(
                    "leds.names",
                    "the sysfs driver needs LED names from /sys/class/leds, e.g. [\"avsd\"]",
                ));
            }
            Ok(LedsConfig::Sysfs {
                dir: raw
                    .sysfs_dir
                    .unwrap_or_else(|| PathBuf::from("/sys/class/leds")),
                names,
            })
        }
        other => Err(invalid(
            "leds.driver",
            format!("{other:?} is not \"none\", \"apa102\" or \"sysfs\""),
        )),
    }
}

fn parse_https(key: &'static str, value: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(value).map_err(|e| invalid(key, format!("{value:?} is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(invalid(
            key,
            format!("{value:?} must use https (TLS is always verified)"),
        ));
    }
    Ok(url)
}

/// `value` or `default`; an explicitly empty or over-long string is refused (AVS limits these
/// Discovery fields to 128 characters).
fn non_empty(
    key: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    match value {
        None => Ok(default.to_owned()),
        Some(v) if v.trim().is_empty() => Err(invalid(key, "must not be empty")),
        Some(v) if v.chars().count() > 128 => Err(invalid(key, "must be at most 128 characters")),
        Some(v) => Ok(v),
    }
}

/// A stable default serial: the machine id when there is one.
fn default_serial() -> String {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().chars().take(16).collect::<String>())
        .filter(|s| !s.is_empty())
        .map(|s| format!("avsd-{s}"))
        .unwrap_or_else(|| "avsd-0001".into())
}

fn load_profile(name: &str, dirs: &[PathBuf]) -> Result<toml::Table, ConfigError> {
    let candidates: Vec<PathBuf> = if name.contains('/') || name.ends_with(".toml") {
        vec![PathBuf::from(name)]
    } else {
        dirs.iter()
            .map(|d| d.join(format!("{name}.toml")))
            .collect()
    };
    for path in &candidates {
        if let Ok(text) = std::fs::read_to_string(path) {
            let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for key in table.keys() {
                if !["description", "audio", "buttons", "leds"].contains(&key.as_str()) {
                    return Err(ConfigError::Syntax {
                        path: path.clone(),
                        message: format!(
                            "unknown section `{key}` (a profile holds description, [audio], [buttons], [leds])"
                        ),
                    });
                }
            }
            let mut table = table;
            table.remove("description");
            return Ok(table);
        }
    }
    Err(ConfigError::NoProfile {
        name: name.to_owned(),
        searched: candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Puts `profile`'s sections under `config`'s: keys already in the config win.
fn merge_under(config: &mut toml::Table, profile: toml::Table) {
    for (section, values) in profile {
        let toml::Value::Table(values) = values else {
            continue;
        };
        let entry = config
            .entry(section)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(target) = entry {
            for (k, v) in values {
                target.entry(k).or_insert(v);
            }
        }
    }
}

#[cfg(test)]
mod tests;
