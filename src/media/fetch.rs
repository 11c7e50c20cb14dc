//! HTTP(S) media streams for AudioPlayer: resolves playlists, then downloads the entries one
//! after another into a bounded channel read by the decoder thread as a blocking `Read` (so
//! decoding starts with the first bytes and a slow consumer slows the download down). Requests
//! ask for ICY metadata (`Icy-MetaData: 1`); when a response interleaves it (`icy-metaint`),
//! the blocks are stripped here, before the decoder, and each new title is handed over as tags.
//! TLS follows the daemon's trust rules (webpki roots plus the explicit extra CA only).

use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use url::Url;

use super::icy::{IcyDeinterleaver, IcyMetadata};
use super::playlist::{self, Playlist};
use crate::audio::{SideTags, StreamTags};

/// Largest playlist text read.
const MAX_PLAYLIST_BYTES: usize = 1024 * 1024;
/// Playlists that point at playlists, at most this deep.
const MAX_PLAYLIST_DEPTH: usize = 3;
/// ICY title changes waiting for the decode thread; more are dropped (titles change rarely).
const TAG_QUEUE: usize = 8;

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
    /// Each new ICY metadata set (title, url) with its position in the audio bytes, for the
    /// decode thread to pass on.
    pub tags: std::sync::mpsc::Receiver<SideTags>,
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
        let (tags_tx, tags) = std::sync::mpsc::sync_channel(TAG_QUEUE);
        let failure = Arc::new(Mutex::new(None));
        let slot = failure.clone();
        let client = self.client.clone();
        tokio::spawn(async move {
            let sink = Sink {
                audio: tx,
                tags: tags_tx,
                audio_bytes: std::sync::atomic::AtomicU64::new(0),
            };
            if let Err(f) = download(&client, url, &sink).await {
                tracing::warn!(failure = ?f, "media download failed");
                if let Ok(mut s) = slot.lock() {
                    *s = Some(f);
                }
            }
        });
        MediaStream {
            reader: ChannelReader::new(rx),
            failure,
            tags,
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

/// Where a download goes: audio bytes to the decoder, ICY tags beside them.
struct Sink {
    audio: mpsc::Sender<Bytes>,
    tags: std::sync::mpsc::SyncSender<SideTags>,
    /// Audio bytes handed to the reader so far, over every playlist entry.
    audio_bytes: std::sync::atomic::AtomicU64,
}

async fn get(client: &reqwest::Client, url: &Url) -> Result<reqwest::Response, MediaFailure> {
    client
        .get(url.clone())
        .header("Icy-MetaData", "1")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| classify(&e))
}

async fn download(client: &reqwest::Client, url: Url, tx: &Sink) -> Result<(), MediaFailure> {
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
        if tx.audio.is_closed() {
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

/// ICY fields as the tags we report (GStreamer's names, as the reference SDK forwards them).
pub fn icy_tags(m: &IcyMetadata) -> StreamTags {
    let mut tags = Vec::new();
    if let Some(t) = &m.title {
        tags.push(("title".to_owned(), t.clone()));
    }
    if let Some(u) = &m.url {
        tags.push(("homepage".to_owned(), u.clone()));
    }
    tags
}

async fn pump(response: reqwest::Response, tx: &Sink) -> Result<(), MediaFailure> {
    let mut icy = match response.headers().get("icy-metaint") {
        Some(v) => {
            let v = v.to_str().unwrap_or_default();
            // A stream we cannot de-interleave would feed metadata to the decoder as audio.
            Some(
                IcyDeinterleaver::new(v)
                    .map_err(|e| MediaFailure::InvalidRequest(e.to_string()))?,
            )
        }
        None => None,
    };
    let mut last: Option<IcyMetadata> = None;
    let mut blocks = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| classify(&e))?;
        let chunk = match icy.as_mut() {
            Some(d) => {
                let mut audio = Vec::with_capacity(chunk.len());
                d.push(&chunk, &mut audio, &mut blocks);
                let base = tx.audio_bytes.load(std::sync::atomic::Ordering::Relaxed);
                for (at, m) in blocks.drain(..) {
                    // Servers repeat the current title in every block: report changes only.
                    if last.as_ref() != Some(&m) {
                        let side = SideTags {
                            at_byte: base + at as u64,
                            tags: icy_tags(&m),
                        };
                        if tx.tags.try_send(side).is_err() {
                            tracing::debug!("ICY title dropped: decoder not polling");
                        }
                        last = Some(m);
                    }
                }
                Bytes::from(audio)
            }
            None => chunk,
        };
        if chunk.is_empty() {
            continue;
        }
        tx.audio_bytes
            .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if tx.audio.send(chunk).await.is_err() {
            // The player stopped reading: the item was stopped or replaced.
            return Ok(());
        }
    }
    if let Some(d) = icy.as_ref().filter(|d| d.skipped_blocks > 0) {
        tracing::info!(
            skipped = d.skipped_blocks,
            "ICY blocks without known fields skipped"
        );
    }
    Ok(())
}
