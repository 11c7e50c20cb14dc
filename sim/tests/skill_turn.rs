//! A turn answered by a skill web service: the sim posts an IntentRequest whose
//! `context.System.apiEndpoint` points back at the sim, the skill sends a progressive response
//! to `POST /v1/directives` while it works, and the device hears the interim speech before the
//! skill's final answer, all on the Recognize's response stream.
// Integration tests: helpers panic on failure like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use avs_sim::{Scenario, SimConfig};
use avs_testkit::h2client::{H2Client, ReceivedPart};
use avs_testkit::sim::{TestSim, start_sim};
use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A scripted skill on plain HTTP/1.1: answers each request after sending one progressive
/// response to the sim; reports each request and the PR status it got.
async fn scripted_skill(ca_pem: PathBuf) -> (url::Url, mpsc::Receiver<(Value, u16)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let body = loop {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "request cut short");
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break buf[end + 4..end + 4 + len].to_vec();
                }
            };
            let request: Value = serde_json::from_slice(&body).unwrap();
            let answer = if request["request"]["intent"]["name"] == "AskCity" {
                tx.send((request.clone(), 0)).await.unwrap();
                json!({"version": "1.0", "response": {
                    "outputSpeech": {"type": "PlainText", "text": "For which city?"},
                    "reprompt": {"outputSpeech": {"type": "PlainText", "text": "Which city, please?"}},
                    "shouldEndSession": false,
                }})
            } else if request["request"]["type"] == "IntentRequest" {
                let api = url::Url::parse(
                    request["context"]["System"]["apiEndpoint"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
                let token = request["context"]["System"]["apiAccessToken"]
                    .as_str()
                    .unwrap();
                let request_id = request["request"]["requestId"].as_str().unwrap();
                let mut c = H2Client::connect(&api, &ca_pem).await.unwrap();
                let r = c
                    .post_progressive(
                        Some(token),
                        request_id,
                        "VoicePlayer.Speak",
                        "<speak>Checking the sky.</speak>",
                    )
                    .await
                    .unwrap();
                tx.send((request.clone(), r.status.as_u16())).await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let city = request["request"]["intent"]["slots"]["city"]["value"]
                    .as_str()
                    .unwrap_or("nowhere");
                json!({"version": "1.0", "response": {
                    "outputSpeech": {"type": "PlainText", "text": format!("It is sunny in {city}.")},
                    "shouldEndSession": true,
                }})
            } else {
                tx.send((request.clone(), 0)).await.unwrap();
                json!({"version": "1.0", "response": {}})
            };
            let body = answer.to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
            let _ = sock.shutdown().await;
        }
    });
    (url, rx)
}

/// A sim playing `scenario` with its skill turns sent to [`scripted_skill`], that skill's
/// reports, and the sim's state directory (remove it after the sim). The skill starts before the
/// sim, so it is told where the sim will write its CA (that state directory) and the sim is
/// told the skill's endpoint.
async fn start_skill_sim(
    name: &str,
    scenario: &str,
) -> (TestSim, mpsc::Receiver<(Value, u16)>, PathBuf) {
    let ca_dir = std::env::temp_dir().join(format!("avs-sim-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&ca_dir).unwrap();
    let (skill_url, requests) = scripted_skill(ca_dir.join("ca.pem")).await;
    let sim = start_sim(SimConfig {
        scenario: Scenario::from_toml(scenario).unwrap(),
        skill_endpoint: Some(skill_url),
        state_dir: Some(ca_dir.clone()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    (sim, requests, ca_dir)
}

#[tokio::test]
async fn skill_turn_with_progressive_response() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (sim, mut requests, ca_dir) = start_skill_sim(
        "skill-test",
        r#"
        [[turn]]
        skill = { intent = "GetWeather", slots = { city = "Paris" } }
        "#,
    )
    .await;
    let mut dev = connect_device(&sim, "SN-SKILL-1").await;
    let (audio, _) = utterance("What is the weather in Paris?", 200, 800);
    let mut s = stream_recognize(&mut dev, "dlg-skill", "PRESS_AND_HOLD", &audio, false).await;
    let resp = s.event.response().await.unwrap();
    assert_eq!(resp.status, 200);
    let parts = resp.parts().unwrap().collect().await.unwrap();

    let (request, pr_status) = requests.recv().await.unwrap();
    assert_eq!(pr_status, 204, "the progressive response was accepted");
    assert_eq!(request["request"]["intent"]["name"], "GetWeather");
    assert_eq!(
        request["context"]["System"]["device"]["deviceId"],
        "SN-SKILL-1"
    );

    let speaks: Vec<&Value> = parts
        .iter()
        .filter_map(|p| match p {
            ReceivedPart::Directive(v) => Some(v),
            _ => None,
        })
        .filter(|v| v["directive"]["header"]["name"] == "Speak")
        .collect();
    assert_eq!(speaks.len(), 2, "{parts:?}");
    for v in &speaks {
        assert_eq!(v["directive"]["header"]["dialogRequestId"], "dlg-skill");
    }
    assert_eq!(speaks[0]["directive"]["payload"]["playBehavior"], "ENQUEUE");
    // Interim then final, each with a decodable MP3.
    let attachments: Vec<&Bytes> = parts
        .iter()
        .filter_map(|p| match p {
            ReceivedPart::Attachment { bytes, .. } => Some(bytes),
            _ => None,
        })
        .collect();
    assert_eq!(attachments.len(), 2);
    let interim = mp3_duration(attachments[0]);
    let fin = mp3_duration(attachments[1]);
    assert!(interim.abs_diff(speech_duration("Checking the sky.")) < Duration::from_millis(80));
    assert!(fin.abs_diff(speech_duration("It is sunny in Paris.")) < Duration::from_millis(80));

    // A progressive response after the turn is refused.
    let mut c = sim.client().await.unwrap();
    let request_id = request["request"]["requestId"].as_str().unwrap();
    let token = request["context"]["System"]["apiAccessToken"]
        .as_str()
        .unwrap();
    let r = c
        .post_progressive(Some(token), request_id, "VoicePlayer.Speak", "Too late.")
        .await
        .unwrap();
    assert!(r.status.is_client_error(), "{}", r.status);
    drop(sim);
    let _ = std::fs::remove_dir_all(&ca_dir);
}

#[tokio::test]
async fn expect_speech_timed_out_reprompts_once_then_ends_the_session() {
    let (sim, mut requests, ca_dir) = start_skill_sim(
        "skill-test2",
        "[[turn]]\nskill = { intent = \"AskCity\" }\n",
    )
    .await;
    let mut dev = connect_device(&sim, "SN-SKILL-2").await;
    let (audio, _) = utterance("What is the weather?", 200, 800);
    let mut s = stream_recognize(&mut dev, "dlg-ask", "PRESS_AND_HOLD", &audio, false).await;
    let parts = s.response_parts().await;
    let names = directive_names(&parts);
    assert_eq!(
        names,
        ["SpeechSynthesizer.Speak", "SpeechRecognizer.ExpectSpeech"]
    );
    let (launch, _) = requests.recv().await.unwrap();
    assert_eq!(launch["request"]["intent"]["name"], "AskCity");

    let token = dev.token.clone();
    let timed_out = event("SpeechRecognizer", "ExpectSpeechTimedOut", json!({}));
    let r = dev.client.post_event(&token, &timed_out).await.unwrap();
    assert_eq!(r.status, 200);
    let parts = r.parts().unwrap().collect().await.unwrap();
    let names = directive_names(&parts);
    assert_eq!(
        names,
        ["SpeechSynthesizer.Speak", "SpeechRecognizer.ExpectSpeech"]
    );
    let ReceivedPart::Attachment { bytes, .. } = &parts[1] else {
        panic!("{parts:?}")
    };
    assert!(
        mp3_duration(bytes).abs_diff(speech_duration("Which city, please?"))
            < Duration::from_millis(80)
    );

    // The second time the session ends: nothing to say, and the skill hears why.
    let r = dev.client.post_event(&token, &timed_out).await.unwrap();
    assert_eq!(r.status, 204);
    let (ended, _) = tokio::time::timeout(Duration::from_secs(10), requests.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended["request"]["type"], "SessionEndedRequest");
    assert_eq!(ended["request"]["reason"], "EXCEEDED_MAX_REPROMPTS");
    drop(sim);
    let _ = std::fs::remove_dir_all(&ca_dir);
}
