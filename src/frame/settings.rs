//! The framing part of an input's config: container-runtime unwrapping and multiline joining,
//! as written in YAML and as checked into [`MultilineSettings`].

use std::num::NonZeroUsize;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::{MultilineRule, MultilineSettings};
use crate::config::Checker;
use crate::config::units::{Duration, Pattern};

/// Container-runtime framing around each line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerFormat {
    /// Plain lines.
    #[default]
    None,
    /// The CRI log format of containerd and CRI-O (`<time> <stream> <P|F> <content>`).
    Cri,
    /// Docker's json-file driver (`{"log":...,"stream":...,"time":...}`).
    Docker,
    /// Recognized per line: Docker's JSON, else CRI, else plain.
    Auto,
}

/// `multiline:` — how continuation lines are joined. Give `start` or `preset`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A line matching this regex starts a new record; other lines append to the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Pattern>,
    /// A built-in rule instead of `start`: java | python | go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<MultilinePreset>,
    /// At most this many lines per record.
    #[serde(default = "default_multiline_max_lines")]
    pub max_lines: NonZeroUsize,
    /// A record with no new line for this long is complete.
    #[serde(default = "default_multiline_timeout")]
    pub timeout: Duration,
}

/// Built-in multiline rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MultilinePreset {
    /// Java/JVM stack traces (`at ...`, `Caused by:`, `... N more`).
    Java,
    /// Python tracebacks, chained exceptions included.
    Python,
    /// Go panics with their goroutine dumps.
    Go,
}

fn default_multiline_max_lines() -> NonZeroUsize {
    NonZeroUsize::new(500).unwrap_or(NonZeroUsize::MIN)
}

fn default_multiline_timeout() -> Duration {
    Duration::from_secs(1)
}

impl MultilineConfig {
    /// The checked rule; reports `start` and `preset` given both or neither at `field`
    /// (positioned at `spanned`, the input entry).
    pub fn check<T>(&self, checker: &mut Checker, spanned: &Spanned<T>, field: String) -> Option<MultilineSettings> {
        let rule = match (&self.start, self.preset) {
            (Some(start), None) => MultilineRule::start(start.regex().clone()),
            (None, Some(preset)) => MultilineRule::preset(preset),
            (start, _) => {
                let message =
                    if start.is_some() { "give either start or preset, not both" } else { "give start or preset" };
                checker.at(spanned, field, message.into(), Some("e.g. `preset: java` or `start: '^\\d{4}-'`"));
                return None;
            }
        };
        Some(MultilineSettings { rule: Arc::new(rule), max_lines: self.max_lines.get(), timeout: self.timeout.get() })
    }
}

impl MultilineSettings {
    /// The framing of an input that gives no `multiline` but names a parser whose definition
    /// carries a multiline hint (`format: java`): the preset with the default `max_lines` and
    /// `timeout`.
    pub fn from_preset(preset: MultilinePreset) -> MultilineSettings {
        MultilineSettings {
            rule: Arc::new(MultilineRule::preset(preset)),
            max_lines: default_multiline_max_lines().get(),
            timeout: default_multiline_timeout().get(),
        }
    }
}
