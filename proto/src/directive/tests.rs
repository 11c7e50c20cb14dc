use super::*;
use crate::interfaces::speech_synthesizer::{PlayBehavior, Speak};

#[test]
fn parses_speak() {
    let text = br#"{"directive":{"header":{"namespace":"SpeechSynthesizer","name":"Speak","messageId":"m-1","dialogRequestId":"d-42"},"payload":{"url":"cid:TTS-0001","format":"AUDIO_MPEG","token":"tok-1","playBehavior":"ENQUEUE"}}}"#;
    let d = Directive::from_json(text).unwrap();
    assert_eq!(d.dialog_request_id(), Some("d-42"));
    assert_eq!(
        d.kind,
        DirectiveKind::SpeechSynthesizer(speech_synthesizer::Directive::Speak(Speak {
            url: "cid:TTS-0001".into(),
            format: "AUDIO_MPEG".into(),
            token: "tok-1".into(),
            play_behavior: Some(PlayBehavior::Enqueue),
            caption: None,
        }))
    );
}

#[test]
fn stop_capture_with_extra_fields_and_unknown_header_fields() {
    let text = br#"{"directive":{"header":{"namespace":"SpeechRecognizer","name":"StopCapture","messageId":"m","instance":"x"},"payload":{"foo":1}}}"#;
    let d = Directive::from_json(text).unwrap();
    assert!(matches!(
        d.kind,
        DirectiveKind::SpeechRecognizer(speech_recognizer::Directive::StopCapture(_))
    ));
    assert_eq!(d.header.extra["instance"], "x");
}

#[test]
fn unknown_namespace_and_name_keep_raw() {
    for text in [
        r#"{"directive":{"header":{"namespace":"Bogus","name":"Thing","messageId":"m"},"payload":{"a":1}}}"#,
        r#"{"directive":{"header":{"namespace":"Speaker","name":"Explode","messageId":"m"},"payload":{}}}"#,
    ] {
        let d = Directive::from_json(text.as_bytes()).unwrap();
        assert_eq!(d.kind, DirectiveKind::Unknown);
        assert_eq!(d.raw, text);
    }
}

#[test]
fn malformed_inputs_are_errors_with_raw_text() {
    for text in [
        "not json",
        r#"{"directive":{"header":{"namespace":"Speaker","name":"SetVolume"},"payload":{}}}"#,
        r#"{"directive":{"header":{"namespace":"Speaker","name":"SetVolume","messageId":"m"}}}"#,
        r#"{"directive":{"header":{"namespace":"Speaker","name":"SetVolume","messageId":"m"},"payload":{"volume":"loud"}}}"#,
        r#"{"directive":{"header":{"namespace":"Speaker","name":"SetVolume","messageId":"m"},"payload":[]}}"#,
    ] {
        let e = Directive::from_json(text.as_bytes()).unwrap_err();
        assert_eq!(e.raw, text);
        assert_eq!(
            e.exception_type(),
            ExceptionType::UnexpectedInformationReceived
        );
    }
}
