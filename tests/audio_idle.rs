//! The audio engine at rest: the output device pauses when there is nothing to play and the mic
//! is paused while nobody listens, and neither costs the next source or listener anything it
//! can hear: the first source after a pause plays intact, with `Started` before its samples and
//! no underrun counted for the idle silence; the `wav:` devices keep their files on the wall
//! clock across a pause; a listener that opens a paused mic gets what the mic hears from then
//! on. Real engine on the `wav:` devices (paced in real time), no sound hardware.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use avs_testkit::audio::{find_clip, noise, read_wav_mono, to_i16, write_wav_i16};
use avs_testkit::wait::collect_until;
use avsd::audio::{AudioConfig, AudioEngine, Channel, PlaybackUpdate, Source, SourceId};
use tokio::sync::mpsc::Receiver;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("avsd-audio-idle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pcm(x: &[f32]) -> Source {
    Source::Pcm {
        samples: Arc::from(to_i16(x)),
        rate: 48_000,
    }
}

/// Updates until a terminal one, each with the instant it arrived.
fn until_end(rx: &mut Receiver<PlaybackUpdate>) -> Vec<(Instant, PlaybackUpdate)> {
    collect_until(rx, Duration::from_secs(5), PlaybackUpdate::is_final)
}

#[test]
fn source_after_an_idle_pause_plays_intact_and_the_file_keeps_the_wall_clock() {
    let dir = tmp("pause");
    let out = dir.join("out.wav");
    let a = noise(9_600, 3, 0.5);
    let b = noise(9_600, 4, 0.5);
    let (started_a, started_b, stats);
    {
        let e = AudioEngine::start(&AudioConfig {
            input: "none".into(),
            output: format!("wav:{}", out.display()),
            output_rate: Some(48_000),
            period: Duration::from_millis(20),
            output_idle_pause: Some(Duration::from_millis(200)),
            ..AudioConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let p = e.playback();
        let ua = until_end(&mut p.enqueue(Channel::Dialog, SourceId(1), pcm(&a)));
        assert!(matches!(ua[0].1, PlaybackUpdate::Started), "{ua:?}");
        assert!(
            matches!(
                ua.last().map(|u| &u.1),
                Some(PlaybackUpdate::Finished { .. })
            ),
            "{ua:?}"
        );
        started_a = ua[0].0;
        // Well past the idle pause: the output device is paused, its clock stands still.
        std::thread::sleep(Duration::from_millis(1_500));
        let frames_paused = e.stats().output_frames;
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            e.stats().output_frames,
            frames_paused,
            "the output kept running while idle"
        );
        let ub = until_end(&mut p.enqueue(Channel::Dialog, SourceId(2), pcm(&b)));
        assert!(matches!(ub[0].1, PlaybackUpdate::Started), "{ub:?}");
        assert_eq!(
            ub.last().map(|u| &u.1),
            Some(&PlaybackUpdate::Finished {
                offset: Duration::from_millis(200)
            })
        );
        started_b = ub[0].0;
        stats = e.stats();
    }
    assert_eq!(
        stats.output_underruns, 0,
        "idle silence or the resume counted as underruns: {stats:?}"
    );
    let (rec, rate) = read_wav_mono(&out).unwrap();
    assert_eq!(rate, 48_000);
    let ma = find_clip(&rec, &a).unwrap();
    let mb = find_clip(&rec, &b).unwrap();
    assert!(ma.score > 0.99 && mb.score > 0.99, "{ma:?} {mb:?}");
    // The paused time is in the file as silence: B's distance from A in the file is the time
    // between their Started updates (each within a period or two of its first sample).
    let in_file = (mb.offset - ma.offset) as f64 / 48_000.0;
    let on_clock = started_b.duration_since(started_a).as_secs_f64();
    assert!(
        (in_file - on_clock).abs() < 0.1,
        "B is {in_file:.3} s after A in the file but {on_clock:.3} s on the clock"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mic_is_paused_while_nobody_listens_and_a_listener_hears_the_present() {
    let dir = tmp("mic");
    let mic = dir.join("mic.wav");
    // 10 s of distinct noise: any 10 ms frame says where in the file it came from.
    let sig = to_i16(&noise(160_000, 9, 0.5));
    write_wav_i16(&mic, 16_000, &sig).unwrap();
    let started = Instant::now();
    let e = AudioEngine::start(&AudioConfig {
        input: format!("wav:{}", mic.display()),
        output: format!("wav:{}", dir.join("out.wav").display()),
        period: Duration::from_millis(10),
        ..AudioConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(300));
    let before = e.stats().input_callbacks;
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        e.stats().input_callbacks,
        before,
        "the mic ran with nobody listening"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let opened = started.elapsed();
    let mut rx = e.capture().open(true);
    let first = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .expect("a frame within 2 s of opening a paused mic")
            .expect("the mic channel stayed open")
    });
    assert_eq!(first.len(), 320);
    // Without keep_mic_open there is no stale pre-roll: the first frame is what the mic heard
    // after open, i.e. the file where the wall clock stands (the file goes on while paused).
    let samples: Vec<i16> = first
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    // i16 → f32 → i16 may move a sample by one step.
    let at = sig
        .windows(samples.len())
        .position(|w| {
            w.iter()
                .zip(&samples)
                .all(|(x, y)| (i32::from(*x) - i32::from(*y)).abs() <= 2)
        })
        .expect("the frame is a piece of the mic file");
    let at_s = at as f64 / 16_000.0;
    // The file's clock starts when the device opens, a little after `started` (slack for a
    // slow start); a mic that had stood still while paused would be about 0.7 s behind.
    assert!(
        at_s >= opened.as_secs_f64() - 0.25 && at_s <= opened.as_secs_f64() + 0.5,
        "first frame from {at_s:.3} s of the file, mic opened {:.3} s after start",
        opened.as_secs_f64()
    );
    // Closing the mic pauses it again.
    drop(rx);
    std::thread::sleep(Duration::from_millis(300));
    let closed = e.stats().input_callbacks;
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(e.stats().input_callbacks, closed, "the mic ran after close");
    drop(e);
    let _ = std::fs::remove_dir_all(dir);
}
