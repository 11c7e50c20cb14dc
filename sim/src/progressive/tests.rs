use super::*;
use avs_proto::DirectiveKind;
use tokio::sync::mpsc;

const RID: &str = "amzn1.echo-api.request.0001";
const TOKEN: &str = "api-token-0001";
const DIALOG: &str = "d-42";

struct Fixture {
    live: LiveRequests,
    rx: mpsc::Receiver<TurnDirective>,
    guard: LiveRequestGuard,
}

fn fixture_with(live: LiveRequests, request_type: &str) -> Fixture {
    let (tx, rx) = mpsc::channel(16);
    let guard = live.register(RID, TOKEN, request_type, DIALOG, tx);
    Fixture { live, rx, guard }
}

fn fixture() -> Fixture {
    fixture_with(LiveRequests::new(), "IntentRequest")
}

fn body(request_id: &str, kind: &str, speech: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "header": { "requestId": request_id },
        "directive": { "type": kind, "speech": speech }
    }))
    .unwrap()
}

fn speak(speech: &str) -> Vec<u8> {
    body(RID, SPEAK_TYPE, speech)
}

const AUTH: Option<&str> = Some("Bearer api-token-0001");

/// The next directive on the turn's sink (deliveries run on their own task).
async fn next(rx: &mut mpsc::Receiver<TurnDirective>) -> TurnDirective {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a directive within 10 s")
        .expect("the sink is open")
}

/// Asserts the status and that the body is `{"code": <that status as an integer>, "message"}`.
async fn expect(live: &LiveRequests, auth: Option<&str>, body: &[u8], status: StatusCode) {
    let (got, error) = live.handle_post(auth, body).await;
    assert_eq!(got, status, "body {error:?}");
    let error = error.expect("error responses carry a body");
    assert_eq!(error["code"], json!(status.as_u16()), "{error}");
    assert!(error["code"].is_u64(), "code must be an integer: {error}");
    assert!(!error["message"].as_str().unwrap().is_empty());
}

/// The error body's message says `what`.
fn assert_message_contains(error: Option<Value>, what: &str) {
    let error = error.expect("error responses carry a body");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(what), "{error}");
}

#[tokio::test]
async fn accepted_speech_reaches_the_turn_as_an_enqueued_speak() {
    let mut f = fixture();
    let (status, error) = f
        .live
        .handle_post(AUTH, &speak("Hang on while I look that up."))
        .await;
    assert_eq!((status, error), (StatusCode::NO_CONTENT, None));

    let directive = next(&mut f.rx).await;
    let parsed = avs_proto::Directive::from_json(directive.json.as_bytes()).unwrap();
    assert_eq!(parsed.qualified_name(), "SpeechSynthesizer.Speak");
    assert_eq!(parsed.dialog_request_id(), Some(DIALOG));
    let DirectiveKind::SpeechSynthesizer(speech_synthesizer::Directive::Speak(payload)) =
        parsed.kind
    else {
        panic!("not a Speak: {parsed:?}");
    };
    assert_eq!(payload.token, format!("pr-1-{RID}"));
    assert_eq!(payload.format, "AUDIO_MPEG");
    assert_eq!(payload.play_behavior, Some(PlayBehavior::Enqueue));
    let (cid, mp3) = directive.attachment.expect("an MP3 attachment");
    assert_eq!(payload.url, format!("cid:{cid}"));
    let duration = speech::mp3_duration(&mp3).unwrap();
    assert!(duration > Duration::from_millis(800), "{duration:?}");
    assert_eq!(f.live.accepted_count(RID), Some(1));
}

#[tokio::test]
async fn well_formed_ssml_is_accepted() {
    let f = fixture();
    let ssml = "<speak>Hang on <break time=\"500ms\"/> <emphasis level=\"strong\">one</emphasis> second.</speak>";
    assert_eq!(
        f.live.handle_post(AUTH, &speak(ssml)).await,
        (StatusCode::NO_CONTENT, None)
    );
    let edge = "a".repeat(MAX_SPEECH_CHARS);
    assert_eq!(
        f.live.handle_post(AUTH, &speak(&edge)).await,
        (StatusCode::NO_CONTENT, None)
    );
    let clip = "<speak><audio src=\"https://example.com/chime.mp3\"/></speak>";
    assert_eq!(
        f.live.handle_post(AUTH, &speak(clip)).await,
        (StatusCode::NO_CONTENT, None)
    );
    // Valid but silent: accepted, and nothing reaches the device.
    assert_eq!(
        f.live.handle_post(AUTH, &speak("...")).await,
        (StatusCode::NO_CONTENT, None)
    );
    let plain_with_symbols = "Fish & chips: 3 > 2";
    assert_eq!(
        f.live.handle_post(AUTH, &speak(plain_with_symbols)).await,
        (StatusCode::NO_CONTENT, None)
    );
    drop(f.guard);
}

#[tokio::test]
async fn missing_unknown_or_expired_tokens_get_401() {
    let f = fixture();
    let good = speak("Hello");
    for auth in [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer   "),
        Some("Basic api-token-0001"),
        Some("api-token-0001"),
    ] {
        expect(&f.live, auth, &good, StatusCode::UNAUTHORIZED).await;
    }
    expect(
        &f.live,
        Some("Bearer someone-else"),
        &good,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // The token is checked before the body is even read.
    expect(
        &f.live,
        Some("Bearer someone-else"),
        b"{not json",
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // The scheme is case-insensitive.
    assert_eq!(
        f.live
            .handle_post(Some("bearer api-token-0001"), &good)
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    let expired = fixture_with(
        LiveRequests::with_token_lifetime(Duration::ZERO),
        "IntentRequest",
    );
    expect(&expired.live, AUTH, &good, StatusCode::UNAUTHORIZED).await;
    let (_, error) = expired.live.handle_post(AUTH, &good).await;
    assert_message_contains(error, "expired");
}

#[tokio::test]
async fn malformed_bodies_get_400() {
    let f = fixture();
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{not json".to_vec(),
        b"[]".to_vec(),
        serde_json::to_vec(&json!({"directive": {"type": SPEAK_TYPE, "speech": "hi"}})).unwrap(),
        serde_json::to_vec(
            &json!({"header": {}, "directive": {"type": SPEAK_TYPE, "speech": "hi"}}),
        )
        .unwrap(),
        serde_json::to_vec(
            &json!({"header": {"requestId": 7}, "directive": {"type": SPEAK_TYPE, "speech": "hi"}}),
        )
        .unwrap(),
        serde_json::to_vec(&json!({"header": {"requestId": RID}})).unwrap(),
        serde_json::to_vec(
            &json!({"header": {"requestId": RID}, "directive": "VoicePlayer.Speak"}),
        )
        .unwrap(),
        serde_json::to_vec(&json!({"header": {"requestId": RID}, "directive": {"speech": "hi"}}))
            .unwrap(),
        serde_json::to_vec(
            &json!({"header": {"requestId": RID}, "directive": {"type": SPEAK_TYPE}}),
        )
        .unwrap(),
    ];
    for case in cases {
        expect(&f.live, AUTH, &case, StatusCode::BAD_REQUEST).await;
    }
    expect(
        &f.live,
        AUTH,
        &vec![b' '; 70_000],
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(f.live.accepted_count(RID), Some(0));
}

#[tokio::test]
async fn unknown_or_foreign_request_ids_get_400() {
    let f = fixture();
    expect(
        &f.live,
        AUTH,
        &body("amzn1.echo-api.request.nope", SPEAK_TYPE, "hi"),
        StatusCode::BAD_REQUEST,
    )
    .await;

    let (tx, _rx) = mpsc::channel(4);
    let _other = f.live.register(
        "amzn1.echo-api.request.0002",
        "api-token-0002",
        "IntentRequest",
        "d-43",
        tx,
    );
    let (status, error) = f
        .live
        .handle_post(AUTH, &body("amzn1.echo-api.request.0002", SPEAK_TYPE, "hi"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_message_contains(error, "does not belong");
}

#[tokio::test]
async fn only_voice_player_speak_is_allowed() {
    let f = fixture();
    for kind in [
        "VoicePlayer.Play",
        "Dialog.Delegate",
        "SpeechSynthesizer.Speak",
        "voiceplayer.speak",
        "",
    ] {
        expect(
            &f.live,
            AUTH,
            &body(RID, kind, "hi"),
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
}

#[tokio::test]
async fn speech_must_be_present_short_and_wrapped() {
    let f = fixture();
    let too_long = "a".repeat(MAX_SPEECH_CHARS + 1);
    let too_long_multibyte = "é".repeat(MAX_SPEECH_CHARS + 1);
    for speech in [
        "",
        "   ",
        too_long.as_str(),
        too_long_multibyte.as_str(),
        "Hang on <break time=\"1s\"/> please",
        "<speak>Hang on",
        "Hang on</speak>",
        "<speak>one <emphasis>two</speak></emphasis>",
        "<speak>one</speak><speak>two</speak>",
        "<speak>one <break time=\"1s\" </speak>",
        "before <speak>one</speak>",
        "<speak></speak>",
        "<speak> <break time=\"1s\"/> </speak>",
    ] {
        expect(&f.live, AUTH, &speak(speech), StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(f.live.accepted_count(RID), Some(0));
}

#[tokio::test]
async fn other_request_types_get_400() {
    for request_type in ["SessionEndedRequest", "CanFulfillIntentRequest"] {
        let f = fixture_with(LiveRequests::new(), request_type);
        expect(&f.live, AUTH, &speak("hi"), StatusCode::BAD_REQUEST).await;
    }
    let launch = fixture_with(LiveRequests::new(), "LaunchRequest");
    assert_eq!(
        launch.live.handle_post(AUTH, &speak("hi")).await.0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn after_the_final_response_403_and_nothing_is_delivered() {
    let mut f = fixture();
    f.guard.complete();
    expect(&f.live, AUTH, &speak("too late"), StatusCode::FORBIDDEN).await;
    assert!(f.rx.try_recv().is_err());

    let mut g = fixture();
    drop(g.guard);
    expect(&g.live, AUTH, &speak("too late"), StatusCode::FORBIDDEN).await;
    assert!(g.rx.try_recv().is_err());
}

#[tokio::test]
async fn a_sixth_progressive_response_gets_429() {
    let mut f = fixture();
    for n in 1..=MAX_PER_REQUEST {
        // Refused ones do not count.
        expect(&f.live, AUTH, &speak(""), StatusCode::BAD_REQUEST).await;
        let status = f
            .live
            .handle_post(AUTH, &speak(&format!("Step {n}.")))
            .await
            .0;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    expect(
        &f.live,
        AUTH,
        &speak("Step six."),
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    let mut tokens = Vec::new();
    for _ in 0..MAX_PER_REQUEST {
        let d = next(&mut f.rx).await;
        tokens.push(
            avs_proto::Directive::from_json(d.json.as_bytes())
                .unwrap()
                .payload["token"]
                .clone(),
        );
    }
    f.guard.complete_and_flush().await;
    assert!(
        f.rx.try_recv().is_err(),
        "the refused ones delivered nothing"
    );
    assert_eq!(tokens.len(), MAX_PER_REQUEST as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_progressive_responses_arrive_in_acceptance_order() {
    let mut f = fixture();
    let long = "This one is much longer and takes noticeably more time to render into speech than the rest.";
    let (one, two, three) = (speak(long), speak("Two."), speak("Three."));
    let (a, b, c) = tokio::join!(
        f.live.handle_post(AUTH, &one),
        f.live.handle_post(AUTH, &two),
        f.live.handle_post(AUTH, &three),
    );
    assert_eq!([a.0, b.0, c.0], [StatusCode::NO_CONTENT; 3]);
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let d = next(&mut f.rx).await;
        tokens.push(
            avs_proto::Directive::from_json(d.json.as_bytes())
                .unwrap()
                .payload["token"]
                .clone(),
        );
    }
    let expected: Vec<Value> = (1..=3).map(|n| json!(format!("pr-{n}-{RID}"))).collect();
    assert_eq!(tokens, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completing_waits_for_accepted_deliveries() {
    let mut f = fixture();
    let live = f.live.clone();
    let post = tokio::spawn(async move {
        live.handle_post(AUTH, &speak("Let me check that for you."))
            .await
    });
    // Wait (bounded) until the PR is accepted, then complete while it is still being rendered.
    tokio::time::timeout(Duration::from_secs(5), async {
        while f.live.accepted_count(RID) != Some(1) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    f.guard.complete_and_flush().await;
    assert!(
        f.rx.try_recv().is_ok(),
        "the accepted PR must be on the sink before the final response"
    );
    assert_eq!(post.await.unwrap().0, StatusCode::NO_CONTENT);
    expect(&f.live, AUTH, &speak("late"), StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_closed_turn_still_answers_204() {
    let f = fixture();
    drop(f.rx);
    assert_eq!(
        f.live.handle_post(AUTH, &speak("nobody listens")).await.0,
        StatusCode::NO_CONTENT
    );
}

#[test]
fn ssml_checks() {
    assert!(check_ssml_nesting("<speak>a<s>b</s><break/></speak>").is_ok());
    assert!(check_ssml_nesting("<speak><audio src=\"https://x/y.mp3\"/></speak>").is_ok());
    assert!(check_ssml_nesting("<speak><p>a</speak>").is_err());
    assert!(check_ssml_nesting("<speak></p></speak>").is_err());
    assert!(check_ssml_nesting("<speak>< ></speak>").is_err());
    assert_eq!(bearer_token("Bearer abc"), Some("abc"));
    assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
    assert_eq!(bearer_token("Bearer"), None);
}

#[tokio::test]
async fn completing_releases_the_turn_sink() {
    let mut f = fixture();
    assert_eq!(
        f.live.handle_post(AUTH, &speak("One moment.")).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(f.rx.recv().await.is_some());
    f.guard.complete_and_flush().await;
    // The registry keeps the request (for 403s) but not its sink: the stream can end.
    let closed = tokio::time::timeout(Duration::from_secs(5), f.rx.recv()).await;
    assert!(
        matches!(closed, Ok(None)),
        "the sink is still held after completion"
    );
}
