//! The link against a real avs-sim over TLS + HTTP/2 on loopback: connection set-up order,
//! directives from the downchannel, events in order, 403 handling on events and on the
//! downchannel, offline queueing across an outage, and Recognize streaming.

mod link_support;

use std::time::Duration;

use avs_sim::{Fault, SimConfig};
use avsd::transport::{Incoming, LinkState, LinkTuning, ResponseOutcome, SendError};
use link_support::*;
use serde_json::json;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_downchannel_first_then_synchronizes_state_and_exchanges_messages() {
    let sim = Sim::start(SimConfig::default()).await;
    let mut link = sim.connected_link().await;

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
    let d = next_directive(&mut link.incoming, "Speaker.SetVolume").await;
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

    link.shutdown.cancel();
    tokio::time::timeout(WAIT, &mut link.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(*link.state.borrow(), LinkState::Disconnected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_403_asks_for_a_refresh_keeps_the_connection_and_retries_with_the_new_token() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, mut manual) = sim.manual_auth();
    let mut link = spawn_test_link(
        sim.link_config(&sim.handle.url),
        LinkTuning::default(),
        auth,
    );
    connected(&mut link.state).await;
    let downchannels = count_downchannels(&sim);

    sim.fault(&Fault::FailEvents {
        status: 403,
        count: 1,
    })
    .await;
    let mark = sim.handle.recorder.len();
    let id = send_event(&link.outbox, "VolumeChanged", 9);
    assert!(
        tokio::time::timeout(WAIT, manual.refresh_requested())
            .await
            .unwrap()
    );
    manual.token.send_replace(Some(sim.issue_token()));
    accepted(&sim, 0, &id).await;
    assert_eq!(event_statuses_since(&sim, mark), vec![Some(403), Some(204)]);
    assert_eq!(
        count_downchannels(&sim),
        downchannels,
        "a 403 on an event keeps the connection"
    );
    assert_eq!(*link.state.borrow(), LinkState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downchannel_403_refreshes_then_reconnects_with_the_new_token() {
    let sim = Sim::start(SimConfig::default()).await;
    let (auth, mut manual) =
        avsd::auth::AuthHandle::manual(Some(avsd::auth::AccessToken::new("Atza|not-a-token")));
    let mut link = spawn_test_link(
        sim.link_config(&sim.handle.url),
        LinkTuning::default(),
        auth,
    );
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_offline_are_sent_once_in_order_after_the_cloud_comes_back() {
    let sim = Sim::start(SimConfig::default()).await;
    let mut relay = start_relay(sim.addr()).await;
    let mut link = sim.spawn_link(
        sim.link_config(&relay.url().unwrap()),
        LinkTuning::default(),
    );
    connected(&mut link.state).await;

    relay.stop().await;
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
        .map(|n| send_event(&link.outbox, "VolumeChanged", 100 + n))
        .collect();
    assert_eq!(link.outbox.queued_len(), 5);
    let mark = sim.handle.recorder.len();
    relay.restart().await.unwrap();
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
    let after = sim.handle.recorder.events_since(mark);
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
}

/// A Recognize round trip; `attachments_first` makes the sim write each MP3 before its Speak.
#[allow(clippy::unwrap_used)] // the body of two tests
async fn recognize_round_trip(attachments_first: bool) {
    let sim = Sim::start(SimConfig {
        max_recognize_audio: Duration::from_millis(1500),
        attachments_first,
        ..SimConfig::default()
    })
    .await;
    let mut link = sim.connected_link().await;

    let (dialog, mut handle, feeder) = start_recognize(&link);
    // StopCapture comes on the downchannel while the upload is still open.
    let stop = next_directive(&mut link.incoming, "SpeechRecognizer.StopCapture").await;
    assert_eq!(stop.dialog_request_id(), Some(dialog.as_str()));
    assert!(
        !feeder.is_finished(),
        "audio was still streaming when StopCapture arrived"
    );
    feeder.abort();
    let _ = feeder.await;
    // Every directive of the response is delivered before the outcome fires.
    let mut speaks = Vec::new();
    let outcome = loop {
        tokio::select! {
            item = next_incoming(&mut link.incoming, "the Recognize response") => {
                if let Incoming::Directive(d) = item
                    && d.qualified_name() == "SpeechSynthesizer.Speak"
                {
                    speaks.push(d);
                }
            }
            outcome = &mut handle.response => break outcome.unwrap(),
        }
    };
    assert_eq!(outcome, ResponseOutcome::Status(200));
    while let Ok(Incoming::Directive(d)) = link.incoming.try_recv() {
        if d.qualified_name() == "SpeechSynthesizer.Speak" {
            speaks.push(d);
        }
    }
    assert!(!speaks.is_empty(), "no Speak in the response");
    for speak in &speaks {
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
    }
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recognize_streams_audio_while_its_response_is_read() {
    recognize_round_trip(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_written_before_their_speak_are_still_readable() {
    recognize_round_trip(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_reset_inside_an_attachment_fails_its_reader_not_the_connection() {
    let sim = Sim::start(SimConfig {
        max_recognize_audio: Duration::from_millis(1000),
        ..SimConfig::default()
    })
    .await;
    let mut link = sim.connected_link().await;
    let downchannels = count_downchannels(&sim);
    sim.fault(&Fault::KillMidAttachment).await;
    let (_dialog, handle, feeder) = start_recognize(&link);
    next_directive(&mut link.incoming, "SpeechRecognizer.StopCapture").await;
    feeder.abort();
    let outcome = tokio::time::timeout(WAIT, handle.response)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, ResponseOutcome::Failed(_)), "{outcome:?}");
    // h2 may discard the frames queued before the reset, so the Speak may never reach us; when
    // it does, its attachment must end in an error, never as a clean (truncated) MP3.
    while let Ok(item) = link.incoming.try_recv() {
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
    carries_events(&sim, &link, 5).await;
    assert_eq!(count_downchannels(&sim), downchannels);
    assert_eq!(*link.state.borrow(), LinkState::Connected);
}
