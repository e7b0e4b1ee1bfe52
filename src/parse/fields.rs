//! The well-known fields every parser promotes into the Record (time, level, message, trace and
//! span ids), the names they go by in structured logs, and the conversions from text or
//! numbers into typed values. Shared by the json, logfmt and regex parsers.

use jiff::Timestamp;

use super::timestamp::{self, TimeContext, TimeFormat};
use crate::record::{Level, SpanId, TraceId, Value};

/// A field the parsers promote out of the attributes into the Record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Time,
    Level,
    Message,
    TraceId,
    SpanId,
    /// A W3C `traceparent` carrying both ids.
    TraceParent,
}

/// Names that structured logs use for the promoted fields, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldNames {
    lists: [(Role, Vec<String>); 6],
    /// Every name with its role and rank, bucketed by length: a key is compared only with the
    /// names of its own length (this lookup runs for every key of every line).
    by_length: Vec<Vec<(String, Role, u8)>>,
}

const ROLES: [Role; 6] = [Role::Message, Role::Level, Role::Time, Role::TraceId, Role::SpanId, Role::TraceParent];

impl Default for FieldNames {
    /// The common names: zap, zerolog, logrus, slog, pino, bunyan, winston, structlog, ECS.
    fn default() -> FieldNames {
        let names = |role: Role| -> &'static [&'static str] {
            match role {
                Role::Time => &["timestamp", "@timestamp", "time", "ts", "t", "datetime"],
                Role::Level => &["level", "lvl", "severity", "loglevel", "log.level", "severity_text", "levelname"],
                Role::Message => &["message", "msg", "log", "body"],
                Role::TraceId => &["trace_id", "traceId", "trace.id", "traceid", "dd.trace_id"],
                Role::SpanId => &["span_id", "spanId", "span.id", "spanid", "dd.span_id"],
                Role::TraceParent => &["traceparent"],
            }
        };
        let lists = ROLES.map(|role| (role, names(role).iter().map(|n| (*n).to_owned()).collect()));
        let mut field_names = FieldNames { lists, by_length: Vec::new() };
        field_names.index();
        field_names
    }
}

impl FieldNames {
    fn index(&mut self) {
        self.by_length.clear();
        for (role, names) in &self.lists {
            for (rank, name) in names.iter().enumerate() {
                if self.by_length.len() <= name.len() {
                    self.by_length.resize(name.len() + 1, Vec::new());
                }
                self.by_length[name.len()].push((name.clone(), *role, rank.min(usize::from(u8::MAX)) as u8));
            }
        }
    }

    fn list(&self, role: Role) -> &[String] {
        self.lists.iter().find(|(r, _)| *r == role).map_or(&[], |(_, names)| names.as_slice())
    }

    /// Which promoted field `key` names, and its rank among that field's names (0 is best).
    #[inline]
    pub fn role_of(&self, key: &str) -> Option<(Role, u8)> {
        let bucket = self.by_length.get(key.len())?;
        let key = key.as_bytes();
        // Names are short and every name in the bucket has the key's length: a byte loop that
        // stops at the first difference (nearly always the first byte) beats a memcmp call.
        bucket
            .iter()
            .find(|(name, _, _)| name.as_bytes().iter().zip(key).all(|(a, b)| a == b))
            .map(|(_, role, rank)| (*role, *rank))
    }

    /// The name at `rank` for `role` (to give a displaced field its key back).
    pub fn name(&self, role: Role, rank: u8) -> &str {
        self.list(role).get(usize::from(rank)).map_or("", String::as_str)
    }

    /// Puts `first` ahead of the defaults for `role` (a parser definition's key mapping).
    pub fn prefer(&mut self, role: Role, first: &str) {
        for (r, names) in &mut self.lists {
            names.retain(|name| name != first);
            if *r == role {
                names.insert(0, first.to_owned());
            }
        }
        self.index();
    }
}

/// How a structured (json or logfmt) parser finds and converts its promoted fields: the
/// defaults, or a parser definition's key mapping.
#[derive(Debug, Clone, Default)]
pub struct FieldSpec {
    pub names: FieldNames,
    pub time_format: TimeFormat,
    pub level: LevelRule,
    /// Attribute type conversions, by attribute name.
    pub types: Vec<(String, ValueType)>,
}

impl FieldSpec {
    /// Applies the type conversions to the attributes.
    pub fn convert_types(&self, attributes: &mut crate::record::Attributes) {
        for (name, kind) in &self.types {
            if let Some(value) = attributes.get_mut(name) {
                *value = kind.convert_value(std::mem::take(value));
            }
        }
    }
}

/// How a level field's value becomes a [`Level`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelRule {
    /// Exact values first (`LOG` → info, `*` → info for Redis...).
    pub map: Vec<(String, Level)>,
    pub from: LevelFrom,
}

/// What a level field holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LevelFrom {
    /// A level name (`WARN`, `warning`, `E`...) or a pino/bunyan number (10 trace ... 60 fatal).
    #[default]
    Name,
    /// A syslog PRI (`<34>` → 34): severity is PRI mod 8.
    SyslogPriority,
    /// An HTTP status: 5xx error, 4xx warn, others info.
    HttpStatus,
}

impl LevelRule {
    /// The level `text` stands for, if any.
    pub fn level_of_text(&self, text: &str) -> Option<Level> {
        if let Some((_, level)) = self.map.iter().find(|(value, _)| value == text) {
            return Some(*level);
        }
        match self.from {
            LevelFrom::Name => {
                Level::from_name(text).or_else(|| text.trim().parse::<i64>().ok().and_then(numeric_level))
            }
            LevelFrom::SyslogPriority => text.trim().parse::<i64>().ok().and_then(syslog_level),
            LevelFrom::HttpStatus => text.trim().parse::<i64>().ok().and_then(http_status_level),
        }
    }

    /// The level a number stands for under this rule.
    pub fn level_of_number(&self, number: i64) -> Option<Level> {
        if !self.map.is_empty() {
            let text = number.to_string();
            if let Some((_, level)) = self.map.iter().find(|(value, _)| *value == text) {
                return Some(*level);
            }
        }
        match self.from {
            LevelFrom::Name => numeric_level(number),
            LevelFrom::SyslogPriority => syslog_level(number),
            LevelFrom::HttpStatus => http_status_level(number),
        }
    }

    /// The level of a JSON value (a name or a number).
    pub fn level_of_value(&self, value: &Value) -> Option<Level> {
        match value {
            Value::String(text) => self.level_of_text(text),
            Value::Number(n) => self.level_of_number(n.as_i64()?),
            _ => None,
        }
    }
}

/// pino and bunyan: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
pub fn numeric_level(number: i64) -> Option<Level> {
    match number {
        10..=19 => Some(Level::Trace),
        20..=29 => Some(Level::Debug),
        30..=39 => Some(Level::Info),
        40..=49 => Some(Level::Warn),
        50..=59 => Some(Level::Error),
        60..=69 => Some(Level::Fatal),
        _ => None,
    }
}

/// RFC 5424 severities 0 emergency ... 7 debug, from a PRI value.
pub(super) fn syslog_level(priority: i64) -> Option<Level> {
    if !(0..=191).contains(&priority) {
        return None;
    }
    Some(match priority % 8 {
        0..=2 => Level::Fatal,
        3 => Level::Error,
        4 => Level::Warn,
        5 | 6 => Level::Info,
        _ => Level::Debug,
    })
}

fn http_status_level(status: i64) -> Option<Level> {
    match status {
        100..=399 => Some(Level::Info),
        400..=499 => Some(Level::Warn),
        500..=599 => Some(Level::Error),
        _ => None,
    }
}

/// A timestamp from a JSON value: text in `format`, or an epoch number.
pub fn time_of_value(value: &Value, format: &TimeFormat, context: TimeContext<'_>) -> Option<Timestamp> {
    match value {
        Value::String(text) => format.parse_str(text, context),
        Value::Number(n) => {
            n.as_i64().and_then(timestamp::parse_epoch_i64).or_else(|| n.as_f64().and_then(timestamp::parse_epoch_f64))
        }
        _ => None,
    }
}

/// `00-<trace-id>-<span-id>-<flags>`
pub fn parse_traceparent(text: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = text.trim().split('-');
    let version = parts.next()?;
    let trace = TraceId::parse_hex(parts.next()?)?;
    let span = SpanId::parse_hex(parts.next()?)?;
    let flags = parts.next()?;
    (version.len() == 2 && version != "ff" && flags.len() == 2).then_some((trace, span))
}

/// The type a parser definition converts a captured value to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    String,
    #[serde(alias = "integer")]
    Int,
    Float,
    #[serde(alias = "boolean")]
    Bool,
}

impl ValueType {
    /// Converts `text`; a value that does not convert stays a string.
    pub fn convert(self, text: impl AsRef<str> + Into<Value>) -> Value {
        let trimmed = text.as_ref().trim();
        let converted = match self {
            ValueType::String => None,
            ValueType::Int => trimmed.parse::<i64>().ok().map(Value::from),
            ValueType::Float => {
                trimmed.parse::<f64>().ok().and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            }
            ValueType::Bool => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Some(Value::Bool(true)),
                "false" | "no" | "off" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
        };
        converted.unwrap_or_else(|| text.into())
    }

    /// Converts captured bytes; only strings (and values that do not convert) are copied.
    pub fn convert_bytes(self, bytes: &[u8]) -> Value {
        let text = std::str::from_utf8(bytes).ok();
        let converted = match (self, text) {
            (ValueType::Int, Some(text)) => text.parse::<i64>().ok().map(Value::from),
            (ValueType::Float, Some(text)) => {
                text.parse::<f64>().ok().and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            }
            (ValueType::String, Some(text)) => return Value::from(text),
            _ => None,
        };
        match converted {
            Some(value) => value,
            None => self.convert(String::from_utf8_lossy(bytes)),
        }
    }

    /// Converts a value that is already typed only when it is a string.
    pub fn convert_value(self, value: Value) -> Value {
        match value {
            Value::String(text) => self.convert(text),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_ranks() {
        let names = FieldNames::default();
        assert_eq!(names.role_of("msg"), Some((Role::Message, 1)));
        assert_eq!(names.role_of("log.level"), Some((Role::Level, 4)));
        assert_eq!(names.role_of("user"), None);
        let mut custom = FieldNames::default();
        custom.prefer(Role::Message, "text");
        assert_eq!(custom.role_of("text"), Some((Role::Message, 0)));
        assert_eq!(custom.name(Role::Message, 2), "msg");
    }

    #[test]
    fn level_rules() {
        let name = LevelRule::default();
        assert_eq!(name.level_of_text("WARNING"), Some(Level::Warn));
        assert_eq!(name.level_of_text("50"), Some(Level::Error));
        assert_eq!(name.level_of_number(60), Some(Level::Fatal));
        let syslog = LevelRule { from: LevelFrom::SyslogPriority, ..LevelRule::default() };
        assert_eq!(syslog.level_of_text("34"), Some(Level::Fatal));
        assert_eq!(syslog.level_of_text("165"), Some(Level::Info));
        assert_eq!(syslog.level_of_text("192"), None);
        let http = LevelRule { from: LevelFrom::HttpStatus, ..LevelRule::default() };
        assert_eq!(http.level_of_text("503"), Some(Level::Error));
        assert_eq!(http.level_of_text("404"), Some(Level::Warn));
        let redis = LevelRule { map: vec![("#".into(), Level::Warn)], from: LevelFrom::Name };
        assert_eq!(redis.level_of_text("#"), Some(Level::Warn));
    }

    #[test]
    fn traceparent_and_types() {
        assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
        assert!(parse_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none());
        assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7").is_none());
        assert_eq!(ValueType::Int.convert("42"), Value::from(42));
        assert_eq!(ValueType::Int.convert("-"), Value::from("-"));
        assert_eq!(ValueType::Float.convert("0.25"), Value::from(0.25));
        assert_eq!(ValueType::Bool.convert("yes"), Value::Bool(true));
    }
}
