//! Shared set-up for avsd's end-to-end tests: an avs-sim on loopback (real TLS + HTTP/2), a
//! device configuration pointing at it, code-based linking, and a running daemon.
#![allow(dead_code)]
// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use avs_sim::{Fault, Record, SimConfig};
use avs_testkit::sim::{TestSim, start_sim};
use avsd::config::Config;
use avsd::daemon::Daemon;
use avsd::dialog::{DialogCommand, DialogStep, DialogUpdate};
use avsd::transport::LinkState;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The bundled utterance ("Alexa, what time is it?", 16 kHz mono).
pub fn utterance_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/demo/utterance.wav")
}

/// A runtime for test bodies that run inside the virtual audio rig (plain `#[test]`s).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fresh directory for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("avsd-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// Logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=avsd=debug`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A sim answering with `scenario` (TOML), approving code pairs at once.
pub async fn sim(scenario: &str) -> TestSim {
    init_logs();
    start_sim(SimConfig {
        lwa: avs_sim::lwa::LwaConfig {
            auto_approve: true,
            poll_interval: Duration::from_millis(200),
            ..Default::default()
        },
        scenario: avs_sim::Scenario::from_toml(scenario).expect("scenario"),
        ..Default::default()
    })
    .await
    .expect("sim")
}

/// A device configuration for `sim`, with its state under `dir`.
pub fn config(sim: &TestSim, dir: &Path, input: &str, output: &str) -> Config {
    let mut c = Config::defaults().expect("defaults");
    c.cloud.endpoint = sim.url.clone();
    c.cloud.lwa_url = sim.url.clone();
    c.cloud.extra_ca_file = Some(sim.ca_pem.clone());
    c.state_dir = dir.join("state");
    c.control_socket = dir.join("control.sock");
    c.device.serial_number = format!(
        "test-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    );
    c.audio.input = input.to_owned();
    c.audio.output = output.to_owned();
    c
}

/// An audio device spec for a WAV file: the microphone reads it, the speaker writes it.
pub fn wav(path: &Path) -> String {
    format!("wav:{}", path.display())
}

/// [`config`] with no microphone and the speaker into `dir/out.wav`.
pub fn speaker_config(sim: &TestSim, dir: &Path) -> Config {
    config(sim, dir, "none", &wav(&dir.join("out.wav")))
}

/// [`config`] with the bundled utterance as the microphone and the speaker into `dir/out.wav`.
pub fn utterance_config(sim: &TestSim, dir: &Path) -> Config {
    config(
        sim,
        dir,
        &wav(&utterance_path()),
        &wav(&dir.join("out.wav")),
    )
}

/// Writes the config file `avsd run` reads: the cloud at `endpoint` (the sim, or a relay to
/// it), device `serial`, no microphone, the speaker into `output`. The sim's directory goes away
/// with it, so the device keeps its own copy of the CA.
pub fn write_run_config(
    sim: &TestSim,
    endpoint: &url::Url,
    dir: &Path,
    serial: &str,
    output: &Path,
) -> PathBuf {
    let path = dir.join("avsd.toml");
    let ca = dir.join("sim-ca.pem");
    std::fs::copy(&sim.ca_pem, &ca).expect("copy CA");
    let text = format!(
        "[device]\nserial_number = \"{serial}\"\n[cloud]\nendpoint = \"{endpoint}\"\nlwa_url = \"{endpoint}\"\nextra_ca_file = \"{ca}\"\n[paths]\nstate_dir = \"{state}\"\ncontrol_socket = \"{sock}\"\n[audio]\ninput = \"none\"\noutput = \"wav:{out}\"\n",
        ca = ca.display(),
        state = dir.join("state").display(),
        sock = dir.join("control.sock").display(),
        out = output.display(),
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// `avsd run --config <config>` as a child process, its stderr into `log`.
pub fn spawn_avsd_run(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_avsd"))
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("spawn avsd")
}

/// Sends SIGTERM to `child` and waits for it to exit.
pub fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    child.wait().expect("exit")
}

/// `t` as AVS writes times (RFC 3339).
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// `t` to the second, in the ISO 8601 form AVS sends `scheduledTime` in (`+0000`).
pub fn avs_timestamp(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Pushes a directive (JSON envelope) on every downchannel of the sim.
pub async fn push_directive(sim: &TestSim, directive: &serde_json::Value) {
    sim.admin
        .push(None, directive.to_string())
        .await
        .expect("push directive");
}

/// Arms a fault in the sim; returns how many devices it reached.
pub async fn arm_fault(sim: &TestSim, fault: &Fault) -> usize {
    sim.admin.fault(fault).await.expect("arm fault")
}

/// Makes the sim answer the next `count` events with `status`.
pub async fn fail_events(sim: &TestSim, status: u16, count: u32) {
    arm_fault(sim, &Fault::FailEvents { status, count }).await;
}

/// How many requests recorded from `mark` on were answered `status`.
pub fn answered_since(sim: &TestSim, mark: usize, status: u16) -> usize {
    sim.recorder
        .records()
        .iter()
        .skip(mark)
        .filter(|r| r.status == Some(status))
        .count()
}

/// Whether a downchannel was requested from record `mark` on.
pub fn downchannel_since(sim: &TestSim, mark: usize) -> bool {
    sim.recorder
        .records()
        .iter()
        .skip(mark)
        .any(|r| r.path == avs_proto::DIRECTIVES_PATH)
}

/// The first recorded event named `qualified_name`, waited for up to `timeout`.
pub async fn wait_event(sim: &TestSim, qualified_name: &str, timeout: Duration) -> Record {
    sim.recorder
        .wait_for_event(qualified_name, timeout)
        .await
        .unwrap_or_else(|e| panic!("no {qualified_name}: {e}"))
}

/// Code-based linking against the sim.
pub async fn login(config: &Config) {
    let auth = avsd::cli::auth_config(config).expect("auth config");
    tokio::time::timeout(Duration::from_secs(20), avsd::auth::login(&auth, |_| {}))
        .await
        .expect("login in time")
        .expect("login");
}

/// A linked, connected daemon.
pub struct Device {
    pub daemon: Daemon,
    pub shutdown: CancellationToken,
    pub updates: broadcast::Receiver<DialogUpdate>,
}

pub async fn start_device(config: Config) -> Device {
    login(&config).await;
    start_linked_device(config).await
}

/// Starts a daemon with the tokens already stored (a restart, not a new login: a login
/// issues a new refresh token, which avsd treats as a possibly different account).
pub async fn start_linked_device(config: Config) -> Device {
    let shutdown = CancellationToken::new();
    let daemon = Daemon::start(Arc::new(config), shutdown.clone())
        .await
        .expect("daemon");
    let mut link = daemon.link.clone();
    tokio::time::timeout(
        Duration::from_secs(15),
        link.wait_for(|s| *s == LinkState::Connected),
    )
    .await
    .expect("connected in time")
    .expect("link state");
    let updates = daemon.dialog.updates.subscribe();
    Device {
        daemon,
        shutdown,
        updates,
    }
}

impl Device {
    /// Waits for a dialog step matching `f`, returning it.
    pub async fn wait_step(
        &mut self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&DialogStep) -> bool,
    ) -> DialogUpdate {
        tokio::time::timeout(timeout, async {
            loop {
                match self.updates.recv().await {
                    Ok(u) if f(&u.step) => return u,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        panic!("daemon stopped while waiting for {what}")
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// Sends `command` to the dialog core.
    pub async fn command(&self, command: DialogCommand) {
        self.daemon
            .dialog
            .commands
            .send(command)
            .await
            .expect("dialog core gone");
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.daemon.supervise().await;
    }
}

/// Event names (Namespace.Name) the sim recorded, in arrival order, with their token.
pub fn recorded(sim: &TestSim, namespace: &str) -> Vec<(String, String)> {
    sim.recorder
        .records()
        .into_iter()
        .filter_map(|r| r.event)
        .filter(|e| e.namespace == namespace)
        .map(|e| {
            (
                e.name.clone(),
                e.payload["token"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits for the `AudioPlayer.<name>` event about `token`; a timeout lists the AudioPlayer
/// events recorded.
pub async fn wait_player_event(
    sim: &TestSim,
    name: &str,
    token: &str,
    timeout: Duration,
) -> Record {
    let qualified = format!("AudioPlayer.{name}");
    sim.recorder
        .wait_for(0, timeout, &qualified, |r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.qualified_name() == qualified && e.payload["token"] == token)
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{qualified} for {token}: {e}; recorded {:?}",
                recorded(sim, "AudioPlayer")
            )
        })
}

/// Waits until the sim has recorded `n` events named `qualified_name`.
pub async fn wait_events(sim: &TestSim, qualified_name: &str, n: usize, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Read the position first: an event recorded between the check and the wait is then
        // still waited for from before it, never missed.
        let seen = sim.recorder.len();
        if sim.recorder.events(qualified_name).len() >= n {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero()
            || sim
                .recorder
                .wait_for(seen, left, qualified_name, |_| true)
                .await
                .is_err()
        {
            panic!(
                "fewer than {n} {qualified_name} events within {timeout:?}: {:?}",
                sim.recorder.events(qualified_name).len()
            );
        }
    }
}
