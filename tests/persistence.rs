//! Nothing lost across restarts: events raised while the cloud is unreachable survive a SIGTERM
//! and a SIGKILL of `avsd run` and reach the cloud once, in order, after the next start; stale
//! kinds are not replayed. A device whose refresh token was revoked picks up a new `avsd login`
//! without a restart.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avs_testkit::sim::TestSim;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// A config file for `avsd run` reaching the cloud at `endpoint` (the sim, or a relay to it).
fn write_config(sim: &TestSim, endpoint: &url::Url, dir: &Path) -> PathBuf {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    write_run_config(
        sim,
        endpoint,
        dir,
        &format!("persist-{name}"),
        &dir.join("out.wav"),
    )
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
        .events_since(mark)
        .into_iter()
        .map(|e| (format!("{}.{}", e.namespace, e.name), e.message_id))
        .collect()
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
    let mut relay = avs_sim::relay::Relay::start(sim.addr().unwrap())
        .await
        .unwrap();
    let dir = test_dir(name);
    let config_path = write_config(&sim, &relay.url().unwrap(), &dir);
    login(&avsd::config::Config::load(&config_path).expect("config")).await;

    let mut first = spawn_avsd_run(&config_path, &dir.join("first.log"));
    wait_event(&sim, "System.SynchronizeState", WAIT).await;
    let fire = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert", "messageId": "p-1"},
        "payload": {"token": "alarm-offline", "type": "ALARM", "scheduledTime": rfc3339(fire)}}});
    push_directive(&sim, &set).await;
    wait_event(&sim, "Alerts.SetAlertSucceeded", WAIT).await;

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
            let status = sigterm_and_wait(&mut first);
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

    relay.restart().await.unwrap();
    let mark = sim.recorder.len();
    let mut second = spawn_avsd_run(&config_path, &dir.join("second.log"));
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
    let status = sigterm_and_wait(&mut second);
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
        .events_since(mark)
        .into_iter()
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
    // Delivered: the file no longer holds them. (The new event may still be there: SIGTERM can
    // catch it before its response, and an unconfirmed event is kept: at least once.)
    let left = stored_outbox(&dir);
    assert!(
        left.iter()
            .all(|(_, id)| !stored.iter().any(|(_, s)| s == id)),
        "replayed events still stored: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_events_survive_sigterm_and_arrive_once_in_order() {
    offline_events_survive("outbox-term", Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_events_survive_sigkill_and_arrive_once_in_order() {
    offline_events_survive("outbox-kill", Stop::Kill).await;
}

/// Reads `avsd login`'s output, sending the user code it shows, to the end (a closed pipe
/// would fail its last message).
fn read_user_code(out: std::process::ChildStdout, code: std::sync::mpsc::Sender<String>) {
    use std::io::BufRead;
    for line in std::io::BufReader::new(out).lines() {
        let Ok(line) = line else { return };
        if let Some(rest) = line.split("enter the code ").nth(1) {
            let _ = code.send(rest.split_whitespace().next().unwrap_or("").to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_login_is_picked_up_by_the_running_daemon() {
    init_logs();
    let sim = avs_testkit::sim::start_sim(avs_sim::SimConfig {
        lwa: avs_sim::lwa::LwaConfig {
            auto_approve: false,
            poll_interval: Duration::from_millis(200),
            ..Default::default()
        },
        scenario: avs_sim::Scenario::from_toml("[[turn]]\nfinal_speech = \"Okay.\"\n")
            .expect("scenario"),
        ..Default::default()
    })
    .await
    .expect("sim");
    let dir = test_dir("relogin");
    let config_path = write_config(&sim, &sim.url, &dir);
    // The mic hears the bundled utterance: a dialog can run once connected.
    let text = std::fs::read_to_string(&config_path)
        .expect("config")
        .replace(
            "input = \"none\"",
            &format!("input = \"wav:{}\"", utterance_path().display()),
        );
    std::fs::write(&config_path, text).expect("config");
    let config = avsd::config::Config::load(&config_path).expect("config");
    // A login LWA has revoked: the access token expired, the refresh token is unknown to LWA.
    avsd::auth::token_store::save(
        &config.state_dir,
        &avsd::auth::token_store::StoredTokens::issued(
            "Atza|expired".into(),
            "Atzr|revoked".into(),
            Duration::from_secs(3600),
            std::time::SystemTime::now() - Duration::from_secs(7200),
        ),
    )
    .expect("tokens");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let daemon = avsd::daemon::Daemon::start(std::sync::Arc::new(config), shutdown.clone())
        .await
        .expect("daemon");
    let mut link = daemon.link.clone();
    tokio::time::timeout(
        WAIT,
        link.wait_for(|s| *s == avsd::transport::LinkState::NeedsLogin),
    )
    .await
    .expect("NeedsLogin in time")
    .expect("link state");
    let updates = daemon.dialog.updates.subscribe();
    let mut device = Device {
        daemon,
        shutdown,
        updates,
    };

    // The user runs `avsd login` while the daemon keeps running, and approves the code.
    let mut login = Command::new(env!("CARGO_BIN_EXE_avsd"))
        .args(["login", "--config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn avsd login");
    let stdout = login.stdout.take().expect("stdout");
    let (code_tx, code_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || read_user_code(stdout, code_tx));
    let code = tokio::task::spawn_blocking(move || code_rx.recv_timeout(WAIT))
        .await
        .expect("join")
        .expect("avsd login shows a code");
    assert_eq!(
        *device.daemon.link.borrow(),
        avsd::transport::LinkState::NeedsLogin,
        "nothing connects before the login"
    );
    assert!(sim.admin.approve(&code), "the sim knows code {code}");
    let status = tokio::task::spawn_blocking(move || login.wait())
        .await
        .expect("join")
        .expect("login exit");
    assert!(status.success(), "avsd login failed: {status}");
    let linked = Instant::now();

    let mut link = device.daemon.link.clone();
    tokio::time::timeout(
        WAIT,
        link.wait_for(|s| *s == avsd::transport::LinkState::Connected),
    )
    .await
    .expect("Connected with the new login, without a restart")
    .expect("link state");
    println!(
        "relogin: Connected {:.0} ms after `avsd login` ended",
        linked.elapsed().as_secs_f64() * 1000.0
    );
    device.command(avsd::dialog::DialogCommand::Listen).await;
    device
        .wait_step("the answer spoken", Duration::from_secs(30), |s| {
            matches!(s, avsd::dialog::DialogStep::SpeechFinished { .. })
        })
        .await;
    let recognized = sim.recorder.events("SpeechRecognizer.Recognize");
    assert_eq!(recognized.len(), 1, "one dialog with the new login");
    device.stop().await;
}
