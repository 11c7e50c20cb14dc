//! The avs-sim binary: parses flags, binds the listener, starts [`avs_sim::serve`], writes the
//! ready file and waits for Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// A local Alexa Voice Service cloud (LWA stub, AVS gateway, scenario and skill turns).
#[derive(Debug, Parser)]
#[command(name = "avs-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write `{"url": ..., "ca": ..., "pid": ...}` here once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Scenario file (TOML) answering each Recognize; a built-in answer otherwise.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Approve every code pair at once.
    #[arg(long)]
    auto_approve: bool,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    access_token_lifetime: u64,
    /// Code pair lifetime in seconds.
    #[arg(long, default_value_t = 600)]
    code_pair_lifetime: u64,
    /// Minimum token polling interval in seconds.
    #[arg(long, default_value_t = 5)]
    poll_interval: u64,
    /// Answer turns by calling this skill web service (every turn without --scenario; with
    /// one, the turns that have no speech of their own).
    #[arg(long)]
    skill_endpoint: Option<url::Url>,
    /// Directory for the CA PEM and the recorded Recognize audio.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Send StopCapture on the Recognize's event stream instead of the downchannel.
    #[arg(long)]
    stop_capture_on_event_stream: bool,
    /// Write each MP3 attachment before the Speak that references it.
    #[arg(long)]
    attachments_first: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let scenario = match (&args.scenario, &args.skill_endpoint) {
        (Some(p), _) => avs_sim::Scenario::load(p)?,
        // Every turn goes to the skill: a turn without speech of its own.
        (None, Some(_)) => avs_sim::Scenario {
            turns: vec![avs_sim::scenario::Turn::default()],
            on_event: Default::default(),
        },
        (None, None) => avs_sim::Scenario::default(),
    };
    let config = avs_sim::SimConfig {
        lwa: avs_sim::lwa::LwaConfig {
            auto_approve: args.auto_approve,
            access_token_lifetime: Duration::from_secs(args.access_token_lifetime),
            code_pair_lifetime: Duration::from_secs(args.code_pair_lifetime),
            poll_interval: Duration::from_secs(args.poll_interval),
            ..Default::default()
        },
        scenario,
        skill_endpoint: args.skill_endpoint,
        state_dir: args.state_dir,
        stop_capture_on_event_stream: args.stop_capture_on_event_stream,
        attachments_first: args.attachments_first,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle = avs_sim::serve(listener, config, shutdown.clone()).await?;
    if let Some(path) = &args.ready_file {
        let ready = serde_json::json!({
            "url": handle.url.as_str(),
            "ca": handle.ca_pem,
            "pid": std::process::id(),
        });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, ready.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    shutdown.cancel();
    handle.join().await;
    Ok(())
}
