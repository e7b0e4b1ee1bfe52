//! The Loki sink: `POST <endpoint>/loki/api/v1/push`, protobuf + snappy (default) or JSON +
//! gzip. Stream labels come only from the configured `labels` (names and values sanitized);
//! a label that takes more than `max_label_values` distinct values is demoted to structured
//! metadata with a warning, so a misconfiguration cannot create thousands of streams.
//! Entries are sorted by timestamp within each stream, and each stream stays on one lane so
//! that concurrent requests never reorder it. A 400 for a request of several streams is
//! split per stream, so that only the stream Loki refuses is dead-lettered; 429 is retried.

pub mod proto;
pub mod settings;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
// Stream keys and label sets are hashed per record: foldhash is several times faster than
// SipHash on short strings, and randomly seeded.
use foldhash::fast::RandomState;

use super::batch::Entry;
use super::fields::FieldRef;
use super::http::Request;
use super::retry::{Outcome, classify_status};
use super::service::{Protocol, Router};
use crate::record::Record;
pub use settings::{LineFormat, LokiEncoding, Settings};

/// Label values longer than this are cut (Loki's default limit is 2048).
const MAX_LABEL_VALUE_BYTES: usize = 1024;

/// A stream of a request: its label text, its label pairs, and its entries' indices.
type Stream = (String, Vec<(String, String)>, Vec<usize>);

/// The Loki protocol: labels, encodings, and what Loki's answers mean.
pub(crate) struct Loki {
    /// Configured label fields and their sanitized label names.
    labels: Vec<(FieldRef, String)>,
    /// The same as (configured index, field, name), sorted and deduplicated by name: the order
    /// Loki's label text uses.
    sorted_labels: Vec<(usize, FieldRef, String)>,
    /// Configured structured metadata fields and their sanitized names.
    metadata: Vec<(FieldRef, String)>,
    /// Per configured label: demoted to structured metadata.
    demoted: Arc<Vec<AtomicBool>>,
    max_label_values: usize,
    encoding: LokiEncoding,
    gzip: bool,
    line_format: LineFormat,
}

impl Loki {
    pub fn new(config: &Settings) -> Loki {
        let named = |fields: &[String]| fields.iter().map(|f| (FieldRef::new(f), sanitize_name(f))).collect::<Vec<_>>();
        let labels = named(&config.labels);
        let mut sorted_labels: Vec<(usize, FieldRef, String)> =
            labels.iter().enumerate().map(|(i, (field, name))| (i, field.clone(), name.clone())).collect();
        sorted_labels.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
        sorted_labels.dedup_by(|a, b| a.2 == b.2);
        Loki {
            labels,
            sorted_labels,
            metadata: named(&config.structured_metadata),
            demoted: Arc::new(config.labels.iter().map(|_| AtomicBool::new(false)).collect()),
            max_label_values: config.max_label_values,
            encoding: config.encoding,
            gzip: config.gzip,
            line_format: config.line_format,
        }
    }

    /// Calls `visit(name, value)` for each stream label of `record`, in label-name order;
    /// values are sanitized. A record with none gets `service_name`: Loki refuses a stream
    /// without labels.
    fn visit_labels(&self, record: &Record, mut visit: impl FnMut(&str, &str)) {
        let mut any = false;
        for &(index, ref field, ref label) in &self.sorted_labels {
            if self.is_demoted(index) {
                continue;
            }
            if let Some(value) = field.get(record) {
                let value = sanitize_value(&value);
                if !value.is_empty() {
                    visit(label, &value);
                    any = true;
                }
            }
        }
        if !any {
            let service = record.resource.iter().find(|(k, _)| k == "service.name").map(|(_, v)| v.as_str());
            visit("service_name", &sanitize_value(service.unwrap_or("unknown_service")));
        }
    }

    /// The stream labels of `record` as Loki writes them, `{a="x", b="y"}`, into `out`.
    fn stream_labels(&self, record: &Record, out: &mut String) {
        out.clear();
        out.push('{');
        self.visit_labels(record, |name, value| {
            if out.len() > 1 {
                out.push_str(", ");
            }
            out.push_str(name);
            out.push_str("=\"");
            if value.contains(['\\', '"']) {
                for c in value.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '"' => out.push_str("\\\""),
                        _ => out.push(c),
                    }
                }
            } else {
                out.push_str(value);
            }
            out.push('"');
        });
        out.push('}');
    }

    /// The stream labels of `record` as name/value pairs (for the JSON encoding).
    fn label_pairs(&self, record: &Record) -> Vec<(String, String)> {
        let mut pairs = Vec::with_capacity(self.sorted_labels.len());
        self.visit_labels(record, |name, value| pairs.push((name.to_owned(), value.to_owned())));
        pairs
    }

    fn is_demoted(&self, index: usize) -> bool {
        self.demoted.get(index).is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// Structured metadata, (name, value): the configured fields, then demoted labels.
    fn structured_metadata<'a>(&'a self, record: &'a Record) -> Vec<(&'a str, Cow<'a, str>)> {
        let demoted = self.labels.iter().enumerate().filter(|(i, _)| self.is_demoted(*i)).map(|(_, l)| l);
        self.metadata
            .iter()
            .chain(demoted)
            .filter_map(|(field, name)| Some((name.as_str(), field.get(record)?)))
            .collect()
    }

    /// The entry's line: the message, or the record as JSON written into `buffer`.
    fn line<'a>(&self, record: &'a Record, buffer: &'a mut String) -> Result<&'a str, String> {
        match self.line_format {
            LineFormat::Message => Ok(&record.message),
            LineFormat::Json => {
                *buffer = serde_json::to_string(record).map_err(|e| e.to_string())?;
                Ok(buffer)
            }
        }
    }

    /// Groups entries into streams, each sorted by timestamp: (labels, pairs, entry indices).
    /// One reused buffer for the label text; allocations only for a new stream.
    fn streams(&self, entries: &[Entry], with_pairs: bool) -> Vec<Stream> {
        let mut by_labels: HashMap<String, usize, RandomState> = HashMap::default();
        let mut streams: Vec<Stream> = Vec::new();
        let mut text = String::with_capacity(128);
        // Consecutive records usually share a stream: then the label text is compared, not hashed.
        let mut previous = usize::MAX;
        for (index, entry) in entries.iter().enumerate() {
            self.stream_labels(entry.record(), &mut text);
            let stream = match streams.get(previous) {
                Some((labels, _, _)) if *labels == text => previous,
                _ => match by_labels.get(text.as_str()) {
                    Some(&stream) => stream,
                    None => {
                        by_labels.insert(text.clone(), streams.len());
                        let pairs = if with_pairs { self.label_pairs(entry.record()) } else { Vec::new() };
                        streams.push((text.clone(), pairs, Vec::new()));
                        streams.len() - 1
                    }
                },
            };
            streams[stream].2.push(index);
            previous = stream;
        }
        for (_, _, indices) in &mut streams {
            indices.sort_by_key(|&i| entries[i].record().timestamp);
        }
        streams
    }

    fn encode_protobuf(&self, entries: &[Entry]) -> Result<Request, String> {
        let streams = self.streams(entries, false);
        let estimate: usize = entries.iter().map(|entry| entry.record().message.len() + 32).sum();
        let mut push = proto::PushEncoder::with_capacity(estimate);
        let mut groups = Vec::with_capacity(streams.len());
        let mut json_line = String::new();
        for (labels, _, indices) in streams {
            push.begin_stream(&labels);
            for &i in &indices {
                let record = entries[i].record();
                let metadata = self.structured_metadata(record);
                let line = self.line(record, &mut json_line)?;
                push.entry(record.timestamp, line, metadata.iter().map(|(name, value)| (*name, value.as_ref())));
            }
            push.end_stream();
            groups.push(indices);
        }
        let raw = push.finish();
        let body = snap::raw::Encoder::new().compress_vec(&raw).map_err(|e| format!("snappy: {e}"))?;
        Ok(Request {
            body: Bytes::from(body),
            content_type: "application/x-protobuf",
            content_encoding: None,
            records: entries.len(),
            groups,
        })
    }

    fn encode_json(&self, entries: &[Entry]) -> Result<Request, String> {
        let streams = self.streams(entries, true);
        let mut json_line = String::new();
        let mut json_streams = Vec::with_capacity(streams.len());
        let mut groups = Vec::with_capacity(streams.len());
        for (_, pairs, indices) in streams {
            let stream: serde_json::Map<String, serde_json::Value> =
                pairs.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
            let mut values = Vec::with_capacity(indices.len());
            for &i in &indices {
                let record = entries[i].record();
                let nanos = record.timestamp.as_nanosecond().to_string();
                let metadata: serde_json::Map<String, serde_json::Value> = self
                    .structured_metadata(record)
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), serde_json::Value::String(value.into_owned())))
                    .collect();
                let line = self.line(record, &mut json_line)?.to_owned();
                let mut value = vec![serde_json::Value::String(nanos), serde_json::Value::String(line)];
                if !metadata.is_empty() {
                    value.push(serde_json::Value::Object(metadata));
                }
                values.push(serde_json::Value::Array(value));
            }
            json_streams.push(serde_json::json!({ "stream": stream, "values": values }));
            groups.push(indices);
        }
        let raw = serde_json::to_vec(&serde_json::json!({ "streams": json_streams })).map_err(|e| e.to_string())?;
        let (body, content_encoding) = if self.gzip { (gzip(&raw)?, Some("gzip")) } else { (raw, None) };
        Ok(Request {
            body: Bytes::from(body),
            content_type: "application/json",
            content_encoding,
            records: entries.len(),
            groups,
        })
    }
}

/// Gzips `raw` at a fast level: the network is rarely the bottleneck next to the CPU.
pub(crate) fn gzip(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::fast());
    encoder.write_all(raw).map_err(|e| format!("gzip: {e}"))?;
    encoder.finish().map_err(|e| format!("gzip: {e}"))
}

impl Protocol for Loki {
    fn router(&self) -> Box<dyn Router> {
        Box::new(LabelRouter {
            labels: self.labels.iter().map(|(field, name)| (field.clone(), name.clone())).collect(),
            seen: self.labels.iter().map(|_| HashSet::default()).collect(),
            hasher: RandomState::default(),
            demoted: Arc::clone(&self.demoted),
            budget: self.max_label_values,
            last: None,
        })
    }

    fn encode(&self, entries: &[Entry]) -> Result<Request, String> {
        match self.encoding {
            LokiEncoding::Protobuf => self.encode_protobuf(entries),
            LokiEncoding::Json => self.encode_json(entries),
        }
    }

    fn classify(&self, request: &Request, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
        match status {
            // One stream's entries were refused (out of order, too old, line too long...):
            // send each stream alone so that only the refused one is dead-lettered.
            400 if request.groups.len() > 1 => Outcome::Split(request.groups.clone()),
            // Larger than the server's body limit: halve it rather than dead-letter it.
            413 if request.records > 1 => {
                let half = request.records / 2;
                Outcome::Split(vec![(0..half).collect(), (half..request.records).collect()])
            }
            _ => classify_status(status, retry_after, body),
        }
    }
}

/// Routes each record by its stream, and enforces the distinct-values budget of each label.
struct LabelRouter {
    labels: Vec<(FieldRef, String)>,
    seen: Vec<HashSet<String, RandomState>>,
    hasher: RandomState,
    demoted: Arc<Vec<AtomicBool>>,
    budget: usize,
    /// The previous record's label values and key: consecutive records usually share their
    /// stream, which then costs a comparison per label instead of hashing. Only this router
    /// demotes labels, and it recomputes the key when it does, so the key stays current.
    last: Option<(Vec<Option<String>>, u64)>,
}

impl Router for LabelRouter {
    fn key(&mut self, record: &Record) -> Option<u64> {
        if let Some((values, key)) = &self.last {
            // Demoted labels are not part of the key.
            let same = |(index, ((field, _), last)): (usize, (&(FieldRef, String), &Option<String>))| {
                self.is_demoted(index) || field.get(record).as_deref() == last.as_deref()
            };
            if self.labels.iter().zip(values).enumerate().all(same) {
                return Some(*key);
            }
        }
        let mut values = self.last.take().map_or_else(|| vec![None; self.labels.len()], |(values, _)| values);
        for ((field, _), last) in self.labels.iter().zip(&mut values) {
            match (field.get(record), last) {
                (Some(value), Some(last)) => value.as_ref().clone_into(last),
                (value, last) => *last = value.map(Cow::into_owned),
            }
        }
        let key = self.new_key(&values);
        self.last = Some((values, key));
        Some(key)
    }
}

impl LabelRouter {
    fn is_demoted(&self, index: usize) -> bool {
        self.demoted.get(index).is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// Hashes the label values, demoting a label whose distinct values exceed the budget.
    fn new_key(&mut self, values: &[Option<String>]) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        for (index, ((_, label), value)) in self.labels.iter().zip(values).enumerate() {
            let Some(value) = value else { continue };
            if self.is_demoted(index) {
                continue;
            }
            let seen = &mut self.seen[index];
            if !seen.contains(value) {
                if seen.len() >= self.budget {
                    if let Some(flag) = self.demoted.get(index) {
                        flag.store(true, Ordering::Relaxed);
                    }
                    seen.clear();
                    tracing::warn!(
                        label = %label,
                        budget = self.budget,
                        "label has more distinct values than max_label_values; sending it as structured metadata from now on"
                    );
                    continue;
                }
                seen.insert(value.clone());
            }
            index.hash(&mut hasher);
            value.hash(&mut hasher);
        }
        hasher.finish()
    }
}

/// A valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, other characters become `_`.
pub(crate) fn sanitize_name(name: &str) -> String {
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value without control characters, at most [`MAX_LABEL_VALUE_BYTES`] long;
/// borrowed when it is fine as it is (the common case).
fn sanitize_value(value: &str) -> Cow<'_, str> {
    let value = value.trim();
    if value.len() <= MAX_LABEL_VALUE_BYTES && !value.chars().any(char::is_control) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len().min(MAX_LABEL_VALUE_BYTES));
    for c in value.chars() {
        if out.len() + c.len_utf8() > MAX_LABEL_VALUE_BYTES {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pipeline::Batch;
    use crate::record::Level;
    use crate::sink::batch::Ledger;
    use crate::telemetry::metrics::SinkMetrics;

    fn config(yaml: &str) -> Settings {
        match crate::sink::settings::from_yaml(yaml).target {
            crate::sink::SinkTarget::Loki(settings) => settings,
            other => panic!("not a loki sink: {other:?}"),
        }
    }

    fn entries(records: Vec<Record>) -> Vec<Entry> {
        let ledger =
            Ledger::new("l".into(), Arc::new(crate::pipeline::Acknowledgements::new(1)), &SinkMetrics::default());
        let pending = ledger.admit(Arc::new(Batch { records, ack: None })).expect("pending");
        (0..pending.batch.records.len() as u32).map(|index| Entry { pending: Arc::clone(&pending), index }).collect()
    }

    fn record(message: &str, level: Level, second: i64) -> Record {
        let resource = Arc::new(vec![("service.name".to_owned(), "checkout".to_owned())]);
        let mut record = Record::new(message.into(), jiff::Timestamp::from_second(second).expect("ts"), resource);
        record.level = Some(level);
        record.attributes.insert("user", format!("u-{second}").into());
        record
    }

    fn decode(request: &Request) -> proto::PushRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(&request.body).expect("snappy");
        proto::PushRequest::decode(raw.as_slice()).expect("protobuf")
    }

    #[test]
    fn protobuf_streams_are_sorted_and_carry_structured_metadata() {
        let loki = Loki::new(&config(
            "{name: l, type: loki, endpoint: 'http://x', labels: [service_name, level], structured_metadata: [user]}",
        ));
        let batch = entries(vec![
            record("late", Level::Info, 20),
            record("boom", Level::Error, 15),
            record("early", Level::Info, 10),
        ]);
        let request = loki.encode(&batch).expect("encode");
        assert_eq!(request.content_type, "application/x-protobuf");
        let push = decode(&request);
        assert_eq!(push.streams.len(), 2);
        let info = &push.streams[0];
        assert_eq!(info.labels, r#"{level="info", service_name="checkout"}"#);
        let lines: Vec<&str> = info.entries.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(lines, ["early", "late"]);
        assert_eq!(info.entries[0].structured_metadata[0].name, "user");
        assert_eq!(info.entries[0].structured_metadata[0].value, "u-10");
        assert_eq!(request.groups, vec![vec![2, 0], vec![1]]);
    }

    #[test]
    fn a_400_splits_per_stream_and_429_retries() {
        let loki = Loki::new(&config("{name: l, type: loki, endpoint: 'http://x', labels: [level]}"));
        let request =
            loki.encode(&entries(vec![record("a", Level::Info, 1), record("b", Level::Warn, 2)])).expect("encode");
        assert_eq!(loki.classify(&request, 400, None, b"out of order"), Outcome::Split(vec![vec![0], vec![1]]));
        let single = loki.encode(&entries(vec![record("a", Level::Info, 1)])).expect("encode");
        assert!(matches!(loki.classify(&single, 400, None, b"too old"), Outcome::Reject { .. }));
        assert!(matches!(loki.classify(&single, 429, None, b""), Outcome::Retry { .. }));
    }

    #[test]
    fn json_gzip_with_record_lines() {
        let loki = Loki::new(&config(
            "{name: l, type: loki, endpoint: 'http://x', encoding: json, line_format: json, structured_metadata: [user]}",
        ));
        let request = loki.encode(&entries(vec![record("hello", Level::Info, 5)])).expect("encode");
        assert_eq!(request.content_encoding, Some("gzip"));
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&request.body[..]), &mut text).expect("gunzip");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        let stream = &json["streams"][0];
        assert_eq!(stream["stream"]["service_name"], "checkout", "fallback label");
        assert_eq!(stream["values"][0][0], "5000000000");
        let line: serde_json::Value =
            serde_json::from_str(stream["values"][0][1].as_str().expect("line")).expect("json");
        assert_eq!(line["message"], "hello");
        assert_eq!(stream["values"][0][2]["user"], "u-5");
    }

    #[test]
    fn a_label_over_its_budget_is_demoted_to_structured_metadata() {
        let loki = Loki::new(&config(
            "{name: l, type: loki, endpoint: 'http://x', labels: [level, user], max_label_values: 3}",
        ));
        let mut router = loki.router();
        let records: Vec<Record> = (0..5).map(|i| record("m", Level::Info, i)).collect();
        for record in &records {
            router.key(record);
        }
        assert!(loki.is_demoted(1) && !loki.is_demoted(0));
        // A demoted label no longer tells streams (or lanes) apart.
        let (six, seven) = (record("m", Level::Info, 6), record("m", Level::Info, 7));
        assert_eq!(router.key(&six), router.key(&seven));
        assert_ne!(router.key(&six), router.key(&record("m", Level::Warn, 6)));
        let push = decode(&loki.encode(&entries(records)).expect("encode"));
        assert_eq!(push.streams.len(), 1);
        assert_eq!(push.streams[0].labels, r#"{level="info"}"#);
        assert_eq!(push.streams[0].entries[4].structured_metadata[0].name, "user");
    }

    #[test]
    fn the_previous_records_key_is_reused_only_for_the_same_labels() {
        let loki = Loki::new(&config("{name: l, type: loki, endpoint: 'http://x', labels: [level, user]}"));
        let mut router = loki.router();
        let (a, b, c) = ((Level::Info, 1), (Level::Warn, 1), (Level::Info, 2));
        let keys: Vec<Option<u64>> =
            [a, a, b, a, c, a].into_iter().map(|(level, second)| router.key(&record("m", level, second))).collect();
        // Computed afresh after b and c, reused after a: the same key either way.
        assert!(keys[0] == keys[1] && keys[1] == keys[3] && keys[3] == keys[5]);
        assert!(keys[0] != keys[2] && keys[0] != keys[4] && keys[2] != keys[4]);
    }

    #[test]
    fn label_text_escapes_quotes_and_backslashes() {
        let loki = Loki::new(&config("{name: l, type: loki, endpoint: 'http://x', labels: [level, user]}"));
        let mut plain = record("m", Level::Info, 1);
        plain.attributes.insert("user", "u-1".into());
        let mut quoted = record("m", Level::Info, 1);
        quoted.attributes.insert("user", r#"a"b\c"#.into());
        let mut text = String::new();
        loki.stream_labels(&plain, &mut text);
        assert_eq!(text, r#"{level="info", user="u-1"}"#);
        loki.stream_labels(&quoted, &mut text);
        assert_eq!(text, r#"{level="info", user="a\"b\\c"}"#);
    }

    #[test]
    fn names_and_values_are_sanitized() {
        assert_eq!(sanitize_name("service.name"), "service_name");
        assert_eq!(sanitize_name("9lives"), "_9lives");
        assert_eq!(sanitize_value(" a\nb "), "a b");
        assert_eq!(sanitize_value(&"x".repeat(5000)).len(), MAX_LABEL_VALUE_BYTES);
    }
}
