//! Every fault kind, injected through the admin API (HTTP and in-process) or a scenario turn:
//! GOAWAY, RST_STREAM on the downchannel, TCP drop, 403/429/500/503 on the next events, silent
//! pings, stalled events, malformed and unknown directives, a reset in mid-attachment.
// Integration tests: helpers panic on failure like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use avs_sim::{Fault, Scenario, SimConfig};
use avs_testkit::h2client::{H2Client, Parts, ReceivedPart};
use avs_testkit::sim::{TestSim, start_sim};
use common::*;
use serde_json::json;

fn reset_reason(err: &anyhow::Error) -> Option<h2::Reason> {
    err.chain()
        .find_map(|e| e.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason)
}

const SHORT: Duration = Duration::from_millis(500);
const LONG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn goaway_closes_the_connection_gracefully() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let mut dev = connect_device(&sim, "SN-F-1").await;
    let (status, v) = dev
        .client
        .post_json(
            "/admin/fault",
            &json!({"kind": "go_away", "device": "SN-F-1"}),
        )
        .await
        .unwrap();
    assert_eq!((status.as_u16(), v["applied"].as_u64()), (200, Some(1)));
    // The downchannel ends cleanly and the connection closes without error.
    assert!(
        tokio::time::timeout(LONG, dev.downchannel.recv())
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::timeout(LONG, dev.client.closed())
        .await
        .unwrap()
        .unwrap();
    // A new connection works.
    let _dev = connect_device(&sim, "SN-F-1").await;
    assert_eq!(
        sim.admin
            .fault(&Fault::GoAway {
                device: Some("nobody".into())
            })
            .await
            .ok(),
        None
    );
}

/// Opens a downchannel on `c` and waits until the sim has answered it.
async fn open_downchannel(sim: &TestSim, c: &mut H2Client, token: &str) -> Parts {
    let dc = c.open_downchannel(token).await.unwrap();
    assert_eq!(dc.status, 200);
    let parts = dc.parts().unwrap();
    sim.recorder
        .wait_for(0, LONG, "downchannel", |r| r.status == Some(200))
        .await
        .unwrap();
    parts
}

#[tokio::test]
async fn reset_downchannel_keeps_the_connection() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let token = sim.token("SN-F-2");
    let mut c = sim.client().await.unwrap();
    let mut parts = open_downchannel(&sim, &mut c, &token).await;
    sim.admin
        .fault(&Fault::ResetDownchannel { device: None })
        .await
        .unwrap();
    let err = tokio::time::timeout(LONG, parts.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        reset_reason(&err),
        Some(h2::Reason::INTERNAL_ERROR),
        "{err:?}"
    );
    assert_eq!(c.ping(&token).await.unwrap().status, 204);
}

#[tokio::test]
async fn drop_connection_closes_tcp_without_goaway() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let token = sim.token("SN-F-3");
    let mut c = sim.client().await.unwrap();
    let mut parts = open_downchannel(&sim, &mut c, &token).await;
    sim.admin
        .fault(&Fault::DropConnection {
            device: Some("SN-F-3".into()),
        })
        .await
        .unwrap();
    // No clean end of the multipart body: the stream breaks.
    assert!(
        tokio::time::timeout(LONG, parts.next())
            .await
            .unwrap()
            .is_err()
    );
    let closed = tokio::time::timeout(LONG, c.closed()).await.unwrap();
    if let Err(e) = closed {
        assert!(!e.is_go_away(), "{e:?}");
    }
}

#[tokio::test]
async fn next_events_fail_with_the_given_status() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let token = sim.token("SN-F-4");
    let mut c = sim.client().await.unwrap();
    let sync = event("System", "SynchronizeState", json!({}));
    for (status, code) in [
        (429, Some("THROTTLING_EXCEPTION")),
        (500, Some("INTERNAL_SERVICE_EXCEPTION")),
        (403, Some("UNAUTHORIZED_REQUEST_EXCEPTION")),
        (503, None),
    ] {
        let (s, _) = c
            .post_json(
                "/admin/fault",
                &json!({"kind": "fail_events", "status": status, "count": 2}),
            )
            .await
            .unwrap();
        assert_eq!(s, 200);
        for _ in 0..2 {
            let r = c.post_event(&token, &sync).await.unwrap();
            assert_eq!(r.status, status);
            let v = r.json().await.unwrap();
            assert_eq!(v["payload"]["code"].as_str(), code);
        }
        assert_eq!(c.post_event(&token, &sync).await.unwrap().status, 204);
    }
}

#[tokio::test]
async fn silent_pings_and_stalled_events() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let token = sim.token("SN-F-5");
    let mut c = sim.client().await.unwrap();
    sim.admin
        .fault(&Fault::SilencePings { enabled: true })
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(SHORT, c.ping(&token)).await.is_err(),
        "ping answered"
    );
    sim.admin
        .fault(&Fault::SilencePings { enabled: false })
        .await
        .unwrap();
    assert_eq!(c.ping(&token).await.unwrap().status, 204);

    sim.admin
        .fault(&Fault::StallEvents { count: 1 })
        .await
        .unwrap();
    let sync = event("System", "SynchronizeState", json!({}));
    assert!(
        tokio::time::timeout(SHORT, c.post_event(&token, &sync))
            .await
            .is_err(),
        "stalled event answered"
    );
    assert_eq!(c.post_event(&token, &sync).await.unwrap().status, 204);
}

#[tokio::test]
async fn malformed_and_unknown_directives_on_the_downchannel() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let mut dev = connect_device(&sim, "SN-F-6").await;
    sim.admin
        .fault(&Fault::MalformedDirective { device: None })
        .await
        .unwrap();
    let (_, part) = next_downchannel(&mut dev, LONG).await.unwrap();
    assert!(matches!(part, ReceivedPart::BadJson(_)), "{part:?}");
    sim.admin
        .fault(&Fault::UnknownDirective {
            device: Some("SN-F-6".into()),
        })
        .await
        .unwrap();
    let (_, part) = next_downchannel(&mut dev, LONG).await.unwrap();
    assert_eq!(
        part.directive_name().as_deref(),
        Some("Bogus.DoSomethingUnheardOf")
    );
    // Raw text through the HTTP admin API, parsed by nobody.
    let (s, _) = dev
        .client
        .post_json("/admin/push", &json!({"raw": "not json at all"}))
        .await
        .unwrap();
    assert_eq!(s, 200);
    let (_, part) = next_downchannel(&mut dev, LONG).await.unwrap();
    assert_eq!(part, ReceivedPart::BadJson("not json at all".into()));
}

#[tokio::test]
async fn kill_mid_attachment_resets_the_recognize_response() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let mut dev = connect_device(&sim, "SN-F-7").await;
    sim.admin.fault(&Fault::KillMidAttachment).await.unwrap();
    let (audio, _) = utterance("Hello there.", 200, 1000);
    let mut s = stream_recognize(&mut dev, "dlg-kill", "PRESS_AND_HOLD", &audio, false).await;
    let resp = s.event.response().await.unwrap();
    assert_eq!(resp.status, 200);
    let mut parts = resp.parts().unwrap();
    let first = parts.next().await.unwrap().unwrap();
    assert_eq!(
        first.directive_name().as_deref(),
        Some("SpeechSynthesizer.Speak")
    );
    let err = match parts.next().await {
        Ok(Some(p)) => panic!("the attachment must not complete: {p:?}"),
        Ok(None) => panic!("the body must not end cleanly"),
        Err(e) => e,
    };
    assert_eq!(
        reset_reason(&err),
        Some(h2::Reason::INTERNAL_ERROR),
        "{err:?}"
    );
}

#[tokio::test]
async fn scenario_turn_arms_faults() {
    let scenario = Scenario::from_toml(
        r#"
        [[turn]]
        final_speech = "Okay."
        faults = [{ kind = "fail_events", status = 503, count = 1 }]
        "#,
    )
    .unwrap();
    let sim = start_sim(SimConfig {
        scenario,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut dev = connect_device(&sim, "SN-F-8").await;
    let (audio, _) = utterance("Do it.", 200, 1000);
    let mut s = stream_recognize(&mut dev, "dlg-f", "PRESS_AND_HOLD", &audio, false).await;
    assert_eq!(s.event.response().await.unwrap().status, 200);
    let token = dev.token.clone();
    let sync = event("System", "SynchronizeState", json!({}));
    assert_eq!(
        dev.client.post_event(&token, &sync).await.unwrap().status,
        503
    );
    assert_eq!(
        dev.client.post_event(&token, &sync).await.unwrap().status,
        204
    );
}
