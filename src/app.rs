//! Runs pillion: starts the admin server, span export, the sinks, the fan-out (with the disk
//! buffer when configured), one tailer per input, the proxies and the checkpoint writer; on
//! shutdown stops them in data-flow order (proxies and tailers first, sinks last) so that
//! everything read is delivered and checkpointed within `shutdown_timeout`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminServer, AdminState};
use crate::buffer;
use crate::config::Config;
use crate::pipeline::unix_now;
use crate::pipeline::{Acknowledgements, Batch};
use crate::proxy::ProxyError;
use crate::proxy::access_log::AccessLog;
use crate::proxy::identity::Identity;
use crate::proxy::inbound::InboundServer;
use crate::proxy::outbound::OutboundServer;
use crate::sink::{self, SinkError};
use crate::tail::checkpoint::{CheckpointError, CheckpointStore, CheckpointWriter};
use crate::tail::{self, TailerContext};
use crate::tap::Tap;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::{Tracing, TracingError};
use crate::transform::Transforms;

/// A running sink's task.
type SinkTask = JoinHandle<Result<(), SinkError>>;

/// Batches queued between the tailers and the fan-out.
const TAIL_QUEUE_BATCHES: usize = 4;

/// Why pillion stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on admin address {address}: {source}")]
    AdminBind { address: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Tracing(#[from] TracingError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Buffer(#[from] crate::buffer::BufferError),
    #[error("cannot start the tailer thread for input {input:?}: {source}")]
    Tailer { input: String, source: std::io::Error },
    #[error("cannot start the parser threads: {0}")]
    ParsePool(std::io::Error),
    #[error("a sink failed; see the error above")]
    SinkFailed,
}

/// Runs until `shutdown` is cancelled (or a sink fails), then drains and checkpoints.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let running = Running::start(config, shutdown).await?;
    running.until_stopped().await;
    running.shutdown().await
}

/// Everything pillion runs, in the order it is stopped.
struct Running {
    shutdown: CancellationToken,
    shutdown_timeout: Duration,
    ready: Arc<AtomicBool>,
    admin: JoinHandle<()>,
    proxies: Proxies,
    span_export: Option<Arc<Tracing>>,
    tailers: Vec<std::thread::JoinHandle<()>>,
    fanout: JoinHandle<()>,
    sinks: Vec<(Arc<str>, SinkTask)>,
    sink_failed: CancellationToken,
    acks: Arc<Acknowledgements>,
    checkpoints: CheckpointWriter,
    /// Live record streams, ended at shutdown.
    tap: Arc<Tap>,
}

impl Running {
    /// Starts every part, downstream first: admin server, span export, sinks, fan-out,
    /// tailers, proxies, the checkpoint writer; then reports ready.
    async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, RunError> {
        let started = Instant::now();
        for warning in &config.warnings {
            tracing::warn!("{warning}");
        }
        let metrics = Metrics::new();
        let ready = Arc::new(AtomicBool::new(false));
        let tap = Tap::new(
            config.logs.inputs.iter().map(|input| Arc::clone(&input.name)).collect(),
            config.logs.sinks.iter().map(|sink| Arc::clone(&sink.name)).collect(),
            metrics.tap.clone(),
        );
        // Every series the config names exists from the first scrape, before any event.
        for input in &config.logs.inputs {
            metrics.input.declare(&input.name, input.parser.name());
        }
        for sink in &config.logs.sinks {
            metrics.sink.declare(&sink.name);
        }
        let admin = start_admin(&config, (&metrics, &tap), &ready, &shutdown).await?;

        let env = |name: &str| std::env::var(name).ok();
        let span_export = match &config.tracing {
            Some(tracing) => Some(Arc::new(Tracing::start(tracing, &config.resource, &metrics.spans, &env)?)),
            None => None,
        };

        let logs = &config.logs;
        let store = CheckpointStore::new(&logs.data_dir);
        let loaded = store.load();
        if let Some(warning) = &loaded.warning {
            tracing::warn!("{warning}");
        }
        let acks = Arc::new(Acknowledgements::new(logs.sinks.len()));
        acks.restore(&loaded.entries, unix_now());

        let sink_failed = CancellationToken::new();
        let sinks = sink::start(&logs.sinks, &logs.data_dir, (&acks, &tap), &metrics.sink, &sink_failed)?;
        let (tail_output, fanout_input) = mpsc::channel(TAIL_QUEUE_BATCHES);
        let buffer = logs.buffer.map(|settings| (settings, logs.data_dir.as_path()));
        let fanout = buffer::spawn_fanout(fanout_input, &sinks, buffer, &acks, &metrics.buffer, Arc::clone(&tap))?;
        let sinks: Vec<_> = sinks.into_iter().map(sink::RunningSink::close).collect();

        let tailers = start_tailers(&config, &logs.transforms, &acks, &metrics, &tail_output, &shutdown)?;
        let proxies = start_proxies(&config, &metrics, span_export.clone(), &tail_output, shutdown.clone()).await?;
        drop(tail_output);

        let intervals = (logs.checkpoint_interval, logs.checkpoint_ttl);
        let checkpoints = CheckpointWriter::spawn(store, Arc::clone(&acks), intervals);

        ready.store(true, Ordering::Relaxed);
        tracing::info!(
            inputs = logs.inputs.len(),
            sinks = logs.sinks.len(),
            startup_ms = started.elapsed().as_millis() as u64,
            "pillion started"
        );
        Ok(Running {
            shutdown,
            shutdown_timeout: config.shutdown_timeout,
            ready,
            admin,
            proxies,
            span_export,
            tailers,
            fanout,
            sinks,
            sink_failed,
            acks,
            checkpoints,
            tap,
        })
    }

    /// Returns once a shutdown was asked for or a sink failed.
    async fn until_stopped(&self) {
        tokio::select! {
            _ = self.shutdown.cancelled() => tracing::info!("shutting down: draining inputs and flushing sinks"),
            _ = self.sink_failed.cancelled() => tracing::error!("a sink failed; shutting down"),
        }
    }

    /// Stops in data-flow order within `shutdown_timeout`: not ready, proxies drained, spans
    /// flushed, tailers stopped, fan-out emptied, sinks flushed, then the final checkpoint.
    async fn shutdown(self) -> Result<(), RunError> {
        self.ready.store(false, Ordering::Relaxed);
        self.shutdown.cancel();

        let deadline = started_deadline(self.shutdown_timeout);
        self.proxies.drain(deadline).await;
        if let Some(span_export) = &self.span_export {
            let budget = deadline.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(2));
            span_export.shutdown(budget).await;
        }
        let drained = tokio::time::timeout_at(deadline, drain(self.tailers, self.fanout, self.sinks)).await;
        if drained.is_err() {
            tracing::warn!(
                "shutdown_timeout reached before every sink was flushed; unacknowledged records will be read again after restart"
            );
        }
        self.tap.close();
        self.checkpoints.finish(&self.acks).await?;
        self.admin.abort();
        tracing::info!("checkpoints written; bye");
        if self.sink_failed.is_cancelled() { Err(RunError::SinkFailed) } else { Ok(()) }
    }
}

/// Binds the admin server and starts serving /metrics, /healthz, /readyz, /config and /tap.
async fn start_admin(
    config: &Config,
    (metrics, tap): (&Arc<Metrics>, &Arc<Tap>),
    ready: &Arc<AtomicBool>,
    shutdown: &CancellationToken,
) -> Result<JoinHandle<()>, RunError> {
    let bind_error = |source| RunError::AdminBind { address: config.admin_listen, source };
    let admin = AdminServer::bind(config.admin_listen).await.map_err(bind_error)?;
    let admin_address = admin.local_addr().map_err(bind_error)?;
    let admin_state = AdminState {
        metrics: Arc::clone(metrics),
        ready: Arc::clone(ready),
        config_yaml: Arc::from(config.effective_yaml.as_str()),
        tap: Arc::clone(tap),
    };
    let task = admin.spawn(admin_state, shutdown.clone());
    tracing::info!(address = %admin_address, "admin server listening");
    Ok(task)
}

/// The running proxies and the access-log task feeding the log pipeline.
struct Proxies {
    servers: Vec<JoinHandle<()>>,
    access_log: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Proxies {
    /// Waits for in-flight requests to finish (they stopped accepting when shutdown began),
    /// then flushes the access log into the pipeline.
    async fn drain(self, deadline: tokio::time::Instant) {
        for server in self.servers {
            let _ = tokio::time::timeout_at(deadline, server).await;
        }
        if let Some((stop, task)) = self.access_log {
            stop.cancel();
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
    }
}

/// One tailer thread per input, sharing one parse pool (none without inputs).
fn start_tailers(
    config: &Config,
    transforms: &Arc<Transforms>,
    acks: &Arc<Acknowledgements>,
    metrics: &Metrics,
    output: &mpsc::Sender<Batch>,
    shutdown: &CancellationToken,
) -> Result<Vec<std::thread::JoinHandle<()>>, RunError> {
    let inputs = &config.logs.inputs;
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let parse_pool = Arc::new(tail::ParsePool::per_core().map_err(RunError::ParsePool)?);
    inputs
        .iter()
        .map(|input| {
            let context = TailerContext {
                input: Arc::clone(input),
                transforms: Arc::clone(transforms),
                resource: config.resource.clone(),
                acks: Arc::clone(acks),
                metrics: metrics.input.clone(),
                output: output.clone(),
                parse_pool: Arc::clone(&parse_pool),
                shutdown: shutdown.clone(),
            };
            tail::spawn(context).map_err(|source| RunError::Tailer { input: input.name.to_string(), source })
        })
        .collect()
}

/// Binds `proxy.inbound` and `proxy.outbound` when configured and starts serving.
async fn start_proxies(
    config: &Config,
    metrics: &Metrics,
    span_export: Option<Arc<Tracing>>,
    pipeline: &mpsc::Sender<Batch>,
    shutdown: CancellationToken,
) -> Result<Proxies, RunError> {
    let mut proxies = Proxies { servers: Vec::new(), access_log: None };
    let proxy = &config.proxy;
    let drain = config.shutdown_timeout / 2;
    let identity = match &proxy.identity {
        Some(files) => {
            let identity = Identity::load(files.clone(), metrics.proxy.tls.clone()).map_err(ProxyError::from)?;
            tracing::info!(identity = %identity.own_identity(), serial = %identity.serial(), "mesh identity loaded");
            identity.watch(shutdown.clone());
            Some(identity)
        }
        None => None,
    };
    if let Some(inbound) = &proxy.inbound {
        let access_log = inbound.access_log.then(|| {
            let stop = CancellationToken::new();
            let dropped = metrics.proxy.access_log_dropped.clone();
            let (log, task) = AccessLog::spawn(pipeline.clone(), config.resource.clone(), dropped, stop.clone());
            proxies.access_log = Some((stop, task));
            log
        });
        let server =
            InboundServer::bind(inbound, metrics.proxy.clone(), span_export.clone(), access_log, identity.as_ref())
                .await?;
        let address = server.local_addr().map_err(|source| ProxyError::Bind { address: inbound.listen, source })?;
        tracing::info!(address = %address, upstream = %inbound.upstream, "proxy listening");
        proxies.servers.push(server.spawn(shutdown.clone(), drain));
    }
    if let Some(outbound) = &proxy.outbound {
        let server = OutboundServer::bind(
            outbound,
            metrics.proxy.clone(),
            span_export,
            identity.as_ref(),
            proxy.dns_nameserver,
            &shutdown,
        )
        .await?;
        let address = server.local_addr().map_err(|source| ProxyError::Bind { address: outbound.listen, source })?;
        tracing::info!(address = %address, "egress proxy listening");
        proxies.servers.push(server.spawn(shutdown, drain));
    }
    Ok(proxies)
}

/// The shutdown deadline, leaving a little time to write the final checkpoint.
fn started_deadline(shutdown_timeout: Duration) -> tokio::time::Instant {
    let margin = Duration::from_millis(500).min(shutdown_timeout / 4);
    tokio::time::Instant::now() + shutdown_timeout.saturating_sub(margin)
}

/// Waits for the tailers to stop, then the fan-out to empty, then every sink to finish.
async fn drain(tailers: Vec<std::thread::JoinHandle<()>>, fanout: JoinHandle<()>, sinks: Vec<(Arc<str>, SinkTask)>) {
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
