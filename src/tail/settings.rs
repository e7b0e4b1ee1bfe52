//! An input's config: the `logs.inputs[]` entry as written ([`InputConfig`]) and as checked
//! ([`InputSettings`]: globs compiled, parser resolved, every default applied).

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::config::Checker;
use crate::config::units::{ByteSize, Duration, GlobPattern, Pattern, ScalarText};
use crate::frame::settings::MultilineConfig;
use crate::frame::{ContainerFormat, MultilineSettings};
use crate::parse::{ParseOptions, Parser, Registry};

/// One entry of `logs.inputs`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Name used in metrics and in `source.input`.
    pub name: String,
    /// Globs of files to tail; `**` crosses directories, `*` does not.
    pub paths: Vec<GlobPattern>,
    /// Globs of files to skip; a pattern without `/` matches the file name.
    #[serde(default)]
    pub exclude: Vec<GlobPattern>,
    /// Where to start in a file never seen before: `beginning` or `end`.
    #[serde(default)]
    pub start_at: StartAt,
    /// Container-runtime framing to unwrap first: none | cri | docker | auto.
    #[serde(default)]
    pub container: ContainerFormat,
    /// How to parse each line: auto | json | logfmt | raw | a built-in or `logs.parsers` name.
    #[serde(default = "default_format")]
    pub format: String,
    /// Time zone of timestamps written without an offset: an IANA name (`Europe/Paris`),
    /// `UTC` (the default), `local`, or a fixed offset (`+02:00`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// A regex finding trace and span ids in the message when the parser found none, with
    /// named captures `trace_id`, `span_id` and/or `traceparent`. Default: `trace_id=<hex>`,
    /// `traceId: "<hex>"` (any case, `_ . -` or none, `=` or `:`), `span_id=...`, `traceparent=...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_pattern: Option<Pattern>,
    /// Join continuation lines (stack traces) into one record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<MultilineConfig>,
    /// Longer lines are truncated and flagged, never buffered whole.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// How often files are checked for new data and new files are looked for (file-system
    /// events only wake the poller early; polling works where inotify sees nothing).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: Duration,
    /// At most this many files are kept open; idle, fully read files are closed first, then
    /// rotated files read to their end whose records are not acknowledged yet. A file with
    /// unread bytes waits for a descriptor; deleted before it gets one, it is counted lost.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: NonZeroUsize,
    /// Follow every symlink the globs find. Off (the default): a link is followed only if its
    /// target is inside the directory named by the glob's fixed prefix (the path up to the
    /// first component with a glob character), and `**` never descends through a link;
    /// other links are skipped with a warning and counted in
    /// `pillion_input_skipped_files_total{reason="symlink_outside"}`.
    #[serde(default = "default_follow_symlinks")]
    pub follow_symlinks: bool,
    /// Attributes added to every record from this input.
    #[serde(default)]
    pub attributes: BTreeMap<String, ScalarText>,
}

fn default_format() -> String {
    "auto".to_owned()
}

fn default_max_line_bytes() -> ByteSize {
    ByteSize::kib(256)
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_follow_symlinks() -> bool {
    false
}

fn default_max_open_files() -> NonZeroUsize {
    NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN)
}

/// Where to start reading a file pillion has no checkpoint for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Read the whole file.
    #[default]
    Beginning,
    /// Only what is written after pillion found the file.
    End,
}

/// One input, checked, with its globs compiled.
#[derive(Debug)]
pub struct InputSettings {
    pub name: Arc<str>,
    /// The `paths` globs as written (discovery walks from their literal prefixes).
    pub paths: Vec<String>,
    pub include: GlobSet,
    /// Exclusions written with a `/`, matched against the whole path.
    pub exclude_paths: GlobSet,
    /// Exclusions without a `/`, matched against the file name.
    pub exclude_names: GlobSet,
    pub start_at: StartAt,
    pub container: ContainerFormat,
    /// The input's parser, with its time zone and trace pattern; clone it per tailer thread.
    pub parser: Parser,
    pub multiline: Option<MultilineSettings>,
    pub max_line_bytes: usize,
    pub poll_interval: std::time::Duration,
    pub max_open_files: usize,
    /// Follow symlinks leading out of the globs' fixed prefixes.
    pub follow_symlinks: bool,
    pub attributes: Vec<(String, String)>,
}

/// Checks every input: unique names, at least one glob, a known parser, sane limits.
pub fn check_inputs(
    checker: &mut Checker,
    inputs: &[Spanned<InputConfig>],
    registry: &Registry,
) -> Vec<Arc<InputSettings>> {
    let mut names = BTreeSet::new();
    let mut checked = Vec::new();
    for (index, spanned) in inputs.iter().enumerate() {
        let field = |name: &str| format!("logs.inputs[{index}].{name}");
        let input = &spanned.value;
        if input.name.trim().is_empty() {
            checker.at(spanned, field("name"), "an input needs a non-empty name".into(), None);
        } else if !names.insert(input.name.clone()) {
            let message = format!("duplicate input name {:?}", input.name);
            checker.at(spanned, field("name"), message, Some("input names must be unique"));
        }
        if let Some(settings) = input.check(checker, spanned, &field, registry) {
            checked.push(Arc::new(settings));
        }
    }
    checked
}

impl InputConfig {
    fn check(
        &self,
        checker: &mut Checker,
        spanned: &Spanned<InputConfig>,
        field: &dyn Fn(&str) -> String,
        registry: &Registry,
    ) -> Option<InputSettings> {
        if self.paths.is_empty() {
            let hint = Some("e.g. paths: [\"/var/log/app/*.log\"]");
            checker.at(spanned, field("paths"), "an input needs at least one path glob".into(), hint);
        }
        let parser = self.check_parser(checker, spanned, field, registry)?;
        if self.max_line_bytes.bytes() < 64 {
            let message = format!("max_line_bytes {} is too small", self.max_line_bytes);
            checker.at(spanned, field("max_line_bytes"), message, Some("use at least 1KiB"));
        }
        if self.poll_interval.get() < std::time::Duration::from_millis(10) {
            let message = format!("poll_interval {} is too short", self.poll_interval);
            checker.at(spanned, field("poll_interval"), message, Some("use at least 10ms"));
        }
        // Without a `multiline` of its own, an input frames records as its parser's definition
        // says (`format: java` joins Java stack traces); one written out always wins.
        let multiline = match &self.multiline {
            Some(multiline) => multiline.check(checker, spanned, field("multiline")),
            None => parser.multiline().map(MultilineSettings::from_preset),
        };
        match self.compile_globs() {
            Ok((include, exclude_paths, exclude_names)) => Some(InputSettings {
                name: Arc::from(self.name.as_str()),
                paths: self.paths.iter().map(|glob| glob.0.clone()).collect(),
                include,
                exclude_paths,
                exclude_names,
                start_at: self.start_at,
                container: self.container,
                parser,
                multiline,
                max_line_bytes: self.max_line_bytes.as_usize(),
                poll_interval: self.poll_interval.get(),
                max_open_files: self.max_open_files.get(),
                follow_symlinks: self.follow_symlinks,
                attributes: self.attributes.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
            }),
            Err(message) => {
                checker.at(spanned, field("paths"), message, None);
                None
            }
        }
    }

    /// The input's parser with its time zone and trace pattern.
    fn check_parser(
        &self,
        checker: &mut Checker,
        spanned: &Spanned<InputConfig>,
        field: &dyn Fn(&str) -> String,
        registry: &Registry,
    ) -> Option<Parser> {
        let zone = match self.timezone.as_deref().map(crate::parse::timestamp::parse_zone) {
            None => jiff::tz::TimeZone::UTC,
            Some(Ok(zone)) => zone,
            Some(Err(message)) => {
                let hint = "an IANA name such as Europe/Paris, UTC, local, or an offset such as +02:00";
                checker.at(spanned, field("timezone"), message, Some(hint));
                return None;
            }
        };
        let trace_pattern = match &self.trace_pattern {
            Some(pattern) => Some(pattern.regex().clone()),
            None => crate::parse::default_trace_pattern(),
        };
        if let Some(pattern) = &trace_pattern {
            if !pattern.capture_names().flatten().any(|n| matches!(n, "trace_id" | "traceparent")) {
                let message =
                    format!("trace_pattern {:?} has no capture named trace_id or traceparent", pattern.as_str());
                let hint = Some("e.g. 'trace_id=(?P<trace_id>[0-9a-f]{32})'");
                checker.at(spanned, field("trace_pattern"), message, hint);
            }
        }
        let parser = registry.parser(&self.format, ParseOptions { zone, trace_pattern });
        if parser.is_none() {
            let message = format!("unknown parser {:?}", self.format);
            let names: Vec<&str> = registry.names().collect();
            let hint = format!("available parsers: {}; add your own with logs.parsers", names.join(", "));
            checker.at(spanned, field("format"), message, Some(&hint));
        }
        parser
    }

    fn compile_globs(&self) -> Result<(GlobSet, GlobSet, GlobSet), String> {
        let mut include = GlobSetBuilder::new();
        for pattern in &self.paths {
            include.add(glob(&pattern.0)?);
        }
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for pattern in &self.exclude {
            if pattern.0.contains('/') {
                by_path.add(glob(&pattern.0)?);
            } else {
                by_name.add(glob(&pattern.0)?);
            }
        }
        let build = |builder: GlobSetBuilder| builder.build().map_err(|e| e.to_string());
        Ok((build(include)?, build(by_path)?, build(by_name)?))
    }
}

/// A glob where `*` does not cross `/`.
pub fn glob(pattern: &str) -> Result<globset::Glob, String> {
    GlobBuilder::new(pattern).literal_separator(true).build().map_err(|e| format!("invalid glob {pattern:?}: {e}"))
}
