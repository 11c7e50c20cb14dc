//! HTTP(S) media streams for AudioPlayer: resolves playlists, then downloads the entries one
//! after another into a bounded channel read by the decoder thread as a blocking `Read` (so
//! decoding starts with the first bytes and a slow consumer slows the download down). TLS
//! follows the daemon's trust rules (webpki roots plus the explicit extra CA only).

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use url::Url;

use super::playlist::{self, Playlist};

/// Largest playlist text read.
const MAX_PLAYLIST_BYTES: usize = 1024 * 1024;
/// Playlists that point at playlists, at most this deep.
const MAX_PLAYLIST_DEPTH: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why a stream failed, mapped to AudioPlayer's `MEDIA_ERROR_*` types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaFailure {
    /// 4xx, a bad URL or a bad playlist.
    InvalidRequest(String),
    /// 5xx.
    ServerError(String),
    /// Connection or TLS failure.
    Unavailable(String),
}

impl MediaFailure {
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "MEDIA_ERROR_INVALID_REQUEST",
            Self::ServerError(_) => "MEDIA_ERROR_INTERNAL_SERVER_ERROR",
            Self::Unavailable(_) => "MEDIA_ERROR_SERVICE_UNAVAILABLE",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::InvalidRequest(m) | Self::ServerError(m) | Self::Unavailable(m) => m,
        }
    }
}

/// A stream being downloaded.
pub struct MediaStream {
    pub reader: ChannelReader,
    /// Set when the download failed (read it when the decoder reports a failure or a short end).
    pub failure: Arc<Mutex<Option<MediaFailure>>>,
}

/// The blocking side of the download channel.
pub struct ChannelReader {
    rx: Mutex<mpsc::Receiver<Bytes>>,
    pending: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx: Mutex::new(rx),
            pending: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            let next = match self.rx.get_mut() {
                Ok(rx) => rx.blocking_recv(),
                Err(_) => None,
            };
            match next {
                Some(b) => self.pending = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

#[derive(Clone)]
pub struct MediaFetcher {
    client: reqwest::Client,
}

impl MediaFetcher {
    /// A client on the daemon's TLS configuration, also speaking HTTP/1.1 (most media servers).
    pub fn new(tls: &rustls::ClientConfig) -> Result<Self, FetchError> {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(FetchError::Client)?;
        Ok(Self { client })
    }

    /// Starts downloading `url` (resolving playlists); must be called inside the runtime.
    pub fn open(&self, url: Url) -> MediaStream {
        let (tx, rx) = mpsc::channel(32);
        let failure = Arc::new(Mutex::new(None));
        let slot = failure.clone();
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(f) = download(&client, url, &tx).await {
                tracing::warn!(failure = ?f, "media download failed");
                if let Ok(mut s) = slot.lock() {
                    *s = Some(f);
                }
            }
        });
        MediaStream {
            reader: ChannelReader::new(rx),
            failure,
        }
    }
}

impl MediaFetcher {
    /// Downloads `url` whole (no playlists), refusing bodies over `max_bytes` (alert assets).
    pub async fn download(&self, url: &Url, max_bytes: usize) -> Result<Bytes, MediaFailure> {
        let response = get(&self.client, url).await?;
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| classify(&e))?;
            if body.len() + chunk.len() > max_bytes {
                return Err(MediaFailure::InvalidRequest(format!(
                    "{url}: larger than {max_bytes} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.into())
    }
}

fn classify(e: &reqwest::Error) -> MediaFailure {
    match e.status() {
        Some(s) if s.is_client_error() => MediaFailure::InvalidRequest(e.to_string()),
        Some(s) if s.is_server_error() => MediaFailure::ServerError(e.to_string()),
        _ => MediaFailure::Unavailable(e.to_string()),
    }
}

async fn get(client: &reqwest::Client, url: &Url) -> Result<reqwest::Response, MediaFailure> {
    client
        .get(url.clone())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| classify(&e))
}

async fn download(
    client: &reqwest::Client,
    url: Url,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), MediaFailure> {
    let mut url = url;
    let mut depth = 0;
    let entries = loop {
        let response = get(client, &url).await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if !playlist::is_playlist(&url, content_type.as_deref()) {
            // Not a playlist: this response is the media itself.
            return pump(response, tx).await;
        }
        depth += 1;
        if depth > MAX_PLAYLIST_DEPTH {
            return Err(MediaFailure::InvalidRequest(format!(
                "playlists nested deeper than {MAX_PLAYLIST_DEPTH}"
            )));
        }
        let text = read_capped(response).await?;
        match playlist::parse(&text, &url) {
            Ok(Playlist::Variant(v)) => url = v,
            Ok(Playlist::Entries(e)) => break e,
            Err(e) => return Err(MediaFailure::InvalidRequest(format!("{url}: {e}"))),
        }
    };
    for entry in entries {
        let response = get(client, &entry).await?;
        pump(response, tx).await?;
        if tx.is_closed() {
            break;
        }
    }
    Ok(())
}

async fn read_capped(response: reqwest::Response) -> Result<String, MediaFailure> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| classify(&e))?;
        if body.len() + chunk.len() > MAX_PLAYLIST_BYTES {
            return Err(MediaFailure::InvalidRequest(
                "playlist larger than 1 MiB".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn pump(response: reqwest::Response, tx: &mpsc::Sender<Bytes>) -> Result<(), MediaFailure> {
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| classify(&e))?;
        if tx.send(chunk).await.is_err() {
            // The player stopped reading: the item was stopped or replaced.
            return Ok(());
        }
    }
    Ok(())
}
