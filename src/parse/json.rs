//! The json parser: one JSON object per line. The object is read straight into the Record with
//! borrowed keys: the promoted fields (time, level, message, trace and span ids) are converted
//! as they are met and never become attribute values; every other key becomes an attribute,
//! nested objects and arrays included. ECS nests some of them (`{"log":{"level":..}}`,
//! `{"trace":{"id":..}}`); those are promoted too.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::fields::{FieldSpec, Role, parse_traceparent, time_of_value};
use super::promote::Promoted;
use super::timestamp::TimeContext;
use crate::record::{Attributes, Record, SpanId, TraceId, Value};

/// Reads `line` into `record`; on error the record is left for the caller to reset.
pub(super) fn parse(
    line: &[u8],
    spec: &FieldSpec,
    context: TimeContext<'_>,
    record: &mut Record,
) -> Result<(), String> {
    let first = line.iter().position(|b| !b.is_ascii_whitespace());
    if first.is_none_or(|i| line[i] != b'{') {
        return Err("not a JSON object".to_owned());
    }
    // One UTF-8 check for the whole line is cheaper than one per string.
    let text = std::str::from_utf8(line).map_err(|e| format!("invalid UTF-8 in JSON: {e}"))?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let mut promoted = Promoted::default();
    let seed = LineSeed { spec, context, attributes: &mut record.attributes, promoted: &mut promoted };
    seed.deserialize(&mut deserializer).map_err(|e| format!("invalid JSON: {e}"))?;
    deserializer.end().map_err(|e| format!("invalid JSON: {e}"))?;
    promote_nested(spec, &mut record.attributes, &mut promoted);
    promoted.apply(record);
    spec.convert_types(&mut record.attributes);
    Ok(())
}

/// ECS's nested forms: `log.level`, `trace.id`, `span.id` as objects.
fn promote_nested(spec: &FieldSpec, attributes: &mut Attributes, promoted: &mut Promoted) {
    if !promoted.has_level() {
        if let Some(level) = take_nested(attributes, "log", "level", |v| spec.level.level_of_value(v)) {
            promoted.level(u8::MAX, level, &spec.names, attributes);
        }
    }
    if !promoted.has_trace_id() {
        if let Some(id) = take_nested(attributes, "trace", "id", |v| v.as_str().and_then(TraceId::parse_hex)) {
            promoted.trace_id(u8::MAX, id, &spec.names, attributes);
        }
    }
    if !promoted.has_span_id() {
        if let Some(id) = take_nested(attributes, "span", "id", |v| v.as_str().and_then(SpanId::parse_hex)) {
            promoted.span_id(u8::MAX, id, &spec.names, attributes);
        }
    }
}

/// Removes `outer.inner` when it converts, and `outer` when that leaves it empty.
fn take_nested<T>(
    attributes: &mut Attributes,
    outer: &str,
    inner: &str,
    convert: impl Fn(&Value) -> Option<T>,
) -> Option<T> {
    let Some(Value::Object(object)) = attributes.get_mut(outer) else {
        return None;
    };
    let converted = object.get(inner).and_then(convert)?;
    object.remove(inner);
    if object.is_empty() {
        attributes.remove(outer);
    }
    Some(converted)
}

/// Deserializes the top-level object.
struct LineSeed<'a, 'z> {
    spec: &'a FieldSpec,
    context: TimeContext<'z>,
    attributes: &'a mut Attributes,
    promoted: &'a mut Promoted,
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            match self.spec.names.role_of(&key) {
                None => {
                    let value: Value = map.next_value()?;
                    self.attributes.insert(key, value);
                }
                Some((role, rank)) => {
                    let value: Field<'de> = map.next_value()?;
                    self.promote(key, role, rank, value);
                }
            }
        }
        Ok(())
    }
}

impl LineSeed<'_, '_> {
    /// Promotes a well-known field when its value converts; otherwise keeps it as an attribute.
    fn promote(&mut self, key: Cow<'_, str>, role: Role, rank: u8, value: Field<'_>) {
        let (names, attributes, promoted) = (&self.spec.names, &mut *self.attributes, &mut *self.promoted);
        let text = value.as_str();
        let kept = match role {
            Role::Message => match value {
                Field::Text(text) => {
                    promoted.message(rank, text.into_owned(), names, attributes);
                    return;
                }
                other => other,
            },
            Role::Level => {
                let level = match &value {
                    Field::Text(text) => self.spec.level.level_of_text(text),
                    Field::Other(Value::Number(n)) => n.as_i64().and_then(|n| self.spec.level.level_of_number(n)),
                    Field::Other(_) => None,
                };
                if let Some(level) = level {
                    return promoted.level(rank, level, names, attributes);
                }
                value
            }
            Role::Time => {
                let ts = match &value {
                    Field::Text(text) => self.spec.time_format.parse_str(text, self.context),
                    Field::Other(other) => time_of_value(other, &self.spec.time_format, self.context),
                };
                if let Some(ts) = ts {
                    return promoted.time(rank, ts, names, attributes);
                }
                value
            }
            Role::TraceId => {
                if let Some(id) = text.and_then(TraceId::parse_hex) {
                    return promoted.trace_id(rank, id, names, attributes);
                }
                value
            }
            Role::SpanId => {
                if let Some(id) = text.and_then(SpanId::parse_hex) {
                    return promoted.span_id(rank, id, names, attributes);
                }
                value
            }
            Role::TraceParent => {
                if let Some(ids) = text.and_then(parse_traceparent) {
                    return promoted.traceparent(rank, ids, names, attributes);
                }
                value
            }
        };
        attributes.insert(key, kept.into_value());
    }
}

/// An object key, borrowed from the line unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v)))
    }
}

/// The value of a well-known field: text borrowed from the line, or any other JSON value.
enum Field<'de> {
    Text(Cow<'de, str>),
    Other(Value),
}

impl Field<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Field::Text(text) => Some(text),
            Field::Other(_) => None,
        }
    }

    fn into_value(self) -> Value {
        match self {
            Field::Text(text) => Value::from(text),
            Field::Other(value) => value,
        }
    }
}

impl<'de> de::Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Text(Cow::Owned(v)))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::from(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Other(Value::Null))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Field<'de>, A::Error> {
        de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'de>, A::Error> {
        de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map)).map(Field::Other)
    }
}
