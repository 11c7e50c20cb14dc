//! Alerts end to end: an alarm set by the cloud survives SIGKILL, fires on time with the cloud
//! gone, and is heard; an alert more than 30 minutes overdue is dropped with AlertStopped; an
//! alarm's asset is downloaded when it is set and heard when it rings offline (a corrupt or
//! unreachable one gives the bundled alarm), and deleted once the alert is over.

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use avs_testkit::audio::read_wav_mono;
use common::*;
use serde_json::json;

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_survives_sigkill_and_fires_offline_on_time() {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir("alarm-restart");
    let config_path = write_run_config(&sim, &sim.url, &dir, "alerts-test", &dir.join("first.wav"));
    login(&avsd::config::Config::load(&config_path).expect("config")).await;

    let mut first = spawn_avsd_run(&config_path, &dir.join("first.log"));
    wait_event(&sim, "System.SynchronizeState", Duration::from_secs(15)).await;
    let fire_at = unix_now() + Duration::from_secs(8);
    let scheduled =
        time::OffsetDateTime::from_unix_timestamp(fire_at.as_secs() as i64).expect("time");
    let fire_at = Duration::from_secs(fire_at.as_secs());
    let stamp = avs_timestamp(scheduled);
    let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert", "messageId": "a-1"},
        "payload": {"token": "alarm-1", "type": "ALARM", "scheduledTime": stamp}}});
    push_directive(&sim, &set).await;
    wait_event(&sim, "Alerts.SetAlertSucceeded", Duration::from_secs(5)).await;
    let stored = std::fs::read_to_string(dir.join("state/alerts.json")).expect("alerts stored");
    assert!(stored.contains("alarm-1"));

    // Power cut: no chance to clean up. Then the cloud disappears too.
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    sim.stop().await;

    let second_wav = dir.join("second.wav");
    let config_path = {
        let text = std::fs::read_to_string(&config_path)
            .expect("config")
            .replace("first.wav", "second.wav");
        std::fs::write(&config_path, text).expect("rewrite config");
        config_path
    };
    let spawned_at = unix_now();
    let started = Instant::now();
    let mut second = spawn_avsd_run(&config_path, &dir.join("second.log"));
    let wait = fire_at.saturating_sub(unix_now()) + Duration::from_secs(3);
    tokio::time::sleep(wait).await;
    let stop = avsd::control::request(&dir.join("control.sock"), &avsd::control::Request::Stop)
        .await
        .expect("avsd stop");
    assert_eq!(stop["ok"], true);
    let status = sigterm_and_wait(&mut second);
    assert!(
        status.success(),
        "avsd exited with {status}; log:\n{}",
        std::fs::read_to_string(dir.join("second.log")).unwrap_or_default()
    );
    let _ = started;

    let (played, rate) = read_wav_mono(&second_wav).expect("played wav");
    let first_loud = played
        .iter()
        .position(|s| s.abs() > 0.05)
        .expect("the alarm was heard");
    let heard_at = spawned_at + Duration::from_secs_f64(first_loud as f64 / f64::from(rate));
    let late = heard_at.as_secs_f64() - fire_at.as_secs_f64();
    eprintln!("alarm heard {:.0} ms after its time", late * 1000.0);
    assert!(late.abs() < 1.0, "alarm heard {late:.3} s off its time");
    let after = std::fs::read_to_string(dir.join("state/alerts.json")).expect("alerts file");
    assert!(
        !after.contains("alarm-1"),
        "a stopped alarm is removed: {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_more_than_30_minutes_overdue_is_dropped() {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir("stale-alert");
    let stale = time::OffsetDateTime::now_utc() - time::Duration::minutes(31);
    let late = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    std::fs::create_dir_all(dir.join("state")).expect("state dir");
    std::fs::write(
        dir.join("state/alerts.json"),
        json!([
            {"token": "stale-1", "kind": "TIMER", "scheduled": rfc3339(stale)},
            {"token": "late-1", "kind": "TIMER", "scheduled": rfc3339(late)}
        ])
        .to_string(),
    )
    .expect("alerts.json");
    let device = start_device(speaker_config(&sim, &dir)).await;
    let stopped = wait_event(&sim, "Alerts.AlertStopped", Duration::from_secs(10)).await;
    assert_eq!(stopped.event.expect("event").payload["token"], "stale-1");
    let started = wait_event(&sim, "Alerts.AlertStarted", Duration::from_secs(10)).await;
    assert_eq!(
        started.event.expect("event").payload["token"],
        "late-1",
        "less than 30 minutes late: rendered now"
    );
    device.command(avsd::dialog::DialogCommand::Stop).await;
    wait_events(&sim, "Alerts.AlertStopped", 2, Duration::from_secs(5)).await;
    device.stop().await;
    let stored = std::fs::read_to_string(dir.join("state/alerts.json")).expect("alerts.json");
    assert!(
        !stored.contains("stale-1") && !stored.contains("late-1"),
        "{stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_assets_fall_back_to_the_bundled_alarm() {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir("alert-assets");
    let wav = dir.join("out.wav");
    let device = start_device(speaker_config(&sim, &dir)).await;
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let stamp = rfc3339(at);
    let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert", "messageId": "a-2"},
        "payload": {"token": "timer-assets", "type": "TIMER", "scheduledTime": stamp,
            "assets": [{"assetId": "tone", "url": "https://127.0.0.1:9/tone.mp3"}],
            "assetPlayOrder": ["tone"], "loopCount": 2, "loopPauseInMilliSeconds": 100}}});
    push_directive(&sim, &set).await;
    wait_event(&sim, "Alerts.AlertStarted", Duration::from_secs(10)).await;
    // Two loops of the bundled alarm, then the alert ends by itself.
    let stopped = wait_event(&sim, "Alerts.AlertStopped", Duration::from_secs(15)).await;
    assert_eq!(
        stopped.event.expect("event").payload["token"],
        "timer-assets"
    );
    device.stop().await;
    let (played, _) = read_wav_mono(&wav).expect("wav");
    let loud = played.iter().filter(|s| s.abs() > 0.05).count();
    assert!(
        loud > 1000,
        "the bundled alarm was not heard ({loud} loud samples)"
    );
}

/// Waits until `dir` holds exactly `n` files (the alert asset cache), or fails after `timeout`.
async fn wait_files(dir: &Path, n: usize, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        let count = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        if count == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {count} files in {}, want {n}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An alarm with `assets` (id, MP3) played in `order`, `loops` times with `pause_ms` between
/// loops, set while online and rung after the cloud is gone: returns the recording, its rate
/// and the device's directory.
async fn ring_offline_with_assets(
    name: &str,
    assets: &[(&str, bytes::Bytes)],
    order: &[&str],
    loops: u32,
    pause_ms: u64,
) -> (Vec<f32>, u32, std::path::PathBuf) {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir(name);
    let wav = dir.join("out.wav");
    let device = start_device(speaker_config(&sim, &dir)).await;
    let listed: Vec<_> = assets
        .iter()
        .map(|(id, mp3)| {
            let url = sim
                .admin
                .put_media(&format!("{id}.mp3"), mp3.clone())
                .expect("media url");
            json!({"assetId": id, "url": url.as_str()})
        })
        .collect();
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let stamp = rfc3339(at);
    let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert", "messageId": "a-3"},
        "payload": {"token": "alarm-asset", "type": "ALARM", "scheduledTime": stamp,
            "assets": listed, "assetPlayOrder": order, "loopCount": loops,
            "loopPauseInMilliSeconds": pause_ms}}});
    push_directive(&sim, &set).await;
    wait_event(&sim, "Alerts.SetAlertSucceeded", Duration::from_secs(5)).await;
    let cache = dir.join("state/alert-assets");
    wait_files(
        &cache,
        assets.len(),
        Duration::from_secs(5),
        "assets downloaded when set",
    )
    .await;
    // The cloud, and the assets' server with it, disappear before the alarm fires.
    sim.stop().await;
    // The loops play, then the alert ends by itself and its cached assets are deleted.
    wait_files(
        &cache,
        0,
        Duration::from_secs(40),
        "assets deleted when the alert finished",
    )
    .await;
    let stored = std::fs::read_to_string(dir.join("state/alerts.json")).expect("alerts.json");
    assert!(!stored.contains("alarm-asset"), "{stored}");
    device.stop().await;
    let (played, rate) = read_wav_mono(&wav).expect("wav");
    (played, rate, dir)
}

/// Where `clip` starts in the first `clip + 2 s` of `played[from..]` (absolute offset): the
/// earliest occurrence, located by its first second so that an underrun glitch in a loaded
/// test run does not spoil the match.
fn heard_after(played: &[f32], clip: &[f32], from: usize, rate: u32, what: &str) -> usize {
    let end = (from + clip.len() + 2 * rate as usize).min(played.len());
    let window = &played[from.min(end)..end];
    let found = avs_testkit::audio::locate(window, clip, rate)
        .unwrap_or_else(|| panic!("{what}: not in the recording"));
    assert!(
        found.score > 0.8,
        "{what}: best match scores {:.3}",
        found.score
    );
    from + found.offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_set_online_rings_offline_with_its_prefetched_assets_in_order() {
    let first = avs_sim::speech::synthesize_mp3("Good morning.").expect("synthesize");
    let second = avs_sim::speech::synthesize_mp3("This alarm sound was downloaded in advance.")
        .expect("synthesize");
    let pause_ms = 700;
    let (played, rate, dir) = ring_offline_with_assets(
        "alert-asset-cached",
        &[("first", first.clone()), ("second", second.clone())],
        &["second", "first"],
        2,
        pause_ms,
    )
    .await;
    let decode = |name: &str, mp3: &bytes::Bytes| {
        let path = dir.join(name);
        std::fs::write(&path, mp3).expect("reference");
        avs_testkit::audio::reference_decode_mp3(&path, rate, &dir).expect("decode")
    };
    let (first, second) = (decode("first.mp3", &first), decode("second.mp3", &second));
    // assetPlayOrder: second then first; loopCount 2 with the pause between the loops.
    let onset = played
        .iter()
        .position(|x| x.abs() > 0.05)
        .expect("the alarm was heard");
    let from = onset.saturating_sub(rate as usize / 2);
    let s1 = heard_after(&played, &second, from, rate, "loop 1, second asset");
    let f1 = heard_after(
        &played,
        &first,
        s1 + second.len() / 2,
        rate,
        "loop 1, first asset",
    );
    assert!(
        f1 >= s1 + second.len() * 9 / 10,
        "first asset overlaps the second"
    );
    let s2 = heard_after(
        &played,
        &second,
        f1 + first.len() / 2,
        rate,
        "loop 2, second asset",
    );
    let f2 = heard_after(
        &played,
        &first,
        s2 + second.len() / 2,
        rate,
        "loop 2, first asset",
    );
    let gap_ms = (s2 - (f1 + first.len())) as f64 * 1000.0 / f64::from(rate);
    eprintln!(
        "assets at {:.2} / {:.2} / {:.2} / {:.2} s; pause between loops {gap_ms:.0} ms",
        s1 as f64 / f64::from(rate),
        f1 as f64 / f64::from(rate),
        s2 as f64 / f64::from(rate),
        f2 as f64 / f64::from(rate)
    );
    assert!(
        gap_ms >= pause_ms as f64 * 0.9,
        "loopPauseInMilliSeconds honoured: {gap_ms:.0} ms"
    );
    // Nothing else was heard: the bundled alarm did not play before, between or after (each
    // span gets 0.3 s of slack for decoder start-up and underruns in loaded runs).
    let slack = rate as usize * 3 / 10;
    let mut loud_elsewhere = 0;
    let spans = [
        (s1, second.len()),
        (f1, first.len()),
        (s2, second.len()),
        (f2, first.len()),
    ];
    for (i, s) in played.iter().enumerate() {
        if s.abs() > 0.05
            && !spans
                .iter()
                .any(|(at, len)| i >= *at && i < at + len + slack)
        {
            loud_elsewhere += 1;
        }
    }
    assert!(
        loud_elsewhere < 100,
        "{loud_elsewhere} loud samples outside the assets"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_prefetched_asset_falls_back_to_the_bundled_alarm() {
    let junk: Vec<u8> = avs_testkit::audio::noise(40_000, 7, 1.0)
        .iter()
        .map(|s| (s * 127.0) as i8 as u8)
        .collect();
    let (played, _, _) = ring_offline_with_assets(
        "alert-asset-corrupt",
        &[("tone", junk.into())],
        &["tone"],
        1,
        0,
    )
    .await;
    let loud = played.iter().filter(|s| s.abs() > 0.05).count();
    assert!(
        loud > 1000,
        "the bundled alarm was not heard ({loud} loud samples)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_alert_deletes_its_cached_asset() {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir("alert-asset-delete");
    let device = start_device(speaker_config(&sim, &dir)).await;
    let mp3 = avs_sim::speech::synthesize_mp3("Later.").expect("synthesize");
    let url = sim.admin.put_media("later.mp3", mp3).expect("media url");
    let at = time::OffsetDateTime::now_utc() + time::Duration::hours(2);
    let stamp = rfc3339(at);
    let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert", "messageId": "a-4"},
        "payload": {"token": "later", "type": "REMINDER", "scheduledTime": stamp,
            "assets": [{"assetId": "x", "url": url.as_str()}]}}});
    push_directive(&sim, &set).await;
    let cache = dir.join("state/alert-assets");
    wait_files(
        &cache,
        1,
        Duration::from_secs(5),
        "asset downloaded when set",
    )
    .await;
    let delete = json!({"directive": {"header": {"namespace": "Alerts", "name": "DeleteAlert", "messageId": "a-5"},
        "payload": {"token": "later"}}});
    push_directive(&sim, &delete).await;
    wait_event(&sim, "Alerts.DeleteAlertSucceeded", Duration::from_secs(5)).await;
    wait_files(
        &cache,
        0,
        Duration::from_secs(5),
        "asset deleted with its alert",
    )
    .await;
    device.stop().await;
}
