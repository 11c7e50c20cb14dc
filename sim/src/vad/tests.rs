use super::*;
use crate::speech::{self, Voice};

const MS: fn(u64) -> Duration = Duration::from_millis;

fn speech_16k(voice: Voice, text: &str) -> Vec<i16> {
    let (pcm, rate) = speech::synthesize_pcm_with(voice, text).unwrap();
    speech::resample_linear(&pcm, rate, SAMPLE_RATE_HZ)
}

fn silence(d: Duration) -> Vec<i16> {
    vec![0; samples(d)]
}

fn samples(d: Duration) -> usize {
    (d.as_secs_f64() * f64::from(SAMPLE_RATE_HZ)) as usize
}

/// Deterministic white noise at `dbfs` RMS added onto `pcm`.
fn add_noise(pcm: &mut [i16], dbfs: f64, seed: u64) {
    let rms = 10f64.powf(dbfs / 20.0) * 32_768.0;
    let amplitude = rms * 3f64.sqrt(); // uniform noise: rms = a / sqrt(3)
    let mut state = seed | 1;
    for s in pcm.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let u = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        *s = (f64::from(*s) + u * amplitude).clamp(-32_768.0, 32_767.0) as i16;
    }
}

/// Where the speech in `pcm` really ends: the end of its last 10 ms frame above -40 dBFS.
fn speech_end(pcm: &[i16], offset: usize) -> Duration {
    let frame = samples(MS(10));
    let last = pcm
        .chunks(frame)
        .rposition(|c| {
            let bytes: Vec<u8> = c.iter().flat_map(|s| s.to_le_bytes()).collect();
            frame_energy_db(&bytes) > -40.0
        })
        .unwrap();
    Duration::from_micros(((offset + (last + 1) * frame) as u64) * 1_000_000 / 16_000)
}

fn to_bytes(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// Feeds `pcm` in chunks of `chunk` bytes, draining every decision.
fn run(cfg: VadConfig, pcm: &[i16], chunk: usize) -> Vec<VadEvent> {
    let mut vad = EndOfSpeechDetector::new(cfg);
    let mut events = Vec::new();
    for piece in to_bytes(pcm).chunks(chunk) {
        let mut event = vad.push(piece);
        while let Some(e) = event {
            events.push(e);
            event = vad.push(&[]);
        }
    }
    events
}

fn end_of(events: &[VadEvent]) -> Duration {
    match events {
        [VadEvent::SpeechStarted { .. }, VadEvent::EndOfSpeech { at }] => *at,
        other => panic!("expected a start then an end, got {other:?}"),
    }
}

fn assert_within(actual: Duration, expected: Duration, tolerance: Duration) {
    assert!(
        actual.abs_diff(expected) <= tolerance,
        "{actual:?} is not within {tolerance:?} of {expected:?}"
    );
}

/// 400 ms lead-in, one sentence, 2 s of silence; returns the audio and where the speech ends.
fn utterance(voice: Voice, noise_dbfs: Option<f64>) -> (Vec<i16>, Duration, Duration) {
    let lead = silence(MS(400));
    let words = speech_16k(voice, "Alexa, what is the weather like in Seattle today?");
    let end = speech_end(&words, lead.len());
    let mut pcm = [lead, words, silence(MS(2000))].concat();
    if let Some(db) = noise_dbfs {
        add_noise(&mut pcm, db, 7);
    }
    (pcm, MS(400), end)
}

#[test]
fn end_is_found_after_the_trailing_silence() {
    for voice in [Voice::Synthetic, Voice::Auto] {
        let (pcm, start, end) = utterance(voice, None);
        let events = run(VadConfig::default(), &pcm, 320);
        let VadEvent::SpeechStarted { at: started } = events[0] else {
            panic!("{voice:?}: {events:?}");
        };
        assert_within(started, start, MS(150));
        assert_within(end_of(&events), end + MS(600), MS(100));
    }
}

#[test]
fn end_follows_the_trailing_silence_setting() {
    let (pcm, _, end) = utterance(Voice::Synthetic, None);
    for trailing in [MS(300), MS(1000)] {
        let cfg = VadConfig {
            trailing_silence: trailing,
            ..VadConfig::default()
        };
        assert_within(end_of(&run(cfg, &pcm, 1000)), end + trailing, MS(100));
    }
}

#[test]
fn end_is_found_in_steady_noise() {
    for noise in [-60.0, -45.0, -35.0] {
        let (pcm, start, end) = utterance(Voice::Synthetic, Some(noise));
        let events = run(VadConfig::default(), &pcm, 640);
        let VadEvent::SpeechStarted { at: started } = events[0] else {
            panic!("{noise} dBFS: {events:?}");
        };
        assert_within(started, start, MS(150));
        assert_within(end_of(&events), end + MS(600), MS(100));
    }
}

#[test]
fn short_pauses_do_not_end_the_utterance() {
    let first = speech_16k(Voice::Synthetic, "Set a timer");
    let second = speech_16k(Voice::Synthetic, "for five minutes, please.");
    let lead = silence(MS(300));
    let offset = lead.len() + first.len() + samples(MS(350));
    let end = speech_end(&second, offset);
    let mut pcm = [lead, first, silence(MS(350)), second, silence(MS(1500))].concat();
    add_noise(&mut pcm, -50.0, 3);
    let events = run(VadConfig::default(), &pcm, 777);
    assert_within(end_of(&events), end + MS(600), MS(100));
}

#[test]
fn max_utterance_caps_endless_speech() {
    let sentence = speech_16k(
        Voice::Synthetic,
        "This goes on and on and on without a pause",
    );
    let pcm: Vec<i16> = sentence
        .iter()
        .copied()
        .cycle()
        .take(samples(MS(5000)))
        .collect();
    let cfg = VadConfig {
        max_utterance: MS(2000),
        ..VadConfig::default()
    };
    assert_eq!(end_of(&run(cfg, &pcm, 4096)), MS(2000));
}

#[test]
fn silence_and_noise_alone_end_only_at_the_cap() {
    let cfg = VadConfig {
        max_utterance: MS(3000),
        ..VadConfig::default()
    };
    let mut noise = silence(MS(4000));
    add_noise(&mut noise, -40.0, 11);
    for pcm in [silence(MS(4000)), noise] {
        let events = run(cfg.clone(), &pcm, 500);
        assert_eq!(events, vec![VadEvent::EndOfSpeech { at: MS(3000) }]);
    }
}

#[test]
fn a_click_is_not_speech() {
    let mut pcm = silence(MS(3000));
    for s in &mut pcm[samples(MS(1000))..samples(MS(1030))] {
        *s = 20_000;
    }
    add_noise(&mut pcm, -55.0, 5);
    let cfg = VadConfig {
        max_utterance: MS(2500),
        ..VadConfig::default()
    };
    assert_eq!(
        run(cfg, &pcm, 320),
        vec![VadEvent::EndOfSpeech { at: MS(2500) }]
    );
}

#[test]
fn chunking_does_not_change_decisions() {
    let (pcm, _, _) = utterance(Voice::Synthetic, Some(-50.0));
    let whole = run(VadConfig::default(), &pcm, usize::MAX);
    assert_eq!(whole.len(), 2);
    assert_eq!(run(VadConfig::default(), &pcm, 1), whole);
    assert_eq!(run(VadConfig::default(), &pcm, 321), whole);
}

#[test]
fn nothing_after_the_end() {
    let (pcm, _, _) = utterance(Voice::Synthetic, None);
    let mut vad = EndOfSpeechDetector::new(VadConfig::default());
    let bytes = to_bytes(&pcm);
    let mut events = vec![vad.push(&bytes)];
    events.push(vad.push(&[]));
    assert!(matches!(
        events[..],
        [
            Some(VadEvent::SpeechStarted { .. }),
            Some(VadEvent::EndOfSpeech { .. })
        ]
    ));
    assert!(vad.is_ended());
    assert_eq!(vad.push(&bytes), None);
    assert_eq!(vad.push(&[]), None);
}

#[test]
fn noise_floor_follows_the_noise() {
    let mut pcm = silence(MS(1000));
    add_noise(&mut pcm, -40.0, 9);
    let mut vad = EndOfSpeechDetector::new(VadConfig::default());
    assert_eq!(vad.push(&to_bytes(&pcm)), None);
    let floor = vad.noise_floor_db().unwrap();
    assert!((-43.0..=-39.0).contains(&floor), "floor {floor}");
    assert_eq!(vad.position(), MS(1000));
}
