//! Energy-based end-of-speech detection on streamed Recognize audio (16 kHz mono s16le).
//!
//! Owns: cutting arbitrary chunks into fixed frames, the adaptive noise floor, and the decision
//! "speech started" / "speech ended". Time is counted in audio samples, never wall clock, so a
//! test that pushes ten seconds of audio at once gets the same answer as a device streaming it in
//! real time. Does not own what happens on a decision (StopCapture, answering the turn): the
//! caller acts on the returned [`VadEvent`].

use std::time::Duration;

/// Sample rate of Recognize audio (`AUDIO_L16_RATE_16000_CHANNELS_1`).
pub const SAMPLE_RATE_HZ: u32 = 16_000;
/// Energy of digital silence, so `log10(0)` never appears.
const FLOOR_DBFS: f32 = -96.0;
/// Below this a frame is never speech, whatever the noise floor: keeps dither and near-silence
/// from being "12 dB above" an all-zero floor.
const MIN_SPEECH_DBFS: f32 = -55.0;
/// Once in speech, frames this much below the start threshold still count as voiced, so soft
/// word endings do not start the trailing-silence clock early.
const HYSTERESIS_DB: f32 = 4.0;
/// How fast the floor rises towards louder frames outside speech (per frame, in dB fraction):
/// about a second to follow a noise that got louder, slow enough not to swallow a word.
const FLOOR_RISE: f32 = 0.01;
/// The same, during speech: the floor must not climb into the speech level.
const FLOOR_RISE_IN_SPEECH: f32 = 0.0005;
/// A voiced run before `min_speech` is reached may contain gaps this long (between syllables).
const START_GAP: Duration = Duration::from_millis(100);

/// Settings of the [`EndOfSpeechDetector`].
#[derive(Debug, Clone, PartialEq)]
pub struct VadConfig {
    /// Analysis frame length.
    pub frame: Duration,
    /// How far above the noise floor a frame must be to count as speech.
    pub threshold_db: f32,
    /// Voiced audio needed before speech counts as started (rejects clicks and coughs).
    pub min_speech: Duration,
    /// Silence after speech that ends the utterance.
    pub trailing_silence: Duration,
    /// Hard cap from the start of the audio: the utterance ends here whatever was heard.
    pub max_utterance: Duration,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            frame: Duration::from_millis(10),
            threshold_db: 12.0,
            min_speech: Duration::from_millis(100),
            trailing_silence: Duration::from_millis(600),
            max_utterance: Duration::from_secs(10),
        }
    }
}

/// A decision, stamped with its position in the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began at `at` (the start of its first voiced frame).
    SpeechStarted { at: Duration },
    /// The utterance is over at `at`: trailing silence elapsed, or the cap was reached.
    EndOfSpeech { at: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// No speech yet; `run_start`/`run_voiced` track a candidate voiced run.
    Waiting {
        run_start: Option<u64>,
        run_voiced: u64,
        last_voiced: u64,
    },
    /// In speech since `started`; `last_voiced` is the end of the latest voiced frame (samples).
    Speaking {
        last_voiced: u64,
    },
    Ended,
}

/// Finds the end of an utterance in a stream of 16 kHz mono s16le chunks.
///
/// [`push`](Self::push) returns at most one event. When a chunk holds more than one decision
/// (say, a whole utterance at once), the rest of the chunk is kept: call `push(&[])` until it
/// returns `None` to drain it. After `EndOfSpeech` every push returns `None`.
#[derive(Debug)]
pub struct EndOfSpeechDetector {
    cfg: VadConfig,
    frame_samples: usize,
    /// Bytes not yet analysed (a partial frame, or what follows an event).
    pending: Vec<u8>,
    /// Samples analysed so far: the detector's clock.
    position: u64,
    noise_floor_db: Option<f32>,
    state: State,
    speech_started: Option<Duration>,
}

impl EndOfSpeechDetector {
    pub fn new(cfg: VadConfig) -> Self {
        let frame_samples =
            ((cfg.frame.as_secs_f64() * f64::from(SAMPLE_RATE_HZ)).round() as usize).max(1);
        Self {
            cfg,
            frame_samples,
            pending: Vec::new(),
            position: 0,
            noise_floor_db: None,
            state: State::Waiting {
                run_start: None,
                run_voiced: 0,
                last_voiced: 0,
            },
            speech_started: None,
        }
    }

    /// Feeds audio (any length, may split samples) and returns the next decision, if any.
    pub fn push(&mut self, pcm_s16le: &[u8]) -> Option<VadEvent> {
        if self.state == State::Ended {
            return None;
        }
        self.pending.extend_from_slice(pcm_s16le);
        let frame_bytes = self.frame_samples * 2;
        let mut consumed = 0;
        let mut event = None;
        while self.pending.len() - consumed >= frame_bytes {
            let frame = &self.pending[consumed..consumed + frame_bytes];
            let energy = frame_energy_db(frame);
            consumed += frame_bytes;
            event = self.on_frame(energy);
            if event.is_some() {
                break;
            }
        }
        self.pending.drain(..consumed);
        if self.state == State::Ended {
            self.pending = Vec::new();
        }
        event
    }

    /// Audio analysed so far.
    pub fn position(&self) -> Duration {
        self.samples_to_duration(self.position)
    }

    /// When speech started, if it did.
    pub fn speech_started(&self) -> Option<Duration> {
        self.speech_started
    }

    /// Whether `EndOfSpeech` was reported.
    pub fn is_ended(&self) -> bool {
        self.state == State::Ended
    }

    /// The current noise floor estimate, dBFS.
    pub fn noise_floor_db(&self) -> Option<f32> {
        self.noise_floor_db
    }

    fn on_frame(&mut self, energy_db: f32) -> Option<VadEvent> {
        let frame_start = self.position;
        self.position += self.frame_samples as u64;
        let now = self.position;
        let in_speech = matches!(self.state, State::Speaking { .. });
        let floor = self.update_floor(energy_db, in_speech);
        let threshold = if in_speech {
            self.cfg.threshold_db - HYSTERESIS_DB
        } else {
            self.cfg.threshold_db
        };
        let voiced = energy_db >= MIN_SPEECH_DBFS && energy_db >= floor + threshold;

        if self.samples_to_duration(now) >= self.cfg.max_utterance {
            self.state = State::Ended;
            return Some(VadEvent::EndOfSpeech {
                at: self.samples_to_duration(now),
            });
        }

        match self.state {
            State::Waiting {
                run_start,
                run_voiced,
                last_voiced,
            } => {
                if !voiced {
                    let gap = self.samples_to_duration(now.saturating_sub(last_voiced));
                    if run_start.is_some() && gap > START_GAP {
                        self.state = State::Waiting {
                            run_start: None,
                            run_voiced: 0,
                            last_voiced,
                        };
                    }
                    return None;
                }
                let start = run_start.unwrap_or(frame_start);
                let run_voiced = run_voiced + self.frame_samples as u64;
                if self.samples_to_duration(run_voiced) >= self.cfg.min_speech {
                    let at = self.samples_to_duration(start);
                    self.speech_started = Some(at);
                    self.state = State::Speaking { last_voiced: now };
                    return Some(VadEvent::SpeechStarted { at });
                }
                self.state = State::Waiting {
                    run_start: Some(start),
                    run_voiced,
                    last_voiced: now,
                };
                None
            }
            State::Speaking { last_voiced } => {
                if voiced {
                    self.state = State::Speaking { last_voiced: now };
                    return None;
                }
                if self.samples_to_duration(now - last_voiced) >= self.cfg.trailing_silence {
                    self.state = State::Ended;
                    return Some(VadEvent::EndOfSpeech {
                        at: self.samples_to_duration(now),
                    });
                }
                None
            }
            State::Ended => None,
        }
    }

    /// Minimum tracking: the floor drops at once to a quieter frame and creeps up towards louder
    /// ones, so it settles on the pauses between words rather than on the words.
    fn update_floor(&mut self, energy_db: f32, in_speech: bool) -> f32 {
        let floor = match self.noise_floor_db {
            None => energy_db,
            Some(floor) if energy_db < floor => energy_db,
            Some(floor) => {
                let rise = if in_speech {
                    FLOOR_RISE_IN_SPEECH
                } else {
                    FLOOR_RISE
                };
                floor + (energy_db - floor) * rise
            }
        };
        self.noise_floor_db = Some(floor);
        floor
    }

    fn samples_to_duration(&self, samples: u64) -> Duration {
        Duration::from_micros(samples * 1_000_000 / u64::from(SAMPLE_RATE_HZ))
    }
}

/// Mean energy of one frame of s16le samples, in dB relative to full scale.
fn frame_energy_db(frame: &[u8]) -> f32 {
    let (sum, count) = frame.chunks_exact(2).fold((0.0f64, 0usize), |(sum, n), b| {
        let s = f64::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0;
        (sum + s * s, n + 1)
    });
    if count == 0 || sum <= 0.0 {
        return FLOOR_DBFS;
    }
    ((10.0 * (sum / count as f64).log10()) as f32).max(FLOOR_DBFS)
}

#[cfg(test)]
mod tests;
