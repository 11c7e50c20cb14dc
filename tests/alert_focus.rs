//! Alerts and dialogs sharing the speaker (AVS Alerts: `backgroundAlertAsset`, focus events):
//! an alarm that sounds when the user asks a question drops to its background sound while the
//! dialog holds the foreground (its `backgroundAlertAsset`, else the bundled short sound), then
//! plays its own sound again once the dialog ends; an alert without assets plays the bundled
//! sound of its type. Heard in the recording, events checked in the sim's recorder.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use avs_testkit::audio::{locate, read_wav_mono};
use avs_testkit::sim::TestSim;
use avsd::dialog::{DialogCommand, DialogStep};
use common::*;
use serde_json::json;

/// A mic file: `lead` of silence, then the utterance every 5 s, so a tap at any time after
/// `lead` hears a question (a `wav:` mic keeps the wall-clock timeline while paused).
fn mic_file(dir: &Path, lead: Duration) -> String {
    let (utterance, rate) = read_wav_mono(&utterance_path()).expect("utterance");
    let mut one = utterance.clone();
    one.resize(rate as usize * 5, 0.0);
    let mut all = vec![0.0f32; (lead.as_secs_f64() * f64::from(rate)) as usize];
    for _ in 0..8 {
        all.extend_from_slice(&one);
    }
    let path = dir.join("mic.wav");
    avs_testkit::audio::write_wav_i16(&path, rate, &avs_testkit::audio::to_i16(&all))
        .expect("mic wav");
    wav(&path)
}

/// Pushes a SetAlert firing `in_secs` from now with the given extra payload fields.
async fn set_alert(sim: &TestSim, token: &str, kind: &str, in_secs: i64, extra: serde_json::Value) {
    let stamp = rfc3339(time::OffsetDateTime::now_utc() + time::Duration::seconds(in_secs));
    let mut payload = json!({"token": token, "type": kind, "scheduledTime": stamp});
    if let (Some(p), Some(x)) = (payload.as_object_mut(), extra.as_object()) {
        p.extend(x.clone());
    }
    let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert", "messageId": format!("set-{token}")},
        "payload": payload}});
    push_directive(sim, &set).await;
    wait_event(sim, "Alerts.SetAlertSucceeded", Duration::from_secs(5)).await;
}

/// Waits for the alert to sound, asks a question 1.5 s later, waits for the answer and for the
/// alert to come back to the foreground, lets it sound `after` more, stops it. Returns the
/// recording and its rate.
async fn ring_through_a_dialog(
    sim: &TestSim,
    device: &mut Device,
    out: &Path,
    after: Duration,
) -> (Vec<f32>, u32) {
    wait_events(sim, "Alerts.AlertStarted", 1, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    device.command(DialogCommand::Listen).await;
    wait_events(
        sim,
        "Alerts.AlertEnteredBackground",
        1,
        Duration::from_secs(10),
    )
    .await;
    device
        .wait_step("the answer spoken", Duration::from_secs(30), |s| {
            matches!(s, DialogStep::SpeechFinished { .. })
        })
        .await;
    // Foreground at the start, then again after the dialog.
    wait_events(
        sim,
        "Alerts.AlertEnteredForeground",
        2,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(after).await;
    device.command(DialogCommand::Stop).await;
    wait_events(sim, "Alerts.AlertStopped", 1, Duration::from_secs(5)).await;
    let names: Vec<String> = recorded(sim, "Alerts")
        .into_iter()
        .map(|(name, _)| name)
        .filter(|n| n.starts_with("Alert"))
        .collect();
    assert_eq!(
        names,
        [
            "AlertStarted",
            "AlertEnteredForeground",
            "AlertEnteredBackground",
            "AlertEnteredForeground",
            "AlertStopped"
        ],
        "Alerts events in order"
    );
    read_wav_mono(out).expect("recording")
}

/// Where `clip` is first heard in `played` from sample `from` on (absolute), with a good match.
fn heard_from(played: &[f32], clip: &[f32], from: usize, rate: u32, what: &str) -> usize {
    let found = locate(&played[from.min(played.len())..], clip, rate)
        .unwrap_or_else(|| panic!("{what}: not in the recording"));
    assert!(
        found.score > 0.8,
        "{what}: best match scores {:.3}",
        found.score
    );
    eprintln!(
        "{what}: at {:.2} s (score {:.3})",
        (from + found.offset) as f64 / f64::from(rate),
        found.score
    );
    from + found.offset
}

/// A bundled earcon WAV resampled to `rate`, mono.
fn earcon_at(name: &str, rate: u32, dir: &Path) -> Vec<f32> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("assets/earcons/{name}.wav"));
    let out = dir.join(format!("{name}-{rate}.wav"));
    avs_testkit::audio::sox(&[
        &src.display().to_string(),
        "-r",
        &rate.to_string(),
        &out.display().to_string(),
    ])
    .expect("resample earcon");
    read_wav_mono(&out).expect("earcon").0
}

async fn device_for(sim: &TestSim, dir: &Path, out: &Path) -> Device {
    let mut c = config(sim, dir, &mic_file(dir, Duration::from_secs(2)), &wav(out));
    c.earcons = false;
    start_device(c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_under_a_dialog_plays_its_background_asset_then_its_own_sound_again() {
    let sim = sim("[[turn]]\nfinal_speech = \"It is five o'clock.\"\n").await;
    let dir = test_dir("alert-background-asset");
    let out = dir.join("out.wav");
    let mut device = device_for(&sim, &dir, &out).await;
    let own = avs_sim::speech::synthesize_mp3("Wake up. This is your alarm, in the foreground.")
        .expect("synthesize");
    let background = avs_sim::speech::synthesize_mp3("Background tone.").expect("synthesize");
    let url = |name: &str, mp3: &bytes::Bytes| {
        sim.admin
            .put_media(name, mp3.clone())
            .expect("media")
            .to_string()
    };
    let assets = json!([
        {"assetId": "own", "url": url("own.mp3", &own)},
        {"assetId": "bg", "url": url("bg.mp3", &background)},
    ]);
    set_alert(
        &sim,
        "alarm-bg",
        "ALARM",
        3,
        json!({"assets": assets, "assetPlayOrder": ["own"], "backgroundAlertAsset": "bg",
            "loopPauseInMilliSeconds": 300}),
    )
    .await;
    let (played, rate) =
        ring_through_a_dialog(&sim, &mut device, &out, Duration::from_secs(5)).await;
    device.stop().await;

    let decode = |name: &str, mp3: &bytes::Bytes| {
        let path = dir.join(name);
        std::fs::write(&path, mp3).expect("reference");
        avs_testkit::audio::reference_decode_mp3(&path, rate, &dir).expect("decode")
    };
    let (own, background) = (decode("own.mp3", &own), decode("bg.mp3", &background));
    let first = heard_from(&played, &own, 0, rate, "the alarm's own sound");
    let under = heard_from(
        &played,
        &background,
        first + rate as usize / 2,
        rate,
        "the background asset under the dialog",
    );
    heard_from(
        &played,
        &own,
        under + background.len() / 2,
        rate,
        "the alarm's own sound after the dialog",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_without_assets_plays_the_timer_sound_and_the_short_sound_under_a_dialog() {
    let sim = sim("[[turn]]\nfinal_speech = \"It is five o'clock.\"\n").await;
    let dir = test_dir("alert-bundled-sounds");
    let out = dir.join("out.wav");
    let mut device = device_for(&sim, &dir, &out).await;
    set_alert(
        &sim,
        "timer-1",
        "TIMER",
        3,
        json!({"loopPauseInMilliSeconds": 200}),
    )
    .await;
    let (played, rate) =
        ring_through_a_dialog(&sim, &mut device, &out, Duration::from_secs(3)).await;
    device.stop().await;

    let timer = earcon_at("timer", rate, &dir);
    let short = earcon_at("alert_short", rate, &dir);
    let alarm = earcon_at("alarm", rate, &dir);
    let first = heard_from(&played, &timer, 0, rate, "the timer sound");
    heard_from(
        &played,
        &short,
        first + timer.len(),
        rate,
        "the short sound under the dialog",
    );
    // The type's own sound, not the alarm's.
    let alarm_match = locate(&played, &alarm, rate).expect("correlation");
    assert!(
        alarm_match.score < 0.6,
        "the alarm sound matched a timer's recording ({:.3})",
        alarm_match.score
    );
}
