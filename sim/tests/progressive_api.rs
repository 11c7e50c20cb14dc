//! The Progressive Response API on the sim's own TLS + HTTP/2 surface, driven by a skill written
//! here in Rust (so this holds even where Python is missing): the skill receives an
//! IntentRequest, calls `POST {apiEndpoint}/v1/directives` over h2 with its apiAccessToken, and
//! the device hears the interim Speak before the final one. Refusals carry integer codes.

// Test harness helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use avs_sim::{Scenario, SimConfig};
use avs_testkit::h2client::{H2Client, ReceivedPart};
use avs_testkit::sim::start_sim;
use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// What the skill saw when it called the API: (label, status, error body).
type Calls = Arc<Mutex<Vec<(&'static str, StatusCode, Value)>>>;

async fn post_directive(
    api: &mut H2Client,
    token: Option<&str>,
    request_id: &str,
    kind: &str,
    speech: &str,
) -> (StatusCode, Value) {
    let response = api
        .post_progressive(token, request_id, kind, speech)
        .await
        .unwrap();
    let status = response.status;
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

/// A skill that sends progressive responses over h2 to the sim, then answers.
async fn start_skill(ca_pem: PathBuf, calls: Calls) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let ca_pem = ca_pem.clone();
            let calls = calls.clone();
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let ca_pem = ca_pem.clone();
                let calls = calls.clone();
                async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let envelope: Value = serde_json::from_slice(&body).unwrap();
                    let system = &envelope["context"]["System"];
                    let api_endpoint =
                        url::Url::parse(system["apiEndpoint"].as_str().unwrap()).unwrap();
                    let token = system["apiAccessToken"].as_str().unwrap().to_owned();
                    let request_id = envelope["request"]["requestId"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    let mut api = H2Client::connect(&api_endpoint, &ca_pem).await.unwrap();
                    let rid = request_id.as_str();
                    let tries: [(&'static str, Option<&str>, &str, &str); 4] = [
                        ("no-token", None, "VoicePlayer.Speak", "Hello"),
                        ("wrong-type", Some(&token), "Dialog.Delegate", "Hello"),
                        (
                            "too-long",
                            Some(&token),
                            "VoicePlayer.Speak",
                            &"a".repeat(601),
                        ),
                        (
                            "ok",
                            Some(&token),
                            "VoicePlayer.Speak",
                            "<speak>One moment, please.</speak>",
                        ),
                    ];
                    for (label, auth, kind, speech) in tries {
                        let (status, body) =
                            post_directive(&mut api, auth, rid, kind, speech).await;
                        calls.lock().unwrap().push((label, status, body));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let answer = json!({
                        "version": "1.0",
                        "response": {
                            "outputSpeech": { "type": "PlainText", "text": "Here is your answer." },
                            "shouldEndSession": true
                        }
                    });
                    let response = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(answer.to_string())))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skill_speaks_early_through_the_sims_h2_api() {
    let dir = std::env::temp_dir().join(format!("avs-sim-pr-h2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let calls: Calls = Arc::default();
    let endpoint = start_skill(dir.join("ca.pem"), calls.clone()).await;
    let scenario = Scenario::from_toml(&format!(
        "[[turn]]\n[turn.skill]\nintent = \"LookupIntent\"\nendpoint = \"{endpoint}\"\n"
    ))
    .unwrap();
    let sim = start_sim(SimConfig {
        scenario,
        state_dir: Some(dir.clone()),
        ..SimConfig::default()
    })
    .await
    .unwrap();

    let mut dev = connect_device(&sim, "SN-PR-H2").await;
    let (audio, _) = utterance("Look something up.", 300, 3000);
    let mut s = stream_recognize(&mut dev, "dlg-h2", "TAP", &audio, true).await;
    let resp = s.event.response().await.unwrap();
    assert_eq!(resp.status, 200);
    let parts = tokio::time::timeout(Duration::from_secs(20), resp.parts().unwrap().collect())
        .await
        .unwrap()
        .unwrap();

    let calls = calls.lock().unwrap().clone();
    let summary: Vec<(&str, u16)> = calls.iter().map(|(l, s, _)| (*l, s.as_u16())).collect();
    assert_eq!(
        summary,
        [
            ("no-token", 401),
            ("wrong-type", 400),
            ("too-long", 400),
            ("ok", 204)
        ]
    );
    for (label, status, body) in &calls[..3] {
        assert_eq!(body["code"], json!(status.as_u16()), "{label}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{label}: {body}"
        );
    }
    assert_eq!(calls[3].2, Value::Null, "204 has no body");

    let names: Vec<String> = parts
        .iter()
        .filter_map(ReceivedPart::directive_name)
        .collect();
    assert_eq!(
        names,
        ["SpeechSynthesizer.Speak", "SpeechSynthesizer.Speak"]
    );
    let ReceivedPart::Directive(interim) = &parts[0] else {
        panic!("{:?}", parts[0]);
    };
    let token = interim["directive"]["payload"]["token"].as_str().unwrap();
    assert!(token.starts_with("pr-1-amzn1.echo-api.request."), "{token}");
    assert_eq!(interim["directive"]["header"]["dialogRequestId"], "dlg-h2");
    let ReceivedPart::Attachment { bytes, .. } = &parts[1] else {
        panic!("{:?}", parts[1]);
    };
    assert!(mp3_duration(bytes) > Duration::from_millis(700));

    sim.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
