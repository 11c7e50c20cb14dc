//! Multi-turn: ExpectSpeech reopens the microphone after the question has been spoken, as a new
//! Recognize with a fresh dialogRequestId and the ExpectSpeech's initiator (none here), which
//! reaches the cloud after the question's SpeechFinished.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use avsd::dialog::{DialogCommand, DialogStep};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_speech_opens_a_new_recognize_after_the_question() {
    let sim = sim("[[turn]]\nfinal_speech = \"Which city do you mean?\"\nexpect_speech_timeout_ms = 8000\n\n[[turn]]\nreject = true\n").await;
    let dir = test_dir("expect-speech");
    let mut device = start_device(utterance_config(&sim, &dir)).await;
    device.command(DialogCommand::Listen).await;
    device
        .wait_step("first Recognize", Duration::from_secs(5), |s| {
            matches!(s, DialogStep::RecognizeStarted { .. })
        })
        .await;
    let question_end = device
        .wait_step("question spoken", Duration::from_secs(30), |s| {
            matches!(s, DialogStep::SpeechFinished { .. })
        })
        .await;
    let reopened = device
        .wait_step("mic reopened", Duration::from_secs(10), |s| {
            matches!(s, DialogStep::RecognizeStarted { .. })
        })
        .await;
    assert!(
        reopened.at >= question_end.at,
        "the mic reopens only after the question ends"
    );
    wait_events(
        &sim,
        "SpeechRecognizer.Recognize",
        2,
        Duration::from_secs(30),
    )
    .await;
    device.stop().await;

    let recognizes = sim.recorder.events("SpeechRecognizer.Recognize");
    let first = recognizes[0].event.as_ref().expect("event");
    let second = recognizes[1].event.as_ref().expect("event");
    assert_ne!(
        first.dialog_request_id, second.dialog_request_id,
        "a fresh dialogRequestId"
    );
    assert_eq!(first.payload["initiator"]["type"], "TAP");
    assert!(
        second.payload.get("initiator").is_none(),
        "ExpectSpeech had no initiator, so the answer must carry none: {}",
        second.payload
    );
    wait_events(
        &sim,
        "SpeechSynthesizer.SpeechFinished",
        1,
        Duration::from_secs(5),
    )
    .await;
    // The cloud must learn that the question was spoken before the answer arrives: the
    // Recognize waits for the events queued before it.
    let finished = sim.recorder.events("SpeechSynthesizer.SpeechFinished");
    let recognizes = sim.recorder.events("SpeechRecognizer.Recognize");
    assert!(
        finished[0].seq < recognizes[1].seq,
        "SpeechFinished (record {}) must reach the cloud before the follow-up Recognize (record {})",
        finished[0].seq,
        recognizes[1].seq
    );
}
