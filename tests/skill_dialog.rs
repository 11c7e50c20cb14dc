//! The spoken dialog with a real Alexa Skills Kit SDK skill behind avs-sim: the Python
//! `ask-sdk-core` skill sends its progressive response with the SDK's own DirectiveServiceClient,
//! and avsd plays that interim speech, then the skill's answer, through the JACK-backed devices.
//! Skipped (with a message) only when python3 is missing.

mod common;

use std::time::Duration;

use avs_sim::{Scenario, SimConfig};
use avs_testkit::audio::{find_clip, read_wav_mono, reference_decode_mp3, with_virtual_audio};
use avs_testkit::skill::{PythonSkill, python_missing};
use avsd::dialog::{DialogCommand, DialogStep};
use common::*;

const RATE: u32 = 16_000;
/// What the skill says through the Progressive Response API.
const INTERIM: &str = "<speak>Hang on while I look that up.</speak>";

#[test]
fn skill_progressive_response_then_answer_are_played_in_order() {
    if python_missing() {
        return;
    }
    with_virtual_audio("skill_progressive_response_then_answer_are_played_in_order", RATE, |rig| {
        let (utterance, _) = read_wav_mono(&utterance_path()).expect("utterance");
        let mut mic: Vec<i16> = utterance.iter().map(|s| (s * 32767.0) as i16).collect();
        mic.extend(std::iter::repeat_n(0, RATE as usize * 60));
        rig.write_mic(&mic).expect("mic");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async {
            init_logs();
            let dir = test_dir("skill-dialog");
            let sim_dir = dir.join("sim");
            std::fs::create_dir_all(&sim_dir).expect("sim dir");
            // The sim writes its CA here when it starts; the skill reads it on its first call.
            let mut skill = PythonSkill::start(&sim_dir.join("ca.pem")).await.expect("skill");
            let scenario = format!(
                "[[turn]]\n[turn.skill]\nendpoint = \"{}\"\nintent = \"LookupIntent\"\n[turn.skill.slots]\nQuery = \"the weather in Paris\"\n",
                skill.endpoint
            );
            let sim = avs_testkit::sim::start_sim(SimConfig {
                lwa: avs_sim::lwa::LwaConfig {
                    auto_approve: true,
                    poll_interval: Duration::from_millis(200),
                    ..Default::default()
                },
                scenario: Scenario::from_toml(&scenario).expect("scenario"),
                state_dir: Some(sim_dir),
                ..Default::default()
            })
            .await
            .expect("sim");
            let mut c = config(&sim, &dir, rig.mic_device(), rig.speaker_device());
            c.audio.input_rate = Some(RATE);
            c.audio.input_channels = Some(1);
            c.audio.output_rate = Some(RATE);
            c.earcons = false;
            let mut device = start_device(c).await;
            device.daemon.dialog.commands.send(DialogCommand::Listen).await.expect("listen");
            let pr = skill.wait_line("PR ", Duration::from_secs(30)).await.expect("the skill sent a progressive response");
            assert_eq!(pr, "PR lookup 204 -", "the SDK's DirectiveServiceClient got 204");
            for n in 1..=2 {
                device.wait_step(&format!("speech {n} finished"), Duration::from_secs(30), |s| matches!(s, DialogStep::SpeechFinished { .. })).await;
            }
            wait_events(&sim, "SpeechSynthesizer.SpeechFinished", 2, Duration::from_secs(5)).await;
            let channels = device.daemon.audio_stats().output.map(|o| o.channels).expect("output");
            tokio::time::sleep(Duration::from_millis(200)).await;
            device.stop().await;

            let events = recorded(&sim, "SpeechSynthesizer");
            let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["SpeechStarted", "SpeechFinished", "SpeechStarted", "SpeechFinished"], "{events:?}");
            assert!(events[0].1.starts_with("pr-1-amzn1.echo-api.request."), "interim first: {events:?}");
            assert!(!events[2].1.starts_with("pr-"), "then the skill's answer: {events:?}");

            let mp3 = avs_sim::speech::synthesize_mp3(INTERIM).expect("synthesize");
            let path = dir.join("interim.mp3");
            std::fs::write(&path, &mp3).expect("write");
            let interim = reference_decode_mp3(&path, RATE, &dir).expect("decode");
            let played = rig.played(channels).expect("played");
            let m = find_clip(&played, &interim).expect("interim in the output");
            assert!(m.score > 0.8, "interim speech not heard: {m:?}");
            let after = &played[(m.offset + interim.len()).min(played.len())..];
            let loud = after.iter().filter(|s| s.abs() > 0.01).count();
            eprintln!("after the interim speech: {loud} loud samples of {}", after.len());
            assert!(loud > RATE as usize / 4, "the answer was not heard after the interim speech");
        });
    });
}
