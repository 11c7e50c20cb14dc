//! Music like a real speaker, through the JACK-backed virtual devices: an AudioPlayer.Play of an
//! https stream is heard, ducked while Alexa answers a question and restored after, and a
//! Speaker.SetVolume is heard as a level change. Every playback event reaches the cloud in order.

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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

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
    with_virtual_audio("music_is_heard_ducked_under_a_dialog_restored_and_louder_after_set_volume", RATE, |rig| {
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
    });
}
