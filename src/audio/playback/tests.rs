//! Engine-level tests on the `wav:` devices (real-time paced, no sound hardware, no JACK).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use avs_testkit::audio::{find_clip, gain_at, noise, read_wav_mono, rms, to_i16};
use tokio::sync::mpsc::Receiver;

use crate::audio::{AudioConfig, AudioEngine, Channel, PlaybackUpdate, Source, SourceId};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("avsd-audio-unit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn engine(out: &std::path::Path, input: &str) -> AudioEngine {
    AudioEngine::start(&AudioConfig {
        input: input.into(),
        output: format!("wav:{}", out.display()),
        output_rate: Some(48_000),
        ..AudioConfig::default()
    })
    .unwrap()
}

fn pcm(x: &[f32]) -> Source {
    Source::Pcm {
        samples: Arc::from(to_i16(x)),
        rate: 48_000,
    }
}

/// Collects updates until a terminal one (or the timeout).
fn until_end(rx: &mut Receiver<PlaybackUpdate>, timeout: Duration) -> Vec<PlaybackUpdate> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(timeout, rx.recv()).await {
                Ok(Some(u)) => {
                    let end = matches!(
                        u,
                        PlaybackUpdate::Finished { .. }
                            | PlaybackUpdate::Stopped { .. }
                            | PlaybackUpdate::Failed { .. }
                    );
                    seen.push(u);
                    if end {
                        return seen;
                    }
                }
                Ok(None) => return seen,
                Err(_) => panic!("no terminal update within {timeout:?}; got {seen:?}"),
            }
        }
    })
}

#[test]
fn two_dialog_sources_play_back_to_back_without_gap_or_overlap() {
    let dir = tmp("gapless");
    let out = dir.join("out.wav");
    let a = noise(14_400, 1, 0.5);
    let b = noise(9_600, 2, 0.5);
    {
        let e = engine(&out, "none");
        let p = e.playback();
        let mut ra = p.enqueue(Channel::Dialog, SourceId(1), pcm(&a));
        let mut rb = p.enqueue(Channel::Dialog, SourceId(2), pcm(&b));
        let ua = until_end(&mut ra, Duration::from_secs(5));
        let ub = until_end(&mut rb, Duration::from_secs(5));
        assert_eq!(ua.first(), Some(&PlaybackUpdate::Started), "{ua:?}");
        assert_eq!(
            ua.last(),
            Some(&PlaybackUpdate::Finished {
                offset: Duration::from_millis(300)
            }),
            "{ua:?}"
        );
        assert!(
            ua.iter()
                .any(|u| matches!(u, PlaybackUpdate::Progress { .. })),
            "{ua:?}"
        );
        assert_eq!(ub.first(), Some(&PlaybackUpdate::Started));
        assert_eq!(
            ub.last(),
            Some(&PlaybackUpdate::Finished {
                offset: Duration::from_millis(200)
            })
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (rec, rate) = read_wav_mono(&out).unwrap();
    assert_eq!(rate, 48_000);
    let ma = find_clip(&rec, &a).unwrap();
    let mb = find_clip(&rec, &b).unwrap();
    assert!(ma.score > 0.99 && mb.score > 0.99, "{ma:?} {mb:?}");
    assert_eq!(
        mb.offset,
        ma.offset + a.len(),
        "B must start on the sample after A's last"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stop_before_start_removes_and_reports_stopped() {
    let dir = tmp("stop");
    let out = dir.join("out.wav");
    let e = engine(&out, "none");
    let p = e.playback();
    let mut ra = p.enqueue(Channel::Content, SourceId(1), pcm(&noise(48_000, 3, 0.3)));
    let mut rb = p.enqueue(Channel::Content, SourceId(2), pcm(&noise(4_800, 4, 0.3)));
    p.stop(SourceId(2));
    let ub = until_end(&mut rb, Duration::from_secs(2));
    assert_eq!(
        ub,
        vec![PlaybackUpdate::Stopped {
            offset: Duration::ZERO
        }]
    );
    std::thread::sleep(Duration::from_millis(200));
    p.stop(SourceId(1));
    let ua = until_end(&mut ra, Duration::from_secs(2));
    assert_eq!(ua.first(), Some(&PlaybackUpdate::Started));
    match ua.last() {
        Some(PlaybackUpdate::Stopped { offset }) => assert!(
            *offset > Duration::from_millis(100) && *offset < Duration::from_millis(600),
            "{offset:?}"
        ),
        other => panic!("{other:?}"),
    }
    drop(e);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn volume_mute_and_ducking_reach_the_output() {
    let dir = tmp("levels");
    let out = dir.join("out.wav");
    let clip = noise(9_600, 5, 0.5);
    let content = noise(48_000 * 2, 6, 0.4);
    {
        let e = engine(&out, "none");
        let p = e.playback();
        p.set_volume(50);
        let mut r = p.enqueue(Channel::Dialog, SourceId(1), pcm(&clip));
        until_end(&mut r, Duration::from_secs(3));
        p.set_volume(100);
        p.set_muted(true);
        let mut r = p.enqueue(Channel::Dialog, SourceId(2), pcm(&noise(9_600, 7, 0.5)));
        until_end(&mut r, Duration::from_secs(3));
        p.set_muted(false);
        p.set_channel_gain(Channel::Content, 0.25);
        let mut r = p.enqueue(Channel::Content, SourceId(3), pcm(&content));
        until_end(&mut r, Duration::from_secs(5));
    }
    let (rec, _) = read_wav_mono(&out).unwrap();
    let m = find_clip(&rec, &clip).unwrap();
    let g = gain_at(&rec, &clip, m.offset);
    assert!(
        (g - 0.25).abs() < 0.02,
        "volume 50 should give gain 0.25, got {g}"
    );
    // muted clip: nothing of it in the recording
    let muted = noise(9_600, 7, 0.5);
    let mm = find_clip(&rec, &muted).unwrap();
    assert!(
        mm.score < 0.2 || rms(&rec[mm.offset..mm.offset + muted.len()]) < 1e-3,
        "{mm:?}"
    );
    let mc = find_clip(&rec, &content[..24_000]).unwrap();
    let gc = gain_at(&rec, &content, mc.offset);
    assert!((gc - 0.25).abs() < 0.02, "ducked content gain {gc}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn wav_mic_arrives_as_16k_frames_with_preroll() {
    let dir = tmp("mic");
    let mic = dir.join("mic.wav");
    let out = dir.join("out.wav");
    // 1 s of 16 kHz noise: no resampling, so frames must carry it sample for sample.
    let sig = to_i16(&noise(16_000, 9, 0.5));
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&mic, spec).unwrap();
    for s in &sig {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
    let e = engine(&out, &format!("wav:{}", mic.display()));
    std::thread::sleep(Duration::from_millis(300));
    let mut rx = e.capture().open(true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let got: Vec<i16> = rt.block_on(async {
        let mut got = Vec::new();
        while got.len() < 24_000 {
            let f = tokio::time::timeout(Duration::from_secs(3), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(f.len(), 320);
            got.extend(f.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
        }
        got
    });
    // with pre-roll the stream starts at most 500 ms back, so the start of the file is there
    // unless more than 500 ms passed; look for the 16 000 samples anywhere
    let pos = got
        .windows(sig.len().min(800))
        .position(|w| w == &sig[16_000 - 800..]);
    assert!(
        pos.is_some(),
        "the end of the mic file is not in the frames"
    );
    let stats = e.stats();
    assert!(stats.capture_frames >= 150, "{stats:?}");
    assert_eq!(stats.input_overrun_samples, 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn corrupt_encoded_source_fails_and_engine_keeps_playing() {
    let dir = tmp("corrupt");
    let out = dir.join("out.wav");
    let e = engine(&out, "none");
    let p = e.playback();
    let junk: Vec<u8> = noise(30_000, 11, 1.0)
        .iter()
        .map(|s| (s * 127.0) as i8 as u8)
        .collect();
    let mut r = p.enqueue(
        Channel::Dialog,
        SourceId(1),
        Source::Encoded(Box::new(std::io::Cursor::new(junk))),
    );
    let u = until_end(&mut r, Duration::from_secs(3));
    assert!(
        matches!(u.last(), Some(PlaybackUpdate::Failed { .. })),
        "{u:?}"
    );
    let mut r = p.enqueue(
        Channel::Dialog,
        SourceId(2),
        Source::Earcon(crate::audio::Earcon::Wake),
    );
    let u = until_end(&mut r, Duration::from_secs(3));
    assert!(
        matches!(u.last(), Some(PlaybackUpdate::Finished { .. })),
        "{u:?}"
    );
    drop(e);
    let _ = std::fs::remove_dir_all(dir);
}
