//! The one HTTP/2 connection to AVS and everything that rides on it.
//!
//! Layout:
//! - [`tls`]: the rustls client configuration (ring, webpki roots + an explicit extra CA, ALPN h2).
//! - [`connection`]: the link supervisor (connect, post-connect, reconnect with backoff) and one
//!   connection's life (downchannel, event sender, ping, Recognize streams).
//! - [`downchannel`]: opening the downchannel and reading any `multipart/related` response into
//!   [`Incoming`] items and attachments, releasing HTTP/2 flow-control capacity as it goes.
//! - [`events`]: posting one event on its own stream with a streamed body and back-pressure.
//! - [`ping`]: `GET /ping` after idle time, with a deadline.
//! - [`gateway`]: the gateway to connect to (persisted when AVS moves the device) and the
//!   directives the link handles itself (SetGateway, SetEndpoint, EventProcessed).
//! - [`post_connect`]: VerifyGateway and the capabilities report (Alexa.Discovery).
//! - [`backoff`]: reconnect and retry delays as pure state machines.
//! - [`outbox`]: the [`Outbox`] handle and its ordered, bounded queue.
//! - [`attachments`]: binary parts by Content-ID, readable before or after they arrive.
//!
//! Not owned here: what directives mean (the integrator's sequencer and agents), the token (the
//! auth task; the link only asks it to refresh after a `403`).

pub mod attachments;
pub mod backoff;
pub mod connection;
pub mod downchannel;
pub mod events;
pub mod gateway;
pub mod outbox;
pub mod ping;
pub mod post_connect;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use url::Url;

pub use attachments::{AttachmentError, AttachmentReader, Attachments};
pub use outbox::{Outbox, RecognizeHandle, ResponseOutcome, SendError};
pub use post_connect::PostConnectConfig;
pub use tls::{TlsError, client_config};

/// Where and how to connect.
#[derive(Clone)]
pub struct LinkConfig {
    /// AVS base URL, e.g. `https://alexa.na.gateway.devices.a2z.com`.
    pub endpoint: Url,
    pub tls: Arc<rustls::ClientConfig>,
    /// Send `GET /ping` after this long without traffic (AVS: 5 min).
    pub ping_idle: Duration,
    /// Tear the connection down when a ping takes longer (AVS SDK: 15 s).
    pub ping_timeout: Duration,
    /// Events kept while offline before the oldest is dropped.
    pub offline_queue_events: usize,
    /// Gateway persistence and moves, VerifyGateway, capabilities publishing. `None`: always
    /// connect to `endpoint`, and leave SetGateway/SetEndpoint to whoever reads [`Incoming`].
    pub post_connect: Option<PostConnectConfig>,
}

impl LinkConfig {
    /// The AVS defaults for `endpoint`.
    pub fn new(endpoint: Url, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            endpoint,
            tls,
            ping_idle: Duration::from_secs(300),
            ping_timeout: Duration::from_secs(15),
            offline_queue_events: 64,
            post_connect: None,
        }
    }
}

/// Builds the full context for `System.SynchronizeState` (and anything else that needs it).
pub type ContextProvider = Arc<dyn Fn() -> Vec<avs_proto::ContextEntry> + Send + Sync>;

/// What arrived from AVS, in arrival order across every stream (downchannel and event
/// responses alike).
// Each Incoming is built once and moved once through a channel: boxing the big variant would
// add an allocation per directive for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Incoming {
    Directive(avs_proto::Directive),
    /// A JSON part that is not a valid directive (answer with ExceptionEncountered).
    Malformed(avs_proto::DirectiveError),
}

/// The link's state, for `avsd status` and systemd `STATUS=`.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkState {
    Disconnected,
    Connecting,
    Connected,
    WaitingToRetry { attempt: u32, delay: Duration },
    NeedsLogin,
}

/// Knobs that are not configuration but that tests and benches need to turn.
#[derive(Debug, Clone)]
pub struct LinkTuning {
    /// Reconnect delays after consecutive failures (jittered ×0.67…×1.5; the last one repeats).
    pub reconnect_table: &'static [Duration],
    /// At most `rate_limit_attempts` connection attempts within `rate_limit_window`.
    pub rate_limit_window: Duration,
    pub rate_limit_attempts: usize,
    /// Unread bytes kept per attachment before it is dropped.
    pub attachment_cap_bytes: usize,
    /// Size limits for response parts.
    pub part_limits: avs_proto::multipart::Limits,
    /// TCP + TLS + HTTP/2 handshake deadline.
    pub connect_timeout: Duration,
    /// Deadline for the downchannel's response headers (SDK: 60 s).
    pub downchannel_timeout: Duration,
    /// Deadline for an event's response headers once its body is sent.
    pub event_response_timeout: Duration,
    /// How long to wait for a new token after asking for a refresh.
    pub token_wait: Duration,
    /// Retries of an event answered 429/5xx before it is given up.
    pub event_retries: u32,
    /// How long a capabilities report waits for `Alexa.EventProcessed` (SDK: about 2 s).
    pub discovery_wait: Duration,
    /// Delays before an unconfirmed capabilities report is sent again.
    pub discovery_retry_table: &'static [Duration],
}

impl Default for LinkTuning {
    fn default() -> Self {
        Self {
            reconnect_table: backoff::RECONNECT_TABLE,
            rate_limit_window: Duration::from_secs(60),
            rate_limit_attempts: 12,
            attachment_cap_bytes: attachments::DEFAULT_CAP_BYTES,
            part_limits: avs_proto::multipart::Limits {
                json_part_bytes: 256 * 1024,
                binary_part_bytes: 64 * 1024 * 1024,
            },
            connect_timeout: Duration::from_secs(30),
            downchannel_timeout: Duration::from_secs(60),
            event_response_timeout: Duration::from_secs(30),
            token_wait: Duration::from_secs(30),
            event_retries: 6,
            discovery_wait: Duration::from_secs(2),
            discovery_retry_table: post_connect::DISCOVERY_RETRY_TABLE,
        }
    }
}

/// What the rest of avsd holds.
pub struct LinkHandle {
    pub outbox: Outbox,
    pub attachments: Attachments,
    pub state: watch::Receiver<LinkState>,
}

/// Starts the link with default tuning. Spawn the returned future; it ends on `shutdown`.
pub fn spawn_link(
    cfg: LinkConfig,
    auth: crate::auth::AuthHandle,
    context: ContextProvider,
    incoming: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
) -> (
    LinkHandle,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    spawn_link_tuned(
        cfg,
        LinkTuning::default(),
        auth,
        context,
        incoming,
        shutdown,
    )
}

/// [`spawn_link`] with explicit tuning.
pub fn spawn_link_tuned(
    cfg: LinkConfig,
    tuning: LinkTuning,
    auth: crate::auth::AuthHandle,
    context: ContextProvider,
    incoming: mpsc::Sender<Incoming>,
    shutdown: CancellationToken,
) -> (
    LinkHandle,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let outbox = Outbox::new(cfg.offline_queue_events);
    let attachments = Attachments::new(tuning.attachment_cap_bytes);
    let (state_tx, state) = watch::channel(LinkState::Disconnected);
    let task = connection::LinkTask::new(
        cfg,
        tuning,
        auth,
        context,
        incoming,
        outbox.clone(),
        attachments.clone(),
        state_tx,
    );
    (
        LinkHandle {
            outbox,
            attachments,
            state,
        },
        task.run(shutdown),
    )
}
