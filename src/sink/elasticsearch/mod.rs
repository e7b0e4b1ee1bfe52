//! The Elasticsearch (and OpenSearch) sink: `POST <endpoint>/_bulk`, NDJSON, gzip. Documents
//! are ECS (`@timestamp`, `log.level`, `message`, `trace.id`, `service.name`,
//! `log.file.path`, `log.offset`...), written with `create` into a data stream by default, or
//! `index` into a plain index; the index is a template with `{field}` and strftime date
//! placeholders. With `id: deterministic`, a document's `_id` comes from the file identity and
//! offset, so a retried request cannot index a line twice (a 409 on `create` then means "already
//! there"). Per-item results: 429 and 5xx items are retried alone, other failures (mapping
//! conflicts...) are dead-lettered with Elasticsearch's error.

pub mod settings;

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde::ser::{SerializeMap, Serializer};

use super::batch::Entry;
use super::fields::FieldRef;
use super::http::Request;
use super::loki::gzip;
use super::retry::{Outcome, classify_status};
use super::service::{AnyOrder, Protocol, Router};
use crate::record::{Record, Rfc3339Nanos};
pub use settings::{BulkOp, DocumentId, Settings};

/// The Elasticsearch protocol.
pub(crate) struct Elasticsearch {
    index: IndexTemplate,
    op: BulkOp,
    deterministic_ids: bool,
    gzip: bool,
}

impl Elasticsearch {
    pub fn new(config: &Settings) -> Elasticsearch {
        Elasticsearch {
            index: IndexTemplate::parse(&config.index),
            op: config.op,
            deterministic_ids: config.deterministic_ids,
            gzip: config.gzip,
        }
    }

    fn op_name(&self) -> &'static str {
        match self.op {
            BulkOp::Create => "create",
            BulkOp::Index => "index",
        }
    }

    /// Appends the action line and the document line of one record.
    fn write_item(&self, entry: &Entry, out: &mut Vec<u8>) -> Result<(), String> {
        let record = entry.record();
        let index = self.index.render(record);
        let id = if self.deterministic_ids { document_id(entry) } else { None };
        let mut action = serde_json::Serializer::new(&mut *out);
        let mut outer = action.serialize_map(Some(1)).map_err(|e| e.to_string())?;
        outer
            .serialize_entry(self.op_name(), &Action { index: &index, id: id.as_deref() })
            .map_err(|e| e.to_string())?;
        SerializeMap::end(outer).map_err(|e| e.to_string())?;
        out.push(b'\n');
        serde_json::to_writer(&mut *out, &EcsDocument(record)).map_err(|e| e.to_string())?;
        out.push(b'\n');
        Ok(())
    }

    /// Per-item results of a 200 bulk response.
    fn items(&self, body: &[u8], count: usize) -> Outcome {
        let response: BulkResponse = match serde_json::from_slice(body) {
            Ok(response) => response,
            Err(error) => return Outcome::Retry { after: None, reason: format!("unreadable bulk response: {error}") },
        };
        if !response.errors {
            return Outcome::Sent;
        }
        if response.items.len() != count {
            let reason = format!("bulk response has {} items for {count} documents", response.items.len());
            return Outcome::Retry { after: None, reason };
        }
        let mut retry = Vec::new();
        let mut rejected = Vec::new();
        for (index, item) in response.items.iter().enumerate() {
            let Some(result) = item.values().next() else { continue };
            match result.status {
                200..=299 => {}
                // `create` of an _id that exists: a retry of a document already indexed.
                409 if self.deterministic_ids && self.op == BulkOp::Create => {}
                429 | 500..=599 => retry.push(index),
                status => {
                    let error = result.error.as_ref().map_or_else(String::new, ToString::to_string);
                    rejected.push((index, format!("HTTP {status}: {error}")));
                }
            }
        }
        Outcome::Partial { retry, rejected, after: None }
    }
}

impl Protocol for Elasticsearch {
    fn router(&self) -> Box<dyn Router> {
        Box::new(AnyOrder)
    }

    fn encode(&self, entries: &[Entry]) -> Result<Request, String> {
        let mut raw = Vec::with_capacity(entries.len() * 512);
        for entry in entries {
            self.write_item(entry, &mut raw)?;
        }
        let (body, content_encoding) = if self.gzip { (gzip(&raw)?, Some("gzip")) } else { (raw, None) };
        Ok(Request {
            body: Bytes::from(body),
            content_type: "application/x-ndjson",
            content_encoding,
            records: entries.len(),
            groups: Vec::new(),
        })
    }

    fn classify(&self, request: &Request, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
        match status {
            200 => self.items(body, request.records),
            // Too large for http.max_content_length: halve it rather than dead-letter it.
            413 if request.records > 1 => {
                let half = request.records / 2;
                Outcome::Split(vec![(0..half).collect(), (half..request.records).collect()])
            }
            _ => classify_status(status, retry_after, body),
        }
    }
}

#[derive(serde::Serialize)]
struct Action<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// `<input>-<dev>-<inode>-<checksum>-<offset>` in hex: the same line of the same file always
/// gets the same id, across retries and restarts, and a new file reusing an inode does not.
/// None for records that come from no file.
fn document_id(entry: &Entry) -> Option<String> {
    let record = entry.record();
    let source = record.source.as_ref()?;
    let file = entry.pending.batch.ack.as_ref()?.file;
    Some(format!("{}-{:x}-{:x}-{:x}-{:x}", source.input, file.dev, file.inode, file.checksum, source.offset))
}

/// A record as an ECS document.
struct EcsDocument<'a>(&'a Record);

impl serde::Serialize for EcsDocument<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("@timestamp", &Rfc3339Nanos(record.timestamp))?;
        map.serialize_entry("message", &record.message)?;
        if let Some(level) = record.level {
            map.serialize_entry("log.level", level.as_str())?;
            map.serialize_entry("event.severity", &level.severity_number())?;
        }
        map.serialize_entry("event.created", &Rfc3339Nanos(record.observed_timestamp))?;
        if let Some(trace_id) = &record.trace_id {
            map.serialize_entry("trace.id", &trace_id.to_string())?;
        }
        if let Some(span_id) = &record.span_id {
            map.serialize_entry("span.id", &span_id.to_string())?;
        }
        for (key, value) in record.resource.iter() {
            map.serialize_entry(key, value)?;
        }
        if let Some(source) = &record.source {
            map.serialize_entry("log.file.path", &*source.path)?;
            map.serialize_entry("log.offset", &source.offset)?;
            map.serialize_entry("event.dataset", &*source.input)?;
        }
        if !record.attributes.is_empty() {
            map.serialize_entry("attributes", &record.attributes)?;
        }
        map.end()
    }
}

/// An index name with `{field}` placeholders and strftime date specifiers (`%Y.%m.%d`).
#[derive(Debug)]
struct IndexTemplate {
    parts: Vec<Part>,
    has_date: bool,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Field(FieldRef),
}

impl IndexTemplate {
    fn parse(template: &str) -> IndexTemplate {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}') else { break };
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            parts.push(Part::Field(FieldRef::new(rest[open + 1..open + close].trim())));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        IndexTemplate { parts, has_date: template.contains('%') }
    }

    /// The index of `record`: placeholders filled (missing fields become `unknown`), dates
    /// from the record's timestamp in UTC, lowercased as Elasticsearch requires.
    fn render(&self, record: &Record) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(field) => {
                    let value = field.get(record).unwrap_or(Cow::Borrowed("unknown"));
                    out.extend(value.chars().map(|c| if "\\/*?\"<>| ,#:".contains(c) { '_' } else { c }));
                }
            }
        }
        if self.has_date {
            let mut dated = Vec::with_capacity(out.len() + 8);
            let zoned = record.timestamp.to_zoned(jiff::tz::TimeZone::UTC);
            if write!(dated, "{}", zoned.strftime(&out)).is_ok() {
                out = String::from_utf8_lossy(&dated).into_owned();
            }
        }
        out.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::{Acknowledgements, Batch, FileKey};
    use crate::record::{Level, Source, TraceId};
    use crate::sink::batch::Ledger;
    use crate::telemetry::metrics::SinkMetrics;

    fn sink(yaml: &str) -> Elasticsearch {
        match crate::sink::settings::from_yaml(yaml).target {
            crate::sink::SinkTarget::Elasticsearch(settings) => Elasticsearch::new(&settings),
            other => panic!("not an elasticsearch sink: {other:?}"),
        }
    }

    fn entries(n: usize) -> Vec<Entry> {
        let acks = Arc::new(Acknowledgements::new(1));
        let file = FileKey { dev: 1, inode: 0xab, checksum: 0xcd };
        acks.open(file, "/a.log", 0);
        let resource = Arc::new(vec![("service.name".to_owned(), "Checkout".to_owned())]);
        let records = (0..n)
            .map(|i| {
                let ts = jiff::Timestamp::from_second(1_795_000_000).expect("ts");
                let mut record = Record::new(format!("line {i}"), ts, Arc::clone(&resource));
                record.level = Some(Level::Error);
                record.trace_id = TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e4736");
                record.attributes.insert("user", "u-1".into());
                record.source = Some(Source { input: "app".into(), path: "/a.log".into(), offset: i as u64 * 16 });
                record
            })
            .collect();
        let ledger = Ledger::new("es".into(), Arc::clone(&acks), &SinkMetrics::default());
        let pending = ledger.admit(Arc::new(Batch { records, ack: Some(acks.issue(file, 100, 0)) })).expect("pending");
        (0..n as u32).map(|index| Entry { pending: Arc::clone(&pending), index }).collect()
    }

    fn lines(request: &Request) -> Vec<serde_json::Value> {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&request.body[..]), &mut text).expect("gunzip");
        text.lines().map(|l| serde_json::from_str(l).expect("ndjson")).collect()
    }

    #[test]
    fn bulk_body_is_create_actions_and_ecs_documents() {
        let es = sink(
            "{name: es, type: elasticsearch, endpoint: 'http://x', index: 'logs-{service_name}-%Y.%m', id: deterministic}",
        );
        let request = es.encode(&entries(2)).expect("encode");
        assert_eq!(request.content_type, "application/x-ndjson");
        let lines = lines(&request);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["create"]["_index"], "logs-checkout-2026.11");
        assert_eq!(lines[2]["create"]["_id"], "app-1-ab-cd-10");
        let doc = &lines[1];
        assert_eq!(doc["message"], "line 0");
        assert_eq!(doc["log.level"], "error");
        assert_eq!(doc["trace.id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(doc["service.name"], "Checkout");
        assert_eq!(doc["log.file.path"], "/a.log");
        assert_eq!(doc["log.offset"], 0);
        assert_eq!(doc["attributes"]["user"], "u-1");
        assert!(doc["@timestamp"].as_str().expect("ts").ends_with('Z'));
    }

    #[test]
    fn item_errors_retry_429_and_dead_letter_400() {
        let es = sink("{name: es, type: elasticsearch, endpoint: 'http://x', id: deterministic}");
        let body = br#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse"}}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}},
            {"create":{"status":503}}]}"#;
        let Outcome::Partial { retry, rejected, .. } = es.items(body, 5) else { panic!("partial") };
        assert_eq!(retry, vec![1, 4]);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].0, 2);
        assert!(rejected[0].1.contains("mapper_parsing_exception"), "{}", rejected[0].1);
        assert_eq!(es.items(br#"{"errors":false,"items":[]}"#, 5), Outcome::Sent);
    }

    #[test]
    fn plain_index_with_op_index() {
        let es = sink(
            "{name: es, type: elasticsearch, endpoint: 'http://x', index: app-logs, op: index, compression: none}",
        );
        let request = es.encode(&entries(1)).expect("encode");
        let first: serde_json::Value =
            serde_json::from_slice(request.body.split(|b| *b == b'\n').next().expect("line")).expect("json");
        assert_eq!(first, serde_json::json!({"index": {"_index": "app-logs"}}));
    }
}
