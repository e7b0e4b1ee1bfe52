//! Parsers: turn one line into a normalized [`Record`]. Built in: `json`, `logfmt`, `raw` and
//! `auto` (JSON when the line is an object, logfmt when it is key=value pairs, otherwise raw
//! with the timestamp and level sniffed from the start of the line). A line that fails to
//! parse is never dropped: its raw text is the message and `attributes.parse_error` says why.

pub mod logfmt;
pub mod timestamp;

use jiff::Timestamp;

use crate::config::ParserName;
use crate::record::{Attributes, Level, Record, Resource, SpanId, TraceId, Value};

/// A configured parser.
#[derive(Debug, Clone, Copy)]
pub struct Parser {
    kind: ParserName,
}

/// A parsed line.
#[derive(Debug)]
pub struct Parsed {
    pub record: Record,
    /// The line did not parse with this parser (the record carries `parse_error`).
    pub failed: bool,
}

impl Parser {
    pub fn new(kind: ParserName) -> Parser {
        Parser { kind }
    }

    /// Looks a parser up by name (built-ins only for now).
    pub fn by_name(name: &str) -> Option<Parser> {
        ParserName::from_name(name).map(Parser::new)
    }

    pub fn name(&self) -> &'static str {
        self.kind.as_str()
    }

    /// Parses `line` (invalid UTF-8 becomes U+FFFD) observed at `observed`.
    pub fn parse(&self, line: &[u8], observed: Timestamp, resource: &Resource) -> Parsed {
        let text = String::from_utf8_lossy(line);
        let mut record = Record::new(String::new(), observed, resource.clone());
        let failure = match self.kind {
            ParserName::Raw => {
                record.message = text.to_string();
                None
            }
            ParserName::Json => parse_json(&text, &mut record).err(),
            ParserName::Logfmt => parse_logfmt(&text, &mut record).err(),
            ParserName::Auto => {
                parse_auto(&text, &mut record);
                None
            }
        };
        let failed = failure.is_some();
        if let Some(why) = failure {
            record.message = text.into_owned();
            record.attributes.insert("parse_error".to_owned(), Value::String(why));
        }
        Parsed { record, failed }
    }
}

fn parse_json(text: &str, record: &mut Record) -> Result<(), String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("JSON line is not an object".to_owned());
    };
    record.attributes = map;
    promote_fields(record);
    Ok(())
}

fn parse_logfmt(text: &str, record: &mut Record) -> Result<(), String> {
    let pairs = logfmt::parse(text).ok_or_else(|| "not logfmt key=value pairs".to_owned())?;
    fill_logfmt(pairs, record);
    Ok(())
}

fn fill_logfmt(pairs: Vec<logfmt::Pair>, record: &mut Record) {
    for (key, value) in pairs {
        let value = value.map_or(Value::Bool(true), Value::String);
        record.attributes.insert(key, value);
    }
    promote_fields(record);
}

fn parse_auto(text: &str, record: &mut Record) {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') && parse_json(text, record).is_ok() {
        return;
    }
    record.attributes.clear();
    // Two or more pairs: one `a=b` in prose ("retry=3 failed") is not enough to call it logfmt.
    if let Some(pairs) = trimmed.contains('=').then(|| logfmt::parse(text)).flatten().filter(|p| p.len() >= 2) {
        fill_logfmt(pairs, record);
        return;
    }
    record.attributes.clear();
    record.message = text.to_owned();
    sniff_raw(text, record);
}

const TIME_KEYS: &[&str] = &["timestamp", "@timestamp", "time", "ts", "t", "datetime", "date"];
const LEVEL_KEYS: &[&str] = &["level", "lvl", "severity", "loglevel", "log.level", "severity_text", "levelname"];
const MESSAGE_KEYS: &[&str] = &["message", "msg", "log", "body"];
const TRACE_KEYS: &[&str] = &["trace_id", "traceId", "trace.id", "traceid", "dd.trace_id"];
const SPAN_KEYS: &[&str] = &["span_id", "spanId", "span.id", "spanid", "dd.span_id"];

/// Moves the well-known fields (time, level, message, trace and span ids) out of the
/// attributes into the record when their values are valid; invalid ones stay as attributes.
fn promote_fields(record: &mut Record) {
    let attributes = &mut record.attributes;
    if let Some(ts) = take_first(attributes, TIME_KEYS, timestamp_of) {
        record.timestamp = ts;
    }
    record.level = take_first(attributes, LEVEL_KEYS, level_of).or_else(|| take_nested_level(attributes));
    if let Some(message) = take_first(attributes, MESSAGE_KEYS, |v| v.as_str().map(str::to_owned)) {
        record.message = message;
    }
    record.trace_id = take_first(attributes, TRACE_KEYS, |v| v.as_str().and_then(TraceId::parse_hex));
    record.span_id = take_first(attributes, SPAN_KEYS, |v| v.as_str().and_then(SpanId::parse_hex));
    if record.trace_id.is_none() {
        if let Some((trace, span)) =
            take_first(attributes, &["traceparent"], |v| v.as_str().and_then(parse_traceparent))
        {
            record.trace_id = Some(trace);
            record.span_id = record.span_id.or(Some(span));
        }
    }
}

/// Removes and returns the first key whose value converts; keys that do not convert stay.
fn take_first<T>(attributes: &mut Attributes, keys: &[&str], convert: impl Fn(&Value) -> Option<T>) -> Option<T> {
    for key in keys {
        if let Some(converted) = attributes.get(*key).and_then(&convert) {
            attributes.remove(*key);
            return Some(converted);
        }
    }
    None
}

/// ECS nests the level as `{"log": {"level": "info"}}`.
fn take_nested_level(attributes: &mut Attributes) -> Option<Level> {
    let Some(Value::Object(log)) = attributes.get_mut("log") else {
        return None;
    };
    let level = log.get("level").and_then(level_of)?;
    log.remove("level");
    if log.is_empty() {
        attributes.remove("log");
    }
    Some(level)
}

fn timestamp_of(value: &Value) -> Option<Timestamp> {
    match value {
        Value::String(text) => timestamp::parse_text(text),
        Value::Number(n) => {
            n.as_i64().and_then(timestamp::parse_epoch_i64).or_else(|| n.as_f64().and_then(timestamp::parse_epoch_f64))
        }
        _ => None,
    }
}

/// Level names, and the numeric levels of pino and bunyan (10 trace ... 60 fatal).
fn level_of(value: &Value) -> Option<Level> {
    match value {
        Value::String(text) => Level::from_name(text),
        Value::Number(n) => match n.as_i64()? {
            10..=19 => Some(Level::Trace),
            20..=29 => Some(Level::Debug),
            30..=39 => Some(Level::Info),
            40..=49 => Some(Level::Warn),
            50..=59 => Some(Level::Error),
            60..=69 => Some(Level::Fatal),
            _ => None,
        },
        _ => None,
    }
}

/// `00-<trace-id>-<span-id>-<flags>`
fn parse_traceparent(text: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = text.trim().split('-');
    let version = parts.next()?;
    let trace = TraceId::parse_hex(parts.next()?)?;
    let span = SpanId::parse_hex(parts.next()?)?;
    (version.len() == 2).then_some((trace, span))
}

/// For unstructured lines: a leading timestamp (`2026-11-25T12:00:00Z` or
/// `2026-11-25 12:00:00,123`) and a level word among the first few tokens.
fn sniff_raw(text: &str, record: &mut Record) {
    let mut tokens = text.split_ascii_whitespace().take(5);
    let first = tokens.next().unwrap_or("");
    let second = tokens.clone().next().unwrap_or("");
    let joined = format!("{first}T{}", second.replace(',', "."));
    let date_then_time = (first.len() == 10).then(|| timestamp::parse_text(&joined)).flatten();
    let single = || timestamp::parse_text(first.trim_matches(|c| c == '[' || c == ']')).filter(|_| first.len() >= 10);
    if let Some(ts) = date_then_time.or_else(single) {
        record.timestamp = ts;
    }
    let candidates = std::iter::once(first).chain(tokens);
    for token in candidates {
        let word = token.trim_matches(|c: char| !c.is_ascii_alphabetic());
        if word.len() >= 4 || word.eq_ignore_ascii_case("err") || word.eq_ignore_ascii_case("dbg") {
            if let Some(level) = Level::from_name(word).filter(|_| {
                word.bytes().all(|b| b.is_ascii_uppercase()) || token.starts_with('[') || token.ends_with(':')
            }) {
                record.level = Some(level);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn parse(kind: ParserName, line: &str) -> Parsed {
        let observed: Timestamp = "2026-11-25T12:00:00.2Z".parse().expect("ts");
        Parser::new(kind).parse(line.as_bytes(), observed, &Arc::new(Vec::new()))
    }

    #[test]
    fn json_promotes_well_known_fields() {
        let line = r#"{"ts":"2026-11-25T12:00:00.123456789Z","level":"ERROR","msg":"payment declined","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","http.status":402,"user":{"id":"u-42"}}"#;
        let parsed = parse(ParserName::Json, line);
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
        let r = parse(ParserName::Json, line).record;
        assert_eq!(r.level, Some(Level::Error));
        assert_eq!(format!("{:.3}", r.timestamp), "2024-11-25T12:00:00.123Z");
        assert!(r.trace_id.is_some());
        assert_eq!(r.span_id.map(|s| s.to_string()).as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(r.attributes.get("span_id"), Some(&Value::from("nothex")));
    }

    #[test]
    fn bad_json_keeps_the_raw_line() {
        let parsed = parse(ParserName::Json, "not json {");
        assert!(parsed.failed);
        assert_eq!(parsed.record.message, "not json {");
        assert!(parsed.record.attributes.get("parse_error").is_some_and(Value::is_string));
        assert_eq!(parsed.record.timestamp, parsed.record.observed_timestamp);
    }

    #[test]
    fn logfmt_and_auto() {
        let r = parse(ParserName::Logfmt, r#"time=2026-11-25T12:00:00Z level=warn msg="disk low" free=10%"#).record;
        assert_eq!(r.level, Some(Level::Warn));
        assert_eq!(r.message, "disk low");
        let r = parse(ParserName::Auto, r#"{"message":"hi","level":"info"}"#).record;
        assert_eq!((r.message.as_str(), r.level), ("hi", Some(Level::Info)));
        let r = parse(ParserName::Auto, "2026-11-25 12:00:00,250 ERROR [main] boom").record;
        assert_eq!(r.level, Some(Level::Error));
        assert_eq!(format!("{:.3}", r.timestamp), "2026-11-25T12:00:00.250Z");
        let r = parse(ParserName::Auto, "plain words here").record;
        assert_eq!((r.message.as_str(), r.level), ("plain words here", None));
        assert!(r.attributes.is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_always_yield_a_record(line in proptest::collection::vec(any::<u8>(), 0..300)) {
            for kind in [ParserName::Auto, ParserName::Json, ParserName::Logfmt, ParserName::Raw] {
                let observed = Timestamp::UNIX_EPOCH;
                let parsed = Parser::new(kind).parse(&line, observed, &Arc::new(Vec::new()));
                prop_assert!(!parsed.failed || parsed.record.attributes.contains_key("parse_error"));
            }
        }
    }
}
