//! Security properties as tests: TLS verification cannot be turned off (an untrusted sim is
//! never connected to, and the error names the certificate problem); token files are 0600 and
//! no token string reaches the logs at any level (every crate's tracing captured at TRACE during
//! login, a dialog and a token refresh); avs-sim refuses bad, expired and foreign tokens.
// Test helpers outside #[test] fns: a failed set-up step fails the test, like `expect` in one.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use avs_sim::lwa::LwaConfig;
use avsd::agents::speaker::VolumeCommand;
use avsd::daemon::Daemon;
use avsd::dialog::{DialogCommand, DialogStep};
use avsd::transport::LinkState;
use common::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const QUICK: &str = "[[turn]]\nfinal_speech = \"Okay.\"\n";

/// Everything every test of this binary logged, at TRACE, for every crate.
fn captured() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    let log = LOG.get_or_init(|| Mutex::new(Vec::new()));
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
    log
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        captured()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&captured().lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

fn stored_tokens(dir: &std::path::Path) -> avsd::auth::token_store::StoredTokens {
    avsd::auth::token_store::load(&dir.join("state")).expect("stored tokens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verification_stays_on_and_names_the_certificate_problem() {
    captured();
    let sim = sim(QUICK).await;
    let other = sim_with(LwaConfig::default()).await;
    let dir = test_dir("sec-tls");
    let trusted = speaker_config(&sim, &dir);

    // Login with no extra CA: the LWA stub's certificate is refused.
    let mut untrusted = trusted.clone();
    untrusted.cloud.extra_ca_file = None;
    let auth = avsd::cli::auth_config(&untrusted).expect("auth config");
    // Login treats a TLS failure as transient and keeps retrying: it must never succeed.
    let attempt =
        tokio::time::timeout(Duration::from_secs(3), avsd::auth::login(&auth, |_| {})).await;
    assert!(
        !matches!(attempt, Ok(Ok(()))),
        "login succeeded against an untrusted sim"
    );
    assert!(
        !dir.join("state")
            .join(avsd::auth::token_store::TOKEN_FILE)
            .exists(),
        "no token stored"
    );
    let log = log_text();
    let lwa_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot get a code pair"))
        .collect();
    println!("login without the CA: {:?}", lwa_lines.first());
    assert!(
        !lwa_lines.is_empty(),
        "the failed login attempts are logged"
    );

    // Logged in with the right CA, the daemon is then run without it, and with another sim's CA.
    login(&trusted).await;
    for (name, ca) in [
        ("no extra CA", None),
        ("another sim's CA", Some(other.ca_pem.clone())),
    ] {
        let mut cfg = trusted.clone();
        cfg.cloud.extra_ca_file = ca;
        let mark = sim.recorder.len();
        let shutdown = CancellationToken::new();
        let daemon = Daemon::start(Arc::new(cfg), shutdown.clone())
            .await
            .expect("daemon starts offline");
        let mut link = daemon.link.clone();
        let mut seen = Vec::new();
        // Two failed attempts in a row, never Connected in between.
        let saw_two_failures = tokio::time::timeout(WAIT, async {
            loop {
                link.changed().await.expect("link state");
                let s = link.borrow_and_update().clone();
                seen.push(s.clone());
                assert_ne!(
                    s,
                    LinkState::Connected,
                    "{name}: connected to an untrusted server"
                );
                if matches!(s, LinkState::WaitingToRetry { attempt, .. } if attempt >= 2) {
                    return;
                }
            }
        })
        .await;
        assert!(
            saw_two_failures.is_ok(),
            "{name}: no retries seen: {seen:?}"
        );
        assert!(
            !downchannel_since(&sim, mark),
            "{name}: a downchannel reached the sim"
        );
        shutdown.cancel();
        let _ = daemon.supervise().await;
    }
    let log = log_text();
    let cert_lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("AVS connection lost or refused") && l.to_lowercase().contains("certificate")
        })
        .collect();
    assert!(
        !cert_lines.is_empty(),
        "the link's error names the certificate problem"
    );
    println!("link without the CA: {}", cert_lines[0]);

    // Only the explicit extra CA makes the sim trusted, and nothing in the config can turn
    // verification off: such a key is refused by name.
    let device = start_device(trusted).await;
    device.stop().await;
    for key in [
        "insecure = true",
        "danger_accept_invalid_certs = true",
        "verify_tls = false",
    ] {
        let text = format!("[cloud]\n{key}\n");
        let err = avsd::config::Config::from_toml(&text, std::path::Path::new("avsd.toml"), &[])
            .expect_err(key);
        let key_name = key.split(' ').next().unwrap_or_default();
        assert!(err.to_string().contains(key_name), "{key}: {err}");
    }
}

async fn sim_with(lwa: LwaConfig) -> avs_testkit::sim::TestSim {
    avs_testkit::sim::start_sim(avs_sim::SimConfig {
        lwa: LwaConfig {
            auto_approve: true,
            poll_interval: Duration::from_millis(200),
            ..lwa
        },
        scenario: avs_sim::Scenario::from_toml(QUICK).expect("scenario"),
        ..Default::default()
    })
    .await
    .expect("sim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_is_0600_and_no_token_reaches_the_logs_at_trace() {
    captured();
    let sim = sim(QUICK).await;
    let dir = test_dir("sec-tokens");
    let cfg = utterance_config(&sim, &dir);
    login(&cfg).await;
    let first = stored_tokens(&dir);
    let shutdown = CancellationToken::new();
    let daemon = Daemon::start(Arc::new(cfg), shutdown.clone())
        .await
        .expect("daemon");
    let mut link = daemon.link.clone();
    tokio::time::timeout(WAIT, link.wait_for(|s| *s == LinkState::Connected))
        .await
        .expect("connected")
        .expect("link");
    let mut updates = daemon.dialog.updates.subscribe();

    // A whole dialog (the Recognize carries the bearer token) ...
    daemon
        .dialog
        .commands
        .send(DialogCommand::Listen)
        .await
        .expect("listen");
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(u) = updates.recv().await
                && matches!(u.step, DialogStep::TurnClosed { .. })
            {
                return;
            }
        }
    })
    .await
    .expect("the dialog finished");
    // ... then a refused event, so the token is refreshed and the new one used.
    fail_events(&sim, 403, 1).await;
    let mark = sim.recorder.len();
    daemon
        .dialog
        .commands
        .send(DialogCommand::Volume(VolumeCommand::Set(44)))
        .await
        .expect("volume");
    sim.recorder
        .wait_for(mark, WAIT, "VolumeChanged after the refresh", |r| {
            r.event.as_ref().is_some_and(|e| e.name == "VolumeChanged")
        })
        .await
        .expect("VolumeChanged");
    shutdown.cancel();
    let _ = daemon.supervise().await;
    let second = stored_tokens(&dir);
    assert_ne!(
        first.access_token, second.access_token,
        "the 403 caused a refresh"
    );

    let path = avsd::auth::token_store::token_path(&dir.join("state"));
    let mode = std::fs::metadata(&path)
        .expect("token file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());

    let log = log_text();
    assert!(log.contains("TRACE"), "the capture holds TRACE lines");
    assert!(
        log.contains("h2::") && log.contains("rustls::"),
        "third-party crates are captured too"
    );
    assert!(
        log.len() > 10_000,
        "the capture holds the whole run ({} bytes)",
        log.len()
    );
    for (what, token) in [
        ("first access token", &first.access_token),
        ("first refresh token", &first.refresh_token),
        ("refreshed access token", &second.access_token),
        ("refreshed refresh token", &second.refresh_token),
    ] {
        // The random tail alone, so a truncated or prefixed token is caught too.
        let tail = &token[token.len().saturating_sub(32)..];
        assert!(tail.len() >= 16, "{what} is suspiciously short");
        assert!(!log.contains(tail), "the {what} appears in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_refuses_bad_expired_and_foreign_tokens() {
    captured();
    let sim = sim_with(LwaConfig {
        access_token_lifetime: Duration::from_millis(600),
        ..LwaConfig::default()
    })
    .await;
    let foreign_sim = sim_with(LwaConfig::default()).await;
    let good = sim.token("SN-SEC-1");
    let foreign = foreign_sim.token("SN-SEC-1");
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    let mut c = sim.client().await.expect("client");
    assert_eq!(
        c.ping(&good).await.expect("ping").status,
        204,
        "a good token is accepted"
    );
    for (what, token) in [
        ("bad", tampered.as_str()),
        ("foreign", foreign.as_str()),
        ("empty", ""),
    ] {
        assert_eq!(
            c.ping(token).await.expect("ping").status,
            403,
            "{what} token on /ping"
        );
        assert_eq!(
            c.open_downchannel(token).await.expect("downchannel").status,
            403,
            "{what} token on the downchannel"
        );
    }
    // The same token once expired.
    let expires = tokio::time::Instant::now() + Duration::from_millis(700);
    tokio::time::sleep_until(expires).await;
    assert_eq!(
        c.ping(&good).await.expect("ping").status,
        403,
        "expired token on /ping"
    );
    assert_eq!(
        c.open_downchannel(&good).await.expect("downchannel").status,
        403,
        "expired token on the downchannel"
    );

    // The daemon holding foreign tokens: the downchannel is refused, the refresh is refused,
    // and the link asks for a new login instead of connecting.
    let dir = test_dir("sec-foreign");
    let cfg_foreign = speaker_config(&foreign_sim, &dir);
    login(&cfg_foreign).await;
    let mut cfg = speaker_config(&sim, &dir);
    cfg.device.serial_number = cfg_foreign.device.serial_number.clone();
    let mark = sim.recorder.len();
    let shutdown = CancellationToken::new();
    let daemon = Daemon::start(Arc::new(cfg), shutdown.clone())
        .await
        .expect("daemon");
    // The refused refresh removes the token file (the auth task's "needs login" state). The
    // link only shows NeedsLogin after its token wait (30 s) runs out, so that is not awaited.
    let token_file = dir.join("state").join(avsd::auth::token_store::TOKEN_FILE);
    let removed = tokio::time::timeout(WAIT, async {
        while token_file.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(removed.is_ok(), "the rejected tokens were not dropped");
    let state = daemon.link.borrow().clone();
    assert!(
        matches!(
            state,
            LinkState::Connecting | LinkState::WaitingToRetry { .. } | LinkState::NeedsLogin
        ),
        "{state:?}"
    );
    assert!(
        sim.recorder
            .records()
            .iter()
            .skip(mark)
            .any(|r| r.path == avs_proto::DIRECTIVES_PATH && r.status == Some(403)),
        "the sim refused the foreign token on the downchannel"
    );
    assert!(
        !sim.recorder
            .records()
            .iter()
            .skip(mark)
            .any(|r| r.path == avs_proto::DIRECTIVES_PATH && r.status == Some(200)),
        "a downchannel was opened with foreign tokens"
    );
    shutdown.cancel();
    let _ = daemon.supervise().await;
}
