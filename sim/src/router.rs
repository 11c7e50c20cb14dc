//! The non-AVS paths, shared by the HTTP/2 and HTTP/1.1 servers: LWA (`/auth/O2/...` in both
//! spellings), the skill-facing Progressive Response API (`POST /v1/directives`), media for
//! `AudioPlayer.Play` URLs (`GET /media/...`) and the admin API (`/admin/...`). Bodies arrive
//! whole and bounded; everything else is 404.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::Value;

use crate::Shared;

/// Largest body accepted on these paths.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A whole response.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: Option<&'static str>,
    /// Extra response headers (e.g. `icy-metaint` on radio media).
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(status: StatusCode, v: &Value) -> Self {
        Self {
            status,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body: Bytes::from(v.to_string()),
        }
    }

    pub fn empty(status: StatusCode) -> Self {
        Self {
            status,
            content_type: None,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
}

/// Answers one request.
pub async fn route(shared: &Arc<Shared>, parts: &http::request::Parts, body: Bytes) -> Reply {
    let path = parts.uri.path();
    let method = &parts.method;
    let reply = match (method, path) {
        (&Method::POST, "/auth/O2/create/codepair" | "/auth/o2/create/codepair") => {
            let (s, v) = shared.lwa.create_codepair(&crate::lwa::parse_form(&body));
            Reply::json(s, &v)
        }
        (&Method::POST, "/auth/O2/token" | "/auth/o2/token") => {
            let (s, v) = shared.lwa.token(&crate::lwa::parse_form(&body));
            Reply::json(s, &v)
        }
        (&Method::POST, "/v1/directives") => {
            let auth = parts
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match shared.live.handle_post(auth, &body).await {
                (s, Some(v)) => Reply::json(s, &v),
                (s, None) => Reply::empty(s),
            }
        }
        (&Method::GET, p) if p.starts_with("/media/") => {
            let wants_icy = parts
                .headers
                .get("icy-metadata")
                .is_some_and(|v| v.as_bytes() == b"1");
            match shared.media(&p["/media/".len()..]) {
                Some(media) => {
                    let (body, headers) = crate::media::response(&media, wants_icy);
                    Reply {
                        status: StatusCode::OK,
                        content_type: Some("audio/mpeg"),
                        headers,
                        body,
                    }
                }
                None => Reply::empty(StatusCode::NOT_FOUND),
            }
        }
        (_, p) if p.starts_with("/admin/") => crate::admin::route(shared, method, p, &body).await,
        _ => Reply::empty(StatusCode::NOT_FOUND),
    };
    // Admin reads of the recorder would otherwise record themselves.
    if !path.starts_with("/admin/") {
        shared.recorder.record(
            method.as_str(),
            path,
            Some(reply.status.as_u16()),
            None,
            None,
        );
    }
    reply
}
