//! SpeechRecognizer: starts a Recognize whose audio part streams live 10 ms frames from the
//! microphone until StopCapture (from either stream), a local stop, the local capture guard,
//! or the end of the response stream; ExpectSpeech reopens the microphone with the initiator
//! the cloud gave (or none).

use std::time::{Duration, Instant};

use avs_proto::interfaces::speech_recognizer::{self as sr, Profile, Recognize};
use avs_proto::{ContextEntry, Event};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::audio::CaptureHandle;
use crate::transport::{Outbox, ResponseOutcome, SendError};

/// Where the initiator of a Recognize comes from (avs-protocol.md §5.2).
#[derive(Debug, Clone, PartialEq)]
pub enum Initiator {
    /// The user tapped or pressed: `{"type": TAP|PRESS_AND_HOLD, "payload": {}}`.
    Local,
    /// Answering ExpectSpeech: its initiator verbatim, or none at all when it had none.
    Expected(Option<Value>),
}

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureEnd {
    StopCapture,
    LocalStop,
    /// The local guard (`dialog.max_capture_ms`) expired without a StopCapture.
    Timeout,
    /// The upload ended on its own (the response stream closed or failed).
    UploadEnded,
    /// A new Recognize replaced this one.
    Replaced,
}

/// Reports from the capture and the response of a Recognize.
#[derive(Debug)]
pub enum RecognizerUpdate {
    FirstFrameSent {
        dialog: String,
        at: Instant,
    },
    CaptureEnded {
        dialog: String,
        reason: CaptureEnd,
        mic_closed_at: Instant,
    },
    TurnClosed {
        dialog: String,
        outcome: ResponseOutcome,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("not connected to AVS: {0}")]
    Offline(#[from] SendError),
}

struct Capturing {
    dialog: String,
    stop: oneshot::Sender<CaptureEnd>,
}

pub struct SpeechRecognizer {
    capture: CaptureHandle,
    outbox: Outbox,
    profile: Profile,
    initiator_type: String,
    max_capture: Duration,
    capturing: Option<Capturing>,
    updates: mpsc::Sender<RecognizerUpdate>,
}

impl SpeechRecognizer {
    pub fn new(
        capture: CaptureHandle,
        outbox: Outbox,
        profile: Profile,
        initiator_type: String,
        max_capture: Duration,
    ) -> (Self, mpsc::Receiver<RecognizerUpdate>) {
        let (updates, rx) = mpsc::channel(32);
        (
            Self {
                capture,
                outbox,
                profile,
                initiator_type,
                max_capture,
                capturing: None,
                updates,
            },
            rx,
        )
    }

    /// `SpeechRecognizer.RecognizerState`.
    pub fn context_entry() -> ContextEntry {
        ContextEntry::recognizer_state("ALEXA")
    }

    pub fn is_capturing(&self) -> bool {
        self.capturing.is_some()
    }

    pub fn capturing_dialog(&self) -> Option<&str> {
        self.capturing.as_ref().map(|c| c.dialog.as_str())
    }

    /// Opens the microphone and starts streaming a Recognize with a fresh dialogRequestId.
    pub fn start(
        &mut self,
        initiator: Initiator,
        context: Vec<ContextEntry>,
    ) -> Result<String, StartError> {
        self.stop(CaptureEnd::Replaced);
        let dialog = uuid::Uuid::new_v4().to_string();
        let initiator = match initiator {
            Initiator::Local => Some(json!({ "type": self.initiator_type, "payload": {} })),
            Initiator::Expected(i) => i,
        };
        let event = Event::new(
            sr::NAMESPACE,
            &sr::Event::Recognize(Recognize {
                profile: self.profile,
                format: avs_proto::AUDIO_FORMAT_L16.into(),
                initiator,
                start_of_speech_timestamp: None,
            }),
        )
        .with_dialog(Some(dialog.clone()))
        .with_context(context);
        // The channel to the upload is small: the transport's flow control is the buffer.
        let (frames_tx, frames_rx) = mpsc::channel(16);
        let handle = self.outbox.send_recognize(event, frames_rx)?;
        let mic = self.capture.open(false);
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(pump(
            dialog.clone(),
            mic,
            frames_tx,
            stop_rx,
            self.max_capture,
            self.updates.clone(),
        ));
        let updates = self.updates.clone();
        let d = dialog.clone();
        tokio::spawn(async move {
            let outcome = handle
                .response
                .await
                .unwrap_or_else(|_| ResponseOutcome::Failed("link dropped the response".into()));
            let _ = updates
                .send(RecognizerUpdate::TurnClosed { dialog: d, outcome })
                .await;
        });
        self.capturing = Some(Capturing {
            dialog: dialog.clone(),
            stop: stop_tx,
        });
        Ok(dialog)
    }

    /// Stops the capture (if any): the audio part is closed and the mic released.
    pub fn stop(&mut self, reason: CaptureEnd) -> bool {
        match self.capturing.take() {
            Some(c) => {
                let _ = c.stop.send(reason);
                true
            }
            None => false,
        }
    }

    /// The pump reported the end of a capture.
    pub fn on_capture_ended(&mut self, dialog: &str) {
        if self.capturing_dialog() == Some(dialog) {
            self.capturing = None;
        }
    }
}

/// Moves frames from the microphone to the upload until told to stop.
async fn pump(
    dialog: String,
    mut mic: mpsc::Receiver<bytes::Bytes>,
    frames: mpsc::Sender<bytes::Bytes>,
    mut stop: oneshot::Receiver<CaptureEnd>,
    max_capture: Duration,
    updates: mpsc::Sender<RecognizerUpdate>,
) {
    let guard = tokio::time::sleep(max_capture);
    tokio::pin!(guard);
    let mut first = true;
    let reason = loop {
        tokio::select! {
            biased;
            r = &mut stop => break r.unwrap_or(CaptureEnd::LocalStop),
            () = &mut guard => break CaptureEnd::Timeout,
            frame = mic.recv() => match frame {
                Some(frame) => {
                    if frames.send(frame).await.is_err() {
                        break CaptureEnd::UploadEnded;
                    }
                    if first {
                        first = false;
                        let _ = updates.try_send(RecognizerUpdate::FirstFrameSent { dialog: dialog.clone(), at: Instant::now() });
                    }
                }
                None => break CaptureEnd::UploadEnded,
            },
        }
    };
    drop(mic);
    let mic_closed_at = Instant::now();
    drop(frames);
    let _ = updates
        .send(RecognizerUpdate::CaptureEnded {
            dialog,
            reason,
            mic_closed_at,
        })
        .await;
}
