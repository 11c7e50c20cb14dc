//! Engine-level tests on the `wav:` devices (real-time paced, no sound hardware, no JACK).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use avs_testkit::audio::{
    find_clip, locate, median_gain, noise, read_wav_mono, rms, to_i16, write_wav_i16,
};
use avs_testkit::wait::collect_until;
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
        // The pre-roll test needs the mic running before anyone listens.
        keep_mic_open: true,
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
    collect_until(rx, timeout, PlaybackUpdate::is_final)
        .into_iter()
        .map(|(_, u)| u)
        .collect()
}

#[test]
fn two_dialog_sources_play_back_to_back_without_gap_or_overlap() {
    let dir = tmp("gapless");
    let out = dir.join("out.wav");
    let a = noise(14_400, 1, 0.5);
    let b = noise(9_600, 2, 0.5);
    let glitches;
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
        let st = e.stats();
        glitches = (st.output_underrun_frames + st.stutter_frames) as usize;
    }
    let (rec, rate) = read_wav_mono(&out).unwrap();
    assert_eq!(rate, 48_000);
    let ma = find_clip(&rec, &a).unwrap();
    let mb = find_clip(&rec, &b).unwrap();
    if glitches == 0 {
        assert!(ma.score > 0.99 && mb.score > 0.99, "{ma:?} {mb:?}");
        assert_eq!(
            mb.offset,
            ma.offset + a.len(),
            "B must start on the sample after A's last"
        );
    } else {
        // a starved mixer (CPU load) inserted that much silence somewhere: only that much slack
        let ma = locate(&rec, &a, 48_000).unwrap();
        let mb = locate(&rec, &b, 48_000).unwrap();
        assert!(ma.score > 0.9 && mb.score > 0.9, "{ma:?} {mb:?}");
        let b_after = mb.offset as isize - (ma.offset + a.len()) as isize;
        assert!(
            (0..=glitches as isize).contains(&b_after),
            "gap {b_after} with {glitches} glitch frames"
        );
    }
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
    let g = median_gain(&rec, &clip, m.offset, 2_400, 48_000);
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
    let gc = median_gain(&rec, &content, mc.offset, 4_800, 48_000);
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
    write_wav_i16(&mic, 16_000, &sig).unwrap();
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

#[test]
fn pause_holds_content_and_resume_continues_where_it_stopped() {
    let dir = tmp("pause");
    let out = dir.join("out.wav");
    let content = noise(48_000, 12, 0.5);
    let glitches;
    {
        let e = engine(&out, "none");
        let p = e.playback();
        let mut r = p.enqueue(Channel::Content, SourceId(1), pcm(&content));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(r.recv()), Some(PlaybackUpdate::Started));
        std::thread::sleep(Duration::from_millis(300));
        p.pause(Channel::Content);
        std::thread::sleep(Duration::from_millis(500));
        p.resume(Channel::Content);
        let u = until_end(&mut r, Duration::from_secs(5));
        assert_eq!(
            u.last(),
            Some(&PlaybackUpdate::Finished {
                offset: Duration::from_secs(1)
            })
        );
        let st = e.stats();
        glitches = (st.output_underrun_frames + st.stutter_frames) as usize;
    }
    let (rec, _) = read_wav_mono(&out).unwrap();
    let head = find_clip(&rec, &content[..4_800]).unwrap();
    let tail = find_clip(&rec, &content[48_000 - 4_800..]).unwrap();
    assert!(head.score > 0.9 && tail.score > 0.9, "{head:?} {tail:?}");
    // the tail arrives about 500 ms later than it would have without the pause
    let late = tail.offset - head.offset - (48_000 - 4_800);
    assert!(
        (19_200..=28_800 + glitches).contains(&late),
        "paused for {late} frames ({glitches} glitch frames)"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Hands out `first` bytes at once, then stalls for `stall`, then the rest.
struct Stalling {
    data: Vec<u8>,
    pos: usize,
    first: usize,
    stall: Duration,
}

impl std::io::Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.first {
            std::thread::sleep(self.stall);
        }
        let end = if self.pos < self.first {
            self.first
        } else {
            self.data.len()
        };
        let n = buf.len().min(end - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn late_data_is_reported_as_a_stutter_with_its_length() {
    let dir = tmp("stutter");
    let out = dir.join("out.wav");
    // 1 s of 48 kHz mono WAV; the first ~0.25 s arrive at once, the rest 800 ms later
    let mut wav = std::io::Cursor::new(Vec::new());
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::new(&mut wav, spec).unwrap();
    for s in to_i16(&noise(48_000, 13, 0.3)) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    let data = wav.into_inner();
    let e = engine(&out, "none");
    let src = Stalling {
        data,
        pos: 0,
        first: 24_044,
        stall: Duration::from_millis(800),
    };
    let mut r = e
        .playback()
        .enqueue(Channel::Dialog, SourceId(1), Source::Encoded(Box::new(src)));
    let u = until_end(&mut r, Duration::from_secs(5));
    let i_start = u
        .iter()
        .position(|x| *x == PlaybackUpdate::StutterStarted)
        .unwrap_or_else(|| panic!("{u:?}"));
    let stutter = u[i_start..]
        .iter()
        .find_map(|x| match x {
            PlaybackUpdate::StutterFinished { stutter } => Some(*stutter),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{u:?}"));
    assert!(
        stutter > Duration::from_millis(400) && stutter < Duration::from_millis(900),
        "{stutter:?}"
    );
    assert_eq!(
        u.last(),
        Some(&PlaybackUpdate::Finished {
            offset: Duration::from_secs(1)
        }),
        "{u:?}"
    );
    assert!(e.stats().stutters >= 1);
    drop(e);
    let _ = std::fs::remove_dir_all(dir);
}
