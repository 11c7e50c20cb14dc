//! link-bench: measures avsd's link against an in-process avs-sim over TLS + HTTP/2 on loopback.
//!
//! `cargo run --release --bin link-bench [-- --restarts 20 --directives 200 --idle-secs 20]`
//!
//! - cold start: `spawn_link` to the downchannel answered `200`, and to CONNECTED (downchannel +
//!   SynchronizeState accepted), over fresh links;
//! - reconnect: a TCP relay in front of the sim is stopped for 500 ms and restarted on the same
//!   port (the sim regenerates its CA and tokens on a real restart); time from the relay being
//!   back to CONNECTED, p50/p95 (includes the backoff wait, which dominates by design);
//! - directive latency: `admin.push` of a directive to its `Incoming` delivery (an upper bound
//!   of last-byte-on-the-wire to delivery: it includes the sim's own queue hop and write);
//! - idle cost with the connection up: CPU time and voluntary context switches per second of the
//!   link runtime's threads only (`/proc/self/task/*/{stat,status}`, threads named `link-rt`).
//!
//! Prints one JSON line and a Markdown table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use avs_sim::SimConfig;
use avs_sim::relay::Relay;
use avsd::auth::{AccessToken, AuthHandle};
use avsd::transport::{
    Incoming, LinkConfig, LinkState, LinkTuning, client_config, spawn_link_tuned,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const CLIENT_ID: &str = "amzn1.application-oa2-client.bench";

struct Args {
    restarts: usize,
    directives: usize,
    idle_secs: u64,
    cold_starts: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        restarts: 20,
        directives: 200,
        idle_secs: 20,
        cold_starts: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--restarts" => a.restarts = value.parse()?,
            "--directives" => a.directives = value.parse()?,
            "--idle-secs" => a.idle_secs = value.parse()?,
            "--cold-starts" => a.cold_starts = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
}

async fn wait_state(rx: &mut watch::Receiver<LinkState>, want: LinkState) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| *s == want))
        .await
        .context("timed out waiting for the link state")??;
    Ok(())
}

/// CPU ticks and voluntary context switches of this process's threads named `prefix*`.
fn thread_totals(prefix: &str) -> Result<(u64, u64)> {
    let mut ticks = 0;
    let mut switches = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let dir = entry?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat"))?;
        // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        ticks += utime + stime;
        let status = std::fs::read_to_string(dir.join("status"))?;
        switches += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok((ticks, switches))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sim-rt")
        .enable_all()
        .build()?;
    let link_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("link-rt")
        .enable_all()
        .build()?;
    let sim_shutdown = CancellationToken::new();
    let sim = sim_rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        anyhow::Ok(avs_sim::serve(listener, SimConfig::default(), sim_shutdown.clone()).await?)
    })?;
    let sim_addr: SocketAddr = format!(
        "{}:{}",
        sim.url.host_str().unwrap_or("127.0.0.1"),
        sim.url.port().unwrap_or(443)
    )
    .parse()?;
    let tls = client_config(Some(&sim.ca_pem))?;
    let tuning = LinkTuning {
        // 20 restarts in a row would otherwise hit the production rate limit (12 per minute).
        rate_limit_attempts: 10_000,
        ..LinkTuning::default()
    };
    let issue =
        |serial: &str| AccessToken::new(sim.admin.issue_token(CLIENT_ID, "bench", serial).0);
    let context: avsd::transport::ContextProvider =
        Arc::new(|| vec![avs_proto::ContextEntry::volume_state(50, false)]);
    let spawn = |endpoint: url::Url, auth, tx, shutdown: &CancellationToken| {
        spawn_link_tuned(
            LinkConfig::new(endpoint, tls.clone()),
            tuning.clone(),
            auth,
            context.clone(),
            tx,
            shutdown.clone(),
        )
    };

    let report = link_rt.block_on(async {
        // Cold starts.
        let mut to_downchannel = Vec::new();
        let mut to_connected = Vec::new();
        for i in 0..args.cold_starts {
            let serial = format!("SN-COLD-{i}");
            let (auth, _manual) = AuthHandle::manual(Some(issue(&serial)));
            let (tx, _rx) = mpsc::channel(16);
            let shutdown = CancellationToken::new();
            let mark = sim.recorder.len();
            let t0 = Instant::now();
            let (mut link, task) = spawn(sim.url.clone(), auth, tx, &shutdown);
            let task = tokio::spawn(task);
            let serial2 = serial.clone();
            sim.recorder
                .wait_for(mark, Duration::from_secs(30), "downchannel", move |r| {
                    r.path == avs_proto::DIRECTIVES_PATH
                        && r.device.as_deref() == Some(serial2.as_str())
                })
                .await?;
            to_downchannel.push(t0.elapsed());
            wait_state(&mut link.state, LinkState::Connected).await?;
            to_connected.push(t0.elapsed());
            shutdown.cancel();
            let _ = task.await;
        }

        // The long-lived link behind the relay.
        let mut relay = Relay::start(sim_addr).await?;
        let (auth, _manual) = AuthHandle::manual(Some(issue("SN-BENCH")));
        let (tx, mut incoming) = mpsc::channel(256);
        let shutdown = CancellationToken::new();
        let endpoint = relay.url()?;
        let (mut link, task) = spawn(endpoint, auth, tx, &shutdown);
        let task = tokio::spawn(task);
        wait_state(&mut link.state, LinkState::Connected).await?;

        // Directive latency.
        let mut latencies = Vec::new();
        for n in 0..args.directives {
            let header = avs_proto::Header::new("Speaker", "SetVolume");
            let id = header.message_id.clone();
            let json = avs_proto::Directive::build(header, serde_json::json!({"volume": n % 100}));
            let t0 = Instant::now();
            sim.admin.push(Some("SN-BENCH"), json).await?;
            loop {
                match tokio::time::timeout(Duration::from_secs(10), incoming.recv()).await {
                    Ok(Some(Incoming::Directive(d))) if d.header.message_id == id => break,
                    Ok(Some(_)) => continue,
                    _ => bail!("directive {n} never arrived"),
                }
            }
            latencies.push(t0.elapsed());
        }

        // Idle cost.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (ticks0, sw0) = thread_totals("link-rt")?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
        let (ticks1, sw1) = thread_totals("link-rt")?;
        let idle_wall = t0.elapsed().as_secs_f64();
        // Clock ticks are 1/100 s on Linux (USER_HZ).
        let idle_cpu_percent = (ticks1 - ticks0) as f64 / 100.0 / idle_wall * 100.0;
        let wakeups_per_s = (sw1 - sw0) as f64 / idle_wall;

        // Reconnects after the cloud comes back.
        let mut reconnects = Vec::new();
        for _ in 0..args.restarts {
            relay.stop().await;
            tokio::time::timeout(
                Duration::from_secs(30),
                link.state
                    .wait_for(|s| matches!(s, LinkState::WaitingToRetry { .. })),
            )
            .await
            .context("link never noticed the outage")??;
            tokio::time::sleep(Duration::from_millis(500)).await;
            relay.restart().await?;
            let t0 = Instant::now();
            wait_state(&mut link.state, LinkState::Connected).await?;
            reconnects.push(t0.elapsed());
        }
        shutdown.cancel();
        let _ = task.await;
        anyhow::Ok(serde_json::json!({
            "bench": "link",
            "cold_start_to_downchannel_ms_p50": ms(percentile(&to_downchannel, 0.5)),
            "cold_start_to_downchannel_ms_p95": ms(percentile(&to_downchannel, 0.95)),
            "cold_start_to_connected_ms_p50": ms(percentile(&to_connected, 0.5)),
            "cold_start_to_connected_ms_p95": ms(percentile(&to_connected, 0.95)),
            "reconnect_after_restart_ms_p50": ms(percentile(&reconnects, 0.5)),
            "reconnect_after_restart_ms_p95": ms(percentile(&reconnects, 0.95)),
            "restarts": reconnects.len(),
            "directive_to_incoming_ms_p50": ms(percentile(&latencies, 0.5)),
            "directive_to_incoming_ms_p95": ms(percentile(&latencies, 0.95)),
            "directives": latencies.len(),
            "idle_cpu_percent": (idle_cpu_percent * 1000.0).round() / 1000.0,
            "idle_wakeups_per_s": (wakeups_per_s * 100.0).round() / 100.0,
            "idle_secs": args.idle_secs,
        }))
    })?;
    sim_shutdown.cancel();
    println!("{report}");
    println!();
    println!("| metric | value |");
    println!("|---|---|");
    if let Some(map) = report.as_object() {
        for (k, v) in map {
            println!("| {k} | {v} |");
        }
    }
    Ok(())
}
