//! Buttons and LEDs without hardware, end to end against avs-sim: the button device is a FIFO
//! fed with crafted `struct input_event` records (press, release, autorepeat, bounce, SYN),
//! read by a real daemon; the APA102 driver writes its SPI frames to a plain file, checked
//! frame by frame through a real dialog; the sysfs driver writes a temp dir of `brightness`
//! files.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use avs_testkit::sim::TestSim;
use avsd::agents::speaker::VolumeCommand;
use avsd::attention::Attention;
use avsd::config::Config;
use avsd::dialog::{DialogCommand, DialogStep};
use avsd::hw::buttons::{ButtonAction, ButtonsConfig};
use avsd::hw::input::{self, InputEvent, KEY_PRESSED, KEY_RELEASED, KEY_REPEATED};
use avsd::hw::leds::{LedState, Leds, LedsConfig};
use common::*;
use serde_json::{Value, json};

const KEY_MUTE: u16 = 113;
const KEY_VOLUMEDOWN: u16 = 114;
const KEY_VOLUMEUP: u16 = 115;
const KEY_NEXTSONG: u16 = 163;
const KEY_PLAYPAUSE: u16 = 164;
const KEY_VOICECOMMAND: u16 = 582;

const ANSWER: &str = "[[turn]]\nfinal_speech = \"It is five o'clock.\"\n";

/// A mic that says the utterance every few seconds, so a tap at any time hears a question.
fn repeating_mic(dir: &Path) -> String {
    let mut reader = hound::WavReader::open(utterance_path()).expect("utterance");
    let spec = reader.spec();
    let utterance: Vec<i16> = reader
        .samples::<i16>()
        .map(|s| s.expect("sample"))
        .collect();
    let path = dir.join("mic.wav");
    let mut w = hound::WavWriter::create(&path, spec).expect("mic wav");
    for _ in 0..8 {
        for _ in 0..spec.sample_rate * 2 {
            w.write_sample(0i16).expect("write");
        }
        for s in &utterance {
            w.write_sample(*s).expect("write");
        }
    }
    w.finalize().expect("finalize");
    wav(&path)
}

/// A device hearing [`repeating_mic`], the speaker into `dir/out.wav`, no earcons (they would
/// shift what the tests time).
fn repeating_mic_config(sim: &TestSim, dir: &Path) -> Config {
    let mut c = config(sim, dir, &repeating_mic(dir), &wav(&dir.join("out.wav")));
    c.earcons = false;
    c
}

/// Points `c` at an APA102 strip whose SPI device is a plain file in `dir` (every frame written
/// is appended to it); returns that file.
fn apa102_stand_in(c: &mut Config, dir: &Path) -> PathBuf {
    let spi = dir.join("spidev0.0");
    std::fs::write(&spi, b"").expect("spi stand-in");
    c.leds = LedsConfig::Apa102 {
        spi: spi.clone(),
        count: PIXELS,
        brightness: 8,
        spi_hz: 8_000_000,
    };
    spi
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

/// The writing end of the button FIFO (opening it waits for the daemon to open its end).
async fn fifo_writer(path: &Path) -> std::fs::File {
    let path = path.to_owned();
    tokio::time::timeout(
        Duration::from_secs(15),
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(path)),
    )
    .await
    .expect("the daemon opened the button device in time")
    .expect("join")
    .expect("open fifo")
}

/// Writes events as the kernel would, each followed by a SYN_REPORT.
fn send_keys(fifo: &mut std::fs::File, keys: &[(u16, i32)]) {
    let mut bytes = Vec::new();
    for (i, &(code, value)) in keys.iter().enumerate() {
        let t = i64::try_from(i).unwrap();
        bytes.extend_from_slice(&input::encode(InputEvent::key(code, value), 1_000, t));
        bytes.extend_from_slice(&input::encode(InputEvent::syn(), 1_000, t));
    }
    fifo.write_all(&bytes).expect("write events");
}

fn tap(code: u16) -> [(u16, i32); 2] {
    [(code, KEY_PRESSED), (code, KEY_RELEASED)]
}

fn buttons(device: &Path) -> ButtonsConfig {
    ButtonsConfig {
        device: device.display().to_string(),
        // Wide enough that a loaded machine still reads a written bounce within it.
        debounce: Duration::from_millis(250),
        volume_step: 10,
        keys: vec![
            (KEY_VOICECOMMAND, ButtonAction::Listen),
            (KEY_VOLUMEUP, ButtonAction::VolumeUp),
            (KEY_VOLUMEDOWN, ButtonAction::VolumeDown),
            (KEY_MUTE, ButtonAction::Mute),
            (KEY_PLAYPAUSE, ButtonAction::PlayPause),
            (KEY_NEXTSONG, ButtonAction::Next),
        ],
    }
}

fn names(sim: &avs_testkit::sim::TestSim, namespace: &str) -> Vec<String> {
    recorded(sim, namespace)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_button_device_that_appears_late_drives_listen_volume_and_transport() {
    let sim = sim(ANSWER).await;
    let dir = test_dir("hw-buttons");
    let mut c = repeating_mic_config(&sim, &dir);
    let fifo_path = dir.join("buttons");
    c.buttons = Some(buttons(&fifo_path));
    // The device does not exist when the daemon starts: it runs on and finds it later.
    let mut device = start_device(c).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    mkfifo(&fifo_path);
    let mut fifo = fifo_writer(&fifo_path).await;

    send_keys(&mut fifo, &tap(KEY_VOICECOMMAND));
    let recognize = sim
        .recorder
        .wait_for_event("SpeechRecognizer.Recognize", Duration::from_secs(10))
        .await
        .expect("a Recognize for the listen button");
    assert_eq!(
        recognize.event.expect("event").payload["initiator"]["type"],
        "TAP"
    );
    device
        .wait_step("the answer", Duration::from_secs(30), |s| {
            matches!(s, DialogStep::SpeechFinished { .. })
        })
        .await;

    // Volume up held: a press and two autorepeats. Volume down bouncing: one press.
    send_keys(
        &mut fifo,
        &[
            (KEY_VOLUMEUP, KEY_PRESSED),
            (KEY_VOLUMEUP, KEY_REPEATED),
            (KEY_VOLUMEUP, KEY_REPEATED),
            (KEY_VOLUMEUP, KEY_RELEASED),
            (KEY_VOLUMEDOWN, KEY_PRESSED),
            (KEY_VOLUMEDOWN, KEY_RELEASED),
            (KEY_VOLUMEDOWN, KEY_PRESSED),
            (KEY_VOLUMEDOWN, KEY_RELEASED),
        ],
    );
    send_keys(&mut fifo, &tap(KEY_MUTE));
    wait_events(&sim, "Speaker.MuteChanged", 1, Duration::from_secs(10)).await;
    send_keys(&mut fifo, &tap(KEY_PLAYPAUSE));
    send_keys(&mut fifo, &tap(KEY_NEXTSONG));
    wait_events(
        &sim,
        "PlaybackController.NextCommandIssued",
        1,
        Duration::from_secs(10),
    )
    .await;

    let speaker: Vec<Value> = sim
        .recorder
        .records()
        .into_iter()
        .filter_map(|r| r.event)
        .filter(|e| e.namespace == "Speaker")
        .map(|e| json!([e.name, e.payload["volume"], e.payload["muted"]]))
        .collect();
    assert_eq!(
        speaker,
        [
            json!(["VolumeChanged", 60, false]),
            json!(["VolumeChanged", 70, false]),
            json!(["VolumeChanged", 80, false]),
            json!(["VolumeChanged", 70, false]),
            json!(["MuteChanged", 70, true]),
        ],
        "a bounce is one press"
    );
    assert_eq!(
        names(&sim, "PlaybackController"),
        ["PlayCommandIssued", "NextCommandIssued"],
        "play_pause with nothing playing is Play"
    );
    assert_eq!(
        sim.recorder.events("SpeechRecognizer.Recognize").len(),
        1,
        "the release of a tap starts nothing"
    );
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn press_and_hold_streams_until_the_button_is_released() {
    let sim = sim(ANSWER).await;
    let dir = test_dir("hw-hold");
    let mut c = repeating_mic_config(&sim, &dir);
    c.dialog.initiator = "PRESS_AND_HOLD".into();
    let fifo_path = dir.join("buttons");
    mkfifo(&fifo_path);
    c.buttons = Some(buttons(&fifo_path));
    let mut device = start_device(c).await;
    let mut fifo = fifo_writer(&fifo_path).await;

    send_keys(&mut fifo, &[(KEY_VOICECOMMAND, KEY_PRESSED)]);
    device
        .wait_step("first frame", Duration::from_secs(10), |s| {
            matches!(s, DialogStep::FirstFrameSent)
        })
        .await;
    // Held through a whole cycle of the mic (silence, then the question), with the kernel's
    // autorepeat: still one Recognize, still streaming.
    for _ in 0..33 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send_keys(&mut fifo, &[(KEY_VOICECOMMAND, KEY_REPEATED)]);
    }
    send_keys(&mut fifo, &[(KEY_VOICECOMMAND, KEY_RELEASED)]);
    let closed = device
        .wait_step("mic closed", Duration::from_secs(10), |s| {
            matches!(
                s,
                DialogStep::MicClosed { .. } | DialogStep::StopCaptureReceived
            )
        })
        .await;
    assert_eq!(
        closed.step,
        DialogStep::MicClosed {
            reason: "LocalStop".into()
        },
        "the release, not the cloud, ends a press-and-hold capture"
    );
    let recognize = sim.recorder.events("SpeechRecognizer.Recognize");
    assert_eq!(recognize.len(), 1);
    assert_eq!(
        recognize[0].event.as_ref().expect("event").payload["initiator"]["type"],
        "PRESS_AND_HOLD"
    );
    device
        .wait_step("the answer", Duration::from_secs(30), |s| {
            matches!(s, DialogStep::SpeechStarted { .. })
        })
        .await;
    device.stop().await;
}

const PIXELS: usize = 3;
const FRAME_BYTES: usize = 4 + 4 * PIXELS + 4;

type Px = (u8, u8, u8);
const O: Px = (0, 0, 0);
const B: Px = (0, 0, 255);
const C: Px = (0, 255, 255);
const W: Px = (255, 255, 255);
const R: Px = (255, 0, 0);
const ORANGE: Px = (255, 80, 0);
const YELLOW: Px = (255, 180, 0);

/// Splits the SPI stream into frames, checking each frame's fixed parts, and returns the
/// pixels (R, G, B) of each.
fn frames(bytes: &[u8]) -> Vec<[Px; PIXELS]> {
    assert_eq!(bytes.len() % FRAME_BYTES, 0, "whole frames only");
    bytes
        .chunks(FRAME_BYTES)
        .map(|f| {
            assert_eq!(&f[..4], [0, 0, 0, 0], "start frame");
            assert_eq!(&f[FRAME_BYTES - 4..], [0, 0, 0, 0], "end frame");
            let mut px = [O; PIXELS];
            for (i, p) in px.iter_mut().enumerate() {
                let led = &f[4 + 4 * i..8 + 4 * i];
                assert_eq!(led[0], 0xE0 | 8, "brightness byte");
                *p = (led[3], led[2], led[1]);
            }
            px
        })
        .collect()
}

fn class(px: &[Px; PIXELS]) -> &'static str {
    match *px {
        [O, O, O] => "idle",
        [ORANGE, ORANGE, ORANGE] => "offline",
        [B, C, B] => "listening",
        [C, B, C] | [B, B, B] => "thinking",
        [W, O, O] => "volume",
        [R, R, R] => "muted",
        [YELLOW, YELLOW, YELLOW] => "alerting",
        [a, b, c] if a == b && b == c && a.0 == 0 && a.1 > 0 => "speaking",
        _ => "unknown",
    }
}

/// Waits until the last frame written shows `class`; returns every frame so far.
async fn wait_for_picture(spi: &Path, want: &str) -> Vec<[Px; PIXELS]> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let bytes = std::fs::read(spi).expect("frames");
        let f = frames(&bytes[..bytes.len() - bytes.len() % FRAME_BYTES]);
        if f.last().map(class) == Some(want) {
            return f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {want}: {:?}",
            f.iter().map(class).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apa102_frames_follow_a_dialog_and_a_mute() {
    let sim = sim(ANSWER).await;
    let dir = test_dir("hw-apa102");
    let mut c = repeating_mic_config(&sim, &dir);
    let spi = apa102_stand_in(&mut c, &dir);
    let mut device = start_device(c).await;
    wait_for_picture(&spi, "idle").await;
    let cmd = device.daemon.dialog.commands.clone();
    cmd.send(DialogCommand::Listen).await.expect("listen");
    for state in [
        Attention::Listening,
        Attention::Thinking,
        Attention::Speaking,
        Attention::Idle,
    ] {
        device
            .wait_step(&format!("{state:?}"), Duration::from_secs(30), |s| {
                *s == DialogStep::Attention { state }
            })
            .await;
    }
    cmd.send(DialogCommand::Volume(VolumeCommand::Mute(true)))
        .await
        .expect("mute");
    // The flash, then the lasting muted picture.
    let shown = wait_for_picture(&spi, "muted").await;
    device.stop().await;

    for pair in shown.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "a frame is written only when the picture changes"
        );
    }
    let mut classes: Vec<&str> = shown.iter().map(class).collect();
    assert!(!classes.contains(&"unknown"), "{classes:?}");
    assert!(shown.contains(&[C, B, C]), "thinking");
    assert!(
        classes.iter().filter(|c| **c == "speaking").count() >= 3,
        "speaking pulses: {classes:?}"
    );
    classes.dedup();
    // Offline shows only if the LEDs came up before the link did.
    if classes.first() == Some(&"offline") {
        classes.remove(0);
    }
    assert_eq!(
        classes,
        [
            "idle",
            "listening",
            "thinking",
            "speaking",
            "idle",
            "volume",
            "muted"
        ]
    );
    // Switched off on shutdown.
    let bytes = std::fs::read(&spi).expect("frames");
    assert_eq!(frames(&bytes).last().map(class), Some("idle"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apa102_blinks_yellow_while_a_timer_rings_until_stopped() {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir("hw-alert");
    let mut c = speaker_config(&sim, &dir);
    let spi = apa102_stand_in(&mut c, &dir);
    let mut device = start_device(c).await;
    wait_for_picture(&spi, "idle").await;
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let stamp = avs_timestamp(at);
    let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert", "messageId": "a-1"},
        "payload": {"token": "timer-1", "type": "TIMER", "scheduledTime": stamp}}});
    push_directive(&sim, &set).await;
    device
        .wait_step("AlertStarted", Duration::from_secs(15), |s| {
            matches!(s, DialogStep::AlertStarted { .. })
        })
        .await;
    wait_for_picture(&spi, "alerting").await;
    // Blinking: yellow, dark, yellow again.
    wait_for_picture(&spi, "idle").await;
    let ringing = wait_for_picture(&spi, "alerting").await;
    device.command(DialogCommand::Stop).await;
    device
        .wait_step("AlertStopped", Duration::from_secs(5), |s| {
            matches!(s, DialogStep::AlertStopped { .. })
        })
        .await;
    let after = wait_for_picture(&spi, "idle").await;
    // Stopped means still: nothing more is written after the dark picture.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let bytes = std::fs::read(&spi).expect("frames");
    assert_eq!(frames(&bytes).len(), after.len(), "no writes while idle");
    assert!(ringing.iter().filter(|f| class(f) == "alerting").count() >= 2);
    device.stop().await;
}

fn sysfs_led(dir: &Path, name: &str, max: &str) -> PathBuf {
    let led = dir.join(name);
    std::fs::create_dir_all(&led).expect("led dir");
    std::fs::write(led.join("brightness"), "0").expect("brightness");
    std::fs::write(led.join("max_brightness"), max).expect("max");
    led.join("brightness")
}

#[test]
fn sysfs_leds_switch_on_their_max_brightness_and_name_what_exists() {
    let dir = test_dir("hw-sysfs");
    let a = sysfs_led(&dir, "avsd:blue", "255\n");
    let b = sysfs_led(&dir, "avsd:red", "1");
    let read = |p: &Path| std::fs::read_to_string(p).expect("read");
    let config = LedsConfig::Sysfs {
        dir: dir.clone(),
        names: vec!["avsd:blue".into(), "avsd:red".into()],
    };
    let mut leds = Leds::open(&config).expect("open").expect("a driver");
    leds.show(LedState::Listening, 0).expect("show");
    assert_eq!((read(&a), read(&b)), ("255".into(), "1".into()));
    leds.show(LedState::Thinking, 1).expect("show");
    assert_eq!((read(&a), read(&b)), ("0".into(), "0".into()));
    leds.show(LedState::Thinking, 2).expect("show");
    assert_eq!(read(&a), "255");
    // Nothing is written while the level stays the same.
    std::fs::write(&a, "untouched").expect("mark");
    leds.show(LedState::Listening, 0).expect("show");
    assert_eq!(read(&a), "untouched");
    leds.show(LedState::Idle, 0).expect("show");
    assert_eq!((read(&a), read(&b)), ("0".into(), "0".into()));

    let missing = LedsConfig::Sysfs {
        dir: dir.clone(),
        names: vec!["led0".into()],
    };
    let err = Leds::open(&missing).err().expect("no led0").to_string();
    assert!(
        err.contains("leds.names") && err.contains("avsd:blue, avsd:red"),
        "{err}"
    );
}
