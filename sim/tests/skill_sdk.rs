//! avs-sim behind a real Alexa skill built on the Alexa Skills Kit SDK for Python
//! (`tests/skill/skill_server.py`, venv from `scripts/skill-env`): a device's Recognize becomes an
//! IntentRequest, the skill's progressive response (sent with the SDK's own
//! DirectiveServiceClient over TLS to the sim's `/v1/directives`) reaches the device as a Speak
//! ahead of the final answer, and the API's rules answer the SDK the way it expects.
//!
//! Skipped, with a message, only when `python3` is not installed.

// Test harness helpers outside #[test] functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use avs_sim::{Scenario, SimConfig};
use avs_testkit::h2client::ReceivedPart;
use avs_testkit::sim::start_sim;
use common::*;
use tokio::sync::mpsc;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn python_missing() -> bool {
    let missing = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err();
    if missing {
        eprintln!("SKIPPED: python3 is not installed, so the ASK SDK skill cannot run");
    }
    missing
}

/// `scripts/skill-env`: the venv's python (installing the pinned SDK the first time).
fn skill_python() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/skill-env"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/skill-env failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().unwrap().trim())
}

/// The Python skill web service, killed on drop.
struct PythonSkill {
    child: Child,
    endpoint: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl PythonSkill {
    async fn start(ca_pem: &Path) -> Self {
        let mut child = Command::new(skill_python())
            .arg(repo_root().join("tests/skill/skill_server.py"))
            .args(["--port", "0"])
            .env("REQUESTS_CA_BUNDLE", ca_pem)
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel(256);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let mut skill = Self {
            child,
            endpoint: String::new(),
            lines,
            seen: Vec::new(),
        };
        let listening = skill.wait_line("LISTENING ", Duration::from_secs(30)).await;
        let port: u16 = listening.trim_start_matches("LISTENING ").parse().unwrap();
        skill.endpoint = format!("http://127.0.0.1:{port}/");
        skill
    }

    /// The next line starting with `prefix` (earlier lines are kept in `seen`).
    async fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no {prefix:?} line from the skill; saw {:?}", self.seen)
                })
                .unwrap_or_else(|| panic!("the skill exited; saw {:?}", self.seen));
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return line;
            }
        }
    }
}

impl Drop for PythonSkill {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scenario turn per entry, each answered by the skill: `None` sends a LaunchRequest.
fn scenario(endpoint: &str, intents: &[Option<&str>]) -> Scenario {
    let mut toml = String::new();
    for intent in intents {
        toml.push_str(&format!(
            "[[turn]]\n[turn.skill]\nendpoint = \"{endpoint}\"\n"
        ));
        if let Some(intent) = intent {
            toml.push_str(&format!(
                "intent = \"{intent}\"\n[turn.skill.slots]\nQuery = \"the weather in Paris\"\n"
            ));
        }
    }
    Scenario::from_toml(&toml).unwrap()
}

/// A fresh state directory, so the CA's path is known before the sim starts (the skill needs it).
fn state_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("avs-sim-skill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Streams an utterance as a Recognize and returns the response parts with their arrival times.
async fn recognize(
    sim: &avs_testkit::sim::TestSim,
    serial: &str,
    dialog: &str,
) -> Vec<(Instant, ReceivedPart)> {
    let mut dev = connect_device(sim, serial).await;
    recognize_on(&mut dev, dialog).await
}

async fn recognize_on(dev: &mut Device, dialog: &str) -> Vec<(Instant, ReceivedPart)> {
    let (audio, _) = utterance("What is the weather in Paris?", 300, 3000);
    let mut s = stream_recognize(dev, dialog, "TAP", &audio, true).await;
    assert!(
        s.stop_capture_at.is_some(),
        "StopCapture at the end of speech"
    );
    let resp = s.event.response().await.unwrap();
    assert_eq!(resp.status, 200);
    let mut parts = resp.parts().unwrap();
    let mut out = Vec::new();
    while let Some(part) = tokio::time::timeout(Duration::from_secs(20), parts.next())
        .await
        .expect("the response stream ends")
        .unwrap()
    {
        out.push((Instant::now(), part));
    }
    out
}

/// The Speaks of a response: (arrival, token, MP3 duration), checking each one's attachment.
fn speaks(parts: &[(Instant, ReceivedPart)], dialog: &str) -> Vec<(Instant, String, Duration)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        let (at, ReceivedPart::Directive(d)) = &parts[i] else {
            panic!("part {i} is not a directive: {:?}", parts[i].1);
        };
        assert_eq!(d["directive"]["header"]["name"], "Speak", "{d}");
        assert_eq!(d["directive"]["header"]["dialogRequestId"], dialog);
        let p = &d["directive"]["payload"];
        assert_eq!(p["format"], "AUDIO_MPEG");
        assert_eq!(p["playBehavior"], "ENQUEUE");
        let cid = p["url"].as_str().unwrap().strip_prefix("cid:").unwrap();
        let Some((_, ReceivedPart::Attachment { content_id, bytes })) = parts.get(i + 1) else {
            panic!("Speak {i} has no attachment after it");
        };
        assert_eq!(content_id.as_deref(), Some(cid));
        out.push((
            *at,
            p["token"].as_str().unwrap().to_owned(),
            mp3_duration(bytes),
        ));
        i += 2;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_speech_from_the_sdk_skill_arrives_before_the_final_answer() {
    if python_missing() {
        return;
    }
    let dir = state_dir("lookup");
    let mut skill = PythonSkill::start(&dir.join("ca.pem")).await;
    let sim = start_sim(SimConfig {
        scenario: scenario(&skill.endpoint, &[Some("LookupIntent")]),
        state_dir: Some(dir.clone()),
        ..SimConfig::default()
    })
    .await
    .unwrap();

    let parts = recognize(&sim, "SN-SKILL-1", "dlg-skill-1").await;
    assert_eq!(
        skill.wait_line("REQUEST ", Duration::from_secs(5)).await,
        "REQUEST IntentRequest new=true"
    );
    assert_eq!(
        skill.wait_line("PR ", Duration::from_secs(5)).await,
        "PR lookup 204 -"
    );

    let speaks = speaks(&parts, "dlg-skill-1");
    assert_eq!(speaks.len(), 2, "{speaks:?}");
    let (interim_at, interim_token, interim_len) = &speaks[0];
    let (final_at, final_token, final_len) = &speaks[1];
    assert!(
        interim_token.starts_with("pr-1-amzn1.echo-api.request."),
        "{interim_token}"
    );
    assert!(!final_token.starts_with("pr-"), "{final_token}");
    // The skill sleeps a second between its progressive response and its answer.
    let gap = final_at.duration_since(*interim_at);
    assert!(
        gap >= Duration::from_millis(700),
        "interim only {gap:?} before the final answer"
    );
    assert!(*interim_len > Duration::from_millis(800), "{interim_len:?}");
    assert!(*final_len > Duration::from_millis(1200), "{final_len:?}");

    sim.stop().await;
    drop(skill);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_response_rules_answer_the_sdk() {
    if python_missing() {
        return;
    }
    let dir = state_dir("probe");
    let mut skill = PythonSkill::start(&dir.join("ca.pem")).await;
    let sim = start_sim(SimConfig {
        scenario: scenario(&skill.endpoint, &[Some("ProbeIntent")]),
        state_dir: Some(dir.clone()),
        ..SimConfig::default()
    })
    .await
    .unwrap();

    let parts = recognize(&sim, "SN-SKILL-2", "dlg-skill-2").await;
    let mut outcomes = Vec::new();
    for _ in 0..9 {
        outcomes.push(skill.wait_line("PR ", Duration::from_secs(10)).await);
    }
    assert_eq!(
        outcomes,
        [
            // The SDK parses the 400/403 error bodies: their code is an integer.
            "PR too-long 400 int",
            "PR unwrapped-ssml 400 int",
            "PR step-1 204 -",
            "PR step-2 204 -",
            "PR step-3 204 -",
            "PR step-4 204 -",
            "PR step-5 204 -",
            // The SDK does not model 429: it raises "Unknown error" with the raw body.
            "PR step-6 429 raw",
            "PR late 403 int",
        ]
    );

    let speaks = speaks(&parts, "dlg-skill-2");
    let tokens: Vec<&str> = speaks.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(tokens.len(), 6, "{tokens:?}");
    for (n, token) in tokens[..5].iter().enumerate() {
        assert!(
            token.starts_with(&format!("pr-{}-amzn1.echo-api.request.", n + 1)),
            "{token}"
        );
    }
    assert!(!tokens[5].starts_with("pr-"));

    sim.stop().await;
    drop(skill);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launched_session_continues_into_the_next_turn() {
    if python_missing() {
        return;
    }
    let dir = state_dir("session");
    let mut skill = PythonSkill::start(&dir.join("ca.pem")).await;
    let sim = start_sim(SimConfig {
        scenario: scenario(&skill.endpoint, &[None, Some("LookupIntent")]),
        state_dir: Some(dir.clone()),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut dev = connect_device(&sim, "SN-SKILL-3").await;

    // LaunchRequest: a welcome, and the mic reopens because the skill keeps the session.
    let first = recognize_on(&mut dev, "dlg-launch").await;
    assert_eq!(
        skill.wait_line("REQUEST ", Duration::from_secs(5)).await,
        "REQUEST LaunchRequest new=true"
    );
    let names: Vec<String> = first
        .iter()
        .filter_map(|(_, p)| p.directive_name())
        .collect();
    assert_eq!(
        names,
        ["SpeechSynthesizer.Speak", "SpeechRecognizer.ExpectSpeech"]
    );
    let (_, ReceivedPart::Directive(expect)) = &first[2] else {
        panic!("{:?}", first[2].1);
    };
    assert_eq!(
        expect["directive"]["payload"]["timeoutInMilliseconds"],
        8000
    );
    assert_eq!(
        expect["directive"]["header"]["dialogRequestId"],
        "dlg-launch"
    );
    assert_eq!(speaks(&first[..2], "dlg-launch").len(), 1);

    // The answer to the reopened mic: same session, its attributes kept.
    let second = recognize_on(&mut dev, "dlg-lookup").await;
    assert_eq!(
        skill.wait_line("REQUEST ", Duration::from_secs(5)).await,
        "REQUEST IntentRequest new=false"
    );
    assert_eq!(
        skill.wait_line("SESSION ", Duration::from_secs(5)).await,
        "SESSION launched=true"
    );
    let speaks = speaks(&second, "dlg-lookup");
    assert_eq!(speaks.len(), 2);
    assert!(speaks[0].1.starts_with("pr-1-"));

    sim.stop().await;
    drop(skill);
    let _ = std::fs::remove_dir_all(&dir);
}
