//! The downchannel: opening it, SynchronizeState on a new stream of the same connection,
//! directives pushed through the admin API (in-process and over HTTPS), Discovery's
//! EventProcessed, and the one-connection-per-device rule.
// Integration tests: helpers panic on failure like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use avs_sim::SimConfig;
use avs_testkit::h2client::ReceivedPart;
use avs_testkit::sim::start_sim;
use common::*;
use serde_json::json;

#[tokio::test]
async fn downchannel_then_synchronize_state_and_pushes() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let mut dev = connect_device(&sim, "SN-DC-1").await;
    let sync = avs_proto::Event::raw("System", "SynchronizeState", json!({}))
        .with_context(vec![
            avs_proto::ContextEntry::volume_state(40, false),
            avs_proto::ContextEntry::speech_state("", 0, "FINISHED"),
        ])
        .to_json();
    let token = dev.token.clone();
    let r = dev.client.post_event(&token, &sync).await.unwrap();
    assert_eq!(r.status, 204);
    assert!(r.bytes().await.unwrap().is_empty());
    let rec = sim
        .recorder
        .wait_for_event("System.SynchronizeState", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(rec.status, Some(204));
    assert_eq!(rec.device.as_deref(), Some("SN-DC-1"));
    assert!(rec.event.unwrap().has_context);

    // In-process push.
    let set_volume = r#"{"directive":{"header":{"namespace":"Speaker","name":"SetVolume","messageId":"m-1"},"payload":{"volume":25}}}"#;
    assert_eq!(
        sim.admin
            .push(Some("SN-DC-1"), set_volume.to_owned())
            .await
            .unwrap(),
        1
    );
    let (_, part) = next_downchannel(&mut dev, Duration::from_secs(5))
        .await
        .unwrap();
    let ReceivedPart::Directive(v) = part else {
        panic!("{part:?}")
    };
    assert_eq!(v["directive"]["payload"]["volume"], 25);

    // Over the admin API.
    let (status, v) = dev
        .client
        .post_json(
            "/admin/push",
            &json!({"device": "SN-DC-1", "directive": {"directive": {"header": {"namespace": "System", "name": "ResetUserInactivity", "messageId": "m-2"}, "payload": {}}}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let (_, part) = next_downchannel(&mut dev, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        part.directive_name().as_deref(),
        Some("System.ResetUserInactivity")
    );

    let (status, _) = dev
        .client
        .post_json("/admin/push", &json!({"device": "nobody", "raw": "{}"}))
        .await
        .unwrap();
    assert_eq!(status, 404);

    // Discovery: 202, then EventProcessed with the same correlation token on the downchannel.
    let mut report = avs_proto::Event::raw(
        "Alexa.Discovery",
        "AddOrUpdateReport",
        json!({"endpoints": []}),
    );
    report.header.event_correlation_token = Some("corr-7".to_owned());
    report.header.payload_version = Some("3".to_owned());
    let r = dev
        .client
        .post_event(&token, &report.to_json())
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    let (_, part) = next_downchannel(&mut dev, Duration::from_secs(5))
        .await
        .unwrap();
    let ReceivedPart::Directive(v) = part else {
        panic!()
    };
    assert_eq!(v["directive"]["header"]["name"], "EventProcessed");
    assert_eq!(v["directive"]["header"]["eventCorrelationToken"], "corr-7");

    let (status, v) = dev
        .client
        .post_json("/admin/devices", &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 404, "devices is a GET: {v}");
    let r = dev
        .client
        .send(
            http::Method::GET,
            "/admin/recorder",
            None,
            None,
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let records = r.json().await.unwrap();
    assert!(
        records
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["event"]["name"] == "SynchronizeState")
    );
}

#[tokio::test]
async fn a_second_connection_of_the_same_device_goaways_the_first() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let first = connect_device(&sim, "SN-DC-2").await;
    let mut second = connect_device(&sim, "SN-DC-2").await;
    let Device {
        client,
        mut downchannel,
        ..
    } = first;
    // The old downchannel ends and the old connection closes.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), downchannel.recv())
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::timeout(Duration::from_secs(10), client.closed())
        .await
        .unwrap()
        .unwrap();
    // The new one carries the pushes.
    sim.admin
        .push(
            Some("SN-DC-2"),
            avs_proto::DirectiveEnvelope::new(
                avs_proto::Header::new("System", "ReportSoftwareInfo"),
                json!({}),
            )
            .to_json(),
        )
        .await
        .unwrap();
    let (_, part) = next_downchannel(&mut second, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        part.directive_name().as_deref(),
        Some("System.ReportSoftwareInfo")
    );
    assert_eq!(sim.admin.devices(), ["SN-DC-2"]);
}
