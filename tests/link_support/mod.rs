//! Shared helpers of the `link_*` tests: an avs-sim on loopback, a link spawned against it
//! (directly or through avs-sim's restartable TCP relay, which models "the cloud went away and
//! came back" at the network level), faults, and waits with timeouts.
// Test helpers: a failed set-up step should fail the test loudly, like `unwrap` in a #[test].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use avs_sim::relay::Relay;
use avs_sim::{Fault, SimConfig};
use avs_testkit::sim::{TestSim, start_sim};
use avsd::auth::{AccessToken, AuthHandle, ManualAuth};
use avsd::transport::{
    Attachments, Incoming, LinkConfig, LinkState, LinkTuning, Outbox, client_config,
    spawn_link_tuned,
};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const CLIENT_ID: &str = "amzn1.application-oa2-client.linktest";
pub const PRODUCT_ID: &str = "avsd-link-test";
pub const SERIAL: &str = "SN-LINK-1";
pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The testkit's sim plus what the link tests need from it.
pub struct Sim {
    pub handle: TestSim,
}

impl Sim {
    pub async fn start(config: SimConfig) -> Self {
        init_tracing();
        Self {
            handle: start_sim(config).await.unwrap(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.addr().unwrap()
    }

    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        client_config(Some(&self.handle.ca_pem)).unwrap()
    }

    /// A manual auth handle holding a token the sim issued.
    pub fn manual_auth(&self) -> (AuthHandle, ManualAuth) {
        AuthHandle::manual(Some(self.issue_token()))
    }

    pub fn issue_token(&self) -> AccessToken {
        let (access, _) = self.handle.admin.issue_token(CLIENT_ID, PRODUCT_ID, SERIAL);
        AccessToken::new(access)
    }

    pub fn link_config(&self, endpoint: &url::Url) -> LinkConfig {
        let mut cfg = LinkConfig::new(endpoint.clone(), self.tls());
        cfg.offline_queue_events = 16;
        cfg
    }

    pub async fn fault(&self, fault: &Fault) {
        self.handle.admin.fault(fault).await.unwrap();
    }

    /// Spawns a link with `cfg` and `tuning`, holding a token this sim issued.
    pub fn spawn_link(&self, cfg: LinkConfig, tuning: LinkTuning) -> TestLink {
        let (auth, manual) = self.manual_auth();
        let mut link = spawn_test_link(cfg, tuning, auth);
        link.manual = Some(manual);
        link
    }

    /// A link straight to the sim with `tuning`, once it is Connected.
    pub async fn connected_link_tuned(&self, tuning: LinkTuning) -> TestLink {
        let mut link = self.spawn_link(self.link_config(&self.handle.url), tuning);
        connected(&mut link.state).await;
        link
    }

    /// A link straight to the sim with default tuning, once it is Connected.
    pub async fn connected_link(&self) -> TestLink {
        self.connected_link_tuned(LinkTuning::default()).await
    }
}

/// A link spawned for a test, with the ends the test drives. Dropping it shuts the link down.
pub struct TestLink {
    pub outbox: Outbox,
    pub attachments: Attachments,
    pub state: watch::Receiver<LinkState>,
    pub incoming: mpsc::Receiver<Incoming>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
    /// Keeps the token channel of a manual auth open for the link's lifetime.
    manual: Option<ManualAuth>,
}

impl Drop for TestLink {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Spawns a link with `auth` and the test context; does not wait for it to connect.
pub fn spawn_test_link(cfg: LinkConfig, tuning: LinkTuning, auth: AuthHandle) -> TestLink {
    let (incoming_tx, incoming) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let (link, task) = spawn_link_tuned(
        cfg,
        tuning,
        auth,
        context_provider(),
        incoming_tx,
        shutdown.clone(),
    );
    TestLink {
        outbox: link.outbox,
        attachments: link.attachments,
        state: link.state,
        incoming,
        shutdown,
        task: tokio::spawn(task),
        manual: None,
    }
}

/// A relay in front of `upstream` (see [`Relay`]).
pub async fn start_relay(upstream: SocketAddr) -> Relay {
    Relay::start(upstream).await.unwrap()
}

/// Waits until the link state satisfies `pred`; returns it.
pub async fn wait_state(
    rx: &mut watch::Receiver<LinkState>,
    what: &str,
    pred: impl Fn(&LinkState) -> bool,
) -> LinkState {
    let r = tokio::time::timeout(WAIT, rx.wait_for(|s| pred(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match r {
        Ok(Ok(s)) => s,
        _ => panic!("link never reached {what}; last state {:?}", *rx.borrow()),
    }
}

pub async fn connected(rx: &mut watch::Receiver<LinkState>) {
    wait_state(rx, "Connected", |s| *s == LinkState::Connected).await;
}

/// Injects `fault` and waits for the link to leave Connected and come back.
pub async fn fault_and_reconnect(sim: &Sim, link: &TestLink, fault: &Fault) {
    let mut state = link.state.clone();
    state.borrow_and_update();
    sim.fault(fault).await;
    // The watch keeps only the latest state: on a loaded machine the link can be down and up
    // again before this task looks, so waiting to *see* a state other than Connected could
    // miss it. A connected link publishes nothing until it leaves Connected, so any change
    // means it did.
    tokio::time::timeout(WAIT, state.changed())
        .await
        .expect("the link never left Connected")
        .expect("link state");
    connected(&mut state).await;
}

/// The next incoming item, or a panic naming `what`.
pub async fn next_incoming(rx: &mut mpsc::Receiver<Incoming>, what: &str) -> Incoming {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(i)) => i,
        _ => panic!("no incoming item while waiting for {what}"),
    }
}

/// Skips incoming items until a directive named `Namespace.Name` arrives.
pub async fn next_directive(rx: &mut mpsc::Receiver<Incoming>, name: &str) -> avs_proto::Directive {
    loop {
        if let Incoming::Directive(d) = next_incoming(rx, name).await
            && d.qualified_name() == name
        {
            return d;
        }
    }
}

pub fn context_provider() -> avsd::transport::ContextProvider {
    Arc::new(|| vec![avs_proto::ContextEntry::volume_state(40, false)])
}

/// Waits until the outbox has nothing queued.
pub async fn outbox_drained(outbox: &avsd::transport::Outbox) {
    let wait = async {
        while outbox.queued_len() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .expect("outbox never drained");
}

pub fn event(name: &str, n: u32) -> avs_proto::Event {
    avs_proto::Event::raw("Speaker", name, json!({"volume": n, "muted": false}))
}

/// Sends `event(name, n)` through `outbox`; returns its message id.
pub fn send_event(outbox: &Outbox, name: &str, n: u32) -> String {
    let ev = event(name, n);
    let id = ev.header.message_id.clone();
    outbox.send(ev);
    id
}

/// Sends a `Speaker.VolumeChanged` and waits for the sim to record it: the link's current
/// connection carries events.
pub async fn carries_events(sim: &Sim, link: &TestLink, n: u32) {
    let mark = sim.handle.recorder.len();
    link.outbox.send(event("VolumeChanged", n));
    sim.handle
        .recorder
        .wait_for_event_after(mark, "Speaker.VolumeChanged", WAIT)
        .await
        .unwrap();
}

/// Waits, from record `from` on, for the sim to accept (204) the event with message id `id`.
pub async fn accepted(sim: &Sim, from: usize, id: &str) -> avs_sim::Record {
    sim.handle
        .recorder
        .wait_for(from, WAIT, "accepted event", |r| {
            r.event.as_ref().is_some_and(|e| e.message_id == id) && r.status == Some(204)
        })
        .await
        .unwrap()
}

/// The recorded events named `name`, as (message id, status).
pub fn recorded(sim: &Sim, name: &str) -> Vec<(String, Option<u16>)> {
    sim.handle
        .recorder
        .events(name)
        .into_iter()
        .map(|r| (r.event.map(|e| e.message_id).unwrap_or_default(), r.status))
        .collect()
}

/// Statuses of the event posts recorded from `mark` on (failed attempts carry no event: the
/// sim answers an injected fault before parsing the body).
pub fn event_statuses_since(sim: &Sim, mark: usize) -> Vec<Option<u16>> {
    sim.handle
        .recorder
        .records()
        .into_iter()
        .skip(mark)
        .filter(|r| r.path == avs_proto::EVENTS_PATH)
        .map(|r| r.status)
        .collect()
}

pub fn count_downchannels(sim: &Sim) -> usize {
    sim.handle
        .recorder
        .records()
        .iter()
        .filter(|r| r.path == avs_proto::DIRECTIVES_PATH && r.status == Some(200))
        .count()
}

/// Starts a TAP Recognize fed with a 440 Hz burst in real-time 10 ms chunks (through a channel
/// of two chunks, so the feeder cannot run ahead of the network) until it is aborted.
pub fn start_recognize(
    link: &TestLink,
) -> (
    String,
    avsd::transport::RecognizeHandle,
    tokio::task::JoinHandle<()>,
) {
    let dialog = avs_proto::new_message_id();
    let recognize = avs_proto::Event::raw(
        "SpeechRecognizer",
        "Recognize",
        json!({"profile": "NEAR_FIELD", "format": avs_proto::AUDIO_FORMAT_L16, "initiator": {"type": "TAP", "payload": {}}}),
    )
    .with_dialog(Some(dialog.clone()))
    .with_context(context_provider()());
    let (audio_tx, audio_rx) = mpsc::channel::<Bytes>(2);
    let handle = link.outbox.send_recognize(recognize, audio_rx).unwrap();
    let feeder = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        for i in 0..500u32 {
            interval.tick().await;
            let chunk: Vec<u8> = (0..160u32)
                .flat_map(|s| {
                    // 300 ms of silence, an 800 ms "utterance", then silence for the
                    // end-of-speech detector to find.
                    let amplitude = if (30..110).contains(&i) { 8000.0 } else { 0.0 };
                    let t = (i * 160 + s) as f32 / 16000.0;
                    (((t * 440.0 * std::f32::consts::TAU).sin() * amplitude) as i16).to_le_bytes()
                })
                .collect();
            if audio_tx.send(Bytes::from(chunk)).await.is_err() {
                break;
            }
        }
    });
    (dialog, handle, feeder)
}
