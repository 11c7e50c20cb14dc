//! Login with Amazon against avs-sim's LWA stub over TLS: code-based linking end to end
//! (pending, slow_down, expiry and a new code pair), the token file (0600, atomic, clear errors),
//! refresh ahead of expiry and on demand, revoked refresh tokens, and the link using the result.

mod link_support;

use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use avs_sim::SimConfig;
use avs_sim::lwa::LwaConfig;
use avsd::auth::token_store::{self, StoredTokens};
use avsd::auth::{AuthConfig, AuthState, CodePair, has_tokens, login, logout, spawn_auth};
use avsd::transport::{LinkState, LinkTuning};
use link_support::*;
use tokio_util::sync::CancellationToken;

fn state_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("avsd-link-auth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn auth_config(sim: &Sim, dir: &std::path::Path) -> AuthConfig {
    AuthConfig {
        lwa_base_url: sim.handle.url.clone(),
        client_id: CLIENT_ID.into(),
        product_id: PRODUCT_ID.into(),
        device_serial_number: SERIAL.into(),
        state_dir: dir.to_owned(),
        tls: sim.tls(),
    }
}

fn lwa(config: LwaConfig) -> SimConfig {
    SimConfig {
        lwa: config,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_honours_pending_and_slow_down_then_takes_a_new_code_when_one_expires() {
    // The stub advertises interval 1 s (whole seconds) but wants 1.5 s between polls, so the
    // second poll gets slow_down; the first code is never approved and expires after 5 s.
    let sim = Sim::start(lwa(LwaConfig {
        code_pair_lifetime: Duration::from_secs(5),
        poll_interval: Duration::from_millis(1500),
        ..LwaConfig::default()
    }))
    .await;
    let dir = state_dir("login");
    let cfg = auth_config(&sim, &dir);
    let codes: Arc<Mutex<Vec<CodePair>>> = Arc::default();
    let admin = sim.handle.admin.clone();
    let seen = codes.clone();
    let started = std::time::Instant::now();
    tokio::time::timeout(
        Duration::from_secs(30),
        login(&cfg, move |code| {
            let mut seen = seen.lock().unwrap();
            seen.push(code.clone());
            if seen.len() == 2 {
                assert!(admin.approve(&code.user_code));
            }
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let codes = codes.lock().unwrap().clone();
    assert_eq!(codes.len(), 2, "a second code pair after the first expired");
    assert_ne!(codes[0].user_code, codes[1].user_code);
    assert_eq!(codes[0].verification_uri, "https://amazon.com/us/code");
    assert_eq!(codes[0].expires_in, Duration::from_secs(5));
    assert!(started.elapsed() >= Duration::from_secs(5));

    // Token polls of the first pair: 1 s apart, then 2 s after slow_down; then the new pair.
    let polls: Vec<_> = sim
        .handle
        .recorder
        .records()
        .into_iter()
        .filter(|r| r.path.eq_ignore_ascii_case("/auth/O2/token"))
        .collect();
    let statuses: Vec<_> = polls.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![Some(400), Some(400), Some(400), Some(200)],
        "{polls:?}"
    );
    let gap = |i: usize| polls[i + 1].at - polls[i].at;
    assert!(
        gap(0) >= Duration::from_millis(950) && gap(0) < Duration::from_millis(1900),
        "{:?}",
        gap(0)
    );
    assert!(
        gap(1) >= Duration::from_millis(1950),
        "slow_down doubles the interval: {:?}",
        gap(1)
    );

    // The token file: 0600, only the file itself in the directory (no temp leftovers).
    assert!(has_tokens(&dir));
    let path = token_store::token_path(&dir);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("tokens.json")]);
    let stored = token_store::load(&dir).unwrap();
    assert!(stored.access_token.starts_with("Atza|") && stored.refresh_token.starts_with("Atzr|"));

    // The stored token opens an AVS connection.
    let shutdown = CancellationToken::new();
    let (auth, auth_task) = spawn_auth(cfg.clone(), shutdown.clone()).unwrap();
    tokio::spawn(auth_task);
    let mut link = spawn_test_link(
        sim.link_config(&sim.handle.url),
        LinkTuning::default(),
        auth,
    );
    connected(&mut link.state).await;
    drop(link);
    shutdown.cancel();

    logout(&dir).unwrap();
    assert!(!has_tokens(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_corrupt_token_files_are_named_with_the_login_hint() {
    let dir = state_dir("corrupt");
    let sim = Sim::start(SimConfig::default()).await;
    let cfg = auth_config(&sim, &dir);
    let err = spawn_auth(cfg.clone(), CancellationToken::new())
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains(&dir.join("tokens.json").display().to_string())
            && text.contains("avsd login"),
        "{text}"
    );
    assert!(err.requires_relogin());

    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokens.json"), b"{\"access_token\": \"Atza|x\", ").unwrap();
    let err = spawn_auth(cfg, CancellationToken::new()).err().unwrap();
    let text = err.to_string();
    assert!(
        text.contains("corrupt") && text.contains("tokens.json") && text.contains("avsd login"),
        "{text}"
    );
    assert!(err.requires_relogin());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_ahead_of_expiry_and_on_demand_and_stores_the_new_token() {
    let sim = Sim::start(lwa(LwaConfig {
        access_token_lifetime: Duration::from_secs(4),
        ..LwaConfig::default()
    }))
    .await;
    let dir = state_dir("refresh");
    let (access, refresh) = sim.handle.admin.issue_token(CLIENT_ID, PRODUCT_ID, SERIAL);
    let issued = StoredTokens::issued(
        access.clone(),
        refresh,
        Duration::from_secs(4),
        SystemTime::now(),
    );
    token_store::save(&dir, &issued).unwrap();
    let shutdown = CancellationToken::new();
    let (auth, task) = spawn_auth(auth_config(&sim, &dir), shutdown.clone()).unwrap();
    tokio::spawn(task);
    let mut token = auth.access_token();
    let first = token.borrow_and_update().clone().unwrap();
    assert_eq!(first, avsd::auth::AccessToken::new(access.clone()));
    assert!(
        !format!("{first:?} {first}").contains(&access),
        "tokens are redacted"
    );

    // Lifetime 4 s, lead a quarter of it: refreshed about 3 s after issue, before expiry.
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), token.changed())
        .await
        .unwrap()
        .unwrap();
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed < Duration::from_secs(4),
        "refreshed after {elapsed:?}"
    );
    let second = token.borrow_and_update().clone().unwrap();
    assert_ne!(second, first);
    let stored = token_store::load(&dir).unwrap();
    assert_eq!(
        avsd::auth::AccessToken::new(stored.access_token.clone()),
        second
    );
    assert_eq!(
        std::fs::metadata(token_store::token_path(&dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // On demand (what the link does after a 403): at once, not 3 s later.
    let t1 = std::time::Instant::now();
    auth.refresh_now();
    tokio::time::timeout(Duration::from_secs(10), token.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(t1.elapsed() < Duration::from_secs(2), "{:?}", t1.elapsed());
    assert_ne!(token.borrow_and_update().clone().unwrap(), second);
    let mut state = auth.state();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == AuthState::Authorized))
        .await
        .unwrap()
        .unwrap();
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_refresh_token_means_needs_login_for_auth_and_link() {
    let sim = Sim::start(SimConfig::default()).await;
    let dir = state_dir("revoked");
    let expired = StoredTokens::issued(
        "Atza|expired".into(),
        "Atzr|unknown-to-the-stub".into(),
        Duration::from_secs(3600),
        SystemTime::now() - Duration::from_secs(7200),
    );
    token_store::save(&dir, &expired).unwrap();
    let shutdown = CancellationToken::new();
    let (auth, task) = spawn_auth(auth_config(&sim, &dir), shutdown.clone()).unwrap();
    assert!(
        auth.access_token().borrow().is_none(),
        "an expired token is not published"
    );
    tokio::spawn(task);
    let mut state = auth.state();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == AuthState::NeedsLogin))
        .await
        .unwrap()
        .unwrap();
    assert!(!has_tokens(&dir), "the revoked tokens are cleared");
    let mut link = spawn_test_link(
        sim.link_config(&sim.handle.url),
        LinkTuning::default(),
        auth,
    );
    wait_state(&mut link.state, "NeedsLogin", |s| {
        *s == LinkState::NeedsLogin
    })
    .await;
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_403_gets_a_real_refresh_and_the_event_goes_through_with_the_new_token() {
    let sim = Sim::start(SimConfig::default()).await;
    let dir = state_dir("event403");
    let (access, refresh) = sim.handle.admin.issue_token(CLIENT_ID, PRODUCT_ID, SERIAL);
    token_store::save(
        &dir,
        &StoredTokens::issued(
            access,
            refresh,
            Duration::from_secs(3600),
            SystemTime::now(),
        ),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let (auth, auth_task) = spawn_auth(auth_config(&sim, &dir), shutdown.clone()).unwrap();
    tokio::spawn(auth_task);
    let mut token = auth.access_token();
    let before = token.borrow_and_update().clone().unwrap();
    let mut link = spawn_test_link(
        sim.link_config(&sim.handle.url),
        LinkTuning::default(),
        auth,
    );
    connected(&mut link.state).await;
    sim.fault(&avs_sim::Fault::FailEvents {
        status: 403,
        count: 1,
    })
    .await;
    let mark = sim.handle.recorder.len();
    let id = send_event(&link.outbox, "VolumeChanged", 3);
    tokio::time::timeout(WAIT, token.changed())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(token.borrow_and_update().clone().unwrap(), before);
    accepted(&sim, mark, &id).await;
    let token_refreshes = sim
        .handle
        .recorder
        .records()
        .iter()
        .skip(mark)
        .filter(|r| r.path == "/auth/O2/token" && r.status == Some(200))
        .count();
    assert_eq!(token_refreshes, 1);
    assert_eq!(*link.state.borrow(), LinkState::Connected);
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}
