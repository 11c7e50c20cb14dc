//! The short soak run for CI: `avsd-bench --soak 20` (the daemon in a child process against an
//! in-process avs-sim, 20 dialogs back to back, each with progressive speech, an AudioPlayer
//! track and a volume change). Asserts no failed dialog and no leaked file descriptor; memory
//! and time are reported, not asserted (they belong to the bench, see docs/performance.md).
//! The long run: `cargo run --release --bin avsd-bench -- --soak 1000 --json soak.json`.
// Test helpers outside #[test] fns: a failed set-up step fails the test, like `expect` in one.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

#[test]
fn twenty_dialogs_back_to_back_without_failures_or_fd_leaks() {
    let dir = std::env::temp_dir().join(format!("avsd-soak-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let json = dir.join("soak.json");
    let out = Command::new(env!("CARGO_BIN_EXE_avsd-bench"))
        .args(["--soak", "20", "--json"])
        .arg(&json)
        .output()
        .expect("run avsd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "avsd-bench --soak failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("json");
    let soak = &report["soak"];
    println!("{}", serde_json::to_string_pretty(soak).unwrap_or_default());
    assert_eq!(soak["dialogs"], 20);
    assert_eq!(
        soak["failures"], 0,
        "failed dialogs: {}",
        soak["failure_reasons"]
    );
    // Descriptors opened once for good during the first dialogs (lazily opened devices and
    // files) are not a leak; growth from dialog 10 to the end is.
    let (start, at_10, end) = (
        soak["fds_start"].as_u64().expect("fds_start"),
        soak["fds_after_dialog_10"]
            .as_u64()
            .expect("fds_after_dialog_10"),
        soak["fds_end"].as_u64().expect("fds_end"),
    );
    assert!(
        start > 0 && end <= at_10,
        "open descriptors grew from {at_10} after dialog 10 to {end} (at start: {start})"
    );
    assert!(
        soak["rss_growth_10_to_n_kb"].is_i64(),
        "RSS growth measured"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
