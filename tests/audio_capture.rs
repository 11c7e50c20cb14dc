//! Capture through cpal on a JACK-paced ALSA capture PCM whose samples come from a file
//! (avs-testkit's virtual audio rig): a known recording fed as a 48 kHz mic must arrive as
//! 16 kHz s16le 10 ms frames that match a reference resampling of the same recording.
//!
//! Needs `jackd2 libasound2-plugins sox mpg123`.

// Helpers outside #[test] fns count as non-test code for clippy; a failed setup must fail the test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use avs_testkit::audio::{
    find_clip, read_wav_mono, reference_decode_mp3, sox, to_i16, with_virtual_audio,
};
use avs_testkit::fixture;
use avsd::audio::{AudioConfig, AudioEngine, CAPTURE_FRAME_BYTES};

const RATE: u32 = 48_000;

#[test]
fn mic_recording_arrives_as_16k_frames() {
    with_virtual_audio("mic_recording_arrives_as_16k_frames", RATE, |rig| {
        // the mic: 1 s of silence, the speech at 48 kHz, then silence (the file PCM returns
        // garbage past the end of its file)
        let speech48 =
            reference_decode_mp3(&fixture("audio_speech_24k_mono.mp3"), RATE, rig.dir()).unwrap();
        let mut mic = vec![0.0f32; RATE as usize];
        mic.extend_from_slice(&speech48);
        mic.extend(std::iter::repeat_n(0.0, RATE as usize * 20));
        rig.write_mic(&to_i16(&mic)).unwrap();
        // the reference: the same speech resampled to 16 kHz by sox
        let ref48 = rig.dir().join("ref48.wav");
        let ref16 = rig.dir().join("ref16.wav");
        write_wav(&ref48, &speech48, RATE);
        sox(&[
            &ref48.display().to_string(),
            "-r",
            "16000",
            &ref16.display().to_string(),
        ])
        .unwrap();
        let (reference, rate16) = read_wav_mono(&ref16).unwrap();
        assert_eq!(rate16, 16_000);

        let engine = AudioEngine::start(&AudioConfig {
            input: rig.mic_device().into(),
            output: format!("wav:{}", rig.dir().join("unused-out.wav").display()),
            input_rate: Some(RATE),
            input_channels: Some(1),
            period: Duration::from_millis(10),
            keep_mic_open: true,
            ..AudioConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let mut rx = engine.capture().open(true);
        let want_samples = 16_000 + reference.len() + 8_000;
        let t0 = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (got, frames) = rt.block_on(async {
            let mut got: Vec<f32> = Vec::new();
            let mut frames = 0usize;
            while got.len() < want_samples {
                let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(f.len(), CAPTURE_FRAME_BYTES);
                frames += 1;
                got.extend(
                    f.chunks_exact(2)
                        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0),
                );
            }
            (got, frames)
        });
        let wall = t0.elapsed();
        let stats = engine.stats();
        println!("{frames} frames in {wall:?}; {stats:?}");
        drop(engine);
        let m = find_clip(&got, &reference).unwrap();
        assert!(
            m.score > 0.95,
            "speech not found in the captured frames: {m:?}"
        );
        // real time: the frames came at the mic's pace (pre-roll gives up to 0.5 s head start)
        let audio = Duration::from_millis(frames as u64 * 10);
        assert!(
            wall + Duration::from_millis(700) > audio,
            "{frames} frames in {wall:?}: faster than real time"
        );
        // JACK's dummy clock itself lags when the machine is overloaded: only a gross slowdown fails
        assert!(
            wall < audio * 2 + Duration::from_secs(2),
            "{frames} frames in {wall:?}: too slow"
        );
        let input = stats.input.unwrap();
        assert_eq!((input.rate, input.channels), (RATE, 1));
        assert_eq!(input.granted_period_frames, 480, "{input:?}");
        assert_eq!(stats.input_overrun_samples, 0);
    });
}

#[test]
fn picks_one_channel_of_a_stereo_mic() {
    with_virtual_audio("picks_one_channel_of_a_stereo_mic", RATE, |rig| {
        // left: silence, right: a 1 kHz tone
        let mut mic = Vec::new();
        for i in 0..RATE as usize * 20 {
            let t = i as f32 / RATE as f32;
            mic.push(0.0);
            mic.push((t * 1000.0 * std::f32::consts::TAU).sin() * 0.5);
        }
        rig.write_mic(&to_i16(&mic)).unwrap();
        let engine = AudioEngine::start(&AudioConfig {
            input: rig.mic_device().into(),
            output: format!("wav:{}", rig.dir().join("unused-out.wav").display()),
            input_rate: Some(RATE),
            input_channels: Some(2),
            capture_channel: Some(1),
            ..AudioConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let mut rx = engine.capture().open(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let got: Vec<f32> = rt.block_on(async {
            let mut got = Vec::new();
            while got.len() < 16_000 {
                let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
                got.extend(
                    f.chunks_exact(2)
                        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0),
                );
            }
            got
        });
        let tail = &got[4_000..16_000];
        let crossings = tail
            .windows(2)
            .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
            .count();
        assert!(
            (740..=760).contains(&crossings),
            "1 kHz over 0.75 s should cross ~750 times, got {crossings}"
        );
        let peak = tail.iter().fold(0.0f32, |a, s| a.max(s.abs()));
        assert!((0.45..0.55).contains(&peak), "peak {peak}");
    });
}

fn write_wav(path: &std::path::Path, x: &[f32], rate: u32) {
    avs_testkit::audio::write_wav_i16(path, rate, &to_i16(x)).unwrap();
}
