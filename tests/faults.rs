//! Fault injection against the whole daemon (auth task, link, dialog core, audio on `wav:`
//! devices), not the link alone (`link_transport.rs` covers each fault at the link level): for
//! each of avs-sim's faults the daemon gets back to `Connected`, the events it raised meanwhile
//! (`Speaker.VolumeChanged` from local volume commands) reach the cloud exactly once and in
//! order, and every daemon task is still alive at the end (the dialog core answers a status
//! request, `supervise` ends without a dead task).
//! Recovery times are printed (`cargo test --test faults -- --nocapture`), never asserted.
// Test helpers outside #[test] fns: a failed set-up step fails the test, like `expect` in one.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use avs_sim::Fault;
use avsd::agents::speaker::VolumeCommand;
use avsd::dialog::{DialogCommand, DialogStep};
use avsd::transport::LinkState;
use common::*;

const WAIT: Duration = Duration::from_secs(20);
/// A turn that answers quickly: the mic hears the bundled utterance, the answer is short.
const QUICK: &str = "[[turn]]\nfinal_speech = \"Okay.\"\n";

/// Sends local volume changes (each one raises a `Speaker.VolumeChanged` event).
async fn set_volumes(device: &Device, volumes: &[u8]) {
    for v in volumes {
        device
            .command(DialogCommand::Volume(VolumeCommand::Set(*v)))
            .await;
    }
}

/// Asserts that the sim accepted one `VolumeChanged` per entry of `volumes`, in that order,
/// each with its own messageId, after record `mark`. A sentinel volume is sent last and waited
/// for: the outbox is ordered, so any duplicate of an earlier event would arrive before it.
async fn assert_volumes_once_in_order(
    sim: &avs_testkit::sim::TestSim,
    device: &Device,
    mark: usize,
    volumes: &[u8],
) {
    const SENTINEL: u8 = 7;
    set_volumes(device, &[SENTINEL]).await;
    sim.recorder
        .wait_for(mark, WAIT, "the sentinel VolumeChanged", |r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.name == "VolumeChanged" && e.payload["volume"] == SENTINEL)
        })
        .await
        .expect("sentinel VolumeChanged");
    let got: Vec<(String, u64)> = sim
        .recorder
        .events_since(mark)
        .into_iter()
        .filter(|e| e.namespace == "Speaker" && e.name == "VolumeChanged")
        .map(|e| (e.message_id, e.payload["volume"].as_u64().unwrap_or(999)))
        .collect();
    let order: Vec<u64> = got.iter().map(|(_, v)| *v).collect();
    let mut want: Vec<u64> = volumes.iter().map(|v| u64::from(*v)).collect();
    want.push(u64::from(SENTINEL));
    assert_eq!(
        order, want,
        "VolumeChanged events after the fault (exactly once, in order)"
    );
    let mut ids: Vec<&String> = got.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        got.len(),
        "every VolumeChanged has its own messageId: {got:?}"
    );
}

/// Waits until the sim saw a new downchannel (status 200) after `mark` and the daemon's link is
/// `Connected` again; returns when that happened.
async fn wait_reconnected(
    sim: &avs_testkit::sim::TestSim,
    device: &Device,
    mark: usize,
) -> Instant {
    sim.recorder
        .wait_for(mark, WAIT, "a new downchannel", |r| {
            r.path == avs_proto::DIRECTIVES_PATH && r.status == Some(200)
        })
        .await
        .expect("the daemon opened a new downchannel");
    let mut link = device.daemon.link.clone();
    tokio::time::timeout(WAIT, link.wait_for(|s| *s == LinkState::Connected))
        .await
        .expect("Connected again in time")
        .expect("link state");
    Instant::now()
}

/// Waits until the link has left `Connected`.
async fn wait_disconnected(device: &Device) {
    let mut link = device.daemon.link.clone();
    tokio::time::timeout(WAIT, link.wait_for(|s| *s != LinkState::Connected))
        .await
        .expect("the link noticed the fault")
        .expect("link state");
}

/// Checks that the daemon survived (the dialog core answers, no task died), then stops it.
async fn stop_alive(device: Device) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    device.command(DialogCommand::Status(tx)).await;
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the dialog core answers in time")
        .expect("status");
    device.shutdown.cancel();
    device
        .daemon
        .supervise()
        .await
        .expect("no daemon task died");
}

fn report(name: &str, took: Duration) {
    println!(
        "fault {name}: back to Connected after {:.1} ms",
        took.as_secs_f64() * 1000.0
    );
}

/// The shared shape of the connection-level faults: inject, raise events while the link is
/// down or reconnecting, check recovery and delivery.
async fn connection_fault(name: &str, fault: Fault) {
    let sim = sim(QUICK).await;
    let dir = test_dir(&format!("fault-{name}"));
    let device = start_device(speaker_config(&sim, &dir)).await;
    let mark = sim.recorder.len();
    let t0 = Instant::now();
    assert_eq!(
        arm_fault(&sim, &fault).await,
        1,
        "{name} reached the device"
    );
    set_volumes(&device, &[21, 22, 23]).await;
    let back = wait_reconnected(&sim, &device, mark).await;
    report(name, back - t0);
    assert_volumes_once_in_order(&sim, &device, mark, &[21, 22, 23]).await;
    // The new connection synchronized its state after the downchannel.
    assert!(
        sim.recorder.records().iter().skip(mark).any(|r| r
            .event
            .as_ref()
            .is_some_and(|e| e.name == "SynchronizeState")),
        "no SynchronizeState after {name}"
    );
    stop_alive(device).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_reconnects_and_delivers_queued_events_once() {
    connection_fault("goaway", Fault::GoAway { device: None }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downchannel_reset_reconnects_and_delivers_queued_events_once() {
    connection_fault("rst_stream", Fault::ResetDownchannel { device: None }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_tcp_connection_reconnects_and_delivers_queued_events_once() {
    connection_fault("tcp_drop", Fault::DropConnection { device: None }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_403_refreshes_the_token_through_lwa_and_the_event_goes_once() {
    let sim = sim(QUICK).await;
    let dir = test_dir("fault-403");
    let device = start_device(speaker_config(&sim, &dir)).await;
    let tokens = dir.join("state").join(avsd::auth::token_store::TOKEN_FILE);
    let before = std::fs::read_to_string(&tokens).expect("token file");
    let mark = sim.recorder.len();
    let t0 = Instant::now();
    fail_events(&sim, 403, 1).await;
    set_volumes(&device, &[31, 32]).await;
    assert_volumes_once_in_order(&sim, &device, mark, &[31, 32]).await;
    println!(
        "fault event_403: refused event delivered after {:.1} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let refused = answered_since(&sim, mark, 403);
    assert_eq!(refused, 1, "the sim refused exactly one event");
    // The auth task refreshed through the sim's LWA and stored the new token.
    let after = std::fs::read_to_string(&tokens).expect("token file");
    assert_ne!(before, after, "the token file was rewritten by the refresh");
    // A 403 on an event keeps the connection (avs-protocol.md §2.4): no new downchannel.
    assert!(
        !downchannel_since(&sim, mark),
        "a 403 on an event must not reconnect"
    );
    assert_eq!(*device.daemon.link.borrow(), LinkState::Connected);
    stop_alive(device).await;
}

async fn throttled(status: u16) {
    let sim = sim(QUICK).await;
    let dir = test_dir(&format!("fault-{status}"));
    let device = start_device(speaker_config(&sim, &dir)).await;
    let mark = sim.recorder.len();
    let t0 = Instant::now();
    fail_events(&sim, status, 2).await;
    set_volumes(&device, &[41, 42, 43]).await;
    assert_volumes_once_in_order(&sim, &device, mark, &[41, 42, 43]).await;
    println!(
        "fault event_{status}: all events delivered after {:.1} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let refused = answered_since(&sim, mark, status);
    assert_eq!(refused, 2, "the sim refused two attempts with {status}");
    assert_eq!(*device.daemon.link.borrow(), LinkState::Connected);
    stop_alive(device).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_answered_429_are_retried_and_arrive_once_in_order() {
    throttled(429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_answered_503_are_retried_and_arrive_once_in_order() {
    throttled(503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_pings_tear_the_connection_down_and_it_comes_back() {
    let sim = sim(QUICK).await;
    let dir = test_dir("fault-ping");
    let mut cfg = speaker_config(&sim, &dir);
    cfg.cloud.ping_idle = Duration::from_millis(500);
    cfg.cloud.ping_timeout = Duration::from_millis(500);
    let device = start_device(cfg).await;
    let mark = sim.recorder.len();
    let t0 = Instant::now();
    arm_fault(&sim, &Fault::SilencePings { enabled: true }).await;
    wait_disconnected(&device).await;
    println!(
        "fault silent_pings: teardown noticed after {:.1} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    set_volumes(&device, &[51, 52]).await;
    arm_fault(&sim, &Fault::SilencePings { enabled: false }).await;
    let t1 = Instant::now();
    let back = wait_reconnected(&sim, &device, mark).await;
    report("silent_pings (from pings answered again)", back - t1);
    assert_volumes_once_in_order(&sim, &device, mark, &[51, 52]).await;
    // Pings are answered again, so the connection now stays up across several ping periods.
    let stable = sim.recorder.len();
    let pinged = sim
        .recorder
        .wait_for(stable, WAIT, "a ping answered 204", |r| {
            r.path == avs_proto::PING_PATH && r.status == Some(204)
        })
        .await;
    assert!(
        pinged.is_ok(),
        "no ping answered after the fault was lifted"
    );
    assert_eq!(*device.daemon.link.borrow(), LinkState::Connected);
    stop_alive(device).await;
}

/// The cloud endpoint dies in the middle of a Recognize and comes back on the same port. avs-sim
/// makes a fresh CA and token store at every process start (which no real AVS restart does), so
/// the restart is modelled by avs-sim's TCP relay (`avs_sim::relay`): every connection is cut, the port
/// refuses connections for a while, then the same sim answers again on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_killed_mid_recognize_and_restarted_on_the_same_port() {
    let sim = sim(QUICK).await;
    let mut relay = avs_sim::relay::Relay::start(sim.addr().unwrap())
        .await
        .unwrap();
    let dir = test_dir("fault-restart");
    let mut cfg = utterance_config(&sim, &dir);
    cfg.cloud.endpoint = relay.url().unwrap();
    cfg.cloud.lwa_url = relay.url().unwrap();
    let mut device = start_device(cfg).await;

    device.command(DialogCommand::Listen).await;
    device
        .wait_step("first frame", WAIT, |s| {
            matches!(s, DialogStep::FirstFrameSent)
        })
        .await;
    let mark = sim.recorder.len();
    let t0 = Instant::now();
    relay.stop().await;
    // The Recognize fails and the mic closes instead of streaming into a dead connection.
    let closed = device
        .wait_step("turn closed", WAIT, |s| {
            matches!(s, DialogStep::TurnClosed { .. })
        })
        .await;
    assert!(
        !matches!(&closed.step, DialogStep::TurnClosed { status } if status == "200" || status == "204"),
        "the cut Recognize cannot have succeeded: {:?}",
        closed.step
    );
    wait_disconnected(&device).await;
    set_volumes(&device, &[61, 62, 63]).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // the outage itself
    relay.restart().await.unwrap();
    let t1 = Instant::now();
    let back = wait_reconnected(&sim, &device, mark).await;
    report("cloud_restart (from the port listening again)", back - t1);
    println!(
        "fault cloud_restart: whole outage {:.1} ms",
        (back - t0).as_secs_f64() * 1000.0
    );
    assert_volumes_once_in_order(&sim, &device, mark, &[61, 62, 63]).await;
    stop_alive(device).await;
}
