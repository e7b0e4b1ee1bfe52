//! One span per proxied request, named and attributed per the OpenTelemetry HTTP semantic
//! conventions: a SERVER span for inbound requests, a CLIENT span for the app's outbound calls.
//! The span continues the trace in the request headers (or starts one: malformed headers
//! extract as no parent) and its own context replaces those headers before forwarding.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderMap;
use http::header::{HOST, USER_AGENT};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{KeyValue, StringValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_semantic_conventions::attribute as semconv;

use crate::proxy::metrics::ErrorType;
use crate::record::{SpanId, TraceId};
use crate::telemetry::traces::Tracing;

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
}

/// A started request span.
pub struct RequestSpan {
    span: opentelemetry_sdk::trace::Span,
    /// Ids for exemplars and access-log records, when the span is sampled.
    pub ids: Option<(TraceId, SpanId)>,
}

/// Starts the span for a request, as a child of the context its headers carry, and writes
/// this span's context into `headers` for the next hop.
pub fn start(tracing: &Tracing, headers: &mut HeaderMap, info: &RequestInfo) -> RequestSpan {
    let parent = tracing.propagator.extract(&HeaderExtractor(headers));
    let name = match info.route {
        Some(route) => format!("{} {route}", info.method_label),
        None => info.method_label.to_owned(),
    };
    let attributes = attributes(headers, info);
    let span = tracing
        .tracer
        .span_builder(name)
        .with_kind(info.kind.clone())
        .with_attributes(attributes)
        .start_with_context(&tracing.tracer, &parent);
    let context = span.span_context().clone();
    let ids =
        context.is_sampled().then(|| (TraceId(context.trace_id().to_bytes()), SpanId(context.span_id().to_bytes())));
    let ours = parent.with_remote_span_context(context);
    tracing.propagator.inject_context(&ours, &mut HeaderInjector(headers));
    RequestSpan { span, ids }
}

fn attributes(headers: &HeaderMap, info: &RequestInfo) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(10);
    attributes.push(KeyValue::new(semconv::HTTP_REQUEST_METHOD, info.method_label));
    if info.method_label == "_OTHER" {
        attributes.push(KeyValue::new(semconv::HTTP_REQUEST_METHOD_ORIGINAL, info.method.as_str().to_owned()));
    }
    attributes.push(KeyValue::new(semconv::URL_PATH, info.path.to_owned()));
    attributes.push(KeyValue::new(semconv::URL_SCHEME, "http"));
    if let Some(route) = info.route {
        attributes.push(KeyValue::new(semconv::HTTP_ROUTE, StringValue::from(Arc::clone(route))));
    }
    let host_header = headers.get(HOST).and_then(|h| h.to_str().ok()).map(split_host_port);
    if let Some((host, port)) = info.server.or(host_header) {
        attributes.push(KeyValue::new(semconv::SERVER_ADDRESS, host.to_owned()));
        if let Some(port) = port {
            attributes.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
        }
    }
    if let Some(client) = info.client {
        attributes.push(KeyValue::new(semconv::CLIENT_ADDRESS, client.ip().to_string()));
    }
    if let Some(agent) = headers.get(USER_AGENT).and_then(|h| h.to_str().ok()) {
        attributes.push(KeyValue::new(semconv::USER_AGENT_ORIGINAL, agent.to_owned()));
    }
    let version = match info.version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        _ => "1.1",
    };
    attributes.push(KeyValue::new(semconv::NETWORK_PROTOCOL_VERSION, version));
    attributes
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
    /// Ends the span with the response status; 5xx and upstream failures mark it an error.
    pub fn finish(mut self, status: u16, error: Option<ErrorType>) {
        self.span.set_attribute(KeyValue::new(semconv::HTTP_RESPONSE_STATUS_CODE, i64::from(status)));
        if let Some(error) = error {
            let label = error.as_label();
            self.span.set_attribute(KeyValue::new(semconv::ERROR_TYPE, label.to_string()));
            self.span.set_status(Status::error(label));
        }
        self.span.end();
    }

    /// The trace id as exemplar text, when sampled.
    pub fn trace_id_hex(&self) -> Option<String> {
        self.ids.map(|(trace, _)| trace.to_string())
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
