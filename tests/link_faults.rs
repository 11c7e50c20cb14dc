//! The link against avs-sim's faults, each with recovery: GOAWAY, RST_STREAM on the
//! downchannel, a dropped connection, 429/503 on events, malformed and unknown directives,
//! silenced pings, a stalled event response; and the reconnect backoff and rate limit.

mod link_support;

use std::time::{Duration, Instant};

use avs_sim::{Fault, SimConfig};
use avsd::transport::{Incoming, LinkState, LinkTuning};
use link_support::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_rst_stream_and_dropped_connection_each_reconnect_and_resynchronize() {
    let sim = Sim::start(SimConfig::default()).await;
    let link = sim.connected_link().await;

    let faults = [
        Fault::GoAway { device: None },
        Fault::ResetDownchannel { device: None },
        Fault::DropConnection { device: None },
    ];
    for fault in faults {
        let before = sim.handle.recorder.len();
        let downchannels = count_downchannels(&sim);
        fault_and_reconnect(&sim, &link, &fault).await;
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
        carries_events(&sim, &link, 7).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_directives_are_reported_and_the_connection_survives() {
    let sim = Sim::start(SimConfig::default()).await;
    let mut link = sim.connected_link().await;
    let downchannels = count_downchannels(&sim);

    sim.fault(&Fault::MalformedDirective { device: None }).await;
    match next_incoming(&mut link.incoming, "the malformed directive").await {
        Incoming::Malformed(e) => assert!(e.raw.contains("SetVolume"), "{e:?}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
    sim.fault(&Fault::UnknownDirective { device: None }).await;
    match next_incoming(&mut link.incoming, "the unknown directive").await {
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
    next_directive(&mut link.incoming, "Speaker.SetMute").await;
    assert_eq!(*link.state.borrow(), LinkState::Connected);
    assert_eq!(
        count_downchannels(&sim),
        downchannels,
        "no reconnect for bad directives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_answered_503_or_429_are_retried_until_accepted_once() {
    let sim = Sim::start(SimConfig::default()).await;
    let link = sim.connected_link().await;
    let downchannels = count_downchannels(&sim);

    for (status, name) in [(503u16, "VolumeChanged"), (429, "MuteChanged")] {
        sim.fault(&Fault::FailEvents { status, count: 2 }).await;
        let mark = sim.handle.recorder.len();
        let started = Instant::now();
        let id = send_event(&link.outbox, name, 1);
        let qualified = format!("Speaker.{name}");
        accepted(&sim, 0, &id).await;
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
    let id = send_event(&link.outbox, "VolumeChanged", 2);
    accepted(&sim, 0, &id).await;
    assert_eq!(
        recorded(&sim, "Speaker.VolumeChanged")
            .iter()
            .filter(|(m, _)| *m == id)
            .count(),
        1
    );
    assert_eq!(count_downchannels(&sim), downchannels);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_after_idle_and_tears_down_when_pings_go_unanswered() {
    let sim = Sim::start(SimConfig::default()).await;
    let mut cfg = sim.link_config(&sim.handle.url);
    cfg.ping_idle = Duration::from_millis(400);
    cfg.ping_timeout = Duration::from_millis(600);
    let mut link = sim.spawn_link(cfg, LinkTuning::default());
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

    sim.fault(&Fault::SilencePings { enabled: true }).await;
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
    sim.fault(&Fault::SilencePings { enabled: false }).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_attempts_never_come_faster_than_the_backoff() {
    let sim = Sim::start(SimConfig::default()).await;
    let mut relay = start_relay(sim.addr()).await;
    relay.stop().await;
    let link = sim.spawn_link(
        sim.link_config(&relay.url().unwrap()),
        LinkTuning::default(),
    );
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
    relay.restart().await.unwrap();
    connected(&mut state).await;
    relay.stop().await;
    let LinkState::WaitingToRetry { attempt, delay } = wait_state(&mut state, "retry", |s| {
        matches!(s, LinkState::WaitingToRetry { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(attempt, 1);
    assert!(delay <= Duration::from_millis(375));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_attempts_of_a_flapping_link() {
    let sim = Sim::start(SimConfig::default()).await;
    let tuning = LinkTuning {
        rate_limit_window: Duration::from_secs(3),
        rate_limit_attempts: 2,
        ..LinkTuning::default()
    };
    let link = sim.connected_link_tuned(tuning).await;
    let t0 = Instant::now();
    // Each drop happens on a connection that reached CONNECTED, so the backoff alone would
    // allow 250 ms; the third attempt must wait for the window.
    for _ in 0..2 {
        fault_and_reconnect(&sim, &link, &Fault::DropConnection { device: None }).await;
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(2900),
        "third connection after {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_event_response_ends_the_connection_and_the_event_is_sent_on_the_next() {
    let sim = Sim::start(SimConfig::default()).await;
    let tuning = LinkTuning {
        event_response_timeout: Duration::from_millis(800),
        ..LinkTuning::default()
    };
    let link = sim.connected_link_tuned(tuning).await;
    let downchannels = count_downchannels(&sim);
    sim.fault(&Fault::StallEvents { count: 1 }).await;
    let mark = sim.handle.recorder.len();
    let id = send_event(&link.outbox, "VolumeChanged", 42);
    accepted(&sim, mark, &id).await;
    assert_eq!(count_downchannels(&sim), downchannels + 1, "reconnected");
    let statuses = event_statuses_since(&sim, mark);
    assert_eq!(
        statuses.first(),
        Some(&None),
        "the stalled attempt: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_directive_part_is_skipped_and_the_next_one_arrives_on_the_same_connection() {
    let sim = Sim::start(SimConfig::default()).await;
    let tuning = LinkTuning {
        part_limits: avs_proto::multipart::Limits {
            json_part_bytes: 16 * 1024,
            binary_part_bytes: 64 * 1024,
        },
        ..LinkTuning::default()
    };
    let mut link = sim.connected_link_tuned(tuning).await;
    let downchannels = count_downchannels(&sim);
    let huge = avs_proto::Directive::build(
        avs_proto::Header::new("Speaker", "SetVolume"),
        json!({"volume": 1, "pad": "x".repeat(64 * 1024)}),
    );
    sim.handle.admin.push(None, huge).await.unwrap();
    let small = avs_proto::Header::new("Speaker", "SetMute");
    let id = small.message_id.clone();
    sim.handle
        .admin
        .push(
            None,
            avs_proto::Directive::build(small, json!({"mute": false})),
        )
        .await
        .unwrap();
    // The first thing delivered is the small directive: the oversized one never surfaces.
    match next_incoming(&mut link.incoming, "the directive after the oversized one").await {
        Incoming::Directive(d) => assert_eq!(d.header.message_id, id),
        other => panic!("expected SetMute, got {other:?}"),
    }
    assert_eq!(count_downchannels(&sim), downchannels);
    assert_eq!(*link.state.borrow(), LinkState::Connected);
}
