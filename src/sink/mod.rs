//! Sinks: where records go. Each sink runs as a task that takes batches from its own bounded
//! channel, delivers them, and acknowledges each batch only after it was written. The fan-out
//! gives every sink every batch, so each sink progresses independently within the shared
//! memory bound; the checkpoint moves once all of them acknowledged.
//!
//! `stdout` and `file` write NDJSON locally. The network sinks (`loki`, `elasticsearch`,
//! `otlp`) share one machinery: [`batch`] (request-sized batches, settlement back to the
//! pipeline's acknowledgements), [`service`] (the run loop: batch, build request, send),
//! [`retry`] (the status decision and backoff), [`http`] (client, TLS, auth), and
//! [`dead_letter`]; each backend adds only its protocol: encoder and answer classifier.

mod batch;
mod dead_letter;
pub mod elasticsearch;
mod fields;
pub mod file;
mod http;
pub mod loki;
pub mod otlp;
mod retry;
mod service;
pub mod settings;
mod stdout;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Acknowledgements, Batch};
use crate::telemetry::metrics::SinkMetrics;
use crate::telemetry::settings::OtlpProtocol;
pub use settings::{SinkConfig, SinkSettings, SinkTarget};

/// Batches queued per sink before the fan-out waits (and so, upstream, the tailers). Small:
/// a network sink already holds a filling request and a queued one per lane, and queued
/// records are most of pillion's memory.
const SINK_QUEUE_BATCHES: usize = 2;

/// Why a sink failed or could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink:?}: {message}")]
    Setup { sink: String, message: String },
    #[error("a sink's request workers stopped unexpectedly")]
    Stopped,
    #[error("sink {sink:?}: cannot write to {target}: {source}")]
    Io { sink: String, target: String, source: std::io::Error },
}

/// A running sink.
pub struct RunningSink {
    pub name: Arc<str>,
    sender: mpsc::Sender<Arc<Batch>>,
    pub task: JoinHandle<Result<(), SinkError>>,
}

/// What every sink task gets.
#[derive(Clone)]
pub(crate) struct SinkContext {
    pub name: Arc<str>,
    pub acks: Arc<Acknowledgements>,
    pub metrics: SinkMetrics,
}

impl SinkContext {
    /// Counts a delivered batch of `events` records and `bytes` bytes, and acknowledges it.
    pub fn delivered(&self, batch: &Batch, bytes: usize, started: Instant) {
        let label = SinkMetrics::label(&self.name);
        let sent = SinkMetrics::outcome(&self.name, "sent");
        self.metrics.events.get_or_create(&sent).inc_by(batch.records.len() as u64);
        self.metrics.bytes.get_or_create(&label).inc_by(bytes as u64);
        self.metrics.request_duration.get_or_create(&label).observe(started.elapsed().as_secs_f64());
        if let Some(token) = &batch.ack {
            self.acks.ack(token);
        }
    }
}

/// Starts every configured sink. Dead letters go under `data_dir`.
pub fn start(
    settings: &[SinkSettings],
    data_dir: &Path,
    acks: &Arc<Acknowledgements>,
    metrics: &SinkMetrics,
    failed: &CancellationToken,
) -> Result<Vec<RunningSink>, SinkError> {
    let mut running = Vec::with_capacity(settings.len());
    for sink in settings {
        let (sender, receiver) = mpsc::channel(SINK_QUEUE_BATCHES);
        let context = SinkContext { name: Arc::clone(&sink.name), acks: Arc::clone(acks), metrics: metrics.clone() };
        let task = match &sink.target {
            SinkTarget::Stdout => spawn_reporting(stdout::run(context, receiver), failed),
            SinkTarget::File(file) => {
                let writer = file::FileWriter::open(&sink.name, &file.path)?;
                spawn_reporting(file::run(context, writer, receiver), failed)
            }
            SinkTarget::Loki(_) | SinkTarget::Elasticsearch(_) | SinkTarget::Otlp(_) => {
                let network = network_sink(sink, data_dir, acks, metrics)?;
                spawn_reporting(service::run(network, receiver), failed)
            }
        };
        running.push(RunningSink { name: Arc::clone(&sink.name), sender, task });
    }
    Ok(running)
}

/// Assembles a network sink: its protocol (encoder and classifier), its transport, and the
/// shared batching, retry and dead-letter machinery.
fn network_sink(
    sink: &SinkSettings,
    data_dir: &Path,
    acks: &Arc<Acknowledgements>,
    metrics: &SinkMetrics,
) -> Result<service::NetworkSink, SinkError> {
    let (protocol, transport, ordered, concurrency): (
        Arc<dyn service::Protocol>,
        Arc<dyn http::Transport>,
        bool,
        usize,
    ) = match &sink.target {
        SinkTarget::Loki(loki) => {
            let headers: Vec<(&'static str, String)> =
                loki.tenant.iter().map(|t| ("X-Scope-OrgID", t.clone())).collect();
            let endpoint = &loki.http.endpoint;
            let push = http::join(endpoint, "/loki/api/v1/push");
            let ready = http::join(endpoint, "/ready");
            let transport = http::HttpTransport::new(&loki.http, push, Some(ready), &headers)?;
            (Arc::new(loki::Loki::new(loki)), Arc::new(transport), true, loki.http.concurrency)
        }
        SinkTarget::Elasticsearch(es) => {
            let endpoint = &es.http.endpoint;
            let bulk = http::join(endpoint, "/_bulk");
            let transport = http::HttpTransport::new(&es.http, bulk, Some(endpoint.clone()), &[])?;
            (Arc::new(elasticsearch::Elasticsearch::new(es)), Arc::new(transport), false, es.http.concurrency)
        }
        SinkTarget::Otlp(otlp) => {
            let transport: Arc<dyn http::Transport> = match otlp.protocol {
                OtlpProtocol::Grpc => Arc::new(otlp::GrpcTransport::new(&otlp.http)?),
                OtlpProtocol::HttpProtobuf => {
                    let logs = http::join(&otlp.http.endpoint, "/v1/logs");
                    Arc::new(http::HttpTransport::new(&otlp.http, logs, None, &[])?)
                }
            };
            (Arc::new(otlp::Otlp::new(otlp)), transport, false, otlp.http.concurrency)
        }
        SinkTarget::Stdout | SinkTarget::File(_) => {
            let message = "not a network sink".to_owned();
            return Err(SinkError::Setup { sink: sink.name.to_string(), message });
        }
    };
    Ok(service::NetworkSink {
        ledger: Arc::new(batch::Ledger::new(Arc::clone(&sink.name), Arc::clone(acks), metrics)),
        dead_letters: Arc::new(dead_letter::DeadLetters::new(data_dir, Arc::clone(&sink.name))),
        protocol,
        transport,
        limits: sink.batch,
        concurrency,
        ordered,
    })
}

/// Spawns a sink task that cancels `failed` if it ends with an error.
fn spawn_reporting(
    sink: impl Future<Output = Result<(), SinkError>> + Send + 'static,
    failed: &CancellationToken,
) -> JoinHandle<Result<(), SinkError>> {
    let failed = failed.clone();
    tokio::spawn(async move {
        let result = sink.await;
        if let Err(error) = &result {
            tracing::error!(%error, "sink stopped");
            failed.cancel();
        }
        result
    })
}

/// Gives every batch to every sink, in order, waiting when a sink's queue is full. Ends when
/// the tailers have closed `input`; dropping the sink senders then lets each sink drain.
pub fn spawn_fanout(mut input: mpsc::Receiver<Batch>, sinks: &[RunningSink]) -> JoinHandle<()> {
    let outputs: Vec<(Arc<str>, mpsc::Sender<Arc<Batch>>)> =
        sinks.iter().map(|s| (Arc::clone(&s.name), s.sender.clone())).collect();
    tokio::spawn(async move {
        while let Some(batch) = input.recv().await {
            let batch = Arc::new(batch);
            for (name, output) in &outputs {
                if output.send(Arc::clone(&batch)).await.is_err() {
                    tracing::error!(sink = %name, "sink stopped; its records are not acknowledged and will be re-read after restart");
                }
            }
        }
    })
}

impl RunningSink {
    /// Drops this handle's sender so that the sink ends once the fan-out is done.
    pub fn close(self) -> (Arc<str>, JoinHandle<Result<(), SinkError>>) {
        (self.name, self.task)
    }
}
