//! The regex parser engine behind declarative parser definitions: a `regex::bytes` pattern
//! (so invalid UTF-8 still matches) whose named captures become the Record's time, level,
//! message, trace and span ids, and typed attributes.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::bytes::{CaptureLocations, Regex};

use super::exception;
use super::fields::{LevelFrom, LevelRule, ValueType, parse_traceparent};
use super::timestamp::{TimeContext, TimeFormat, parse_zone};
use crate::record::{AttributeName, Record, SpanId, TraceId, Value};

/// A compiled regex parser.
#[derive(Debug)]
pub struct RegexSpec {
    pub(super) regex: IdRegex,
    /// The captures that become attributes, by group index.
    pub(super) attributes: Vec<Capture>,
    pub(super) time: Option<TimeCapture>,
    pub(super) level: Option<LevelCapture>,
    pub(super) message: Option<usize>,
    pub(super) trace_id: Option<usize>,
    pub(super) span_id: Option<usize>,
    pub(super) traceparent: Option<usize>,
    /// Values that mean "absent" (`-` in access logs): such captures are left out.
    pub(super) skip_values: Vec<Vec<u8>>,
    /// Captures read further by their own regex (an HTTP request line into method, path...).
    pub(super) splits: Vec<Split>,
}

/// A capture split by a second regex: when it matches, its captures replace the first.
#[derive(Debug)]
pub(super) struct Split {
    pub capture: Capture,
    pub regex: IdRegex,
    pub attributes: Vec<Capture>,
}

/// A capture that becomes an attribute.
#[derive(Debug)]
pub(super) struct Capture {
    pub group: usize,
    /// The attribute name (the group name with `__` read as `.`), cloned into every record
    /// without an allocation (see `definition::intern`).
    pub name: AttributeName,
    pub kind: ValueType,
}

#[derive(Debug)]
pub(super) struct TimeCapture {
    pub group: usize,
    /// Tried in order.
    pub formats: Vec<TimeFormat>,
    /// A capture holding the zone (`UTC`, `+0200`, `Europe/Paris`) for times without offset.
    pub zone_group: Option<usize>,
    /// The attribute name used when the time does not parse.
    pub name: String,
}

#[derive(Debug)]
pub(super) struct LevelCapture {
    pub group: usize,
    pub rule: LevelRule,
    pub name: String,
}

/// What a regex parser found in a line.
pub(super) enum Outcome {
    Parsed,
    NoMatch,
}

impl RegexSpec {
    /// Fills `record` from `line`; `NoMatch` leaves it untouched. A record of several lines
    /// (multiline framing) is matched on its first line; the others follow the message, and a
    /// stack trace among them becomes the `exception.*` attributes.
    pub(super) fn parse(&self, line: &[u8], context: TimeContext<'_>, record: &mut Record) -> Outcome {
        let (first, rest) = match memchr::memchr(b'\n', line) {
            Some(end) => (line[..end].strip_suffix(b"\r").unwrap_or(&line[..end]), Some(&line[end + 1..])),
            None => (line, None),
        };
        let outcome = with_locations(&self.regex, |locations| {
            if self.regex.captures_read(locations, first).is_none() {
                return Outcome::NoMatch;
            }
            self.fill(first, locations, context, record);
            Outcome::Parsed
        });
        if let (Outcome::Parsed, Some(rest)) = (&outcome, rest) {
            record.message.push('\n');
            let from = record.message.len();
            record.message.push_str(&String::from_utf8_lossy(rest));
            exception::annotate_message(record, from);
        }
        outcome
    }

    fn fill(&self, line: &[u8], locations: &CaptureLocations, context: TimeContext<'_>, record: &mut Record) {
        let get = |group: usize| locations.get(group).map(|(start, end)| &line[start..end]);
        let present = |group: usize| get(group).filter(|value| !self.skip_values.iter().any(|skip| skip == value));
        for capture in &self.attributes {
            if let Some(value) = present(capture.group) {
                record.attributes.insert(capture.name.clone(), capture.kind.convert_bytes(value));
            }
        }
        for split in &self.splits {
            if let Some(value) = present(split.capture.group) {
                self.split(split, value, record);
            }
        }
        if let Some(time) = &self.time {
            if let Some(text) = present(time.group) {
                match self.time_of(time, text, get, context) {
                    Some(ts) => record.timestamp = ts,
                    None => {
                        record.attributes.insert(time.name.as_str(), Value::from(lossy(text)));
                    }
                }
            }
        }
        if let Some(level) = &self.level {
            if let Some(text) = present(level.group) {
                self.set_level(level, text, record);
            }
        }
        // A message capture that did not take part (RFC 5424 without MSG) is an empty message.
        record.message = match self.message {
            Some(group) => get(group).map(lossy).unwrap_or_default(),
            None => lossy(line),
        };
        self.set_ids(record, present);
    }

    fn split(&self, split: &Split, value: &[u8], record: &mut Record) {
        with_locations(&split.regex, |locations| self.fill_split(split, value, locations, record));
    }

    fn fill_split(&self, split: &Split, value: &[u8], locations: &mut CaptureLocations, record: &mut Record) {
        if split.regex.captures_read(locations, value).is_none() {
            record.attributes.insert(split.capture.name.clone(), split.capture.kind.convert_bytes(value));
            return;
        }
        for capture in &split.attributes {
            let Some((start, end)) = locations.get(capture.group) else {
                continue;
            };
            let part = &value[start..end];
            if !self.skip_values.iter().any(|skip| skip == part) {
                record.attributes.insert(capture.name.clone(), capture.kind.convert_bytes(part));
            }
        }
    }

    fn time_of<'l>(
        &self,
        time: &TimeCapture,
        text: &[u8],
        get: impl Fn(usize) -> Option<&'l [u8]>,
        context: TimeContext<'_>,
    ) -> Option<jiff::Timestamp> {
        let zone =
            time.zone_group.and_then(get).and_then(|z| std::str::from_utf8(z).ok()).and_then(|z| parse_zone(z).ok());
        let context = match &zone {
            Some(zone) => TimeContext { observed: context.observed, zone },
            None => context,
        };
        time.formats.iter().find_map(|format| format.parse(text, context))
    }

    fn set_level(&self, level: &LevelCapture, text: &[u8], record: &mut Record) {
        let found = std::str::from_utf8(text).ok().and_then(|t| level.rule.level_of_text(t));
        match found {
            Some(found) => {
                record.level = Some(found);
                if level.rule.from == LevelFrom::SyslogPriority {
                    add_syslog_facility(text, record);
                }
            }
            // An HTTP status stays an attribute in its own right (see `compile`).
            None if level.rule.from == LevelFrom::HttpStatus => {}
            None => {
                record.attributes.insert(level.name.as_str(), Value::from(lossy(text)));
            }
        }
    }

    fn set_ids<'l>(&self, record: &mut Record, present: impl Fn(usize) -> Option<&'l [u8]>) {
        let text = |group: Option<usize>| group.and_then(&present).and_then(|v| std::str::from_utf8(v).ok());
        if let Some(id) = text(self.trace_id) {
            match TraceId::parse_hex(id) {
                Some(id) => record.trace_id = Some(id),
                None => drop(record.attributes.insert("trace_id", Value::from(id))),
            }
        }
        if let Some(id) = text(self.span_id) {
            match SpanId::parse_hex(id) {
                Some(id) => record.span_id = Some(id),
                None => drop(record.attributes.insert("span_id", Value::from(id))),
            }
        }
        if let Some(parent) = text(self.traceparent) {
            match parse_traceparent(parent) {
                Some((trace, span)) => {
                    record.trace_id = record.trace_id.or(Some(trace));
                    record.span_id = record.span_id.or(Some(span));
                }
                None => drop(record.attributes.insert("traceparent", Value::from(parent))),
            }
        }
    }
}

thread_local! {
    /// Capture slots reused across lines, one set per regex this thread has run: a tailer
    /// thread runs one or two regexes, so the list stays short.
    static LOCATIONS: RefCell<Vec<(u64, CaptureLocations)>> = const { RefCell::new(Vec::new()) };
}

/// A regex with a process-unique id, the key of its cached capture slots.
#[derive(Debug)]
pub(super) struct IdRegex {
    id: u64,
    pub regex: Regex,
}

impl IdRegex {
    pub fn new(regex: Regex) -> IdRegex {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        IdRegex { id: NEXT.fetch_add(1, Ordering::Relaxed), regex }
    }
}

impl std::ops::Deref for IdRegex {
    type Target = Regex;
    fn deref(&self) -> &Regex {
        &self.regex
    }
}

/// Runs `f` with capture slots for `regex`, reusing this thread's instead of allocating.
fn with_locations<T>(regex: &IdRegex, f: impl FnOnce(&mut CaptureLocations) -> T) -> T {
    let key = regex.id;
    let regex = &regex.regex;
    let cached = LOCATIONS.with(|cell| {
        let mut cache = cell.borrow_mut();
        let index = cache.iter().position(|(k, _)| *k == key)?;
        Some(cache.swap_remove(index).1)
    });
    let mut locations = cached.unwrap_or_else(|| regex.capture_locations());
    let result = f(&mut locations);
    LOCATIONS.with(|cell| {
        let mut cache = cell.borrow_mut();
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push((key, locations));
    });
    result
}

/// `syslog.facility` from a PRI value (the severity went into the level).
fn add_syslog_facility(text: &[u8], record: &mut Record) {
    if let Some(priority) = std::str::from_utf8(text).ok().and_then(|t| t.parse::<i64>().ok()) {
        record.attributes.insert("syslog.facility", Value::from(priority / 8));
        record.attributes.insert("syslog.severity", Value::from(priority % 8));
    }
}

/// Captured bytes as text; invalid UTF-8 becomes U+FFFD.
fn lossy(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}
