//! One span per proxied request, named and attributed per the OpenTelemetry HTTP semantic
//! conventions: a SERVER span for inbound requests, a CLIENT span for the app's outbound calls.
//! The span continues the trace in the request headers (or starts one: malformed headers
//! extract as no parent) and its own context replaces those headers before forwarding.
//!
//! The request path only decides sampling, draws the ids and notes what the span will say (one
//! small record, one string); the export thread turns the record into the SDK's `SpanData`, so
//! attribute values, the name and the status are built off the request path.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HOST, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId as OtelSpanId, SpanKind, Status, TraceContextExt, TraceFlags};
use opentelemetry::{KeyValue, StringValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::trace::{SamplingDecision, SpanData, SpanEvents, SpanLinks};
use opentelemetry_semantic_conventions::attribute as semconv;

use crate::proxy::metrics::ErrorType;
use crate::record::{SpanId, TraceId};
use crate::telemetry::traces::{ExportSpan, Scope, Tracing};

/// What a span is named and attributed with.
pub struct RequestInfo<'a> {
    pub kind: SpanKind,
    pub method: &'a http::Method,
    /// The bounded method label (`_OTHER` for non-standard methods).
    pub method_label: &'static str,
    pub path: &'a str,
    /// `http.route` for server spans; `None` for client spans.
    pub route: Option<&'a Arc<str>>,
    /// `server.address` (and port) for client spans; the Host header's for server spans.
    pub server: Option<(&'a str, Option<u16>)>,
    pub client: Option<SocketAddr>,
    pub version: http::Version,
    /// `tls.client.subject`: the verified client certificate's identity (inbound mTLS).
    pub tls_client_subject: Option<&'a str>,
}

/// A started request span.
pub struct RequestSpan {
    /// What the exported span will say; `None` when the span is not sampled.
    record: Option<Box<SpanRecord>>,
    /// Ids for exemplars and access-log records, when the span is sampled.
    pub ids: Option<(TraceId, SpanId)>,
}

/// A sampled span as the request path leaves it: ids, times, and the attribute values.
struct SpanRecord {
    context: SpanContext,
    parent_span_id: OtelSpanId,
    parent_is_remote: bool,
    kind: SpanKind,
    method_label: &'static str,
    route: Option<Arc<str>>,
    client: Option<SocketAddr>,
    version: http::Version,
    server_port: Option<u16>,
    start: SystemTime,
    end: SystemTime,
    status: u16,
    error: Option<ErrorType>,
    /// The request's own strings, one after another; the ranges below index into it.
    text: String,
    path: Range<usize>,
    method_original: Option<Range<usize>>,
    server: Option<Range<usize>>,
    user_agent: Option<Range<usize>>,
    tls_client_subject: Option<Range<usize>>,
}

/// Starts the span for a request, as a child of the context its headers carry, and writes
/// this span's context into `headers` for the next hop. Sampling, ids and the injected context
/// are exactly the SDK tracer's.
pub fn start(tracing: &Tracing, headers: &mut HeaderMap, info: &RequestInfo) -> RequestSpan {
    let start = SystemTime::now();
    let parent = tracing.propagator.extract(&HeaderExtractor(headers));
    let parent_span = parent.span();
    let parent_context = parent_span.span_context();
    let valid_parent = parent_context.is_valid();
    let trace_id = if valid_parent { parent_context.trace_id() } else { tracing.new_trace_id() };
    let span_id = tracing.new_span_id();
    let sampling = tracing.should_sample(&parent, trace_id, &info.kind);
    let flags = if valid_parent { parent_context.trace_flags() } else { TraceFlags::default() };
    let (flags, sampled) = match sampling.decision {
        SamplingDecision::RecordAndSample => (flags.with_sampled(true), true),
        SamplingDecision::RecordOnly => (flags.with_sampled(false), false),
        SamplingDecision::Drop => (TraceFlags::default(), false),
    };
    let context = SpanContext::new(trace_id, span_id, flags, false, sampling.trace_state);
    let record = sampled.then(|| {
        let (parent_span_id, parent_is_remote) = if valid_parent {
            (parent_context.span_id(), parent_context.is_remote())
        } else {
            (OtelSpanId::INVALID, false)
        };
        Box::new(record(headers, info, context.clone(), parent_span_id, parent_is_remote, start))
    });
    let ids = sampled.then(|| (TraceId(trace_id.to_bytes()), SpanId(span_id.to_bytes())));
    // Nothing the client sent in a propagator's header goes on: only what pillion injects.
    for field in &tracing.propagator_fields {
        headers.remove(field);
    }
    let ours = parent.with_remote_span_context(context);
    let mut injector = FieldInjector { headers, fields: &tracing.propagator_fields };
    tracing.propagator.inject_context(&ours, &mut injector);
    RequestSpan { record, ids }
}

/// Writes the propagators' headers: their names are the propagators' known fields (parsed once,
/// not per request) and each value keeps the propagator's string as its buffer (no copy).
struct FieldInjector<'a> {
    headers: &'a mut HeaderMap,
    fields: &'a [HeaderName],
}

impl Injector for FieldInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let name = match self.fields.iter().find(|field| field.as_str() == key) {
            Some(field) => field.clone(),
            None => match HeaderName::from_bytes(key.as_bytes()) {
                Ok(name) => name,
                Err(_) => return,
            },
        };
        if let Ok(value) = HeaderValue::try_from(value) {
            self.headers.insert(name, value);
        }
    }
}

fn record(
    headers: &HeaderMap,
    info: &RequestInfo,
    context: SpanContext,
    parent_span_id: OtelSpanId,
    parent_is_remote: bool,
    start: SystemTime,
) -> SpanRecord {
    let host_header = headers.get(HOST).and_then(|h| h.to_str().ok()).map(split_host_port);
    let server = info.server.or(host_header);
    let user_agent = headers.get(USER_AGENT).and_then(|h| h.to_str().ok());
    let original = (info.method_label == "_OTHER").then(|| info.method.as_str());
    let length = info.path.len() + original.map_or(0, str::len) + server.map_or(0, |s| s.0.len());
    let length = length + info.tls_client_subject.map_or(0, str::len);
    let mut text = String::with_capacity(length + user_agent.map_or(0, str::len));
    let mut push = |value: &str| {
        let from = text.len();
        text.push_str(value);
        from..text.len()
    };
    let path = push(info.path);
    let method_original = original.map(&mut push);
    let server_range = server.map(|(host, _)| push(host));
    let user_agent = user_agent.map(&mut push);
    let tls_client_subject = info.tls_client_subject.map(&mut push);
    SpanRecord {
        context,
        parent_span_id,
        parent_is_remote,
        kind: info.kind.clone(),
        method_label: info.method_label,
        route: info.route.cloned(),
        client: info.client,
        version: info.version,
        server_port: server.and_then(|(_, port)| port),
        start,
        end: start,
        status: 0,
        error: None,
        text,
        path,
        method_original,
        server: server_range,
        user_agent,
        tls_client_subject,
    }
}

impl ExportSpan for SpanRecord {
    /// The span as the SDK would have built it: same name, attributes (in the same order),
    /// status and scope.
    fn into_span_data(self: Box<Self>, scope: &Scope) -> SpanData {
        let record = *self;
        let text = |range: &Range<usize>| record.text[range.clone()].to_owned();
        let mut attributes = Vec::with_capacity(12);
        attributes.push(KeyValue::new(semconv::HTTP_REQUEST_METHOD, record.method_label));
        if let Some(original) = &record.method_original {
            attributes.push(KeyValue::new(semconv::HTTP_REQUEST_METHOD_ORIGINAL, text(original)));
        }
        attributes.push(KeyValue::new(semconv::URL_PATH, text(&record.path)));
        attributes.push(KeyValue::new(semconv::URL_SCHEME, "http"));
        if let Some(route) = &record.route {
            attributes.push(KeyValue::new(semconv::HTTP_ROUTE, StringValue::from(Arc::clone(route))));
        }
        if let Some(server) = &record.server {
            attributes.push(KeyValue::new(semconv::SERVER_ADDRESS, text(server)));
            if let Some(port) = record.server_port {
                attributes.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
            }
        }
        if let Some(client) = record.client {
            attributes.push(KeyValue::new(semconv::CLIENT_ADDRESS, client.ip().to_string()));
        }
        if let Some(agent) = &record.user_agent {
            attributes.push(KeyValue::new(semconv::USER_AGENT_ORIGINAL, text(agent)));
        }
        if let Some(subject) = &record.tls_client_subject {
            attributes.push(KeyValue::new("tls.client.subject", text(subject)));
        }
        let version = match record.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            _ => "1.1",
        };
        attributes.push(KeyValue::new(semconv::NETWORK_PROTOCOL_VERSION, version));
        attributes.push(KeyValue::new(semconv::HTTP_RESPONSE_STATUS_CODE, i64::from(record.status)));
        let mut status = Status::Unset;
        if let Some(error) = record.error {
            let label = error.as_label();
            attributes.push(KeyValue::new(semconv::ERROR_TYPE, label.to_string()));
            status = Status::error(label);
        }
        let name: Cow<'static, str> = match &record.route {
            Some(route) => format!("{} {route}", record.method_label).into(),
            None => record.method_label.into(),
        };
        SpanData {
            span_context: record.context,
            parent_span_id: record.parent_span_id,
            parent_span_is_remote: record.parent_is_remote,
            span_kind: record.kind,
            name,
            start_time: record.start,
            end_time: record.end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: scope.clone(),
        }
    }
}

/// `host:port` (or `[v6]:port`) into its parts.
pub fn split_host_port(text: &str) -> (&str, Option<u16>) {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host.trim_start_matches('[').trim_end_matches(']'), port.parse().ok())
        }
        _ => (text, None),
    }
}

impl RequestSpan {
    /// Ends the span with the response status (5xx and upstream failures mark it an error) and
    /// queues it for export.
    pub fn finish(self, tracing: &Tracing, status: u16, error: Option<ErrorType>) {
        if let Some(mut record) = self.record {
            record.end = SystemTime::now();
            record.status = status;
            record.error = error;
            tracing.export(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_splits() {
        assert_eq!(split_host_port("shop:8080"), ("shop", Some(8080)));
        assert_eq!(split_host_port("shop"), ("shop", None));
        assert_eq!(split_host_port("[::1]:80"), ("::1", Some(80)));
    }
}
