//! `avsd demo`: a whole spoken dialog on this machine, with no account and no network. It starts
//! an in-process avs-sim with a fresh CA, links the device by code-based linking against it,
//! feeds a bundled utterance as the microphone, and plays the interim speech and the final
//! answer on the default sound device (or writes them to a WAV file when there is none),
//! printing each step with its time since the tap.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::attention::Attention;
use crate::audio::AudioEngine;
use crate::config::Config;
use crate::daemon::Daemon;
use crate::dialog::{DialogCommand, DialogStep};
use crate::transport::LinkState;

/// The utterance played as the microphone ("Alexa, what time is it?", 16 kHz mono).
const UTTERANCE: &[u8] = include_bytes!("../assets/demo/utterance.wav");

/// How the built-in sim answers: an interim speech while "the skill works", then the answer.
const SCENARIO: &str = r#"
[[turn]]
interim = [{ text = "Let me look that up for you.", delay_ms = 300 }]
final_speech = "It is five o'clock in the afternoon. Have a good evening."
directives = [{ namespace = "Speaker", name = "SetVolume", payload = { volume = 60 } }]
"#;

/// Options of `avsd demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Play on this device instead of the default one (a cpal id, or `wav:PATH`).
    #[arg(long)]
    pub output: Option<String>,
    /// Directory for the demo's state, sim certificates and the WAV output (default: a new
    /// directory under the system temp dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

struct Clock(Instant);

impl Clock {
    fn say(&self, what: impl std::fmt::Display) {
        println!("[{:>6} ms] {what}", self.0.elapsed().as_millis());
    }
}

pub async fn run(args: DemoArgs) -> ExitCode {
    match demo(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("avsd demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let clock = Clock(Instant::now());
    let dir = args
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("avsd-demo-{}", std::process::id())));
    std::fs::create_dir_all(&dir)?;
    let shutdown = CancellationToken::new();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = avs_sim::serve(
        listener,
        avs_sim::SimConfig {
            lwa: avs_sim::lwa::LwaConfig {
                auto_approve: true,
                poll_interval: Duration::from_secs(1),
                ..Default::default()
            },
            scenario: avs_sim::Scenario::from_toml(SCENARIO)?,
            state_dir: Some(dir.join("sim")),
            ..Default::default()
        },
        shutdown.child_token(),
    )
    .await?;
    clock.say(format_args!(
        "avs-sim listening at {} (CA {})",
        sim.url,
        sim.ca_pem.display()
    ));

    let utterance = dir.join("utterance.wav");
    std::fs::write(&utterance, UTTERANCE)?;
    let mut config = Config::defaults()?;
    config.cloud.endpoint = sim.url.clone();
    config.cloud.lwa_url = sim.url.clone();
    config.cloud.extra_ca_file = Some(sim.ca_pem.clone());
    config.state_dir = dir.join("state");
    config.control_socket = dir.join("control.sock");
    config.audio.input = format!("wav:{}", utterance.display());
    config.audio.output = choose_output(args.output, &config, &dir, &clock);
    let output = config.audio.output.clone();

    let auth = crate::cli::auth_config(&config).map_err(anyhow::Error::msg)?;
    crate::auth::login(&auth, |code| {
        clock.say(format_args!(
            "code-based linking: open {} and enter {} (the built-in sim approves it)",
            code.verification_uri, code.user_code
        ));
    })
    .await?;
    clock.say(format_args!(
        "linked; tokens stored 0600 in {}",
        config.state_dir.display()
    ));

    let daemon = Daemon::start(Arc::new(config), shutdown.child_token()).await?;
    let mut link = daemon.link.clone();
    tokio::time::timeout(
        Duration::from_secs(15),
        link.wait_for(|s| *s == LinkState::Connected),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no connection to the sim within 15 s"))??;
    clock.say("connected: HTTP/2 + TLS, downchannel open, SynchronizeState sent");

    let mut updates = daemon.dialog.updates.subscribe();
    let tap = Instant::now();
    daemon.dialog.commands.send(DialogCommand::Listen).await?;
    clock.say("tap: listening (the microphone is the bundled utterance \"Alexa, what time is it?\"); times below count from the tap");
    let at = |t: Instant| t.saturating_duration_since(tap).as_millis();
    let mut turn_closed = false;
    let mut spoke = 0;
    let result = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let u = match updates.recv().await {
                Ok(u) => u,
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => anyhow::bail!("the daemon stopped"),
            };
            let line = match &u.step {
                DialogStep::FirstFrameSent => {
                    Some("first 10 ms audio frame on the wire".to_owned())
                }
                DialogStep::StopCaptureReceived => {
                    Some("StopCapture received (the sim heard the end of speech)".to_owned())
                }
                DialogStep::MicClosed { reason } => Some(format!("microphone closed ({reason})")),
                DialogStep::SpeechStarted { token } => {
                    spoke += 1;
                    Some(format!("speech {spoke} started ({token})"))
                }
                DialogStep::SpeechFinished { token } => Some(format!("speech finished ({token})")),
                DialogStep::SpeechInterrupted { token } => {
                    Some(format!("speech interrupted ({token})"))
                }
                DialogStep::VolumeChanged { volume, .. } => {
                    Some(format!("volume set to {volume} by the cloud"))
                }
                DialogStep::TurnClosed { status } => {
                    turn_closed = true;
                    Some(format!("response complete (HTTP {status})"))
                }
                DialogStep::Attention { state } => Some(format!("attention: {state:?}")),
                DialogStep::Offline => anyhow::bail!("offline: the Recognize could not be sent"),
                DialogStep::RecognizeStarted { .. }
                | DialogStep::AlertStarted { .. }
                | DialogStep::AlertStopped { .. } => None,
            };
            if let Some(line) = line {
                println!("[tap+{:>5} ms] {line}", at(u.at));
            }
            if turn_closed
                && spoke >= 2
                && matches!(
                    u.step,
                    DialogStep::Attention {
                        state: Attention::Idle
                    }
                )
            {
                return Ok(());
            }
        }
    })
    .await;
    shutdown.cancel();
    let _ = daemon.supervise().await;
    sim.join().await;
    result.map_err(|_| anyhow::anyhow!("the dialog did not finish within 40 s"))??;
    match output.strip_prefix("wav:") {
        Some(path) => clock.say(format_args!(
            "done: the answer was written to {path} (no sound device here)"
        )),
        None => clock.say(format_args!("done: played on {output}")),
    }
    Ok(())
}

/// The default sound device when it opens, else a WAV file in `dir`.
fn choose_output(asked: Option<String>, config: &Config, dir: &Path, clock: &Clock) -> String {
    if let Some(o) = asked {
        return o;
    }
    let mut probe = config.audio.clone();
    probe.input = "none".into();
    probe.output = "alsa:default".into();
    match AudioEngine::start(&probe) {
        Ok(engine) => {
            drop(engine);
            "alsa:default".into()
        }
        Err(e) => {
            let path = dir.join("answer.wav");
            clock.say(format_args!(
                "no usable sound device ({e}); writing what is played to {}",
                path.display()
            ));
            format!("wav:{}", path.display())
        }
    }
}
