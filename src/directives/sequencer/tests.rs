use super::*;
use serde_json::json;

fn directive(
    ns: &str,
    name: &str,
    id: &str,
    dialog: Option<&str>,
    payload: serde_json::Value,
) -> Directive {
    let mut header = json!({"namespace": ns, "name": name, "messageId": id});
    if let Some(d) = dialog {
        header["dialogRequestId"] = json!(d);
    }
    Directive::from_json(
        json!({"directive": {"header": header, "payload": payload}})
            .to_string()
            .as_bytes(),
    )
    .unwrap()
}

fn speak(id: &str, dialog: &str) -> Directive {
    directive(
        "SpeechSynthesizer",
        "Speak",
        id,
        Some(dialog),
        json!({"url": format!("cid:{id}"), "format": "AUDIO_MPEG", "token": id, "playBehavior": "ENQUEUE"}),
    )
}

fn play(id: &str, dialog: Option<&str>) -> Directive {
    directive(
        "AudioPlayer",
        "Play",
        id,
        dialog,
        json!({"playBehavior": "REPLACE_ALL", "audioItem": {"stream": {"url": "https://x/y.mp3", "token": id}}}),
    )
}

fn expect(id: &str, dialog: &str) -> Directive {
    directive(
        "SpeechRecognizer",
        "ExpectSpeech",
        id,
        Some(dialog),
        json!({"timeoutInMilliseconds": 8000}),
    )
}

fn volume(id: &str, dialog: Option<&str>) -> Directive {
    directive("Speaker", "SetVolume", id, dialog, json!({"volume": 10}))
}

fn handled(actions: &[SequencerAction]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            SequencerAction::Handle(d) => Some(d.header.message_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn speaks_are_handled_on_arrival_and_block_later_audio() {
    let mut s = Sequencer::new();
    s.new_dialog("D");
    assert_eq!(handled(&s.on_directive(speak("A", "D"))), ["A"]);
    assert_eq!(
        handled(&s.on_directive(play("X", Some("D")))),
        Vec::<String>::new()
    );
    assert_eq!(handled(&s.on_directive(speak("B", "D"))), ["B"]);
    assert_eq!(
        handled(&s.on_directive(expect("E", "D"))),
        Vec::<String>::new()
    );
    assert_eq!(
        handled(&s.on_directive(volume("V", Some("D")))),
        ["V"],
        "no medium: at once"
    );
    // A ends: X (arrived after A only) goes; E still waits for B.
    assert_eq!(handled(&s.on_completed("A")), ["X"]);
    assert_eq!(handled(&s.on_completed("B")), ["E"]);
    assert!(s.is_busy(), "ExpectSpeech blocks until its window ends");
    assert!(handled(&s.on_completed("E")).is_empty());
    assert!(!s.is_busy());
}

#[test]
fn stale_dialogs_are_dropped_but_stop_capture_and_undialogued_pass() {
    let mut s = Sequencer::new();
    s.new_dialog("D1");
    assert!(matches!(
        s.on_directive(speak("A", "OLD"))[..],
        [SequencerAction::Drop(_)]
    ));
    let stop = directive(
        "SpeechRecognizer",
        "StopCapture",
        "S",
        Some("OLD"),
        json!({}),
    );
    assert_eq!(handled(&s.on_directive(stop)), ["S"]);
    assert_eq!(handled(&s.on_directive(volume("V", None))), ["V"]);
    assert_eq!(handled(&s.on_directive(play("P", None))), ["P"]);
}

#[test]
fn barge_in_cancels_the_old_dialog() {
    let mut s = Sequencer::new();
    s.new_dialog("D1");
    s.on_directive(speak("interim", "D1"));
    s.on_directive(play("X", Some("D1")));
    let actions = s.new_dialog("D2");
    assert!(actions.contains(&SequencerAction::Cancel {
        message_id: "interim".into()
    }));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, SequencerAction::Drop(d) if d.header.message_id == "X"))
    );
    // The old dialog's final answer arrives late: dropped.
    assert!(matches!(
        s.on_directive(speak("final", "D1"))[..],
        [SequencerAction::Drop(_)]
    ));
    assert!(!s.is_busy());
}

#[test]
fn failure_cancels_the_rest_of_its_dialog_only() {
    let mut s = Sequencer::new();
    s.new_dialog("D");
    s.on_directive(speak("A", "D"));
    s.on_directive(speak("B", "D"));
    s.on_directive(play("X", Some("D")));
    s.on_directive(play("Y", None));
    let actions = s.on_failed("A", Some("D"));
    assert!(actions.contains(&SequencerAction::Cancel {
        message_id: "B".into()
    }));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, SequencerAction::Drop(d) if d.header.message_id == "X"))
    );
    assert_eq!(handled(&actions), ["Y"]);
}

#[test]
fn new_dialog_request_makes_its_id_current() {
    let mut s = Sequencer::new();
    s.new_dialog("D1");
    let ndr = directive(
        "InteractionModel",
        "NewDialogRequest",
        "N",
        None,
        json!({"dialogRequestId": "D9"}),
    );
    assert_eq!(handled(&s.on_directive(ndr)), ["N"]);
    assert_eq!(s.current_dialog(), Some("D9"));
    assert_eq!(handled(&s.on_directive(speak("A", "D9"))), ["A"]);
}
