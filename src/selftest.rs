//! `avsd selftest` (hidden): smoke checks of a freshly built binary on its target, used by
//! `scripts/cross-check` to prove an aarch64 / armv7 build works under qemu-user before it is
//! packaged. It owns no daemon state and goes through the same library code the daemon uses:
//! `decode` runs a file through [`crate::audio::decode::decode_stream`] (symphonia), `connect`
//! makes the daemon's TLS configuration ([`crate::transport::tls::client_config`]: ring, ALPN h2)
//! do a handshake and one HTTP/2 `GET /ping`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use url::Url;

use crate::audio::decode::{DecodeError, decode_stream};
use crate::transport::tls::{TlsError, client_config};

/// Everything `connect` may take, TCP to response, under qemu on a loaded machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Args)]
pub struct SelftestArgs {
    #[command(subcommand)]
    pub check: Check,
}

#[derive(Debug, Subcommand)]
pub enum Check {
    /// Decode an audio file to the end; print frames, rate, channels, duration and level.
    Decode { file: PathBuf },
    /// TLS 1.3 + ALPN h2 handshake with an AVS endpoint (or avs-sim) and one `GET /ping`.
    Connect {
        /// Base URL, e.g. `https://127.0.0.1:8443`.
        #[arg(long)]
        endpoint: Url,
        /// Extra CA certificate (PEM) to trust, such as avs-sim's.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// A state directory holding `tokens.json` (after `avsd login`): the ping then carries
        /// the access token, and a linked device expects 204.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Fail unless the response has this HTTP status.
        #[arg(long)]
        expect_status: Option<u16>,
    },
}

/// Why a self-test failed.
#[derive(Debug, thiserror::Error)]
pub enum SelftestError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decoding {path} failed: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: DecodeError,
    },
    #[error("the decode thread failed: {0}")]
    Thread(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot read the tokens in {path}: {source}")]
    Tokens {
        path: PathBuf,
        #[source]
        source: crate::auth::token_store::TokenStoreError,
    },
    #[error("{0}")]
    Connect(#[from] crate::transport::connection::ConnectError),
    #[error("{host} negotiated {version}, not TLS 1.3")]
    NotTls13 { host: String, version: String },
    #[error("HTTP/2 {what} failed: {source}")]
    H2 {
        what: &'static str,
        #[source]
        source: h2::Error,
    },
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("GET /ping answered {got}, expected {expected}")]
    UnexpectedStatus { got: u16, expected: u16 },
}

/// Runs one self-test, printing its result on stdout.
pub async fn run(args: SelftestArgs) -> ExitCode {
    let result = match args.check {
        Check::Decode { file } => tokio::task::spawn_blocking(move || decode(&file))
            .await
            .unwrap_or_else(|e| Err(SelftestError::Thread(e.to_string()))),
        Check::Connect {
            endpoint,
            ca,
            state_dir,
            expect_status,
        } => {
            connect(
                &endpoint,
                ca.as_deref(),
                state_dir.as_deref(),
                expect_status,
            )
            .await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("avsd selftest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a decode produced, as printed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeReport {
    pub frames: u64,
    pub rate: u32,
    pub channels: usize,
    pub corrupt_packets: u64,
    pub rms: f64,
}

impl DecodeReport {
    pub fn duration(&self) -> Duration {
        if self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.frames as f64 / f64::from(self.rate))
    }
}

impl std::fmt::Display for DecodeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "frames={} rate={} channels={} duration={:.3}s corrupt_packets={} rms={:.4}",
            self.frames,
            self.rate,
            self.channels,
            self.duration().as_secs_f64(),
            self.corrupt_packets,
            self.rms
        )
    }
}

/// Decodes `path` to the end with the daemon's decoder.
pub fn decode_file(path: &Path) -> Result<DecodeReport, SelftestError> {
    let file = std::fs::File::open(path).map_err(|source| SelftestError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut sum_sq = 0.0f64;
    let mut samples = 0u64;
    let summary = decode_stream(std::io::BufReader::new(file), None, |pcm, _, _| {
        sum_sq += pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>();
        samples += pcm.len() as u64;
        Ok(())
    })
    .map_err(|source| SelftestError::Decode {
        path: path.to_owned(),
        source,
    })?;
    Ok(DecodeReport {
        frames: summary.frames,
        rate: summary.rate,
        channels: summary.channels,
        corrupt_packets: summary.corrupt_packets,
        rms: if samples == 0 {
            0.0
        } else {
            (sum_sq / samples as f64).sqrt()
        },
    })
}

fn decode(path: &Path) -> Result<(), SelftestError> {
    let started = Instant::now();
    let report = decode_file(path)?;
    println!(
        "decode {}: {report} took={}ms",
        path.display(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// What a connection check saw, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectReport {
    pub tls_version: String,
    pub alpn: String,
    pub status: u16,
}

/// TLS 1.3 + ALPN h2 to `endpoint`, then `GET /ping` (with the stored access token when
/// `state_dir` is given).
pub async fn check_connect(
    endpoint: &Url,
    ca: Option<&Path>,
    state_dir: Option<&Path>,
) -> Result<ConnectReport, SelftestError> {
    let bearer = match state_dir {
        Some(dir) => Some(
            crate::auth::token_store::load(dir)
                .map_err(|source| SelftestError::Tokens {
                    path: dir.to_owned(),
                    source,
                })?
                .access_token,
        ),
        None => None,
    };
    let tls = client_config(ca)?;
    let (stream, host) = crate::transport::connection::connect_tls(endpoint, tls).await?;
    let session = stream.get_ref().1;
    let version = session.protocol_version();
    if version != Some(rustls::ProtocolVersion::TLSv1_3) {
        return Err(SelftestError::NotTls13 {
            host,
            version: format!("{version:?}"),
        });
    }
    let (mut send, connection) =
        h2::client::handshake(stream)
            .await
            .map_err(|source| SelftestError::H2 {
                what: "handshake",
                source,
            })?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "selftest connection ended");
        }
    });
    let mut request = http::Request::get(endpoint.join(avs_proto::PING_PATH).map_or_else(
        |_| format!("{}{}", endpoint.as_str(), avs_proto::PING_PATH),
        |u| u.to_string(),
    ));
    if let Some(token) = bearer {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let (response, _) = send
        .send_request(request.body(())?, true)
        .map_err(|source| SelftestError::H2 {
            what: "request",
            source,
        })?;
    let response = response.await.map_err(|source| SelftestError::H2 {
        what: "response",
        source,
    })?;
    driver.abort();
    Ok(ConnectReport {
        tls_version: "TLSv1.3".to_owned(),
        alpn: "h2".to_owned(),
        status: response.status().as_u16(),
    })
}

async fn connect(
    endpoint: &Url,
    ca: Option<&Path>,
    state_dir: Option<&Path>,
    expect_status: Option<u16>,
) -> Result<(), SelftestError> {
    let started = Instant::now();
    let report = tokio::time::timeout(CONNECT_TIMEOUT, check_connect(endpoint, ca, state_dir))
        .await
        .map_err(|_| SelftestError::Timeout(CONNECT_TIMEOUT))??;
    println!(
        "connect {endpoint}: tls={} alpn={} GET /ping status={} took={}ms",
        report.tls_version,
        report.alpn,
        report.status,
        started.elapsed().as_millis()
    );
    match expect_status {
        Some(expected) if expected != report.status => Err(SelftestError::UnexpectedStatus {
            got: report.status,
            expected,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn decodes_the_bundled_speech_mp3() {
        let r = decode_file(&fixture("audio_speech_24k_mono.mp3")).unwrap();
        assert_eq!(r.rate, 24_000);
        assert_eq!(r.channels, 1);
        assert!(r.frames > 24_000 / 2, "{r}");
        assert!(r.rms > 0.01, "speech is not silence: {r}");
        assert!(r.to_string().contains("rate=24000"));
    }

    #[test]
    fn a_non_audio_file_is_an_error_naming_it() {
        let err =
            decode_file(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap_err();
        assert!(err.to_string().contains("Cargo.toml"), "{err}");
        let err = decode_file(&fixture("missing.mp3")).unwrap_err();
        assert!(matches!(err, SelftestError::Open { .. }), "{err}");
    }
}
