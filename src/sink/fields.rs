//! Record fields by name, for Loki labels and structured metadata and Elasticsearch index
//! templates: `level`, `message`, `trace_id`, `span_id`, `input`, `path`, then resource
//! attributes and record attributes. A name with `_` also matches a key with `.` in its place
//! (`service_name` finds `service.name`), since label names cannot contain dots.

use std::borrow::Cow;

use crate::record::{Record, Value};

/// A field name resolved once, for lookups per record: the Record's own fields directly,
/// any other name in the resource, then the attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldRef {
    Level,
    Message,
    TraceId,
    SpanId,
    Input,
    Path,
    Named(Box<str>),
}

impl FieldRef {
    pub fn new(name: &str) -> FieldRef {
        match name {
            "level" => FieldRef::Level,
            "message" => FieldRef::Message,
            "trace_id" => FieldRef::TraceId,
            "span_id" => FieldRef::SpanId,
            "input" | "source_input" => FieldRef::Input,
            "path" | "filename" | "source_path" | "log_file_path" => FieldRef::Path,
            _ => FieldRef::Named(name.into()),
        }
    }

    /// The value in `record` as text, if it has one.
    pub fn get<'a>(&self, record: &'a Record) -> Option<Cow<'a, str>> {
        match self {
            FieldRef::Level => record.level.map(|level| Cow::Borrowed(level.as_str())),
            FieldRef::Message => Some(Cow::Borrowed(&record.message)),
            FieldRef::TraceId => record.trace_id.map(|id| Cow::Owned(id.to_string())),
            FieldRef::SpanId => record.span_id.map(|id| Cow::Owned(id.to_string())),
            FieldRef::Input => record.source.as_ref().map(|s| Cow::Borrowed(&*s.input)),
            FieldRef::Path => record.source.as_ref().map(|s| Cow::Borrowed(&*s.path)),
            FieldRef::Named(name) => named(record, name),
        }
    }
}

/// A resource attribute, else a record attribute, called `name`.
fn named<'a>(record: &'a Record, name: &str) -> Option<Cow<'a, str>> {
    if let Some((_, value)) = record.resource.iter().find(|(key, _)| same_name(key, name)) {
        return Some(Cow::Borrowed(value));
    }
    let value = record
        .attributes
        .get(name)
        .or_else(|| record.attributes.iter().find_map(|(key, value)| same_name(key, name).then_some(value)))?;
    Some(value_text(value))
}

/// An attribute value as text: strings as they are, everything else as JSON.
pub(crate) fn value_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(text) => Cow::Borrowed(text),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

/// `key` equals `name`, where a `.` in `key` may be written `_` in `name`.
fn same_name(key: &str, name: &str) -> bool {
    key.len() == name.len() && key.bytes().zip(name.bytes()).all(|(k, n)| k == n || (k == b'.' && n == b'_'))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::record::{Level, Source};

    fn field<'a>(record: &'a Record, name: &str) -> Option<Cow<'a, str>> {
        FieldRef::new(name).get(record)
    }

    #[test]
    fn finds_fields_resource_and_attributes() {
        let resource = Arc::new(vec![("service.name".to_owned(), "checkout".to_owned())]);
        let mut record = Record::new("hi".into(), jiff::Timestamp::UNIX_EPOCH, resource);
        record.level = Some(Level::Warn);
        record.attributes.insert("http.status", 402.into());
        record.attributes.insert("user", "u-1".into());
        record.source = Some(Source { input: "app".into(), path: "/a.log".into(), offset: 7 });
        assert_eq!(field(&record, "level").as_deref(), Some("warn"));
        assert_eq!(field(&record, "service_name").as_deref(), Some("checkout"));
        assert_eq!(field(&record, "service.name").as_deref(), Some("checkout"));
        assert_eq!(field(&record, "http_status").as_deref(), Some("402"));
        assert_eq!(field(&record, "user").as_deref(), Some("u-1"));
        assert_eq!(field(&record, "filename").as_deref(), Some("/a.log"));
        assert_eq!(field(&record, "nope"), None);
    }
}
