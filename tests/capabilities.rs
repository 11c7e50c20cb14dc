//! Capabilities publishing end to end: a real avsd daemon against avs-sim over TLS + HTTP/2.
//! The Alexa.Discovery report goes out once after the first login (VerifyGateway, then the
//! report, then SynchronizeState), is confirmed by Alexa.EventProcessed, is skipped on a restart
//! while its checksum is unchanged, goes out again after a firmware change, and is re-sent when
//! the confirmation never comes.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use avs_sim::{Fault, Record};
use avs_testkit::sim::TestSim;
use common::*;

const NO_ANSWER: &str = "[[turn]]\nreject = true\n";
const REPORT: &str = "Alexa.Discovery.AddOrUpdateReport";
const WAIT: Duration = Duration::from_secs(15);

fn after(sim: &TestSim, from: usize, name: &str) -> Vec<Record> {
    sim.recorder
        .events(name)
        .into_iter()
        .filter(|r| r.seq >= from)
        .collect()
}

/// Waits until the checksum file exists (written only once AVS confirmed the report).
async fn wait_checksum(dir: &Path) -> String {
    let path = dir.join("state/discovery.json");
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                return v["checksum"].as_str().expect("checksum").to_owned();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("discovery.json written")
}

/// Waits for the SynchronizeState of the connection made after `from`; every post-connect
/// event of that connection is recorded before it.
async fn wait_sync(sim: &TestSim, from: usize) -> Record {
    sim.recorder
        .wait_for_event_after(from, "System.SynchronizeState", WAIT)
        .await
        .expect("SynchronizeState")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_once_after_login_skipped_when_unchanged_resent_after_firmware_change() {
    let sim = sim(NO_ANSWER).await;
    let dir = test_dir("caps-once");
    let out = format!("wav:{}", dir.join("out.wav").display());
    let config1 = config(&sim, &dir, "none", &out);
    let serial = config1.device.serial_number.clone();
    let endpoint_id = format!(
        "{}::{}::{}",
        config1.device.client_id, config1.device.product_id, serial
    );
    let device = start_device(config1).await;

    let sync = wait_sync(&sim, 0).await;
    let verify = sim
        .recorder
        .wait_for_event("Alexa.ApiGateway.VerifyGateway", WAIT)
        .await
        .expect("VerifyGateway");
    let reports = after(&sim, 0, REPORT);
    assert_eq!(reports.len(), 1, "one report after the first login");
    let report = &reports[0];
    assert!(
        verify.seq < report.seq && report.seq < sync.seq,
        "order: VerifyGateway, AddOrUpdateReport, SynchronizeState"
    );
    let checksum = wait_checksum(&dir).await;
    // The sim answers 202 only when the scope token is the connection's bearer token, the
    // endpointId is this device's and there are capabilities.
    let report = sim
        .recorder
        .events(REPORT)
        .into_iter()
        .next()
        .expect("report");
    assert_eq!(report.status, Some(202));
    let payload = &report.event.as_ref().expect("event").payload;
    let ep = &payload["endpoints"][0];
    assert_eq!(ep["endpointId"], endpoint_id.as_str());
    assert_eq!(
        ep["displayCategories"],
        serde_json::json!(["ALEXA_VOICE_ENABLED"])
    );
    assert_eq!(ep["additionalAttributes"]["firmwareVersion"], "1");
    assert_eq!(ep["additionalAttributes"]["serialNumber"], serial.as_str());
    let caps: Vec<(String, String)> = ep["capabilities"]
        .as_array()
        .expect("capabilities")
        .iter()
        .map(|c| {
            (
                c["interface"].as_str().unwrap().to_owned(),
                c["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (interface, version) in avsd::capabilities::INTERFACES {
        assert!(
            caps.contains(&((*interface).to_owned(), (*version).to_owned())),
            "{interface} {version} missing from {caps:?}"
        );
    }
    assert_eq!(caps.len(), avsd::capabilities::INTERFACES.len());
    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/tokens.json")).expect("tokens"))
            .expect("json");
    assert_eq!(payload["scope"]["token"], tokens["access_token"]);
    assert_eq!(
        sim.admin
            .discovery_report(&serial)
            .expect("kept by the sim")[0]["endpointId"],
        endpoint_id.as_str()
    );
    device.stop().await;

    // Restart, nothing changed: no report.
    let before = sim.recorder.len();
    let device = start_linked_device(config(&sim, &dir, "none", &out)).await;
    wait_sync(&sim, before).await;
    assert!(
        after(&sim, before, REPORT).is_empty(),
        "report re-sent unchanged"
    );
    device.stop().await;

    // New firmware: the report goes out again, with it.
    let before = sim.recorder.len();
    let mut config3 = config(&sim, &dir, "none", &out);
    config3.device.firmware_version = "2".into();
    let device = start_linked_device(config3).await;
    wait_sync(&sim, before).await;
    let again = after(&sim, before, REPORT);
    assert_eq!(again.len(), 1, "one report after the firmware change");
    assert_eq!(
        again[0].event.as_ref().expect("event").payload["endpoints"][0]["additionalAttributes"]["firmwareVersion"],
        "2"
    );
    tokio::time::timeout(WAIT, async {
        while wait_checksum(&dir).await == checksum {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("new checksum stored");
    device.stop().await;

    // Another login (a new refresh token: possibly another account): reported again.
    let before = sim.recorder.len();
    let mut config4 = config(&sim, &dir, "none", &out);
    config4.device.firmware_version = "2".into();
    let device = start_device(config4).await;
    wait_sync(&sim, before).await;
    assert_eq!(
        after(&sim, before, REPORT).len(),
        1,
        "report after a new login"
    );
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_is_sent_again_when_event_processed_never_comes() {
    let sim = sim(NO_ANSWER).await;
    sim.admin
        .fault(&Fault::DropEventProcessed { count: 1 })
        .await
        .expect("fault");
    let dir = test_dir("caps-retry");
    let out = format!("wav:{}", dir.join("out.wav").display());
    let device = start_device(config(&sim, &dir, "none", &out)).await;
    let first = sim
        .recorder
        .wait_for_event(REPORT, WAIT)
        .await
        .expect("first report");
    assert_eq!(first.status, Some(202));
    // Not confirmed: nothing stored yet (the sim dropped EventProcessed; ~2 s wait, then 1 s
    // backoff with jitter).
    assert!(!dir.join("state/discovery.json").exists());
    let second = sim
        .recorder
        .wait_for_event_after(first.seq + 1, REPORT, WAIT)
        .await
        .expect("the report sent again");
    assert!(
        second.at >= first.at + Duration::from_secs(2),
        "re-sent after the EventProcessed wait, not at once: {:?} -> {:?}",
        first.at,
        second.at
    );
    wait_checksum(&dir).await;
    // Confirmed now: no third report.
    assert_eq!(sim.recorder.events(REPORT).len(), 2);
    // Dialogs were not held back meanwhile: the link was CONNECTED before the retry.
    let sync = sim
        .recorder
        .wait_for_event("System.SynchronizeState", WAIT)
        .await
        .expect("sync");
    assert!(sync.seq < second.seq);
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_on_the_report_refreshes_the_token_and_the_report_carries_the_new_one() {
    let sim = sim(NO_ANSWER).await;
    // Post-connect order: VerifyGateway (403: the event layer refreshes and retries it), then
    // the report (403: refresh, send again after the backoff).
    sim.admin
        .fault(&Fault::FailEvents {
            status: 403,
            count: 2,
        })
        .await
        .expect("fault");
    let dir = test_dir("caps-403");
    let out = format!("wav:{}", dir.join("out.wav").display());
    let device = start_device(config(&sim, &dir, "none", &out)).await;
    let report = sim
        .recorder
        .wait_for(0, WAIT, "accepted report", |r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.qualified_name() == REPORT)
                && r.status == Some(202)
        })
        .await
        .expect("accepted report");
    wait_checksum(&dir).await;
    let refused = sim
        .recorder
        .records()
        .iter()
        .filter(|r| r.path == avs_proto::EVENTS_PATH && r.status == Some(403))
        .count();
    assert_eq!(refused, 2);
    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("state/tokens.json")).expect("tokens"))
            .expect("json");
    // The sim accepts a report only when its scope is the bearer it came with; the device's
    // current token is the refreshed one.
    assert_eq!(
        report.event.as_ref().expect("event").payload["scope"]["token"],
        tokens["access_token"]
    );
    assert_eq!(sim.recorder.events(REPORT).len(), 1);
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_on_the_report_is_permanent() {
    let sim = sim(NO_ANSWER).await;
    // VerifyGateway gets the first 400, the report the second.
    sim.admin
        .fault(&Fault::FailEvents {
            status: 400,
            count: 2,
        })
        .await
        .expect("fault");
    let dir = test_dir("caps-400");
    let out = format!("wav:{}", dir.join("out.wav").display());
    let device = start_device(config(&sim, &dir, "none", &out)).await;
    let sync = wait_sync(&sim, 0).await;
    // A retry would come within the first backoff step (at most 1.5 s); give it three.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let posts_after_sync: Vec<Record> = sim
        .recorder
        .records()
        .into_iter()
        .filter(|r| r.seq > sync.seq && r.path == avs_proto::EVENTS_PATH)
        .collect();
    assert!(
        posts_after_sync.is_empty(),
        "the refused report was sent again: {posts_after_sync:?}"
    );
    assert!(sim.recorder.events(REPORT).is_empty());
    assert!(!dir.join("state/discovery.json").exists());
    assert_eq!(
        sim.recorder
            .records()
            .iter()
            .filter(|r| r.path == avs_proto::EVENTS_PATH && r.status == Some(400))
            .count(),
        2
    );
    device.stop().await;
}
