//! Shared helpers of the `link_*` tests: an avs-sim on loopback, a TCP proxy in front of it that
//! can be stopped and restarted on the same port (the sim makes a fresh CA and token store at
//! every start, so "the cloud went away and came back" is modelled at the network level), and
//! waits with timeouts.
// Test helpers: a failed set-up step should fail the test loudly, like `unwrap` in a #[test].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use avs_sim::SimConfig;
use avs_testkit::sim::{TestSim, start_sim};
use avsd::auth::{AccessToken, AuthHandle, ManualAuth};
use avsd::transport::{Incoming, LinkConfig, LinkState, client_config};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
        let host = self.handle.url.host_str().unwrap();
        format!("{host}:{}", self.handle.url.port().unwrap())
            .parse()
            .unwrap()
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
}

/// A TCP relay on a fixed loopback port in front of `upstream`.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut p = Self {
            addr,
            upstream,
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        p.run(listener);
        p
    }

    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("https://{}/", self.addr)).unwrap()
    }

    fn run(&mut self, listener: TcpListener) {
        let stop = self.stop.clone();
        let upstream = self.upstream;
        let tracker = self.tracker.clone();
        self.tracker.spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                let stop = stop.clone();
                tracker.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
    }

    /// Closes the listener and cuts every relayed connection.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) {
        self.stop = CancellationToken::new();
        self.tracker = TaskTracker::new();
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.run(listener);
    }
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
