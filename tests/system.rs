//! System-level behaviour end to end against avs-sim (wav-backed audio, no sound card needed):
//! unknown and malformed directives, volume, alerts offline and after a restart.

mod common;

use std::time::Duration;

use avsd::dialog::{DialogCommand, DialogStep};
use common::*;
use serde_json::json;

const NO_ANSWER: &str = "[[turn]]\nreject = true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_directives_get_exception_encountered() {
    let sim = sim(NO_ANSWER).await;
    let dir = test_dir("exceptions");
    let out = format!("wav:{}", dir.join("out.wav").display());
    let device = start_device(config(&sim, &dir, "none", &out)).await;

    let unknown = json!({"directive": {"header": {"namespace": "Bogus", "name": "DoThing", "messageId": "u-1"}, "payload": {}}}).to_string();
    sim.admin
        .push(None, unknown.clone())
        .await
        .expect("push unknown");
    let e = sim
        .recorder
        .wait_for_event("System.ExceptionEncountered", Duration::from_secs(5))
        .await
        .expect("exception for unknown");
    let payload = &e.event.as_ref().expect("event").payload;
    assert_eq!(payload["error"]["type"], "UNSUPPORTED_OPERATION");
    assert_eq!(payload["unparsedDirective"], unknown);

    let malformed = r#"{"directive":{"header":{"namespace":"Speaker","name":"SetVolume","messageId":"m-2"},"payload":{"volume":"loud"}}}"#;
    sim.admin
        .push(None, malformed.to_owned())
        .await
        .expect("push malformed");
    let e = sim
        .recorder
        .wait_for_event_after(
            e.seq + 1,
            "System.ExceptionEncountered",
            Duration::from_secs(5),
        )
        .await
        .expect("exception for malformed");
    let payload = &e.event.as_ref().expect("event").payload;
    assert_eq!(payload["error"]["type"], "UNEXPECTED_INFORMATION_RECEIVED");
    assert_eq!(payload["unparsedDirective"], malformed);
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_directives_are_reported_and_persisted() {
    let sim = sim(NO_ANSWER).await;
    let dir = test_dir("volume");
    let out = format!("wav:{}", dir.join("out.wav").display());
    let mut device = start_device(config(&sim, &dir, "none", &out)).await;
    let set = json!({"directive": {"header": {"namespace": "Speaker", "name": "SetVolume", "messageId": "v-1"}, "payload": {"volume": 33}}});
    sim.admin.push(None, set.to_string()).await.expect("push");
    let e = sim
        .recorder
        .wait_for_event("Speaker.VolumeChanged", Duration::from_secs(5))
        .await
        .expect("VolumeChanged");
    assert_eq!(
        e.event.as_ref().expect("event").payload,
        json!({"volume": 33, "muted": false})
    );
    device
        .daemon
        .dialog
        .commands
        .send(DialogCommand::Volume(
            avsd::agents::speaker::VolumeCommand::Mute(true),
        ))
        .await
        .expect("mute");
    let e2 = sim
        .recorder
        .wait_for_event("Speaker.MuteChanged", Duration::from_secs(5))
        .await
        .expect("MuteChanged");
    assert_eq!(
        e2.event.as_ref().expect("event").payload,
        json!({"volume": 33, "muted": true})
    );
    device
        .wait_step("volume step", Duration::from_secs(2), |s| {
            matches!(s, DialogStep::VolumeChanged { muted: true, .. })
        })
        .await;
    let config_again = config(&sim, &dir, "none", &out);
    device.stop().await;

    // A restart keeps the volume: the first SynchronizeState carries it.
    let before = sim.recorder.records().len();
    let device = start_device(config_again).await;
    let sync = sim
        .recorder
        .wait_for(before, Duration::from_secs(5), "SynchronizeState", |r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.name == "SynchronizeState")
        })
        .await
        .expect("sync");
    assert!(sync.event.expect("event").has_context);
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("state/speaker.json")).expect("speaker.json"),
    )
    .expect("json");
    assert_eq!(stored, json!({"volume": 33, "muted": true}));
    device.stop().await;
}
