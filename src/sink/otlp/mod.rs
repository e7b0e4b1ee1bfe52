//! The OTLP log sink (`type: otlp`): records as OpenTelemetry LogRecords, grouped by resource,
//! to a collector over gRPC (`LogsService/Export`) or HTTP/protobuf (`<endpoint>/v1/logs`, the
//! endpoint being a base URL as OTEL_EXPORTER_OTLP_ENDPOINT is). Mapping per the OTel logs
//! data model: timestamp and observed timestamp, severity number and text, the message as
//! a string body, attributes with their JSON types, trace and span ids as bytes,
//! `log.file.path`. A partial success (`rejected_log_records`) is counted and noted in the
//! dead-letter file; the collector does not say which records it dropped.

mod grpc;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

pub(crate) use grpc::GrpcTransport;

use super::batch::Entry;
use super::http::Request;
use super::loki::gzip;
use super::retry::{Outcome, classify_status};
use super::service::{AnyOrder, Protocol, Router};
use crate::record::{Record, Value};
pub use settings::Settings;

/// The OTLP protocol (both transports share the encoding and the answer's meaning).
pub(crate) struct Otlp {
    gzip: bool,
}

impl Otlp {
    pub fn new(config: &Settings) -> Otlp {
        Otlp { gzip: config.gzip }
    }
}

impl Protocol for Otlp {
    fn router(&self) -> Box<dyn Router> {
        Box::new(AnyOrder)
    }

    fn encode(&self, entries: &[Entry]) -> Result<Request, String> {
        let raw = export_request(entries).encode_to_vec();
        let (body, content_encoding) = if self.gzip { (gzip(&raw)?, Some("gzip")) } else { (raw, None) };
        Ok(Request {
            body: Bytes::from(body),
            content_type: "application/x-protobuf",
            content_encoding,
            records: entries.len(),
            groups: Vec::new(),
        })
    }

    fn classify(&self, _request: &Request, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome {
        match classify_status(status, retry_after, body) {
            Outcome::Sent => partial_success(body),
            other => other,
        }
    }
}

/// A 2xx answer: sent, unless the collector reports rejected records.
fn partial_success(body: &[u8]) -> Outcome {
    let Ok(response) = ExportLogsServiceResponse::decode(body) else {
        return Outcome::Sent;
    };
    match response.partial_success {
        Some(partial) if partial.rejected_log_records > 0 => Outcome::SentWithLoss {
            count: partial.rejected_log_records as u64,
            reason: format!("partial success: {}", partial.error_message),
        },
        _ => Outcome::Sent,
    }
}

/// A resource's attributes and its log records.
type ResourceGroup<'a> = (&'a [(String, String)], Vec<LogRecord>);

/// Records grouped by resource (records of one pipeline share one resource `Arc`).
pub(crate) fn export_request(entries: &[Entry]) -> ExportLogsServiceRequest {
    let mut groups: Vec<ResourceGroup<'_>> = Vec::new();
    let mut by_resource: HashMap<*const Vec<(String, String)>, usize> = HashMap::new();
    for entry in entries {
        let record = entry.record();
        let key = Arc::as_ptr(&record.resource);
        let group = *by_resource.entry(key).or_insert_with(|| {
            groups.push((record.resource.as_slice(), Vec::new()));
            groups.len() - 1
        });
        groups[group].1.push(log_record(record));
    }
    let scope = InstrumentationScope {
        name: "pillion".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    let resource_logs = groups
        .into_iter()
        .map(|(resource, log_records)| ResourceLogs {
            resource: Some(Resource {
                attributes: resource.iter().map(|(k, v)| string_attribute(k, v)).collect(),
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs { scope: Some(scope.clone()), log_records, schema_url: String::new() }],
            schema_url: String::new(),
        })
        .collect();
    ExportLogsServiceRequest { resource_logs }
}

fn nanos(ts: jiff::Timestamp) -> u64 {
    u64::try_from(ts.as_nanosecond()).unwrap_or(0)
}

/// One record as an OTel LogRecord.
fn log_record(record: &Record) -> LogRecord {
    let mut attributes: Vec<KeyValue> = record
        .attributes
        .iter()
        .map(|(k, v)| KeyValue { key: k.to_owned(), value: Some(any_value(v)), ..Default::default() })
        .collect();
    if let Some(source) = &record.source {
        attributes.push(string_attribute("log.file.path", &source.path));
    }
    LogRecord {
        time_unix_nano: nanos(record.timestamp),
        observed_time_unix_nano: nanos(record.observed_timestamp),
        severity_number: record.level.map_or(0, |l| i32::from(l.severity_number())),
        severity_text: record.level.map_or_else(String::new, |l| l.as_str().to_ascii_uppercase()),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(record.message.clone())) }),
        attributes,
        trace_id: record.trace_id.map_or_else(Vec::new, |id| id.0.to_vec()),
        span_id: record.span_id.map_or_else(Vec::new, |id| id.0.to_vec()),
        ..Default::default()
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..Default::default()
    }
}

/// A JSON value as an OTel AnyValue, keeping its type.
fn any_value(value: &Value) -> AnyValue {
    use any_value::Value as V;
    let value = match value {
        Value::Null => None,
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Number(n) => n.as_i64().map(V::IntValue).or_else(|| n.as_f64().map(V::DoubleValue)),
        Value::String(s) => Some(V::StringValue(s.to_string())),
        Value::Array(items) => Some(V::ArrayValue(ArrayValue { values: items.iter().map(any_value).collect() })),
        Value::Object(map) => Some(V::KvlistValue(KeyValueList {
            values: map
                .iter()
                .map(|(k, v)| KeyValue { key: k.to_owned(), value: Some(any_value(v)), ..Default::default() })
                .collect(),
        })),
    };
    AnyValue { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Acknowledgements, Batch};
    use crate::record::{Level, SpanId, TraceId};
    use crate::sink::batch::Ledger;
    use crate::telemetry::metrics::SinkMetrics;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;

    #[test]
    fn records_map_to_the_logs_data_model_grouped_by_resource() {
        let first = Arc::new(vec![("service.name".to_owned(), "a".to_owned())]);
        let second = Arc::new(vec![("service.name".to_owned(), "b".to_owned())]);
        let ts = jiff::Timestamp::from_second(1_700_000_000).expect("ts");
        let mut records = Vec::new();
        for resource in [&first, &second, &first] {
            let mut record = Record::new("hello".into(), ts, Arc::clone(resource));
            record.level = Some(Level::Warn);
            record.trace_id = TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e4736");
            record.span_id = SpanId::parse_hex("00f067aa0ba902b7");
            record.attributes.insert("n", 3.into());
            record.attributes.insert("ok", true.into());
            records.push(record);
        }
        let ledger = Ledger::new("o".into(), Arc::new(Acknowledgements::new(1)), &SinkMetrics::default());
        let pending = ledger.admit(Arc::new(Batch { records, ack: None })).expect("pending");
        let entries: Vec<Entry> = (0..3).map(|index| Entry { pending: Arc::clone(&pending), index }).collect();
        let request = export_request(&entries);
        assert_eq!(request.resource_logs.len(), 2);
        let logs = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(logs.len(), 2);
        let log = &logs[0];
        assert_eq!(log.time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(log.severity_number, 13);
        assert_eq!(log.severity_text, "WARN");
        assert_eq!(log.trace_id.len(), 16);
        assert_eq!(log.span_id.len(), 8);
        assert_eq!(log.body, Some(AnyValue { value: Some(any_value::Value::StringValue("hello".into())) }));
        assert!(
            log.attributes
                .iter()
                .any(|kv| kv.key == "n" && kv.value == Some(AnyValue { value: Some(any_value::Value::IntValue(3)) }))
        );
    }

    #[test]
    fn partial_success_is_a_counted_loss() {
        let response = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess { rejected_log_records: 2, error_message: "bad".into() }),
        };
        let outcome = partial_success(&response.encode_to_vec());
        assert_eq!(outcome, Outcome::SentWithLoss { count: 2, reason: "partial success: bad".into() });
        assert_eq!(partial_success(b""), Outcome::Sent);
    }
}
