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

    // Discovery: an invalid report is refused with 400 and a JSON message...
    let report = |token: &str, endpoint_id: &str| {
        let mut e = avs_proto::Event::raw(
            "Alexa.Discovery",
            "AddOrUpdateReport",
            json!({
                "scope": {"type": "BearerToken", "token": token},
                "endpoints": [{
                    "endpointId": endpoint_id, "friendlyName": "", "description": "d",
                    "manufacturerName": "m", "displayCategories": ["ALEXA_VOICE_ENABLED"],
                    "capabilities": [{"type": "AlexaInterface", "interface": "Speaker", "version": "1.0"}]
                }]
            }),
        );
        e.header.event_correlation_token = Some("corr-7".to_owned());
        e.header.payload_version = Some("3".to_owned());
        e.to_json()
    };
    let own_id = format!(
        "{}::{}::SN-DC-1",
        avs_testkit::sim::TEST_CLIENT_ID,
        avs_testkit::sim::TEST_PRODUCT_ID
    );
    for bad in [
        report("someone-elses-token", &own_id),
        report(&token, "cid::pid::SN-OTHER"),
    ] {
        let r = dev.client.post_event(&token, &bad).await.unwrap();
        assert_eq!(r.status, 400);
        let body = r.json().await.unwrap();
        assert_eq!(body["payload"]["code"], "INVALID_REQUEST_EXCEPTION");
        assert!(body["payload"]["description"].is_string(), "{body}");
    }
    // ...a valid one gets 202, then EventProcessed with its correlation token on the downchannel.
    let r = dev
        .client
        .post_event(&token, &report(&token, &own_id))
        .await
        .unwrap();
    assert_eq!(r.status, 202);
    assert_eq!(
        sim.admin.discovery_report("SN-DC-1").unwrap()[0]["endpointId"],
        own_id.as_str()
    );
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

#[tokio::test]
async fn a_device_that_never_reads_its_downchannel_is_not_buffered_without_bound() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let token = sim.token("SN-DC-3");
    let mut c = sim.client().await.unwrap();
    // Opened, never read: flow control stops the sim's writes once the window is full.
    let dc = c.open_downchannel(&token).await.unwrap();
    assert_eq!(dc.status, 200);
    sim.recorder
        .wait_for(0, Duration::from_secs(5), "downchannel", |r| {
            r.status == Some(200)
        })
        .await
        .unwrap();
    let payload = "x".repeat(1000);
    let json = format!(
        r#"{{"directive":{{"header":{{"namespace":"Speaker","name":"SetVolume","messageId":"m"}},"payload":{{"pad":"{payload}","volume":1}}}}}}"#
    );
    let mut accepted = 0;
    for _ in 0..500 {
        accepted += sim.admin.push(Some("SN-DC-3"), json.clone()).await.unwrap();
        tokio::task::yield_now().await;
    }
    // The window (64 KiB) plus the bounded queue hold far fewer than 500 KB of directives.
    assert!(accepted < 200, "{accepted} pushes accepted");
    assert!(accepted > 30, "{accepted} pushes accepted");
    // The sim is fine, and the device can still catch up with what was queued.
    assert_eq!(c.ping(&token).await.unwrap().status, 204);
    let mut parts = dc.parts().unwrap();
    for _ in 0..accepted {
        let part = tokio::time::timeout(Duration::from_secs(5), parts.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(part.directive_name().as_deref(), Some("Speaker.SetVolume"));
    }
}

#[tokio::test]
async fn verify_gateway_is_204_until_the_admin_moves_devices() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let mut dev = connect_device(&sim, "SN-GW-1").await;
    let token = dev.token.clone();
    let verify = event("Alexa.ApiGateway", "VerifyGateway", json!({}));
    let r = dev.client.post_event(&token, &verify).await.unwrap();
    assert_eq!(r.status, 204);

    let (status, v) = dev
        .client
        .post_json(
            "/admin/gateway",
            &json!({"gateway": "https://127.0.0.1:9/"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    let r = dev.client.post_event(&token, &verify).await.unwrap();
    assert_eq!(r.status, 200);
    let parts = r.parts().unwrap().collect().await.unwrap();
    assert_eq!(parts.len(), 1);
    let ReceivedPart::Directive(d) = &parts[0] else {
        panic!("{parts:?}")
    };
    assert_eq!(d["directive"]["header"]["name"], "SetGateway");
    assert_eq!(d["directive"]["payload"]["gateway"], "https://127.0.0.1:9/");

    let (status, _) = dev
        .client
        .post_json("/admin/gateway", &json!({"gateway": null}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let r = dev.client.post_event(&token, &verify).await.unwrap();
    assert_eq!(r.status, 204);
    let recorded = sim.recorder.events("Alexa.ApiGateway.VerifyGateway");
    assert_eq!(recorded.len(), 3);
    assert!(recorded.iter().all(|r| r.listener.is_some()));
}
