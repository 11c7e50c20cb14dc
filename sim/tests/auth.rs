//! Bearer tokens on every AVS stream: missing, unknown and expired tokens get 403 with the
//! UNAUTHORIZED_REQUEST_EXCEPTION body on the downchannel, on events and on /ping.
// Integration tests: helpers panic on failure like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use avs_sim::SimConfig;
use avs_sim::lwa::LwaConfig;
use avs_testkit::sim::start_sim;
use common::*;
use serde_json::json;

async fn assert_403(r: avs_testkit::h2client::H2Response) {
    assert_eq!(r.status, 403);
    assert_eq!(r.content_type(), Some("application/json"));
    let v = r.json().await.unwrap();
    assert_eq!(v["header"]["namespace"], "System");
    assert_eq!(v["header"]["name"], "Exception");
    assert_eq!(v["payload"]["code"], "UNAUTHORIZED_REQUEST_EXCEPTION");
}

#[tokio::test]
async fn missing_and_unknown_tokens_get_403() {
    let sim = start_sim(SimConfig::default()).await.unwrap();
    let mut c = sim.client().await.unwrap();
    let sync = event("System", "SynchronizeState", json!({}));
    for token in [None, Some("Atza|not-issued")] {
        for path in [avs_proto::DIRECTIVES_PATH, avs_proto::PING_PATH] {
            assert_403(c.get(path, token).await.unwrap()).await;
        }
    }
    assert_403(c.post_event("Atza|not-issued", &sync).await.unwrap()).await;
    // The connection survives a 403 on an event stream.
    let good = sim.token("SN-AUTH-1");
    assert_eq!(c.ping(&good).await.unwrap().status, 204);
    assert_eq!(c.post_event(&good, &sync).await.unwrap().status, 204);
}

#[tokio::test]
async fn expired_tokens_get_403_and_a_refreshed_one_works() {
    let sim = start_sim(SimConfig {
        lwa: LwaConfig {
            access_token_lifetime: Duration::from_secs(1),
            ..LwaConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut dev = connect_device(&sim, "SN-AUTH-2").await;
    let (_, refresh) = sim
        .admin
        .issue_token(avs_testkit::sim::TEST_CLIENT_ID, "p", "SN-AUTH-2");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token = dev.token.clone();
    let sync = event("System", "SynchronizeState", json!({}));
    assert_403(dev.client.post_event(&token, &sync).await.unwrap()).await;
    assert_403(dev.client.ping(&token).await.unwrap()).await;
    let (status, v) = dev
        .client
        .post_form(
            "/auth/O2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", avs_testkit::sim::TEST_CLIENT_ID),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let fresh = v["access_token"].as_str().unwrap();
    assert_eq!(
        dev.client.post_event(fresh, &sync).await.unwrap().status,
        204
    );
    // The live downchannel survived the expiry.
    sim.admin.push(Some("SN-AUTH-2"), r#"{"directive":{"header":{"namespace":"System","name":"ResetUserInactivity","messageId":"x"},"payload":{}}}"#.into()).await.unwrap();
    assert!(
        next_downchannel(&mut dev, Duration::from_secs(5))
            .await
            .is_some()
    );
}
