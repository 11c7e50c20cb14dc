//! A spoken dialog end to end: avsd against avs-sim on loopback (TLS + HTTP/2), through cpal on
//! the JACK-backed virtual ALSA devices (the mic plays the bundled utterance, the speaker is
//! recorded). Asserts on what was actually sent and actually played.

mod common;

use std::path::Path;
use std::time::Duration;

use avs_testkit::audio::{
    AudioRig, find_clip, read_wav_mono, reference_decode_mp3, with_virtual_audio,
};
use avsd::dialog::{DialogCommand, DialogStep};
use common::*;

const RATE: u32 = 16_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The mic plays the utterance, then silence (past the end ALSA's file plugin returns garbage).
fn feed_mic(rig: &AudioRig) -> Vec<f32> {
    let (utterance, rate) = read_wav_mono(&utterance_path()).expect("utterance");
    assert_eq!(rate, RATE);
    let mut samples: Vec<i16> = utterance.iter().map(|s| (s * 32767.0) as i16).collect();
    samples.extend(std::iter::repeat_n(0, RATE as usize * 60));
    rig.write_mic(&samples).expect("mic");
    utterance
}

fn rig_config(sim: &avs_testkit::sim::TestSim, dir: &Path, rig: &AudioRig) -> avsd::config::Config {
    let mut c = config(sim, dir, rig.mic_device(), rig.speaker_device());
    c.audio.input_rate = Some(rig.rate());
    c.audio.input_channels = Some(1);
    c.audio.output_rate = Some(rig.rate());
    c.earcons = false;
    c
}

/// The speech of `text` as the sim renders it, decoded at `rate`.
fn speech_reference(text: &str, dir: &Path, name: &str) -> Vec<f32> {
    let mp3 = avs_sim::speech::synthesize_mp3(text).expect("synthesize");
    let path = dir.join(format!("{name}.mp3"));
    std::fs::write(&path, &mp3).expect("write mp3");
    reference_decode_mp3(&path, RATE, dir).expect("reference decode")
}

const INTERIM_1: &str = "Please wait while I look that up.";
const INTERIM_2: &str = "Still working on it.";
const FINAL: &str = "The answer is forty two.";

#[test]
fn progressive_interim_then_final_in_order() {
    with_virtual_audio("progressive_interim_then_final_in_order", RATE, |rig| {
        let utterance = feed_mic(rig);
        runtime().block_on(async {
            let scenario = format!(
                "[[turn]]\ninterim = [{{ text = \"{INTERIM_1}\", delay_ms = 100 }}, {{ text = \"{INTERIM_2}\", delay_ms = 100 }}]\nfinal_speech = \"{FINAL}\"\n"
            );
            let sim = sim(&scenario).await;
            let dir = test_dir("progressive");
            let mut device = start_device(rig_config(&sim, &dir, rig)).await;
            device.daemon.dialog.commands.send(DialogCommand::Listen).await.expect("listen");
            device.wait_step("StopCapture", Duration::from_secs(15), |s| matches!(s, DialogStep::StopCaptureReceived)).await;
            for n in 1..=3 {
                device.wait_step(&format!("speech {n} finished"), Duration::from_secs(30), |s| matches!(s, DialogStep::SpeechFinished { .. })).await;
            }
            let out_channels = device.daemon.audio_stats().output.map(|o| o.channels).expect("output stream");
            wait_events(&sim, "SpeechSynthesizer.SpeechFinished", 3, Duration::from_secs(5)).await;
            // Let the last period drain into the recording.
            tokio::time::sleep(Duration::from_millis(200)).await;
            device.stop().await;

            // What was sent: the Recognize audio is the utterance.
            let recognize = sim
                .recorder
                .records()
                .into_iter()
                .find(|r| r.event.as_ref().is_some_and(|e| e.name == "Recognize"))
                .expect("Recognize recorded");
            let (sent, _) = read_wav_mono(recognize.audio_wav.as_ref().expect("Recognize audio")).expect("wav");
            let probe = &utterance[..utterance.len().min(RATE as usize * 2)];
            let m = find_clip(&sent, probe).expect("utterance in the Recognize audio");
            assert!(m.score > 0.9, "Recognize audio does not match the utterance: {m:?}");

            // Events: one Started/Finished pair per token, in order, three distinct tokens.
            let events = recorded(&sim, "SpeechSynthesizer");
            assert_eq!(events.len(), 6, "{events:?}");
            let mut tokens = Vec::new();
            for pair in events.chunks(2) {
                assert_eq!(pair[0].0, "SpeechStarted", "{events:?}");
                assert_eq!(pair[1].0, "SpeechFinished", "{events:?}");
                assert_eq!(pair[0].1, pair[1].1, "{events:?}");
                tokens.push(pair[0].1.clone());
            }
            tokens.dedup();
            assert_eq!(tokens.len(), 3, "{events:?}");

            // What was played: interim 1, interim 2, final, in order, no overlap, gaps <= 20 ms.
            let played = rig.played(out_channels).expect("played");
            let refs = [
                speech_reference(INTERIM_1, &dir, "i1"),
                speech_reference(INTERIM_2, &dir, "i2"),
                speech_reference(FINAL, &dir, "final"),
            ];
            let found: Vec<_> = refs
                .iter()
                .map(|r| {
                    let m = find_clip(&played, r).expect("speech in the recording");
                    assert!(m.score > 0.8, "speech not found in the output: {m:?}");
                    (m.offset, r.len())
                })
                .collect();
            for w in found.windows(2) {
                let (a_off, a_len) = w[0];
                let (b_off, _) = w[1];
                let gap = b_off as i64 - (a_off + a_len) as i64;
                let gap_ms = gap as f64 * 1000.0 / f64::from(RATE);
                eprintln!("gap between speeches: {gap_ms:.1} ms");
                assert!(gap >= -(RATE as i64) / 1000, "speeches overlap by {:.1} ms", -gap_ms);
                assert!(gap_ms <= 20.0, "gap of {gap_ms:.1} ms between speeches");
            }
        });
    });
}

#[test]
fn barge_in_during_interim_drops_the_old_final() {
    with_virtual_audio("barge_in_during_interim_drops_the_old_final", RATE, |rig| {
        feed_mic(rig);
        runtime().block_on(async {
            let scenario = "[[turn]]\ninterim = [{ text = \"This interim answer is long on purpose, so that the user can interrupt it while it is still being spoken.\", delay_ms = 100 }]\nfinal_speech = \"This old final answer must never be heard.\"\n\n[[turn]]\nreject = true\n";
            let sim = sim(scenario).await;
            let dir = test_dir("barge-in");
            let mut device = start_device(rig_config(&sim, &dir, rig)).await;
            device.daemon.dialog.commands.send(DialogCommand::Listen).await.expect("listen");
            let started = device.wait_step("interim started", Duration::from_secs(30), |s| matches!(s, DialogStep::SpeechStarted { .. })).await;
            let DialogStep::SpeechStarted { token: interim } = started.step else { unreachable!() };
            // The final Speak arrives soon after the interim one; barge in once it has.
            tokio::time::sleep(Duration::from_millis(700)).await;
            device.daemon.dialog.commands.send(DialogCommand::Listen).await.expect("barge in");
            device.wait_step("interim interrupted", Duration::from_secs(5), |s| matches!(s, DialogStep::SpeechInterrupted { .. })).await;
            sim.recorder.wait_for_event("SpeechSynthesizer.SpeechInterrupted", Duration::from_secs(5)).await.expect("SpeechInterrupted sent");
            // Give a wrongly kept final answer time to start.
            tokio::time::sleep(Duration::from_secs(2)).await;
            device.stop().await;
            let events = recorded(&sim, "SpeechSynthesizer");
            assert_eq!(
                events,
                vec![("SpeechStarted".to_owned(), interim.clone()), ("SpeechInterrupted".to_owned(), interim)],
                "only the interim speech may have played"
            );
            let recognizes = sim.recorder.events("SpeechRecognizer.Recognize");
            assert_eq!(recognizes.len(), 2);
            let ids: Vec<_> = recognizes.iter().map(|r| r.event.as_ref().and_then(|e| e.dialog_request_id.clone())).collect();
            assert_ne!(ids[0], ids[1], "barge-in starts a new dialog");
        });
    });
}

#[test]
fn final_with_replace_all_interrupts_the_interim() {
    with_virtual_audio(
        "final_with_replace_all_interrupts_the_interim",
        RATE,
        |rig| {
            feed_mic(rig);
            runtime().block_on(async {
            let scenario = "[[turn]]\ninterim = [{ text = \"This interim answer keeps talking for a good while, long enough to be cut off by the final answer that replaces everything.\", delay_ms = 100 }, { text = \"A second interim that is never heard.\", delay_ms = 1500 }]\nfinal_speech = \"Replacing everything.\"\nplay_behavior = \"REPLACE_ALL\"\n";
            let sim = sim(scenario).await;
            let dir = test_dir("replace-all");
            let mut device = start_device(rig_config(&sim, &dir, rig)).await;
            device.daemon.dialog.commands.send(DialogCommand::Listen).await.expect("listen");
            device.wait_step("interrupted", Duration::from_secs(30), |s| matches!(s, DialogStep::SpeechInterrupted { .. })).await;
            device.wait_step("final finished", Duration::from_secs(30), |s| matches!(s, DialogStep::SpeechFinished { .. })).await;
            sim.recorder.wait_for_event("SpeechSynthesizer.SpeechFinished", Duration::from_secs(5)).await.expect("SpeechFinished sent");
            device.stop().await;
            let events = recorded(&sim, "SpeechSynthesizer");
            let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["SpeechStarted", "SpeechInterrupted", "SpeechStarted", "SpeechFinished"], "{events:?}");
            assert_eq!(events[0].1, events[1].1, "the interim is what was interrupted");
            assert_eq!(events[2].1, events[3].1);
            assert_ne!(events[0].1, events[2].1);
        });
        },
    );
}
