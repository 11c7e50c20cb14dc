//! Helpers shared by the sim's integration tests: a device (token, h2 connection, downchannel
//! reader), speech-like utterances, Recognize streaming paced in real time, MP3 decoding with
//! symphonia.
// Test helpers panic on failure like the tests that call them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use avs_testkit::h2client::{H2Client, ReceivedPart, StreamingEvent, event_json};
use avs_testkit::sim::TestSim;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

/// A device connected to the sim with its downchannel open.
pub struct Device {
    pub serial: String,
    pub token: String,
    pub client: H2Client,
    /// Downchannel parts with their arrival time.
    pub downchannel: mpsc::Receiver<(Instant, ReceivedPart)>,
}

pub async fn connect_device(sim: &TestSim, serial: &str) -> Device {
    let token = sim.token(serial);
    let mut client = sim.client().await.unwrap();
    let resp = client.open_downchannel(&token).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.content_type()
            .unwrap()
            .starts_with("multipart/related")
    );
    let mut parts = resp.parts().unwrap();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Ok(Some(p)) = parts.next().await {
            if tx.send((Instant::now(), p)).await.is_err() {
                break;
            }
        }
    });
    // The sim registers the downchannel before recording it.
    sim.recorder
        .wait_for(0, Duration::from_secs(5), "downchannel", |r| {
            r.path == avs_proto::DIRECTIVES_PATH
                && r.status == Some(200)
                && r.device.as_deref() == Some(serial)
        })
        .await
        .unwrap();
    Device {
        serial: serial.to_owned(),
        token,
        client,
        downchannel: rx,
    }
}

/// Next downchannel directive within `timeout`.
pub async fn next_downchannel(
    dev: &mut Device,
    timeout: Duration,
) -> Option<(Instant, ReceivedPart)> {
    tokio::time::timeout(timeout, dev.downchannel.recv())
        .await
        .ok()
        .flatten()
}

/// 16 kHz mono speech for `text` (the sim's voice, resampled) with silence around it; returns
/// little-endian bytes and where the speech ends in the audio.
pub fn utterance(text: &str, lead_ms: u64, trail_ms: u64) -> (Vec<u8>, Duration) {
    let (pcm, rate) = avs_sim::speech::synthesize_pcm(text).unwrap();
    let speech = avs_sim::speech::resample_linear(&pcm, rate, 16_000);
    let lead = vec![0i16; (lead_ms * 16) as usize];
    let trail = vec![0i16; (trail_ms * 16) as usize];
    let last_loud = speech
        .iter()
        .rposition(|s| s.unsigned_abs() > 300)
        .unwrap_or(speech.len());
    let speech_end = Duration::from_secs_f64((lead.len() + last_loud) as f64 / 16_000.0);
    // A little noise so the audio is not digital silence.
    let mut seed = 12345u32;
    let samples: Vec<u8> = lead
        .iter()
        .chain(speech.iter())
        .chain(trail.iter())
        .flat_map(|s| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let noise = ((seed >> 16) % 41) as i16 - 20;
            s.saturating_add(noise).to_le_bytes()
        })
        .collect();
    (samples, speech_end)
}

pub fn recognize_json(dialog: &str, initiator: &str) -> String {
    avs_proto::Event::raw(
        "SpeechRecognizer",
        "Recognize",
        json!({
            "profile": if initiator == "PRESS_AND_HOLD" { "CLOSE_TALK" } else { "NEAR_FIELD" },
            "format": "AUDIO_L16_RATE_16000_CHANNELS_1",
            "initiator": {"type": initiator, "payload": {}},
        }),
    )
    .with_dialog(Some(dialog.to_owned()))
    .with_context(vec![avs_proto::ContextEntry::volume_state(40, false)])
    .to_json()
}

pub fn event(namespace: &str, name: &str, payload: serde_json::Value) -> String {
    event_json(namespace, name, payload)
}

/// What streaming a Recognize produced.
pub struct Streamed {
    pub event: StreamingEvent,
    /// Audio position when StopCapture arrived on the downchannel, if it did.
    pub stop_capture_at: Option<Duration>,
    pub stop_capture_part: Option<ReceivedPart>,
    pub audio_bytes_sent: usize,
}

impl Streamed {
    /// Every part of the Recognize's response, once it has ended.
    pub async fn response_parts(&mut self) -> Vec<ReceivedPart> {
        self.event
            .response()
            .await
            .unwrap()
            .parts()
            .unwrap()
            .collect()
            .await
            .unwrap()
    }
}

/// The `Namespace.Name` of each directive among `parts`, in order.
pub fn directive_names(parts: &[ReceivedPart]) -> Vec<String> {
    parts.iter().filter_map(|p| p.directive_name()).collect()
}

/// Streams `audio` in 10 ms chunks (320 bytes) paced in real time, stopping early when a
/// StopCapture arrives on the downchannel (if `watch_downchannel`).
pub async fn stream_recognize(
    dev: &mut Device,
    dialog: &str,
    initiator: &str,
    audio: &[u8],
    watch_downchannel: bool,
) -> Streamed {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let token = dev.token.clone();
    let event = dev
        .client
        .post_event_streaming(&token, &recognize_json(dialog, initiator), rx)
        .await
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0usize;
    let mut stop_capture_at = None;
    let mut stop_capture_part = None;
    for chunk in audio.chunks(320) {
        tokio::select! {
            _ = tick.tick() => {
                tx.send(Bytes::copy_from_slice(chunk)).await.unwrap();
                sent += chunk.len();
            }
            Some((_, part)) = dev.downchannel.recv(), if watch_downchannel => {
                if part.directive_name().as_deref() == Some("SpeechRecognizer.StopCapture") {
                    stop_capture_at = Some(Duration::from_secs_f64(sent as f64 / 32_000.0));
                    stop_capture_part = Some(part);
                    break;
                }
            }
        }
    }
    drop(tx);
    Streamed {
        event,
        stop_capture_at,
        stop_capture_part,
        audio_bytes_sent: sent,
    }
}

/// Decodes an MP3 with symphonia; returns its duration.
pub fn mp3_duration(mp3: &[u8]) -> Duration {
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
    use symphonia::core::meta::MetadataOptions;

    let mss = MediaSourceStream::new(
        Box::new(std::io::Cursor::new(mp3.to_vec())),
        MediaSourceStreamOptions::default(),
    );
    let mut hint = Hint::new();
    hint.with_extension("mp3");
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .unwrap();
    let track = format.default_track(TrackType::Audio).unwrap();
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .unwrap()
        .audio()
        .unwrap()
        .clone();
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .unwrap();
    let mut frames = 0usize;
    let mut rate = 0u32;
    while let Some(packet) = format.next_packet().unwrap() {
        if packet.track_id != track_id {
            continue;
        }
        let buf = decoder.decode(&packet).unwrap();
        rate = buf.spec().rate();
        frames += buf.frames();
    }
    assert!(rate > 0);
    Duration::from_secs_f64(frames as f64 / f64::from(rate))
}

/// Expected duration of the sim's speech for `text`.
pub fn speech_duration(text: &str) -> Duration {
    let (pcm, rate) = avs_sim::speech::synthesize_pcm(text).unwrap();
    Duration::from_secs_f64(pcm.len() as f64 / f64::from(rate))
}
