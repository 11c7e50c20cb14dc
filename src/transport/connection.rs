//! The link supervisor and one connection's life.
//!
//! [`LinkTask`] loops: wait for a token, respect the reconnect policy (backoff after failures,
//! rate limit on attempts), connect (TCP, TLS with ALPN h2, HTTP/2 handshake), run the
//! connection until it dies, and publish [`LinkState`] on the way. One connection runs the h2
//! connection driver (its end: TCP/TLS error, or the server closed after GOAWAY) and, in a
//! `JoinSet` that dies with it:
//! - the downchannel reader, opened first (its end or reset: a server-side disconnect);
//! - the event sender: VerifyGateway and the capabilities report when due (`post_connect`),
//!   `System.SynchronizeState` with the full context, then the outbox in order (its `GOAWAY`
//!   error: hand over to a new connection);
//! - the ping loop (a late or wrong answer: the link is dead);
//! - one task per `Recognize`.
//!
//! The connection counts as CONNECTED once the downchannel is up and SynchronizeState was
//! accepted; only then is the backoff reset and `Recognize` allowed. A move to another gateway
//! (SetGateway / SetEndpoint, see `gateway`) is persisted at once and carried out once no
//! dialog is active (no Recognize stream open, attention IDLE for 2 s): this connection
//! closes cleanly and the next one goes to the new gateway at once, without backoff. On shutdown every stream is
//! dropped first so h2 closes with GOAWAY and TLS close_notify rather than a bare TCP close.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use avs_proto::Event;
use bytes::Bytes;
use h2::client::SendRequest;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use url::Url;

use super::backoff::{ReconnectPolicy, random_unit};
use super::downchannel::{self, BodyError, DownchannelError};
use super::events::{self, Delivery, StreamError};
use super::gateway::{GatewayStore, LinkDirective, MoveSource, parse_gateway};
use super::outbox::Outbox;
use super::ping::{PingError, ping_loop};
use super::post_connect::Plan;
use super::{Attachments, ContextProvider, Incoming, LinkConfig, LinkState, LinkTuning};
use crate::auth::{AccessToken, AuthHandle, AuthState};

/// HTTP/2 receive windows: large enough for TTS attachments to flow at full speed on a Pi's
/// link, small enough to bound what one connection can make us buffer.
const STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;

/// When the connection last carried traffic (for the idle ping).
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    pub(crate) fn touch(&self) {
        self.last_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// What every task of one connection shares.
#[derive(Clone)]
pub(crate) struct LinkCtx {
    /// `https://host[:port]`, prefixed to every request path.
    pub origin: Arc<str>,
    pub auth: AuthHandle,
    pub incoming: mpsc::Sender<Incoming>,
    pub attachments: Attachments,
    pub activity: Arc<Activity>,
    pub tuning: Arc<LinkTuning>,
    pub ping_idle: Duration,
    pub ping_timeout: Duration,
    /// Where the directives the link handles itself go (`None`: they go to `incoming`).
    pub control: Option<mpsc::Sender<LinkDirective>>,
}

/// The current token, waiting while there is none.
pub(crate) async fn wait_for_token(rx: &mut watch::Receiver<Option<AccessToken>>) -> AccessToken {
    loop {
        if let Some(t) = rx.borrow_and_update().clone() {
            return t;
        }
        if rx.changed().await.is_err() {
            // The auth task is gone and left no token: only shutdown ends this wait.
            std::future::pending::<()>().await;
        }
    }
}

/// Waits up to `timeout` for a token different from `old`; false on timeout.
pub(crate) async fn wait_for_new_token(
    rx: &mut watch::Receiver<Option<AccessToken>>,
    old: &AccessToken,
    timeout: Duration,
) -> bool {
    let wait = async {
        loop {
            if rx.borrow_and_update().as_ref().is_some_and(|t| t != old) {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.is_ok()
}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("endpoint {0} has no host")]
    NoHost(String),
    #[error("TCP connect to {addr} failed: {source}")]
    Tcp {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} did not negotiate HTTP/2 (ALPN h2)")]
    NoH2(String),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[source] h2::Error),
    #[error("connection setup took longer than {0:?}")]
    Timeout(Duration),
}

type H2Connection = h2::client::Connection<tokio_rustls::client::TlsStream<TcpStream>, Bytes>;

/// TCP, then TLS with ALPN h2, to `endpoint`: the stream and the host it was made to.
/// `selftest` uses it too, so the device and its self-check connect the same way.
pub(crate) async fn connect_tls(
    endpoint: &Url,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, String), ConnectError> {
    let server_name: ServerName<'static> = match endpoint.host() {
        Some(url::Host::Domain(d)) => ServerName::try_from(d.to_owned())
            .map_err(|_| ConnectError::NoHost(endpoint.to_string()))?,
        Some(url::Host::Ipv4(ip)) => ServerName::IpAddress(std::net::IpAddr::V4(ip).into()),
        Some(url::Host::Ipv6(ip)) => ServerName::IpAddress(std::net::IpAddr::V6(ip).into()),
        None => return Err(ConnectError::NoHost(endpoint.to_string())),
    };
    let host = endpoint
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = endpoint.port_or_known_default().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| ConnectError::Tcp {
            addr: format!("{host}:{port}"),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let tls_stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|source| ConnectError::Tls {
            host: host.clone(),
            source,
        })?;
    if tls_stream.get_ref().1.alpn_protocol() != Some(super::tls::ALPN_H2) {
        return Err(ConnectError::NoH2(host));
    }
    Ok((tls_stream, host))
}

async fn connect(
    endpoint: &Url,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(SendRequest<Bytes>, H2Connection), ConnectError> {
    let (tls_stream, _) = connect_tls(endpoint, tls).await?;
    h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .handshake(tls_stream)
        .await
        .map_err(ConnectError::Handshake)
}

/// How a task of the connection ended.
enum TaskEnd {
    ConnectionClosed,
    ConnectionFailed(h2::Error),
    DownchannelEnded(Result<(), BodyError>),
    Sender(StreamError),
    Ping(PingError),
    RecognizeDone,
}

/// How a connection ended.
enum SessionEnd {
    Shutdown,
    /// The server handed us over (GOAWAY) after we were connected: reconnect at once.
    Handover(String),
    /// AVS moved the device to another gateway: connect there at once.
    Moved,
    /// Anything else: reconnect after the backoff.
    Failed(String),
}

/// The link supervisor (see the module docs).
pub(crate) struct LinkTask {
    cfg: LinkConfig,
    tuning: Arc<LinkTuning>,
    auth: AuthHandle,
    context: ContextProvider,
    incoming: mpsc::Sender<Incoming>,
    outbox: Outbox,
    attachments: Attachments,
    state: watch::Sender<LinkState>,
    policy: ReconnectPolicy,
    /// The gateway to connect to, when the link manages it (`cfg.post_connect`).
    gateway: Option<GatewayStore>,
}

impl LinkTask {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: LinkConfig,
        tuning: LinkTuning,
        auth: AuthHandle,
        context: ContextProvider,
        incoming: mpsc::Sender<Incoming>,
        outbox: Outbox,
        attachments: Attachments,
        state: watch::Sender<LinkState>,
    ) -> Self {
        let policy = ReconnectPolicy::new(
            tuning.reconnect_table,
            tuning.rate_limit_window,
            tuning.rate_limit_attempts,
        );
        let gateway = cfg
            .post_connect
            .as_ref()
            .map(|p| GatewayStore::load(&p.state_dir, cfg.endpoint.clone()));
        Self {
            gateway,
            cfg,
            tuning: Arc::new(tuning),
            auth,
            context,
            incoming,
            outbox,
            attachments,
            state,
            policy,
        }
    }

    fn publish(&self, state: LinkState) {
        self.state.send_if_modified(|s| {
            if *s == state {
                false
            } else {
                debug!(?state, "link state");
                *s = state;
                true
            }
        });
    }

    async fn pause(&self, delay: Duration, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut token_rx = self.auth.access_token();
        let mut auth_state = self.auth.state();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if token_rx.borrow_and_update().is_none() {
                let needs_login = *auth_state.borrow_and_update() == AuthState::NeedsLogin;
                self.publish(if needs_login {
                    LinkState::NeedsLogin
                } else {
                    LinkState::Disconnected
                });
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = token_rx.changed() => if r.is_err() { shutdown.cancelled().await; break },
                    r = auth_state.changed() => if r.is_err() { shutdown.cancelled().await; break },
                }
                continue;
            }
            let wait = self.policy.before_attempt(std::time::Instant::now());
            if !wait.is_zero() {
                info!(?wait, "connection attempts rate-limited; waiting");
                self.publish(LinkState::WaitingToRetry {
                    attempt: 0,
                    delay: wait,
                });
                if !self.pause(wait, &shutdown).await {
                    break;
                }
            }
            self.policy.on_attempt(std::time::Instant::now());
            self.publish(LinkState::Connecting);
            match self.session(&shutdown).await {
                SessionEnd::Shutdown => break,
                SessionEnd::Handover(reason) => {
                    info!(%reason, "server handed the connection over; reconnecting");
                    self.publish(LinkState::Disconnected);
                }
                SessionEnd::Moved => {
                    info!(gateway = %self.endpoint(), "connecting to the gateway AVS assigned");
                    self.publish(LinkState::Disconnected);
                }
                SessionEnd::Failed(reason) => {
                    let (attempt, delay) = self
                        .policy
                        .on_failure(std::time::Instant::now(), random_unit());
                    warn!(%reason, attempt, ?delay, "AVS connection lost or refused; retrying after a delay");
                    self.publish(LinkState::WaitingToRetry { attempt, delay });
                    if !self.pause(delay, &shutdown).await {
                        break;
                    }
                }
            }
        }
        self.outbox.set_session(None);
        self.publish(LinkState::Disconnected);
    }

    /// The gateway connections go to.
    fn endpoint(&self) -> Url {
        self.gateway
            .as_ref()
            .map_or_else(|| self.cfg.endpoint.clone(), |g| g.current().clone())
    }

    /// A SetGateway / SetEndpoint: `Some(gateway)` when the link must move there. A URL that is
    /// not plain https is answered with ExceptionEncountered and the connection stays.
    fn on_move(&mut self, source: MoveSource, url: &str, raw: &str) -> Option<Url> {
        let store = self.gateway.as_mut()?;
        let gateway = match parse_gateway(url) {
            Ok(g) => g,
            Err(e) => {
                warn!(?source, error = %e, "gateway change refused");
                let event = Event::new(
                    avs_proto::interfaces::system::NAMESPACE,
                    &avs_proto::interfaces::system::Event::ExceptionEncountered(
                        avs_proto::interfaces::system::ExceptionEncountered {
                            unparsed_directive: raw.to_owned(),
                            error: avs_proto::interfaces::system::ExceptionError {
                                kind: avs_proto::ExceptionType::UnexpectedInformationReceived
                                    .as_str()
                                    .to_owned(),
                                message: e.to_string(),
                            },
                        },
                    ),
                )
                .with_context(Vec::new());
                self.outbox.send(event);
                return None;
            }
        };
        match store.move_to(gateway.clone()) {
            Ok(false) => {
                info!(?source, %gateway, "already connected to this gateway");
                None
            }
            Ok(true) => {
                info!(?source, %gateway, "AVS moved this device; reconnecting once no dialog is active");
                Some(gateway)
            }
            Err(e) => {
                // Moving still works for this run; only a restart would forget it.
                warn!(?source, %gateway, error = %e, "new gateway not persisted; moving anyway");
                Some(gateway)
            }
        }
    }

    async fn session(&mut self, shutdown: &CancellationToken) -> SessionEnd {
        let mut token_rx = self.auth.access_token();
        let Some(token) = token_rx.borrow_and_update().clone() else {
            return SessionEnd::Failed("no access token".into());
        };
        let started = Instant::now();
        let endpoint = self.endpoint();
        let connecting = tokio::time::timeout(
            self.tuning.connect_timeout,
            connect(&endpoint, self.cfg.tls.clone()),
        );
        let (mut send, conn) = tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            r = connecting => match r {
                Err(_) => return SessionEnd::Failed(ConnectError::Timeout(self.tuning.connect_timeout).to_string()),
                Ok(Err(e)) => return SessionEnd::Failed(e.to_string()),
                Ok(Ok(c)) => c,
            },
        };
        let (control_tx, mut control_rx) = mpsc::channel(8);
        let (processed_tx, processed_rx) = mpsc::channel(8);
        let (verified_tx, mut verified_rx) = mpsc::channel(2);
        let plan = match (&self.cfg.post_connect, &self.gateway) {
            (Some(cfg), Some(store)) => Plan::for_connection(
                cfg,
                store,
                processed_rx,
                verified_tx,
                self.tuning.discovery_retry_table,
                self.tuning.discovery_wait,
            ),
            _ => Plan::none(),
        };
        let mut dialog_idle = self
            .cfg
            .post_connect
            .as_ref()
            .and_then(|p| p.dialog_idle.clone());
        let mut moving: Option<Url> = None;
        // Recognize streams still open on this connection (a move waits for them too).
        let mut recognizing = 0usize;
        let ctx = LinkCtx {
            control: self.gateway.is_some().then_some(control_tx),
            origin: Arc::from(endpoint.origin().ascii_serialization()),
            auth: self.auth.clone(),
            incoming: self.incoming.clone(),
            attachments: self.attachments.clone(),
            activity: Activity::new(),
            tuning: self.tuning.clone(),
            ping_idle: self.cfg.ping_idle,
            ping_timeout: self.cfg.ping_timeout,
        };
        let mut driver = Driver(tokio::spawn(conn));
        let mut driver_done = false;
        let mut tasks = JoinSet::new();

        let opened = tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            r = downchannel::open(&ctx, &mut send, &token) => r,
        };
        let downchannel = match opened {
            Ok(resp) => resp,
            Err(DownchannelError::Forbidden) => {
                info!("downchannel refused with 403; refreshing the token before reconnecting");
                self.auth.refresh_now();
                let renewed = tokio::select! {
                    _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                    r = wait_for_new_token(&mut token_rx, &token, self.tuning.token_wait) => r,
                };
                if !renewed {
                    warn!("no new token after a downchannel 403");
                }
                return SessionEnd::Failed("downchannel refused with 403".into());
            }
            Err(e) => return SessionEnd::Failed(e.to_string()),
        };
        info!(elapsed = ?started.elapsed(), "downchannel open");
        let dc_ctx = ctx.clone();
        tasks.spawn(async move {
            TaskEnd::DownchannelEnded(
                downchannel::read_parts(&dc_ctx, downchannel, "downchannel").await,
            )
        });
        let (connected_tx, mut connected_rx) = oneshot::channel();
        tasks.spawn(sender_loop(
            ctx.clone(),
            send.clone(),
            self.context.clone(),
            self.outbox.clone(),
            connected_tx,
            plan,
        ));
        let (ping_ctx, ping_send) = (ctx.clone(), send.clone());
        tasks.spawn(async move { TaskEnd::Ping(ping_loop(ping_ctx, ping_send).await) });

        let (recognize_tx, mut recognize_rx) = mpsc::channel(4);
        let mut connected = false;
        let mut awaiting_connected = true;
        let end = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break SessionEnd::Shutdown,
                r = &mut connected_rx, if awaiting_connected => {
                    awaiting_connected = false;
                    if r.is_ok() {
                        connected = true;
                        self.policy.on_connected();
                        self.outbox.set_session(Some(recognize_tx.clone()));
                        self.publish(LinkState::Connected);
                        info!(elapsed = ?started.elapsed(), "connected to AVS");
                    }
                }
                Some(own) = control_rx.recv() => match own {
                    LinkDirective::EventProcessed(token) => {
                        let _ = processed_tx.try_send(token);
                    }
                    LinkDirective::Move { source, url, raw } => {
                        if let Some(gateway) = self.on_move(source, &url, &raw) {
                            moving = Some(gateway);
                        }
                    }
                },
                Some((gateway, account)) = verified_rx.recv() => {
                    if let Some(store) = self.gateway.as_mut()
                        && let Err(e) = store.verified(&gateway, &account)
                    {
                        warn!(error = %e, "gateway verification not persisted; it will be repeated");
                    }
                }
                () = dialog_ended(&mut dialog_idle, MOVE_SETTLE), if moving.is_some() && recognizing == 0 => {
                    break SessionEnd::Moved;
                }
                Some(req) = recognize_rx.recv() => {
                    recognizing += 1;
                    let (c, s, outbox) = (ctx.clone(), send.clone(), self.outbox.clone());
                    tasks.spawn(async move {
                        // The audio waits in the capture queue meanwhile (about 1 s of room).
                        if !outbox.wait_sent(&req.after, RECOGNIZE_ORDER_WAIT).await {
                            warn!("earlier events still unsent after {RECOGNIZE_ORDER_WAIT:?}; the Recognize goes first");
                        }
                        events::recognize(c, s, req).await;
                        TaskEnd::RecognizeDone
                    });
                }
                Some(joined) = tasks.join_next() => match joined {
                    Ok(TaskEnd::RecognizeDone) => recognizing = recognizing.saturating_sub(1),
                    Ok(end) => break session_end(end, connected),
                    Err(e) => break SessionEnd::Failed(format!("connection task failed: {e}")),
                },
                r = &mut driver.0 => {
                    driver_done = true;
                    let end = match r {
                        Ok(Ok(())) => TaskEnd::ConnectionClosed,
                        Ok(Err(e)) => TaskEnd::ConnectionFailed(e),
                        Err(e) => break SessionEnd::Failed(format!("connection task failed: {e}")),
                    };
                    break session_end(end, connected);
                }
            }
        };
        self.outbox.set_session(None);
        // Every stream and request handle goes first, so that on shutdown h2 can close the
        // connection with GOAWAY instead of a bare TCP close.
        tasks.shutdown().await;
        drop(send);
        if matches!(end, SessionEnd::Shutdown | SessionEnd::Moved) && !driver_done {
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut driver.0).await;
        }
        end
    }
}

/// How long a Recognize waits for the events queued before it to be accepted, so the cloud sees
/// them in the device's order (typically one round trip; the mic keeps about 1 s meanwhile).
const RECOGNIZE_ORDER_WAIT: Duration = Duration::from_millis(500);

/// How long the dialog must stay idle before a gateway move: attention passes through IDLE
/// between a Recognize response's end and its speech starting.
const MOVE_SETTLE: Duration = Duration::from_secs(2);

/// Returns once no dialog is active and has not been for `settle` (at once without a dialog to
/// watch).
async fn dialog_ended(idle: &mut Option<watch::Receiver<bool>>, settle: Duration) {
    let Some(rx) = idle else { return };
    loop {
        // A closed channel means the dialog core is gone: nothing to wait for.
        if rx.wait_for(|idle| *idle).await.is_err() {
            return;
        }
        match tokio::time::timeout(settle, rx.wait_for(|idle| !*idle)).await {
            Err(_) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// How long a shutdown waits for the connection to close cleanly.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The h2 connection driver; aborted when the connection's life ends, however it ends.
struct Driver(tokio::task::JoinHandle<Result<(), h2::Error>>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn session_end(end: TaskEnd, connected: bool) -> SessionEnd {
    match end {
        TaskEnd::ConnectionClosed if connected => {
            SessionEnd::Handover("the server closed the connection".into())
        }
        TaskEnd::ConnectionClosed => SessionEnd::Failed("the server closed the connection".into()),
        TaskEnd::ConnectionFailed(e) if e.is_go_away() && connected => {
            SessionEnd::Handover(format!("GOAWAY: {e}"))
        }
        TaskEnd::ConnectionFailed(e) => SessionEnd::Failed(format!("connection failed: {e}")),
        TaskEnd::DownchannelEnded(Ok(())) => SessionEnd::Failed("the downchannel ended".into()),
        TaskEnd::DownchannelEnded(Err(e)) => SessionEnd::Failed(format!("downchannel: {e}")),
        TaskEnd::Sender(e) if e.is_go_away() && connected => {
            SessionEnd::Handover(format!("GOAWAY: {e}"))
        }
        TaskEnd::Sender(e) => SessionEnd::Failed(format!("sending an event: {e}")),
        TaskEnd::Ping(e) => SessionEnd::Failed(e.to_string()),
        TaskEnd::RecognizeDone => SessionEnd::Failed("unexpected task end".into()),
    }
}

/// Post-connect (VerifyGateway and the capabilities report when due, SynchronizeState with the
/// full context), then the outbox in order.
async fn sender_loop(
    ctx: LinkCtx,
    send: SendRequest<Bytes>,
    context: ContextProvider,
    outbox: Outbox,
    connected: oneshot::Sender<()>,
    plan: Plan,
) -> TaskEnd {
    let mut bodies = JoinSet::new();
    if let Err(e) = plan.run(&ctx, &send, &mut bodies).await {
        return TaskEnd::Sender(e);
    }
    let sync = Event::raw("System", "SynchronizeState", json!({})).with_context(context());
    match events::deliver(&ctx, &send, &sync, &mut bodies).await {
        Ok(Delivery::Accepted) => {}
        Ok(Delivery::GivenUp) => warn!("SynchronizeState was refused; carrying on"),
        Err(e) => return TaskEnd::Sender(e),
    }
    let _ = connected.send(());
    loop {
        while bodies.try_join_next().is_some() {}
        let queued = outbox.shared.queued.notified();
        match outbox.front() {
            Some(event) => match events::deliver(&ctx, &send, &event, &mut bodies).await {
                Ok(_) => outbox.delivered(&event.header.message_id),
                Err(e) => return TaskEnd::Sender(e),
            },
            None => {
                tokio::select! {
                    _ = queued => {}
                    Some(_) = bodies.join_next() => {}
                }
            }
        }
    }
}
