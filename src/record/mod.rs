//! The normalized log Record: one schema for every line of every format, and its JSON form
//! (design.md, "Record"). This module depends on nothing else in the crate.

use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

mod attributes;
mod value;

pub use attributes::{AttributeName, Attributes};
pub use value::Value;

/// Severity levels, with OpenTelemetry severity numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    /// The lowest OpenTelemetry `SeverityNumber` of this level's range.
    pub fn severity_number(self) -> u8 {
        match self {
            Level::Trace => 1,
            Level::Debug => 5,
            Level::Info => 9,
            Level::Warn => 13,
            Level::Error => 17,
            Level::Fatal => 21,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// Recognizes the usual spellings, case-insensitively: `WARNING`, `err`, `crit`, `E`...
    pub fn from_name(name: &str) -> Option<Level> {
        let mut lower = [0u8; 16];
        let bytes = name.trim().as_bytes();
        if bytes.is_empty() || bytes.len() > lower.len() {
            return None;
        }
        for (dst, src) in lower.iter_mut().zip(bytes) {
            *dst = src.to_ascii_lowercase();
        }
        match &lower[..bytes.len()] {
            b"trace" | b"trc" | b"t" | b"finest" | b"finer" => Some(Level::Trace),
            b"debug" | b"dbg" | b"d" | b"fine" | b"verbose" => Some(Level::Debug),
            b"info" | b"inf" | b"i" | b"information" | b"informational" | b"notice" => Some(Level::Info),
            b"warn" | b"warning" | b"wrn" | b"w" => Some(Level::Warn),
            b"error" | b"err" | b"e" | b"eror" | b"severe" => Some(Level::Error),
            b"fatal" | b"critical" | b"crit" | b"ftl" | b"f" | b"alert" | b"emerg" | b"emergency" | b"panic"
            | b"dpanic" => Some(Level::Fatal),
            _ => None,
        }
    }

    /// Maps an OpenTelemetry severity number (1-24) to its level.
    pub fn from_severity_number(number: i64) -> Option<Level> {
        match number {
            1..=4 => Some(Level::Trace),
            5..=8 => Some(Level::Debug),
            9..=12 => Some(Level::Info),
            13..=16 => Some(Level::Warn),
            17..=20 => Some(Level::Error),
            21..=24 => Some(Level::Fatal),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 16-byte W3C trace id, printed as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte W3C span id, printed as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// Parses 32 hex digits (any case); all-zero ids are invalid, as W3C says.
    pub fn parse_hex(text: &str) -> Option<TraceId> {
        parse_hex_id::<16>(text).map(TraceId)
    }
}

impl SpanId {
    /// Parses 16 hex digits (any case); all-zero ids are invalid, as W3C says.
    pub fn parse_hex(text: &str) -> Option<SpanId> {
        parse_hex_id::<8>(text).map(SpanId)
    }
}

fn parse_hex_id<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let high = (pair[0] as char).to_digit(16)?;
        let low = (pair[1] as char).to_digit(16)?;
        out[i] = (high * 16 + low) as u8;
    }
    (out != [0u8; N]).then_some(out)
}

fn write_hex(f: &mut fmt::Formatter, bytes: &[u8]) -> fmt::Result {
    for byte in bytes {
        write!(f, "{byte:02x}")?;
    }
    Ok(())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

/// Resource attributes shared by every record of a process (`service.name`, `k8s.pod.name`...).
pub type Resource = Arc<Vec<(String, String)>>;

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The input's name.
    pub input: Arc<str>,
    /// The file's path when it was read.
    pub path: Arc<str>,
    /// Byte offset of the record's first line in the file.
    pub offset: u64,
}

/// One normalized log record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub timestamp: Timestamp,
    pub observed_timestamp: Timestamp,
    pub level: Option<Level>,
    pub message: String,
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    pub attributes: Attributes,
    pub resource: Resource,
    pub source: Option<Source>,
}

impl Record {
    /// A record of `message` observed now, with no parsed fields.
    pub fn new(message: String, observed: Timestamp, resource: Resource) -> Record {
        Record {
            timestamp: observed,
            observed_timestamp: observed,
            level: None,
            message,
            trace_id: None,
            span_id: None,
            attributes: Attributes::new(),
            resource,
            source: None,
        }
    }

    /// Appends the record's JSON form and a newline to `out`.
    pub fn write_json_line(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        out.push(b'\n');
        Ok(())
    }
}

/// Formats a timestamp as RFC 3339 UTC with exactly nine fractional digits.
pub struct Rfc3339Nanos(pub Timestamp);

impl fmt::Display for Rfc3339Nanos {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:.9}", self.0)
    }
}

impl Serialize for Rfc3339Nanos {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct DisplayStr<T>(T);

impl<T: fmt::Display> Serialize for DisplayStr<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

struct ResourceJson<'a>(&'a [(String, String)]);

impl Serialize for ResourceJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct SourceJson<'a> {
    input: &'a str,
    path: &'a str,
    offset: u64,
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("timestamp", &Rfc3339Nanos(self.timestamp))?;
        map.serialize_entry("observed_timestamp", &Rfc3339Nanos(self.observed_timestamp))?;
        if let Some(level) = self.level {
            map.serialize_entry("level", &level)?;
            map.serialize_entry("severity_number", &level.severity_number())?;
        }
        map.serialize_entry("message", &self.message)?;
        if let Some(trace_id) = &self.trace_id {
            map.serialize_entry("trace_id", &DisplayStr(trace_id))?;
        }
        if let Some(span_id) = &self.span_id {
            map.serialize_entry("span_id", &DisplayStr(span_id))?;
        }
        map.serialize_entry("attributes", &self.attributes)?;
        map.serialize_entry("resource", &ResourceJson(&self.resource))?;
        if let Some(source) = &self.source {
            let source = SourceJson { input: &source.input, path: &source.path, offset: source.offset };
            map.serialize_entry("source", &source)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_matches_the_contract() {
        let ts: Timestamp = "2026-11-25T12:00:00.123456789Z".parse().expect("ts");
        let observed: Timestamp = "2026-11-25T12:00:00.2Z".parse().expect("ts");
        let resource: Resource = Arc::new(vec![("service.name".into(), "checkout".into())]);
        let mut record = Record::new("payment declined".into(), observed, resource);
        record.timestamp = ts;
        record.level = Some(Level::Error);
        record.trace_id = TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e4736");
        record.span_id = SpanId::parse_hex("00F067AA0BA902B7");
        record.attributes.insert("http.status", 402.into());
        record.source = Some(Source { input: "app".into(), path: "/var/log/app/app.log".into(), offset: 18231 });
        let json = serde_json::to_string(&record).expect("serialize");
        assert_eq!(
            json,
            r#"{"timestamp":"2026-11-25T12:00:00.123456789Z","observed_timestamp":"2026-11-25T12:00:00.200000000Z","level":"error","severity_number":17,"message":"payment declined","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","attributes":{"http.status":402},"resource":{"service.name":"checkout"},"source":{"input":"app","path":"/var/log/app/app.log","offset":18231}}"#
        );
    }

    #[test]
    fn ids_must_be_hex_of_the_right_length_and_not_zero() {
        assert!(TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e473").is_none());
        assert!(TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e473g").is_none());
        assert!(TraceId::parse_hex("00000000000000000000000000000000").is_none());
        assert!(SpanId::parse_hex("00f067aa0ba902b7").is_some());
    }

    #[test]
    fn level_names() {
        assert_eq!(Level::from_name("WARNING"), Some(Level::Warn));
        assert_eq!(Level::from_name("crit"), Some(Level::Fatal));
        assert_eq!(Level::from_name("bogus"), None);
        assert_eq!(Level::from_severity_number(17), Some(Level::Error));
    }
}
