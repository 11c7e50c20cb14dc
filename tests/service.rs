//! The real `avsd run` binary as systemd sees it: the sd_notify protocol over a Unix datagram
//! socket (`READY=1`, `STATUS=` with the link state, a steady `WATCHDOG=1`, `STOPPING=1` and exit 0
//! on SIGTERM), the exit code when the device was never linked, and `avsd selftest connect`
//! against an avs-sim on loopback (real TLS + HTTP/2).

// Helpers outside #[test] functions (and tests/common) also fail the test by panicking.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use avs_sim::SimConfig;
use avs_testkit::sim::{TestSim, start_sim};
use avsd::config::Config;
use tokio::net::UnixDatagram;

const WATCHDOG_USEC: u64 = 400_000;

async fn sim() -> TestSim {
    start_sim(SimConfig {
        lwa: avs_sim::lwa::LwaConfig {
            auto_approve: true,
            poll_interval: Duration::from_millis(200),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    .expect("sim")
}

/// Writes the config file `avsd run` reads: the sim, no microphone, the speaker into a WAV file.
fn write_config(sim: &TestSim, dir: &Path) -> PathBuf {
    let path = dir.join("avsd.toml");
    let text = format!(
        r#"[device]
serial_number = "service-{pid}"
[cloud]
endpoint = "{url}"
lwa_url = "{url}"
extra_ca_file = "{ca}"
[paths]
state_dir = "{dir}/state"
control_socket = "{dir}/control.sock"
[audio]
input = "none"
output = "wav:{dir}/out.wav"
"#,
        pid = std::process::id(),
        url = sim.url,
        ca = sim.ca_pem.display(),
        dir = dir.display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn spawn_avsd(config: &Path, dir: &Path, notify: Option<&Path>) -> Child {
    let log = std::fs::File::create(dir.join("avsd.log")).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_avsd"));
    cmd.arg("--config")
        .arg(config)
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(socket) = notify {
        cmd.env("NOTIFY_SOCKET", socket)
            .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string());
    }
    cmd.spawn().expect("spawn avsd")
}

/// Waits for the child to exit, polling (the runtime keeps serving the in-process sim meanwhile).
async fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("avsd.log")).unwrap_or_default()
}

/// Kills the child if a test fails before it ends it.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One sd_notify datagram, split into its `KEY=value` lines.
async fn next_message(socket: &UnixDatagram, within: Duration) -> Option<(Instant, Vec<String>)> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, socket.recv(&mut buf))
        .await
        .ok()?
        .expect("recv on the notify socket");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some((
        Instant::now(),
        text.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_speaks_the_notify_protocol_and_stops_on_sigterm() {
    let dir = common::test_dir("service-notify");
    let sim = sim().await;
    let config_path = write_config(&sim, &dir);
    let config = Config::load(&config_path).expect("the written config loads");
    common::login(&config).await;

    let socket_path = dir.join("notify.sock");
    let std_socket = StdUnixDatagram::bind(&socket_path).expect("bind notify socket");
    std_socket.set_nonblocking(true).expect("nonblocking");
    let socket = UnixDatagram::from_std(std_socket).expect("tokio socket");

    let spawned = Instant::now();
    let mut child = Reaper(spawn_avsd(&config_path, &dir, Some(&socket_path)));
    let pid = child.0.id();

    // Until connected: READY=1 once, STATUS= following the link, WATCHDOG=1 from then on.
    let mut ready_at = None;
    let mut statuses = Vec::new();
    let mut watchdogs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some((at, lines)) = next_message(&socket, Duration::from_secs(5)).await else {
            panic!(
                "no notify message for 5 s (ready={ready_at:?}, statuses={statuses:?}); log:\n{}",
                log_of(&dir)
            );
        };
        for line in lines {
            match line.as_str() {
                "READY=1" => {
                    assert!(ready_at.is_none(), "READY=1 sent twice");
                    ready_at = Some(at);
                }
                "WATCHDOG=1" => watchdogs.push(at),
                l if l.starts_with("STATUS=") => statuses.push(l["STATUS=".len()..].to_owned()),
                "STOPPING=1" => panic!("STOPPING=1 before SIGTERM; log:\n{}", log_of(&dir)),
                other => panic!("unexpected notify line {other:?}"),
            }
        }
        let connected = statuses.iter().any(|s| s == "connected");
        let after_ready = ready_at.map_or(0, |r| watchdogs.iter().filter(|w| **w >= r).count());
        if connected && after_ready >= 3 {
            break;
        }
    }
    let ready_at = ready_at.unwrap_or_else(|| panic!("no READY=1; log:\n{}", log_of(&dir)));
    assert!(
        statuses.iter().any(|s| s == "connected"),
        "STATUS never said connected: {statuses:?}; log:\n{}",
        log_of(&dir)
    );
    eprintln!(
        "READY=1 {} ms after spawn; statuses {statuses:?}",
        (ready_at - spawned).as_millis()
    );

    // The watchdog keeps coming at WatchdogSec/2 (200 ms): at least 5 in the next 2 s, and no
    // gap longer than the watchdog period itself.
    let window = Instant::now() + Duration::from_secs(2);
    let mut pings = Vec::new();
    while Instant::now() < window {
        let left = window.saturating_duration_since(Instant::now());
        let Some((at, lines)) = next_message(&socket, left).await else {
            break;
        };
        pings.extend(lines.iter().filter(|l| *l == "WATCHDOG=1").map(|_| at));
    }
    assert!(pings.len() >= 5, "only {} WATCHDOG=1 in 2 s", pings.len());
    let max_gap = pings
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    assert!(
        max_gap < Duration::from_micros(WATCHDOG_USEC),
        "watchdog gap {max_gap:?} ≥ WatchdogSec"
    );

    // SIGTERM: STOPPING=1, then exit 0, all within 5 s.
    let killed = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid} failed");
    let mut stopping = false;
    while !stopping {
        let left = (killed + Duration::from_secs(5)).saturating_duration_since(Instant::now());
        let Some((_, lines)) = next_message(&socket, left).await else {
            panic!(
                "no STOPPING=1 within 5 s of SIGTERM; log:\n{}",
                log_of(&dir)
            );
        };
        stopping = lines.iter().any(|l| l == "STOPPING=1");
        assert!(
            !lines.iter().any(|l| l == "READY=1"),
            "READY=1 again while stopping"
        );
    }
    let left = (killed + Duration::from_secs(5)).saturating_duration_since(Instant::now());
    let status = wait_exit(&mut child.0, left)
        .await
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM; log:\n{}", log_of(&dir)));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; log:\n{}",
        log_of(&dir)
    );
    eprintln!("stopped {} ms after SIGTERM", killed.elapsed().as_millis());
    assert!(
        log_of(&dir).contains("SIGTERM"),
        "the log says why it stopped"
    );

    sim.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_without_tokens_exits_78_and_says_to_log_in() {
    let dir = common::test_dir("service-no-tokens");
    let sim = sim().await;
    let config_path = write_config(&sim, &dir);
    let mut child = Reaper(spawn_avsd(&config_path, &dir, None));
    let status = wait_exit(&mut child.0, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| {
            panic!(
                "avsd run without tokens kept running; log:\n{}",
                log_of(&dir)
            )
        });
    let log = log_of(&dir);
    assert_eq!(status.code(), Some(78), "EX_CONFIG; log:\n{log}");
    assert!(
        log.contains("avsd login"),
        "tells to run avsd login:\n{log}"
    );
    assert!(
        sim.recorder.records().is_empty(),
        "nothing was sent to the cloud: {:?}",
        sim.recorder.records().len()
    );
    sim.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selftest_connect_pings_over_tls13_and_h2() {
    let dir = common::test_dir("service-selftest");
    let sim = sim().await;
    let config_path = write_config(&sim, &dir);
    let config = Config::load(&config_path).expect("config");

    // Not linked yet: the sim refuses the ping, but TLS 1.3 + h2 worked.
    let report = avsd::selftest::check_connect(&sim.url, Some(&sim.ca_pem), None)
        .await
        .expect("connect");
    assert_eq!(report.tls_version, "TLSv1.3");
    assert_eq!(report.alpn, "h2");
    assert_eq!(report.status, 403);

    common::login(&config).await;
    let report =
        avsd::selftest::check_connect(&sim.url, Some(&sim.ca_pem), Some(&config.state_dir))
            .await
            .expect("connect with token");
    assert_eq!(report.status, 204);
    assert!(
        sim.recorder
            .records()
            .iter()
            .any(|r| r.path == avs_proto::PING_PATH && r.status == Some(204)),
        "the sim saw the authorised ping"
    );

    // Without the sim's CA the handshake must fail: verification is never off.
    let err = avsd::selftest::check_connect(&sim.url, None, None)
        .await
        .expect_err("unknown CA");
    assert!(
        matches!(
            err,
            avsd::selftest::SelftestError::Connect(
                avsd::transport::connection::ConnectError::Tls { .. }
            )
        ),
        "{err}"
    );

    // And the binary itself, as cross-check runs it (on a blocking thread: the sim is served by
    // this test's runtime meanwhile).
    let (url, ca, state) = (
        sim.url.to_string(),
        sim.ca_pem.clone(),
        config.state_dir.clone(),
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_avsd"))
            .args(["selftest", "connect", "--endpoint", &url, "--ca"])
            .arg(ca)
            .arg("--state-dir")
            .arg(state)
            .args(["--expect-status", "204"])
            .output()
    })
    .await
    .expect("join")
    .expect("run avsd selftest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("tls=TLSv1.3 alpn=h2 GET /ping status=204"),
        "{stdout}"
    );

    sim.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
