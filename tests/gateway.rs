//! Gateway moves end to end: a real avsd daemon against a real avs-sim listening on two
//! addresses (same CA, same accounts), over TLS + HTTP/2. `Alexa.ApiGateway.SetGateway` (pushed,
//! or as the answer to VerifyGateway) and the legacy `System.SetEndpoint` move the device to
//! the second listener, which it keeps across a restart; a non-https endpoint is refused with
//! ExceptionEncountered and the connection stays.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use avs_sim::Record;
use avs_testkit::sim::TestSim;
use avsd::transport::LinkState;
use common::*;
use serde_json::{Value, json};

const NO_ANSWER: &str = "[[turn]]\nreject = true\n";
const WAIT: Duration = Duration::from_secs(15);

fn authority(url: &url::Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    )
}

/// Waits for a record made after `from` on `listener` that `pred` accepts.
async fn wait_on(
    sim: &TestSim,
    from: usize,
    listener: &str,
    what: &str,
    pred: impl Fn(&Record) -> bool,
) -> Record {
    sim.recorder
        .wait_for(from, WAIT, what, |r| {
            r.listener.as_deref() == Some(listener) && pred(r)
        })
        .await
        .unwrap_or_else(|e| panic!("{what} on {listener}: {e}"))
}

fn is_event(r: &Record, name: &str) -> bool {
    r.event.as_ref().is_some_and(|e| e.qualified_name() == name)
}

fn is_downchannel(r: &Record) -> bool {
    r.path == avs_proto::DIRECTIVES_PATH && r.status == Some(200)
}

fn stored_gateway(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("state/gateway.json")).expect("gateway.json"))
        .expect("json")
}

/// Waits until gateway.json satisfies `pred` (the link writes it on its own task).
async fn wait_stored(dir: &Path, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(bytes) = std::fs::read(dir.join("state/gateway.json"))
                && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
                && pred(&v)
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("gateway.json never {what}"))
}

async fn two_listener_sim() -> (TestSim, url::Url) {
    let mut sim = sim(NO_ANSWER).await;
    let second = sim.listen_also().await.expect("second listener");
    (sim, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_gateway_moves_the_device_and_a_restart_keeps_it_there() {
    let (sim, second) = two_listener_sim().await;
    let (first, second_auth) = (authority(&sim.url), authority(&second));
    let dir = test_dir("gw-set-gateway");
    let device = start_device(speaker_config(&sim, &dir)).await;
    wait_on(&sim, 0, &first, "VerifyGateway", |r| {
        is_event(r, "Alexa.ApiGateway.VerifyGateway") && r.status == Some(204)
    })
    .await;
    wait_stored(&dir, "verified", |v| v["verified"] == true).await;

    let before = sim.recorder.len();
    let pushed = sim
        .admin
        .push_set_gateway(None, second.as_str())
        .await
        .expect("push");
    assert_eq!(pushed, 1);
    wait_on(&sim, before, &second_auth, "downchannel", is_downchannel).await;
    wait_on(&sim, before, &second_auth, "VerifyGateway", |r| {
        is_event(r, "Alexa.ApiGateway.VerifyGateway") && r.status == Some(204)
    })
    .await;
    let mut link = device.daemon.link.clone();
    tokio::time::timeout(WAIT, link.wait_for(|s| *s == LinkState::Connected))
        .await
        .expect("connected again")
        .expect("link");
    let stored = stored_gateway(&dir);
    assert_eq!(stored["gateway"], second.as_str());
    assert_eq!(
        stored["configured"],
        sim.url.as_str(),
        "stored under the configured endpoint"
    );
    // Nothing more went to the first listener once the device moved.
    let moved_at = sim
        .recorder
        .records()
        .into_iter()
        .find(|r| r.seq >= before && r.listener.as_deref() == Some(second_auth.as_str()))
        .expect("a record on the second listener")
        .seq;
    assert!(
        sim.recorder
            .records()
            .iter()
            .filter(|r| r.seq > moved_at)
            .all(|r| r.listener.as_deref() != Some(first.as_str())),
        "traffic on the old gateway after the move"
    );
    device.stop().await;

    // A restart goes straight to the stored gateway and does not verify it again.
    let before = sim.recorder.len();
    let device = start_linked_device(speaker_config(&sim, &dir)).await;
    wait_on(
        &sim,
        before,
        &second_auth,
        "downchannel after restart",
        is_downchannel,
    )
    .await;
    wait_on(
        &sim,
        before,
        &second_auth,
        "SynchronizeState after restart",
        |r| is_event(r, "System.SynchronizeState"),
    )
    .await;
    let after: Vec<Record> = sim
        .recorder
        .records()
        .into_iter()
        .filter(|r| r.seq >= before)
        .collect();
    assert!(
        after
            .iter()
            .all(|r| r.listener.as_deref() != Some(first.as_str())),
        "the restarted device went to the configured endpoint: {after:?}"
    );
    assert!(
        !after
            .iter()
            .any(|r| is_event(r, "Alexa.ApiGateway.VerifyGateway")),
        "a verified gateway is not verified again"
    );
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_gateway_answered_with_set_gateway_moves_before_anything_else() {
    let (sim, second) = two_listener_sim().await;
    let (first, second_auth) = (authority(&sim.url), authority(&second));
    sim.admin.set_gateway(Some(second.clone()));
    let dir = test_dir("gw-verify-moves");
    let device = start_device(speaker_config(&sim, &dir)).await;
    let told = wait_on(&sim, 0, &first, "VerifyGateway answered 200", |r| {
        is_event(r, "Alexa.ApiGateway.VerifyGateway") && r.status == Some(200)
    })
    .await;
    wait_on(
        &sim,
        told.seq,
        &second_auth,
        "VerifyGateway at the new gateway",
        |r| is_event(r, "Alexa.ApiGateway.VerifyGateway") && r.status == Some(204),
    )
    .await;
    wait_on(
        &sim,
        told.seq,
        &second_auth,
        "SynchronizeState at the new gateway",
        |r| is_event(r, "System.SynchronizeState"),
    )
    .await;
    wait_stored(&dir, "verified at the new gateway", |v| {
        v["gateway"] == second.as_str() && v["verified"] == true
    })
    .await;
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_endpoint_moves_the_device_like_set_gateway() {
    let (sim, second) = two_listener_sim().await;
    let second_auth = authority(&second);
    let dir = test_dir("gw-set-endpoint");
    let device = start_device(speaker_config(&sim, &dir)).await;
    let before = sim.recorder.len();
    let d = json!({"directive": {"header": {"namespace": "System", "name": "SetEndpoint", "messageId": "se-1"},
        "payload": {"endpoint": second.as_str()}}});
    sim.admin.push(None, d.to_string()).await.expect("push");
    wait_on(&sim, before, &second_auth, "downchannel", is_downchannel).await;
    wait_on(&sim, before, &second_auth, "VerifyGateway", |r| {
        is_event(r, "Alexa.ApiGateway.VerifyGateway")
    })
    .await;
    assert_eq!(stored_gateway(&dir)["gateway"], second.as_str());
    assert!(
        sim.recorder
            .events("System.ExceptionEncountered")
            .is_empty(),
        "SetEndpoint is handled, not refused"
    );
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_endpoint_to_plain_http_is_refused_and_the_connection_stays() {
    let (sim, second) = two_listener_sim().await;
    let first = authority(&sim.url);
    let dir = test_dir("gw-set-endpoint-http");
    let device = start_device(speaker_config(&sim, &dir)).await;
    wait_on(&sim, 0, &first, "VerifyGateway", |r| {
        is_event(r, "Alexa.ApiGateway.VerifyGateway") && r.status.is_some()
    })
    .await;
    let gateway_before = wait_stored(&dir, "verified", |v| v["verified"] == true).await;
    let downchannels_before = sim
        .recorder
        .records()
        .iter()
        .filter(|r| is_downchannel(r))
        .count();

    let http = format!("http://{}", authority(&second));
    let d = json!({"directive": {"header": {"namespace": "System", "name": "SetEndpoint", "messageId": "se-http"},
        "payload": {"endpoint": http}}});
    let before = sim.recorder.len();
    sim.admin.push(None, d.to_string()).await.expect("push");
    let e = sim
        .recorder
        .wait_for_event_after(before, "System.ExceptionEncountered", WAIT)
        .await
        .expect("ExceptionEncountered");
    let payload = &e.event.as_ref().expect("event").payload;
    assert_eq!(payload["error"]["type"], "UNEXPECTED_INFORMATION_RECEIVED");
    assert_eq!(payload["unparsedDirective"], d.to_string());
    assert_eq!(
        e.listener.as_deref(),
        Some(first.as_str()),
        "sent on the same connection"
    );

    // Still the same connection: a ping round trip later, no new downchannel, same gateway.
    let set = json!({"directive": {"header": {"namespace": "Speaker", "name": "SetVolume", "messageId": "v-1"}, "payload": {"volume": 12}}});
    sim.admin.push(None, set.to_string()).await.expect("push");
    let v = sim
        .recorder
        .wait_for_event_after(before, "Speaker.VolumeChanged", WAIT)
        .await
        .expect("VolumeChanged");
    assert_eq!(v.listener.as_deref(), Some(first.as_str()));
    assert_eq!(*device.daemon.link.borrow(), LinkState::Connected);
    assert_eq!(
        sim.recorder
            .records()
            .iter()
            .filter(|r| is_downchannel(r))
            .count(),
        downchannels_before,
        "the device reconnected"
    );
    assert_eq!(stored_gateway(&dir), gateway_before);
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_waits_for_the_current_dialog_to_end() {
    let mut sim = sim(
        "[[turn]]\nfinal_speech = \"The answer is forty two, and that is all there is to it.\"\n",
    )
    .await;
    let second = sim.listen_also().await.expect("second listener");
    let (first, second_auth) = (authority(&sim.url), authority(&second));
    let dir = test_dir("gw-move-after-dialog");
    let mut device = start_device(utterance_config(&sim, &dir)).await;
    device.command(avsd::dialog::DialogCommand::Listen).await;
    device
        .wait_step("Recognize", WAIT, |s| {
            matches!(s, avsd::dialog::DialogStep::RecognizeStarted { .. })
        })
        .await;
    let before = sim.recorder.len();
    sim.admin
        .push_set_gateway(None, second.as_str())
        .await
        .expect("push");
    device
        .wait_step("speech finished", Duration::from_secs(30), |s| {
            matches!(s, avsd::dialog::DialogStep::SpeechFinished { .. })
        })
        .await;
    let moved = wait_on(&sim, before, &second_auth, "downchannel", is_downchannel).await;
    let started = sim
        .recorder
        .wait_for_event_after(before, "SpeechSynthesizer.SpeechStarted", WAIT)
        .await
        .expect("SpeechStarted");
    assert_eq!(started.listener.as_deref(), Some(first.as_str()));
    assert!(
        started.seq < moved.seq,
        "the device moved during the dialog (SpeechStarted #{}, new downchannel #{})",
        started.seq,
        moved.seq
    );
    let recognize = wait_event(&sim, "SpeechRecognizer.Recognize", WAIT).await;
    assert_eq!(
        recognize.status,
        Some(200),
        "the Recognize was answered in full"
    );
    device.stop().await;
}
