//! Transport buttons from the control socket and the `avsd` command line, end to end against
//! avs-sim: `play`, `pause`, `next`, `previous` become PlaybackController events with the full
//! context (AudioPlayer.PlaybackState as it is), in order, without a dialogRequestId, and the
//! device does not pause the music by itself (avs-protocol.md §5.5: the cloud decides).

// Test harness code outside #[test] functions: a failed expect is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use avsd::control::{self, Request};
use common::*;
use serde_json::{Value, json};

const LONG_TRACK: &str = "This track plays for a long while, on and on, with many words, so that it is \
    still playing while the buttons are pressed. One, two, three, four, five, six, seven, eight, nine, ten.";

/// The recorded PlaybackController events: (name, payload, context, dialogRequestId).
fn controller_events(
    sim: &avs_testkit::sim::TestSim,
) -> Vec<(String, Value, Value, Option<String>)> {
    sim.recorder
        .records()
        .into_iter()
        .filter_map(|r| r.event)
        .filter(|e| e.namespace == "PlaybackController")
        .map(|e| {
            (
                e.name,
                e.payload,
                e.context.unwrap_or(Value::Null),
                e.dialog_request_id,
            )
        })
        .collect()
}

/// Runs the `avsd` binary with `--config cli_config` and `args`; it must succeed.
async fn avsd_cli(cli_config: &std::path::Path, args: &'static [&'static str]) {
    let cli_config = cli_config.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_avsd"))
            .arg("--config")
            .arg(&cli_config)
            .args(args)
            .output()
    })
    .await
    .expect("join")
    .expect("run avsd");
    assert!(out.status.success(), "avsd {args:?}: {out:?}");
}

/// A config file for the `avsd` command line that reaches the daemon's control `socket`.
fn write_cli_config(dir: &std::path::Path, socket: &std::path::Path) -> std::path::PathBuf {
    let cli_config = dir.join("cli.toml");
    std::fs::write(
        &cli_config,
        format!(
            "[paths]\ncontrol_socket = {:?}\n",
            socket.display().to_string()
        ),
    )
    .expect("cli config");
    cli_config
}

/// The payload of the context entry `namespace.name`.
fn context_entry(context: &Value, namespace: &str, name: &str) -> Option<Value> {
    context.as_array()?.iter().find_map(|c| {
        (c["header"]["namespace"] == namespace && c["header"]["name"] == name)
            .then(|| c["payload"].clone())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_requests_send_playback_controller_events_with_the_playback_state() {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir("control-buttons");
    let config = speaker_config(&sim, &dir);
    let socket = config.control_socket.clone();
    let device = start_device(config).await;

    // Nothing played yet: the context still says so.
    let answer = control::request(&socket, &Request::Play)
        .await
        .expect("play");
    assert_eq!(answer, json!({"ok": true}));
    wait_events(
        &sim,
        "PlaybackController.PlayCommandIssued",
        1,
        Duration::from_secs(10),
    )
    .await;
    let (_, _, context, _) = controller_events(&sim).remove(0);
    let state = context_entry(&context, "AudioPlayer", "PlaybackState").expect("PlaybackState");
    assert_eq!(state["playerActivity"], "IDLE", "{state}");

    // Music plays (the cloud started it), then the buttons.
    let mp3 = avs_sim::speech::synthesize_mp3(LONG_TRACK).expect("synthesize");
    let url = sim.admin.put_media("long.mp3", mp3).expect("media");
    let play = json!({"directive": {"header": {"namespace": "AudioPlayer", "name": "Play", "messageId": "p-1"},
        "payload": {"playBehavior": "REPLACE_ALL", "audioItem": {"audioItemId": "t1",
            "stream": {"url": url.as_str(), "offsetInMilliseconds": 0, "token": "t1"}}}}});
    push_directive(&sim, &play).await;
    wait_event(&sim, "AudioPlayer.PlaybackStarted", Duration::from_secs(20)).await;
    for request in [Request::Pause, Request::Next, Request::Previous] {
        let answer = control::request(&socket, &request).await.expect("request");
        assert_eq!(answer["ok"], true, "{request:?}: {answer}");
    }
    // And one through the command line, as a user or a hook script would.
    let cli_config = write_cli_config(&dir, &socket);
    avsd_cli(&cli_config, &["play"]).await;
    wait_events(
        &sim,
        "PlaybackController.PlayCommandIssued",
        2,
        Duration::from_secs(10),
    )
    .await;

    let events = controller_events(&sim);
    let names: Vec<&str> = events.iter().map(|(n, ..)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "PlayCommandIssued",
            "PauseCommandIssued",
            "NextCommandIssued",
            "PreviousCommandIssued",
            "PlayCommandIssued"
        ]
    );
    for (name, payload, context, dialog) in &events[1..] {
        assert_eq!(payload, &json!({}), "{name}");
        assert_eq!(dialog, &None, "{name}: buttons carry no dialogRequestId");
        let state = context_entry(context, "AudioPlayer", "PlaybackState")
            .unwrap_or_else(|| panic!("{name}: no PlaybackState in {context}"));
        assert_eq!(state["token"], "t1", "{name}: {state}");
        // The device never pauses on its own: the music plays until the cloud says otherwise.
        assert_eq!(state["playerActivity"], "PLAYING", "{name}: {state}");
        assert!(
            context_entry(context, "Speaker", "VolumeState").is_some(),
            "{name}: the whole context: {context}"
        );
    }
    let stopped: Vec<String> = recorded(&sim, "AudioPlayer")
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n == "PlaybackPaused" || n == "PlaybackStopped")
        .collect();
    assert!(stopped.is_empty(), "paused locally: {stopped:?}");
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_volume_up_down_mute_and_unmute_reach_the_speaker() {
    let sim = sim("[[turn]]\nreject = true\n").await;
    let dir = test_dir("control-volume");
    let config = speaker_config(&sim, &dir);
    let socket = config.control_socket.clone();
    let device = start_device(config).await;
    let cli_config = write_cli_config(&dir, &socket);
    let avsd = |args: &'static [&'static str]| avsd_cli(&cli_config, args);
    avsd(&["volume", "up"]).await;
    wait_events(&sim, "Speaker.VolumeChanged", 1, Duration::from_secs(10)).await;
    avsd(&["volume", "down"]).await;
    wait_events(&sim, "Speaker.VolumeChanged", 2, Duration::from_secs(10)).await;
    avsd(&["mute"]).await;
    wait_events(&sim, "Speaker.MuteChanged", 1, Duration::from_secs(10)).await;
    avsd(&["unmute"]).await;
    wait_events(&sim, "Speaker.MuteChanged", 2, Duration::from_secs(10)).await;
    let payloads: Vec<Value> = sim
        .recorder
        .records()
        .into_iter()
        .filter_map(|r| r.event)
        .filter(|e| e.namespace == "Speaker")
        .map(|e| json!([e.name, e.payload]))
        .collect();
    assert_eq!(
        payloads,
        [
            json!(["VolumeChanged", {"volume": 60, "muted": false}]),
            json!(["VolumeChanged", {"volume": 50, "muted": false}]),
            json!(["MuteChanged", {"volume": 50, "muted": true}]),
            json!(["MuteChanged", {"volume": 50, "muted": false}]),
        ]
    );
    device.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_answers_play_with_play_and_pause_with_stop_and_the_device_follows() {
    let scenario = format!(
        "[[turn]]\nreject = true\n\n\
         [on_event.\"PlaybackController.PlayCommandIssued\"]\n\
         play = {{ text = \"{LONG_TRACK}\", source = \"url\", token = \"resumed-1\" }}\n\n\
         [on_event.\"PlaybackController.PauseCommandIssued\"]\n\
         directives = [{{ namespace = \"AudioPlayer\", name = \"Stop\" }}]\n"
    );
    let sim = sim(&scenario).await;
    let dir = test_dir("control-play-answer");
    let config = speaker_config(&sim, &dir);
    let socket = config.control_socket.clone();
    let device = start_device(config).await;
    let wait_for = |name: &'static str| {
        let recorder = sim.recorder.clone();
        async move {
            let qualified = format!("AudioPlayer.{name}");
            recorder
                .wait_for(0, Duration::from_secs(20), &qualified, |r| {
                    r.event.as_ref().is_some_and(|e| {
                        e.qualified_name() == qualified && e.payload["token"] == "resumed-1"
                    })
                })
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };

    let answer = control::request(&socket, &Request::Play)
        .await
        .expect("play");
    assert_eq!(answer["ok"], true);
    // The cloud's Play comes back on the PlayCommandIssued stream: the device plays it.
    wait_for("PlaybackStarted").await;
    let issued = &sim.recorder.events("PlaybackController.PlayCommandIssued")[0];
    assert_eq!(issued.status, Some(200), "answered with directives");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = control::request(&socket, &Request::Pause)
        .await
        .expect("pause");
    assert_eq!(answer["ok"], true);
    // Pausing is the cloud's Stop, on the PauseCommandIssued stream.
    wait_for("PlaybackStopped").await;
    let events: Vec<String> = recorded(&sim, "AudioPlayer")
        .into_iter()
        .filter(|(_, t)| t == "resumed-1")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        events.first().map(String::as_str),
        Some("PlaybackStarted"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("PlaybackStopped"),
        "{events:?}"
    );
    assert!(
        !events.contains(&"PlaybackFinished".to_owned()),
        "{events:?}"
    );
    device.stop().await;
}
