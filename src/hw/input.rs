//! Linux input devices (evdev): finding one by path or by name, decoding `struct input_event`
//! records, and reading them without blocking the runtime. Key names are the kernel's
//! (`include/uapi/linux/input-event-codes.h`), for the ones a speaker's buttons use.

use std::ffi::c_long;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

pub const EV_SYN: u16 = 0;
pub const EV_KEY: u16 = 1;

/// `struct input_event` on this target: a time of two C longs (seconds, microseconds; the
/// kernel keeps two longs even where userspace has a 64-bit `time_t`), then `u16 type`,
/// `u16 code`, `i32 value`: 24 bytes on 64-bit, 16 on 32-bit ARM.
pub const EVENT_BYTES: usize = 2 * std::mem::size_of::<c_long>() + 8;

/// Key values of an EV_KEY event.
pub const KEY_RELEASED: i32 = 0;
pub const KEY_PRESSED: i32 = 1;
pub const KEY_REPEATED: i32 = 2;

/// One input event (the time stamp is not kept: the reader's clock is what matters here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    pub fn key(code: u16, value: i32) -> Self {
        Self {
            kind: EV_KEY,
            code,
            value,
        }
    }

    pub fn syn() -> Self {
        Self {
            kind: EV_SYN,
            code: 0,
            value: 0,
        }
    }
}

/// Decodes one record of exactly [`EVENT_BYTES`] bytes (native byte order, as the kernel
/// writes them).
pub fn decode(record: &[u8; EVENT_BYTES]) -> InputEvent {
    let at = EVENT_BYTES - 8;
    let u16_at = |i: usize| u16::from_ne_bytes([record[i], record[i + 1]]);
    InputEvent {
        kind: u16_at(at),
        code: u16_at(at + 2),
        value: i32::from_ne_bytes([
            record[at + 4],
            record[at + 5],
            record[at + 6],
            record[at + 7],
        ]),
    }
}

/// Encodes a record as the kernel would (for tests and tools that feed a FIFO).
pub fn encode(event: InputEvent, seconds: i64, micros: i64) -> [u8; EVENT_BYTES] {
    let mut out = [0u8; EVENT_BYTES];
    let long = std::mem::size_of::<c_long>();
    // A C long is 4 or 8 bytes; truncating the time to it is what the kernel does too.
    let sec = seconds.to_ne_bytes();
    let usec = micros.to_ne_bytes();
    if cfg!(target_endian = "little") {
        out[..long].copy_from_slice(&sec[..long]);
        out[long..2 * long].copy_from_slice(&usec[..long]);
    } else {
        out[..long].copy_from_slice(&sec[8 - long..]);
        out[long..2 * long].copy_from_slice(&usec[8 - long..]);
    }
    let at = 2 * long;
    out[at..at + 2].copy_from_slice(&event.kind.to_ne_bytes());
    out[at + 2..at + 4].copy_from_slice(&event.code.to_ne_bytes());
    out[at + 4..at + 8].copy_from_slice(&event.value.to_ne_bytes());
    out
}

/// Key names a speaker's buttons are likely to send, with their codes.
const KEYS: &[(&str, u16)] = &[
    ("KEY_ENTER", 28),
    ("KEY_SPACE", 57),
    ("KEY_MUTE", 113),
    ("KEY_VOLUMEDOWN", 114),
    ("KEY_VOLUMEUP", 115),
    ("KEY_POWER", 116),
    ("KEY_PAUSE", 119),
    ("KEY_STOP", 128),
    ("KEY_PROG1", 148),
    ("KEY_PROG2", 149),
    ("KEY_NEXTSONG", 163),
    ("KEY_PLAYPAUSE", 164),
    ("KEY_PREVIOUSSONG", 165),
    ("KEY_STOPCD", 166),
    ("KEY_PLAY", 207),
    ("KEY_PLAYCD", 200),
    ("KEY_PAUSECD", 201),
    ("KEY_MICMUTE", 248),
    ("BTN_0", 256),
    ("BTN_1", 257),
    ("BTN_2", 258),
    ("BTN_3", 259),
    ("BTN_4", 260),
    ("BTN_5", 261),
    ("BTN_6", 262),
    ("BTN_7", 263),
    ("BTN_8", 264),
    ("BTN_9", 265),
    ("KEY_VOICECOMMAND", 582),
];

/// A key by kernel name (`KEY_VOLUMEUP`) or decimal code (`115`).
pub fn key_code(name: &str) -> Option<u16> {
    KEYS.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, c)| *c)
        .or_else(|| name.parse().ok().filter(|c| *c < 0x300))
}

/// The kernel name of a key code, when it is one of the known ones.
pub fn key_name(code: u16) -> Option<&'static str> {
    KEYS.iter().find(|(_, c)| *c == code).map(|(n, _)| *n)
}

/// Why an input device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("buttons.device: no input device {wanted:?}; {available}")]
    NotFound { wanted: String, available: String },
    #[error("buttons.device: cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the kernel lists input devices.
pub const SYS_CLASS_INPUT: &str = "/sys/class/input";

/// Resolves `device`: a path (`/dev/input/event0`, `/dev/input/by-path/...`, a FIFO) is taken
/// as it is; anything else is an input device name (`/sys/class/input/eventN/device/name`),
/// matched exactly first, then as a part of the name.
pub fn resolve(device: &str, sys_class_input: &Path) -> Result<PathBuf, InputError> {
    if device.starts_with('/') {
        let path = PathBuf::from(device);
        if path.exists() {
            return Ok(path);
        }
        return Err(InputError::NotFound {
            wanted: device.to_owned(),
            available: available(sys_class_input),
        });
    }
    let named = named_devices(sys_class_input);
    let found = named
        .iter()
        .find(|(_, name)| name == device)
        .or_else(|| named.iter().find(|(_, name)| name.contains(device)));
    match found {
        Some((node, _)) => Ok(Path::new("/dev/input").join(node)),
        None => Err(InputError::NotFound {
            wanted: device.to_owned(),
            available: available(sys_class_input),
        }),
    }
}

/// `(eventN, name)` of every input device the kernel lists, sorted.
fn named_devices(sys_class_input: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(sys_class_input) {
        for entry in entries.flatten() {
            let node = entry.file_name().to_string_lossy().into_owned();
            if !node.starts_with("event") {
                continue;
            }
            if let Ok(name) = std::fs::read_to_string(entry.path().join("device/name")) {
                out.push((node, name.trim().to_owned()));
            }
        }
    }
    out.sort();
    out
}

/// What exists, for error messages: device names and `/dev/input/by-path` entries.
pub fn available(sys_class_input: &Path) -> String {
    let named = named_devices(sys_class_input);
    let mut by_path: Vec<String> = std::fs::read_dir("/dev/input/by-path")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    by_path.sort();
    if named.is_empty() && by_path.is_empty() {
        return "this machine has no input devices (is the gpio-key overlay in config.txt?)"
            .to_owned();
    }
    let names = named
        .iter()
        .map(|(node, name)| format!("/dev/input/{node} {name:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "input devices: [{names}]; by path: [{}]",
        by_path.join(", ")
    )
}

/// Reads input events from a device node or FIFO, waiting in the runtime's reactor (so a
/// shutdown never waits on a blocked read).
pub struct InputReader {
    fd: pipe::Receiver,
    buf: [u8; EVENT_BYTES * 32],
    start: usize,
    end: usize,
}

impl InputReader {
    pub fn open(path: &Path) -> Result<Self, InputError> {
        let open_err = |source| InputError::Open {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(open_err)?;
        // tokio's pipe receiver is a plain non-blocking fd in the reactor: it serves an evdev
        // node (which supports poll) as well as a FIFO, without the unsafe AsyncFd::register.
        Ok(Self {
            fd: pipe::Receiver::from_file_unchecked(file).map_err(open_err)?,
            buf: [0; EVENT_BYTES * 32],
            start: 0,
            end: 0,
        })
    }

    /// The next event; `None` when the device went away (or the FIFO's writer closed it).
    pub async fn next(&mut self) -> std::io::Result<Option<InputEvent>> {
        loop {
            if self.end - self.start >= EVENT_BYTES {
                let mut record = [0u8; EVENT_BYTES];
                record.copy_from_slice(&self.buf[self.start..self.start + EVENT_BYTES]);
                self.start += EVENT_BYTES;
                return Ok(Some(decode(&record)));
            }
            // Keep a partial record (a FIFO may split one) at the front.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            match self.fd.read(&mut self.buf[self.end..]).await {
                Ok(0) => return Ok(None),
                Ok(n) => self.end += n,
                // An unplugged (or unbound) input device.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_at_this_targets_size() {
        assert_eq!(
            EVENT_BYTES,
            if cfg!(target_pointer_width = "64") {
                24
            } else {
                16
            }
        );
        let e = InputEvent::key(115, KEY_REPEATED);
        let bytes = encode(e, 1_700_000_000, 123_456);
        assert_eq!(decode(&bytes), e);
        assert_eq!(
            &bytes[EVENT_BYTES - 8..EVENT_BYTES - 6],
            &1u16.to_ne_bytes()
        );
    }

    #[test]
    fn key_names_and_numbers() {
        assert_eq!(key_code("KEY_VOLUMEUP"), Some(115));
        assert_eq!(key_code("key_playpause"), Some(164));
        assert_eq!(key_code("582"), Some(582));
        assert_eq!(key_code("KEY_NOPE"), None);
        assert_eq!(key_code("70000"), None);
        assert_eq!(key_name(582), Some("KEY_VOICECOMMAND"));
    }

    #[test]
    fn a_missing_device_names_what_exists() {
        let dir = std::env::temp_dir().join(format!("avsd-input-{}", std::process::id()));
        let ev = dir.join("event3/device");
        std::fs::create_dir_all(&ev).unwrap();
        std::fs::write(ev.join("name"), "button@11\n").unwrap();
        let err = resolve("gpio_keys", &dir).unwrap_err().to_string();
        assert!(err.contains("\"gpio_keys\""), "{err}");
        assert!(err.contains("/dev/input/event3 \"button@11\""), "{err}");
        assert_eq!(
            resolve("button@11", &dir).unwrap(),
            PathBuf::from("/dev/input/event3")
        );
        assert_eq!(
            resolve("button", &dir).unwrap(),
            PathBuf::from("/dev/input/event3")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
