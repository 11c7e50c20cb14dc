//! A Recognize streamed in real time: StopCapture at the end of speech, then the answer with
//! real MP3 speech; PRESS_AND_HOLD waits for the upload; StopCapture on the event stream
//! when switched; the audio is recorded as WAV.
// Integration tests: helpers panic on failure like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use avs_sim::SimConfig;
use avs_testkit::h2client::ReceivedPart;
use avs_testkit::sim::start_sim;
use common::*;

const INTERIM: &str = "Let me check.";
const FINAL: &str = "Here is the answer from the simulator.";

#[tokio::test]
async fn stop_capture_at_end_of_speech_then_answer_with_real_mp3() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let mut dev = connect_device(&sim, "SN-REC-1").await;
    let (audio, speech_end) = utterance("What time is it in Paris?", 500, 4000);
    let mut s = stream_recognize(&mut dev, "dlg-1", "TAP", &audio, true).await;

    let stop_at = s.stop_capture_at.expect("StopCapture on the downchannel");
    assert!(
        stop_at > speech_end + Duration::from_millis(300)
            && stop_at < speech_end + Duration::from_millis(1500),
        "StopCapture at {stop_at:?} of audio, speech ended at {speech_end:?}"
    );
    let stop = s.stop_capture_part.as_ref().unwrap();
    let ReceivedPart::Directive(v) = stop else {
        panic!("{stop:?}")
    };
    assert_eq!(v["directive"]["header"]["dialogRequestId"], "dlg-1");
    assert_eq!(v["directive"]["payload"], serde_json::json!({}));

    let resp = s.event.response().await.unwrap();
    assert_eq!(resp.status, 200);
    let parts = resp.parts().unwrap().collect().await.unwrap();
    assert_eq!(parts.len(), 4, "{parts:?}");
    let names: Vec<_> = parts.iter().filter_map(|p| p.directive_name()).collect();
    assert_eq!(
        names,
        ["SpeechSynthesizer.Speak", "SpeechSynthesizer.Speak"]
    );
    for (i, text) in [(0, INTERIM), (2, FINAL)] {
        let ReceivedPart::Directive(d) = &parts[i] else {
            panic!()
        };
        let p = &d["directive"]["payload"];
        assert_eq!(d["directive"]["header"]["dialogRequestId"], "dlg-1");
        assert_eq!(p["format"], "AUDIO_MPEG");
        assert_eq!(p["playBehavior"], "ENQUEUE");
        let cid = p["url"].as_str().unwrap().strip_prefix("cid:").unwrap();
        let ReceivedPart::Attachment { content_id, bytes } = &parts[i + 1] else {
            panic!()
        };
        assert_eq!(content_id.as_deref(), Some(cid));
        let got = mp3_duration(bytes);
        let want = speech_duration(text);
        let diff = got.abs_diff(want);
        assert!(
            diff < Duration::from_millis(80),
            "{text}: MP3 lasts {got:?}, speech {want:?}"
        );
        assert!(got > Duration::from_millis(400));
    }
    let sent = s.event.upload.await.unwrap().unwrap();
    assert!(sent < audio.len(), "the upload stopped at StopCapture");
    let rec = sim
        .recorder
        .wait_for(0, Duration::from_secs(5), "Recognize with audio", |r| {
            r.event.as_ref().is_some_and(|e| e.name == "Recognize") && r.audio_wav.is_some()
        })
        .await
        .unwrap();
    assert_eq!(rec.status, Some(200));
    let wav = hound::WavReader::open(rec.audio_wav.unwrap()).unwrap();
    assert_eq!(wav.spec().sample_rate, 16_000);
    assert_eq!(wav.spec().channels, 1);
    assert_eq!(wav.len() as usize * 2, sent);
}

#[tokio::test]
async fn press_and_hold_waits_for_the_upload_to_end() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let mut dev = connect_device(&sim, "SN-REC-2").await;
    let (audio, _) = utterance("Turn it up.", 300, 1500);
    let mut s = stream_recognize(&mut dev, "dlg-pah", "PRESS_AND_HOLD", &audio, true).await;
    assert!(
        s.stop_capture_at.is_none(),
        "no StopCapture for PRESS_AND_HOLD"
    );
    assert_eq!(s.audio_bytes_sent, audio.len());
    let resp = s.event.response().await.unwrap();
    assert_eq!(resp.status, 200);
    let parts = resp.parts().unwrap().collect().await.unwrap();
    assert_eq!(parts.iter().filter_map(|p| p.directive_name()).count(), 2);
    assert!(
        next_downchannel(&mut dev, Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn stop_capture_on_the_event_stream_when_switched() {
    let sim = start_sim(SimConfig {
        stop_capture_on_event_stream: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut dev = connect_device(&sim, "SN-REC-3").await;
    let (audio, _) = utterance("What is the weather?", 300, 3000);
    let s = stream_recognize(&mut dev, "dlg-ev", "WAKEWORD", &audio, false).await;
    // The whole utterance was offered; the StopCapture is the first part of the response.
    let mut event = s.event;
    let resp = event.response().await.unwrap();
    assert_eq!(resp.status, 200);
    let parts = resp.parts().unwrap().collect().await.unwrap();
    assert_eq!(
        parts[0].directive_name().as_deref(),
        Some("SpeechRecognizer.StopCapture")
    );
    assert_eq!(parts.iter().filter_map(|p| p.directive_name()).count(), 3);
    assert!(
        next_downchannel(&mut dev, Duration::from_millis(200))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn silence_only_is_answered_with_204() {
    let sim = start_sim(SimConfig {
        max_recognize_audio: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut dev = connect_device(&sim, "SN-REC-4").await;
    let audio = vec![0u8; 32_000 * 3];
    let mut s = stream_recognize(&mut dev, "dlg-silent", "TAP", &audio, true).await;
    assert!(s.stop_capture_at.is_some(), "the cap ends capture");
    let resp = s.event.response().await.unwrap();
    assert_eq!(resp.status, 204);
}
