//! Wiring: builds every part of the daemon from a [`Config`], supervises the tasks, reports to
//! systemd and stops cleanly. `avsd run` and `avsd demo` both go through [`Daemon::start`].
//!
//! Stop order on shutdown (style.md P3): STOPPING=1, stop capture and speech (the dialog core
//! does it when cancelled), let the link close its streams, join every task with a 5 s deadline,
//! then write the events still unsent to the state directory (they are sent after the next start).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::attention::Attention;
use crate::audio::{AudioEngine, AudioError};
use crate::auth::{self, AuthConfig, AuthError};
use crate::capabilities::DeviceInfo;
use crate::config::Config;
use crate::context::ContextBoard;
use crate::control;
use crate::dialog::{DialogCore, DialogDeps, DialogHandle};
use crate::service;
use crate::transport::{self, LinkConfig, LinkState, PostConnectConfig};

/// Longest time between a change of the unsent events and its copy on disk (what a power cut
/// can lose).
const OUTBOX_WRITE_INTERVAL: Duration = Duration::from_secs(1);

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("not logged in ({0}); run `avsd login` first")]
    Auth(#[source] AuthError),
    #[error("audio: {0}")]
    Audio(#[source] AudioError),
    #[error("a daemon task stopped unexpectedly: {0}")]
    TaskDied(String),
}

/// A running daemon.
pub struct Daemon {
    pub config: Arc<Config>,
    pub dialog: DialogHandle,
    pub link: watch::Receiver<LinkState>,
    tasks: JoinSet<&'static str>,
    shutdown: CancellationToken,
    outbox_store: Arc<crate::transport::outbox::store::OutboxStore>,
    // Kept last: dropping it closes the audio devices after every task has stopped.
    audio: AudioEngine,
}

impl Daemon {
    /// Starts everything; `shutdown` stops it.
    pub async fn start(
        config: Arc<Config>,
        shutdown: CancellationToken,
    ) -> Result<Self, DaemonError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|source| DaemonError::StateDir {
            path: config.state_dir.display().to_string(),
            source,
        })?;
        let tls = transport::tls::client_config(config.cloud.extra_ca_file.as_deref())
            .map_err(|e| DaemonError::Tls(e.to_string()))?;
        let audio = AudioEngine::start(&config.audio).map_err(DaemonError::Audio)?;
        let (auth, auth_task) = auth::spawn_auth(
            AuthConfig {
                lwa_base_url: config.cloud.lwa_url.clone(),
                client_id: config.device.client_id.clone(),
                product_id: config.device.product_id.clone(),
                device_serial_number: config.device.serial_number.clone(),
                state_dir: config.state_dir.clone(),
                tls: tls.clone(),
            },
            shutdown.child_token(),
        )
        .map_err(DaemonError::Auth)?;

        let board = ContextBoard::new(Vec::new());
        let (incoming_tx, incoming_rx) = mpsc::channel(64);
        let tls_for_media = tls.clone();
        // The link moves to another gateway only between dialogs; the dialog core's attention
        // state says when that is.
        let (idle_tx, idle_rx) = watch::channel(true);
        let (link, link_task) = transport::spawn_link(
            LinkConfig {
                endpoint: config.cloud.endpoint.clone(),
                tls,
                ping_idle: config.cloud.ping_idle,
                ping_timeout: config.cloud.ping_timeout,
                offline_queue_events: config.cloud.offline_queue_events,
                post_connect: Some(PostConnectConfig {
                    state_dir: config.state_dir.clone(),
                    device: Some(DeviceInfo::from_config(&config.device)),
                    dialog_idle: Some(idle_rx),
                }),
            },
            auth,
            board.provider(),
            incoming_tx,
            shutdown.child_token(),
        );
        // Before any task runs: last run's unsent events go out first on the first connection.
        let outbox_store = Arc::new(crate::transport::outbox::store::OutboxStore::new(
            &config.state_dir,
            link.outbox.clone(),
        ));
        outbox_store.restore(
            std::time::SystemTime::now(),
            config.cloud.offline_event_max_age,
        );
        // The dialog core fills the context board before the link task first runs, so the
        // first SynchronizeState carries every agent's state.
        let (dialog, core) = DialogCore::new(DialogDeps {
            config: config.clone(),
            outbox: link.outbox.clone(),
            attachments: link.attachments.clone(),
            playback: audio.playback(),
            capture: audio.capture(),
            board,
            incoming: incoming_rx,
            fetcher: crate::media::fetch::MediaFetcher::new(&tls_for_media)
                .map_err(|e| tracing::warn!(error = %e, "http(s) media playback unavailable"))
                .ok(),
        });

        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            auth_task.await;
            "auth"
        });
        let store = outbox_store.clone();
        let store_shutdown = shutdown.clone();
        tasks.spawn(async move {
            store.run(OUTBOX_WRITE_INTERVAL, store_shutdown).await;
            "outbox store"
        });
        tasks.spawn(async move {
            link_task.await;
            "link"
        });
        let mut attention = dialog.attention.clone();
        let idle_shutdown = shutdown.clone();
        tasks.spawn(async move {
            loop {
                idle_tx.send_replace(*attention.borrow_and_update() == Attention::Idle);
                tokio::select! {
                    () = idle_shutdown.cancelled() => break,
                    changed = attention.changed() => if changed.is_err() {
                        // The dialog core is gone; its own task end is what gets reported.
                        idle_shutdown.cancelled().await;
                        break;
                    },
                }
            }
            "dialog-idle"
        });
        let core_shutdown = shutdown.clone();
        tasks.spawn(async move {
            core.run(core_shutdown).await;
            "dialog"
        });
        let socket = config.control_socket.clone();
        let (d, l, s) = (dialog.clone(), link.state.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = control::serve(&socket, d, l, s).await {
                tracing::error!(error = %e, "control socket unavailable");
            }
            "control"
        });
        if let Some(buttons) = config.buttons.clone() {
            let press_and_hold = config.dialog.initiator == "PRESS_AND_HOLD";
            let (d, s) = (dialog.clone(), shutdown.clone());
            tasks.spawn(async move {
                crate::hw::buttons::run(buttons, press_and_hold, d, s).await;
                "buttons"
            });
        }
        if config.leds != crate::hw::leds::LedsConfig::None {
            let leds = config.leds.clone();
            let (d, l, s) = (dialog.clone(), link.state.clone(), shutdown.clone());
            tasks.spawn(async move {
                crate::hw::leds::run(leds, d, l, s).await;
                "leds"
            });
        }
        Ok(Self {
            config,
            dialog,
            link: link.state,
            tasks,
            shutdown,
            outbox_store,
            audio,
        })
    }

    /// Audio device facts and counters (granted rates, periods, underruns).
    pub fn audio_stats(&self) -> crate::audio::AudioStats {
        self.audio.stats()
    }

    /// Reports to systemd and supervises until shutdown; then joins the tasks (5 s at most).
    pub async fn supervise(mut self) -> Result<(), DaemonError> {
        service::ready(&control::link_name(&self.link.borrow()));
        let mut watchdog = service::watchdog_interval().map(tokio::time::interval);
        let mut result = Ok(());
        loop {
            let tick = async {
                match watchdog.as_mut() {
                    Some(w) => {
                        w.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                changed = self.link.changed() => {
                    if changed.is_ok() {
                        let state = control::link_name(&self.link.borrow());
                        tracing::info!(link = %state, "link");
                        service::status(&state);
                    }
                }
                joined = self.tasks.join_next() => {
                    let name = match joined {
                        Some(Ok(name)) => name.to_owned(),
                        Some(Err(e)) => format!("panicked: {e}"),
                        None => "all".to_owned(),
                    };
                    if !self.shutdown.is_cancelled() {
                        tracing::error!(task = %name, "task stopped: shutting down so systemd restarts us");
                        result = Err(DaemonError::TaskDied(name));
                        self.shutdown.cancel();
                    }
                    break;
                }
                // Only reached while every task is alive: a dead one ends the loop above.
                () = tick => service::watchdog(),
            }
        }
        service::stopping();
        self.shutdown.cancel();
        let join_all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), join_all)
            .await
            .is_err()
        {
            tracing::warn!("tasks did not stop within 5 s; leaving anyway");
            self.tasks.abort_all();
        }
        match self.outbox_store.save_now() {
            Ok(()) => tracing::info!(
                queued = self.outbox_store.queued_len(),
                "unsent events kept for the next start"
            ),
            Err(e) => tracing::error!(error = %e, "unsent events could not be kept"),
        }
        result
    }
}
