//! Parsing: turns one line's bytes into a normalized [`Record`]. Built-in parsers are `json`,
//! `logfmt`, `raw` and `auto` (json when the line is an object, logfmt when it is key=value
//! pairs, otherwise raw with the timestamp and level sniffed from the line's head, [`sniff`]),
//! plus declarative regex parsers from YAML definitions ([`definition`], [`registry`]) and
//! families of them under one name (`syslog`: RFC 5424 or 3164, whichever matches).
//!
//! A record may span several lines (joined by multiline framing): regex parsers match its
//! first line and keep the rest in the message, and a stack trace in it becomes the
//! `exception.*` attributes ([`exception`]).
//!
//! A line that fails to parse is never dropped: its raw text is the message and
//! `attributes.parse_error` says why ([`Parsed::failed`] is set so the caller can count it).
//! A [`Parser`] is cheap to clone and is `Send + Sync`: tailer threads share one per input.
//!
//! # Layout
//!
//! - [`json`], [`logfmt`]: the structured parsers, reading borrowed slices of the line.
//! - [`pattern`]: the regex engine behind definitions.
//! - [`fields`], [`promote`]: the well-known fields (time, level, message, ids) and their names.
//! - [`timestamp`]: every timestamp shape, time zones, year inference.
//! - [`sniff`]: the time and level at the head of an unstructured line.
//! - [`exception`]: Java, Python and Go stack traces.
//! - [`definition`], [`registry`]: parser definition files and the parsers an input can name.

pub mod definition;
pub mod exception;
pub mod fields;
mod json;
pub mod logfmt;
mod pattern;
mod promote;
pub mod registry;
pub mod sniff;
pub mod timestamp;

use std::sync::Arc;

use jiff::Timestamp;
use jiff::tz::TimeZone;

pub use definition::DefinitionError;
pub use registry::{ParserInfo, Registry};

use self::fields::{FieldSpec, parse_traceparent};
use self::pattern::{Outcome, RegexSpec};
use self::timestamp::TimeContext;
use crate::frame::MultilinePreset;
use crate::record::{Attributes, Record, Resource, SpanId, TraceId, Value};

/// What a named parser does.
#[derive(Debug)]
pub enum Spec {
    Auto(FieldSpec),
    Json(FieldSpec),
    Logfmt(FieldSpec),
    Raw,
    Regex(RegexSpec),
    /// A family: the first of these regex parsers that matches the line.
    AnyOf(Vec<Arc<Spec>>),
}

/// Per-input settings that apply whatever the parser.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// The zone of times written without an offset (`logs.inputs[].timezone`, default UTC).
    pub zone: TimeZone,
    /// Finds trace and span ids in the message when the parser found none: named captures
    /// `trace_id`, `span_id` and/or `traceparent` (`logs.inputs[].trace_pattern`; default
    /// [`default_trace_pattern`]: `trace_id=<hex>`, `traceId: "<hex>"`, `traceparent=00-...`).
    pub trace_pattern: Option<regex::Regex>,
}

impl Default for ParseOptions {
    fn default() -> ParseOptions {
        ParseOptions { zone: TimeZone::UTC, trace_pattern: default_trace_pattern() }
    }
}

/// The ids apps print into plain-text messages: `trace_id=4bf9...` (also `traceId`, `trace.id`,
/// `trace-id`, with `=` or `:` and optional quotes), optionally followed within a few words by
/// `span_id=...`; or a W3C `traceparent`. It starts with literal spellings of "trace" rather
/// than `(?i)` so that the regex engine can skip lines without one at memchr speed.
const DEFAULT_TRACE_PATTERN: &str = r#"(?:[tT]race|TRACE)(?:(?i:[_.-]?id["']?\s*[=:]\s*["']?)(?P<trace_id>[0-9a-fA-F]{32})\b(?:.{0,100}?\b(?i:span[_.-]?id["']?\s*[=:]\s*["']?)(?P<span_id>[0-9a-fA-F]{16})\b)?|(?i:parent["']?\s*[=:]\s*["']?)(?P<traceparent>[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}))"#;

static DEFAULT_TRACE_REGEX: std::sync::LazyLock<Option<regex::Regex>> =
    std::sync::LazyLock::new(|| regex::Regex::new(DEFAULT_TRACE_PATTERN).ok());

static TRACE_FINDERS: std::sync::LazyLock<[memchr::memmem::Finder<'static>; 2]> =
    std::sync::LazyLock::new(|| [memchr::memmem::Finder::new("race"), memchr::memmem::Finder::new("RACE")]);

/// Whether `text` may hold an id the default pattern finds ("trace", "Trace", "TRACE").
fn mentions_trace(text: &[u8]) -> bool {
    TRACE_FINDERS.iter().any(|finder| finder.find(text).is_some())
}

/// The trace pattern inputs use unless they configure their own.
pub fn default_trace_pattern() -> Option<regex::Regex> {
    DEFAULT_TRACE_REGEX.clone()
}

/// A configured parser: a named [`Spec`] and an input's [`ParseOptions`].
#[derive(Debug, Clone)]
pub struct Parser {
    name: Arc<str>,
    spec: Arc<Spec>,
    options: Arc<ParseOptions>,
    /// The trace pattern is [`DEFAULT_TRACE_PATTERN`]: decided once here rather than by
    /// comparing the pattern's text on every line.
    default_trace_pattern: bool,
    /// The multiline preset the format's definition names.
    multiline: Option<MultilinePreset>,
}

/// A parsed line.
#[derive(Debug)]
pub struct Parsed {
    pub record: Record,
    /// The line did not parse with this parser (the record carries `parse_error`).
    pub failed: bool,
}

impl Parser {
    pub(crate) fn from_parts(name: Arc<str>, spec: Arc<Spec>, options: Arc<ParseOptions>) -> Parser {
        let default_trace_pattern = options.trace_pattern.as_ref().is_some_and(|p| p.as_str() == DEFAULT_TRACE_PATTERN);
        Parser { name, spec, options, default_trace_pattern, multiline: None }
    }

    pub(crate) fn with_multiline(self, multiline: Option<MultilinePreset>) -> Parser {
        Parser { multiline, ..self }
    }

    /// The multiline preset that joins this format's records (`java` for `java`), if any.
    pub fn multiline(&self) -> Option<MultilinePreset> {
        self.multiline
    }

    /// A built-in parser by name, with default options (UTC, the default trace pattern).
    pub fn by_name(name: &str) -> Option<Parser> {
        Registry::builtin().ok()?.parser(name, ParseOptions::default())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses `line` (invalid UTF-8 becomes U+FFFD) observed at `observed`.
    pub fn parse(&self, line: &[u8], observed: Timestamp, resource: &Resource) -> Parsed {
        self.parse_into(line, observed, resource, Attributes::new())
    }

    /// [`Parser::parse`] building the record's attributes in `attributes`, an empty map whose
    /// capacity is reused (see [`Attributes::take_exact`]).
    pub fn parse_into(&self, line: &[u8], observed: Timestamp, resource: &Resource, attributes: Attributes) -> Parsed {
        debug_assert!(attributes.is_empty());
        let context = TimeContext { observed, zone: &self.options.zone };
        let mut record = Record::new(String::new(), observed, Arc::clone(resource));
        record.attributes = attributes;
        let result = match &*self.spec {
            Spec::Raw => {
                record.message = lossy(line);
                Ok(())
            }
            Spec::Json(spec) => json::parse(line, spec, context, &mut record)
                .inspect(|()| exception::annotate_fields(line, &mut record)),
            Spec::Logfmt(spec) => logfmt::parse(line, spec, context, &mut record)
                .inspect(|()| exception::annotate_fields(line, &mut record)),
            Spec::Auto(spec) => {
                parse_auto(line, spec, context, &mut record);
                Ok(())
            }
            Spec::Regex(spec) => match spec.parse(line, context, &mut record) {
                Outcome::Parsed => Ok(()),
                Outcome::NoMatch => Err(format!("line does not match parser {}", self.name)),
            },
            Spec::AnyOf(members) => {
                let matched = members.iter().any(|member| match &**member {
                    Spec::Regex(spec) => matches!(spec.parse(line, context, &mut record), Outcome::Parsed),
                    _ => false,
                });
                if matched { Ok(()) } else { Err(format!("line does not match parser {}", self.name)) }
            }
        };
        let failed = result.is_err();
        if let Err(why) = result {
            record = Record::new(lossy(line), observed, Arc::clone(resource));
            record.attributes.insert("parse_error", Value::from(why));
        }
        self.correlate(&mut record);
        Parsed { record, failed }
    }

    /// Applies the input's trace pattern to the message when no ids were found.
    fn correlate(&self, record: &mut Record) {
        let Some(pattern) = &self.options.trace_pattern else {
            return;
        };
        if record.trace_id.is_some() {
            return;
        }
        // Most messages carry no ids: with the default pattern, a memchr-speed look for "trace"
        // skips the regex on them.
        if self.default_trace_pattern && !mentions_trace(record.message.as_bytes()) {
            return;
        }
        let Some(captures) = pattern.captures(&record.message) else {
            return;
        };
        let group = |name: &str| captures.name(name).map(|m| m.as_str());
        let parent = group("traceparent").and_then(parse_traceparent);
        record.trace_id = group("trace_id").and_then(TraceId::parse_hex).or(parent.map(|(t, _)| t));
        if record.trace_id.is_some() {
            let span = group("span_id").and_then(SpanId::parse_hex).or(parent.map(|(_, s)| s));
            record.span_id = record.span_id.or(span);
        }
    }
}

/// Bytes to text; invalid UTF-8 becomes U+FFFD.
fn lossy(line: &[u8]) -> String {
    match std::str::from_utf8(line) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(line).into_owned(),
    }
}

fn parse_auto(line: &[u8], spec: &FieldSpec, context: TimeContext<'_>, record: &mut Record) {
    let first = line.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') && json::parse(line, spec, context, record).is_ok() {
        exception::annotate_fields(line, record);
        return;
    }
    record.attributes.clear();
    // Valid UTF-8 (nearly every line) is checked by `from_utf8`'s fast path; the lossy walk,
    // several times slower, only runs on the rest.
    let text = match std::str::from_utf8(line) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    };
    if memchr::memchr(b'=', line).is_some()
        && logfmt::is_logfmt(&text, 2)
        && logfmt::parse(line, spec, context, record).is_ok()
    {
        exception::annotate_fields(line, record);
        return;
    }
    // A failed attempt may have left fields behind: start again from the raw line.
    let attributes = std::mem::take(&mut record.attributes);
    *record = Record::new(String::new(), context.observed, Arc::clone(&record.resource));
    record.attributes = attributes;
    record.attributes.clear();
    // The head of the first line: a multiline record's other lines are its message.
    let head = match memchr::memchr(b'\n', text.as_bytes()) {
        Some(end) => &text[..end],
        None => &text,
    };
    let sniffed = sniff::sniff(head, context);
    if let Some(time) = sniffed.time {
        record.timestamp = time;
    }
    record.level = sniffed.level;
    let multiline = head.len() < text.len();
    record.message = text.into_owned();
    if multiline {
        exception::annotate_message(record, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Level;
    use proptest::prelude::*;

    fn parse(name: &str, line: &str) -> Parsed {
        let observed: Timestamp = "2026-11-25T12:00:00.2Z".parse().expect("ts");
        let parser = Parser::by_name(name).expect("built-in");
        parser.parse(line.as_bytes(), observed, &Arc::new(Vec::new()))
    }

    #[test]
    fn parsers_are_send_sync_and_cheap_to_share() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Parser>();
    }

    #[test]
    fn json_promotes_well_known_fields() {
        let line = r#"{"ts":"2026-11-25T12:00:00.123456789Z","level":"ERROR","msg":"payment declined","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","http.status":402,"user":{"id":"u-42"}}"#;
        let parsed = parse("json", line);
        assert!(!parsed.failed);
        let r = parsed.record;
        assert_eq!(format!("{:.9}", r.timestamp), "2026-11-25T12:00:00.123456789Z");
        assert_eq!(r.level, Some(Level::Error));
        assert_eq!(r.message, "payment declined");
        assert_eq!(r.trace_id.map(|t| t.to_string()).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(r.attributes.get("http.status"), Some(&Value::from(402)));
        assert!(r.attributes.get("user").is_some_and(Value::is_object));
        assert!(!r.attributes.contains_key("msg"));
    }

    #[test]
    fn json_numeric_levels_epochs_traceparent_and_invalid_ids() {
        let line = r#"{"time":1732536000123,"level":50,"msg":"x","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","span_id":"nothex"}"#;
        let r = parse("json", line).record;
        assert_eq!(r.level, Some(Level::Error));
        assert_eq!(format!("{:.3}", r.timestamp), "2024-11-25T12:00:00.123Z");
        assert!(r.trace_id.is_some());
        assert_eq!(r.span_id.map(|s| s.to_string()).as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(r.attributes.get("span_id"), Some(&Value::from("nothex")));
    }

    #[test]
    fn json_ecs_nested_fields() {
        let line = r#"{"@timestamp":"2026-11-25T12:00:00Z","log":{"level":"warn","logger":"app"},"message":"m","trace":{"id":"4bf92f3577b34da6a3ce929d0e0e4736"},"span":{"id":"00f067aa0ba902b7"}}"#;
        let r = parse("json", line).record;
        assert_eq!(r.level, Some(Level::Warn));
        assert!(r.trace_id.is_some() && r.span_id.is_some());
        assert_eq!(r.attributes.get("log"), Some(&Value::from(serde_json::json!({"logger": "app"}))));
        assert!(!r.attributes.contains_key("trace") && !r.attributes.contains_key("span"));
    }

    #[test]
    fn bad_json_keeps_the_raw_line() {
        for line in ["not json {", r#"{"a":1} trailing"#, "[1,2]", r#"{"a":"#] {
            let parsed = parse("json", line);
            assert!(parsed.failed, "{line}");
            assert_eq!(parsed.record.message, line);
            assert!(parsed.record.attributes.get("parse_error").is_some_and(Value::is_string));
            assert_eq!(parsed.record.attributes.len(), 1);
            assert_eq!(parsed.record.timestamp, parsed.record.observed_timestamp);
        }
    }

    #[test]
    fn logfmt_and_auto() {
        let r = parse("logfmt", r#"time=2026-11-25T12:00:00Z level=warn msg="disk low" free=10%"#).record;
        assert_eq!(r.level, Some(Level::Warn));
        assert_eq!(r.message, "disk low");
        let r = parse("auto", r#"{"message":"hi","level":"info"}"#).record;
        assert_eq!((r.message.as_str(), r.level), ("hi", Some(Level::Info)));
        let r = parse("auto", "level=info msg=hello").record;
        assert_eq!((r.message.as_str(), r.level), ("hello", Some(Level::Info)));
        let r = parse("auto", "2026-11-25 12:00:00,250 ERROR [main] boom").record;
        assert_eq!(r.level, Some(Level::Error));
        assert_eq!(format!("{:.3}", r.timestamp), "2026-11-25T12:00:00.250Z");
        let r = parse("auto", "plain words here").record;
        assert_eq!((r.message.as_str(), r.level), ("plain words here", None));
        assert!(r.attributes.is_empty());
        let r = parse("auto", "Nov 25 11:59:00 host app[1]: [warn] low disk").record;
        assert_eq!(format!("{:.0}", r.timestamp), "2026-11-25T11:59:00Z");
        assert_eq!(r.level, Some(Level::Warn));
        // Regression: a multi-byte character right after a date-like token must not be split.
        let r = parse("auto", "2026-11-25] 1é x").record;
        assert_eq!(r.message, "2026-11-25] 1é x");
        let r = parse("auto", "{broken json").record;
        assert_eq!(r.message, "{broken json");
        assert!(r.attributes.is_empty());
    }

    #[test]
    fn the_default_trace_pattern_finds_ids_in_messages() {
        assert!(default_trace_pattern().is_some(), "compiles");
        let cases = [
            ("ERROR [main] failed trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7", true, true),
            (r#"WARN slow "traceId": "4BF92F3577B34DA6A3CE929D0E0E4736""#, true, false),
            ("req traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 done", true, true),
            ("trace_id=4bf92f3577b34da6a3ce929d0e0e47361 is too long", false, false),
            ("trace_id=00000000000000000000000000000000 is invalid", false, false),
            ("no ids here", false, false),
        ];
        for (line, trace, span) in cases {
            let r = parse("raw", line).record;
            assert_eq!((r.trace_id.is_some(), r.span_id.is_some()), (trace, span), "{line}");
            assert_eq!(r.message, line);
        }
    }

    #[test]
    fn trace_pattern_on_the_message() {
        let options = ParseOptions {
            trace_pattern: Some(
                regex::Regex::new(r"trace=(?P<trace_id>[0-9a-f]{32}) span=(?P<span_id>[0-9a-f]{16})").expect("re"),
            ),
            ..ParseOptions::default()
        };
        let parser = Registry::builtin().expect("builtins").parser("raw", options).expect("raw");
        let line = b"handled trace=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7";
        let r = parser.parse(line, Timestamp::UNIX_EPOCH, &Arc::new(Vec::new())).record;
        assert_eq!(r.trace_id.map(|t| t.to_string()).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(r.span_id.map(|t| t.to_string()).as_deref(), Some("00f067aa0ba902b7"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_always_yield_a_record(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            let registry = Registry::builtin().expect("builtins");
            for name in registry.names() {
                let parser = registry.parser(name, ParseOptions::default()).expect("listed");
                let parsed = parser.parse(&line, Timestamp::UNIX_EPOCH, &Arc::new(Vec::new()));
                prop_assert!(!parsed.failed || parsed.record.attributes.contains_key("parse_error"));
            }
        }
    }
}
