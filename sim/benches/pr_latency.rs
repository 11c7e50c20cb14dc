//! Time from an accepted `POST /v1/directives` (the 204 the skill sees) to the
//! `SpeechSynthesizer.Speak` part, MP3 attached, being handed to the turn's response-stream
//! writer, i.e. leaving the sim. It includes synthesising the speech (espeak-ng when
//! installed, else the synthetic voice) and encoding the MP3: that is what the sim must do.
//!
//! Run: `cargo bench -p avs-sim --bench pr_latency` (add `-- N` for another number of calls).
// A bench binary: failures abort with a message, like a test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use avs_sim::progressive::LiveRequests;
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let live = LiveRequests::new();
    let mut samples = Vec::with_capacity(n);
    let mut bytes = 0usize;
    for i in 0..n {
        let (sink, mut parts) = tokio::sync::mpsc::channel(8);
        let request_id = format!("amzn1.echo-api.request.bench-{i}");
        let token = format!("bench-token-{i}");
        let _guard = live.register(
            &request_id,
            &token,
            "IntentRequest",
            &format!("dialog-{i}"),
            sink,
        );
        let body = json!({
            "header": { "requestId": request_id },
            "directive": { "type": "VoicePlayer.Speak", "speech": "<speak>Hang on while I look that up.</speak>" }
        })
        .to_string();
        let (status, _) = live
            .handle_post(Some(&format!("Bearer {token}")), body.as_bytes())
            .await;
        let accepted = Instant::now();
        assert_eq!(status, http::StatusCode::NO_CONTENT, "the PR was refused");
        let part = tokio::time::timeout(Duration::from_secs(10), parts.recv())
            .await
            .expect("the Speak in time")
            .expect("a Speak");
        samples.push(accepted.elapsed());
        bytes += part.attachment.map(|(_, mp3)| mp3.len()).unwrap_or(0);
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{}",
        json!({
            "calls": n,
            "accepted_to_speak_part_ms_p50": ms(pct(0.5)),
            "accepted_to_speak_part_ms_p95": ms(pct(0.95)),
            "mean_mp3_bytes": bytes / n.max(1),
        })
    );
    println!("| figure | p50 | p95 |\n|---|---|---|");
    println!(
        "| accepted /v1/directives -> Speak part leaving the sim ({n} calls) | {:.1} ms | {:.1} ms |",
        ms(pct(0.5)),
        ms(pct(0.95))
    );
}
