//! The `tracing:` section as written ([`TracingConfig`]) and as checked ([`TracingSettings`]),
//! and the OTLP transports shared with the OTLP log sink.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::units::{Endpoint, Ratio};

/// `tracing:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Where spans go; default from OTEL_EXPORTER_OTLP_ENDPOINT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpExportConfig>,
    /// Fraction of new traces sampled (parent-based).
    pub sample_ratio: Ratio,
    /// Context propagation formats.
    pub propagators: Vec<Propagator>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp: None,
            sample_ratio: Ratio(1.0),
            propagators: vec![Propagator::Tracecontext, Propagator::Baggage],
        }
    }
}

/// `tracing.otlp:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpExportConfig {
    /// Collector base URL; with http/protobuf, /v1/traces is appended.
    pub endpoint: Endpoint,
    /// grpc | http/protobuf.
    #[serde(default)]
    pub protocol: OtlpProtocol,
}

/// OTLP transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (port 4317 by convention).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP protobuf over HTTP POST (port 4318 by convention).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Trace context propagation formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Propagator {
    /// W3C `traceparent` and `tracestate`.
    Tracecontext,
    /// W3C `baggage`.
    Baggage,
    /// Zipkin B3, single `b3` header.
    B3,
    /// Zipkin B3, `x-b3-*` headers.
    B3multi,
}

/// Span export, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The configured collector (base URL, transport); `None`: from the OTEL_* environment.
    pub otlp: Option<(url::Url, OtlpProtocol)>,
    /// Fraction of new traces sampled, 0 to 1.
    pub sample_ratio: f64,
    pub propagators: Vec<Propagator>,
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingConfig::default().check()
    }
}

impl TracingConfig {
    /// Every field is checked while it is read; this resolves the defaults.
    pub fn check(&self) -> TracingSettings {
        TracingSettings {
            otlp: self.otlp.as_ref().map(|otlp| (otlp.endpoint.url().clone(), otlp.protocol)),
            sample_ratio: self.sample_ratio.0,
            propagators: self.propagators.clone(),
        }
    }
}
