//! Losing the sound server under a running engine, on the virtual audio rig: jackd is killed by
//! its PID mid-playback (every stream on `alsa:avs_speaker` / `alsa:avs_mic` loses its server;
//! the ALSA jack plugin then stops calling back without reporting an error), the engine must
//! keep time (the speech finishes, on the clock, unheard), and once jackd is back under the same
//! name the engine must reopen the devices by itself: the next speech is heard in the recording,
//! the mic delivers the file again.
//!
//! The last test does it to the whole daemon against avs-sim: the Speak playing when jackd dies
//! still ends with SpeechFinished, and the next dialog's answer is heard.
//!
//! Needs `jackd2 libasound2-plugins sox mpg123` (like tests/audio_playback.rs).

// Helpers outside #[test] fns count as non-test code for clippy; a failed setup must fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use avs_testkit::audio::{
    AudioRig, locate, median_gain, noise, reference_decode_mp3, rms, to_i16, window_matches,
    with_virtual_audio,
};
use avs_testkit::fixture;
use avsd::audio::{
    AudioConfig, AudioEngine, AudioStats, Channel, PlaybackUpdate, Source, SourceId,
};
use tokio::sync::mpsc::Receiver;

const RATE: u32 = 48_000;

fn speech() -> Source {
    Source::Encoded(Box::new(
        std::fs::File::open(fixture("audio_speech_24k_mono.mp3")).unwrap(),
    ))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The next update within `timeout`, with the time it arrived.
fn next(rx: &mut Receiver<PlaybackUpdate>, timeout: Duration) -> (Instant, PlaybackUpdate) {
    rt().block_on(async {
        match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(u)) => (Instant::now(), u),
            Ok(None) => panic!("the update channel closed"),
            Err(_) => panic!("no update within {timeout:?}"),
        }
    })
}

/// Updates until a terminal one (Progress left out), each with the time it arrived.
fn until_end(
    rx: &mut Receiver<PlaybackUpdate>,
    timeout: Duration,
) -> Vec<(Instant, PlaybackUpdate)> {
    let mut seen = Vec::new();
    loop {
        let (at, u) = next(rx, timeout);
        let end = matches!(
            u,
            PlaybackUpdate::Finished { .. }
                | PlaybackUpdate::Stopped { .. }
                | PlaybackUpdate::Failed { .. }
        );
        if !matches!(u, PlaybackUpdate::Progress { .. }) {
            seen.push((at, u));
        }
        if end {
            return seen;
        }
    }
}

/// Polls the engine's stats until `done` holds.
fn wait_stats(e: &AudioEngine, within: Duration, what: &str, done: impl Fn(&AudioStats) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let s = e.stats();
        if done(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not within {within:?}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn speech_finishes_while_the_speaker_is_lost_and_the_next_is_heard_once_it_is_back() {
    with_virtual_audio(
        "speech_finishes_while_the_speaker_is_lost_and_the_next_is_heard_once_it_is_back",
        RATE,
        |rig: &AudioRig| {
            let reference =
                reference_decode_mp3(&fixture("audio_speech_24k_mono.mp3"), RATE, rig.dir())
                    .unwrap();
            let length = Duration::from_secs_f64(reference.len() as f64 / f64::from(RATE));
            rig.write_mic(&to_i16(&noise(16_000 * 60, 5, 0.5))).unwrap();
            // The mic is on the same server, paused between dialogs as in the daemon.
            let e = AudioEngine::start(&AudioConfig {
                input: rig.mic_device().into(),
                input_rate: Some(16_000),
                input_channels: Some(1),
                output: rig.speaker_device().into(),
                output_rate: Some(RATE),
                period: Duration::from_millis(10),
                ..AudioConfig::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
            let p = e.playback();
            p.set_volume(80);

            // The first speech: jackd goes away a second into it.
            let mut r = p.enqueue(Channel::Dialog, SourceId(1), speech());
            let (started_at, first) = next(&mut r, Duration::from_secs(10));
            assert_eq!(first, PlaybackUpdate::Started);
            std::thread::sleep(Duration::from_secs(1));
            rig.stop_jack().unwrap();
            let killed_at = Instant::now();
            let u = until_end(&mut r, length + Duration::from_secs(10));
            let (finished_at, last) = u.last().cloned().unwrap();
            match last {
                // The whole speech was consumed (unheard after the loss), so its owner can
                // send SpeechFinished.
                PlaybackUpdate::Finished { offset } => assert!(
                    offset.abs_diff(length) < Duration::from_millis(60),
                    "{offset:?} vs {length:?}"
                ),
                other => panic!("{other:?} after {u:?}"),
            }
            // On the clock: the rest was consumed in real time, not thrown away at once.
            let took = finished_at.duration_since(started_at);
            assert!(
                took >= length.mul_f64(0.8),
                "finished {took:?} after start, the speech lasts {length:?}"
            );
            let s = e.stats();
            // The speaker, and the mic if it was running (a device that cannot pause keeps
            // running between dialogs); a paused mic is closed with the speaker, not counted.
            assert!((1..=2).contains(&s.device_losses), "{s:?}");
            assert_eq!(s.device_reopens, 0, "{s:?}");
            println!(
                "killed {:?} after Started; Finished came {:?} after the kill; {s:?}",
                killed_at.duration_since(started_at),
                finished_at.duration_since(killed_at)
            );

            // The server comes back under the same name: the engine reopens the speaker (the
            // backoff is at most 8 s by now) and the paused mic it closed with it.
            rig.restart_jack().unwrap();
            wait_stats(&e, Duration::from_secs(20), "reopen", |s| {
                s.device_reopens == 2
            });
            let mut mic = e.capture().open(false);
            let heard = rt().block_on(async {
                let mut got = Vec::new();
                while got.len() < 16_000 / 2 {
                    let f = tokio::time::timeout(Duration::from_secs(5), mic.recv())
                        .await
                        .expect("a mic frame within 5 s")
                        .expect("the mic channel stayed open");
                    got.extend(
                        f.chunks_exact(2)
                            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0),
                    );
                }
                got
            });
            drop(mic);
            assert!(rms(&heard) > 0.1, "the mic is silent after the reopen");
            // The volume set before the loss still holds: the mixer kept its state.
            let mut r = p.enqueue(Channel::Dialog, SourceId(2), speech());
            let u = until_end(&mut r, length + Duration::from_secs(10));
            assert_eq!(
                u.first().map(|x| &x.1),
                Some(&PlaybackUpdate::Started),
                "{u:?}"
            );
            assert!(
                matches!(u.last(), Some((_, PlaybackUpdate::Finished { .. }))),
                "{u:?}"
            );
            let stats = e.stats();
            assert_eq!(stats.device_losses, s.device_losses, "{stats:?}");
            assert_eq!(stats.device_reopens, 2, "{stats:?}");
            let channels = stats.output.as_ref().map(|o| o.channels).unwrap_or(2);
            std::thread::sleep(Duration::from_millis(100));
            drop(e);

            // played.raw is rewritten when the speaker is opened again: the second speech must
            // be in it, whole, at volume 80 (gain 0.64).
            let rec = rig.played(channels).unwrap();
            let m = locate(&rec, &reference, RATE).unwrap();
            assert!(m.score > 0.9, "second speech not heard: {m:?}; {stats:?}");
            let w = window_matches(&rec, &reference, m.offset, RATE as usize / 2, RATE);
            let good = w.iter().filter(|(score, _)| *score > 0.9).count();
            assert!(
                !w.is_empty() && good * 10 >= w.len() * 9,
                "only {good} of {} windows intact: {w:?}; {stats:?}",
                w.len()
            );
            let gain = median_gain(&rec, &reference, m.offset, RATE as usize / 2, RATE);
            assert!((gain - 0.64).abs() < 0.06, "gain {gain}; {w:?}");
        },
    );
}

#[test]
fn a_lost_mic_ends_the_capture_and_works_again_once_it_is_back() {
    with_virtual_audio(
        "a_lost_mic_ends_the_capture_and_works_again_once_it_is_back",
        RATE,
        |rig: &AudioRig| {
            // 60 s of noise at 16 kHz mono (the format the mic is opened in): never silent.
            rig.write_mic(&to_i16(&noise(16_000 * 60, 5, 0.5))).unwrap();
            let e = AudioEngine::start(&AudioConfig {
                input: rig.mic_device().into(),
                output: format!("wav:{}", rig.dir().join("unused-out.wav").display()),
                input_rate: Some(16_000),
                input_channels: Some(1),
                period: Duration::from_millis(10),
                ..AudioConfig::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
            let rt = rt();
            // Frames until the channel ends (or `max` of them), how long that took.
            let read = |rx: &mut Receiver<bytes::Bytes>, max: usize| -> (Vec<f32>, bool) {
                rt.block_on(async {
                    let mut got = Vec::new();
                    while got.len() < max.saturating_mul(160) {
                        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                            Ok(Some(f)) => got
                                .extend(f.chunks_exact(2).map(|b| {
                                    f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0
                                })),
                            Ok(None) => return (got, true),
                            Err(_) => panic!("no frame and no end within 10 s"),
                        }
                    }
                    (got, false)
                })
            };
            let mut rx = e.capture().open(false);
            let (got, ended) = read(&mut rx, 50);
            assert!(!ended && rms(&got) > 0.1, "the mic works at first");

            rig.stop_jack().unwrap();
            // The listener (a Recognize) learns the mic is gone: its frames end.
            let (_, ended) = read(&mut rx, usize::MAX);
            assert!(ended);
            let s = e.stats();
            assert_eq!((s.device_losses, s.device_reopens), (1, 0), "{s:?}");
            // While it is lost a new listener ends at once rather than waiting for frames.
            let mut rx = e.capture().open(false);
            let (got, ended) = read(&mut rx, usize::MAX);
            assert!(ended && got.is_empty(), "{} samples", got.len());

            rig.restart_jack().unwrap();
            wait_stats(&e, Duration::from_secs(20), "reopen", |s| {
                s.device_reopens == 1
            });
            let mut rx = e.capture().open(false);
            let (got, ended) = read(&mut rx, 50);
            assert!(!ended && rms(&got) > 0.1, "the mic works again");
            let s = e.stats();
            assert_eq!((s.device_losses, s.device_reopens), (1, 1), "{s:?}");
            let input = s.input.unwrap();
            assert_eq!((input.rate, input.channels), (16_000, 1));
        },
    );
}

const LONG_ANSWER: &str = "This answer is long on purpose, so that the sound server can go away \
    while it is being spoken. It goes on with a few more words, one, two, three, four, five, six, \
    seven, eight, nine, ten, and then it is over.";
const SECOND_ANSWER: &str = "Here I am again. The speaker came back by itself.";

#[test]
fn a_dialog_outlives_the_sound_server_and_the_next_answer_is_heard() {
    use avsd::dialog::{DialogCommand, DialogStep};
    with_virtual_audio(
        "a_dialog_outlives_the_sound_server_and_the_next_answer_is_heard",
        RATE,
        |rig: &AudioRig| {
            // The mic says the utterance every 5 s, so each Listen hears a question.
            let (utterance, _) =
                avs_testkit::audio::read_wav_mono(&common::utterance_path()).expect("utterance");
            let mut one = to_i16(&utterance);
            one.resize(16_000 * 5, 0);
            rig.write_mic(&one.repeat(24)).expect("mic");
            common::runtime().block_on(async {
                let scenario = format!(
                    "[[turn]]\nfinal_speech = \"{LONG_ANSWER}\"\n\n[[turn]]\nfinal_speech = \"{SECOND_ANSWER}\"\n"
                );
                let sim = common::sim(&scenario).await;
                let dir = common::test_dir("device-loss");
                let mut c = common::config(&sim, &dir, rig.mic_device(), rig.speaker_device());
                c.audio.input_rate = Some(16_000);
                c.audio.input_channels = Some(1);
                c.audio.output_rate = Some(RATE);
                c.earcons = false;
                let mut device = common::start_device(c).await;
                let cmd = device.daemon.dialog.commands.clone();

                cmd.send(DialogCommand::Listen).await.expect("listen");
                device
                    .wait_step("first answer", Duration::from_secs(30), |s| {
                        matches!(s, DialogStep::SpeechStarted { .. })
                    })
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                rig.stop_jack().expect("stop jackd");
                // The answer is spoken to the end into the void: SpeechFinished reaches the cloud.
                device
                    .wait_step("first answer's end", Duration::from_secs(30), |s| {
                        matches!(s, DialogStep::SpeechFinished { .. })
                    })
                    .await;
                common::wait_events(&sim, "SpeechSynthesizer.SpeechFinished", 1, Duration::from_secs(10)).await;
                let lost = device.daemon.audio_stats();
                assert!(lost.device_losses >= 1, "{lost:?}");

                rig.restart_jack().expect("restart jackd");
                let deadline = Instant::now() + Duration::from_secs(20);
                while device.daemon.audio_stats().device_reopens < 2 {
                    assert!(Instant::now() < deadline, "not reopened: {:?}", device.daemon.audio_stats());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                cmd.send(DialogCommand::Listen).await.expect("listen again");
                device
                    .wait_step("second answer's end", Duration::from_secs(30), |s| {
                        matches!(s, DialogStep::SpeechFinished { .. })
                    })
                    .await;
                common::wait_events(&sim, "SpeechSynthesizer.SpeechFinished", 2, Duration::from_secs(10)).await;
                let stats = device.daemon.audio_stats();
                let channels = stats.output.as_ref().map(|o| o.channels).expect("output");
                tokio::time::sleep(Duration::from_millis(100)).await;
                device.stop().await;

                let mp3 = avs_sim::speech::synthesize_mp3(SECOND_ANSWER).expect("synthesize");
                let path = dir.join("second.mp3");
                std::fs::write(&path, &mp3).expect("write");
                let reference = reference_decode_mp3(&path, RATE, &dir).expect("decode");
                let rec = rig.played(channels).expect("played");
                let m = locate(&rec, &reference, RATE).expect("locate");
                assert!(m.score > 0.9, "the second answer was not heard: {m:?}; {stats:?}");
                assert_eq!(stats.device_losses, lost.device_losses, "{stats:?}");
            });
        },
    );
}
