//! A batch of records as a spool frame's payload, and back. JSON through serde (the spool is
//! the slow path: only what the sinks could not take goes through it); resources, input
//! names and paths are written once per batch and shared again when read.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::{Attributes, Level, Record, Resource, Source, SpanId, TraceId, Value};

#[derive(Serialize)]
struct BatchOut<'a> {
    /// Distinct resources of the batch (one, in practice).
    resources: Vec<&'a [(String, String)]>,
    /// Distinct `(input, path)` of the records' sources.
    sources: Vec<(&'a str, &'a str)>,
    records: Vec<RecordOut<'a>>,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    t: i128,
    o: i128,
    #[serde(skip_serializing_if = "Option::is_none")]
    l: Option<Level>,
    m: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tr: Option<[u8; 16]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sp: Option<[u8; 8]>,
    #[serde(skip_serializing_if = "Attributes::is_empty")]
    a: &'a Attributes,
    r: usize,
    /// Index into `sources` and the offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<(usize, u64)>,
}

#[derive(Deserialize)]
struct BatchIn {
    resources: Vec<Vec<(String, String)>>,
    sources: Vec<(String, String)>,
    records: Vec<RecordIn>,
}

#[derive(Deserialize)]
struct RecordIn {
    t: i128,
    o: i128,
    #[serde(default)]
    l: Option<Level>,
    m: String,
    #[serde(default)]
    tr: Option<[u8; 16]>,
    #[serde(default)]
    sp: Option<[u8; 8]>,
    #[serde(default)]
    a: Value,
    r: usize,
    #[serde(default)]
    s: Option<(usize, u64)>,
}

/// Why a payload could not be decoded (it passed its checksum, so: written by another
/// version, or a bug).
#[derive(Debug, thiserror::Error)]
#[error("undecodable spool record: {0}")]
pub struct DecodeError(String);

/// Appends the JSON form of `records` to `out`.
pub fn encode(records: &[Record], out: &mut Vec<u8>) -> serde_json::Result<()> {
    let mut resources: Vec<&Resource> = Vec::new();
    let mut sources: Vec<(&str, &str)> = Vec::new();
    let mut encoded = Vec::with_capacity(records.len());
    for record in records {
        let r =
            match resources.iter().position(|known| Arc::ptr_eq(known, &record.resource) || **known == record.resource)
            {
                Some(index) => index,
                None => {
                    resources.push(&record.resource);
                    resources.len() - 1
                }
            };
        let s = record.source.as_ref().map(|source| {
            let key = (&*source.input, &*source.path);
            let index = sources.iter().position(|known| *known == key).unwrap_or_else(|| {
                sources.push(key);
                sources.len() - 1
            });
            (index, source.offset)
        });
        encoded.push(RecordOut {
            t: record.timestamp.as_nanosecond(),
            o: record.observed_timestamp.as_nanosecond(),
            l: record.level,
            m: &record.message,
            tr: record.trace_id.map(|id| id.0),
            sp: record.span_id.map(|id| id.0),
            a: &record.attributes,
            r,
            s,
        });
    }
    let batch = BatchOut { resources: resources.iter().map(|r| r.as_slice()).collect(), sources, records: encoded };
    serde_json::to_writer(out, &batch)
}

/// The records of a payload made by [`encode`].
pub fn decode(payload: &[u8]) -> Result<Vec<Record>, DecodeError> {
    let batch: BatchIn = serde_json::from_slice(payload).map_err(|e| DecodeError(e.to_string()))?;
    let resources: Vec<Resource> = batch.resources.into_iter().map(Arc::new).collect();
    let sources: Vec<(Arc<str>, Arc<str>)> =
        batch.sources.into_iter().map(|(input, path)| (Arc::from(input), Arc::from(path))).collect();
    let timestamp = |nanos: i128| {
        jiff::Timestamp::from_nanosecond(nanos).map_err(|e| DecodeError(format!("timestamp {nanos}: {e}")))
    };
    let mut records = Vec::with_capacity(batch.records.len());
    for record in batch.records {
        let resource = resources.get(record.r).ok_or_else(|| DecodeError(format!("resource {}", record.r)))?;
        let source = match record.s {
            Some((index, offset)) => {
                let (input, path) = sources.get(index).ok_or_else(|| DecodeError(format!("source {index}")))?;
                Some(Source { input: Arc::clone(input), path: Arc::clone(path), offset })
            }
            None => None,
        };
        records.push(Record {
            timestamp: timestamp(record.t)?,
            observed_timestamp: timestamp(record.o)?,
            level: record.l,
            message: record.m,
            trace_id: record.tr.map(TraceId),
            span_id: record.sp.map(SpanId),
            attributes: match record.a {
                Value::Object(attributes) => attributes,
                _ => Attributes::new(),
            },
            resource: Arc::clone(resource),
            source,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_the_round_trip() {
        let resource: Resource = Arc::new(vec![("service.name".into(), "checkout".into())]);
        let observed = jiff::Timestamp::from_nanosecond(1_764_000_000_123_456_789).expect("ts");
        let mut full = Record::new("payment declined".into(), observed, Arc::clone(&resource));
        full.timestamp = jiff::Timestamp::from_second(1_700_000_000).expect("ts");
        full.level = Some(Level::Error);
        full.trace_id = TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e4736");
        full.span_id = SpanId::parse_hex("00f067aa0ba902b7");
        full.attributes.insert("http.status", Value::from(402));
        full.attributes.insert("ratio", Value::from(0.25));
        let nested: Attributes =
            [("k", Value::from("v")), ("list", Value::Array(vec![Value::Null, true.into()]))].into_iter().collect();
        full.attributes.insert("nested", Value::Object(nested));
        full.source = Some(Source { input: "app".into(), path: "/var/log/a.log".into(), offset: 18231 });
        let bare = Record::new("no source".into(), observed, Arc::new(Vec::new()));
        let records = vec![full, bare];
        let mut payload = Vec::new();
        encode(&records, &mut payload).expect("encode");
        let decoded = decode(&payload).expect("decode");
        assert_eq!(decoded, records);
        assert!(decode(b"{\"resources\":[]").is_err());
    }
}
