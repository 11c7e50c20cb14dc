//! avs-sim: a local Alexa Voice Service cloud for offline device development and tests.
//!
//! [`serve`] takes a bound listener, a [`SimConfig`] and a cancellation token (mini-redis'
//! shape: the caller owns the lifetime) and returns a [`SimHandle`] with the URL, the CA and
//! the in-process recorder and admin handles.
//!
//! Layout (each module says what it owns):
//! - `server`: accept loop, TLS, ALPN dispatch (raw h2 for AVS, hyper http/1.1 for the rest).
//! - `tls`: the CA and leaf made at start, the rustls server config.
//! - `gateway`: the AVS HTTP/2 surface (downchannel, events, Recognize, ping, faults).
//! - `router`: non-AVS paths shared by both HTTP versions (LWA, `/v1/directives`, media, admin).
//! - `lwa`: the Login with Amazon stub (code-based linking, refresh, token checks).
//! - `admin`: approving codes, pushing directives, injecting faults, reading the recorder.
//! - `recorder`: every request and event with timing, Recognize audio as WAV.
//! - `scenario`: the scenario file (turns as data); `turn`: playing a turn into a response.
//! - `speech`: text or SSML to real MP3 speech (espeak-ng when installed, else a synthetic voice).
//! - `vad`: energy-based end-of-speech detection on streamed Recognize audio.
//! - `skill`: hosting a real Alexa skill web service behind a turn.
//! - `progressive`: the skill-side Progressive Response API (`POST /v1/directives`).
//! - `media`: what `/media/` serves (plain files, ICY radio streams) and ID3v2 tag building.
//! - `relay`: a restartable TCP relay in front of the sim, for tests and benches of outages.

pub mod admin;
pub mod gateway;
pub mod lwa;
pub mod media;
pub mod progressive;
pub mod recorder;
pub mod relay;
pub mod router;
pub mod scenario;
mod server;
pub mod skill;
pub mod speech;
pub mod tls;
pub mod turn;
pub mod vad;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use admin::Admin;
pub use gateway::faults::Fault;
pub use recorder::{Record, RecordedEvent, Recorder};
pub use scenario::Scenario;

/// How many `/media/` items (AudioPlayer.Play URLs) the sim keeps.
const MEDIA_KEPT: usize = 64;

/// Everything the sim can be told at start.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub lwa: lwa::LwaConfig,
    pub scenario: Scenario,
    /// Answer turns from this skill web service (when the turn has no speech of its own).
    pub skill_endpoint: Option<url::Url>,
    /// Where the CA PEM and Recognize WAVs go; a fresh temp directory when `None`.
    pub state_dir: Option<PathBuf>,
    /// Send StopCapture on the Recognize's own stream instead of the downchannel.
    pub stop_capture_on_event_stream: bool,
    /// Audio after which an end of speech is forced if the VAD found none.
    pub max_recognize_audio: Duration,
    /// Locale passed to skills.
    pub locale: String,
    /// Write each attachment before the directive that references it (legal, and a test of
    /// the device's reader) instead of right after it.
    pub attachments_first: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            lwa: lwa::LwaConfig::default(),
            scenario: Scenario::default(),
            skill_endpoint: None,
            state_dir: None,
            stop_capture_on_event_stream: false,
            max_recognize_audio: Duration::from_secs(10),
            locale: "en-US".to_owned(),
            attachments_first: false,
        }
    }
}

/// Why the sim could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("the listener has no local address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("creating the state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the base URL failed: {0}")]
    Url(#[from] url::ParseError),
}

/// State shared by every connection and stream.
pub struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) base_url: url::Url,
    pub(crate) lwa: lwa::Lwa,
    pub(crate) recorder: Recorder,
    pub(crate) faults: gateway::faults::FaultState,
    pub(crate) devices: gateway::DeviceRegistry,
    pub(crate) discovery: gateway::discovery::DiscoveryState,
    pub(crate) live: progressive::LiveRequests,
    pub(crate) state_dir: PathBuf,
    pub(crate) shutdown: CancellationToken,
    media: Mutex<VecDeque<(String, media::Media)>>,
    turns: AtomicUsize,
}

impl Shared {
    /// Index of the next turn to play.
    pub(crate) fn next_turn(&self) -> usize {
        self.turns.fetch_add(1, Ordering::SeqCst)
    }

    /// Keeps `mp3` for `GET /media/<id>`; only the newest [`MEDIA_KEPT`] items stay.
    pub(crate) fn put_media(&self, id: String, mp3: Bytes) {
        self.put_media_item(id, media::Media::Plain(mp3));
    }

    pub(crate) fn put_media_item(&self, id: String, item: media::Media) {
        let mut media = self.media.lock().unwrap_or_else(|p| p.into_inner());
        media.retain(|(i, _)| *i != id);
        media.push_back((id, item));
        while media.len() > MEDIA_KEPT {
            media.pop_front();
        }
    }

    pub(crate) fn media(&self, id: &str) -> Option<media::Media> {
        self.media
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, m)| m.clone())
    }
}

/// A running sim.
pub struct SimHandle {
    /// `https://127.0.0.1:<port>/`.
    pub url: url::Url,
    /// The CA certificate (PEM) clients must trust.
    pub ca_pem: PathBuf,
    pub state_dir: PathBuf,
    pub recorder: Recorder,
    pub admin: Admin,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    /// Listeners added with [`SimHandle::listen_also`].
    extra: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// Serves the same sim (CA, tokens, devices, recorder) on a second listener too, e.g. as
    /// the gateway a `SetGateway` moves devices to; returns its base URL. Records made on its
    /// connections carry its `host:port` in [`Record::listener`].
    pub fn listen_also(&mut self, listener: TcpListener) -> Result<url::Url, SimError> {
        let addr = listener.local_addr().map_err(SimError::LocalAddr)?;
        let url = url::Url::parse(&format!("https://{}:{}/", addr.ip(), addr.port()))?;
        self.extra.push(tokio::spawn(server::run(
            listener,
            self.shared.clone(),
            self.acceptor.clone(),
        )));
        tracing::info!(%url, "avs-sim also listening");
        Ok(url)
    }

    /// Waits until the server has stopped (after the shutdown token is cancelled).
    pub async fn join(self) {
        for task in std::iter::once(self.task).chain(self.extra) {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "sim task failed");
            }
        }
    }
}

/// Starts serving on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: CancellationToken,
) -> Result<SimHandle, SimError> {
    let addr = listener.local_addr().map_err(SimError::LocalAddr)?;
    let state_dir = match &config.state_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "avs-sim-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )),
    };
    std::fs::create_dir_all(&state_dir).map_err(|source| SimError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    let identity = tls::TlsIdentity::generate()?;
    let ca_pem = state_dir.join("ca.pem");
    identity.write_ca(&ca_pem)?;
    let url = url::Url::parse(&format!("https://{}:{}/", addr.ip(), addr.port()))?;
    let recorder = Recorder::new();
    let shared = Arc::new(Shared {
        lwa: lwa::Lwa::new(config.lwa.clone()),
        config,
        base_url: url.clone(),
        recorder: recorder.clone(),
        faults: Default::default(),
        devices: Default::default(),
        discovery: Default::default(),
        live: progressive::LiveRequests::new(),
        state_dir: state_dir.clone(),
        shutdown: shutdown.clone(),
        media: Mutex::new(VecDeque::new()),
        turns: AtomicUsize::new(0),
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config.clone());
    let task = tokio::spawn(server::run(listener, shared.clone(), acceptor.clone()));
    tracing::info!(%url, ca = %ca_pem.display(), "avs-sim listening");
    Ok(SimHandle {
        url,
        ca_pem,
        state_dir,
        recorder,
        admin: Admin::new(shared.clone()),
        task,
        shared,
        acceptor,
        extra: Vec::new(),
    })
}
