//! A TCP relay on a fixed loopback port in front of a running sim. Stopping it closes the
//! listener and cuts every relayed connection; restarting listens again on the same port. This
//! models "the cloud went away and came back" at the network level (a real sim restart makes a
//! fresh CA and token store, which a device could not reconnect through). Used by the tests and
//! the link bench; the sim itself never starts one.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A restartable TCP relay from `addr` to an upstream address.
pub struct Relay {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Relay {
    /// Binds `127.0.0.1:0` and starts relaying to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut relay = Self {
            addr: listener.local_addr()?,
            upstream,
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        };
        relay.run(listener);
        Ok(relay)
    }

    /// `https://<addr>/`: the endpoint a device uses to reach the sim through the relay.
    pub fn url(&self) -> Result<url::Url, url::ParseError> {
        url::Url::parse(&format!("https://{}/", self.addr))
    }

    fn run(&mut self, listener: TcpListener) {
        let (stop, upstream, tracker) = (self.stop.clone(), self.upstream, self.tracker.clone());
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
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop = CancellationToken::new();
        self.tracker = TaskTracker::new();
        let listener = TcpListener::bind(self.addr).await?;
        self.run(listener);
        Ok(())
    }
}
