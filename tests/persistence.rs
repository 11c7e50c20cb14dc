//! Nothing lost across restarts: events raised while the cloud is unreachable survive a SIGTERM
//! and a SIGKILL of `avsd run` and reach the cloud once, in order, after the next start; stale
//! kinds are not replayed. A device whose refresh token was revoked picks up a new `avsd login`
//! without a restart.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod link_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use avs_testkit::sim::TestSim;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// A config file for `avsd run` reaching the cloud at `endpoint` (the sim, or a relay to it).
fn write_config(sim: &TestSim, endpoint: &url::Url, dir: &Path) -> PathBuf {
    let path = dir.join("avsd.toml");
    let ca = dir.join("sim-ca.pem");
    std::fs::copy(&sim.ca_pem, &ca).expect("copy CA");
    let text = format!(
        "[device]\nserial_number = \"persist-{name}\"\n[cloud]\nendpoint = \"{url}\"\nlwa_url = \"{url}\"\nextra_ca_file = \"{ca}\"\n[paths]\nstate_dir = \"{state}\"\ncontrol_socket = \"{sock}\"\n[audio]\ninput = \"none\"\noutput = \"wav:{out}\"\n",
        name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x"),
        url = endpoint,
        ca = ca.display(),
        state = dir.join("state").display(),
        sock = dir.join("control.sock").display(),
        out = dir.join("out.wav").display(),
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn spawn(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_avsd"))
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn avsd")
}

async fn control(dir: &Path, request: &avsd::control::Request) {
    let answer = avsd::control::request(&dir.join("control.sock"), request)
        .await
        .expect("control socket");
    assert_eq!(answer["ok"], true, "{answer}");
}

/// Waits until the daemon's control socket answers (it is bound once the daemon has started).
async fn wait_control(dir: &Path) {
    let deadline = Instant::now() + WAIT;
    while avsd::control::request(&dir.join("control.sock"), &avsd::control::Request::Status)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "control socket never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// `(Namespace.Name, messageId)` of each event in the outbox file, in order.
fn stored_outbox(dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir.join("state/outbox.json")).expect("outbox.json");
    let v: Value = serde_json::from_str(&text).expect("outbox.json is JSON");
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let h = &e["metadata"]["event"]["header"];
            (
                format!(
                    "{}.{}",
                    h["namespace"].as_str().unwrap_or(""),
                    h["name"].as_str().unwrap_or("")
                ),
                h["messageId"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// `(Namespace.Name, messageId)` of every event the sim accepted after record `mark`.
fn events_since(sim: &TestSim, mark: usize) -> Vec<(String, String)> {
    sim.recorder
        .records()
        .into_iter()
        .skip(mark)
        .filter_map(|r| r.event)
        .map(|e| (format!("{}.{}", e.namespace, e.name), e.message_id))
        .collect()
}

fn stamp(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

enum Stop {
    Term,
    Kill,
}

/// Offline events (an alarm rings and is stopped, the volume changes), the daemon is stopped by
/// `how`, the cloud comes back, the daemon restarts: the events arrive once, in order, after
/// SynchronizeState, and the dropped kinds do not arrive at all.
async fn offline_events_survive(name: &str, how: Stop) {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let addr: std::net::SocketAddr = format!(
        "{}:{}",
        sim.url.host_str().expect("host"),
        sim.url.port().expect("port")
    )
    .parse()
    .expect("sim addr");
    let mut relay = link_support::Proxy::start(addr).await;
    let dir = test_dir(name);
    let config_path = write_config(&sim, &relay.url(), &dir);
    login(&avsd::config::Config::load(&config_path).expect("config")).await;

    let mut first = spawn(&config_path, &dir.join("first.log"));
    sim.recorder
        .wait_for_event("System.SynchronizeState", WAIT)
        .await
        .expect("connected");
    let fire = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert", "messageId": "p-1"},
        "payload": {"token": "alarm-offline", "type": "ALARM", "scheduledTime": stamp(fire)}}});
    sim.admin.push(None, set.to_string()).await.expect("push");
    sim.recorder
        .wait_for_event("Alerts.SetAlertSucceeded", WAIT)
        .await
        .expect("SetAlertSucceeded");

    // The cloud becomes unreachable; the alarm rings, is stopped, the volume changes.
    relay.stop().await;
    let until_fire = fire - time::OffsetDateTime::now_utc() + time::Duration::milliseconds(1500);
    tokio::time::sleep(Duration::try_from(until_fire).unwrap_or_default()).await;
    control(
        &dir,
        &avsd::control::Request::Volume {
            set: Some(33),
            adjust: None,
        },
    )
    .await;
    control(&dir, &avsd::control::Request::Stop).await;
    match how {
        Stop::Term => {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(first.id().to_string())
                .status();
            let status = first.wait().expect("exit");
            assert!(
                status.success(),
                "avsd exited with {status}:\n{}",
                log_of(&dir, "first.log")
            );
        }
        Stop::Kill => {
            // The periodic write keeps at most the last second at risk.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            first.kill().expect("SIGKILL");
            first.wait().expect("reaped");
        }
    }
    let stored = stored_outbox(&dir);
    let names: Vec<&str> = stored.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "Alerts.AlertStarted",
        "Speaker.VolumeChanged",
        "Alerts.AlertStopped",
    ] {
        assert!(
            names.contains(&want),
            "{want} not kept: {names:?}\n{}",
            log_of(&dir, "first.log")
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("state/outbox.json"))
            .expect("outbox.json")
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);

    relay.restart().await;
    let mark = sim.recorder.len();
    let mut second = spawn(&config_path, &dir.join("second.log"));
    sim.recorder
        .wait_for(mark, WAIT, "the replayed AlertStopped", |r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.name == "AlertStopped" && e.payload["token"] == "alarm-offline")
        })
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", log_of(&dir, "second.log")));
    // A new local event goes after the replayed ones.
    wait_control(&dir).await;
    control(
        &dir,
        &avsd::control::Request::Volume {
            set: Some(44),
            adjust: None,
        },
    )
    .await;
    sim.recorder
        .wait_for(mark, WAIT, "the new VolumeChanged", |r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.name == "VolumeChanged" && e.payload["volume"] == 44)
        })
        .await
        .expect("new VolumeChanged");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(second.id().to_string())
        .status();
    let status = second.wait().expect("exit");
    assert!(status.success(), "{}", log_of(&dir, "second.log"));

    let got = events_since(&sim, mark);
    let sync = got
        .iter()
        .position(|(n, _)| n == "System.SynchronizeState")
        .expect("SynchronizeState first");
    let replayed: Vec<(String, String)> = got[sync + 1..]
        .iter()
        .filter(|(_, id)| stored.iter().any(|(_, s)| s == id))
        .cloned()
        .collect();
    let expected: Vec<(String, String)> = stored
        .iter()
        .filter(|(n, _)| {
            avsd::transport::outbox::store::replay_verdict(
                n.split('.').next().unwrap_or(""),
                n.split('.').nth(1).unwrap_or(""),
            ) == avsd::transport::outbox::store::Verdict::Replay
        })
        .cloned()
        .collect();
    assert_eq!(replayed, expected, "replayed once, in order: {got:?}");
    assert!(
        got.iter()
            .all(|(n, _)| n != "Alerts.AlertEnteredForeground"),
        "a rendering of the previous run is not replayed: {got:?}"
    );
    let last_replayed = got
        .iter()
        .rposition(|(_, id)| expected.iter().any(|(_, e)| e == id))
        .expect("replayed");
    let new_id = sim
        .recorder
        .records()
        .into_iter()
        .skip(mark)
        .filter_map(|r| r.event)
        .find(|e| e.name == "VolumeChanged" && e.payload["volume"] == 44)
        .expect("new VolumeChanged")
        .message_id;
    let new_at = got
        .iter()
        .position(|(_, id)| *id == new_id)
        .expect("new event");
    assert!(
        last_replayed < new_at,
        "new events go after the replayed ones: {got:?}"
    );
    // Delivered: the file no longer holds them.
    assert!(stored_outbox(&dir).is_empty(), "{:?}", stored_outbox(&dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_events_survive_sigterm_and_arrive_once_in_order() {
    offline_events_survive("outbox-term", Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_events_survive_sigkill_and_arrive_once_in_order() {
    offline_events_survive("outbox-kill", Stop::Kill).await;
}
