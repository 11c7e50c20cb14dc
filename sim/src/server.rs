//! The accept loop: TLS on every connection, then by ALPN either the raw h2 server (AVS and
//! everything else, with faults under our control) or hyper's HTTP/1.1 server for the non-AVS
//! paths (skills' Python `requests` speaks HTTP/1.1). Each connection runs in its own task and
//! stops on the shared cancellation token.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;

use crate::Shared;
use crate::gateway::{ConnCommand, ConnCtx};
use crate::router::MAX_BODY_BYTES;

/// Time allowed for the TLS and HTTP/2 handshakes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a closing connection gets to finish its streams.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// AVS allows 10 concurrent streams per connection (avs-protocol.md §0).
const MAX_CONCURRENT_STREAMS: u32 = 10;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

pub async fn run(listener: TcpListener, shared: Arc<Shared>, acceptor: TlsAcceptor) {
    let tracker = TaskTracker::new();
    let local: Arc<str> = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default()
        .into();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, id, "connection");
                    tracker.spawn(serve_connection(shared.clone(), acceptor.clone(), tcp, id, local.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shared.shutdown.cancelled() => break,
        }
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT * 2, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at shutdown");
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    id: u64,
    listener: Arc<str>,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, id, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(id, "TLS handshake timed out");
            return;
        }
    };
    let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    if is_h2 {
        serve_h2(shared, tls, id, listener).await;
    } else {
        serve_h1(shared, tls).await;
    }
}

async fn serve_h2(shared: Arc<Shared>, tls: TlsStream<TcpStream>, id: u64, listener: Arc<str>) {
    let mut builder = h2::server::Builder::new();
    builder.max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let mut conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, builder.handshake(tls)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, id, "h2 handshake failed");
            return;
        }
        Err(_) => return,
    };
    let (commands, mut command_rx) = mpsc::channel(4);
    let closing = shared.shutdown.child_token();
    let ctx = ConnCtx {
        id,
        listener,
        commands,
        closing: closing.clone(),
    };
    let drain_deadline = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(drain_deadline);
    let mut draining = false;
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    tokio::spawn(crate::gateway::handle_stream(shared.clone(), ctx.clone(), req, respond));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, id, "h2 connection error");
                    break;
                }
                None => break,
            },
            cmd = command_rx.recv() => match cmd {
                Some(ConnCommand::GoAway) if !draining => {
                    tracing::info!(id, "GOAWAY");
                    conn.graceful_shutdown();
                    closing.cancel();
                    draining = true;
                    drain_deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
                }
                Some(ConnCommand::Drop) => {
                    tracing::info!(id, "dropping the TCP connection");
                    closing.cancel();
                    return;
                }
                _ => {}
            },
            _ = closing.cancelled(), if !draining => {
                conn.graceful_shutdown();
                draining = true;
                drain_deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            _ = &mut drain_deadline, if draining => break,
        }
    }
    closing.cancel();
}

async fn serve_h1(shared: Arc<Shared>, tls: TlsStream<TcpStream>) {
    let io = hyper_util::rt::TokioIo::new(tls);
    let svc_shared = shared.clone();
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle_h1(shared, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "http/1.1 connection ended");
            }
        }
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        }
    }
}

async fn handle_h1(
    shared: Arc<Shared>,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let reply = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => crate::router::route(&shared, &parts, collected.to_bytes()).await,
        Err(_) => crate::router::Reply::empty(http::StatusCode::PAYLOAD_TOO_LARGE),
    };
    let mut builder = http::Response::builder().status(reply.status);
    if let Some(ct) = reply.content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    for (name, value) in &reply.headers {
        builder = builder.header(*name, value.as_str());
    }
    builder
        .body(Full::new(reply.body))
        .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new())))
}
