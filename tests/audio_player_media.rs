//! AudioPlayer media features through the JACK-backed virtual speaker: a Play with
//! `offsetInMilliseconds` is heard from that position (not from 0) and every offset the cloud
//! gets is in stream time; ID3v2 tags and ICY radio titles become StreamMetadataExtracted, and
//! an ICY stream's audio reaches the speaker without its metadata blocks.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use avs_sim::Record;
use avs_testkit::audio::{
    find_clip, noise, reference_decode_mp3, rms, to_i16, window_matches, with_virtual_audio,
};
use avs_testkit::fixture;
use avs_testkit::sim::TestSim;
use common::*;
use serde_json::{Value, json};

const RATE: u32 = 16_000;
/// The test track's rate: MPEG-2 layer III, 576-frame packets.
const TRACK_RATE: u32 = 24_000;
/// One MP3 frame of the track, in samples at `RATE` (576 / 24000 s).
const FRAME_AT_RATE: usize = 384;

/// 8.0 s of smoothed white noise as an MP3: no second resembles another, so a correlation
/// finds each at one place only (music loops would match at several).
fn music() -> Vec<u8> {
    let raw = noise(8 * TRACK_RATE as usize, 11, 0.5);
    let smooth: Vec<f32> = raw.windows(3).map(|w| (w[0] + w[1] + w[2]) / 3.0).collect();
    avs_sim::speech::encode_mp3(&to_i16(&smooth), TRACK_RATE)
        .expect("encode")
        .to_vec()
}

async fn push(sim: &TestSim, name: &str, payload: Value) {
    let d = json!({"directive": {"header": {"namespace": "AudioPlayer", "name": name,
        "messageId": uuid::Uuid::new_v4().to_string()}, "payload": payload}});
    sim.admin.push(None, d.to_string()).await.expect("push");
}

fn play(behavior: &str, token: &str, url: &url::Url, offset_ms: u64, progress: Value) -> Value {
    json!({"playBehavior": behavior, "audioItem": {"audioItemId": token, "stream": {
        "url": url.as_str(), "offsetInMilliseconds": offset_ms, "token": token,
        "progressReport": progress}}})
}

async fn wait_for(sim: &TestSim, name: &str, token: &str) -> Record {
    wait_player_event(sim, name, token, Duration::from_secs(30)).await
}

/// The payloads of `AudioPlayer.<name>` for `token`, in order.
fn payloads(sim: &TestSim, name: &str, token: &str) -> Vec<Value> {
    sim.recorder
        .events(&format!("AudioPlayer.{name}"))
        .into_iter()
        .filter_map(|r| r.event)
        .filter(|e| e.payload["token"] == token)
        .map(|e| e.payload)
        .collect()
}

fn offset_of(p: &Value) -> u64 {
    p["offsetInMilliseconds"]
        .as_u64()
        .expect("offsetInMilliseconds")
}

fn device_config(sim: &TestSim, dir: &Path, speaker: &str) -> avsd::config::Config {
    let mut c = config(sim, dir, "none", speaker);
    c.audio.output_rate = Some(RATE);
    c.earcons = false;
    c
}

#[test]
fn play_with_an_offset_is_heard_from_there_and_reports_stream_time() {
    with_virtual_audio(
        "play_with_an_offset_is_heard_from_there_and_reports_stream_time",
        RATE,
        |rig| {
            runtime().block_on(async {
                let sim = sim("[[turn]]\nreject = true\n").await;
                let dir = test_dir("ap-offset");
                let device = start_device(device_config(&sim, &dir, rig.speaker_device())).await;
                let url = sim.admin.put_media("music.mp3", music().into()).expect("media");

                // The delay (2 s) lies before the start (3 s): never reported. Intervals of 1 s
                // fall on 4, 5, 6 and 7 s of the track.
                let progress = json!({"progressReportDelayInMilliseconds": 2000,
                    "progressReportIntervalInMilliseconds": 1000});
                push(&sim, "Play", play("REPLACE_ALL", "m1", &url, 3000, progress)).await;
                let started = wait_for(&sim, "PlaybackStarted", "m1").await;
                let finished = wait_for(&sim, "PlaybackFinished", "m1").await;

                // Again from 1.5 s, stopped after about a second of play.
                push(&sim, "Play", play("REPLACE_ALL", "m2", &url, 1500, json!({}))).await;
                wait_for(&sim, "PlaybackStarted", "m2").await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                push(&sim, "Stop", json!({})).await;
                let stopped = wait_for(&sim, "PlaybackStopped", "m2").await;

                // An offset past the end: it plays nothing and finishes, it does not fail
                // (as a seek past the end does in the reference SDK's player).
                push(&sim, "Play", play("REPLACE_ALL", "m3", &url, 60_000, json!({}))).await;
                let m3_finished = wait_for(&sim, "PlaybackFinished", "m3").await;
                let out_channels = device.daemon.audio_stats().output.map(|o| o.channels).expect("output");
                tokio::time::sleep(Duration::from_millis(300)).await;
                device.stop().await;

                let p = |r: &Record| r.event.as_ref().expect("event").payload.clone();
                assert_eq!(offset_of(&p(&started)), 3000, "PlaybackStarted: {:?}", p(&started));
                let end = offset_of(&p(&finished));
                assert!((7900..=8150).contains(&end), "PlaybackFinished at {end} ms of an 8 s track");
                assert!(payloads(&sim, "ProgressReportDelayElapsed", "m1").is_empty(), "the delay was before the start");
                let intervals: Vec<u64> = payloads(&sim, "ProgressReportIntervalElapsed", "m1").iter().map(offset_of).collect();
                // Every whole second from 4 s up to where the track ended (8.0x s).
                let want: Vec<u64> = (4..=end / 1000).map(|s| s * 1000).collect();
                assert_eq!(intervals, want, "track ended at {end} ms");
                let m2_started = payloads(&sim, "PlaybackStarted", "m2");
                assert_eq!(offset_of(&m2_started[0]), 1500);
                let m3: Vec<String> = recorded(&sim, "AudioPlayer")
                    .into_iter()
                    .filter(|(_, t)| t == "m3")
                    .map(|(n, _)| n)
                    .collect();
                assert_eq!(
                    m3,
                    ["PlaybackStarted", "PlaybackNearlyFinished", "PlaybackFinished"],
                    "past the end"
                );
                assert_eq!(offset_of(&p(&m3_finished)), 60_000);
                let stop_at = offset_of(&p(&stopped));
                assert!((2000..=3500).contains(&stop_at), "stopped about 1 s after 1.5 s: {stop_at}");

                // The speaker heard the track from 3.0 s: the reference decode's 3.0-4.0 s is
                // there, and the frame before the match is silent (nothing earlier was played).
                let played = rig.played(out_channels).expect("played");
                let path = dir.join("music.mp3");
                std::fs::write(&path, music()).expect("write");
                let reference = reference_decode_mp3(&path, RATE, &dir).expect("reference");
                let sec = RATE as usize;
                let m = find_clip(&played, &reference[3 * sec..4 * sec]).expect("found");
                assert!(m.score > 0.9, "3.0-4.0 s not heard intact: {m:?}");
                let before = &played[m.offset.saturating_sub(sec / 2)..m.offset.saturating_sub(FRAME_AT_RATE)];
                let heard = rms(&played[m.offset..m.offset + sec]);
                assert!(
                    rms(before) < heard * 0.02,
                    "audio before the 3.0 s position was played: {} vs {heard}",
                    rms(before)
                );
                let first = played[m.offset.saturating_sub(FRAME_AT_RATE)..]
                    .iter()
                    .position(|s| s.abs() > 0.01)
                    .map(|i| i + m.offset.saturating_sub(FRAME_AT_RATE));
                let onset = first.expect("onset");
                assert!(
                    onset.abs_diff(m.offset) <= FRAME_AT_RATE,
                    "the track starts {} samples from where 3.0 s was found",
                    onset.abs_diff(m.offset)
                );
                // 2.0-3.0 s (skipped) was never heard.
                let skipped = find_clip(&played, &reference[2 * sec..3 * sec]).expect("searched");
                assert!(skipped.score < 0.5, "the skipped second was heard: {skipped:?}");
                eprintln!("offset play: match {m:?}, onset {onset}, finished {end} ms, stopped {stop_at} ms");
            });
        },
    );
}

#[test]
fn id3_and_icy_metadata_are_extracted_and_icy_audio_is_intact() {
    with_virtual_audio(
        "id3_and_icy_metadata_are_extracted_and_icy_audio_is_intact",
        RATE,
        |rig| {
            runtime().block_on(async {
                let sim = sim("[[turn]]\nreject = true\n").await;
                let dir = test_dir("ap-meta");
                let device = start_device(device_config(&sim, &dir, rig.speaker_device())).await;

                // ID3v2: one StreamMetadataExtracted with the tag's fields, after Started.
                let speech = std::fs::read(fixture("audio_speech_24k_mono.mp3")).expect("fixture");
                let tagged = avs_sim::media::with_id3v2(
                    &speech,
                    &[
                        ("TIT2", "Morning Song"),
                        ("TPE1", "The Testers"),
                        ("TALB", "Fixtures"),
                        ("TCON", "Speech"),
                    ],
                );
                let url = sim.admin.put_media("tagged.mp3", tagged).expect("media");
                push(&sim, "Play", play("REPLACE_ALL", "id3", &url, 0, json!({}))).await;
                wait_for(&sim, "PlaybackFinished", "id3").await;
                let meta = payloads(&sim, "StreamMetadataExtracted", "id3");
                assert_eq!(meta.len(), 1, "{meta:?}");
                assert_eq!(meta[0]["metadata"]["title"], "Morning Song");
                assert_eq!(meta[0]["metadata"]["artist"], "The Testers");
                assert_eq!(meta[0]["metadata"]["album"], "Fixtures");
                assert_eq!(meta[0]["metadata"]["genre"], "Speech");
                let order: Vec<(String, String)> = recorded(&sim, "AudioPlayer");
                let started = order
                    .iter()
                    .position(|e| e == &("PlaybackStarted".into(), "id3".into()));
                let extracted = order
                    .iter()
                    .position(|e| e == &("StreamMetadataExtracted".into(), "id3".into()));
                assert!(
                    started < extracted,
                    "metadata after PlaybackStarted: {order:?}"
                );

                // ICY: three titles over 15 blocks; each reported once, in order.
                let titles = ["Song One", "Song Two", "Song Three"];
                let radio = sim
                    .admin
                    .put_media_icy("radio", music().into(), 8192, &titles)
                    .expect("media");
                push(
                    &sim,
                    "Play",
                    play("REPLACE_ALL", "icy", &radio, 0, json!({})),
                )
                .await;
                wait_for(&sim, "PlaybackFinished", "icy").await;
                let out_channels = device
                    .daemon
                    .audio_stats()
                    .output
                    .map(|o| o.channels)
                    .expect("output");
                tokio::time::sleep(Duration::from_millis(300)).await;
                device.stop().await;

                let meta = payloads(&sim, "StreamMetadataExtracted", "icy");
                let got: Vec<&str> = meta
                    .iter()
                    .map(|m| m["metadata"]["title"].as_str().unwrap_or("?"))
                    .collect();
                assert_eq!(got, titles, "{meta:?}");
                assert_eq!(meta[0]["metadata"]["homepage"], "https://radio.example/now");
                let icy_events: Vec<String> = recorded(&sim, "AudioPlayer")
                    .into_iter()
                    .filter(|(_, t)| t == "icy")
                    .map(|(n, _)| n)
                    .collect();
                assert!(
                    !icy_events.contains(&"PlaybackFailed".to_owned()),
                    "{icy_events:?}"
                );

                // The radio's audio is the MP3 without the blocks: every half second of the
                // reference decode is found where it belongs.
                let played = rig.played(out_channels).expect("played");
                let path = dir.join("music.mp3");
                std::fs::write(&path, music()).expect("write");
                let reference = reference_decode_mp3(&path, RATE, &dir).expect("reference");
                let sec = RATE as usize;
                let m = find_clip(&played, &reference[sec..2 * sec]).expect("found");
                assert!(m.score > 0.9, "radio audio not heard: {m:?}");
                let start = m.offset.checked_sub(sec).expect("whole track recorded");
                let windows = window_matches(&played, &reference[..7 * sec], start, sec / 10, RATE);
                let worst = windows.iter().map(|(score, _)| *score).fold(1f32, f32::min);
                let late = find_clip(&played, &reference[6 * sec..7 * sec]).expect("found");
                let drift = (late.offset as i64 - m.offset as i64) - 5 * sec as i64;
                eprintln!(
                    "icy audio: {} windows, worst score {worst}, drift {drift} samples",
                    windows.len()
                );
                assert!(windows.len() >= 60, "{windows:?}");
                assert!(
                    worst > 0.9,
                    "radio audio damaged (metadata reached the decoder?): {windows:?}"
                );
                assert!(
                    drift.abs() <= 2,
                    "radio audio lost or gained {drift} samples"
                );
            });
        },
    );
}

/// An ISO 8601 time `secs` whole seconds from now (alerts are scheduled to the second).
fn in_seconds(secs: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    let at =
        time::OffsetDateTime::from_unix_timestamp((now.as_secs() + secs) as i64).expect("time");
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_by_an_alarm_and_resumed_an_offset_play_keeps_stream_time() {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir("ap-offset-pause");
    let output = format!("wav:{}", dir.join("out.wav").display());
    let mut c = config(&sim, &dir, "none", &output);
    c.earcons = false;
    c.content_under_dialog = avsd::config::ContentUnderDialog::Pause;
    let device = start_device(c).await;
    let url = sim
        .admin
        .put_media("music.mp3", music().into())
        .expect("media");

    push(
        &sim,
        "Play",
        play("REPLACE_ALL", "p1", &url, 2000, json!({})),
    )
    .await;
    wait_for(&sim, "PlaybackStarted", "p1").await;
    let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert", "messageId": "a-1"},
        "payload": {"token": "alarm-1", "type": "ALARM", "scheduledTime": in_seconds(2)}}});
    sim.admin
        .push(None, set.to_string())
        .await
        .expect("push SetAlert");
    let paused = wait_for(&sim, "PlaybackPaused", "p1").await;
    sim.recorder
        .wait_for_event("Alerts.AlertStarted", Duration::from_secs(10))
        .await
        .expect("AlertStarted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delete = json!({"directive": {"header": {"namespace": "Alerts", "name": "DeleteAlert", "messageId": "a-2"},
        "payload": {"token": "alarm-1"}}});
    sim.admin
        .push(None, delete.to_string())
        .await
        .expect("push DeleteAlert");
    let resumed = wait_for(&sim, "PlaybackResumed", "p1").await;
    let finished = wait_for(&sim, "PlaybackFinished", "p1").await;
    device.stop().await;

    let at = |r: &Record| offset_of(&r.event.as_ref().expect("event").payload);
    let (p, r, f) = (at(&paused), at(&resumed), at(&finished));
    eprintln!("paused at {p} ms, resumed at {r} ms, finished at {f} ms");
    assert!(
        (2500..7000).contains(&p),
        "paused in stream time after a 2 s start: {p}"
    );
    assert!(
        r >= p && r - p <= 200,
        "resumed where it paused: {p} -> {r}"
    );
    assert!(
        (7900..=8150).contains(&f),
        "finished at the end of the 8 s track: {f}"
    );
    let events: Vec<String> = recorded(&sim, "AudioPlayer")
        .into_iter()
        .filter(|(_, t)| t == "p1")
        .map(|(n, _)| n)
        .collect();
    assert!(
        !events.contains(&"PlaybackStopped".to_owned()),
        "{events:?}"
    );
}
