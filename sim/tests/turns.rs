//! Scenario turns: interim speech before the final answer (with their delays), a final speech
//! held until the device reports SpeechFinished, playBehavior, ExpectSpeech, AudioPlayer.Play by
//! attachment and by URL (served from /media), extra directives, downchannel pushes, false wake.
// Integration tests: helpers panic on failure like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use avs_sim::{Scenario, SimConfig};
use avs_testkit::h2client::ReceivedPart;
use avs_testkit::sim::start_sim;
use common::*;
use serde_json::json;

async fn sim_with(toml: &str) -> avs_testkit::sim::TestSim {
    let scenario = Scenario::from_toml(toml).unwrap();
    start_sim(SimConfig {
        scenario,
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

fn payload(p: &ReceivedPart) -> &serde_json::Value {
    match p {
        ReceivedPart::Directive(v) => &v["directive"]["payload"],
        other => panic!("not a directive: {other:?}"),
    }
}

#[tokio::test]
async fn interim_speeches_come_first_with_their_delays() {
    let sim = sim_with(
        r#"
        [[turn]]
        interim = [{ text = "One moment.", delay_ms = 100 }, { text = "Still looking.", delay_ms = 600 }]
        final_speech = "Found it."
        "#,
    )
    .await;
    let mut dev = connect_device(&sim, "SN-T-1").await;
    let (audio, _) = utterance("Find my keys.", 200, 800);
    let mut s = stream_recognize(&mut dev, "dlg-i", "PRESS_AND_HOLD", &audio, false).await;
    let resp = s.event.response().await.unwrap();
    assert_eq!(resp.status, 200);
    let mut parts = resp.parts().unwrap();
    let mut arrivals = Vec::new();
    while let Some(p) = parts.next().await.unwrap() {
        arrivals.push((Instant::now(), p));
    }
    let speaks: Vec<_> = arrivals
        .iter()
        .filter(|(_, p)| p.directive_name().is_some())
        .collect();
    assert_eq!(speaks.len(), 3);
    let tokens: Vec<_> = speaks
        .iter()
        .map(|(_, p)| payload(p)["token"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        tokens[0].starts_with("interim-")
            && tokens[1].starts_with("interim-")
            && tokens[2].starts_with("final-"),
        "{tokens:?}"
    );
    for (_, p) in &speaks {
        assert_eq!(payload(p)["playBehavior"], "ENQUEUE");
    }
    // The second interim waited its 600 ms after the first.
    assert!(
        speaks[1].0 - speaks[0].0 >= Duration::from_millis(500),
        "{:?}",
        speaks[1].0 - speaks[0].0
    );
    // Each Speak is followed by its attachment.
    for (i, (_, p)) in arrivals.iter().enumerate() {
        if p.directive_name().is_some() {
            let cid = payload(p)["url"]
                .as_str()
                .unwrap()
                .strip_prefix("cid:")
                .unwrap()
                .to_owned();
            let ReceivedPart::Attachment { content_id, bytes } = &arrivals[i + 1].1 else {
                panic!()
            };
            assert_eq!(content_id.as_deref(), Some(cid.as_str()));
            assert!(mp3_duration(bytes) > Duration::from_millis(300));
        }
    }
}

#[tokio::test]
async fn final_speech_is_held_until_the_interim_finished() {
    let sim = sim_with(
        r#"
        [[turn]]
        interim = [{ text = "Working on it." }]
        final_speech = "Done."
        play_behavior = "REPLACE_ALL"
        hold_final_until_speech_finished = true
        "#,
    )
    .await;
    let mut dev = connect_device(&sim, "SN-T-2").await;
    let (audio, _) = utterance("Do the thing.", 200, 800);
    let mut s = stream_recognize(&mut dev, "dlg-h", "PRESS_AND_HOLD", &audio, false).await;
    let resp = s.event.response().await.unwrap();
    let mut parts = resp.parts().unwrap();
    let interim = parts.next().await.unwrap().unwrap();
    let token = payload(&interim)["token"].as_str().unwrap().to_owned();
    assert!(matches!(
        parts.next().await.unwrap().unwrap(),
        ReceivedPart::Attachment { .. }
    ));
    // Nothing more until the device says the interim finished.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), parts.next())
            .await
            .is_err()
    );
    let t = dev.token.clone();
    let started = event(
        "SpeechSynthesizer",
        "SpeechStarted",
        json!({"token": token}),
    );
    assert_eq!(
        dev.client.post_event(&t, &started).await.unwrap().status,
        204
    );
    let finished = event(
        "SpeechSynthesizer",
        "SpeechFinished",
        json!({"token": token}),
    );
    assert_eq!(
        dev.client.post_event(&t, &finished).await.unwrap().status,
        204
    );
    let fin = tokio::time::timeout(Duration::from_secs(10), parts.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(payload(&fin)["playBehavior"], "REPLACE_ALL");
    assert!(
        payload(&fin)["token"]
            .as_str()
            .unwrap()
            .starts_with("final-")
    );
}

#[tokio::test]
async fn expect_speech_play_directives_and_downchannel_pushes() {
    let sim = sim_with(
        r#"
        [[turn]]
        final_speech = "Playing."
        expect_speech_timeout_ms = 8000
        play = { text = "This is the track.", source = "url", token = "track-1" }
        directives = [{ namespace = "Speaker", name = "SetVolume", payload = { volume = 30 } }]
        downchannel = [{ delay_ms = 100, namespace = "Speaker", name = "AdjustVolume", payload = { volume = -10 } }]

        [[turn]]
        play = { text = "Attached track." }

        [[turn]]
        reject = true
        "#,
    )
    .await;
    let mut dev = connect_device(&sim, "SN-T-3").await;
    let (audio, _) = utterance("Play something.", 200, 800);
    let mut s = stream_recognize(&mut dev, "dlg-p", "PRESS_AND_HOLD", &audio, false).await;
    let parts = s.response_parts().await;
    let names = directive_names(&parts);
    assert_eq!(
        names,
        [
            "SpeechSynthesizer.Speak",
            "SpeechRecognizer.ExpectSpeech",
            "AudioPlayer.Play",
            "Speaker.SetVolume"
        ]
    );
    let expect = parts
        .iter()
        .find(|p| p.directive_name().as_deref() == Some("SpeechRecognizer.ExpectSpeech"))
        .unwrap();
    assert_eq!(payload(expect)["timeoutInMilliseconds"], 8000);
    let play = parts
        .iter()
        .find(|p| p.directive_name().as_deref() == Some("AudioPlayer.Play"))
        .unwrap();
    let ReceivedPart::Directive(pv) = play else {
        panic!()
    };
    assert_eq!(pv["directive"]["header"]["dialogRequestId"], "dlg-p");
    let stream = &payload(play)["audioItem"]["stream"];
    assert_eq!(stream["token"], "track-1");
    let url = url::Url::parse(stream["url"].as_str().unwrap()).unwrap();
    assert_eq!(url.scheme(), "https");
    let media = dev
        .client
        .send(
            http::Method::GET,
            url.path(),
            None,
            None,
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(media.status, 200);
    assert_eq!(media.content_type(), Some("audio/mpeg"));
    let mp3 = media.bytes().await.unwrap();
    assert!(mp3_duration(&mp3) > Duration::from_millis(500));
    let (_, pushed) = next_downchannel(&mut dev, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        pushed.directive_name().as_deref(),
        Some("Speaker.AdjustVolume")
    );
    assert_eq!(payload(&pushed)["volume"], -10);

    // Turn 2: the track as an attachment.
    let mut s = stream_recognize(&mut dev, "dlg-p2", "PRESS_AND_HOLD", &audio, false).await;
    let parts = s.response_parts().await;
    assert_eq!(parts.len(), 2);
    let cid = payload(&parts[0])["audioItem"]["stream"]["url"]
        .as_str()
        .unwrap()
        .strip_prefix("cid:")
        .unwrap()
        .to_owned();
    assert!(matches!(&parts[1], ReceivedPart::Attachment { content_id: Some(c), .. } if *c == cid));

    // Turn 3: a false wake, answered with 204.
    let mut s = stream_recognize(&mut dev, "dlg-p3", "TAP", &audio, true).await;
    assert!(s.stop_capture_at.is_some());
    assert_eq!(s.event.response().await.unwrap().status, 204);
}

#[tokio::test]
async fn attachments_can_come_before_their_directive() {
    let sim = start_sim(SimConfig {
        attachments_first: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut dev = connect_device(&sim, "SN-T-4").await;
    let (audio, _) = utterance("Tell me a joke.", 200, 800);
    let mut s = stream_recognize(&mut dev, "dlg-a", "PRESS_AND_HOLD", &audio, false).await;
    let parts = s.response_parts().await;
    assert_eq!(parts.len(), 4);
    for pair in parts.chunks(2) {
        let ReceivedPart::Attachment { content_id, .. } = &pair[0] else {
            panic!("{pair:?}")
        };
        let cid = payload(&pair[1])["url"]
            .as_str()
            .unwrap()
            .strip_prefix("cid:")
            .unwrap();
        assert_eq!(content_id.as_deref(), Some(cid));
    }
}
