//! The built-in voice: formant-filtered harmonic tones, one per syllable, with noise bursts for
//! consonants and a falling (or, for questions, rising) pitch contour. Not intelligible, but it
//! has speech's rhythm, spectrum and energy envelope, which is what VAD, decoders and players care
//! about, and it is a pure function of the text.

use super::SAMPLE_RATE_HZ;
use super::ssml::Segment;
use std::f64::consts::TAU;
use std::time::Duration;

const RATE: f64 = SAMPLE_RATE_HZ as f64;
const PEAK: f64 = 0.6 * i16::MAX as f64;
const GAIN_REFRESH_SAMPLES: usize = 48;
/// Harmonics above this carry no voice energy worth synthesizing.
const VOICE_BANDWIDTH_HZ: f64 = 4000.0;

/// A sound to render: voiced with formants, or noise.
enum Sound {
    Voiced {
        formants: [f64; 3],
        length: Duration,
        stress: f64,
    },
    Noise {
        length: Duration,
        bright: bool,
    },
    Pause(Duration),
}

pub(super) fn render(segments: &[Segment]) -> Vec<i16> {
    let mut sounds = vec![Sound::Pause(Duration::from_millis(60))];
    let mut question = false;
    for segment in segments {
        match segment {
            Segment::Silence(d) => sounds.push(Sound::Pause(*d)),
            Segment::Text(text) => {
                question = text.trim_end().ends_with('?');
                plan_text(text, &mut sounds);
            }
        }
    }
    sounds.push(Sound::Pause(Duration::from_millis(60)));
    synthesize(&sounds, seed(segments), question)
}

fn seed(segments: &[Segment]) -> u64 {
    // FNV-1a: stable across platforms and releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for segment in segments {
        let bytes: Vec<u8> = match segment {
            Segment::Text(t) => t.bytes().collect(),
            Segment::Silence(d) => d.as_millis().to_le_bytes().to_vec(),
        };
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn vowel_formants(c: char) -> Option<[f64; 3]> {
    Some(match c {
        'a' => [730.0, 1090.0, 2440.0],
        'e' => [530.0, 1840.0, 2480.0],
        'i' => [270.0, 2290.0, 3010.0],
        'o' => [570.0, 840.0, 2410.0],
        'u' => [300.0, 870.0, 2240.0],
        'y' => [400.0, 1900.0, 2600.0],
        _ => return None,
    })
}

fn plan_text(text: &str, sounds: &mut Vec<Sound>) {
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() || c == '\'' {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            plan_word(&std::mem::take(&mut word), sounds);
            sounds.push(Sound::Pause(Duration::from_millis(45)));
        }
        let pause = match c {
            ',' | ';' | ':' | '-' => 180,
            '.' | '!' | '?' => 330,
            _ => 0,
        };
        if pause > 0 {
            sounds.push(Sound::Pause(Duration::from_millis(pause)));
        }
    }
}

fn plan_word(word: &str, sounds: &mut Vec<Sound>) {
    // Digits read as a syllable each, with a vowel picked from the digit.
    let spelled: String = word
        .chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => [
                "zi", "wa", "tu", "thri", "fo", "fai", "siks", "se", "eit", "nai",
            ][d as usize]
                .to_owned(),
            None => c.to_string(),
        })
        .collect();
    let chars: Vec<char> = spelled.chars().collect();
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        while i < chars.len() && vowel_formants(chars[i]).is_none() {
            let c = chars[i];
            if c.is_alphabetic() {
                sounds.push(consonant(c));
            }
            i += 1;
        }
        let start = i;
        while i < chars.len() && vowel_formants(chars[i]).is_some() {
            i += 1;
        }
        if start < i {
            let vowels = &chars[start..i];
            let a = vowel_formants(vowels[0]).unwrap_or([500.0, 1500.0, 2500.0]);
            let b = vowel_formants(vowels[vowels.len() - 1]).unwrap_or(a);
            let mix = |k: usize| (a[k] + b[k]) / 2.0;
            sounds.push(Sound::Voiced {
                formants: [mix(0), mix(1), mix(2)],
                length: Duration::from_millis(95 + 35 * (vowels.len() as u64 - 1).min(2)),
                stress: if first { 1.0 } else { 0.75 },
            });
            first = false;
        }
    }
}

fn consonant(c: char) -> Sound {
    match c {
        's' | 'z' | 'c' | 'x' => Sound::Noise {
            length: Duration::from_millis(70),
            bright: true,
        },
        'f' | 'h' | 'v' | 'j' | 'q' => Sound::Noise {
            length: Duration::from_millis(55),
            bright: false,
        },
        'p' | 't' | 'k' | 'b' | 'd' | 'g' => Sound::Noise {
            length: Duration::from_millis(22),
            bright: true,
        },
        'm' | 'n' => Sound::Voiced {
            formants: [280.0, 1100.0, 2300.0],
            length: Duration::from_millis(55),
            stress: 0.45,
        },
        _ => Sound::Voiced {
            formants: [360.0, 1300.0, 2200.0],
            length: Duration::from_millis(50),
            stress: 0.55,
        },
    }
}

fn synthesize(sounds: &[Sound], seed: u64, question: bool) -> Vec<i16> {
    let total: Duration = sounds
        .iter()
        .map(|s| match s {
            Sound::Voiced { length, .. } | Sound::Noise { length, .. } | Sound::Pause(length) => {
                *length
            }
        })
        .sum();
    let total_samples = (total.as_secs_f64() * RATE).ceil() as usize;
    let mut out = Vec::with_capacity(total_samples);
    let mut rng = seed | 1;
    let mut phase = 0.0f64;
    let mut highpass_prev = 0.0f64;
    let mut syllable = 0u64;
    for sound in sounds {
        match sound {
            Sound::Pause(d) => out.extend(std::iter::repeat_n(0.0, samples(*d))),
            Sound::Noise { length, bright } => {
                let n = samples(*length);
                for i in 0..n {
                    let white = next_noise(&mut rng);
                    let shaped = if *bright {
                        let hp = white - highpass_prev;
                        highpass_prev = white;
                        hp * 0.5
                    } else {
                        highpass_prev = 0.6 * highpass_prev + 0.4 * white;
                        highpass_prev
                    };
                    out.push(shaped * 0.18 * envelope(i, n));
                }
            }
            Sound::Voiced {
                formants,
                length,
                stress,
            } => {
                syllable += 1;
                let n = samples(*length);
                // Per-syllable pitch jitter from the text's seed keeps texts distinct.
                let jitter = ((seed.rotate_left((syllable % 64) as u32) % 31) as f64) - 15.0;
                let mut gains: Vec<f64> = Vec::new();
                for i in 0..n {
                    let progress = out.len() as f64 / total_samples.max(1) as f64;
                    let contour = if question && progress > 0.7 {
                        (progress - 0.7) * 150.0
                    } else {
                        -35.0 * progress
                    };
                    let f0 = 135.0 + contour + jitter * stress;
                    phase = (phase + TAU * f0 / RATE) % TAU;
                    // The formant weights move with f0 only slowly: refresh them every 2 ms.
                    if i % GAIN_REFRESH_SAMPLES == 0 {
                        harmonic_gains(formants, f0, &mut gains);
                    }
                    // sin(k*phase) by the Chebyshev recurrence: one sin/cos per sample.
                    let (sin1, cos1) = phase.sin_cos();
                    let (mut prev, mut current) = (0.0, sin1);
                    let mut value = 0.0;
                    for gain in &gains {
                        value += gain * current;
                        let next = 2.0 * cos1 * current - prev;
                        prev = current;
                        current = next;
                    }
                    out.push(value * 0.25 * stress * envelope(i, n));
                }
            }
        }
    }
    let peak = out.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-9);
    out.iter()
        .map(|v| (v / peak * PEAK).round() as i16)
        .collect()
}

/// Weight of each harmonic of `f0` (1/sqrt(k) spectral tilt times the formant resonances).
fn harmonic_gains(formants: &[f64; 3], f0: f64, gains: &mut Vec<f64>) {
    gains.clear();
    let mut k = 1.0;
    while k * f0 < VOICE_BANDWIDTH_HZ {
        let freq = k * f0;
        let resonance: f64 = formants
            .iter()
            .zip([1.0, 0.6, 0.25])
            .map(|(f, g)| g / (1.0 + ((freq - f) / (60.0 + f * 0.08)).powi(2)))
            .sum();
        gains.push(resonance / k.sqrt());
        k += 1.0;
    }
}

fn samples(d: Duration) -> usize {
    (d.as_secs_f64() * RATE).round() as usize
}

/// 8 ms raised-cosine ramps so sounds start and stop without clicks.
fn envelope(i: usize, n: usize) -> f64 {
    let ramp = (0.008 * RATE) as usize;
    let edge = i.min(n.saturating_sub(i + 1));
    if edge >= ramp {
        1.0
    } else {
        0.5 - 0.5 * (std::f64::consts::PI * edge as f64 / ramp as f64).cos()
    }
}

/// xorshift64*: deterministic noise in [-1, 1).
fn next_noise(state: &mut u64) -> f64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
    v as f64 / (1u64 << 52) as f64 - 1.0
}
