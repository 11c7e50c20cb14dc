//! A raw HTTP/2 client over tokio-rustls that trusts a given CA: the test side of avs-sim's
//! tests. It is deliberately not avsd: it opens the downchannel, posts events (metadata only,
//! or with an audio part fed from a bounded channel, so the sender feels h2 flow control),
//! reads `multipart/related` responses with avs-proto's `PartReader`, and posts LWA forms.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use avs_proto::multipart::{FormDataWriter, Limits, MultipartKind, PartEvent, PartReader};
use bytes::{Bytes, BytesMut};
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Method, Request, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One HTTP/2 connection to the sim.
pub struct H2Client {
    send: SendRequest<Bytes>,
    authority: String,
    connection: JoinHandle<Result<(), h2::Error>>,
}

/// A response whose body has not been read yet.
pub struct H2Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: RecvStream,
}

/// What a `multipart/related` body carried, attachments gathered whole.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceivedPart {
    Directive(serde_json::Value),
    /// A JSON part that did not parse (kept as text).
    BadJson(String),
    Attachment {
        content_id: Option<String>,
        bytes: Bytes,
    },
}

impl ReceivedPart {
    /// `Namespace.Name` of a directive part.
    pub fn directive_name(&self) -> Option<String> {
        match self {
            Self::Directive(v) => {
                let h = &v["directive"]["header"];
                Some(format!(
                    "{}.{}",
                    h["namespace"].as_str()?,
                    h["name"].as_str()?
                ))
            }
            _ => None,
        }
    }
}

/// A client config trusting only the CA in `ca_pem`, ALPN as given.
pub fn client_config(ca_pem: &Path, alpn: &[&[u8]]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).context("reading the CA PEM")? {
        roots.add(cert.context("parsing the CA PEM")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Opens TLS to `url`'s host and port with the given ALPN list.
pub async fn connect_tls(
    url: &url::Url,
    ca_pem: &Path,
    alpn: &[&[u8]],
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let host = url
        .host_str()
        .ok_or_else(|| anyhow!("no host in {url}"))?
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(ca_pem, alpn)?));
    let name = ServerName::try_from(host)?;
    Ok(connector.connect(name, tcp).await?)
}

impl H2Client {
    /// Connects with ALPN `h2` and completes the HTTP/2 handshake.
    pub async fn connect(url: &url::Url, ca_pem: &Path) -> anyhow::Result<Self> {
        let tls = connect_tls(url, ca_pem, &[b"h2"]).await?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            bail!("server did not negotiate h2");
        }
        let (send, connection) = h2::client::handshake(tls).await?;
        let connection = tokio::spawn(connection);
        let authority = format!(
            "{}:{}",
            url.host_str().unwrap_or("127.0.0.1"),
            url.port_or_known_default().unwrap_or(443)
        );
        Ok(Self {
            send,
            authority,
            connection,
        })
    }

    /// Waits for the connection to end (after a GOAWAY or a drop) and returns how it ended.
    pub async fn closed(self) -> Result<(), h2::Error> {
        drop(self.send);
        match self.connection.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }

    /// How many concurrent streams the server allows (its SETTINGS_MAX_CONCURRENT_STREAMS,
    /// once its settings have arrived).
    pub fn max_send_streams(&self) -> usize {
        self.send.current_max_send_streams()
    }

    /// True once the connection task has ended.
    pub fn is_closed(&self) -> bool {
        self.connection.is_finished()
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
    ) -> anyhow::Result<Request<()>> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("https://{}{}", self.authority, path));
        if let Some(t) = token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            b = b.header(http::header::CONTENT_TYPE, ct);
        }
        Ok(b.body(())?)
    }

    /// Sends a request with a whole body (empty for none).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<H2Response> {
        let req = self.request(method, path, token, content_type)?;
        let mut ready = self.send.clone().ready().await?;
        let (response, mut stream) = ready.send_request(req, body.is_empty())?;
        if !body.is_empty() {
            send_all(&mut stream, body, true).await?;
        }
        H2Response::from_future(response).await
    }

    /// `GET path`, with a bearer `token` if given.
    pub async fn get(&mut self, path: &str, token: Option<&str>) -> anyhow::Result<H2Response> {
        self.send(Method::GET, path, token, None, Bytes::new())
            .await
    }

    /// `GET /v20160207/directives`.
    pub async fn open_downchannel(&mut self, token: &str) -> anyhow::Result<H2Response> {
        self.get(avs_proto::DIRECTIVES_PATH, Some(token)).await
    }

    /// `GET /ping`.
    pub async fn ping(&mut self, token: &str) -> anyhow::Result<H2Response> {
        self.get(avs_proto::PING_PATH, Some(token)).await
    }

    /// Posts an event with only a metadata part.
    pub async fn post_event(
        &mut self,
        token: &str,
        metadata_json: &str,
    ) -> anyhow::Result<H2Response> {
        let w = FormDataWriter::new();
        self.send(
            Method::POST,
            avs_proto::EVENTS_PATH,
            Some(token),
            Some(&w.content_type()),
            w.metadata_only(metadata_json),
        )
        .await
    }

    /// Posts an event whose audio part is fed from `audio` as chunks arrive; the body ends
    /// when the channel closes. The response can be awaited while the upload still runs.
    pub async fn post_event_streaming(
        &mut self,
        token: &str,
        metadata_json: &str,
        mut audio: mpsc::Receiver<Bytes>,
    ) -> anyhow::Result<StreamingEvent> {
        let w = FormDataWriter::new();
        let req = self.request(
            Method::POST,
            avs_proto::EVENTS_PATH,
            Some(token),
            Some(&w.content_type()),
        )?;
        let mut ready = self.send.clone().ready().await?;
        let (response, mut stream) = ready.send_request(req, false)?;
        let first = {
            let mut b = BytesMut::from(&w.metadata(metadata_json)[..]);
            b.extend_from_slice(&w.audio_header());
            b.freeze()
        };
        let upload = tokio::spawn(async move {
            send_all(&mut stream, first, false).await?;
            let mut sent = 0usize;
            while let Some(chunk) = audio.recv().await {
                sent += chunk.len();
                send_all(&mut stream, chunk, false).await?;
            }
            send_all(&mut stream, w.finish(), true).await?;
            Ok(sent)
        });
        Ok(StreamingEvent { response, upload })
    }

    /// Posts `application/x-www-form-urlencoded` (LWA) and parses the JSON answer.
    pub async fn post_form(
        &mut self,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let r = self
            .send(
                Method::POST,
                path,
                None,
                Some("application/x-www-form-urlencoded"),
                Bytes::from(body),
            )
            .await?;
        let status = r.status;
        Ok((status, r.json().await?))
    }

    /// LWA's `POST /auth/O2/create/codepair` for `client_id`, scope `alexa:all` with
    /// `scope_data`: the status and the answer (the code pair, or an error).
    pub async fn create_code_pair(
        &mut self,
        client_id: &str,
        scope_data: &str,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        self.post_form(
            "/auth/O2/create/codepair",
            &[
                ("response_type", "device_code"),
                ("client_id", client_id),
                ("scope", "alexa:all"),
                ("scope_data", scope_data),
            ],
        )
        .await
    }

    /// LWA's `POST /auth/O2/token` with the device code grant of `pair` (an answer of
    /// [`Self::create_code_pair`]): the status and the answer (tokens, or an error).
    pub async fn poll_code_pair(
        &mut self,
        pair: &serde_json::Value,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let code = |name: &str| {
            pair[name]
                .as_str()
                .with_context(|| format!("no {name} in {pair}"))
        };
        self.post_form(
            "/auth/O2/token",
            &[
                ("grant_type", "device_code"),
                ("device_code", code("device_code")?),
                ("user_code", code("user_code")?),
            ],
        )
        .await
    }

    /// The skill-side Progressive Response API (`POST /v1/directives`): a `kind` directive
    /// (`VoicePlayer.Speak`) saying `speech` during skill request `request_id`.
    pub async fn post_progressive(
        &mut self,
        token: Option<&str>,
        request_id: &str,
        kind: &str,
        speech: &str,
    ) -> anyhow::Result<H2Response> {
        let body = serde_json::json!({
            "header": { "requestId": request_id },
            "directive": { "type": kind, "speech": speech }
        });
        self.send(
            Method::POST,
            "/v1/directives",
            token,
            Some("application/json"),
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// Posts JSON (admin API) and parses the JSON answer (`null` for an empty body).
    pub async fn post_json(
        &mut self,
        path: &str,
        json: &serde_json::Value,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let r = self
            .send(
                Method::POST,
                path,
                None,
                Some("application/json"),
                Bytes::from(json.to_string()),
            )
            .await?;
        let status = r.status;
        Ok((status, r.json().await?))
    }
}

/// An event whose audio is still being uploaded.
pub struct StreamingEvent {
    pub response: ResponseFuture,
    /// Resolves to the number of audio bytes sent once the body is closed.
    pub upload: JoinHandle<anyhow::Result<usize>>,
}

impl StreamingEvent {
    pub async fn response(&mut self) -> anyhow::Result<H2Response> {
        H2Response::from_future(&mut self.response).await
    }
}

/// Writes `data` waiting for flow-control capacity (h2 would buffer without limit otherwise).
pub async fn send_all(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    eos: bool,
) -> anyhow::Result<()> {
    if data.is_empty() {
        stream.send_data(data, eos)?;
        return Ok(());
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let cap = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(c) => c?,
            None => bail!("stream closed by the server"),
        };
        if cap == 0 {
            continue;
        }
        let chunk = data.split_to(cap.min(data.len()));
        stream.send_data(chunk, eos && data.is_empty())?;
    }
    Ok(())
}

impl H2Response {
    async fn from_future<F>(f: F) -> anyhow::Result<Self>
    where
        F: std::future::Future<Output = Result<http::Response<RecvStream>, h2::Error>>,
    {
        let (parts, body) = f.await?.into_parts();
        Ok(Self {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }

    /// Reads the whole body.
    pub async fn bytes(mut self) -> anyhow::Result<Bytes> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.body.data().await {
            let chunk = chunk?;
            let _ = self.body.flow_control().release_capacity(chunk.len());
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }

    /// Reads the body as JSON (`null` when empty).
    pub async fn json(self) -> anyhow::Result<serde_json::Value> {
        let b = self.bytes().await?;
        if b.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        Ok(serde_json::from_slice(&b)?)
    }

    /// A `multipart/related` reader over the body.
    pub fn parts(self) -> anyhow::Result<Parts> {
        let ct = self.content_type().unwrap_or_default().to_owned();
        let stream = avs_sim::gateway::body_stream(self.body);
        let reader = PartReader::new(&ct, MultipartKind::Related, stream, Limits::default())?;
        Ok(Parts { reader })
    }
}

/// Reads a `multipart/related` body part by part.
pub struct Parts {
    reader: PartReader,
}

impl Parts {
    /// The next part, attachments gathered whole; `None` at the end of the body.
    pub async fn next(&mut self) -> anyhow::Result<Option<ReceivedPart>> {
        let mut attachment: Option<(Option<String>, BytesMut)> = None;
        loop {
            match self.reader.next().await? {
                None => return Ok(None),
                Some(PartEvent::Json { body, .. }) => {
                    return Ok(Some(match serde_json::from_slice(&body) {
                        Ok(v) => ReceivedPart::Directive(v),
                        Err(_) => {
                            ReceivedPart::BadJson(String::from_utf8_lossy(&body).into_owned())
                        }
                    }));
                }
                Some(PartEvent::BinaryStart { content_id, .. }) => {
                    attachment = Some((content_id, BytesMut::new()));
                }
                Some(PartEvent::BinaryChunk(c)) => {
                    if let Some((_, buf)) = attachment.as_mut() {
                        buf.extend_from_slice(&c);
                    }
                }
                Some(PartEvent::BinaryEnd) => {
                    if let Some((content_id, buf)) = attachment.take() {
                        return Ok(Some(ReceivedPart::Attachment {
                            content_id,
                            bytes: buf.freeze(),
                        }));
                    }
                }
                Some(PartEvent::Oversized { .. }) => bail!("oversized part"),
            }
        }
    }

    /// Every remaining part, until the body ends.
    pub async fn collect(mut self) -> anyhow::Result<Vec<ReceivedPart>> {
        let mut v = Vec::new();
        while let Some(p) = self.next().await? {
            v.push(p);
        }
        Ok(v)
    }
}

/// A test event's metadata JSON.
pub fn event_json(namespace: &str, name: &str, payload: serde_json::Value) -> String {
    avs_proto::Event::raw(namespace, name, payload).to_json()
}
