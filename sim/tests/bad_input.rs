//! Bad input gets the precise HTTP error and never takes the sim down: wrong content types,
//! malformed multipart, malformed or incomplete JSON, parts in the wrong order, oversized
//! parts, audio where none belongs, unknown paths, oversized admin/LWA bodies.
// Integration tests: helpers panic on failure like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use avs_proto::multipart::FormDataWriter;
use avs_sim::SimConfig;
use avs_testkit::h2client::{H2Client, H2Response};
use avs_testkit::sim::start_sim;
use bytes::Bytes;
use common::*;
use http::Method;
use serde_json::json;

async fn post(
    c: &mut H2Client,
    token: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> H2Response {
    c.send(
        Method::POST,
        avs_proto::EVENTS_PATH,
        Some(token),
        content_type,
        body.into(),
    )
    .await
    .unwrap()
}

async fn assert_400(r: H2Response, what: &str) {
    assert_eq!(r.status, 400, "{what}");
    let v = r.json().await.unwrap();
    assert_eq!(
        v["payload"]["code"], "INVALID_REQUEST_EXCEPTION",
        "{what}: {v}"
    );
    assert_eq!(v["header"]["name"], "Exception");
}

#[tokio::test]
async fn malformed_events_get_400() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let token = sim.token("SN-BAD-1");
    let mut c = sim.client().await.unwrap();
    let sync = event("System", "SynchronizeState", json!({}));

    assert_400(
        post(&mut c, &token, Some("application/json"), sync.clone()).await,
        "wrong content type",
    )
    .await;
    assert_400(
        post(&mut c, &token, None, sync.clone()).await,
        "no content type",
    )
    .await;
    assert_400(
        post(&mut c, &token, Some("multipart/form-data"), sync.clone()).await,
        "no boundary",
    )
    .await;
    assert_400(
        post(
            &mut c,
            &token,
            Some("multipart/form-data; boundary=XYZ"),
            "this is not multipart at all",
        )
        .await,
        "not multipart",
    )
    .await;

    let w = FormDataWriter::new();
    let ct = w.content_type();
    // Truncated body: no closing delimiter.
    assert_400(
        post(&mut c, &token, Some(&ct), w.metadata(&sync)).await,
        "truncated",
    )
    .await;
    // Broken JSON.
    assert_400(
        post(
            &mut c,
            &token,
            Some(&ct),
            w.metadata_only("{\"event\": {\"header\":"),
        )
        .await,
        "bad json",
    )
    .await;
    // JSON that is not an event.
    assert_400(
        post(&mut c, &token, Some(&ct), w.metadata_only("{\"hello\": 1}")).await,
        "not an event",
    )
    .await;
    assert_400(
        post(&mut c, &token, Some(&ct), w.metadata_only(r#"{"event":{"header":{"namespace":"System","name":"SynchronizeState"},"payload":{}}}"#)).await,
        "no messageId",
    )
    .await;
    // Audio before metadata.
    let mut body = w.audio_header()[2..].to_vec();
    body.extend_from_slice(&[0u8; 640]);
    body.extend_from_slice(&w.finish());
    assert_400(post(&mut c, &token, Some(&ct), body).await, "audio first").await;
    // Audio on an event that takes none.
    let mut body = w.metadata(&sync).to_vec();
    body.extend_from_slice(&w.audio_header());
    body.extend_from_slice(&[0u8; 640]);
    body.extend_from_slice(&w.finish());
    assert_400(
        post(&mut c, &token, Some(&ct), body).await,
        "audio on SynchronizeState",
    )
    .await;
    // Oversized metadata (limit 256 KiB).
    let huge = event(
        "System",
        "SynchronizeState",
        json!({"junk": "x".repeat(300 * 1024)}),
    );
    assert_400(
        post(&mut c, &token, Some(&ct), w.metadata_only(&huge)).await,
        "oversized",
    )
    .await;
    // Recognize without a dialogRequestId.
    let rec = avs_proto::Event::raw(
        "SpeechRecognizer",
        "Recognize",
        json!({"profile": "NEAR_FIELD", "format": "AUDIO_L16_RATE_16000_CHANNELS_1"}),
    )
    .to_json();
    let mut body = w.metadata(&rec).to_vec();
    body.extend_from_slice(&w.audio_header());
    body.extend_from_slice(&[0u8; 640]);
    body.extend_from_slice(&w.finish());
    assert_400(
        post(&mut c, &token, Some(&ct), body).await,
        "Recognize without dialog",
    )
    .await;
    // A known event with a bad payload, and a firmware version of 0.
    assert_400(
        c.post_event(
            &token,
            &event("SpeechSynthesizer", "SpeechStarted", json!({})),
        )
        .await
        .unwrap(),
        "no token",
    )
    .await;
    assert_400(
        c.post_event(
            &token,
            &event("System", "SoftwareInfo", json!({"firmwareVersion": "0"})),
        )
        .await
        .unwrap(),
        "fw 0",
    )
    .await;
    assert_eq!(
        c.post_event(
            &token,
            &event("System", "SoftwareInfo", json!({"firmwareVersion": "42"}))
        )
        .await
        .unwrap()
        .status,
        204
    );
    // The SDK's context shape and unknown interfaces are accepted.
    let sdk = r#"{"context":{"properties":[]},"event":{"header":{"namespace":"Custom","name":"Thing","messageId":"m"},"payload":{}}}"#;
    assert_eq!(c.post_event(&token, sdk).await.unwrap().status, 204);

    // Still alive on the same connection.
    assert_eq!(c.ping(&token).await.unwrap().status, 204);
}

#[tokio::test]
async fn unknown_paths_and_oversized_bodies() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let token = sim.token("SN-BAD-2");
    let mut c = sim.client().await.unwrap();
    for (m, p) in [
        (Method::GET, "/"),
        (Method::GET, "/v20160207/nothing"),
        (Method::POST, avs_proto::DIRECTIVES_PATH),
        (Method::GET, avs_proto::EVENTS_PATH),
        (Method::GET, "/media/none.mp3"),
        (Method::GET, "/admin/nothing"),
    ] {
        let r = c
            .send(m.clone(), p, Some(&token), None, Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.status, 404, "{m} {p}");
    }
    let r = c
        .send(
            Method::POST,
            "/auth/O2/token",
            None,
            Some("application/x-www-form-urlencoded"),
            Bytes::from(vec![b'a'; 2 * 1024 * 1024]),
        )
        .await;
    // The sim answers 413 as soon as the limit is crossed; the client may see the reset first.
    if let Ok(r) = r {
        assert_eq!(r.status, 413);
    }
    let (status, _) = c
        .post_json("/admin/fault", &json!({"kind": "no_such_fault"}))
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = c
        .post_json(
            "/admin/fault",
            &json!({"kind": "fail_events", "status": 404, "count": 1}),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    let mut c = sim.client().await.unwrap();
    assert_eq!(c.ping(&token).await.unwrap().status, 204);
}
