//! The AVS wire bodies.
//!
//! - [`FormDataWriter`]: an event request (`multipart/form-data`): the `metadata` part, then an
//!   optional `audio` part whose bytes the caller writes as they are captured, then the closing
//!   delimiter. Nothing is buffered here; each method returns the bytes to put on the wire.
//! - [`RelatedWriter`]: a response or downchannel body (`multipart/related`). It writes each
//!   part's closing delimiter as soon as the part ends (the `--` or `CRLF` that follows comes
//!   with the next part), so a reader can finish a part without waiting for the next one.
//! - [`PartReader`]: one incremental reader for both, built on multer. The boundary is taken
//!   from the content type (multer's own helper only accepts form-data). JSON parts are handed
//!   out as soon as they parse, before their delimiter arrives; binary parts are streamed chunk
//!   by chunk; every part has a size limit and an oversized part is reported and skipped
//!   without being held in memory.

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

/// Which multipart flavour a body must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultipartKind {
    FormData,
    Related,
}

impl MultipartKind {
    fn subtype(self) -> &'static str {
        match self {
            Self::FormData => "form-data",
            Self::Related => "related",
        }
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MultipartError {
    #[error("content type {0:?} is not multipart/{1}")]
    WrongContentType(String, &'static str),
    #[error("content type {0:?} has no boundary parameter")]
    NoBoundary(String),
    #[error("malformed multipart body: {0}")]
    Malformed(#[source] multer::Error),
}

impl MultipartError {
    /// True when the underlying byte stream failed (connection trouble, not bad content).
    pub fn is_stream_error(&self) -> bool {
        matches!(self, Self::Malformed(multer::Error::StreamReadFailed(_)))
    }
}

/// Per-part size limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest JSON part kept in memory.
    pub json_part_bytes: usize,
    /// Largest binary part (attachment or audio) streamed through.
    pub binary_part_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_part_bytes: 256 * 1024,
            binary_part_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Something the reader found.
#[derive(Debug, Clone, PartialEq)]
pub enum PartEvent {
    /// A whole JSON part (it may still be invalid JSON if it never parsed; the caller decides).
    Json {
        name: Option<String>,
        content_id: Option<String>,
        body: Bytes,
    },
    /// A binary part begins.
    BinaryStart {
        name: Option<String>,
        /// Content-ID with angle brackets stripped.
        content_id: Option<String>,
        content_type: Option<String>,
    },
    /// More bytes of the current binary part.
    BinaryChunk(Bytes),
    /// The current binary part ended.
    BinaryEnd,
    /// A part broke its size limit; the rest of it is skipped.
    Oversized {
        name: Option<String>,
        content_id: Option<String>,
        limit_bytes: u64,
    },
}

/// Extracts the boundary from `multipart/<kind>; boundary=...`. Parsed by hand and leniently:
/// AVS sends `type=application/json` unquoted, which a strict RFC 2045 parser (the mime crate)
/// refuses.
pub fn boundary(content_type: &str, kind: MultipartKind) -> Result<String, MultipartError> {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    if essence != format!("multipart/{}", kind.subtype()) {
        return Err(MultipartError::WrongContentType(
            content_type.to_owned(),
            kind.subtype(),
        ));
    }
    parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or_else(|| MultipartError::NoBoundary(content_type.to_owned()))
}

fn new_boundary() -> String {
    format!("avs-{}", uuid::Uuid::new_v4().simple())
}

/// Writes an event request body.
#[derive(Debug, Clone)]
pub struct FormDataWriter {
    boundary: String,
}

impl Default for FormDataWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl FormDataWriter {
    pub fn new() -> Self {
        Self {
            boundary: new_boundary(),
        }
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The opening delimiter and the metadata part.
    pub fn metadata(&self, json: &str) -> Bytes {
        Bytes::from(format!(
            "--{}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json}",
            self.boundary
        ))
    }

    /// The headers of the audio part; the caller then writes the audio bytes.
    pub fn audio_header(&self) -> Bytes {
        Bytes::from(format!(
            "\r\n--{}\r\nContent-Disposition: form-data; name=\"audio\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            self.boundary
        ))
    }

    /// The closing delimiter.
    pub fn finish(&self) -> Bytes {
        Bytes::from(format!("\r\n--{}--\r\n", self.boundary))
    }

    /// A whole body with only a metadata part.
    pub fn metadata_only(&self, json: &str) -> Bytes {
        let mut b = BytesMut::from(&self.metadata(json)[..]);
        b.extend_from_slice(&self.finish());
        b.freeze()
    }
}

/// Writes a `multipart/related` body part by part.
#[derive(Debug, Clone)]
pub struct RelatedWriter {
    boundary: String,
    started: bool,
}

impl Default for RelatedWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl RelatedWriter {
    pub fn new() -> Self {
        Self {
            boundary: new_boundary(),
            started: false,
        }
    }

    pub fn content_type(&self) -> String {
        format!(
            "multipart/related; boundary={}; type=\"application/json\"",
            self.boundary
        )
    }

    fn start_part(&mut self, headers: &str) -> String {
        let lead = if self.started {
            String::new()
        } else {
            format!("--{}", self.boundary)
        };
        self.started = true;
        format!("{lead}\r\n{headers}\r\n")
    }

    /// A whole JSON part, closing delimiter included.
    pub fn json_part(&mut self, json: &str) -> Bytes {
        let start = self.start_part("Content-Type: application/json; charset=UTF-8\r\n");
        Bytes::from(format!("{start}{json}\r\n--{}", self.boundary))
    }

    /// The headers of a binary attachment; the caller then writes its bytes and calls
    /// [`RelatedWriter::binary_part_end`].
    pub fn binary_part_start(&mut self, content_id: &str) -> Bytes {
        Bytes::from(self.start_part(&format!(
            "Content-Type: application/octet-stream\r\nContent-ID: <{content_id}>\r\n"
        )))
    }

    pub fn binary_part_end(&mut self) -> Bytes {
        Bytes::from(format!("\r\n--{}", self.boundary))
    }

    /// The end of the body.
    pub fn finish(&mut self) -> Bytes {
        if self.started {
            Bytes::from_static(b"--\r\n")
        } else {
            self.started = true;
            Bytes::from(format!("--{}--\r\n", self.boundary))
        }
    }
}

enum Current {
    None,
    Json {
        field: multer::Field<'static>,
        name: Option<String>,
        content_id: Option<String>,
        buf: BytesMut,
        emitted: bool,
    },
    Binary {
        field: multer::Field<'static>,
        seen_bytes: u64,
    },
    Skip {
        field: multer::Field<'static>,
    },
}

/// Incremental reader of a multipart body (see the module docs).
pub struct PartReader {
    multipart: multer::Multipart<'static>,
    current: Current,
    limits: Limits,
}

impl PartReader {
    /// Checks the content type and starts reading `stream`.
    pub fn new<S, O, E>(
        content_type: &str,
        kind: MultipartKind,
        stream: S,
        limits: Limits,
    ) -> Result<Self, MultipartError>
    where
        S: Stream<Item = Result<O, E>> + Send + 'static,
        O: Into<Bytes> + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let boundary = boundary(content_type, kind)?;
        Ok(Self {
            multipart: multer::Multipart::new(stream, boundary),
            current: Current::None,
            limits,
        })
    }

    /// The next thing found, `Ok(None)` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<PartEvent>, MultipartError> {
        loop {
            match std::mem::replace(&mut self.current, Current::None) {
                Current::None => {
                    let Some(field) = self
                        .multipart
                        .next_field()
                        .await
                        .map_err(MultipartError::Malformed)?
                    else {
                        return Ok(None);
                    };
                    let name = field.name().map(str::to_owned);
                    let content_id = field
                        .headers()
                        .get("content-id")
                        .and_then(|v| v.to_str().ok())
                        .map(strip_angle_brackets);
                    let content_type = field.content_type().map(|m| m.essence_str().to_owned());
                    if content_type.as_deref() == Some("application/json") {
                        self.current = Current::Json {
                            field,
                            name,
                            content_id,
                            buf: BytesMut::new(),
                            emitted: false,
                        };
                    } else {
                        self.current = Current::Binary {
                            field,
                            seen_bytes: 0,
                        };
                        return Ok(Some(PartEvent::BinaryStart {
                            name,
                            content_id,
                            content_type,
                        }));
                    }
                }
                Current::Json {
                    mut field,
                    name,
                    content_id,
                    mut buf,
                    emitted,
                } => match field.chunk().await.map_err(MultipartError::Malformed)? {
                    Some(chunk) if emitted => {
                        // The object already parsed; what follows is trailing whitespace.
                        drop(chunk);
                        self.current = Current::Json {
                            field,
                            name,
                            content_id,
                            buf,
                            emitted,
                        };
                    }
                    Some(chunk) => {
                        if buf.len() + chunk.len() > self.limits.json_part_bytes {
                            self.current = Current::Skip { field };
                            return Ok(Some(PartEvent::Oversized {
                                name,
                                content_id,
                                limit_bytes: self.limits.json_part_bytes as u64,
                            }));
                        }
                        buf.extend_from_slice(&chunk);
                        if serde_json::from_slice::<serde::de::IgnoredAny>(&buf).is_ok() {
                            let body = buf.split().freeze();
                            self.current = Current::Json {
                                field,
                                name: name.clone(),
                                content_id: content_id.clone(),
                                buf,
                                emitted: true,
                            };
                            return Ok(Some(PartEvent::Json {
                                name,
                                content_id,
                                body,
                            }));
                        }
                        self.current = Current::Json {
                            field,
                            name,
                            content_id,
                            buf,
                            emitted,
                        };
                    }
                    None if emitted => {}
                    None => {
                        return Ok(Some(PartEvent::Json {
                            name,
                            content_id,
                            body: buf.freeze(),
                        }));
                    }
                },
                Current::Binary {
                    mut field,
                    seen_bytes,
                } => match field.chunk().await.map_err(MultipartError::Malformed)? {
                    Some(chunk) => {
                        let seen_bytes = seen_bytes + chunk.len() as u64;
                        if seen_bytes > self.limits.binary_part_bytes {
                            let name = field.name().map(str::to_owned);
                            let content_id = field
                                .headers()
                                .get("content-id")
                                .and_then(|v| v.to_str().ok())
                                .map(strip_angle_brackets);
                            self.current = Current::Skip { field };
                            return Ok(Some(PartEvent::Oversized {
                                name,
                                content_id,
                                limit_bytes: self.limits.binary_part_bytes,
                            }));
                        }
                        self.current = Current::Binary { field, seen_bytes };
                        return Ok(Some(PartEvent::BinaryChunk(chunk)));
                    }
                    None => return Ok(Some(PartEvent::BinaryEnd)),
                },
                Current::Skip { mut field } => {
                    if field
                        .chunk()
                        .await
                        .map_err(MultipartError::Malformed)?
                        .is_some()
                    {
                        self.current = Current::Skip { field };
                    }
                }
            }
        }
    }
}

/// `<TTS-1>` becomes `TTS-1`; a value without both brackets is kept as it is.
pub fn strip_angle_brackets(s: &str) -> String {
    s.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s)
        .to_owned()
}

/// `cid:TTS-1` (or `cid:<TTS-1>`) becomes `TTS-1`; `None` when the url is not a cid reference.
pub fn content_id_of_url(url: &str) -> Option<String> {
    url.strip_prefix("cid:").map(strip_angle_brackets)
}

#[cfg(test)]
mod tests;
