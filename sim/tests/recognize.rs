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
    let names = directive_names(&parts);
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

#[tokio::test]
async fn audio_is_found_by_name_after_a_wakeword_metadata_part() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let mut dev = connect_device(&sim, "SN-REC-5").await;
    let (audio, _) = utterance("Alexa, what time is it?", 500, 1500);
    let w = avs_proto::multipart::FormDataWriter::new();
    let ct = w.content_type();
    let boundary = ct.split("boundary=").nth(1).unwrap().to_owned();
    let mut body = w.metadata(&recognize_json("dlg-ww", "WAKEWORD")).to_vec();
    body.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"wakewordEngineMetadata\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(&[0x7f; 999]);
    body.extend_from_slice(&w.audio_header());
    body.extend_from_slice(&audio);
    body.extend_from_slice(&w.finish());
    let token = dev.token.clone();
    let r = dev
        .client
        .send(
            http::Method::POST,
            avs_proto::EVENTS_PATH,
            Some(&token),
            Some(&ct),
            bytes::Bytes::from(body),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let parts = r.parts().unwrap().collect().await.unwrap();
    assert_eq!(parts.iter().filter_map(|p| p.directive_name()).count(), 2);
    let rec = sim
        .recorder
        .wait_for(0, Duration::from_secs(5), "Recognize audio", |r| {
            r.audio_wav.is_some()
        })
        .await
        .unwrap();
    let wav = hound::WavReader::open(rec.audio_wav.unwrap()).unwrap();
    assert_eq!(
        wav.len() as usize * 2,
        audio.len(),
        "only the audio part is audio"
    );
}

#[tokio::test]
async fn a_stalled_upload_still_gets_stop_capture() {
    let sim = start_sim(SimConfig {
        max_recognize_audio: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut dev = connect_device(&sim, "SN-REC-6").await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let token = dev.token.clone();
    let mut ev = dev
        .client
        .post_event_streaming(&token, &recognize_json("dlg-stall", "TAP"), rx)
        .await
        .unwrap();
    // 300 ms of quiet audio, then nothing, with the upload left open.
    tx.send(bytes::Bytes::from(vec![0u8; 9600])).await.unwrap();
    let (_, part) = next_downchannel(&mut dev, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        part.directive_name().as_deref(),
        Some("SpeechRecognizer.StopCapture")
    );
    assert_eq!(ev.response().await.unwrap().status, 204);
    drop(tx);
}
