//! outbox-bench: what one write of the persisted outbox costs (serialize, write, fsync, rename,
//! fsync the directory), for 1, 8 and 64 queued events, in a directory of your choice (use one
//! on the device's real state filesystem: tmpfs hides the fsync).
//!
//! `cargo run --bin outbox-bench -- [--dir /var/lib/avsd-bench] [--writes 50]`
//!
//! Prints p50 / p95 / max per write and the file size.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use avs_proto::Event;
use avsd::transport::outbox::QueuedEvent;
use avsd::transport::outbox::store::{OUTBOX_FILE, save};
use serde_json::json;

/// What an offline device queues: volume changes and alert reports (no context: AVS sends
/// context only with Recognize and SynchronizeState).
fn events(n: usize) -> Vec<QueuedEvent> {
    (0..n)
        .map(|i| {
            let event = if i % 2 == 0 {
                Event::raw(
                    "Speaker",
                    "VolumeChanged",
                    json!({"volume": i % 100, "muted": false}),
                )
            } else {
                Event::raw(
                    "Alerts",
                    "AlertStopped",
                    json!({"token": format!("amzn1.as-amt.v1.ThisIsAnAlertToken-{i:04}")}),
                )
            };
            QueuedEvent {
                event,
                queued_at: SystemTime::now(),
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn main() -> Result<()> {
    let mut dir = std::env::temp_dir().join(format!("outbox-bench-{}", std::process::id()));
    let mut writes = 50usize;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().context("flag without a value");
        match flag.as_str() {
            "--dir" => dir = PathBuf::from(value()?),
            "--writes" => writes = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(OUTBOX_FILE);
    println!("| events | file bytes | p50 ms | p95 ms | max ms |");
    println!("|---|---|---|---|---|");
    for n in [1usize, 8, 64] {
        let queue = events(n);
        let mut took = Vec::with_capacity(writes);
        for _ in 0..writes {
            let t = Instant::now();
            save(&path, &queue)?;
            took.push(t.elapsed());
        }
        took.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {n} | {} | {:.2} | {:.2} | {:.2} |",
            std::fs::metadata(&path)?.len(),
            ms(percentile(&took, 0.5)),
            ms(percentile(&took, 0.95)),
            ms(percentile(&took, 1.0)),
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
