//! The control socket: a Unix socket speaking JSON lines, used by `avsd listen|stop|status|
//! volume`, buttons and LED drivers. Requests:
//! `{"cmd":"listen"}`, `{"cmd":"stop"}`, `{"cmd":"status"}`, `{"cmd":"volume","set":40}`,
//! `{"cmd":"volume","adjust":-10}`, `{"cmd":"mute","muted":true}`, `{"cmd":"subscribe"}`, and the
//! transport buttons `{"cmd":"play"}`, `pause`, `next`, `previous` (PlaybackController events:
//! the cloud decides what happens to the music and answers with AudioPlayer directives).
//! Each request gets one JSON line back; `subscribe` then streams every dialog step and link
//! state change as JSON lines until the client hangs up.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agents::audio_player::Button;
use crate::agents::speaker::VolumeCommand;
use crate::dialog::{DialogCommand, DialogHandle};
use crate::transport::LinkState;

/// Longest request line accepted.
const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach avsd at {path} (is the daemon running?): {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad answer from avsd: {0}")]
    BadAnswer(String),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Listen,
    Stop,
    Status,
    Volume {
        #[serde(default)]
        set: Option<u8>,
        #[serde(default)]
        adjust: Option<i16>,
    },
    Mute {
        muted: bool,
    },
    Play,
    Pause,
    Next,
    Previous,
    Subscribe,
}

/// Serves the control socket until `shutdown`.
pub async fn serve(
    path: &Path,
    dialog: DialogHandle,
    link: watch::Receiver<LinkState>,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
    let bind_err = |source| ControlError::Bind {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    // A stale socket from a crash would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(client(stream, dialog.clone(), link.clone(), shutdown.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "control socket accept failed"),
            },
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

async fn client(
    stream: UnixStream,
    dialog: DialogHandle,
    mut link: watch::Receiver<LinkState>,
    shutdown: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(1 << 20)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.len() > MAX_LINE_BYTES {
            let _ = write_line(
                &mut write,
                &json!({"ok": false, "error": "request too long"}),
            )
            .await;
            return;
        }
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let _ = write_line(
                    &mut write,
                    &json!({"ok": false, "error": format!("bad request: {e}")}),
                )
                .await;
                continue;
            }
        };
        let answer = match request {
            Request::Listen => command(&dialog, DialogCommand::Listen).await,
            Request::Stop => command(&dialog, DialogCommand::Stop).await,
            Request::Volume { set: Some(v), .. } => {
                command(
                    &dialog,
                    DialogCommand::Volume(VolumeCommand::Set(v.min(100))),
                )
                .await
            }
            Request::Volume {
                adjust: Some(d), ..
            } => command(&dialog, DialogCommand::Volume(VolumeCommand::Adjust(d))).await,
            Request::Volume { .. } => {
                json!({"ok": false, "error": "volume needs \"set\" or \"adjust\""})
            }
            Request::Mute { muted } => {
                command(&dialog, DialogCommand::Volume(VolumeCommand::Mute(muted))).await
            }
            Request::Play => command(&dialog, DialogCommand::Button(Button::Play)).await,
            Request::Pause => command(&dialog, DialogCommand::Button(Button::Pause)).await,
            Request::Next => command(&dialog, DialogCommand::Button(Button::Next)).await,
            Request::Previous => command(&dialog, DialogCommand::Button(Button::Previous)).await,
            Request::Status => status(&dialog, &link).await,
            Request::Subscribe => {
                let mut updates = dialog.updates.subscribe();
                if write_line(
                    &mut write,
                    &json!({"ok": true, "link": link_name(&link.borrow_and_update())}),
                )
                .await
                .is_err()
                {
                    return;
                }
                loop {
                    let line = tokio::select! {
                        () = shutdown.cancelled() => return,
                        u = updates.recv() => match u {
                            Ok(u) => serde_json::to_value(&u.step).unwrap_or(Value::Null),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => json!({"step": "lagged", "missed": n}),
                            Err(_) => return,
                        },
                        changed = link.changed() => {
                            if changed.is_err() { return; }
                            json!({"step": "link", "state": link_name(&link.borrow())})
                        }
                    };
                    if write_line(&mut write, &line).await.is_err() {
                        return;
                    }
                }
            }
        };
        if write_line(&mut write, &answer).await.is_err() {
            return;
        }
    }
}

async fn command(dialog: &DialogHandle, cmd: DialogCommand) -> Value {
    match dialog.commands.send(cmd).await {
        Ok(()) => json!({"ok": true}),
        Err(_) => json!({"ok": false, "error": "the dialog core is not running"}),
    }
}

async fn status(dialog: &DialogHandle, link: &watch::Receiver<LinkState>) -> Value {
    match dialog.status().await {
        Some(s) => json!({"ok": true, "link": link_name(&link.borrow()), "dialog": s}),
        None => json!({"ok": false, "error": "the dialog core is not running"}),
    }
}

/// A short name for a link state (also used for systemd's STATUS=).
pub fn link_name(state: &LinkState) -> String {
    match state {
        LinkState::Disconnected => "disconnected".into(),
        LinkState::Connecting => "connecting".into(),
        LinkState::Connected => "connected".into(),
        LinkState::WaitingToRetry { attempt, delay } => {
            format!(
                "waiting to retry (attempt {attempt}, in {} ms)",
                delay.as_millis()
            )
        }
        LinkState::NeedsLogin => "needs login: run `avsd login`".into(),
    }
}

async fn write_line(w: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    w.write_all(line.as_bytes()).await
}

/// A request on its way: the answer lines, and the write half kept open until they are read
/// (closing it would tell the daemon the client went away).
struct Pending {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    _write: tokio::net::unix::OwnedWriteHalf,
}

/// Connects to the daemon and sends `request`.
async fn send_request(path: &Path, request: &Request) -> Result<Pending, ControlError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let (read, mut write) = stream.into_split();
    let mut line =
        serde_json::to_string(request).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    Ok(Pending {
        lines: BufReader::new(read).lines(),
        _write: write,
    })
}

/// Client side: sends one request and returns the answer (for `avsd listen|stop|status|volume`).
pub async fn request(path: &Path, request: &Request) -> Result<Value, ControlError> {
    let mut pending = send_request(path, request).await?;
    let answer = pending
        .lines
        .next_line()
        .await?
        .ok_or_else(|| ControlError::BadAnswer("connection closed".into()))?;
    serde_json::from_str(&answer).map_err(|e| ControlError::BadAnswer(e.to_string()))
}

/// Client side of `subscribe`: calls `each` for every line until the daemon goes away.
pub async fn subscribe(path: &Path, mut each: impl FnMut(Value)) -> Result<(), ControlError> {
    let mut pending = send_request(path, &Request::Subscribe).await?;
    while let Some(line) = pending.lines.next_line().await? {
        match serde_json::from_str(&line) {
            Ok(v) => each(v),
            Err(e) => return Err(ControlError::BadAnswer(e.to_string())),
        }
    }
    Ok(())
}
