//! Multi-turn: ExpectSpeech reopens the microphone after the question has been spoken, as a new
//! Recognize with a fresh dialogRequestId and the ExpectSpeech's initiator (none here).

mod common;

use std::time::Duration;

use avsd::dialog::DialogCommand;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_speech_opens_a_new_recognize_after_the_question() {
    let sim = sim("[[turn]]\nfinal_speech = \"Which city do you mean?\"\nexpect_speech_timeout_ms = 8000\n\n[[turn]]\nreject = true\n").await;
    let dir = test_dir("expect-speech");
    let input = format!("wav:{}", utterance_path().display());
    let output = format!("wav:{}", dir.join("out.wav").display());
    let device = start_device(config(&sim, &dir, &input, &output)).await;
    device.daemon.dialog.commands.send(DialogCommand::Listen).await.expect("listen");
    wait_events(&sim, "SpeechRecognizer.Recognize", 2, Duration::from_secs(30)).await;
    device.stop().await;

    let recognizes = sim.recorder.events("SpeechRecognizer.Recognize");
    let first = recognizes[0].event.as_ref().expect("event");
    let second = recognizes[1].event.as_ref().expect("event");
    assert_ne!(first.dialog_request_id, second.dialog_request_id, "a fresh dialogRequestId");
    assert_eq!(first.payload["initiator"]["type"], "TAP");
    assert!(
        second.payload.get("initiator").is_none(),
        "ExpectSpeech had no initiator, so the answer must carry none: {}",
        second.payload
    );
    let finished = sim.recorder.events("SpeechSynthesizer.SpeechFinished");
    assert!(!finished.is_empty(), "the question was spoken");
    assert!(finished[0].seq < recognizes[1].seq, "the mic reopens only after the question ends");
}
