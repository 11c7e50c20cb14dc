//! Code-based linking and refresh against the LWA stub, over TLS + HTTP/2 (and once over
//! HTTP/1.1, the way Python skills and simple clients talk).
// Integration tests: helpers panic on failure like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use avs_sim::SimConfig;
use avs_sim::lwa::LwaConfig;
use avs_testkit::sim::{TEST_CLIENT_ID, start_sim};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SCOPE_DATA: &str = r#"{"alexa:all":{"productID":"avs_sim_test_product","productInstanceAttributes":{"deviceSerialNumber":"SN-LWA-1"}}}"#;

fn config(interval: Duration, pair_lifetime: Duration) -> SimConfig {
    SimConfig {
        lwa: LwaConfig {
            poll_interval: interval,
            code_pair_lifetime: pair_lifetime,
            access_token_lifetime: Duration::from_secs(3600),
            ..LwaConfig::default()
        },
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn code_pair_pending_slow_down_approve_token_and_refresh() {
    let sim = start_sim(config(Duration::from_secs(1), Duration::from_secs(60)))
        .await
        .unwrap();
    let mut c = sim.client().await.unwrap();
    let (status, pair) = c
        .post_form(
            "/auth/O2/create/codepair",
            &[
                ("response_type", "device_code"),
                ("client_id", TEST_CLIENT_ID),
                ("scope", "alexa:all profile:user_id"),
                ("scope_data", SCOPE_DATA),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{pair}");
    assert_eq!(pair["expires_in"], 60);
    assert_eq!(pair["interval"], 1);
    assert!(
        pair["verification_uri"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    let device_code = pair["device_code"].as_str().unwrap().to_owned();
    let user_code = pair["user_code"].as_str().unwrap().to_owned();
    let poll = [
        ("grant_type", "device_code"),
        ("device_code", device_code.as_str()),
        ("user_code", user_code.as_str()),
    ];

    let (status, v) = c.post_form("/auth/O2/token", &poll).await.unwrap();
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (status, v) = c.post_form("/auth/O2/token", &poll).await.unwrap();
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (400, Some("slow_down"))
    );

    let (status, v) = c
        .post_json("/admin/approve", &json!({"user_code": "NOPE99"}))
        .await
        .unwrap();
    assert_eq!(status, 404, "{v}");
    let (status, _) = c
        .post_json("/admin/approve", &json!({"user_code": user_code}))
        .await
        .unwrap();
    assert_eq!(status, 200);

    // Polling at the interval is what the protocol asks for.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The lower-case spelling of the path is routed too.
    let (status, tokens) = c.post_form("/auth/o2/token", &poll).await.unwrap();
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("Atza|"));
    assert!(refresh.starts_with("Atzr|"));
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 3600);

    // The token opens a downchannel.
    let dc = c.open_downchannel(access).await.unwrap();
    assert_eq!(dc.status, 200);

    // The pair is used up.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, v) = c.post_form("/auth/O2/token", &poll).await.unwrap();
    assert_eq!(v["error"], "invalid_code_pair");

    let (status, renewed) = c
        .post_form(
            "/auth/O2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", TEST_CLIENT_ID),
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{renewed}");
    assert_ne!(renewed["access_token"], tokens["access_token"]);
    assert!(
        renewed["access_token"]
            .as_str()
            .unwrap()
            .starts_with("Atza|")
    );

    let (status, v) = c
        .post_form(
            "/auth/O2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "Atzr|bogus"),
                ("client_id", TEST_CLIENT_ID),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let (_, v) = c
        .post_form(
            "/auth/O2/token",
            &[("grant_type", "password"), ("username", "x")],
        )
        .await
        .unwrap();
    assert_eq!(v["error"], "unsupported_grant_type");
    let (_, v) = c
        .post_form("/auth/O2/token", &[("device_code", "x")])
        .await
        .unwrap();
    assert_eq!(v["error"], "invalid_request");
}

#[tokio::test]
async fn bad_client_id_and_unknown_or_expired_pairs() {
    let sim = start_sim(config(Duration::from_secs(1), Duration::from_secs(1)))
        .await
        .unwrap();
    let mut c = sim.client().await.unwrap();
    let (status, v) = c
        .create_code_pair("not-a-client", SCOPE_DATA)
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), v["error"].as_str()),
        (400, Some("invalid_client"))
    );
    let (_, v) = c
        .post_form(
            "/auth/O2/create/codepair",
            &[
                ("response_type", "device_code"),
                ("client_id", TEST_CLIENT_ID),
                ("scope", "alexa:all"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(v["error"], "invalid_request", "scope_data is required");
    let (_, v) = c
        .post_form(
            "/auth/O2/token",
            &[
                ("grant_type", "device_code"),
                ("device_code", "nope"),
                ("user_code", "NOPE"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(v["error"], "invalid_code_pair");

    let (_, pair) = c
        .create_code_pair(TEST_CLIENT_ID, SCOPE_DATA)
        .await
        .unwrap();
    // Let the one-second pair expire.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, v) = c.poll_code_pair(&pair).await.unwrap();
    assert_eq!(v["error"], "invalid_code_pair");
    let (_, v) = c
        .post_form(
            "/auth/O2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "Atzr|x"),
                ("client_id", "not-a-client"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(v["error"], "invalid_client");
}

#[tokio::test]
async fn auto_approve_over_http1() {
    let mut cfg = config(Duration::from_secs(1), Duration::from_secs(60));
    cfg.lwa.auto_approve = true;
    let sim = start_sim(cfg).await.unwrap();

    async fn post_h1(
        sim: &avs_testkit::sim::TestSim,
        path: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut tls = avs_testkit::h2client::connect_tls(&sim.url, &sim.ca_pem, &[b"http/1.1"])
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut resp = Vec::new();
        let _ = tls.read_to_end(&mut resp).await;
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
        let json = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        (
            status,
            serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
        )
    }

    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "device_code"),
            ("client_id", TEST_CLIENT_ID),
            ("scope", "alexa:all"),
            ("scope_data", SCOPE_DATA),
        ])
        .finish();
    let (status, pair) = post_h1(&sim, "/auth/O2/create/codepair", &form).await;
    assert_eq!(status, 200, "{pair}");
    let form = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "device_code"),
            ("device_code", pair["device_code"].as_str().unwrap()),
            ("user_code", pair["user_code"].as_str().unwrap()),
        ])
        .finish();
    let (status, tokens) = post_h1(&sim, "/auth/O2/token", &form).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(
        tokens["access_token"]
            .as_str()
            .unwrap()
            .starts_with("Atza|")
    );
}
