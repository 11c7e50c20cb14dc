//! Scenario files: the data that decides how the sim answers each Recognize (TOML, see
//! `config/scenarios/demo.toml`). An ordered list of turns; the n-th Recognize of the sim gets
//! turn `n % len`. Parsing and validation live here; playing a turn lives in `turn.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::gateway::faults::Fault;

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default, rename = "turn")]
    pub turns: Vec<Turn>,
    /// Answers to other events, by qualified name (`[on_event."PlaybackController.PlayCommandIssued"]`):
    /// the turn's directives (e.g. its `play`) go on that event's response stream, without a
    /// dialogRequestId, as AVS answers transport buttons (avs-protocol.md §5.5).
    #[serde(default)]
    pub on_event: BTreeMap<String, Turn>,
}

impl Default for Scenario {
    /// The built-in answer: one interim speech, then the final one.
    fn default() -> Self {
        Self {
            turns: vec![Turn {
                interim: vec![Interim {
                    text: "Let me check.".to_owned(),
                    delay_ms: 100,
                }],
                final_speech: Some("Here is the answer from the simulator.".to_owned()),
                ..Turn::default()
            }],
            on_event: BTreeMap::new(),
        }
    }
}

/// Why a scenario file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading scenario {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing scenario: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("scenario has no [[turn]]")]
    Empty,
    #[error("turn {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("on_event {event:?}: {reason}")]
    InvalidEventAnswer { event: String, reason: String },
}

impl Scenario {
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let s: Self = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        if self.turns.is_empty() {
            return Err(ScenarioError::Empty);
        }
        for (index, t) in self.turns.iter().enumerate() {
            let invalid = |reason: &str| ScenarioError::Invalid {
                index,
                reason: reason.to_owned(),
            };
            if t.interim.iter().any(|i| i.text.trim().is_empty()) {
                return Err(invalid("interim text is empty"));
            }
            if t.final_speech
                .as_deref()
                .is_some_and(|s| s.trim().is_empty())
            {
                return Err(invalid("final_speech is empty"));
            }
            for d in t
                .directives
                .iter()
                .chain(t.downchannel.iter().map(|p| &p.directive))
            {
                if d.namespace.is_empty() || d.name.is_empty() {
                    return Err(invalid("a directive needs namespace and name"));
                }
            }
        }
        for (event, t) in &self.on_event {
            let invalid = |reason: &str| ScenarioError::InvalidEventAnswer {
                event: event.clone(),
                reason: reason.to_owned(),
            };
            if !event.contains('.') {
                return Err(invalid("name the event as Namespace.Name"));
            }
            if t.directives
                .iter()
                .any(|d| d.namespace.is_empty() || d.name.is_empty())
            {
                return Err(invalid("a directive needs namespace and name"));
            }
        }
        Ok(())
    }

    /// The turn answering the `n`-th Recognize (0-based).
    pub fn turn(&self, n: usize) -> Option<&Turn> {
        if self.turns.is_empty() {
            None
        } else {
            self.turns.get(n % self.turns.len())
        }
    }
}

/// `playBehavior` of the final Speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlayBehavior {
    #[default]
    Enqueue,
    ReplaceEnqueued,
    ReplaceAll,
}

impl PlayBehavior {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enqueue => "ENQUEUE",
            Self::ReplaceEnqueued => "REPLACE_ENQUEUED",
            Self::ReplaceAll => "REPLACE_ALL",
        }
    }
}

/// One answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// Interim speeches, each written after its delay.
    #[serde(default)]
    pub interim: Vec<Interim>,
    /// The final Speak; none means no final speech.
    #[serde(default)]
    pub final_speech: Option<String>,
    #[serde(default)]
    pub play_behavior: PlayBehavior,
    /// Wait for the device's SpeechFinished of the last interim speech before the final.
    #[serde(default)]
    pub hold_final_until_speech_finished: bool,
    /// Adds an ExpectSpeech with this timeout after the final Speak.
    #[serde(default)]
    pub expect_speech_timeout_ms: Option<u64>,
    /// An AudioPlayer.Play after the final Speak.
    #[serde(default)]
    pub play: Option<Play>,
    /// Further directives on the response stream (Speaker, Alerts, ...), in order.
    #[serde(default)]
    pub directives: Vec<DirectiveSpec>,
    /// Directives pushed on the downchannel after the response stream ends.
    #[serde(default)]
    pub downchannel: Vec<DownchannelPush>,
    /// Answer from the skill endpoint instead of the speeches above.
    #[serde(default)]
    pub skill: Option<SkillSpec>,
    /// Faults armed when this turn starts.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// End of speech is not waited for: answer with 204 and no StopCapture (a false wake).
    #[serde(default)]
    pub reject: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interim {
    pub text: String,
    #[serde(default)]
    pub delay_ms: u64,
}

/// Where the Play's audio comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaySource {
    /// A `cid:` attachment on the response stream.
    #[default]
    Attachment,
    /// An https URL the sim serves under `/media/`.
    Url,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Play {
    /// Spoken text synthesised as the "track" (the sim has no music library).
    pub text: String,
    #[serde(default)]
    pub source: PlaySource,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_play_behavior")]
    pub play_behavior: String,
}

fn default_play_behavior() -> String {
    "REPLACE_ALL".to_owned()
}

/// A directive given as namespace, name and payload (any TOML table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectiveSpec {
    pub namespace: String,
    pub name: String,
    #[serde(default = "empty_table")]
    pub payload: toml::Value,
    /// Carry the Recognize's dialogRequestId (default true on the response stream).
    #[serde(default)]
    pub with_dialog: Option<bool>,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(Default::default())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownchannelPush {
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(flatten)]
    pub directive: DirectiveSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkillSpec {
    /// None sends a LaunchRequest.
    #[serde(default)]
    pub intent: Option<String>,
    #[serde(default)]
    pub slots: BTreeMap<String, String>,
    /// Overrides the sim's `--skill-endpoint` for this turn.
    #[serde(default)]
    pub endpoint: Option<String>,
}

impl DirectiveSpec {
    /// The directive JSON, with `dialog_request_id` in the header when given.
    pub fn to_json(&self, dialog_request_id: Option<&str>) -> String {
        let payload = serde_json::to_value(&self.payload)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default()));
        let header = avs_proto::Header::new(&self.namespace, &self.name)
            .with_dialog(dialog_request_id.map(str::to_owned));
        avs_proto::DirectiveEnvelope::new(header, payload).to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_scenario_parses() {
        let text = include_str!("../../config/scenarios/demo.toml");
        let s = Scenario::from_toml(text).unwrap();
        assert!(s.turns.len() >= 2);
        assert!(!s.turns[0].interim.is_empty());
    }

    #[test]
    fn event_answers_parse_and_are_checked() {
        let ok = "[[turn]]\nreject = true\n[on_event.\"PlaybackController.PauseCommandIssued\"]\ndirectives = [{ namespace = \"AudioPlayer\", name = \"Stop\" }]\n";
        let s = Scenario::from_toml(ok).unwrap();
        assert_eq!(
            s.on_event["PlaybackController.PauseCommandIssued"].directives[0].name,
            "Stop"
        );
        let bad = "[[turn]]\nreject = true\n[on_event.Pause]\n";
        assert!(matches!(
            Scenario::from_toml(bad),
            Err(ScenarioError::InvalidEventAnswer { .. })
        ));
    }

    #[test]
    fn empty_and_bad_scenarios_are_refused() {
        assert!(matches!(Scenario::from_toml(""), Err(ScenarioError::Empty)));
        assert!(Scenario::from_toml("[[turn]]\nfinal_speech = \"\"\n").is_err());
        assert!(Scenario::from_toml("[[turn]]\nbogus = 1\n").is_err());
    }
}
