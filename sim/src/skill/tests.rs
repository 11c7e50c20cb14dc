//! The skill host against a scripted skill served over real HTTP/1.1 on loopback.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use avs_proto::DirectiveKind;
use avs_proto::interfaces::{audio_player, speech_synthesizer};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::speech;

type Reply = Pin<Box<dyn Future<Output = (u16, String)> + Send>>;
type Script = Arc<dyn Fn(Value) -> Reply + Send + Sync>;

/// A skill web service whose answers come from a script; it records every request envelope.
struct FakeSkill {
    url: url::Url,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl FakeSkill {
    async fn start(script: Script) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url =
            url::Url::parse(&format!("http://{}/skill", listener.local_addr().unwrap())).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = script.clone();
                let recorded = recorded.clone();
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let script = script.clone();
                    let recorded = recorded.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let envelope: Value = serde_json::from_slice(&body).unwrap();
                        recorded.lock().unwrap().push(envelope.clone());
                        let (status, body) = script(envelope).await;
                        let response = hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }
}

fn reply(body: Value) -> Reply {
    Box::pin(async move { (200, body.to_string()) })
}

fn answer(speech: &str, end: Option<bool>) -> Value {
    let mut response = json!({ "outputSpeech": { "type": "PlainText", "text": speech } });
    if let Some(end) = end {
        response["shouldEndSession"] = json!(end);
    }
    json!({ "version": "1.0", "response": response })
}

fn turn(endpoint: &url::Url, intent: Option<&str>) -> SkillTurn {
    SkillTurn {
        endpoint: endpoint.clone(),
        api_endpoint: url::Url::parse("https://127.0.0.1:4433/").unwrap(),
        dialog_request_id: "dialog-1".into(),
        intent: intent.map(str::to_owned),
        slots: BTreeMap::from([("Query".to_owned(), "the weather".to_owned())]),
        locale: "en-US".into(),
        device_id: "device-1".into(),
        user_id: "amzn1.ask.account.tester".into(),
    }
}

/// Everything written to the sink so far, parsed, with the attachment.
fn drain(
    rx: &mut mpsc::Receiver<TurnDirective>,
) -> Vec<(avs_proto::Directive, Option<(String, Bytes)>)> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|d| {
            (
                avs_proto::Directive::from_json(d.json.as_bytes()).unwrap(),
                d.attachment,
            )
        })
        .collect()
}

fn names(directives: &[(avs_proto::Directive, Option<(String, Bytes)>)]) -> Vec<String> {
    directives.iter().map(|(d, _)| d.qualified_name()).collect()
}

fn speak_of(directive: &avs_proto::Directive) -> speech_synthesizer::Speak {
    match &directive.kind {
        DirectiveKind::SpeechSynthesizer(speech_synthesizer::Directive::Speak(speak)) => {
            speak.clone()
        }
        other => panic!("not a Speak: {other:?}"),
    }
}

#[tokio::test]
async fn launch_request_follows_the_alexa_request_format() {
    let skill = FakeSkill::start(Arc::new(|_| {
        reply(answer("Welcome to the test skill.", Some(true)))
    }))
    .await;
    let live = LiveRequests::new();
    let (tx, mut rx) = mpsc::channel(16);
    run_turn(turn(&skill.url, None), &live, tx).await.unwrap();

    let requests = skill.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r["version"], "1.0");
    assert_eq!(r["session"]["new"], true);
    assert!(
        r["session"]["sessionId"]
            .as_str()
            .unwrap()
            .starts_with("amzn1.echo-api.session.")
    );
    let app = r["session"]["application"]["applicationId"]
        .as_str()
        .unwrap();
    assert!(app.starts_with("amzn1.ask.skill."));
    assert_eq!(r["context"]["System"]["application"]["applicationId"], app);
    assert_eq!(r["session"]["user"]["userId"], "amzn1.ask.account.tester");
    assert_eq!(
        r["context"]["System"]["user"]["userId"],
        "amzn1.ask.account.tester"
    );
    assert!(r["session"]["attributes"].as_object().unwrap().is_empty());
    assert_eq!(r["context"]["System"]["device"]["deviceId"], "device-1");
    assert!(r["context"]["System"]["device"]["supportedInterfaces"].is_object());
    assert_eq!(
        r["context"]["System"]["apiEndpoint"],
        "https://127.0.0.1:4433"
    );
    assert!(
        r["context"]["System"]["apiAccessToken"]
            .as_str()
            .unwrap()
            .len()
            > 32
    );
    assert_eq!(r["request"]["type"], "LaunchRequest");
    assert!(
        r["request"]["requestId"]
            .as_str()
            .unwrap()
            .starts_with("amzn1.echo-api.request.")
    );
    assert_eq!(r["request"]["locale"], "en-US");
    let stamp = r["request"]["timestamp"].as_str().unwrap();
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(stamp.ends_with('Z'));

    let out = drain(&mut rx);
    assert_eq!(names(&out), ["SpeechSynthesizer.Speak"]);
    let speak = speak_of(&out[0].0);
    assert_eq!(out[0].0.dialog_request_id(), Some("dialog-1"));
    assert_eq!(
        speak.play_behavior,
        Some(speech_synthesizer::PlayBehavior::Enqueue)
    );
    assert_eq!(speak.format, "AUDIO_MPEG");
    let (cid, mp3) = out[0].1.clone().unwrap();
    assert_eq!(speak.url, format!("cid:{cid}"));
    assert!(speech::mp3_duration(&mp3).unwrap() > Duration::from_millis(800));
    assert!(
        !live.has_session("device-1"),
        "shouldEndSession true ends the session"
    );
}

#[tokio::test]
async fn a_session_carries_attributes_across_turns() {
    let script: Script = Arc::new(|r: Value| {
        let count = r["session"]["attributes"]["count"].as_u64().unwrap_or(0) + 1;
        let mut body = json!({
            "version": "1.0",
            "sessionAttributes": { "count": count },
            "response": {
                "outputSpeech": { "type": "SSML", "ssml": format!("<speak>Turn {count}.</speak>") },
                "reprompt": { "outputSpeech": { "type": "PlainText", "text": "Anything else?" } },
                "shouldEndSession": count >= 2,
            }
        });
        if count >= 2 {
            body["response"].as_object_mut().unwrap().remove("reprompt");
        }
        reply(body)
    });
    let skill = FakeSkill::start(script).await;
    let live = LiveRequests::new();
    let (tx, mut rx) = mpsc::channel(16);

    run_turn(turn(&skill.url, Some("LookupIntent")), &live, tx.clone())
        .await
        .unwrap();
    let first = drain(&mut rx);
    assert_eq!(
        names(&first),
        ["SpeechSynthesizer.Speak", "SpeechRecognizer.ExpectSpeech"]
    );
    assert_eq!(first[1].0.payload["timeoutInMilliseconds"], 8000);
    assert_eq!(first[1].0.dialog_request_id(), Some("dialog-1"));
    assert!(live.has_session("device-1"));

    let mut second_turn = turn(&skill.url, Some("LookupIntent"));
    second_turn.dialog_request_id = "dialog-2".into();
    run_turn(second_turn, &live, tx).await.unwrap();
    let second = drain(&mut rx);
    assert_eq!(names(&second), ["SpeechSynthesizer.Speak"]);
    assert_eq!(second[0].0.dialog_request_id(), Some("dialog-2"));
    assert!(!live.has_session("device-1"));

    let requests = skill.requests();
    let (a, b) = (&requests[0], &requests[1]);
    assert_eq!(a["request"]["type"], "IntentRequest");
    assert_eq!(a["request"]["intent"]["name"], "LookupIntent");
    assert_eq!(a["request"]["intent"]["confirmationStatus"], "NONE");
    assert_eq!(
        a["request"]["intent"]["slots"]["Query"],
        json!({ "name": "Query", "value": "the weather", "confirmationStatus": "NONE", "source": "USER" })
    );
    assert_eq!(
        (a["session"]["new"].clone(), b["session"]["new"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(a["session"]["sessionId"], b["session"]["sessionId"]);
    assert_eq!(b["session"]["attributes"], json!({ "count": 1 }));
    assert_ne!(a["request"]["requestId"], b["request"]["requestId"]);
    assert_ne!(
        a["context"]["System"]["apiAccessToken"],
        b["context"]["System"]["apiAccessToken"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_speech_comes_before_the_final_answer() {
    let live = LiveRequests::new();
    let api = live.clone();
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let script: Script = Arc::new(move |r: Value| {
        let api = api.clone();
        let seen = seen.clone();
        Box::pin(async move {
            let token = format!(
                "Bearer {}",
                r["context"]["System"]["apiAccessToken"].as_str().unwrap()
            );
            let pr = json!({
                "header": { "requestId": r["request"]["requestId"] },
                "directive": { "type": "VoicePlayer.Speak", "speech": "<speak>Let me look that up.</speak>" }
            });
            let (status, _) = api
                .handle_post(Some(&token), pr.to_string().as_bytes())
                .await;
            seen.lock().unwrap().push(status);
            tokio::time::sleep(Duration::from_millis(300)).await;
            (200, answer("It is sunny.", None).to_string())
        })
    });
    let skill = FakeSkill::start(script).await;
    let (tx, mut rx) = mpsc::channel(16);
    run_turn(turn(&skill.url, Some("LookupIntent")), &live, tx)
        .await
        .unwrap();

    assert_eq!(*statuses.lock().unwrap(), [http::StatusCode::NO_CONTENT]);
    let out = drain(&mut rx);
    assert_eq!(
        names(&out),
        ["SpeechSynthesizer.Speak", "SpeechSynthesizer.Speak"]
    );
    let request_id = skill.requests()[0]["request"]["requestId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(speak_of(&out[0].0).token, format!("pr-1-{request_id}"));
    assert_ne!(speak_of(&out[1].0).token, speak_of(&out[0].0).token);
    for (directive, attachment) in &out {
        assert_eq!(directive.dialog_request_id(), Some("dialog-1"));
        speech::mp3_duration(&attachment.as_ref().unwrap().1).unwrap();
    }
    // The request is over: the same token may no longer speak.
    let token = format!(
        "Bearer {}",
        skill.requests()[0]["context"]["System"]["apiAccessToken"]
            .as_str()
            .unwrap()
    );
    let late = json!({ "header": { "requestId": request_id }, "directive": { "type": "VoicePlayer.Speak", "speech": "late" } });
    assert_eq!(
        live.handle_post(Some(&token), late.to_string().as_bytes())
            .await
            .0,
        http::StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn skill_audio_directives_become_audio_player_directives() {
    let body = json!({
        "version": "1.0",
        "response": {
            "outputSpeech": { "type": "PlainText", "text": "Playing the news." },
            "directives": [
                { "type": "AudioPlayer.Play", "playBehavior": "REPLACE_ALL",
                  "audioItem": { "stream": { "token": "news-1", "url": "https://example.com/news.mp3", "offsetInMilliseconds": 1500 } } },
                { "type": "Dialog.Delegate" },
                { "type": "AudioPlayer.ClearQueue", "clearBehavior": "CLEAR_ALL" },
            ],
            "card": { "type": "Simple", "title": "News", "content": "ignored" },
            "shouldEndSession": true
        }
    });
    let skill = FakeSkill::start(Arc::new(move |_| reply(body.clone()))).await;
    let live = LiveRequests::new();
    let (tx, mut rx) = mpsc::channel(16);
    run_turn(turn(&skill.url, Some("NewsIntent")), &live, tx)
        .await
        .unwrap();
    let out = drain(&mut rx);
    assert_eq!(
        names(&out),
        [
            "SpeechSynthesizer.Speak",
            "AudioPlayer.Play",
            "AudioPlayer.ClearQueue"
        ]
    );
    let DirectiveKind::AudioPlayer(audio_player::Directive::Play(play)) = &out[1].0.kind else {
        panic!("{:?}", out[1].0);
    };
    assert_eq!(
        play.play_behavior,
        Some(audio_player::PlayBehavior::ReplaceAll)
    );
    assert_eq!(play.audio_item.stream.url, "https://example.com/news.mp3");
    assert_eq!(play.audio_item.stream.token, "news-1");
    assert_eq!(play.audio_item.stream.offset_in_milliseconds, 1500);
    assert_eq!(out[1].0.dialog_request_id(), Some("dialog-1"));
    assert_eq!(out[2].0.payload["clearBehavior"], "CLEAR_ALL");
}

/// A failing skill: the device hears the apology, the skill gets SessionEndedRequest(ERROR).
async fn check_failure(script: Script, deadline: Duration, error_type: &str) -> SkillError {
    let skill = FakeSkill::start(script).await;
    let live = LiveRequests::new();
    let (tx, mut rx) = mpsc::channel(16);
    let error = run_turn_with_deadline(turn(&skill.url, Some("LookupIntent")), &live, tx, deadline)
        .await
        .unwrap_err();
    let out = drain(&mut rx);
    assert_eq!(names(&out), ["SpeechSynthesizer.Speak"], "{error}");
    speech::mp3_duration(&out[0].1.as_ref().unwrap().1).unwrap();
    let requests = skill.requests();
    assert_eq!(requests.len(), 2, "{error}");
    let ended = &requests[1];
    assert_eq!(ended["request"]["type"], "SessionEndedRequest");
    assert_eq!(ended["request"]["reason"], "ERROR");
    assert_eq!(ended["request"]["error"]["type"], error_type);
    assert_eq!(ended["session"]["new"], false);
    assert_eq!(
        ended["session"]["sessionId"],
        requests[0]["session"]["sessionId"]
    );
    assert!(!live.has_session("device-1"));
    error
}

fn failing_on_intent(first: Reply) -> Script {
    let first = Arc::new(Mutex::new(Some(first)));
    Arc::new(move |_| {
        let next = first.lock().unwrap().take();
        next.unwrap_or_else(|| reply(json!({ "version": "1.0" })))
    })
}

#[tokio::test]
async fn a_slow_skill_times_out() {
    let slow: Reply = Box::pin(async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        (200, answer("too late", None).to_string())
    });
    let error = check_failure(
        failing_on_intent(slow),
        Duration::from_millis(400),
        "ENDPOINT_TIMEOUT",
    )
    .await;
    assert!(matches!(error, SkillError::Timeout(_)), "{error}");
}

#[tokio::test]
async fn an_http_error_or_garbage_is_an_invalid_response() {
    let error = check_failure(
        failing_on_intent(Box::pin(async { (500, "{}".to_owned()) })),
        SKILL_TIMEOUT,
        "INVALID_RESPONSE",
    )
    .await;
    assert!(matches!(error, SkillError::Status(s) if s == http::StatusCode::INTERNAL_SERVER_ERROR));
    let error = check_failure(
        failing_on_intent(Box::pin(async { (200, "<html>".to_owned()) })),
        SKILL_TIMEOUT,
        "INVALID_RESPONSE",
    )
    .await;
    assert!(matches!(error, SkillError::InvalidResponse(_)), "{error}");
}

#[tokio::test]
async fn an_unreachable_skill_still_answers_the_device() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let live = LiveRequests::new();
    let (tx, mut rx) = mpsc::channel(16);
    let error = run_turn(turn(&url, None), &live, tx).await.unwrap_err();
    assert!(matches!(error, SkillError::Unreachable(_)), "{error}");
    assert_eq!(names(&drain(&mut rx)), ["SpeechSynthesizer.Speak"]);
}

#[tokio::test]
async fn reprompt_once_then_end_the_session() {
    let script: Script = Arc::new(|r: Value| {
        if r["request"]["type"] == "SessionEndedRequest" {
            return reply(json!({ "version": "1.0" }));
        }
        reply(json!({
            "version": "1.0",
            "response": {
                "outputSpeech": { "type": "PlainText", "text": "Which city?" },
                "reprompt": { "outputSpeech": { "type": "PlainText", "text": "Please name a city." } },
                "shouldEndSession": false
            }
        }))
    });
    let skill = FakeSkill::start(script).await;
    let live = LiveRequests::new();
    let (tx, mut rx) = mpsc::channel(16);
    run_turn(turn(&skill.url, Some("WeatherIntent")), &live, tx.clone())
        .await
        .unwrap();
    drain(&mut rx);

    assert!(
        expect_speech_timed_out(&live, "device-1", tx.clone())
            .await
            .unwrap()
    );
    let reprompt = drain(&mut rx);
    assert_eq!(
        names(&reprompt),
        ["SpeechSynthesizer.Speak", "SpeechRecognizer.ExpectSpeech"]
    );
    assert_eq!(reprompt[0].0.dialog_request_id(), Some("dialog-1"));

    assert!(
        !expect_speech_timed_out(&live, "device-1", tx)
            .await
            .unwrap()
    );
    assert!(drain(&mut rx).is_empty());
    let requests = skill.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1]["request"]["type"], "SessionEndedRequest");
    assert_eq!(requests[1]["request"]["reason"], "EXCEEDED_MAX_REPROMPTS");
    assert!(!live.has_session("device-1"));
}

#[tokio::test]
async fn another_skill_or_stop_ends_the_open_session() {
    let open: Script = Arc::new(|r: Value| {
        if r["request"]["type"] == "SessionEndedRequest" {
            return reply(json!({ "version": "1.0" }));
        }
        reply(answer("Still here.", Some(false)))
    });
    let first = FakeSkill::start(open.clone()).await;
    let second = FakeSkill::start(open).await;
    let live = LiveRequests::new();
    let (tx, _rx) = mpsc::channel(64);
    run_turn(turn(&first.url, None), &live, tx.clone())
        .await
        .unwrap();
    run_turn(turn(&second.url, None), &live, tx.clone())
        .await
        .unwrap();
    let ended = first.requests();
    assert_eq!(ended.len(), 2);
    assert_eq!(ended[1]["request"]["reason"], "USER_INITIATED");
    assert_eq!(second.requests()[0]["session"]["new"], true);
    assert_ne!(
        first.requests()[0]["session"]["application"]["applicationId"],
        second.requests()[0]["session"]["application"]["applicationId"]
    );

    assert!(
        end_session(&live, "device-1", SessionEndReason::UserInitiated)
            .await
            .unwrap()
    );
    assert_eq!(
        second.requests()[1]["request"]["type"],
        "SessionEndedRequest"
    );
    assert!(
        !end_session(&live, "device-1", SessionEndReason::UserInitiated)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_abandoned_session_is_ended_before_the_next_turn() {
    let script: Script = Arc::new(|r: Value| {
        if r["request"]["type"] == "SessionEndedRequest" {
            return reply(json!({ "version": "1.0" }));
        }
        reply(answer("Anything else?", Some(false)))
    });
    let skill = FakeSkill::start(script).await;
    let live = LiveRequests::new().with_session_idle_timeout(Duration::ZERO);
    let (tx, _rx) = mpsc::channel(16);
    run_turn(turn(&skill.url, None), &live, tx.clone())
        .await
        .unwrap();
    run_turn(turn(&skill.url, Some("LookupIntent")), &live, tx)
        .await
        .unwrap();
    let requests = skill.requests();
    let kinds: Vec<&str> = requests
        .iter()
        .map(|r| r["request"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["LaunchRequest", "SessionEndedRequest", "IntentRequest"]
    );
    assert_eq!(requests[1]["request"]["reason"], "EXCEEDED_MAX_REPROMPTS");
    assert_eq!(
        requests[1]["session"]["sessionId"],
        requests[0]["session"]["sessionId"]
    );
    assert_eq!(requests[2]["session"]["new"], true);
    assert_ne!(
        requests[2]["session"]["sessionId"],
        requests[0]["session"]["sessionId"]
    );
}
