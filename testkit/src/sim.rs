//! Start an avs-sim on loopback for a test: binds `127.0.0.1:0`, runs [`avs_sim::serve`] with a
//! fresh CA in a temporary directory, and stops (and cleans up) when the [`TestSim`] drops.

use std::path::PathBuf;

use avs_sim::{Admin, Recorder, SimConfig};
use tokio_util::sync::CancellationToken;

use crate::h2client::H2Client;

/// The client id and product id test devices use.
pub const TEST_CLIENT_ID: &str = "amzn1.application-oa2-client.avs-sim-test";
pub const TEST_PRODUCT_ID: &str = "avs_sim_test_product";

/// A running sim owned by a test.
pub struct TestSim {
    pub url: url::Url,
    pub ca_pem: PathBuf,
    pub state_dir: PathBuf,
    pub recorder: Recorder,
    pub admin: Admin,
    shutdown: CancellationToken,
    handle: Option<avs_sim::SimHandle>,
    owns_state_dir: bool,
}

/// Starts a sim with `config` on a free loopback port.
pub async fn start_sim(config: SimConfig) -> anyhow::Result<TestSim> {
    let owns_state_dir = config.state_dir.is_none();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let handle = avs_sim::serve(listener, config, shutdown.clone()).await?;
    Ok(TestSim {
        url: handle.url.clone(),
        ca_pem: handle.ca_pem.clone(),
        state_dir: handle.state_dir.clone(),
        recorder: handle.recorder.clone(),
        admin: handle.admin.clone(),
        shutdown,
        handle: Some(handle),
        owns_state_dir,
    })
}

impl TestSim {
    /// A new HTTP/2 connection to the sim.
    pub async fn client(&self) -> anyhow::Result<H2Client> {
        H2Client::connect(&self.url, &self.ca_pem).await
    }

    /// Serves the same sim on a second free loopback port too; returns that listener's URL.
    pub async fn listen_also(&mut self) -> anyhow::Result<url::Url> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let handle = self
            .handle
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the sim has stopped"))?;
        Ok(handle.listen_also(listener)?)
    }

    /// The sim's loopback socket address (what a relay in front of it forwards to).
    pub fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        self.url
            .socket_addrs(|| None)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the sim's URL {} has no address", self.url))
    }

    /// An access token for device `serial`, without code-based linking.
    pub fn token(&self, serial: &str) -> String {
        self.admin
            .issue_token(TEST_CLIENT_ID, TEST_PRODUCT_ID, serial)
            .0
    }

    /// Stops the sim and waits until it has.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.join().await;
        }
    }
}

impl Drop for TestSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if self.owns_state_dir {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
    }
}
