//! Runs pillion: starts the admin server, the sinks, the fan-out, one tailer per input and
//! the checkpoint writer; on shutdown stops them in data-flow order (tailers first, sinks
//! last) so that everything read is delivered and checkpointed within `shutdown_timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminServer, AdminState};
use crate::config::Config;
use crate::pipeline::Acknowledgements;
use crate::sink::{self, SinkError};
use crate::tail::checkpoint::{CheckpointError, CheckpointStore};
use crate::tail::{self, TailerContext};
use crate::telemetry::metrics::Metrics;
use crate::transform::{TransformError, Transforms};

/// Batches queued between the tailers and the fan-out.
const TAIL_QUEUE_BATCHES: usize = 32;

/// Why pillion stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on admin address {address}: {source}")]
    AdminBind { address: std::net::SocketAddr, source: std::io::Error },
    #[error("{section} is configured, but {section} is not implemented in this version of pillion; remove the `{section}:` section for now")]
    NotImplemented { section: &'static str },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot start the tailer thread for input {input:?}: {source}")]
    Tailer { input: String, source: std::io::Error },
    #[error("a sink failed; see the error above")]
    SinkFailed,
}

/// Runs until `shutdown` is cancelled (or a sink fails), then drains and checkpoints.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let started = Instant::now();
    if config.proxy.is_some() {
        return Err(RunError::NotImplemented { section: "proxy" });
    }
    if config.tracing.is_some() {
        return Err(RunError::NotImplemented { section: "tracing" });
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let admin = AdminServer::bind(config.admin_listen)
        .await
        .map_err(|source| RunError::AdminBind { address: config.admin_listen, source })?;
    let admin_address = admin.local_addr().map_err(|source| RunError::AdminBind { address: config.admin_listen, source })?;
    let admin_state = AdminState {
        metrics: Arc::clone(&metrics),
        ready: Arc::clone(&ready),
        config_yaml: Arc::from(config.effective_yaml.as_str()),
    };
    let admin_task = admin.spawn(admin_state, shutdown.clone());
    tracing::info!(address = %admin_address, "admin server listening");

    let logs = &config.logs;
    let store = CheckpointStore::new(&logs.data_dir);
    let loaded = store.load();
    if let Some(warning) = &loaded.warning {
        tracing::warn!("{warning}");
    }
    let checkpoints = Arc::new(loaded.offsets);
    let acks = Arc::new(Acknowledgements::new(logs.sinks.len()));
    let transforms = Arc::new(Transforms::new(&logs.transforms)?);

    let sink_failed = CancellationToken::new();
    let sinks = sink::start(&logs.sinks, &acks, &metrics.sink, &sink_failed)?;
    let (tail_output, fanout_input) = mpsc::channel(TAIL_QUEUE_BATCHES);
    let fanout = sink::spawn_fanout(fanout_input, &sinks);
    let sink_tasks: Vec<_> = sinks.into_iter().map(sink::RunningSink::close).collect();

    let mut tailers = Vec::with_capacity(logs.inputs.len());
    for input in &logs.inputs {
        let context = TailerContext {
            input: Arc::clone(input),
            transforms: Arc::clone(&transforms),
            resource: config.resource.clone(),
            acks: Arc::clone(&acks),
            metrics: metrics.input.clone(),
            checkpoints: Arc::clone(&checkpoints),
            output: tail_output.clone(),
            shutdown: shutdown.clone(),
        };
        let handle = tail::spawn(context).map_err(|source| RunError::Tailer { input: input.name.to_string(), source })?;
        tailers.push(handle);
    }
    drop(tail_output);

    let checkpoint_stop = CancellationToken::new();
    let checkpointer = spawn_checkpointer(store.clone(), Arc::clone(&acks), logs.checkpoint_interval, checkpoint_stop.clone());

    ready.store(true, Ordering::Relaxed);
    tracing::info!(
        inputs = logs.inputs.len(),
        sinks = logs.sinks.len(),
        startup_ms = started.elapsed().as_millis() as u64,
        "pillion started"
    );

    tokio::select! {
        _ = shutdown.cancelled() => tracing::info!("shutting down: draining inputs and flushing sinks"),
        _ = sink_failed.cancelled() => tracing::error!("a sink failed; shutting down"),
    }
    ready.store(false, Ordering::Relaxed);
    shutdown.cancel();

    let deadline = started_deadline(config.shutdown_timeout);
    let drained = tokio::time::timeout_at(deadline, drain(tailers, fanout, sink_tasks)).await;
    if drained.is_err() {
        tracing::warn!("shutdown_timeout reached before every sink was flushed; unacknowledged records will be read again after restart");
    }
    checkpoint_stop.cancel();
    let _ = checkpointer.await;
    let final_offsets = acks.snapshot();
    tokio::task::spawn_blocking(move || store.save(&final_offsets))
        .await
        .unwrap_or(Ok(()))?;
    admin_task.abort();
    tracing::info!("checkpoints written; bye");
    if sink_failed.is_cancelled() { Err(RunError::SinkFailed) } else { Ok(()) }
}

/// The shutdown deadline, leaving a little time to write the final checkpoint.
fn started_deadline(shutdown_timeout: Duration) -> tokio::time::Instant {
    let margin = Duration::from_millis(500).min(shutdown_timeout / 4);
    tokio::time::Instant::now() + shutdown_timeout.saturating_sub(margin)
}

/// A running sink: its name and its task.
type SinkTask = (Arc<str>, JoinHandle<Result<(), SinkError>>);

/// Waits for the tailers to stop, then the fan-out to empty, then every sink to finish.
async fn drain(
    tailers: Vec<std::thread::JoinHandle<()>>,
    fanout: JoinHandle<()>,
    sinks: Vec<SinkTask>,
) {
    for tailer in tailers {
        let _ = tokio::task::spawn_blocking(move || tailer.join()).await;
    }
    let _ = fanout.await;
    for (name, task) in sinks {
        match task.await {
            Ok(Ok(())) => tracing::debug!(sink = %name, "sink flushed"),
            Ok(Err(error)) => tracing::error!(sink = %name, %error, "sink failed"),
            Err(error) => tracing::error!(sink = %name, %error, "sink task panicked"),
        }
    }
}

fn spawn_checkpointer(
    store: CheckpointStore,
    acks: Arc<Acknowledgements>,
    interval: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let Some(offsets) = acks.snapshot_if_changed() else {
                continue;
            };
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.save(&offsets)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "checkpoint not written; will retry");
                    acks.mark_changed();
                }
                Err(error) => tracing::warn!(%error, "checkpoint writer panicked"),
            }
        }
    })
}
