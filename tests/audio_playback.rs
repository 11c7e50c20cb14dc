//! Playback through cpal on real ALSA PCMs backed by a JACK dummy server (avs-testkit's virtual
//! audio rig): what reaches the speaker device is recorded by the ALSA `file` plugin and judged
//! by cross-correlation against a reference decode.
//!
//! Needs `jackd2 libasound2-plugins sox mpg123`. Fixtures (tests/fixtures/audio_*.mp3) were made with:
//! `espeak-ng -w speech.wav "..." && sox speech.wav -r 24000 -c 1 -b 16 s24.wav && lame -b 48 -m m s24.wav audio_speech_24k_mono.mp3`
//! and an 8 s 44.1 kHz stereo sox synth encoded with `lame -b 128` (audio_music_44k_stereo.mp3);
//! the decode unit tests also use `sox -n -r 44100 -c 2 -b 16 audio_tone_44k_stereo.flac synth 1
//! sine 440 sine 660 vol 0.5` and `sox -n -r 22050 -c 1 audio_tone_22k_mono.ogg synth 1 sine 440 vol 0.5`.

// Helpers outside #[test] fns count as non-test code for clippy; a failed setup must fail the test.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use avs_testkit::audio::{
    AudioRig, find_clip, gain_near, locate, median_gain, noise, reference_decode_mp3, rms, to_i16,
    window_matches, with_virtual_audio,
};
use avs_testkit::fixture;
use avs_testkit::wait::collect_until;
use avsd::audio::{
    AudioConfig, AudioEngine, AudioError, Channel, PlaybackUpdate, Source, SourceId,
};
use tokio::sync::mpsc::Receiver;

const RATE: u32 = 48_000;

fn start(rig: &AudioRig) -> AudioEngine {
    AudioEngine::start(&AudioConfig {
        input: "none".into(),
        output: rig.speaker_device().into(),
        output_rate: Some(RATE),
        period: Duration::from_millis(10),
        ..AudioConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Updates until a terminal one, each with the time it arrived.
fn until_end(
    rx: &mut Receiver<PlaybackUpdate>,
    timeout: Duration,
) -> Vec<(Instant, PlaybackUpdate)> {
    collect_until(rx, timeout, PlaybackUpdate::is_final)
}

fn kinds(u: &[(Instant, PlaybackUpdate)]) -> Vec<PlaybackUpdate> {
    u.iter().map(|(_, x)| x.clone()).collect()
}

/// Stops the engine (so the file PCM is flushed) and reads what the speaker got.
fn recording(rig: &AudioRig, engine: AudioEngine) -> Vec<f32> {
    let channels = engine.stats().output.map(|o| o.channels).unwrap_or(2);
    std::thread::sleep(Duration::from_millis(100));
    drop(engine);
    rig.played(channels).unwrap()
}

/// Intact = at least 90 % of the clip's non-silent half-second windows are found in the
/// recording, in place, with a correlation above 0.9 (a glitch under CPU load may spoil one).
fn assert_intact(rec: &[f32], clip: &[f32], offset: usize, stats: &avsd::audio::AudioStats) {
    let w = window_matches(rec, clip, offset, RATE as usize / 2, RATE);
    let good = w.iter().filter(|(score, _)| *score > 0.9).count();
    assert!(
        !w.is_empty() && good * 10 >= w.len() * 9,
        "only {good} of {} windows intact: {w:?}; {stats:?}",
        w.len()
    );
}

fn mp3(name: &str) -> Source {
    Source::Encoded(Box::new(std::fs::File::open(fixture(name)).unwrap()))
}

#[test]
fn mp3_comes_out_intact_at_full_and_half_volume() {
    with_virtual_audio(
        "mp3_comes_out_intact_at_full_and_half_volume",
        RATE,
        |rig| {
            let reference =
                reference_decode_mp3(&fixture("audio_speech_24k_mono.mp3"), RATE, rig.dir())
                    .unwrap();
            let e = start(rig);
            let p = e.playback();
            let mut r = p.enqueue(
                Channel::Dialog,
                SourceId(1),
                mp3("audio_speech_24k_mono.mp3"),
            );
            let u = kinds(&until_end(&mut r, Duration::from_secs(20)));
            assert_eq!(u.first(), Some(&PlaybackUpdate::Started), "{u:?}");
            match u.last() {
                Some(PlaybackUpdate::Finished { offset }) => {
                    let want = Duration::from_secs_f64(reference.len() as f64 / f64::from(RATE));
                    assert!(
                        offset.abs_diff(want) < Duration::from_millis(60),
                        "{offset:?} vs {want:?}"
                    );
                }
                other => panic!("{other:?}"),
            }
            p.set_volume(50);
            let mut r = p.enqueue(
                Channel::Dialog,
                SourceId(2),
                mp3("audio_speech_24k_mono.mp3"),
            );
            until_end(&mut r, Duration::from_secs(20));
            let stats = e.stats();
            println!("{stats:?}");
            let rec = recording(rig, e);
            // the whole speech, found once at full level...
            let m1 = locate(&rec, &reference, RATE).unwrap();
            assert!(m1.score > 0.9, "first play: {m1:?}; {stats:?}");
            assert_intact(&rec, &reference, m1.offset, &stats);
            let g1 = median_gain(&rec, &reference, m1.offset, RATE as usize / 2, RATE);
            assert!((g1 - 1.0).abs() < 0.1, "full volume gain {g1}; {stats:?}");
            // ...and once more, after it, at volume 50 (gain 0.25)
            let after = &rec[m1.offset + reference.len()..];
            let m2 = locate(after, &reference, RATE).unwrap();
            assert!(m2.score > 0.9, "second play: {m2:?}");
            assert_intact(after, &reference, m2.offset, &stats);
            let g2 = median_gain(after, &reference, m2.offset, RATE as usize / 2, RATE);
            assert!((g2 - 0.25).abs() < 0.03, "volume 50 gain {g2}; {stats:?}");
            assert_eq!(stats.output.as_ref().map(|o| o.rate), Some(RATE));
        },
    );
}

#[test]
fn music_mp3_44k_stereo_plays_through_resampling() {
    with_virtual_audio(
        "music_mp3_44k_stereo_plays_through_resampling",
        RATE,
        |rig| {
            let reference =
                reference_decode_mp3(&fixture("audio_music_44k_stereo.mp3"), RATE, rig.dir())
                    .unwrap();
            let e = start(rig);
            let mut r = e.playback().enqueue(
                Channel::Content,
                SourceId(7),
                mp3("audio_music_44k_stereo.mp3"),
            );
            let u = kinds(&until_end(&mut r, Duration::from_secs(30)));
            assert!(
                matches!(u.last(), Some(PlaybackUpdate::Finished { .. })),
                "{u:?}"
            );
            let stats = e.stats();
            let rec = recording(rig, e);
            let m = locate(&rec, &reference, RATE).unwrap();
            assert!(m.score > 0.9, "{m:?}");
            assert_intact(&rec, &reference, m.offset, &stats);
        },
    );
}

#[test]
fn two_dialog_sources_back_to_back_no_gap_no_overlap() {
    with_virtual_audio(
        "two_dialog_sources_back_to_back_no_gap_no_overlap",
        RATE,
        |rig| {
            let a = noise(24_000, 21, 0.5);
            let b = noise(14_400, 22, 0.5);
            let e = start(rig);
            let p = e.playback();
            let pcm = |x: &[f32]| Source::Pcm {
                samples: Arc::from(to_i16(x)),
                rate: RATE,
            };
            let mut ra = p.enqueue(Channel::Dialog, SourceId(1), pcm(&a));
            let mut rb = p.enqueue(Channel::Dialog, SourceId(2), pcm(&b));
            let ua = until_end(&mut ra, Duration::from_secs(10));
            let ub = until_end(&mut rb, Duration::from_secs(10));
            let a_end = ua.last().map(|x| x.0).unwrap();
            let b_start = ub.first().map(|x| x.0).unwrap();
            assert_eq!(ub[0].1, PlaybackUpdate::Started);
            // the updates arrive on the device clock: B starts right as A finishes
            assert!(b_start.saturating_duration_since(a_end) < Duration::from_millis(50));
            let stats = e.stats();
            let period = stats
                .output
                .as_ref()
                .map(|o| o.granted_period_frames as usize)
                .unwrap_or(480)
                .max(1);
            // silence a starved mixer inserted under CPU load is counted; allow exactly that much
            let glitches = (stats.output_underrun_frames + stats.stutter_frames) as usize;
            let rec = recording(rig, e);
            let ma = locate(&rec, &a, RATE).unwrap();
            let mb = locate(&rec, &b, RATE).unwrap();
            assert!(ma.score > 0.98 && mb.score > 0.98, "{ma:?} {mb:?}");
            let a_last = ma.offset + a.len();
            assert!(
                mb.offset >= a_last,
                "overlap: B at {} before A's end {a_last}",
                mb.offset
            );
            let gap = mb.offset - a_last;
            assert!(
                gap <= period + glitches,
                "gap of {gap} frames (period {period}, {glitches} glitch frames); {stats:?}"
            );
        },
    );
}

#[test]
fn dialog_ducks_content_and_mute_silences() {
    with_virtual_audio("dialog_ducks_content_and_mute_silences", RATE, |rig| {
        let content = noise(RATE as usize * 3, 31, 0.4);
        let dialog = noise(RATE as usize, 32, 0.4);
        let muted = noise(RATE as usize / 2, 33, 0.4);
        let e = start(rig);
        let p = e.playback();
        let pcm = |x: &[f32]| Source::Pcm {
            samples: Arc::from(to_i16(x)),
            rate: RATE,
        };
        let mut rc = p.enqueue(Channel::Content, SourceId(1), pcm(&content));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(rc.recv()), Some(PlaybackUpdate::Started));
        std::thread::sleep(Duration::from_millis(700));
        // what the focus manager does when Dialog takes the foreground
        p.set_channel_gain(Channel::Content, 0.2);
        let mut rd = p.enqueue(Channel::Dialog, SourceId(2), pcm(&dialog));
        until_end(&mut rd, Duration::from_secs(5));
        p.set_channel_gain(Channel::Content, 1.0);
        until_end(&mut rc, Duration::from_secs(5));
        p.set_muted(true);
        let mut rm = p.enqueue(Channel::Dialog, SourceId(3), pcm(&muted));
        let um = kinds(&until_end(&mut rm, Duration::from_secs(5)));
        assert!(
            matches!(um.last(), Some(PlaybackUpdate::Finished { .. })),
            "{um:?}"
        );
        let stats = e.stats();
        let rec = recording(rig, e);
        let mc = find_clip(&rec, &content[..RATE as usize / 2]).unwrap();
        assert!(mc.score > 0.95, "{mc:?}");
        let md = find_clip(&rec, &dialog).unwrap();
        assert!(md.score > 0.5, "{md:?}");
        let d_in_content = md.offset - mc.offset;
        // content level before, during (ramp excluded) and after the dialog, each window
        // re-aligned locally so an underrun under load does not skew it
        let w = 9_600;
        let search = RATE as usize / 10;
        let (g_before, _) = gain_near(&rec, &content[..w], mc.offset, search).unwrap();
        let during = d_in_content + 4_800;
        let (g_during, _) = gain_near(
            &rec,
            &content[during..during + w],
            mc.offset + during,
            search,
        )
        .unwrap();
        let g_dialog = median_gain(&rec, &dialog, md.offset, w, RATE);
        println!("content {g_before} → ducked {g_during}; dialog {g_dialog}; {stats:?}");
        assert!((g_before - 1.0).abs() < 0.05, "before {g_before}");
        assert!((g_during - 0.2).abs() < 0.05, "ducked {g_during}");
        assert!((g_dialog - 1.0).abs() < 0.05, "dialog {g_dialog}");
        let tail_start = mc.offset + content.len() + 4_800;
        let tail = &rec[tail_start.min(rec.len())..];
        assert!(
            rms(tail) < 1e-3,
            "muted playback is audible: rms {}",
            rms(tail)
        );
    });
}

/// A reader that hands out `chunk` bytes every `pause`, like a slow network, and notes when it
/// handed out its last byte.
struct SlowReader {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    pause: Duration,
    last_byte_at: Arc<Mutex<Option<Instant>>>,
}

impl Read for SlowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.data.len() {
            return Ok(0);
        }
        std::thread::sleep(self.pause);
        let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.data.len() {
            *self.last_byte_at.lock().unwrap() = Some(Instant::now());
        }
        Ok(n)
    }
}

#[test]
fn slow_stream_starts_playing_before_its_last_byte() {
    with_virtual_audio(
        "slow_stream_starts_playing_before_its_last_byte",
        RATE,
        |rig| {
            let data = std::fs::read(fixture("audio_speech_24k_mono.mp3")).unwrap();
            let last = Arc::new(Mutex::new(None));
            // 46 KB at 2 KB per 100 ms: the last byte arrives after ~2.3 s
            let reader = SlowReader {
                data,
                pos: 0,
                chunk: 2048,
                pause: Duration::from_millis(100),
                last_byte_at: last.clone(),
            };
            let e = start(rig);
            let t0 = Instant::now();
            let mut r = e.playback().enqueue(
                Channel::Dialog,
                SourceId(1),
                Source::Encoded(Box::new(reader)),
            );
            let u = until_end(&mut r, Duration::from_secs(20));
            let started = u
                .iter()
                .find(|x| x.1 == PlaybackUpdate::Started)
                .map(|x| x.0)
                .unwrap();
            let last_byte = last.lock().unwrap().unwrap();
            println!(
                "started after {:?}, last byte after {:?}",
                started - t0,
                last_byte - t0
            );
            assert!(
                started < last_byte,
                "playback started only after the last byte"
            );
            assert!(matches!(
                u.last().map(|x| &x.1),
                Some(PlaybackUpdate::Finished { .. })
            ));
            drop(e);
        },
    );
}

#[test]
fn corrupt_mp3_fails_without_panic_and_engine_keeps_working() {
    with_virtual_audio(
        "corrupt_mp3_fails_without_panic_and_engine_keeps_working",
        RATE,
        |rig| {
            let e = start(rig);
            let p = e.playback();
            // random bytes: no format at all
            let junk: Vec<u8> = to_i16(&noise(60_000, 41, 1.0))
                .iter()
                .map(|s| (*s >> 8) as u8)
                .collect();
            let mut r = p.enqueue(
                Channel::Dialog,
                SourceId(1),
                Source::Encoded(Box::new(std::io::Cursor::new(junk.clone()))),
            );
            let u = kinds(&until_end(&mut r, Duration::from_secs(5)));
            match u.last() {
                Some(PlaybackUpdate::Failed { error }) => assert!(!error.is_empty()),
                other => panic!("{other:?}"),
            }
            // a real MP3 whose body was overwritten with garbage after 1.5 KB: a terminal update,
            // no panic (it may play its first frames, then it either fails or finishes)
            let mut bad = std::fs::read(fixture("audio_speech_24k_mono.mp3")).unwrap();
            let n = bad.len();
            bad[1500..n].copy_from_slice(&junk[..n - 1500]);
            let mut r = p.enqueue(
                Channel::Dialog,
                SourceId(2),
                Source::Encoded(Box::new(std::io::Cursor::new(bad))),
            );
            let u = kinds(&until_end(&mut r, Duration::from_secs(20)));
            println!("half-corrupt MP3: {:?}; stats {:?}", u.last(), e.stats());
            assert!(matches!(
                u.last(),
                Some(PlaybackUpdate::Failed { .. } | PlaybackUpdate::Finished { .. })
            ));
            // the engine still plays
            let mut r = p.enqueue(
                Channel::Dialog,
                SourceId(3),
                Source::Earcon(avsd::audio::Earcon::Wake),
            );
            let u = kinds(&until_end(&mut r, Duration::from_secs(5)));
            assert!(
                matches!(u.last(), Some(PlaybackUpdate::Finished { .. })),
                "{u:?}"
            );
            drop(e);
        },
    );
}

#[test]
fn missing_device_error_names_it_and_lists_devices() {
    with_virtual_audio(
        "missing_device_error_names_it_and_lists_devices",
        RATE,
        |rig| {
            let err = AudioEngine::start(&AudioConfig {
                input: "none".into(),
                output: "alsa:no_such_speaker".into(),
                ..AudioConfig::default()
            })
            .err()
            .unwrap();
            let msg = err.to_string();
            assert!(matches!(err, AudioError::DeviceNotFound { .. }), "{msg}");
            assert!(msg.contains("alsa:no_such_speaker"), "{msg}");
            assert!(
                msg.contains(rig.speaker_device()),
                "the list should show the rig's speaker: {msg}"
            );
            let report = avsd::audio::report(&avsd::audio::list_devices());
            println!("{report}");
            assert!(report.contains("alsa:avs_speaker"), "{report}");
        },
    );
}
