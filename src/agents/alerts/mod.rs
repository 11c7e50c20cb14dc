//! Alerts: timers, alarms and reminders set by the cloud, stored on disk (atomically, so they
//! survive a restart), fired on time by the local clock whether or not the link is up, rendered
//! on the Alerts channel (the alert's own sounds, downloaded when it is set and kept in
//! [`assets`], or the bundled alarm sound; looped), stopped locally or by directive, and
//! reported with every Alerts event. AlertsState goes into context.

pub mod assets;
pub mod scheduler;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use avs_proto::interfaces::TokenPayload;
use avs_proto::interfaces::alerts::{self as al, SetAlert, Tokens};
use avs_proto::interfaces::speaker::Volume;
use avs_proto::{ContextEntry, Event};
use serde_json::json;
use time::OffsetDateTime;

use self::scheduler::{Alert, AlertKind, Asset, Due, Scheduler, parse_time};
use super::AgentOutput;
use crate::audio::{Channel, Earcon, PlaybackHandle, PlaybackUpdate, Source, SourceId};
use crate::context::ContextBoard;
use crate::focus::Focus;
use crate::media::fetch::MediaFetcher;
use crate::persist;

/// An alert without loopCount sounds for at most this long (the reference client's cap).
const MAX_RENDER: Duration = Duration::from_secs(3600);
/// An alert sounding this long has been heard: going into the background, it waits one loop
/// pause before its background sound (one that fires under a dialog starts it at once).
const HEARD_AFTER: Duration = Duration::from_secs(1);
/// Level of an alert pushed to the background by a dialog.
const BACKGROUND_GAIN: f32 = 0.25;

struct Sounding {
    token: String,
    source: Option<SourceId>,
    loops_done: u32,
    loop_count: Option<u32>,
    loop_pause: Duration,
    started: Instant,
    next_loop_at: Option<Instant>,
    /// The alert's own sounds (their URLs), played in order each loop.
    assets: Vec<String>,
    /// Which asset plays next within the current loop.
    asset_index: usize,
    /// `backgroundAlertAsset`'s URL.
    background_asset: Option<String>,
    /// A dialog holds the foreground: the background sound loops instead of `assets`.
    background: bool,
    /// The bundled sound when the alert has no (playable) assets.
    fallback: Earcon,
    /// An asset could not be played: the bundled alarm takes over for the rest of the alert.
    assets_failed: bool,
    /// What is playing now came from `assets`.
    playing_asset: bool,
}

/// The asset at `url`: its cached copy, else a stream when a fetcher exists.
fn open_asset(dir: &std::path::Path, fetcher: Option<&MediaFetcher>, url: &str) -> Option<Source> {
    if let Some(path) = assets::cached(dir, url) {
        match std::fs::File::open(&path) {
            Ok(f) => return Some(Source::Encoded(Box::new(std::io::BufReader::new(f)))),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cached alert asset unreadable")
            }
        }
    }
    let parsed = url::Url::parse(url).ok()?;
    tracing::info!("alert asset not cached; streaming it");
    fetcher.map(|f| Source::Encoded(Box::new(f.open(parsed).reader)))
}

/// A source the core must route updates for.
pub struct Rendering {
    pub source: SourceId,
    pub updates: tokio::sync::mpsc::Receiver<PlaybackUpdate>,
}

pub struct Alerts {
    playback: PlaybackHandle,
    fetcher: Option<MediaFetcher>,
    board: ContextBoard,
    path: PathBuf,
    asset_dir: PathBuf,
    scheduler: Scheduler,
    sounding: Option<Sounding>,
    volume: u8,
}

fn event(e: &al::Event) -> AgentOutput {
    AgentOutput::Event(Event::new(al::NAMESPACE, e))
}

fn token(t: &str) -> TokenPayload {
    TokenPayload {
        token: t.to_owned(),
    }
}

impl Alerts {
    /// Loads the stored alerts (a corrupt file is logged and set aside, never fatal).
    pub fn new(
        playback: PlaybackHandle,
        fetcher: Option<MediaFetcher>,
        board: ContextBoard,
        state_dir: &std::path::Path,
    ) -> Self {
        let path = state_dir.join("alerts.json");
        let stored = match persist::read_json::<Vec<Alert>>(&path) {
            Ok(a) => a.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "stored alerts unreadable; starting without them");
                let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                Vec::new()
            }
        };
        tracing::info!(alerts = stored.len(), "alerts loaded");
        let me = Self {
            playback,
            fetcher,
            board,
            path,
            asset_dir: state_dir.join(assets::ASSET_DIR),
            scheduler: Scheduler::from_alerts(stored),
            sounding: None,
            volume: 100,
        };
        me.collect_garbage();
        // Downloads that a stop or a failure interrupted are tried again.
        for a in me.scheduler.alerts() {
            me.prefetch(a);
        }
        me.publish();
        me
    }

    fn publish(&self) {
        let entry = |a: &Alert| json!({"token": a.token, "type": a.kind.as_str(), "scheduledTime": a.scheduled_time_avs()});
        let all = self.scheduler.alerts().map(entry).collect();
        let active = self.scheduler.active().map(entry).into_iter().collect();
        self.board.set(ContextEntry::alerts_state(all, active));
    }

    /// Downloads the alert's assets into the cache in the background.
    fn prefetch(&self, alert: &Alert) {
        if let Some(fetcher) = &self.fetcher {
            let mut urls: Vec<String> = Vec::new();
            for url in alert.asset_urls() {
                if !urls.iter().any(|u| u == url) {
                    urls.push(url.to_owned());
                }
            }
            assets::prefetch(fetcher, &self.asset_dir, &alert.token, urls);
        }
    }

    /// Deletes cached assets no stored alert uses any more.
    fn collect_garbage(&self) {
        let keep: HashSet<String> = self
            .scheduler
            .alerts()
            .flat_map(|a| a.asset_urls().map(str::to_owned))
            .collect();
        let removed = assets::retain(&self.asset_dir, &keep);
        if removed > 0 {
            tracing::debug!(removed, "unused alert assets deleted");
        }
    }

    fn save(&self) {
        let alerts: Vec<Alert> = self.scheduler.alerts().cloned().collect();
        if let Err(e) = persist::write_json(&self.path, &alerts, 0o600) {
            tracing::error!(error = %e, "alerts not persisted");
        }
    }

    pub fn owns(&self, source: SourceId) -> bool {
        self.sounding
            .as_ref()
            .is_some_and(|s| s.source == Some(source))
    }

    pub fn is_sounding(&self) -> bool {
        self.sounding.is_some()
    }

    /// SetAlert: store, then report.
    pub fn set(&mut self, set: &SetAlert, now: OffsetDateTime) -> Vec<AgentOutput> {
        let Some(scheduled) = parse_time(&set.scheduled_time) else {
            tracing::warn!(token = %set.token, time = %set.scheduled_time, "SetAlert with an unreadable scheduledTime");
            return vec![event(&al::Event::SetAlertFailed(token(&set.token)))];
        };
        let order: Vec<&String> = if set.asset_play_order.is_empty() {
            set.assets.iter().map(|a| &a.asset_id).collect()
        } else {
            set.asset_play_order.iter().collect()
        };
        let asset = |id: &String| {
            set.assets
                .iter()
                .find(|a| &a.asset_id == id)
                .map(|a| Asset {
                    id: a.asset_id.clone(),
                    url: a.url.clone(),
                })
        };
        let assets = order.into_iter().filter_map(asset).collect();
        let background_asset = set.background_alert_asset.as_ref().and_then(asset);
        let alert = Alert {
            token: set.token.clone(),
            kind: AlertKind::parse(&set.kind),
            scheduled,
            assets,
            background_asset,
            loop_count: set.loop_count,
            loop_pause_ms: set.loop_pause_in_milliseconds,
        };
        let mut out = Vec::new();
        let for_prefetch = alert.clone();
        match self.scheduler.set(alert, now) {
            Ok(replaced_active) => {
                if replaced_active {
                    out.extend(self.silence());
                    out.push(event(&al::Event::AlertStopped(token(&set.token))));
                }
                self.save();
                // An update may have dropped assets the old version used.
                self.collect_garbage();
                self.prefetch(&for_prefetch);
                out.push(event(&al::Event::SetAlertSucceeded(token(&set.token))));
            }
            Err(why) => {
                tracing::warn!(token = %set.token, %why, "SetAlert refused");
                out.push(event(&al::Event::SetAlertFailed(token(&set.token))));
            }
        }
        self.publish();
        out
    }

    /// DeleteAlert: an unknown token also succeeds (the alert is gone either way).
    pub fn delete(&mut self, t: &str) -> Vec<AgentOutput> {
        let mut out = self.remove(t);
        out.push(event(&al::Event::DeleteAlertSucceeded(token(t))));
        out
    }

    pub fn delete_many(&mut self, tokens: &Tokens) -> Vec<AgentOutput> {
        let mut out = Vec::new();
        for t in &tokens.tokens {
            out.extend(self.remove(t));
        }
        out.push(event(&al::Event::DeleteAlertsSucceeded(tokens.clone())));
        out
    }

    fn remove(&mut self, t: &str) -> Vec<AgentOutput> {
        let mut out = Vec::new();
        if let Some((_, was_active)) = self.scheduler.delete(t) {
            if was_active {
                out.extend(self.silence());
                out.push(event(&al::Event::AlertStopped(token(t))));
            }
            self.save();
            self.collect_garbage();
        }
        self.publish();
        out
    }

    pub fn set_volume(&mut self, volume: u8) -> Vec<AgentOutput> {
        self.volume = volume.min(100);
        self.playback
            .set_channel_gain(Channel::Alerts, f32::from(self.volume) / 100.0);
        vec![event(&al::Event::VolumeChanged(Volume {
            volume: self.volume,
        }))]
    }

    pub fn adjust_volume(&mut self, delta: i16) -> Vec<AgentOutput> {
        let v = (i16::from(self.volume) + delta).clamp(0, 100) as u8;
        self.set_volume(v)
    }

    /// Local stop (button, `avsd stop`): the sounding alert ends.
    pub fn stop(&mut self) -> Vec<AgentOutput> {
        let Some(t) = self.sounding.as_ref().map(|s| s.token.clone()) else {
            return Vec::new();
        };
        let mut out = self.silence();
        self.scheduler.finish_active();
        self.save();
        self.collect_garbage();
        self.publish();
        out.push(event(&al::Event::AlertStopped(token(&t))));
        out
    }

    /// Stops the sound and gives the Alerts channel back.
    fn silence(&mut self) -> Vec<AgentOutput> {
        match self.sounding.take() {
            Some(s) => {
                if let Some(id) = s.source {
                    self.playback.stop(id);
                }
                vec![AgentOutput::ReleaseFocus(Channel::Alerts)]
            }
            None => Vec::new(),
        }
    }

    /// When [`Alerts::tick`] must run next.
    pub fn deadline(&self, now_instant: Instant, now: OffsetDateTime) -> Option<Instant> {
        let wall = self.scheduler.next_deadline().map(|at| {
            let wait = at - now;
            now_instant + Duration::try_from(wait).unwrap_or(Duration::ZERO)
        });
        let looping = self.sounding.as_ref().and_then(|s| s.next_loop_at);
        match (wall, looping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires what is due (also right after a restart) and restarts loops after their pause.
    pub fn tick(
        &mut self,
        now: OffsetDateTime,
        now_instant: Instant,
        source: SourceId,
    ) -> (Vec<AgentOutput>, Option<Rendering>) {
        let mut out = Vec::new();
        let mut rendering = None;
        for due in self.scheduler.due(now) {
            match due {
                Due::Discard(a) => {
                    tracing::warn!(token = %a.token, scheduled = %a.scheduled_time_avs(), "alert more than 30 minutes overdue: discarded");
                    out.push(event(&al::Event::AlertStopped(token(&a.token))));
                    self.collect_garbage();
                }
                Due::Fire(a) => {
                    tracing::info!(token = %a.token, kind = a.kind.as_str(), late_ms = (now - a.scheduled).whole_milliseconds(), "alert fires");
                    self.sounding = Some(Sounding {
                        token: a.token.clone(),
                        source: None,
                        loops_done: 0,
                        loop_count: a.loop_count,
                        loop_pause: Duration::from_millis(a.loop_pause_ms.unwrap_or(0)),
                        started: now_instant,
                        next_loop_at: None,
                        assets: a.assets.iter().map(|x| x.url.clone()).collect(),
                        asset_index: 0,
                        background_asset: a.background_asset.as_ref().map(|x| x.url.clone()),
                        background: false,
                        fallback: match a.kind {
                            AlertKind::Timer => Earcon::Timer,
                            AlertKind::Alarm => Earcon::Alarm,
                            AlertKind::Reminder => Earcon::Reminder,
                        },
                        assets_failed: false,
                        playing_asset: false,
                    });
                    out.push(event(&al::Event::AlertStarted(token(&a.token))));
                    out.push(AgentOutput::AcquireFocus(Channel::Alerts));
                    rendering = self.render(source);
                }
            }
            self.save();
        }
        if rendering.is_none()
            && let Some(s) = self.sounding.as_mut()
            && s.next_loop_at.is_some_and(|t| t <= now_instant)
        {
            s.next_loop_at = None;
            rendering = self.render(source);
        }
        self.publish();
        (out, rendering)
    }

    /// Plays the next asset of the alert (the cached copy; streamed when there is none), or the
    /// bundled sound of its type when it has none or they fail. In the background (a dialog
    /// holds the foreground) it plays `backgroundAlertAsset`, else the short bundled sound, as
    /// the reference client does.
    fn render(&mut self, id: SourceId) -> Option<Rendering> {
        let s = self.sounding.as_mut()?;
        s.source = Some(id);
        let url = if s.assets_failed {
            None
        } else if s.background {
            s.background_asset.as_ref()
        } else {
            s.assets.get(s.asset_index)
        };
        let asset = url.and_then(|url| open_asset(&self.asset_dir, self.fetcher.as_ref(), url));
        s.playing_asset = asset.is_some();
        let bundled = if s.background {
            Earcon::AlertShort
        } else {
            s.fallback
        };
        let source = asset.unwrap_or(Source::Earcon(bundled));
        let updates = self.playback.enqueue(Channel::Alerts, id, source);
        Some(Rendering {
            source: id,
            updates,
        })
    }

    /// One play of the alert sound ended: loop again (after the pause) or end the alert.
    pub fn on_update(
        &mut self,
        id: SourceId,
        update: PlaybackUpdate,
        now_instant: Instant,
    ) -> Vec<AgentOutput> {
        if !self.owns(id) {
            return Vec::new();
        }
        match update {
            PlaybackUpdate::Failed { ref error }
                if self.sounding.as_ref().is_some_and(|s| s.playing_asset) =>
            {
                tracing::warn!(%error, "alert asset unplayable; using the bundled alarm");
                if let Some(s) = self.sounding.as_mut() {
                    s.assets_failed = true;
                    s.source = None;
                    s.next_loop_at = Some(now_instant);
                }
                Vec::new()
            }
            PlaybackUpdate::Finished { .. } | PlaybackUpdate::Failed { .. } => {
                let Some(s) = self.sounding.as_mut() else {
                    return Vec::new();
                };
                s.source = None;
                if s.playing_asset && !s.background && s.asset_index + 1 < s.assets.len() {
                    // The next asset of the same loop follows at once.
                    s.asset_index += 1;
                    s.next_loop_at = Some(now_instant);
                    return Vec::new();
                }
                s.asset_index = 0;
                s.loops_done += 1;
                let done = s.loop_count.is_some_and(|n| s.loops_done >= n)
                    || now_instant.duration_since(s.started) >= MAX_RENDER;
                if done {
                    return self.stop();
                }
                s.next_loop_at = Some(now_instant + s.loop_pause);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// The Alerts channel's focus changed: the sound switches between the alert's own sequence
    /// (foreground) and its background sound, restarting at once, or after the loop pause when
    /// the alert had already been heard going into the background.
    pub fn on_focus(&mut self, focus: Focus, now_instant: Instant) -> Vec<AgentOutput> {
        let Some(s) = self.sounding.as_mut() else {
            return Vec::new();
        };
        let t = s.token.clone();
        let background = focus == Focus::Background;
        if focus != Focus::None && s.background != background {
            let heard = s.loops_done > 0
                || s.asset_index > 0
                || now_instant.duration_since(s.started) >= HEARD_AFTER;
            if let Some(id) = s.source.take() {
                self.playback.stop(id);
            }
            s.background = background;
            s.asset_index = 0;
            let pause = if background && heard {
                s.loop_pause
            } else {
                Duration::ZERO
            };
            s.next_loop_at = Some(now_instant + pause);
        }
        match focus {
            Focus::Foreground => {
                self.playback
                    .set_channel_gain(Channel::Alerts, f32::from(self.volume) / 100.0);
                vec![event(&al::Event::AlertEnteredForeground(token(&t)))]
            }
            Focus::Background => {
                self.playback.set_channel_gain(
                    Channel::Alerts,
                    BACKGROUND_GAIN * f32::from(self.volume) / 100.0,
                );
                vec![event(&al::Event::AlertEnteredBackground(token(&t)))]
            }
            Focus::None => Vec::new(),
        }
    }
}
