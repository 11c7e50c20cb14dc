//! The `avs-sim` binary: `--help`, the ready file, a scenario file, `--auto-approve`, a clean
//! exit on SIGTERM, and a refused scenario file.
// Integration tests: helpers panic on failure like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use avs_testkit::h2client::H2Client;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_avs-sim");

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < timeout, "avs-sim did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_lists_the_flags() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--ready-file",
        "--scenario",
        "--auto-approve",
        "--access-token-lifetime",
        "--skill-endpoint",
        "--state-dir",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn a_bad_scenario_is_refused() {
    let dir = std::env::temp_dir().join(format!("avs-sim-bin-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[turn]]\nnot_a_key = 1\n").unwrap();
    let out = Command::new(BIN)
        .arg("--scenario")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_a_key"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn ready_file_link_downchannel_and_sigterm() {
    let dir = std::env::temp_dir().join(format!("avs-sim-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ready = dir.join("ready.json");
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/scenarios/demo.toml");
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--auto-approve",
            "--poll-interval",
            "1",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .arg("--scenario")
        .arg(&scenario)
        .arg("--state-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "no ready file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    assert_eq!(info["pid"].as_u64(), Some(u64::from(child.id())));
    let url = url::Url::parse(info["url"].as_str().unwrap()).unwrap();
    assert_eq!(url.scheme(), "https");
    assert_ne!(url.port(), Some(0));
    let ca = PathBuf::from(info["ca"].as_str().unwrap());
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    let mut c = H2Client::connect(&url, &ca).await.unwrap();
    let scope = json!({"alexa:all": {"productID": "p", "productInstanceAttributes": {"deviceSerialNumber": "SN-BIN"}}}).to_string();
    let client_id = "amzn1.application-oa2-client.bin";
    let (status, pair) = c.create_code_pair(client_id, &scope).await.unwrap();
    assert_eq!(status, 200);
    let (status, tokens) = c.poll_code_pair(&pair).await.unwrap();
    assert_eq!(status, 200, "auto-approved: {tokens}");
    let dc = c
        .open_downchannel(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(dc.status, 200);
    assert_eq!(c.max_send_streams(), 10, "SETTINGS_MAX_CONCURRENT_STREAMS");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_exit(&mut child, Duration::from_secs(15));
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
