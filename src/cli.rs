//! The `avsd` command line: each sub-command as a function returning an exit code, so `main.rs`
//! only parses flags and installs logging.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::auth::{self, AuthConfig};
use crate::config::Config;
use crate::control::{self, Request};
use crate::daemon::Daemon;
use crate::service;

/// Exit code for configuration errors (sysexits EX_CONFIG), so systemd does not loop on them.
const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "avsd",
    version,
    about = "Alexa Voice Service device daemon for Pi-class speakers"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "/etc/avsd/avsd.toml")]
    pub config: PathBuf,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (what systemd starts).
    Run,
    /// Link this device to an Amazon account (code-based linking).
    Login,
    /// Forget the stored tokens.
    Logout,
    /// List audio devices with what they support, and a config line that works for each.
    Devices,
    /// Validate the configuration (and its hardware profile) and print the effective one.
    Check,
    /// Start listening (like pressing the action button).
    Listen,
    /// Stop listening, speaking and ringing.
    Stop,
    /// Show the daemon's state.
    Status {
        /// Keep printing every state change.
        #[arg(long)]
        follow: bool,
    },
    /// Set (`40`) or change (`+10`, `-10`, `up`, `down`) the volume, or `mute` / `unmute`.
    Volume {
        #[arg(allow_hyphen_values = true)]
        value: String,
    },
    /// Mute the speaker.
    Mute,
    /// Unmute the speaker.
    Unmute,
    /// Play (like a play button: the cloud resumes or starts the music).
    Play,
    /// Pause (like a pause button: the cloud stops the music).
    Pause,
    /// Next track.
    Next,
    /// Previous track.
    Previous,
    /// A whole spoken dialog against a built-in avs-sim: no account, no network needed.
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
    /// Smoke checks of this build on its target (decode, TLS + HTTP/2); used by cross-check.
    #[command(hide = true)]
    Selftest(crate::selftest::SelftestArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("avsd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run => run_daemon(&cli.config).await,
            Command::Login => login(&cli.config).await,
            Command::Logout => with_config(&cli.config, |c| match auth::logout(&c.state_dir) {
                Ok(()) => {
                    println!("Tokens removed from {}.", c.state_dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }),
            Command::Devices => {
                let devices = crate::audio::devices::list_devices();
                print!("{}", crate::audio::devices::report(&devices));
                ExitCode::SUCCESS
            }
            Command::Check => with_config(&cli.config, |c| {
                print!("{}", c.to_effective_toml());
                eprintln!("{}: OK", cli.config.display());
                ExitCode::SUCCESS
            }),
            Command::Listen => client(&cli.config, Request::Listen).await,
            Command::Stop => client(&cli.config, Request::Stop).await,
            Command::Status { follow: false } => client(&cli.config, Request::Status).await,
            Command::Status { follow: true } => follow(&cli.config).await,
            Command::Mute => client(&cli.config, Request::Mute { muted: true }).await,
            Command::Unmute => client(&cli.config, Request::Mute { muted: false }).await,
            Command::Play => client(&cli.config, Request::Play).await,
            Command::Pause => client(&cli.config, Request::Pause).await,
            Command::Next => client(&cli.config, Request::Next).await,
            Command::Previous => client(&cli.config, Request::Previous).await,
            Command::Volume { value } => match parse_volume(&value) {
                Some(r) => client(&cli.config, r).await,
                None => {
                    eprintln!(
                        "avsd volume: {value:?} is not 0..100, +N, -N, up, down, mute or unmute"
                    );
                    ExitCode::from(2)
                }
            },
            #[cfg(feature = "demo")]
            Command::Demo(args) => crate::demo::run(args).await,
            Command::Selftest(args) => crate::selftest::run(args).await,
        }
    })
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("avsd: {e}");
    ExitCode::FAILURE
}

fn with_config(path: &Path, f: impl FnOnce(&Config) -> ExitCode) -> ExitCode {
    match Config::load(path) {
        Ok(c) => f(&c),
        Err(e) => {
            eprintln!("avsd: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The step of `avsd volume up|down`, as a volume button's.
const VOLUME_STEP: i16 = 10;

fn parse_volume(v: &str) -> Option<Request> {
    let adjust = |d| {
        Some(Request::Volume {
            set: None,
            adjust: Some(d),
        })
    };
    match v {
        "up" => adjust(VOLUME_STEP),
        "down" => adjust(-VOLUME_STEP),
        "mute" => Some(Request::Mute { muted: true }),
        "unmute" => Some(Request::Mute { muted: false }),
        _ if v.starts_with('+') || v.starts_with('-') => v
            .parse::<i16>()
            .ok()
            .filter(|d| d.abs() <= 100)
            .map(|d| Request::Volume {
                set: None,
                adjust: Some(d),
            }),
        _ => v
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= 100)
            .map(|n| Request::Volume {
                set: Some(n),
                adjust: None,
            }),
    }
}

async fn run_daemon(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("avsd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(service::stop_on_signal(shutdown.clone()));
    let daemon = match Daemon::start(config, shutdown.clone()).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("avsd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match daemon.supervise().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// The AuthConfig of a configuration.
pub fn auth_config(c: &Config) -> Result<AuthConfig, String> {
    let tls = crate::transport::tls::client_config(c.cloud.extra_ca_file.as_deref())
        .map_err(|e| e.to_string())?;
    Ok(AuthConfig {
        lwa_base_url: c.cloud.lwa_url.clone(),
        client_id: c.device.client_id.clone(),
        product_id: c.device.product_id.clone(),
        device_serial_number: c.device.serial_number.clone(),
        state_dir: c.state_dir.clone(),
        tls,
    })
}

async fn login(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("avsd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let cfg = match auth_config(&config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let result = auth::login(&cfg, |code| {
        println!(
            "To link this speaker to your Amazon account, open {} and enter the code {} (valid for {} minutes).",
            code.verification_uri,
            code.user_code,
            code.expires_in.as_secs() / 60
        );
    })
    .await;
    match result {
        Ok(()) => {
            println!(
                "Linked. Tokens are stored in {}. A running avsd waiting for a login picks them up within a second; otherwise start the service: systemctl start avsd",
                config.state_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn socket_of(path: &Path) -> PathBuf {
    Config::load(path)
        .map(|c| c.control_socket)
        .unwrap_or_else(|_| PathBuf::from("/run/avsd/control.sock"))
}

async fn client(path: &Path, request: Request) -> ExitCode {
    match control::request(&socket_of(path), &request).await {
        Ok(answer) => {
            println!("{answer}");
            if answer["ok"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(&e),
    }
}

async fn follow(path: &Path) -> ExitCode {
    match control::subscribe(&socket_of(path), |v| println!("{v}")).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Installs logging: journald when run by systemd, stderr otherwise.
///
/// `RUST_LOG` takes `level` and `target=level` directives separated by commas (tracing's
/// `Targets` syntax: no span or field filters, which would pull a regex engine onto the device).
pub fn init_logging(verbose: u8, default_level: &str) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match verbose {
        0 => default_level.parse().unwrap_or(LevelFilter::INFO),
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let parsed = from_env.as_deref().map(str::parse::<Targets>);
    let filter = match &parsed {
        Some(Ok(targets)) => targets.clone(),
        _ => Targets::new()
            .with_default(level)
            .with_targets(["h2", "rustls", "hyper"].map(|t| (t, LevelFilter::INFO))),
    };
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| {
        tracing_journald::layer()
            .ok()
            .map(|l| l.with_syslog_identifier("avsd".into()))
    });
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
    });
    let _ = tracing_subscriber::registry()
        .with(journald.map(|j| j.with_filter(filter.clone())))
        .with(stderr.map(|s| s.with_filter(filter)))
        .try_init();
    if let Some(Err(e)) = parsed {
        tracing::warn!(error = %e, "RUST_LOG not understood (use level or target=level, comma-separated); using the default filter");
    }
}
