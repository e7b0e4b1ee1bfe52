//! The fan-out to the sinks, with the optional disk buffer (`logs.buffer`).
//!
//! Every batch goes to every sink's queue. When the sinks keep up, that is all: the fast path
//! never touches the disk. When a batch waits longer than [`SPILL_AFTER`] for room (a backend
//! down or slow), it is written to the [`spool`] instead, and from then on every batch is,
//! so order is kept, until the sinks have caught up with the spool. Spooled batches are
//! fsynced in groups (one fsync covers every frame written while the previous one ran); once
//! a batch is durable its source acknowledgement is given, so the file's checkpoint advances
//! and rotation may delete the file (a batch whose fsync failed is not durable: its source is
//! acknowledged only once the sinks delivered it from the spool). The spool is read back in order as the sinks make room,
//! as batches acknowledged against [`FileKey::SPOOL`] in the same ledger, so the spool's
//! delivered id is persisted with the checkpoints and delivered segments are deleted. After a
//! restart (or kill -9) the spool is replayed from that id: duplicates at most, never loss.
//! When the spool holds `max_bytes`, no batch is taken: the tailers wait, as without a buffer.

pub mod codec;
pub mod settings;
pub mod spool;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::task::JoinHandle;

use crate::pipeline::{AckToken, Acknowledgements, Batch, FileKey};
use crate::sink::RunningSink;
use crate::tap::Tap;
use crate::telemetry::metrics::BufferMetrics;
use settings::BufferSettings;
use spool::Spool;

/// How long a batch may wait for room in every sink's queue before it is spooled.
pub const SPILL_AFTER: Duration = Duration::from_millis(500);
/// How often delivered spool frames are looked for (and the gauges refreshed).
const ACK_POLL: Duration = Duration::from_millis(100);
/// Pause after an error reading the spool, so that a broken disk does not spin.
const READ_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Why the buffer could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the disk buffer in {dir}: {source}")]
pub struct BufferError {
    dir: String,
    source: std::io::Error,
}

type Outputs = Vec<(Arc<str>, mpsc::Sender<Arc<Batch>>)>;

/// Starts the fan-out: with `buffer`, spilling to `<data_dir>/buffer/`. Ends when `input` is
/// closed (what the spool holds then is replayed at the next start).
pub fn spawn_fanout(
    input: mpsc::Receiver<Batch>,
    sinks: &[RunningSink],
    buffer: Option<(BufferSettings, &Path)>,
    acks: &Arc<Acknowledgements>,
    metrics: &BufferMetrics,
    tap: Arc<Tap>,
) -> Result<JoinHandle<()>, BufferError> {
    let outputs: Outputs = sinks.iter().map(|s| (Arc::clone(&s.name), s.sender())).collect();
    let Some((settings, data_dir)) = buffer else {
        return Ok(tokio::spawn(plain_fanout(input, outputs, tap)));
    };
    let dir = data_dir.join("buffer");
    let acked = acks.acked_offset(&FileKey::SPOOL).unwrap_or(0);
    let spool = Spool::open(&dir, settings.max_bytes, acked)
        .map_err(|source| BufferError { dir: dir.display().to_string(), source })?;
    // Frames below the spool's first may have been delivered and deleted: start the ledger
    // where the spool starts reading.
    acks.reset(FileKey::SPOOL, "<buffer>", spool.acked(), 0);
    if spool.events() > 0 {
        tracing::info!(
            events = spool.events(),
            bytes = spool.disk_bytes(),
            "disk buffer holds records from a previous run; replaying them first"
        );
    }
    let mut stage = Buffered {
        spool,
        outputs,
        acks: Arc::clone(acks),
        metrics: metrics.clone(),
        pending: Vec::new(),
        undurable: Undurable::default(),
        scratch: Vec::new(),
        corrupt_reported: 0,
        tap,
    };
    stage.report();
    Ok(tokio::spawn(stage.run(input)))
}

/// Without a buffer: every batch to every sink, in order, waiting for room.
async fn plain_fanout(mut input: mpsc::Receiver<Batch>, outputs: Outputs, tap: Arc<Tap>) {
    while let Some(batch) = input.recv().await {
        let batch = Arc::new(batch);
        tap.entering(&batch);
        for (name, output) in &outputs {
            if output.send(Arc::clone(&batch)).await.is_err() {
                tracing::error!(sink = %name, "sink stopped; its records are not acknowledged and will be re-read after restart");
            }
        }
    }
}

/// Room for one batch in every sink's queue; `None` when a sink stopped.
async fn reserve_all(outputs: &Outputs) -> Option<Vec<OwnedPermit<Arc<Batch>>>> {
    let mut permits = Vec::with_capacity(outputs.len());
    for (name, output) in outputs {
        match output.clone().reserve_owned().await {
            Ok(permit) => permits.push(permit),
            Err(_) => {
                tracing::error!(sink = %name, "sink stopped; its records are not acknowledged");
                return None;
            }
        }
    }
    Some(permits)
}

/// Sends `batch` to every sink (and to the live taps, which never wait).
fn send_all(permits: Vec<OwnedPermit<Arc<Batch>>>, batch: Batch, tap: &Tap) {
    let batch = Arc::new(batch);
    tap.entering(&batch);
    for permit in permits {
        permit.send(Arc::clone(&batch));
    }
}

/// A group fsync running on a blocking thread, and the acknowledgements it makes good.
struct Syncing {
    task: JoinHandle<std::io::Result<()>>,
    tokens: Vec<AckToken>,
    /// One past the last frame the fsync covers.
    through: u64,
    started: Instant,
}

/// Spooled batches whose group fsync failed. A failed fsync is not retried: the kernel may
/// have dropped the dirty pages, and a second fsync would report success for data that is not
/// on disk. So these batches are not durable, and their sources are acknowledged only once
/// the sinks delivered them from the spool (a crash before that reads them again from their
/// files). Groups are kept in spool order.
#[derive(Debug, Default)]
struct Undurable {
    groups: VecDeque<(u64, Vec<AckToken>)>,
}

impl Undurable {
    /// The batches of `tokens` are in frames below `through`.
    fn hold(&mut self, through: u64, tokens: Vec<AckToken>) {
        if !tokens.is_empty() {
            self.groups.push_back((through, tokens));
        }
    }

    /// The tokens of every group whose frames are all below `delivered`.
    fn release(&mut self, delivered: u64) -> Vec<AckToken> {
        let mut released = Vec::new();
        while let Some((through, _)) = self.groups.front() {
            if *through > delivered {
                break;
            }
            if let Some((_, tokens)) = self.groups.pop_front() {
                released.extend(tokens);
            }
        }
        released
    }
}

/// The fan-out with a spool.
struct Buffered {
    spool: Spool,
    outputs: Outputs,
    acks: Arc<Acknowledgements>,
    metrics: BufferMetrics,
    /// Source acknowledgements of spooled batches waiting for the next fsync.
    pending: Vec<AckToken>,
    undurable: Undurable,
    scratch: Vec<u8>,
    corrupt_reported: u64,
    tap: Arc<Tap>,
}

impl Buffered {
    async fn run(mut self, mut input: mpsc::Receiver<Batch>) {
        let mut syncing: Option<Syncing> = None;
        let mut input_open = true;
        let mut ticker = tokio::time::interval(ACK_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if syncing.is_none() && (self.spool.has_unsynced() || !self.pending.is_empty()) {
                let job = self.spool.sync_job();
                let tokens = std::mem::take(&mut self.pending);
                syncing = Some(Syncing {
                    task: tokio::task::spawn_blocking(move || job.run()),
                    tokens,
                    through: self.spool.appended(),
                    started: Instant::now(),
                });
            }
            if !input_open && syncing.is_none() {
                break;
            }
            let replay = self.spool.has_unread();
            let take = input_open && !self.spool.is_full();
            tokio::select! {
                biased;
                done = async {
                    match syncing.as_mut() {
                        Some(group) => (&mut group.task).await,
                        None => std::future::pending().await,
                    }
                }, if syncing.is_some() => {
                    if let Some(group) = syncing.take() {
                        self.synced(group, done.map_err(std::io::Error::other).and_then(|r| r));
                    }
                }
                permits = reserve_all(&self.outputs), if replay => match permits {
                    Some(permits) => self.replay_one(permits).await,
                    None => tokio::time::sleep(READ_ERROR_PAUSE).await,
                },
                batch = input.recv(), if take => match batch {
                    Some(batch) => self.take(batch).await,
                    None => input_open = false,
                },
                _ = ticker.tick() => self.report(),
            }
        }
        self.report();
        if self.spool.has_unread() {
            tracing::info!(events = self.spool.events(), "disk buffer keeps undelivered records for the next start");
        }
    }

    /// A batch from the tailers: straight to the sinks when they take it soon enough and the
    /// spool has nothing older; into the spool otherwise.
    async fn take(&mut self, batch: Batch) {
        if !self.spool.has_unread() {
            match tokio::time::timeout(SPILL_AFTER, reserve_all(&self.outputs)).await {
                Ok(Some(permits)) => return send_all(permits, batch, &self.tap),
                Ok(None) => return,
                Err(_) => {}
            }
        }
        if batch.records.is_empty() {
            if let Some(token) = &batch.ack {
                self.acks.ack_all(token);
            }
            return;
        }
        match self.spill(&batch.records) {
            Ok(()) => {
                self.metrics.spilled.inc_by(batch.records.len() as u64);
                self.pending.extend(batch.ack);
            }
            Err(error) => {
                // No loss: the batch waits for the sinks, as without a buffer.
                tracing::error!(%error, "cannot write to the disk buffer; waiting for the sinks instead");
                if let Some(permits) = reserve_all(&self.outputs).await {
                    send_all(permits, batch, &self.tap);
                }
            }
        }
    }

    /// Writes `records` as one frame (or more, for a batch larger than a frame may be).
    fn spill(&mut self, records: &[crate::record::Record]) -> std::io::Result<()> {
        self.scratch.clear();
        codec::encode(records, &mut self.scratch).map_err(std::io::Error::other)?;
        if self.scratch.len() > spool::MAX_PAYLOAD && records.len() > 1 {
            let (first, second) = records.split_at(records.len() / 2);
            self.spill(first)?;
            return self.spill(second);
        }
        let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
        self.spool.append(count, &self.scratch).map(drop)
    }

    /// A group fsync finished: the batches it covers are durable, their sources may move on.
    fn synced(&mut self, group: Syncing, result: std::io::Result<()>) {
        self.metrics.fsync_duration.observe(group.started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                for token in &group.tokens {
                    self.acks.ack_all(token);
                }
            }
            Err(error) => {
                tracing::error!(%error, batches = group.tokens.len(), "disk buffer fsync failed; these batches' files keep their checkpoint until the sinks deliver them from the buffer");
                self.undurable.hold(group.through, group.tokens);
            }
        }
    }

    /// Sends the next spooled batch to the sinks (the permits are their room).
    async fn replay_one(&mut self, permits: Vec<OwnedPermit<Arc<Batch>>>) {
        match self.spool.read_next() {
            Ok(Some(frame)) => {
                let token = self.acks.issue(FileKey::SPOOL, frame.id + 1, 0);
                match codec::decode(&frame.payload) {
                    Ok(records) => send_all(permits, Batch { records, ack: Some(token) }, &self.tap),
                    Err(error) => {
                        tracing::error!(%error, id = frame.id, "disk buffer frame passed its checksum but cannot be decoded; skipped");
                        self.metrics.corrupt_segments.inc();
                        self.acks.ack_all(&token);
                    }
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, "cannot read the disk buffer; retrying");
                tokio::time::sleep(READ_ERROR_PAUSE).await;
            }
        }
        self.report_corrupt();
    }

    /// Frees what the sinks delivered, and refreshes the gauges.
    fn report(&mut self) {
        if let Some(acked) = self.acks.acked_offset(&FileKey::SPOOL) {
            self.spool.acknowledge(acked);
            for token in self.undurable.release(acked) {
                self.acks.ack_all(&token);
            }
        }
        self.metrics.bytes.set(i64::try_from(self.spool.disk_bytes()).unwrap_or(i64::MAX));
        self.metrics.events.set(i64::try_from(self.spool.events()).unwrap_or(i64::MAX));
        self.report_corrupt();
    }

    fn report_corrupt(&mut self) {
        let corrupt = self.spool.corrupt();
        if corrupt > self.corrupt_reported {
            self.metrics.corrupt_segments.inc_by(corrupt - self.corrupt_reported);
            self.corrupt_reported = corrupt;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(seq: u64) -> AckToken {
        AckToken { file: FileKey { dev: 1, inode: 2, checksum: 3 }, epoch: 1, seq, end_offset: seq * 10, tail: 0 }
    }

    #[test]
    fn batches_whose_fsync_failed_are_acknowledged_once_delivered_from_the_spool() {
        let mut undurable = Undurable::default();
        undurable.hold(5, vec![token(0)]);
        undurable.hold(9, Vec::new());
        undurable.hold(9, vec![token(1), token(2)]);
        assert!(undurable.release(4).is_empty(), "frame 4 is not delivered");
        assert_eq!(undurable.release(5), vec![token(0)]);
        assert!(undurable.release(8).is_empty());
        assert_eq!(undurable.release(100), vec![token(1), token(2)]);
        assert!(undurable.release(100).is_empty());
    }
}
