//! Sinks: where records go. Each sink runs as a task that takes batches from its own bounded
//! channel, delivers them, and acknowledges each batch only after it was written. The fan-out
//! gives every sink every batch, so each sink progresses independently within the shared
//! memory bound; the checkpoint moves once all of them acknowledged.
//!
//! Available now: `stdout` and `file` (NDJSON). `loki`, `elasticsearch` and `otlp` are parsed
//! and validated but refused at start-up until their issue lands.

mod file;
mod stdout;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{SinkSettings, SinkTarget};
use crate::pipeline::{Acknowledgements, Batch};
use crate::telemetry::metrics::SinkMetrics;

/// Batches queued per sink before the fan-out waits (and so, upstream, the tailers).
const SINK_QUEUE_BATCHES: usize = 16;

/// Why a sink failed or could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink:?}: type {kind} is not implemented in this version of pillion; use stdout or file for now")]
    Unsupported { sink: String, kind: &'static str },
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

/// Starts every configured sink.
pub fn start(
    settings: &[SinkSettings],
    acks: &Arc<Acknowledgements>,
    metrics: &SinkMetrics,
    failed: &CancellationToken,
) -> Result<Vec<RunningSink>, SinkError> {
    let mut running = Vec::with_capacity(settings.len());
    for sink in settings {
        let (sender, receiver) = mpsc::channel(SINK_QUEUE_BATCHES);
        let context = SinkContext { name: Arc::clone(&sink.name), acks: Arc::clone(acks), metrics: metrics.clone() };
        let unsupported = |kind| SinkError::Unsupported { sink: sink.name.to_string(), kind };
        let task = match &sink.target {
            SinkTarget::Stdout => spawn_reporting(stdout::run(context, receiver), failed),
            SinkTarget::File(file) => {
                let writer = file::FileWriter::open(&sink.name, &file.path)?;
                spawn_reporting(file::run(context, writer, receiver), failed)
            }
            SinkTarget::Loki(_) => return Err(unsupported("loki")),
            SinkTarget::Elasticsearch(_) => return Err(unsupported("elasticsearch")),
            SinkTarget::Otlp(_) => return Err(unsupported("otlp")),
        };
        running.push(RunningSink { name: Arc::clone(&sink.name), sender, task });
    }
    Ok(running)
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
