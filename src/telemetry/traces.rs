//! Span export for proxied requests: the request path samples (parent-based ratio, the SDK's
//! sampler), draws ids (the SDK's generator) and hands each finished, sampled span as a small
//! [`ExportSpan`] record to a bounded channel; an export thread (its own single-threaded runtime,
//! so building and encoding batches never takes a request worker's time) turns the records into
//! the SDK's `SpanData`, batches them and exports over OTLP (gRPC or HTTP/protobuf). A full
//! channel drops the span and counts it, and a failed export counts its batch as dropped, so a
//! slow or absent collector never holds a request.

use std::sync::Mutex;
use std::time::Duration;

use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingResult, ShouldSample, SpanData, SpanExporter,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::settings::{OtlpProtocol, TracingSettings};
use crate::record::Resource as ResourceAttributes;

/// Spans waiting for export; beyond this they are dropped (OTEL_BSP_MAX_QUEUE_SIZE).
const DEFAULT_QUEUE: usize = 2048;
/// Spans per export request (OTEL_BSP_MAX_EXPORT_BATCH_SIZE).
const DEFAULT_BATCH: usize = 512;
/// How long a batch waits to fill up (OTEL_BSP_SCHEDULE_DELAY, milliseconds).
const DEFAULT_DELAY: Duration = Duration::from_millis(1000);
/// How long one export may take (OTEL_EXPORTER_OTLP_TIMEOUT, milliseconds).
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `pillion_spans_exported_total` and `pillion_spans_dropped_total`.
#[derive(Clone, Default)]
pub struct SpanMetrics {
    pub exported: Counter,
    pub dropped: Counter,
}

impl SpanMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("pillion_spans_exported", "Spans accepted by the OTLP collector", self.exported.clone());
        registry.register(
            "pillion_spans_dropped",
            "Spans dropped: export queue full, or the collector failed or was unreachable",
            self.dropped.clone(),
        );
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error("tracing.otlp.endpoint {endpoint}: {source}")]
    Exporter { endpoint: String, source: opentelemetry_otlp::ExporterBuildError },
    #[error("cannot start the span export thread: {0}")]
    Thread(std::io::Error),
}

/// Where and how spans are exported, resolved from config and the OTEL_* environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    /// The full URL spans are sent to (for HTTP, including /v1/traces).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub queue: usize,
    pub batch: usize,
    pub delay: Duration,
    pub timeout: Duration,
}

impl ExportSettings {
    /// Config first, then OTEL_EXPORTER_OTLP_{TRACES_,}ENDPOINT and _PROTOCOL, then the
    /// specification's defaults (localhost:4317 for gRPC, localhost:4318 for HTTP).
    pub fn resolve(config: &TracingSettings, env: &dyn Fn(&str) -> Option<String>) -> ExportSettings {
        let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let protocol = match &config.otlp {
            Some((_, protocol)) => *protocol,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
                Some(p) if p.trim().starts_with("http") => OtlpProtocol::HttpProtobuf,
                _ => OtlpProtocol::Grpc,
            },
        };
        let base = match &config.otlp {
            Some((endpoint, _)) => Some(endpoint.as_str().to_owned()),
            None => env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        };
        let endpoint = match (env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), base, protocol) {
            (Some(signal), _, _) => signal,
            (None, Some(base), OtlpProtocol::Grpc) => base,
            (None, Some(base), _) => format!("{}/v1/traces", base.trim_end_matches('/')),
            (None, None, OtlpProtocol::Grpc) => "http://localhost:4317".to_owned(),
            (None, None, _) => "http://localhost:4318/v1/traces".to_owned(),
        };
        let number = |name: &str| env(name).and_then(|v| v.trim().parse::<u64>().ok());
        ExportSettings {
            endpoint,
            protocol,
            queue: number("OTEL_BSP_MAX_QUEUE_SIZE").map_or(DEFAULT_QUEUE, |n| n.max(1) as usize),
            batch: number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").map_or(DEFAULT_BATCH, |n| n.max(1) as usize),
            delay: number("OTEL_BSP_SCHEDULE_DELAY").map_or(DEFAULT_DELAY, Duration::from_millis),
            timeout: number("OTEL_EXPORTER_OTLP_TIMEOUT").map_or(DEFAULT_EXPORT_TIMEOUT, Duration::from_millis),
        }
    }
}

/// The instrumentation scope of pillion's spans.
pub type Scope = InstrumentationScope;

/// A finished span waiting for export, as compact as its producer could make it; the export
/// thread turns it into the SDK's `SpanData`.
pub trait ExportSpan: Send {
    fn into_span_data(self: Box<Self>, scope: &Scope) -> SpanData;
}

/// The running tracing pipeline: sampler, id generator and propagator for the proxy, and the
/// export thread.
pub struct Tracing {
    pub propagator: TextMapCompositePropagator,
    /// Every header the configured propagators read or write: removed from a request before
    /// pillion injects its own context.
    pub propagator_fields: Vec<http::HeaderName>,
    sampler: Sampler,
    ids: RandomIdGenerator,
    queue: mpsc::Sender<Box<dyn ExportSpan>>,
    dropped: Counter,
    stop: CancellationToken,
    /// Resolves when the export thread has exported what was queued and stopped.
    exported: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Tracing {
    /// Builds the exporter on a new export thread and returns what feeds it.
    pub fn start(
        config: &TracingSettings,
        resource: &ResourceAttributes,
        metrics: &SpanMetrics,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Tracing, TracingError> {
        let settings = ExportSettings::resolve(config, env);
        let resource = Resource::builder_empty()
            .with_attributes(resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
            .build();
        let (sender, receiver) = mpsc::channel(settings.queue);
        let stop = CancellationToken::new();
        let exported = spawn_export_thread(settings.clone(), resource, receiver, metrics.clone(), stop.clone())?;
        tracing::info!(endpoint = %settings.endpoint, protocol = ?settings.protocol, "exporting spans");
        let propagator = super::propagation::build(&config.propagators);
        let propagator_fields =
            propagator.fields().filter_map(|field| http::HeaderName::from_bytes(field.as_bytes()).ok()).collect();
        Ok(Tracing {
            propagator,
            propagator_fields,
            sampler: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))),
            ids: RandomIdGenerator::default(),
            queue: sender,
            dropped: metrics.dropped.clone(),
            stop,
            exported: Mutex::new(Some(exported)),
        })
    }

    pub fn new_trace_id(&self) -> TraceId {
        self.ids.new_trace_id()
    }

    pub fn new_span_id(&self) -> SpanId {
        self.ids.new_span_id()
    }

    /// The sampler's decision for a span in `parent`'s trace (the sampler reads neither the
    /// span's name nor its attributes).
    pub fn should_sample(&self, parent: &Context, trace_id: TraceId, kind: &SpanKind) -> SamplingResult {
        self.sampler.should_sample(Some(parent), trace_id, "", kind, &[], &[])
    }

    /// Queues a finished, sampled span without ever waiting: when the queue is full the span is
    /// dropped and counted.
    pub fn export(&self, span: Box<dyn ExportSpan>) {
        if self.queue.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    /// Exports what is queued (within `timeout`), then stops. Spans that end later are dropped.
    pub async fn shutdown(&self, timeout: Duration) {
        self.stop.cancel();
        let exported = self.exported.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(exported) = exported {
            if tokio::time::timeout(timeout, exported).await.is_err() {
                tracing::warn!("span export did not finish before the shutdown deadline");
            }
        }
    }
}

/// Starts the export thread and waits until its exporter is built; the returned receiver
/// resolves once the thread has finished exporting.
fn spawn_export_thread(
    settings: ExportSettings,
    resource: Resource,
    receiver: mpsc::Receiver<Box<dyn ExportSpan>>,
    metrics: SpanMetrics,
    stop: CancellationToken,
) -> Result<oneshot::Receiver<()>, TracingError> {
    let (built_sender, built) = std::sync::mpsc::sync_channel(1);
    let (done_sender, done) = oneshot::channel();
    let thread = move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = built_sender.send(Err(TracingError::Thread(error)));
                return;
            }
        };
        runtime.block_on(async move {
            // Built here: the gRPC channel's background task lives on this runtime.
            let mut exporter = match build_exporter(&settings) {
                Ok(exporter) => exporter,
                Err(source) => {
                    let endpoint = settings.endpoint.clone();
                    let _ = built_sender.send(Err(TracingError::Exporter { endpoint, source }));
                    return;
                }
            };
            exporter.set_resource(&resource);
            let _ = built_sender.send(Ok(()));
            export_loop(exporter, receiver, settings, metrics, stop).await;
        });
        let _ = done_sender.send(());
    };
    std::thread::Builder::new().name("pillion-spans".into()).spawn(thread).map_err(TracingError::Thread)?;
    match built.recv() {
        Ok(Ok(())) => Ok(done),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(TracingError::Thread(std::io::Error::other("the span export thread exited at start"))),
    }
}

fn build_exporter(
    settings: &ExportSettings,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    match settings.protocol {
        OtlpProtocol::Grpc => {
            builder.with_tonic().with_endpoint(&settings.endpoint).with_timeout(settings.timeout).build()
        }
        _ => builder
            .with_http()
            .with_http_client(opentelemetry_http::hyper::HyperClient::with_default_connector(settings.timeout, None))
            .with_endpoint(&settings.endpoint)
            .with_timeout(settings.timeout)
            .build(),
    }
}

/// How often the export thread looks at the queue. It polls rather than waits on the channel
/// so that a request ending a span never has to wake another thread.
/// At 30k spans/s a 50 ms poll left the 2048-span queue too little room while a batch was being
/// exported (spans were dropped at saturation); 10 ms is still only 100 wake-ups a second.
const POLL: Duration = Duration::from_millis(10);

/// Takes what is queued every [`POLL`], exports full batches at once and a partial batch once
/// its first span has waited `delay`; on `stop`, exports everything left.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut receiver: mpsc::Receiver<Box<dyn ExportSpan>>,
    settings: ExportSettings,
    metrics: SpanMetrics,
    stop: CancellationToken,
) {
    let scope = InstrumentationScope::builder("pillion").build();
    let mut batch = Vec::with_capacity(settings.batch);
    let mut oldest: Option<tokio::time::Instant> = None;
    let mut ticker = tokio::time::interval(POLL.min(settings.delay));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = ticker.tick() => false,
        };
        if stopping {
            receiver.close();
        }
        while let Ok(span) = receiver.try_recv() {
            oldest.get_or_insert_with(tokio::time::Instant::now);
            batch.push(span.into_span_data(&scope));
            if batch.len() == settings.batch {
                export(&exporter, std::mem::take(&mut batch), &settings, &metrics).await;
                oldest = None;
            }
        }
        let due = oldest.is_some_and(|since| since.elapsed() >= settings.delay);
        if !batch.is_empty() && (due || stopping) {
            export(&exporter, std::mem::take(&mut batch), &settings, &metrics).await;
            oldest = None;
        }
        if stopping {
            return;
        }
    }
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: Vec<SpanData>,
    settings: &ExportSettings,
    metrics: &SpanMetrics,
) {
    let count = batch.len() as u64;
    match tokio::time::timeout(settings.timeout, exporter.export(batch)).await {
        Ok(Ok(())) => {
            metrics.exported.inc_by(count);
        }
        Ok(Err(error)) => {
            metrics.dropped.inc_by(count);
            tracing::debug!(%error, spans = count, "span export failed; spans dropped");
        }
        Err(_) => {
            metrics.dropped.inc_by(count);
            tracing::debug!(spans = count, "span export timed out; spans dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn http_endpoints_get_the_traces_path_and_env_is_a_fallback() {
        let mut config = TracingSettings::default();
        let settings = ExportSettings::resolve(&config, &env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]));
        assert_eq!((settings.endpoint.as_str(), settings.protocol), ("http://c:4317", OtlpProtocol::Grpc));
        let settings = ExportSettings::resolve(
            &config,
            &env_of(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]),
        );
        assert_eq!(settings.endpoint, "http://c:4318/v1/traces");
        config.otlp = Some(("http://loki:3100/otlp".parse().expect("endpoint"), OtlpProtocol::HttpProtobuf));
        let settings = ExportSettings::resolve(&config, &env_of(&[]));
        assert_eq!(settings.endpoint, "http://loki:3100/otlp/v1/traces");
        assert_eq!(
            ExportSettings::resolve(&TracingSettings::default(), &env_of(&[])).endpoint,
            "http://localhost:4317"
        );
    }
}
