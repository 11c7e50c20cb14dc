//! Music like a real speaker, through the JACK-backed virtual devices: an AudioPlayer.Play of an
//! https stream is heard, ducked while Alexa answers a question and restored after, and a
//! Speaker.SetVolume is heard as a level change. Every playback event reaches the cloud in order.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use avs_testkit::audio::{AudioRig, find_clip, gain_at, reference_decode_mp3, with_virtual_audio};
use avsd::dialog::{DialogCommand, DialogStep};
use common::*;
use serde_json::json;

const RATE: u32 = 16_000;
const TRACK: &str = "This is the track that plays as music. It goes on and on, with many words, so that \
    it is still playing while the user asks a question, while Alexa answers, and for a while after that, \
    when the volume goes up. One, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve.";

fn reference(text: &str, dir: &Path) -> Vec<f32> {
    let mp3 = avs_sim::speech::synthesize_mp3(text).expect("synthesize");
    let path = dir.join("track.mp3");
    std::fs::write(&path, &mp3).expect("write");
    reference_decode_mp3(&path, RATE, dir).expect("decode")
}

/// The track's level in the recording over `[from, to)` seconds after it started.
fn level(played: &[f32], track: &[f32], start: usize, from: f64, to: f64) -> f32 {
    let a = (from * f64::from(RATE)) as usize;
    let b = ((to * f64::from(RATE)) as usize).min(track.len());
    gain_at(played, &track[a..b], start + a)
}

/// The utterance over and over (5 s apart), so a tap at any time hears a question.
fn mic_repeating_utterance(rig: &AudioRig) {
    let (utterance, _) = avs_testkit::audio::read_wav_mono(&utterance_path()).expect("utterance");
    let mut one: Vec<i16> = utterance.iter().map(|s| (s * 32767.0) as i16).collect();
    one.resize(RATE as usize * 5, 0);
    rig.write_mic(&one.repeat(24)).expect("mic");
}

#[test]
fn music_is_heard_ducked_under_a_dialog_restored_and_louder_after_set_volume() {
    with_virtual_audio(
        "music_is_heard_ducked_under_a_dialog_restored_and_louder_after_set_volume",
        RATE,
        |rig| {
            mic_repeating_utterance(rig);
            runtime().block_on(async {
            let scenario = format!(
                "[[turn]]\nplay = {{ text = \"{TRACK}\", source = \"url\", token = \"track-1\" }}\n\n[[turn]]\nfinal_speech = \"It is five o'clock.\"\n"
            );
            let sim = sim(&scenario).await;
            let dir = test_dir("music");
            let mut c = config(&sim, &dir, rig.mic_device(), rig.speaker_device());
            c.audio.input_rate = Some(RATE);
            c.audio.input_channels = Some(1);
            c.audio.output_rate = Some(RATE);
            c.earcons = false;
            c.duck_level = 0.2;
            let mut device = start_device(c).await;
            let cmd = &device.daemon.dialog.commands.clone();

            cmd.send(DialogCommand::Listen).await.expect("listen");
            sim.recorder.wait_for_event("AudioPlayer.PlaybackStarted", Duration::from_secs(20)).await.expect("PlaybackStarted");
            let music_started = Instant::now();

            // A question while the music plays: it is ducked under the answer.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            cmd.send(DialogCommand::Listen).await.expect("listen again");
            let speech = device.wait_step("answer", Duration::from_secs(20), |s| matches!(s, DialogStep::SpeechStarted { .. })).await;
            let speech_end = device.wait_step("answer end", Duration::from_secs(20), |s| matches!(s, DialogStep::SpeechFinished { .. })).await;

            // Louder: the cloud sets the volume from 50 to 100.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let volume_at = Instant::now();
            let set = json!({"directive": {"header": {"namespace": "Speaker", "name": "SetVolume", "messageId": "sv-1"}, "payload": {"volume": 100}}});
            sim.admin.push(None, set.to_string()).await.expect("push SetVolume");
            sim.recorder.wait_for_event("Speaker.VolumeChanged", Duration::from_secs(5)).await.expect("VolumeChanged");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let out_channels = device.daemon.audio_stats().output.map(|o| o.channels).expect("output");
            device.stop().await;

            let played = rig.played(out_channels).expect("played");
            let track = reference(TRACK, &dir);
            let head = &track[..RATE as usize];
            let m = find_clip(&played, head).expect("the track is in the output");
            assert!(m.score > 0.9, "the track's first second was not heard intact: {m:?}");
            let secs = |t: Instant| t.saturating_duration_since(music_started).as_secs_f64();
            let (s0, s1) = (secs(speech.at), secs(speech_end.at));
            let normal = level(&played, &track, m.offset, 0.2, 1.2);
            let ducked = level(&played, &track, m.offset, s0 + 0.3, (s0 + 0.8).min(s1));
            let restored = level(&played, &track, m.offset, s1 + 0.3, s1 + 0.8);
            let louder = level(&played, &track, m.offset, secs(volume_at) + 0.5, secs(volume_at) + 1.2);
            eprintln!("track level: normal {normal:.3}, ducked {ducked:.3}, restored {restored:.3}, after SetVolume 100 {louder:.3}");
            assert!(normal > 0.1, "music barely audible at volume 50: {normal}");
            assert!(ducked < normal * 0.4, "not ducked under the dialog: {ducked} vs {normal}");
            assert!(restored > normal * 0.8, "not restored after the dialog: {restored} vs {normal}");
            assert!(louder > normal * 2.5, "SetVolume 100 not heard: {louder} vs {normal}");

            let events: Vec<String> = recorded(&sim, "AudioPlayer").into_iter().map(|(n, _)| n).collect();
            assert_eq!(&events[..2], ["PlaybackStarted", "PlaybackNearlyFinished"], "{events:?}");
        });
        },
    );
}

/// Pushes an AudioPlayer directive on the downchannel.
async fn push(sim: &avs_testkit::sim::TestSim, name: &str, payload: serde_json::Value) {
    let d = json!({"directive": {"header": {"namespace": "AudioPlayer", "name": name, "messageId": uuid::Uuid::new_v4().to_string()}, "payload": payload}});
    sim.admin.push(None, d.to_string()).await.expect("push");
}

fn play(
    behavior: &str,
    token: &str,
    url: &url::Url,
    expected_previous: Option<&str>,
) -> serde_json::Value {
    let mut stream = json!({"url": url.as_str(), "offsetInMilliseconds": 0, "token": token,
        "progressReport": {"progressReportDelayInMilliseconds": 200, "progressReportIntervalInMilliseconds": 300}});
    if let Some(p) = expected_previous {
        stream["expectedPreviousToken"] = json!(p);
    }
    json!({"playBehavior": behavior, "audioItem": {"audioItemId": token, "stream": stream}})
}

/// AudioPlayer events recorded for `token`, in order.
fn events_for(sim: &avs_testkit::sim::TestSim, token: &str) -> Vec<String> {
    recorded(sim, "AudioPlayer")
        .into_iter()
        .filter(|(_, t)| t == token)
        .map(|(n, _)| n)
        .collect()
}

async fn wait_for(sim: &avs_testkit::sim::TestSim, name: &str, token: &str) {
    wait_player_event(sim, name, token, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_behaviours_clear_queue_and_stop_send_every_event_in_order() {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir("queue");
    let output = format!("wav:{}", dir.join("out.wav").display());
    let device = start_device(config(&sim, &dir, "none", &output)).await;
    let media = |name: &str, text: &str| {
        let mp3 = avs_sim::speech::synthesize_mp3(text).expect("synthesize");
        sim.admin.put_media(name, mp3).expect("media url")
    };
    let short1 = media("one.mp3", "Track one is short.");
    let short2 = media("two.mp3", "Track two.");
    let short3 = media("three.mp3", "Track three should never play.");
    let long = media(
        "long.mp3",
        "This long track plays for several seconds, on and on, so that it can be cleared or stopped while it plays.",
    );

    // REPLACE_ALL, then ENQUEUE with the right expectedPreviousToken, then one with a wrong one.
    push(&sim, "Play", play("REPLACE_ALL", "t1", &short1, None)).await;
    push(&sim, "Play", play("ENQUEUE", "t2", &short2, Some("t1"))).await;
    push(&sim, "Play", play("ENQUEUE", "t3", &short3, Some("not-t2"))).await;
    wait_for(&sim, "PlaybackFinished", "t2").await;
    let t1 = events_for(&sim, "t1");
    assert_eq!(
        &t1[..3],
        [
            "PlaybackStarted",
            "PlaybackNearlyFinished",
            "ProgressReportDelayElapsed"
        ],
        "{t1:?}"
    );
    assert!(
        t1.iter()
            .filter(|n| *n == "ProgressReportIntervalElapsed")
            .count()
            >= 2,
        "{t1:?}"
    );
    assert_eq!(
        t1.last().map(String::as_str),
        Some("PlaybackFinished"),
        "{t1:?}"
    );
    let t2 = events_for(&sim, "t2");
    assert_eq!(t2.first().map(String::as_str), Some("PlaybackStarted"));
    assert_eq!(t2.last().map(String::as_str), Some("PlaybackFinished"));
    let order: Vec<(String, String)> = recorded(&sim, "AudioPlayer");
    let finished_t1 = order
        .iter()
        .position(|e| e == &("PlaybackFinished".into(), "t1".into()));
    let started_t2 = order
        .iter()
        .position(|e| e == &("PlaybackStarted".into(), "t2".into()));
    assert!(
        finished_t1 < started_t2,
        "t2 starts after t1 finished: {order:?}"
    );

    // CLEAR_ENQUEUED: the queued item goes, the playing one goes on to its end.
    push(&sim, "Play", play("REPLACE_ALL", "t4", &long, None)).await;
    push(&sim, "Play", play("ENQUEUE", "t5", &short1, Some("t4"))).await;
    wait_for(&sim, "PlaybackStarted", "t4").await;
    push(
        &sim,
        "ClearQueue",
        json!({"clearBehavior": "CLEAR_ENQUEUED"}),
    )
    .await;
    sim.recorder
        .wait_for_event("AudioPlayer.PlaybackQueueCleared", Duration::from_secs(5))
        .await
        .expect("QueueCleared");
    // REPLACE_ALL stops what plays: t4 stops, t6 starts.
    push(&sim, "Play", play("REPLACE_ALL", "t6", &long, None)).await;
    wait_for(&sim, "PlaybackStopped", "t4").await;
    wait_for(&sim, "PlaybackStarted", "t6").await;
    // CLEAR_ALL stops the current item too.
    push(&sim, "ClearQueue", json!({"clearBehavior": "CLEAR_ALL"})).await;
    wait_for(&sim, "PlaybackStopped", "t6").await;
    // Stop: stopped, and the queue does not advance.
    push(&sim, "Play", play("REPLACE_ALL", "t7", &long, None)).await;
    push(&sim, "Play", play("ENQUEUE", "t8", &short2, Some("t7"))).await;
    wait_for(&sim, "PlaybackStarted", "t7").await;
    push(&sim, "Stop", json!({})).await;
    wait_for(&sim, "PlaybackStopped", "t7").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    device.stop().await;

    for never in ["t3", "t5", "t8"] {
        assert!(
            events_for(&sim, never).is_empty(),
            "{never} must never play: {:?}",
            recorded(&sim, "AudioPlayer")
        );
    }
    assert_eq!(
        sim.recorder
            .events("AudioPlayer.PlaybackQueueCleared")
            .len(),
        2
    );
    assert!(
        !events_for(&sim, "t4").contains(&"PlaybackFinished".to_owned()),
        "t4 was replaced, not finished"
    );
}
