//! Memory of an avs-sim process holding 50 connected devices.
//!
//! Run: `cargo bench -p avs-sim --bench sim_memory` (add `-- 200` for another device count).
//! It starts the real `avs-sim` binary with a ready file, reads its resident set size
//! (`VmRSS`, `VmHWM` from `/proc/<pid>/status`) idle, then connects N devices (one HTTP/2
//! connection each, downchannel open, `SynchronizeState` sent, one directive pushed to each and
//! received), reads it again, and prints the figures. Linux only.
// A bench binary: failures abort with a message, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use avs_testkit::h2client::{H2Client, event_json};
use serde_json::json;

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn admin_post(c: &mut H2Client, path: &str, body: serde_json::Value) -> serde_json::Value {
    c.post_json(path, &body).await.unwrap().1
}

#[tokio::main]
async fn main() {
    let devices: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("avs-sim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ready = dir.join("ready.json");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_avs-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--auto-approve",
            "--poll-interval",
            "0",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .arg("--state-dir")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ready.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "avs-sim did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let url = url::Url::parse(info["url"].as_str().unwrap()).unwrap();
    let ca = PathBuf::from(info["ca"].as_str().unwrap());
    let pid = info["pid"].as_u64().unwrap() as u32;
    let (idle_rss, _) = rss_kib(pid);

    let client_id = "amzn1.application-oa2-client.bench";
    let mut clients = Vec::new();
    let mut downchannels = Vec::new();
    let connect_start = Instant::now();
    for n in 0..devices {
        let mut c = H2Client::connect(&url, &ca).await.unwrap();
        let serial = format!("BENCH-{n:04}");
        let scope = json!({"alexa:all": {"productID": "bench", "productInstanceAttributes": {"deviceSerialNumber": serial}}}).to_string();
        let (_, pair) = c.create_code_pair(client_id, &scope).await.unwrap();
        let (_, tokens) = c.poll_code_pair(&pair).await.unwrap();
        let token = tokens["access_token"].as_str().unwrap().to_owned();
        let dc = c.open_downchannel(&token).await.unwrap();
        assert_eq!(dc.status, 200);
        let r = c
            .post_event(&token, &event_json("System", "SynchronizeState", json!({})))
            .await
            .unwrap();
        assert_eq!(r.status, 204);
        downchannels.push(dc.parts().unwrap());
        clients.push(c);
    }
    let connect_time = connect_start.elapsed();
    let push = json!({"directive": {"header": {"namespace": "System", "name": "ResetUserInactivity", "messageId": "bench"}, "payload": {}}});
    let pushed = admin_post(&mut clients[0], "/admin/push", json!({"directive": push})).await;
    assert_eq!(pushed["pushed"].as_u64(), Some(devices as u64));
    for dc in &mut downchannels {
        let part = tokio::time::timeout(Duration::from_secs(10), dc.next())
            .await
            .unwrap()
            .unwrap();
        assert!(part.is_some());
    }
    let (busy_rss, peak) = rss_kib(pid);
    println!(
        "avs-sim memory with {devices} connected devices (downchannel open, SynchronizeState, one push each)"
    );
    println!("  idle RSS           {idle_rss:>8} KiB");
    println!("  RSS with devices   {busy_rss:>8} KiB");
    println!("  peak RSS (VmHWM)   {peak:>8} KiB");
    println!(
        "  per device         {:>8.1} KiB",
        (busy_rss.saturating_sub(idle_rss)) as f64 / devices as f64
    );
    println!("  connect+link time  {connect_time:>8.2?} for {devices} devices");
    drop(downchannels);
    drop(clients);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
