use super::*;

const FRAME: Duration = Duration::from_millis(24); // 576 samples at 24 kHz

fn espeak_installed() -> bool {
    let found = Command::new("espeak-ng")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("espeak-ng is not installed: skipping the espeak-ng voice checks");
    }
    found
}

fn assert_close(a: Duration, b: Duration, tolerance: Duration) {
    let diff = a.abs_diff(b);
    assert!(
        diff <= tolerance,
        "{a:?} vs {b:?} differ by {diff:?} (> {tolerance:?})"
    );
}

/// 10 ms frame RMS values (as fractions of full scale).
fn frame_rms(pcm: &[i16], rate: u32) -> Vec<f64> {
    pcm.chunks(rate as usize / 100)
        .map(|c| {
            let sum: f64 = c.iter().map(|s| f64::from(*s).powi(2)).sum();
            (sum / c.len() as f64).sqrt() / f64::from(i16::MAX)
        })
        .collect()
}

fn longest_silence(pcm: &[i16], rate: u32) -> Duration {
    let (mut best, mut run) = (0usize, 0usize);
    for rms in frame_rms(pcm, rate) {
        if rms < 0.001 {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    Duration::from_millis(best as u64 * 10)
}

fn check_voice(voice: Voice) {
    let text = "The weather in Seattle is fifty two degrees and cloudy.";
    let (pcm, rate) = synthesize_pcm_with(voice, text).unwrap();
    assert_eq!(rate, SAMPLE_RATE_HZ);
    let expected = samples_to_duration(pcm.len(), rate);
    assert!(
        expected > Duration::from_millis(1500),
        "{voice:?}: too short: {expected:?}"
    );

    let mp3 = synthesize_mp3_with(voice, text).unwrap();
    assert_eq!(mp3[0], 0xff, "{voice:?}: MP3 must start with a frame sync");
    assert_eq!(mp3[1] & 0xe0, 0xe0);
    let (decoded, decoded_rate) = decode_mp3(&mp3).unwrap();
    assert_eq!(decoded_rate, SAMPLE_RATE_HZ);
    assert_close(mp3_duration(&mp3).unwrap(), expected, FRAME);
    assert_close(
        samples_to_duration(decoded.len(), decoded_rate),
        expected,
        FRAME,
    );

    // Speech, not silence and not a steady tone: loud frames and quiet gaps both present.
    let rms = frame_rms(&decoded, decoded_rate);
    let loud = rms.iter().filter(|r| **r > 0.05).count();
    let quiet = rms.iter().filter(|r| **r < 0.01).count();
    assert!(
        loud * 5 > rms.len(),
        "{voice:?}: only {loud} of {} frames loud",
        rms.len()
    );
    assert!(quiet > 5, "{voice:?}: no pauses between words");
}

#[test]
fn synthetic_voice_gives_mp3_of_the_expected_duration() {
    check_voice(Voice::Synthetic);
}

#[test]
fn espeak_voice_gives_mp3_of_the_expected_duration() {
    if espeak_installed() {
        check_voice(Voice::Espeak);
    }
}

#[test]
fn auto_voice_is_espeak_when_installed() {
    if espeak_installed() {
        let text = "Hang on while I look that up.";
        assert_eq!(
            synthesize_pcm(text).unwrap(),
            synthesize_pcm_with(Voice::Espeak, text).unwrap()
        );
    }
}

#[test]
fn same_text_gives_the_same_bytes() {
    let text = "<speak>Hang on <break time=\"300ms\"/> while I look that up.</speak>";
    assert_eq!(
        synthesize_mp3_with(Voice::Synthetic, text).unwrap(),
        synthesize_mp3_with(Voice::Synthetic, text).unwrap()
    );
    if espeak_installed() {
        assert_eq!(
            synthesize_mp3_with(Voice::Espeak, text).unwrap(),
            synthesize_mp3_with(Voice::Espeak, text).unwrap()
        );
    }
}

#[test]
fn distinct_texts_give_distinct_audio() {
    for voice in [Voice::Synthetic, Voice::Espeak] {
        if voice == Voice::Espeak && !espeak_installed() {
            continue;
        }
        let (a, _) = synthesize_pcm_with(voice, "Hello there.").unwrap();
        let (b, _) = synthesize_pcm_with(voice, "What time is it in Tokyo right now?").unwrap();
        let (c, _) = synthesize_pcm_with(voice, "Good day.").unwrap();
        assert!(
            b.len() > a.len() * 2,
            "{voice:?}: a longer text must last longer"
        );
        assert_ne!(a, c, "{voice:?}: different texts gave the same audio");
        // Not merely different bytes: the waveforms are not alike sample for sample.
        let n = a.len().min(c.len());
        let dot: f64 = a[..n]
            .iter()
            .zip(&c[..n])
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let na: f64 = a[..n]
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        let nc: f64 = c[..n]
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        let correlation = dot / (na * nc).max(1.0);
        assert!(
            correlation.abs() < 0.5,
            "{voice:?}: correlation {correlation}"
        );
    }
}

#[test]
fn ssml_break_becomes_silence() {
    let ssml = "<speak>One. <break time=\"1s\"/> Two.</speak>";
    let (pcm, rate) = synthesize_pcm_with(Voice::Synthetic, ssml).unwrap();
    let gap = longest_silence(&pcm, rate);
    assert!(gap >= Duration::from_millis(1000), "synthetic gap {gap:?}");
    let (plain, _) = synthesize_pcm_with(Voice::Synthetic, "One. Two.").unwrap();
    assert!(longest_silence(&plain, rate) < Duration::from_millis(600));
    if espeak_installed() {
        let (pcm, rate) = synthesize_pcm_with(Voice::Espeak, ssml).unwrap();
        let gap = longest_silence(&pcm, rate);
        assert!(gap >= Duration::from_millis(800), "espeak gap {gap:?}");
    }
}

#[test]
fn empty_text_is_refused() {
    assert!(matches!(synthesize_mp3(""), Err(SpeechError::NothingToSay)));
    assert!(matches!(
        synthesize_mp3("<speak> <break time=\"1s\"/> </speak>"),
        Err(SpeechError::NothingToSay)
    ));
}

#[test]
fn ssml_markup_is_stripped() {
    assert_eq!(
        parse_ssml("<speak>Fish &amp; chips<break time=\"250ms\"/>please</speak>"),
        vec![
            Segment::Text("Fish & chips".into()),
            Segment::Silence(Duration::from_millis(250)),
            Segment::Text("please".into()),
        ]
    );
    assert_eq!(
        parse_ssml("<speak><break strength='strong'/>hi</speak>"),
        vec![
            Segment::Silence(Duration::from_millis(700)),
            Segment::Text("hi".into())
        ]
    );
    assert_eq!(parse_ssml("a < b"), vec![Segment::Text("a < b".into())]);
    assert_eq!(
        ssml::parse_break_time("1.5s"),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(ssml::parse_break_time("20s"), Some(Duration::from_secs(10)));
    assert_eq!(ssml::parse_break_time("soon"), None);
}

#[test]
fn wav_from_a_pipe_is_read_to_its_end() {
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&0x7fff_f024u32.to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&22_050u32.to_le_bytes());
    wav.extend_from_slice(&44_100u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&0x7fff_f000u32.to_le_bytes());
    for s in [1i16, -2, 300] {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    assert_eq!(parse_wav(&wav).unwrap(), (vec![1, -2, 300], 22_050));
    assert!(matches!(parse_wav(b"RIFX"), Err(SpeechError::BadWav(_))));
}

#[test]
fn linear_resampling_keeps_duration_and_shape() {
    let ramp: Vec<i16> = (0..2205).map(|i| i as i16).collect();
    let up = resample_linear(&ramp, 22_050, 24_000);
    assert_eq!(up.len(), 2400);
    assert!(up.windows(2).all(|w| w[1] >= w[0]));
    assert_eq!(resample_linear(&ramp, 48_000, 16_000).len(), 735);
}

#[test]
fn garbage_is_not_an_mp3() {
    assert!(decode_mp3(b"definitely not audio").is_err());
}
