//! The link against a real avs-sim over TLS + HTTP/2 on loopback: connection set-up order,
//! directives from the downchannel, queued events, faults (GOAWAY, RST_STREAM, dropped
//! connection, 429/503, 403, malformed and unknown directives, silenced pings) each with
//! recovery, offline queueing across an outage, Recognize streaming, and the reconnect backoff.

mod link_support;

use std::time::{Duration, Instant};

use avs_sim::{Fault, SimConfig};
use avsd::transport::{
    Incoming, LinkState, LinkTuning, ResponseOutcome, SendError, spawn_link, spawn_link_tuned,
};
use bytes::Bytes;
use link_support::*;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn event(name: &str, n: u32) -> avs_proto::Event {
    avs_proto::Event::raw("Speaker", name, json!({"volume": n, "muted": false}))
}

/// The recorded events named `name`, as (message id, status).
fn recorded(sim: &Sim, name: &str) -> Vec<(String, Option<u16>)> {
    sim.handle
        .recorder
        .events(name)
        .into_iter()
        .map(|r| (r.event.map(|e| e.message_id).unwrap_or_default(), r.status))
        .collect()
}

/// Statuses of the event posts recorded from `mark` on (failed attempts carry no event: the
/// sim answers an injected fault before parsing the body).
fn event_statuses_since(sim: &Sim, mark: usize) -> Vec<Option<u16>> {
    sim.handle
        .recorder
        .records()
        .into_iter()
        .skip(mark)
        .filter(|r| r.path == avs_proto::EVENTS_PATH)
        .map(|r| r.status)
        .collect()
}

fn count_downchannels(sim: &Sim) -> usize {
    sim.handle
        .recorder
        .records()
        .iter()
        .filter(|r| r.path == avs_proto::DIRECTIVES_PATH && r.status == Some(200))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_downchannel_first_then_synchronizes_state_and_exchanges_messages() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, mut incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let (mut link, task) = spawn_link(
        sim.link_config(&sim.handle.url),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    let task = tokio::spawn(task);
    connected(&mut link.state).await;

    let records = sim.handle.recorder.records();
    let dc = records
        .iter()
        .position(|r| r.path == avs_proto::DIRECTIVES_PATH && r.status == Some(200))
        .unwrap();
    let sync = records
        .iter()
        .position(|r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.qualified_name() == "System.SynchronizeState")
        })
        .expect("SynchronizeState sent before Connected");
    assert!(
        dc < sync,
        "downchannel must open before SynchronizeState: {records:?}"
    );
    assert!(records[sync].event.as_ref().unwrap().has_context);
    assert_eq!(records[sync].status, Some(204));

    // A directive pushed on the downchannel arrives typed.
    let header = avs_proto::Header::new("Speaker", "SetVolume");
    let id = header.message_id.clone();
    let n = sim
        .handle
        .admin
        .push(
            Some(SERIAL),
            avs_proto::Directive::build(header, json!({"volume": 33})),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let d = next_directive(&mut incoming, "Speaker.SetVolume").await;
    assert_eq!(d.header.message_id, id);

    // Events go out in order.
    for n in 0..3 {
        link.outbox.send(event("VolumeChanged", n));
    }
    for n in 0..3 {
        let r = sim.handle.recorder.wait_for(0, WAIT, "VolumeChanged", |r| {
            r.event
                .as_ref()
                .is_some_and(|e| e.name == "VolumeChanged" && e.payload["volume"] == n)
        });
        r.await.unwrap();
    }
    let vols: Vec<_> = sim
        .handle
        .recorder
        .events("Speaker.VolumeChanged")
        .iter()
        .map(|r| r.event.as_ref().unwrap().payload["volume"].clone())
        .collect();
    assert_eq!(vols, vec![json!(0), json!(1), json!(2)]);

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(*link.state.borrow(), LinkState::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_rst_stream_and_dropped_connection_each_reconnect_and_resynchronize() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, _incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let (mut link, task) = spawn_link(
        sim.link_config(&sim.handle.url),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    connected(&mut link.state).await;

    let faults = [
        Fault::GoAway { device: None },
        Fault::ResetDownchannel { device: None },
        Fault::DropConnection { device: None },
    ];
    for fault in faults {
        let before = sim.handle.recorder.len();
        let downchannels = count_downchannels(&sim);
        let mut state = link.state.clone();
        state.borrow_and_update();
        sim.handle.admin.fault(&fault).await.unwrap();
        wait_state(&mut state, "not Connected", |s| *s != LinkState::Connected).await;
        connected(&mut state).await;
        sim.handle
            .recorder
            .wait_for_event_after(before, "System.SynchronizeState", WAIT)
            .await
            .unwrap_or_else(|e| panic!("no SynchronizeState after {fault:?}: {e}"));
        assert_eq!(
            count_downchannels(&sim),
            downchannels + 1,
            "one new downchannel after {fault:?}"
        );
        // The new connection carries events.
        let mark = sim.handle.recorder.len();
        link.outbox.send(event("VolumeChanged", 7));
        sim.handle
            .recorder
            .wait_for_event_after(mark, "Speaker.VolumeChanged", WAIT)
            .await
            .unwrap();
    }
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_directives_are_reported_and_the_connection_survives() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, mut incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let (mut link, task) = spawn_link(
        sim.link_config(&sim.handle.url),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    connected(&mut link.state).await;
    let downchannels = count_downchannels(&sim);

    sim.handle
        .admin
        .fault(&Fault::MalformedDirective { device: None })
        .await
        .unwrap();
    match next_incoming(&mut incoming, "the malformed directive").await {
        Incoming::Malformed(e) => assert!(e.raw.contains("SetVolume"), "{e:?}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
    sim.handle
        .admin
        .fault(&Fault::UnknownDirective { device: None })
        .await
        .unwrap();
    match next_incoming(&mut incoming, "the unknown directive").await {
        Incoming::Directive(d) => {
            assert_eq!(d.qualified_name(), "Bogus.DoSomethingUnheardOf");
            assert_eq!(d.kind, avs_proto::DirectiveKind::Unknown);
        }
        other => panic!("expected an unknown Directive, got {other:?}"),
    }
    let header = avs_proto::Header::new("Speaker", "SetMute");
    sim.handle
        .admin
        .push(
            None,
            avs_proto::Directive::build(header, json!({"mute": true})),
        )
        .await
        .unwrap();
    next_directive(&mut incoming, "Speaker.SetMute").await;
    assert_eq!(*link.state.borrow(), LinkState::Connected);
    assert_eq!(
        count_downchannels(&sim),
        downchannels,
        "no reconnect for bad directives"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_answered_503_or_429_are_retried_until_accepted_once() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, _incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let (mut link, task) = spawn_link(
        sim.link_config(&sim.handle.url),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    connected(&mut link.state).await;
    let downchannels = count_downchannels(&sim);

    for (status, name) in [(503u16, "VolumeChanged"), (429, "MuteChanged")] {
        sim.handle
            .admin
            .fault(&Fault::FailEvents { status, count: 2 })
            .await
            .unwrap();
        let mark = sim.handle.recorder.len();
        let started = Instant::now();
        let ev = event(name, 1);
        let id = ev.header.message_id.clone();
        link.outbox.send(ev);
        let qualified = format!("Speaker.{name}");
        sim.handle
            .recorder
            .wait_for(0, WAIT, "accepted event", |r| {
                r.event.as_ref().is_some_and(|e| e.message_id == id)
                    && r.status.is_some_and(|s| s < 300)
            })
            .await
            .unwrap();
        assert_eq!(
            event_statuses_since(&sim, mark),
            vec![Some(status), Some(status), Some(204)],
            "{name}"
        );
        assert_eq!(
            recorded(&sim, &qualified)
                .iter()
                .filter(|(m, _)| *m == id)
                .count(),
            1
        );
        // Two backoff delays (≥ 0.67 × 250 ms and ≥ 0.67 × 1 s) separate the attempts.
        assert!(
            started.elapsed() >= Duration::from_millis(160 + 660),
            "{:?}",
            started.elapsed()
        );
    }
    // The next event is sent once and the connection was kept.
    let ev = event("VolumeChanged", 2);
    let id = ev.header.message_id.clone();
    link.outbox.send(ev);
    sim.handle
        .recorder
        .wait_for(0, WAIT, "event", |r| {
            r.event.as_ref().is_some_and(|e| e.message_id == id)
        })
        .await
        .unwrap();
    assert_eq!(
        recorded(&sim, "Speaker.VolumeChanged")
            .iter()
            .filter(|(m, _)| *m == id)
            .count(),
        1
    );
    assert_eq!(count_downchannels(&sim), downchannels);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_403_asks_for_a_refresh_keeps_the_connection_and_retries_with_the_new_token() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, mut manual) = sim.manual_auth();
    let (incoming_tx, _incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let (mut link, task) = spawn_link(
        sim.link_config(&sim.handle.url),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    connected(&mut link.state).await;
    let downchannels = count_downchannels(&sim);

    sim.handle
        .admin
        .fault(&Fault::FailEvents {
            status: 403,
            count: 1,
        })
        .await
        .unwrap();
    let mark = sim.handle.recorder.len();
    let ev = event("VolumeChanged", 9);
    let id = ev.header.message_id.clone();
    link.outbox.send(ev);
    assert!(
        tokio::time::timeout(WAIT, manual.refresh_requested())
            .await
            .unwrap()
    );
    manual.token.send_replace(Some(sim.issue_token()));
    sim.handle
        .recorder
        .wait_for(0, WAIT, "retried event", |r| {
            r.event.as_ref().is_some_and(|e| e.message_id == id) && r.status == Some(204)
        })
        .await
        .unwrap();
    assert_eq!(event_statuses_since(&sim, mark), vec![Some(403), Some(204)]);
    assert_eq!(
        count_downchannels(&sim),
        downchannels,
        "a 403 on an event keeps the connection"
    );
    assert_eq!(*link.state.borrow(), LinkState::Connected);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downchannel_403_refreshes_then_reconnects_with_the_new_token() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, mut manual) =
        avsd::auth::AuthHandle::manual(Some(avsd::auth::AccessToken::new("Atza|not-a-token")));
    let (incoming_tx, _incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let (mut link, task) = spawn_link(
        sim.link_config(&sim.handle.url),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    assert!(
        tokio::time::timeout(WAIT, manual.refresh_requested())
            .await
            .unwrap()
    );
    manual.token.send_replace(Some(sim.issue_token()));
    connected(&mut link.state).await;
    let records = sim.handle.recorder.records();
    let statuses: Vec<_> = records
        .iter()
        .filter(|r| r.path == avs_proto::DIRECTIVES_PATH)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![Some(403), Some(200)]);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_after_idle_and_tears_down_when_pings_go_unanswered() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, _incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let mut cfg = sim.link_config(&sim.handle.url);
    cfg.ping_idle = Duration::from_millis(400);
    cfg.ping_timeout = Duration::from_millis(600);
    let (mut link, task) = spawn_link(cfg, auth, context_provider(), incoming_tx, shutdown.clone());
    tokio::spawn(task);
    connected(&mut link.state).await;
    let is_ping = |r: &avs_sim::Record| r.path == avs_proto::PING_PATH;
    let first = sim
        .handle
        .recorder
        .wait_for(0, WAIT, "ping", |r| is_ping(r) && r.status == Some(204))
        .await
        .unwrap();
    // Idle again: another ping follows, roughly ping_idle later.
    let second = sim
        .handle
        .recorder
        .wait_for(first.seq + 1, WAIT, "ping", |r| {
            is_ping(r) && r.status == Some(204)
        })
        .await
        .unwrap();
    assert!(
        second.at - first.at >= Duration::from_millis(390),
        "{:?}",
        second.at - first.at
    );
    let downchannels = count_downchannels(&sim);

    sim.handle
        .admin
        .fault(&Fault::SilencePings { enabled: true })
        .await
        .unwrap();
    let mut state = link.state.clone();
    state.borrow_and_update();
    let silenced = sim
        .handle
        .recorder
        .wait_for(second.seq + 1, WAIT, "silenced ping", |r| {
            is_ping(r) && r.status.is_none()
        })
        .await
        .unwrap();
    wait_state(&mut state, "torn down", |s| {
        matches!(s, LinkState::WaitingToRetry { .. })
    })
    .await;
    sim.handle
        .admin
        .fault(&Fault::SilencePings { enabled: false })
        .await
        .unwrap();
    connected(&mut state).await;
    assert!(
        count_downchannels(&sim) > downchannels,
        "a new connection after the ping timeout"
    );
    let reconnected = sim
        .handle
        .recorder
        .records()
        .iter()
        .rev()
        .find(|r| r.path == avs_proto::DIRECTIVES_PATH)
        .unwrap()
        .at;
    assert!(
        reconnected - silenced.at >= Duration::from_millis(590),
        "torn down only after ping_timeout"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_offline_are_sent_once_in_order_after_the_cloud_comes_back() {
    let sim = Sim::start(SimConfig::default()).await;
    let mut proxy = Proxy::start(sim.addr()).await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, _incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let (mut link, task) = spawn_link(
        sim.link_config(&proxy.url()),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    connected(&mut link.state).await;

    proxy.stop().await;
    wait_state(&mut link.state, "offline", |s| {
        matches!(s, LinkState::WaitingToRetry { .. })
    })
    .await;
    let (_audio_tx, audio_rx) = mpsc::channel(4);
    let refused = link
        .outbox
        .send_recognize(event("Recognize", 0), audio_rx)
        .unwrap_err();
    assert_eq!(refused, SendError::NotConnected);
    let ids: Vec<String> = (0..5)
        .map(|n| {
            let ev = event("VolumeChanged", 100 + n);
            let id = ev.header.message_id.clone();
            link.outbox.send(ev);
            id
        })
        .collect();
    assert_eq!(link.outbox.queued_len(), 5);
    let mark = sim.handle.recorder.len();
    proxy.restart().await;
    connected(&mut link.state).await;
    for id in &ids {
        sim.handle
            .recorder
            .wait_for(mark, WAIT, "queued event", |r| {
                r.event.as_ref().is_some_and(|e| e.message_id == *id)
            })
            .await
            .unwrap();
    }
    let after: Vec<_> = sim
        .handle
        .recorder
        .records()
        .into_iter()
        .skip(mark)
        .filter_map(|r| r.event)
        .collect();
    let sync = after
        .iter()
        .position(|e| e.name == "SynchronizeState")
        .unwrap();
    let sent: Vec<_> = after
        .iter()
        .filter(|e| e.name == "VolumeChanged")
        .map(|e| e.message_id.clone())
        .collect();
    assert_eq!(sent, ids, "each queued event exactly once, in order");
    let first_event = after
        .iter()
        .position(|e| e.name == "VolumeChanged")
        .unwrap();
    assert!(sync < first_event, "SynchronizeState goes first");
    outbox_drained(&link.outbox).await;
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_attempts_never_come_faster_than_the_backoff() {
    let sim = Sim::start(SimConfig::default()).await;
    let mut proxy = Proxy::start(sim.addr()).await;
    proxy.stop().await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, _incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let (link, task) = spawn_link(
        sim.link_config(&proxy.url()),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    let mut state = link.state.clone();
    let mut waits = Vec::new();
    let mut last_wait: Option<(Instant, Duration)> = None;
    let table = [250u64, 1000, 3000];
    while waits.len() < table.len() {
        tokio::time::timeout(WAIT, state.changed())
            .await
            .unwrap()
            .unwrap();
        let now = Instant::now();
        match state.borrow_and_update().clone() {
            LinkState::WaitingToRetry { attempt, delay } => {
                waits.push((attempt, delay));
                last_wait = Some((now, delay));
            }
            LinkState::Connecting => {
                if let Some((at, delay)) = last_wait.take() {
                    assert!(
                        now - at + Duration::from_millis(5) >= delay,
                        "attempt after {:?} < {delay:?}",
                        now - at
                    );
                }
            }
            _ => {}
        }
    }
    for ((attempt, delay), (i, base)) in waits.iter().zip(table.iter().enumerate()) {
        assert_eq!(*attempt as usize, i + 1);
        let base = Duration::from_millis(*base);
        assert!(
            *delay >= base.mul_f64(0.66) && *delay <= base.mul_f64(1.5),
            "attempt {attempt}: {delay:?}"
        );
    }
    // Back online: connected, and the backoff starts over.
    proxy.restart().await;
    connected(&mut state).await;
    proxy.stop().await;
    let LinkState::WaitingToRetry { attempt, delay } = wait_state(&mut state, "retry", |s| {
        matches!(s, LinkState::WaitingToRetry { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(attempt, 1);
    assert!(delay <= Duration::from_millis(375));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_attempts_of_a_flapping_link() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, _incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let tuning = LinkTuning {
        rate_limit_window: Duration::from_secs(3),
        rate_limit_attempts: 2,
        ..LinkTuning::default()
    };
    let (mut link, task) = spawn_link_tuned(
        sim.link_config(&sim.handle.url),
        tuning,
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    connected(&mut link.state).await;
    let t0 = Instant::now();
    // Each drop happens on a connection that reached CONNECTED, so the backoff alone would
    // allow 250 ms; the third attempt must wait for the window.
    for _ in 0..2 {
        let mut state = link.state.clone();
        state.borrow_and_update();
        sim.handle
            .admin
            .fault(&Fault::DropConnection { device: None })
            .await
            .unwrap();
        wait_state(&mut state, "dropped", |s| *s != LinkState::Connected).await;
        connected(&mut state).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(2900),
        "third connection after {:?}",
        t0.elapsed()
    );
    shutdown.cancel();
}

/// Starts a TAP Recognize fed with a 440 Hz burst in real-time 10 ms chunks (through a channel
/// of two chunks, so the feeder cannot run ahead of the network) until it is aborted.
#[allow(clippy::unwrap_used)] // a test helper: a refused Recognize fails the test
fn start_recognize(
    link: &avsd::transport::LinkHandle,
) -> (
    String,
    avsd::transport::RecognizeHandle,
    tokio::task::JoinHandle<()>,
) {
    let dialog = avs_proto::new_message_id();
    let recognize = avs_proto::Event::raw(
        "SpeechRecognizer",
        "Recognize",
        json!({"profile": "NEAR_FIELD", "format": avs_proto::AUDIO_FORMAT_L16, "initiator": {"type": "TAP", "payload": {}}}),
    )
    .with_dialog(Some(dialog.clone()))
    .with_context(context_provider()());
    let (audio_tx, audio_rx) = mpsc::channel::<Bytes>(2);
    let handle = link.outbox.send_recognize(recognize, audio_rx).unwrap();
    let feeder = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        for i in 0..500u32 {
            interval.tick().await;
            let chunk: Vec<u8> = (0..160u32)
                .flat_map(|s| {
                    // 300 ms of silence, an 800 ms "utterance", then silence for the
                    // end-of-speech detector to find.
                    let amplitude = if (30..110).contains(&i) { 8000.0 } else { 0.0 };
                    let t = (i * 160 + s) as f32 / 16000.0;
                    (((t * 440.0 * std::f32::consts::TAU).sin() * amplitude) as i16).to_le_bytes()
                })
                .collect();
            if audio_tx.send(Bytes::from(chunk)).await.is_err() {
                break;
            }
        }
    });
    (dialog, handle, feeder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recognize_streams_audio_while_its_response_is_read() {
    let sim = Sim::start(SimConfig {
        max_recognize_audio: Duration::from_millis(1500),
        ..SimConfig::default()
    })
    .await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, mut incoming) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let (mut link, task) = spawn_link(
        sim.link_config(&sim.handle.url),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    connected(&mut link.state).await;

    let (dialog, handle, feeder) = start_recognize(&link);
    // StopCapture comes on the downchannel while the upload is still open.
    let stop = next_directive(&mut incoming, "SpeechRecognizer.StopCapture").await;
    assert_eq!(stop.dialog_request_id(), Some(dialog.as_str()));
    assert!(
        !feeder.is_finished(),
        "audio was still streaming when StopCapture arrived"
    );
    feeder.abort();
    let _ = feeder.await;
    let speak = next_directive(&mut incoming, "SpeechSynthesizer.Speak").await;
    assert_eq!(speak.dialog_request_id(), Some(dialog.as_str()));
    let url = speak.payload["url"].as_str().unwrap();
    let cid = avs_proto::multipart::content_id_of_url(url).unwrap();
    let mut reader = link.attachments.reader(&cid);
    let mut mp3 = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, reader.next()).await.unwrap() {
        mp3.extend_from_slice(&chunk.unwrap());
    }
    assert!(mp3.len() > 1000, "attachment of {} bytes", mp3.len());
    assert!(
        mp3.starts_with(b"ID3") || (mp3[0] == 0xFF && mp3[1] & 0xE0 == 0xE0),
        "not an MP3"
    );
    let outcome = tokio::time::timeout(WAIT, handle.response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome, ResponseOutcome::Status(200));
    let rec = sim
        .handle
        .recorder
        .wait_for_event("SpeechRecognizer.Recognize", WAIT)
        .await
        .unwrap();
    assert_eq!(
        rec.event.unwrap().dialog_request_id.as_deref(),
        Some(dialog.as_str())
    );
    assert!(rec.audio_wav.is_some(), "the sim heard the audio part");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_reset_inside_an_attachment_fails_its_reader_not_the_connection() {
    let sim = Sim::start(SimConfig {
        max_recognize_audio: Duration::from_millis(1000),
        ..SimConfig::default()
    })
    .await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, mut incoming) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let (mut link, task) = spawn_link(
        sim.link_config(&sim.handle.url),
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    connected(&mut link.state).await;
    let downchannels = count_downchannels(&sim);
    sim.handle
        .admin
        .fault(&Fault::KillMidAttachment)
        .await
        .unwrap();
    let (_dialog, handle, feeder) = start_recognize(&link);
    next_directive(&mut incoming, "SpeechRecognizer.StopCapture").await;
    feeder.abort();
    let outcome = tokio::time::timeout(WAIT, handle.response)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, ResponseOutcome::Failed(_)), "{outcome:?}");
    // h2 may discard the frames queued before the reset, so the Speak may never reach us; when
    // it does, its attachment must end in an error, never as a clean (truncated) MP3.
    while let Ok(item) = incoming.try_recv() {
        if let Incoming::Directive(d) = item
            && d.qualified_name() == "SpeechSynthesizer.Speak"
        {
            let cid = avs_proto::multipart::content_id_of_url(d.payload["url"].as_str().unwrap())
                .unwrap();
            let mut reader = link.attachments.reader(&cid);
            let err = loop {
                match tokio::time::timeout(WAIT, reader.next()).await.unwrap() {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e,
                    None => panic!("a cut attachment must not end cleanly"),
                }
            };
            assert!(
                matches!(err, avsd::transport::AttachmentError::Interrupted { .. }),
                "{err}"
            );
        }
    }
    // The connection is untouched and still carries events.
    let mark = sim.handle.recorder.len();
    link.outbox.send(event("VolumeChanged", 5));
    sim.handle
        .recorder
        .wait_for_event_after(mark, "Speaker.VolumeChanged", WAIT)
        .await
        .unwrap();
    assert_eq!(count_downchannels(&sim), downchannels);
    assert_eq!(*link.state.borrow(), LinkState::Connected);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_response_ends_the_connection_and_the_event_is_sent_on_the_next() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, _manual) = sim.manual_auth();
    let (incoming_tx, _incoming) = mpsc::channel(32);
    let shutdown = CancellationToken::new();
    let tuning = LinkTuning {
        event_response_timeout: Duration::from_millis(800),
        ..LinkTuning::default()
    };
    let (mut link, task) = spawn_link_tuned(
        sim.link_config(&sim.handle.url),
        tuning,
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    tokio::spawn(task);
    connected(&mut link.state).await;
    let downchannels = count_downchannels(&sim);
    sim.handle
        .admin
        .fault(&Fault::StallEvents { count: 1 })
        .await
        .unwrap();
    let mark = sim.handle.recorder.len();
    let ev = event("VolumeChanged", 42);
    let id = ev.header.message_id.clone();
    link.outbox.send(ev);
    sim.handle
        .recorder
        .wait_for(mark, WAIT, "event accepted", |r| {
            r.event.as_ref().is_some_and(|e| e.message_id == id) && r.status == Some(204)
        })
        .await
        .unwrap();
    assert_eq!(count_downchannels(&sim), downchannels + 1, "reconnected");
    let statuses = event_statuses_since(&sim, mark);
    assert_eq!(
        statuses.first(),
        Some(&None),
        "the stalled attempt: {statuses:?}"
    );
    shutdown.cancel();
}
