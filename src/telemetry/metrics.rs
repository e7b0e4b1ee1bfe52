//! The metrics registry and the metric families of the log pipeline (design.md, "Metrics").
//! One [`Metrics`] is created at start-up and handed to each part; nothing is global.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::traces::SpanMetrics;
use crate::proxy::metrics::ProxyMetrics;

/// `{input}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InputLabel {
    pub input: String,
}

/// `{input, reason}`: why a file the globs select is not tailed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkippedLabels {
    pub input: String,
    pub reason: &'static str,
}

/// `{input, parser}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ParserLabels {
    pub input: String,
    pub parser: String,
}

/// `{sink}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

/// `{sink, outcome}`; outcome is sent, retried or dead_lettered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkOutcomeLabels {
    pub sink: String,
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Everything pillion counts, registered in one registry.
pub struct Metrics {
    registry: Registry,
    pub input: InputMetrics,
    pub sink: SinkMetrics,
    /// RED metrics of the inbound and outbound proxies.
    pub proxy: ProxyMetrics,
    /// Span export outcomes.
    pub spans: SpanMetrics,
}

/// Tailer and parser metrics.
#[derive(Clone, Default)]
pub struct InputMetrics {
    pub files: Family<InputLabel, Gauge>,
    pub bytes: Family<InputLabel, Counter>,
    pub lines: Family<InputLabel, Counter>,
    pub lag_bytes: Family<InputLabel, Gauge>,
    pub lines_truncated: Family<InputLabel, Counter>,
    pub truncations: Family<InputLabel, Counter>,
    pub rotations: Family<InputLabel, Counter>,
    pub invalid_utf8: Family<InputLabel, Counter>,
    pub lost_bytes: Family<InputLabel, Counter>,
    pub skipped_files: Family<SkippedLabels, Counter>,
    pub parse_errors: Family<ParserLabels, Counter>,
}

/// Sink metrics.
#[derive(Clone)]
pub struct SinkMetrics {
    pub events: Family<SinkOutcomeLabels, Counter>,
    pub bytes: Family<SinkLabel, Counter>,
    pub request_duration: HistogramFamily<SinkLabel>,
    /// Requests built (a batch of records sent as one request, counted once however often retried).
    pub batches: Family<SinkLabel, Counter>,
    /// Request attempts that failed retryably and were scheduled again.
    pub retries: Family<SinkLabel, Counter>,
    /// Requests currently in flight (including those waiting out a backoff).
    pub in_flight: Family<SinkLabel, Gauge>,
    /// Seconds since the oldest pipeline batch this sink has not yet acknowledged arrived.
    pub oldest_unacked_age: Family<SinkLabel, Gauge<f64, AtomicU64>>,
}

fn sink_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for SinkMetrics {
    fn default() -> Self {
        SinkMetrics {
            events: Family::default(),
            bytes: Family::default(),
            request_duration: Family::new_with_constructor(sink_duration_histogram),
            batches: Family::default(),
            retries: Family::default(),
            in_flight: Family::default(),
            oldest_unacked_age: Family::default(),
        }
    }
}

impl Metrics {
    /// A registry with the pipeline families and the process collector registered.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let input = InputMetrics::default();
        let sink = SinkMetrics::default();
        registry.register("pillion_input_files", "Files being tailed", input.files.clone());
        registry.register("pillion_input_bytes", "Bytes read from input files", input.bytes.clone());
        registry.register("pillion_input_lines", "Lines read from input files", input.lines.clone());
        registry.register(
            "pillion_input_lag_bytes",
            "Bytes on disk not yet acknowledged by every sink",
            input.lag_bytes.clone(),
        );
        registry.register(
            "pillion_input_lines_truncated",
            "Lines longer than max_line_bytes, truncated",
            input.lines_truncated.clone(),
        );
        registry.register(
            "pillion_input_truncations",
            "Files found shorter than the read offset (copytruncate or truncation)",
            input.truncations.clone(),
        );
        registry.register(
            "pillion_input_rotations",
            "Files rotated away (renamed or deleted) while being tailed",
            input.rotations.clone(),
        );
        registry.register(
            "pillion_input_invalid_utf8_lines",
            "Lines with invalid UTF-8 (replaced by U+FFFD)",
            input.invalid_utf8.clone(),
        );
        registry.register(
            "pillion_input_lost_bytes",
            "Bytes that could not be read: a file deleted or truncated before pillion read them",
            input.lost_bytes.clone(),
        );
        registry.register(
            "pillion_input_skipped_files",
            "Paths the globs select that are not tailed: symlink_outside, not_regular, unreadable",
            input.skipped_files.clone(),
        );
        registry.register(
            "pillion_parse_errors",
            "Lines that did not parse with their input's parser (shipped raw)",
            input.parse_errors.clone(),
        );
        registry.register("pillion_sink_events", "Records handled by sinks, by outcome", sink.events.clone());
        registry.register("pillion_sink_bytes", "Bytes written to the wire by sinks", sink.bytes.clone());
        registry.register(
            "pillion_sink_request_duration_seconds",
            "Time to write or send one batch",
            sink.request_duration.clone(),
        );
        let proxy = ProxyMetrics::default();
        proxy.register(&mut registry);
        let spans = SpanMetrics::default();
        spans.register(&mut registry);
        registry.register("pillion_sink_batches", "Requests built by network sinks", sink.batches.clone());
        registry.register(
            "pillion_sink_retries",
            "Request attempts that failed and were retried",
            sink.retries.clone(),
        );
        registry.register(
            "pillion_sink_in_flight_requests",
            "Requests in flight, including those waiting to be retried",
            sink.in_flight.clone(),
        );
        registry.register(
            "pillion_sink_oldest_unacknowledged_age_seconds",
            "Age of the oldest batch the sink has not yet acknowledged",
            sink.oldest_unacked_age.clone(),
        );
        registry.register_collector(Box::new(super::process::ProcessCollector));
        Arc::new(Metrics { registry, input, sink, proxy, spans })
    }

    /// The Prometheus text format (version 0.0.4), what `promtool check metrics` reads.
    pub fn encode_prometheus(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The OpenMetrics text format (with exemplars), for scrapers that ask for it.
    pub fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl InputMetrics {
    pub fn label(input: &str) -> InputLabel {
        InputLabel { input: input.to_owned() }
    }
}

impl SinkMetrics {
    pub fn label(sink: &str) -> SinkLabel {
        SinkLabel { sink: sink.to_owned() }
    }

    pub fn outcome(sink: &str, outcome: &'static str) -> SinkOutcomeLabels {
        SinkOutcomeLabels { sink: sink.to_owned(), outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_total_suffixes_and_process_metrics() {
        let metrics = Metrics::new();
        metrics.input.lines.get_or_create(&InputMetrics::label("app")).inc();
        let text = metrics.encode_prometheus().expect("encode");
        assert!(text.contains("# TYPE pillion_input_lines_total counter"), "{text}");
        assert!(text.contains("pillion_input_lines_total{input=\"app\"} 1"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert!(!text.contains("# EOF"));
        assert!(metrics.encode_openmetrics().expect("encode").ends_with("# EOF\n"));
    }
}
