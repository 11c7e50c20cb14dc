//! The dialog core: one task that owns the sequencer, the attention state, audio focus and the
//! dialog agents (SpeechRecognizer, SpeechSynthesizer, Speaker, System), and turns what arrives
//! (directives, capture and playback updates, local commands, timers) into agent calls.
//! The agents and state machines are plain structs; this file is the I/O around them.

use std::time::Instant;

use avs_proto::interfaces::{
    alerts as al, audio_player as ap, interaction_model, speaker as sp, speech_recognizer as sr,
    speech_synthesizer, system as sys,
};
use avs_proto::{Directive, DirectiveKind, Event, ExceptionType};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::agents::AgentOutput;
use crate::agents::alerts::Alerts;
use crate::agents::audio_player::{AudioPlayer, Button};
use crate::agents::speaker::{Speaker, VolumeCommand};
use crate::agents::speech_recognizer::{CaptureEnd, Initiator, RecognizerUpdate, SpeechRecognizer};
use crate::agents::speech_synthesizer::SpeechSynthesizer;
use crate::agents::system::{System, exception};
use crate::attention::{Attention, AttentionInput, AttentionMachine};
use crate::audio::{Channel, Earcon, PlaybackHandle, PlaybackUpdate, Source, SourceId};
use crate::config::{Config, ContentUnderDialog};
use crate::context::ContextBoard;
use crate::directives::{Sequencer, SequencerAction};
use crate::focus::{Focus, FocusManager};
use crate::transport::{Incoming, Outbox, ResponseOutcome};

/// Local commands (control socket, buttons, the demo).
#[derive(Debug)]
pub enum DialogCommand {
    Listen,
    /// A press-and-hold button was let go: end the capture (the answer still comes).
    EndCapture,
    Stop,
    Volume(VolumeCommand),
    /// A transport button (PlaybackController).
    Button(Button),
    /// A play/pause toggle: Pause while music plays, Play otherwise.
    PlayPause,
    Status(oneshot::Sender<DialogStatus>),
}

/// A snapshot for `avsd status`.
#[derive(Debug, Clone, Serialize)]
pub struct DialogStatus {
    pub attention: Attention,
    pub volume: u8,
    pub muted: bool,
    pub dialog_request_id: Option<String>,
}

/// Observable steps of a dialog, with their time, for the state feed, the demo and benches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum DialogStep {
    Attention { state: Attention },
    RecognizeStarted { dialog_request_id: String },
    FirstFrameSent,
    StopCaptureReceived,
    MicClosed { reason: String },
    SpeechStarted { token: String },
    SpeechFinished { token: String },
    SpeechInterrupted { token: String },
    TurnClosed { status: String },
    Offline,
    VolumeChanged { volume: u8, muted: bool },
    AlertStarted { token: String },
    AlertStopped { token: String },
}

#[derive(Debug, Clone)]
pub struct DialogUpdate {
    pub at: Instant,
    pub step: DialogStep,
}

/// Handles for talking to a running dialog core.
#[derive(Clone)]
pub struct DialogHandle {
    pub commands: mpsc::Sender<DialogCommand>,
    pub updates: broadcast::Sender<DialogUpdate>,
    pub attention: watch::Receiver<Attention>,
}

impl DialogHandle {
    /// The dialog core's current status; `None` when it is not running (or did not answer).
    pub async fn status(&self) -> Option<DialogStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(DialogCommand::Status(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Everything the dialog core needs from the rest of the daemon.
pub struct DialogDeps {
    pub config: std::sync::Arc<Config>,
    pub outbox: Outbox,
    pub attachments: crate::transport::Attachments,
    pub playback: PlaybackHandle,
    pub capture: crate::audio::CaptureHandle,
    pub board: ContextBoard,
    pub incoming: mpsc::Receiver<Incoming>,
    /// Downloads http(s) media; `None` disables URL playback.
    pub fetcher: Option<crate::media::fetch::MediaFetcher>,
}

pub struct DialogCore {
    config: std::sync::Arc<Config>,
    outbox: Outbox,
    playback: PlaybackHandle,
    board: ContextBoard,
    incoming: mpsc::Receiver<Incoming>,
    commands: mpsc::Receiver<DialogCommand>,
    updates: broadcast::Sender<DialogUpdate>,
    attention_tx: watch::Sender<Attention>,
    seq: Sequencer,
    attention: AttentionMachine,
    focus: FocusManager,
    recognizer: SpeechRecognizer,
    recognizer_rx: mpsc::Receiver<RecognizerUpdate>,
    synth: SpeechSynthesizer,
    audio_player: AudioPlayer,
    alerts: Alerts,
    speaker: Speaker,
    system: System,
    playback_tx: mpsc::Sender<(SourceId, PlaybackUpdate)>,
    playback_rx: mpsc::Receiver<(SourceId, PlaybackUpdate)>,
    next_source: u64,
    /// ExpectSpeech that could not open the mic: its message id and deadline.
    pending_expect: Option<(String, Option<serde_json::Value>, Instant)>,
}

impl DialogCore {
    pub fn new(deps: DialogDeps) -> (DialogHandle, Self) {
        let now = Instant::now();
        let DialogDeps {
            config,
            outbox,
            attachments,
            playback,
            capture,
            board,
            incoming,
            fetcher,
        } = deps;
        board.set(SpeechRecognizer::context_entry());
        let (recognizer, recognizer_rx) = SpeechRecognizer::new(
            capture,
            outbox.clone(),
            config.dialog.profile,
            config.dialog.initiator.clone(),
            config.dialog.max_capture,
        );
        let synth = SpeechSynthesizer::new(playback.clone(), attachments.clone(), board.clone());
        let alerts = Alerts::new(
            playback.clone(),
            fetcher.clone(),
            board.clone(),
            &config.state_dir,
        );
        let audio_player = AudioPlayer::new(playback.clone(), attachments, fetcher, board.clone());
        let speaker = Speaker::new(
            playback.clone(),
            board.clone(),
            &config.state_dir,
            config.initial_volume,
        );
        let system = System::new(config.device.firmware_version.clone(), now);
        let (commands_tx, commands) = mpsc::channel(16);
        let (updates, _) = broadcast::channel(256);
        let (attention_tx, attention_rx) = watch::channel(Attention::Idle);
        let (playback_tx, playback_rx) = mpsc::channel(64);
        let handle = DialogHandle {
            commands: commands_tx,
            updates: updates.clone(),
            attention: attention_rx,
        };
        let core = Self {
            attention: AttentionMachine::new(config.dialog.thinking_timeout, now),
            config,
            outbox,
            playback,
            board,
            incoming,
            commands,
            updates,
            attention_tx,
            seq: Sequencer::new(),
            focus: FocusManager::new(),
            recognizer,
            recognizer_rx,
            synth,
            audio_player,
            alerts,
            speaker,
            system,
            playback_tx,
            playback_rx,
            next_source: 1,
            pending_expect: None,
        };
        (handle, core)
    }

    /// Runs until `shutdown`; then stops capture and speech.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let mut deadline = self.system.next_report();
            if let Some(d) = self.attention.deadline() {
                deadline = deadline.min(d);
            }
            if let Some((_, _, d)) = &self.pending_expect {
                deadline = deadline.min(*d);
            }
            if let Some(d) = self
                .alerts
                .deadline(Instant::now(), time::OffsetDateTime::now_utc())
            {
                deadline = deadline.min(d);
            }
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(incoming) = self.incoming.recv() => self.on_incoming(incoming),
                Some(update) = self.recognizer_rx.recv() => self.on_recognizer(update),
                Some((id, update)) = self.playback_rx.recv() => self.on_playback(id, update),
                Some(cmd) = self.commands.recv() => self.on_command(cmd),
                () = tokio::time::sleep_until(deadline.into()) => self.on_tick(),
            }
        }
        self.recognizer.stop(CaptureEnd::LocalStop);
        self.synth.stop_all();
    }

    fn step(&self, step: DialogStep) {
        tracing::debug!(?step, "dialog");
        let _ = self.updates.send(DialogUpdate {
            at: Instant::now(),
            step,
        });
    }

    fn on_incoming(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Malformed(e) => {
                tracing::warn!(error = %e, "malformed directive");
                let out = exception(&e.raw, e.exception_type(), &e.reason);
                self.apply(vec![out]);
            }
            Incoming::Directive(d) => {
                tracing::debug!(directive = %d.qualified_name(), dialog = ?d.dialog_request_id(), "directive");
                if d.kind == DirectiveKind::Unknown || !self.supported(&d) {
                    tracing::warn!(directive = %d.qualified_name(), "unsupported directive");
                    let out = exception(
                        &d.raw,
                        ExceptionType::UnsupportedOperation,
                        "Unsupported operation",
                    );
                    self.apply(vec![out]);
                    return;
                }
                let actions = self.seq.on_directive(d);
                self.run_actions(actions);
            }
        }
    }

    /// Directives this build handles (the rest are answered with UNSUPPORTED_OPERATION).
    fn supported(&self, d: &Directive) -> bool {
        matches!(
            d.kind,
            DirectiveKind::SpeechRecognizer(_)
                | DirectiveKind::SpeechSynthesizer(_)
                | DirectiveKind::AudioPlayer(_)
                | DirectiveKind::Alerts(_)
                | DirectiveKind::Speaker(_)
                | DirectiveKind::System(_)
                | DirectiveKind::InteractionModel(_)
        )
    }

    fn run_actions(&mut self, actions: Vec<SequencerAction>) {
        for action in actions {
            match action {
                SequencerAction::Handle(d) => self.dispatch(d),
                SequencerAction::Drop(d) => {
                    tracing::debug!(directive = %d.qualified_name(), dialog = ?d.dialog_request_id(), "dropped (not the current dialog)");
                }
                SequencerAction::Cancel { message_id } => self.synth.cancel(&message_id),
            }
        }
    }

    fn dispatch(&mut self, d: Directive) {
        let mut out = Vec::new();
        match &d.kind {
            DirectiveKind::SpeechRecognizer(sr::Directive::StopCapture(_)) => {
                if self.recognizer.stop(CaptureEnd::StopCapture) {
                    self.step(DialogStep::StopCaptureReceived);
                    self.earcon(Earcon::EndOfListening);
                    out.push(AgentOutput::Attention(AttentionInput::CaptureStopped));
                }
            }
            DirectiveKind::SpeechRecognizer(sr::Directive::ExpectSpeech(es)) => {
                let initiator = es.initiator.clone();
                if !self.start_recognize(Initiator::Expected(initiator.clone())) {
                    let deadline = Instant::now()
                        + std::time::Duration::from_millis(es.timeout_in_milliseconds);
                    self.pending_expect = Some((d.header.message_id.clone(), initiator, deadline));
                } else {
                    out.push(AgentOutput::Completed {
                        message_id: d.header.message_id.clone(),
                    });
                }
            }
            DirectiveKind::SpeechRecognizer(sr::Directive::SetWakeWordConfirmation(p)) => {
                out.push(AgentOutput::Event(Event::new(
                    sr::NAMESPACE,
                    &sr::Event::WakeWordConfirmationChanged(p.clone()),
                )));
            }
            DirectiveKind::SpeechRecognizer(sr::Directive::SetSpeechConfirmation(p)) => {
                out.push(AgentOutput::Event(Event::new(
                    sr::NAMESPACE,
                    &sr::Event::SpeechConfirmationChanged(p.clone()),
                )));
            }
            DirectiveKind::SpeechRecognizer(sr::Directive::SetWakeWords(p)) => {
                out.push(AgentOutput::Event(Event::new(
                    sr::NAMESPACE,
                    &sr::Event::WakeWordsChanged(p.clone()),
                )));
            }
            DirectiveKind::SpeechRecognizer(sr::Directive::SetEndOfSpeechOffset(p)) => {
                tracing::info!(
                    end_of_speech_offset_ms = p.end_of_speech_offset_in_milliseconds,
                    "cloud end-of-speech offset"
                );
            }
            DirectiveKind::SpeechSynthesizer(speech_synthesizer::Directive::Speak(speak)) => {
                let source = self.new_source();
                let (o, enqueued) = self.synth.speak(&d, speak, source);
                out.extend(o);
                if let Some(e) = enqueued {
                    self.forward(e.source, e.updates);
                    out.push(AgentOutput::Attention(AttentionInput::SpeechQueued));
                }
            }
            DirectiveKind::AudioPlayer(ap::Directive::Play(play)) => {
                let source = self.new_source();
                let (o, started) = self.audio_player.play(play, source);
                out.extend(o);
                if let Some(s) = started {
                    self.forward(s.source, s.updates);
                }
            }
            DirectiveKind::AudioPlayer(ap::Directive::Stop(_)) => self.audio_player.stop(),
            DirectiveKind::AudioPlayer(ap::Directive::ClearQueue(c)) => {
                out.extend(self.audio_player.clear_queue(c.clear_behavior))
            }
            DirectiveKind::Alerts(al::Directive::SetAlert(set)) => {
                out.extend(self.alerts.set(set, time::OffsetDateTime::now_utc()))
            }
            DirectiveKind::Alerts(al::Directive::DeleteAlert(t)) => {
                out.extend(self.alerts.delete(&t.token))
            }
            DirectiveKind::Alerts(al::Directive::DeleteAlerts(t)) => {
                out.extend(self.alerts.delete_many(t))
            }
            DirectiveKind::Alerts(al::Directive::SetVolume(v)) => {
                out.extend(self.alerts.set_volume(v.volume))
            }
            DirectiveKind::Alerts(al::Directive::AdjustVolume(v)) => {
                out.extend(self.alerts.adjust_volume(v.volume))
            }
            DirectiveKind::Speaker(sp::Directive::SetVolume(v)) => {
                out.extend(self.speaker.apply(VolumeCommand::Set(v.volume)))
            }
            DirectiveKind::Speaker(sp::Directive::AdjustVolume(v)) => {
                out.extend(self.speaker.apply(VolumeCommand::Adjust(v.volume)))
            }
            DirectiveKind::Speaker(sp::Directive::SetMute(m)) => {
                out.extend(self.speaker.apply(VolumeCommand::Mute(m.mute)))
            }
            DirectiveKind::System(sys::Directive::ResetUserInactivity(_)) => {
                self.system.user_activity(Instant::now())
            }
            DirectiveKind::System(sys::Directive::ReportSoftwareInfo(_)) => {
                out.push(self.system.software_info())
            }
            DirectiveKind::System(sys::Directive::RevokeAuthorization(_)) => {
                tracing::warn!(
                    "the user deregistered this device: tokens removed, run `avsd login`"
                );
                if let Err(e) = crate::auth::logout(&self.config.state_dir) {
                    tracing::error!(error = %e, "could not remove tokens");
                }
            }
            // The link handles SetEndpoint itself (transport::gateway: persist, reconnect once
            // idle); it only gets here from a link configured without gateway management.
            DirectiveKind::System(sys::Directive::SetEndpoint(_)) => {
                out.push(exception(
                    &d.raw,
                    ExceptionType::UnsupportedOperation,
                    "SetEndpoint is not supported by this build",
                ));
            }
            DirectiveKind::InteractionModel(interaction_model::Directive::NewDialogRequest(_)) => {
                self.recognizer.stop(CaptureEnd::Replaced);
            }
            DirectiveKind::InteractionModel(
                interaction_model::Directive::RequestProcessingStarted(_),
            ) => {
                out.push(AgentOutput::Attention(AttentionInput::ProcessingStarted));
            }
            DirectiveKind::InteractionModel(
                interaction_model::Directive::RequestProcessingCompleted(_),
            ) => {
                out.push(AgentOutput::Attention(AttentionInput::ProcessingCompleted));
            }
            _ => {
                out.push(exception(
                    &d.raw,
                    ExceptionType::UnsupportedOperation,
                    "Unsupported operation",
                ));
            }
        }
        self.apply(out);
    }

    fn new_source(&mut self) -> SourceId {
        let id = SourceId(self.next_source);
        self.next_source += 1;
        id
    }

    /// Routes a source's playback updates into the core loop.
    fn forward(&self, id: SourceId, mut updates: mpsc::Receiver<PlaybackUpdate>) {
        let tx = self.playback_tx.clone();
        tokio::spawn(async move {
            while let Some(u) = updates.recv().await {
                if tx.send((id, u)).await.is_err() {
                    break;
                }
            }
        });
    }

    fn earcon(&mut self, earcon: Earcon) {
        if self.config.earcons {
            let id = self.new_source();
            drop(
                self.playback
                    .enqueue(Channel::Dialog, id, Source::Earcon(earcon)),
            );
        }
    }

    /// Starts a Recognize; false when it could not (offline).
    fn start_recognize(&mut self, initiator: Initiator) -> bool {
        self.system.user_activity(Instant::now());
        self.synth.stop_all();
        self.pending_expect = None;
        match self.recognizer.start(initiator, self.board.snapshot()) {
            Ok(dialog) => {
                let actions = self.seq.new_dialog(&dialog);
                self.run_actions(actions);
                self.step(DialogStep::RecognizeStarted {
                    dialog_request_id: dialog,
                });
                self.earcon(Earcon::Wake);
                self.apply(vec![
                    AgentOutput::Attention(AttentionInput::CaptureStarted),
                    AgentOutput::Attention(AttentionInput::TurnOpened),
                ]);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a Recognize");
                self.step(DialogStep::Offline);
                self.earcon(Earcon::Offline);
                false
            }
        }
    }

    fn on_recognizer(&mut self, update: RecognizerUpdate) {
        match update {
            RecognizerUpdate::FirstFrameSent { .. } => self.step(DialogStep::FirstFrameSent),
            RecognizerUpdate::CaptureEnded { dialog, reason, .. } => {
                self.recognizer.on_capture_ended(&dialog);
                self.step(DialogStep::MicClosed {
                    reason: format!("{reason:?}"),
                });
                if !matches!(reason, CaptureEnd::StopCapture | CaptureEnd::Replaced) {
                    self.earcon(Earcon::EndOfListening);
                    self.apply(vec![AgentOutput::Attention(AttentionInput::CaptureStopped)]);
                }
            }
            RecognizerUpdate::TurnClosed { dialog, outcome } => {
                let status = match &outcome {
                    ResponseOutcome::Status(s) => s.to_string(),
                    ResponseOutcome::Failed(e) => e.clone(),
                };
                if !matches!(outcome, ResponseOutcome::Status(200 | 204)) {
                    tracing::warn!(%status, "Recognize failed");
                    self.earcon(Earcon::Error);
                }
                self.step(DialogStep::TurnClosed { status });
                if self.seq.current_dialog() == Some(dialog.as_str()) {
                    if self.recognizer.capturing_dialog() == Some(dialog.as_str()) {
                        self.recognizer.stop(CaptureEnd::UploadEnded);
                    }
                    self.apply(vec![AgentOutput::Attention(AttentionInput::TurnClosed)]);
                }
            }
        }
    }

    fn on_playback(&mut self, id: SourceId, update: PlaybackUpdate) {
        if self.alerts.owns(id) {
            let out = self.alerts.on_update(id, update, Instant::now());
            self.apply(out);
            return;
        }
        if self.audio_player.owns(id) {
            let next = self.new_source();
            let (out, started) = self.audio_player.on_update(id, update, next);
            if let Some(s) = started {
                self.forward(s.source, s.updates);
            }
            self.apply(out);
            return;
        }
        if !self.synth.owns(id) {
            return;
        }
        let token_step = |synth_update: &PlaybackUpdate| match synth_update {
            PlaybackUpdate::Failed { error } => Some(error.clone()),
            _ => None,
        };
        if let Some(error) = token_step(&update) {
            tracing::warn!(%error, "speech playback failed");
        }
        let out = self.synth.on_update(id, update);
        self.apply(out);
    }

    fn on_command(&mut self, cmd: DialogCommand) {
        match cmd {
            DialogCommand::Listen => {
                let initiator = match self.pending_expect.take() {
                    Some((_, initiator, _)) => Initiator::Expected(initiator),
                    None => Initiator::Local,
                };
                self.start_recognize(initiator);
            }
            DialogCommand::Stop => {
                self.recognizer.stop(CaptureEnd::LocalStop);
                self.synth.stop_all();
                let out = self.alerts.stop();
                self.apply(out);
            }
            DialogCommand::EndCapture => {
                self.recognizer.stop(CaptureEnd::LocalStop);
            }
            DialogCommand::Button(b) => {
                self.system.user_activity(Instant::now());
                let out = self.audio_player.button(b);
                self.apply(vec![out]);
            }
            DialogCommand::PlayPause => {
                self.system.user_activity(Instant::now());
                let b = if self.audio_player.is_playing() {
                    Button::Pause
                } else {
                    Button::Play
                };
                let out = self.audio_player.button(b);
                self.apply(vec![out]);
            }
            DialogCommand::Volume(v) => {
                let out = self.speaker.apply(v);
                self.apply(out);
            }
            DialogCommand::Status(reply) => {
                let _ = reply.send(DialogStatus {
                    attention: self.attention.state(),
                    volume: self.speaker.volume(),
                    muted: self.speaker.muted(),
                    dialog_request_id: self.seq.current_dialog().map(str::to_owned),
                });
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let source = self.new_source();
        let (out, rendering) = self
            .alerts
            .tick(time::OffsetDateTime::now_utc(), now, source);
        if let Some(r) = rendering {
            self.forward(r.source, r.updates);
        }
        self.apply(out);
        if let Some(out) = self.system.tick(now) {
            self.apply(vec![out]);
        }
        if let Some(a) = self.attention.tick(now) {
            self.publish_attention(a);
        }
        if let Some((message_id, _, deadline)) = &self.pending_expect
            && now >= *deadline
        {
            let message_id = message_id.clone();
            self.pending_expect = None;
            self.apply(vec![
                AgentOutput::Event(Event::new(
                    sr::NAMESPACE,
                    &sr::Event::ExpectSpeechTimedOut(Default::default()),
                )),
                AgentOutput::Completed { message_id },
            ]);
        }
    }

    /// Carries out agent outputs, including the ones they cause in turn.
    fn apply(&mut self, outputs: Vec<AgentOutput>) {
        for o in outputs {
            match o {
                AgentOutput::Event(e) => self.send(e),
                AgentOutput::EventWithContext(e) => {
                    let e = e.with_context(self.board.snapshot());
                    self.send(e);
                }
                AgentOutput::Completed { message_id } => {
                    let actions = self.seq.on_completed(&message_id);
                    self.run_actions(actions);
                }
                AgentOutput::Failed {
                    message_id,
                    dialog_request_id,
                } => {
                    let actions = self
                        .seq
                        .on_failed(&message_id, dialog_request_id.as_deref());
                    self.run_actions(actions);
                }
                AgentOutput::Attention(input) => {
                    if let Some(a) = self.attention.on(input, Instant::now()) {
                        self.publish_attention(a);
                    }
                }
                AgentOutput::AcquireFocus(channel) => {
                    let changes = self.focus.acquire(channel);
                    self.apply_focus(changes);
                }
                AgentOutput::ReleaseFocus(channel) => {
                    let changes = self.focus.release(channel);
                    self.apply_focus(changes);
                }
            }
        }
        self.update_focus();
    }

    fn send(&mut self, event: Event) {
        let step = match (&event.header.namespace[..], &event.header.name[..]) {
            ("SpeechSynthesizer", "SpeechStarted") => Some(DialogStep::SpeechStarted {
                token: token(&event),
            }),
            ("SpeechSynthesizer", "SpeechFinished") => Some(DialogStep::SpeechFinished {
                token: token(&event),
            }),
            ("SpeechSynthesizer", "SpeechInterrupted") => Some(DialogStep::SpeechInterrupted {
                token: token(&event),
            }),
            ("Alerts", "AlertStarted") => Some(DialogStep::AlertStarted {
                token: token(&event),
            }),
            ("Alerts", "AlertStopped") => Some(DialogStep::AlertStopped {
                token: token(&event),
            }),
            ("Speaker", _) => Some(DialogStep::VolumeChanged {
                volume: self.speaker.volume(),
                muted: self.speaker.muted(),
            }),
            _ => None,
        };
        if let Some(step) = step {
            self.step(step);
        }
        self.outbox.send(event);
    }

    fn publish_attention(&mut self, a: Attention) {
        tracing::info!(attention = ?a, "attention");
        let _ = self.attention_tx.send(a);
        self.step(DialogStep::Attention { state: a });
    }

    /// The Dialog channel is held while the mic is open or speech plays or a turn is open.
    fn update_focus(&mut self) {
        let dialog_active = self.recognizer.is_capturing()
            || self.synth.is_active()
            || self.attention.state() != Attention::Idle;
        let changes = if dialog_active {
            self.focus.acquire(Channel::Dialog)
        } else {
            self.focus.release(Channel::Dialog)
        };
        self.apply_focus(changes);
    }

    /// Music under dialog: ducked or paused per config, restored when the dialog ends.
    fn apply_focus(&mut self, changes: Vec<crate::focus::FocusChange>) {
        for change in changes {
            if change.channel == Channel::Alerts {
                for o in self.alerts.on_focus(change.focus, Instant::now()) {
                    if let AgentOutput::Event(e) = o {
                        self.send(e);
                    }
                }
                continue;
            }
            if change.channel != Channel::Content {
                continue;
            }
            let pause = self.config.content_under_dialog == ContentUnderDialog::Pause;
            match change.focus {
                Focus::Foreground => self.playback.set_channel_gain(Channel::Content, 1.0),
                Focus::Background if !pause => self
                    .playback
                    .set_channel_gain(Channel::Content, self.config.duck_level),
                _ => {}
            }
            let out = self.audio_player.on_focus(change.focus, pause);
            if !out.is_empty() {
                // Focus events (paused/resumed) cause no further focus change.
                for o in out {
                    if let AgentOutput::Event(e) = o {
                        self.send(e);
                    }
                }
            }
        }
    }
}

fn token(e: &Event) -> String {
    e.payload["token"].as_str().unwrap_or_default().to_owned()
}
