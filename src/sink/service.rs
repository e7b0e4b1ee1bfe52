//! The one run loop every network sink shares: batch, build the request, send. A sink is a
//! [`Protocol`] (how records become a request, and what the backend's answer means) and a
//! [`Transport`] (how the request reaches the backend); everything else lives here.
//!
//! ```text
//!  pipeline batches ──► router (lane by stream key) ──► buffers (max_events/max_bytes/timeout)
//!      ──► lane queue ──► worker: encode (blocking pool) ──► send ──► outcome
//!            sent: settle   retry: backoff, same request   reject: dead-letter, settle
//!            split: per stream requests   partial: dead-letter some, retry some alone
//! ```
//!
//! With `concurrency: N`, a protocol that needs order per stream (Loki) gets N lanes, each
//! with one worker, and every record of a stream goes to the same lane; others get one lane
//! drained by N workers. Memory is bounded: one filling buffer and one queued request per lane,
//! one request per worker.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;

use super::SinkError;
use super::batch::{AGE_TICK, Buffer, Entries, Entry, Ledger, size_hint};
use super::dead_letter::DeadLetters;
use super::http::{Reply, Request, Transport};
use super::retry::Outcome;
use super::settings::BatchLimits;
use crate::backoff::Backoff;
use crate::pipeline::Batch;
use crate::record::Record;

/// First retry waits up to this long; each further one doubles it, up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// How records become requests for one backend, and what its answers mean.
pub(crate) trait Protocol: Send + Sync + 'static {
    /// A router for the batching task (which may keep state, e.g. label budgets).
    fn router(&self) -> Box<dyn Router>;
    /// Builds the request for `entries`. Runs on the blocking pool: may be heavy.
    fn encode(&self, entries: &[Entry]) -> Result<Request, String>;
    /// What the backend's answer means. Transport failures never get here (always retried).
    fn classify(&self, request: &Request, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Outcome;
}

/// Chooses the lane of each record, so that one stream's records stay in order.
pub(crate) trait Router: Send {
    /// `Some(stream key)` when records with the same key must be delivered in order.
    fn key(&mut self, record: &Record) -> Option<u64>;
}

/// A router for backends that do not care about order.
pub(crate) struct AnyOrder;

impl Router for AnyOrder {
    fn key(&mut self, _record: &Record) -> Option<u64> {
        None
    }
}

/// A configured network sink, ready to run.
pub(crate) struct NetworkSink {
    pub ledger: Arc<Ledger>,
    pub dead_letters: Arc<DeadLetters>,
    pub protocol: Arc<dyn Protocol>,
    pub transport: Arc<dyn Transport>,
    pub limits: BatchLimits,
    pub concurrency: usize,
    /// Whether records must stay in order per stream key (one worker per lane).
    pub ordered: bool,
}

/// What the workers share.
struct Shared {
    ledger: Arc<Ledger>,
    dead_letters: Arc<DeadLetters>,
    protocol: Arc<dyn Protocol>,
    transport: Arc<dyn Transport>,
}

/// Runs the sink until `batches` closes, then flushes and waits for every request to settle.
pub(crate) async fn run(sink: NetworkSink, mut batches: mpsc::Receiver<Arc<Batch>>) -> Result<(), SinkError> {
    let NetworkSink { ledger, dead_letters, protocol, transport, limits, concurrency, ordered } = sink;
    let shared = Arc::new(Shared { ledger: Arc::clone(&ledger), dead_letters, protocol, transport });
    tokio::spawn(health_check(Arc::clone(&shared)));

    let lanes = if ordered { concurrency.max(1) } else { 1 };
    let workers_per_lane = if ordered { 1 } else { concurrency.max(1) };
    let mut workers = JoinSet::new();
    let mut senders = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        let (sender, receiver) = mpsc::channel::<Entries>(1);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers_per_lane {
            workers.spawn(worker(Arc::clone(&shared), Arc::clone(&receiver)));
        }
        senders.push(sender);
    }
    let mut buffers: Vec<Buffer> = (0..lanes).map(|_| Buffer::default()).collect();
    // A pipeline batch is freed only when all its records settled, and with several lanes a
    // slow lane keeps many batches alive: bound the records this sink holds to about one
    // request per lane plus one.
    let retain_limit = retention_limit(&limits, lanes);
    let budget = Arc::new(tokio::sync::Semaphore::new(retain_limit));
    let mut router = shared.protocol.router();
    // Its own task: the batching loop may be waiting on a busy lane for as long as an outage.
    let age_task = tokio::spawn(refresh_age(Arc::clone(&ledger)));
    let far = Instant::now() + Duration::from_secs(86_400 * 365);

    loop {
        let deadline = buffers.iter().filter_map(|b| b.deadline(&limits)).min();
        tokio::select! {
            next = batches.recv() => {
                let Some(batch) = next else { break };
                let permit = match reserve(&budget, retain_limit, batch.records.len()) {
                    Some(permit) => permit,
                    None => {
                        // Over budget: send what is buffered so that records settle, then wait.
                        for (buffer, sender) in buffers.iter_mut().zip(&senders) {
                            send(buffer, sender).await?;
                        }
                        let wanted = batch.records.len().clamp(1, retain_limit) as u32;
                        Arc::clone(&budget).acquire_many_owned(wanted).await.map_err(|_| SinkError::Stopped)?
                    }
                };
                let Some(pending) = ledger.admit_with(batch, Some(permit)) else { continue };
                for (index, record) in pending.batch.records.iter().enumerate() {
                    let lane = router.key(record).map_or(0, |key| (key % lanes as u64) as usize);
                    let entry = Entry { pending: Arc::clone(&pending), index: index as u32 };
                    if buffers[lane].push(entry, size_hint(record), &limits) {
                        send(&mut buffers[lane], &senders[lane]).await?;
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far).into()), if deadline.is_some() => {
                let now = Instant::now();
                for (buffer, sender) in buffers.iter_mut().zip(&senders) {
                    if buffer.deadline(&limits).is_some_and(|d| d <= now) {
                        send(buffer, sender).await?;
                    }
                }
            }
        }
    }
    for (buffer, sender) in buffers.iter_mut().zip(&senders) {
        send(buffer, sender).await?;
    }
    drop(senders);
    while workers.join_next().await.is_some() {}
    age_task.abort();
    ledger.update_age();
    Ok(())
}

async fn refresh_age(ledger: Arc<Ledger>) {
    let mut tick = tokio::time::interval(AGE_TICK);
    loop {
        tick.tick().await;
        ledger.update_age();
    }
}

/// Records a sink may hold (buffered, queued, in flight): a request's worth per lane, plus one.
fn retention_limit(limits: &BatchLimits, lanes: usize) -> usize {
    let per_request = limits.max_events.min(usize::try_from(limits.max_bytes / 256).unwrap_or(usize::MAX));
    per_request.max(64).saturating_mul(lanes + 1).min(tokio::sync::Semaphore::MAX_PERMITS)
}

/// Takes `records` permits (at most the whole budget) if they are free now.
fn reserve(
    budget: &Arc<tokio::sync::Semaphore>,
    limit: usize,
    records: usize,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    Arc::clone(budget).try_acquire_many_owned(records.clamp(1, limit) as u32).ok()
}

/// Hands a full (or timed-out) buffer to its lane, waiting while the lane is busy.
async fn send(buffer: &mut Buffer, lane: &mpsc::Sender<Entries>) -> Result<(), SinkError> {
    if buffer.entries.is_empty() {
        return Ok(());
    }
    lane.send(buffer.take()).await.map_err(|_| SinkError::Stopped)
}

async fn worker(shared: Arc<Shared>, lane: Arc<Mutex<mpsc::Receiver<Entries>>>) {
    loop {
        let next = lane.lock().await.recv().await;
        let Some(entries) = next else { return };
        shared.deliver(entries).await;
    }
}

async fn health_check(shared: Arc<Shared>) {
    let sink = &shared.ledger.name;
    match shared.transport.health_check().await {
        Ok(description) => tracing::info!(%sink, "{description}; sink endpoint reachable"),
        Err(error) => {
            tracing::warn!(%sink, %error, "sink endpoint not reachable at start-up; records are kept and retried until it is")
        }
    }
}

/// The records of `entries` at `indices`.
fn subset(entries: &[Entry], indices: &[usize]) -> Entries {
    indices.iter().filter_map(|&i| entries.get(i).cloned()).collect()
}

impl Shared {
    /// Delivers one batch of records: every record ends sent or dead-lettered, then settled.
    async fn deliver(&self, entries: Entries) {
        let counters = &self.ledger.counters;
        counters.batches.inc();
        counters.in_flight.inc();
        let mut work = VecDeque::from([(entries, Backoff::new(BACKOFF_BASE, BACKOFF_CAP))]);
        while let Some((entries, backoff)) = work.pop_front() {
            let request = match self.encode(entries).await {
                (entries, Ok(request)) => (entries, request),
                (entries, Err(reason)) => {
                    let rejected = entries.iter().map(|e| (e.clone(), format!("cannot encode: {reason}"))).collect();
                    self.dead_letter(rejected).await;
                    self.ledger.settle(&entries);
                    continue;
                }
            };
            let follow_up = self.attempt_until_settled(request.0, &request.1, backoff).await;
            for item in follow_up.into_iter().rev() {
                work.push_front(item);
            }
        }
        counters.in_flight.dec();
    }

    /// Sends one request until it is settled; returns work that must be sent as new requests
    /// (split streams, items to retry alone).
    async fn attempt_until_settled(
        &self,
        entries: Entries,
        request: &Request,
        mut backoff: Backoff,
    ) -> Vec<(Entries, Backoff)> {
        let counters = &self.ledger.counters;
        let sink = &self.ledger.name;
        loop {
            let started = Instant::now();
            let reply = self.transport.send(request).await;
            counters.bytes.inc_by(request.body.len() as u64);
            counters.duration.observe(started.elapsed().as_secs_f64());
            let outcome = match reply {
                Reply::Failed { reason } => Outcome::Retry { after: None, reason },
                Reply::Answer { status, retry_after, body } => {
                    self.protocol.classify(request, status, retry_after, &body)
                }
            };
            match outcome {
                Outcome::Sent => {
                    counters.sent.inc_by(entries.len() as u64);
                    self.ledger.settle(&entries);
                    return Vec::new();
                }
                Outcome::Retry { after, reason } => {
                    counters.retried.inc_by(entries.len() as u64);
                    counters.retries.inc();
                    let wait = backoff.next(after);
                    log_retry(sink, backoff.attempts(), entries.len(), wait, &reason);
                    tokio::time::sleep(wait).await;
                }
                Outcome::Reject { reason } => {
                    tracing::warn!(%sink, records = entries.len(), %reason, "backend rejected a request; records dead-lettered");
                    let rejected = entries.iter().map(|e| (e.clone(), reason.clone())).collect();
                    self.dead_letter(rejected).await;
                    self.ledger.settle(&entries);
                    return Vec::new();
                }
                Outcome::Split(groups) => {
                    tracing::info!(%sink, groups = groups.len(), "backend rejected a request; sending its streams separately");
                    return groups.iter().map(|group| (subset(&entries, group), backoff.clone())).collect();
                }
                Outcome::Partial { retry, rejected, after } => {
                    return self.partial(entries, retry, rejected, after, backoff).await;
                }
                Outcome::SentWithLoss { count, reason } => {
                    tracing::warn!(%sink, lost = count, %reason, "backend accepted the request but dropped some records");
                    self.write_loss(count, &reason).await;
                    counters.dead_lettered.inc_by(count);
                    counters.sent.inc_by((entries.len() as u64).saturating_sub(count));
                    self.ledger.settle(&entries);
                    return Vec::new();
                }
            }
        }
    }

    /// Per-record results: dead-letter the rejected, settle the sent, and return the
    /// retryable ones as a new request to send after a backoff.
    async fn partial(
        &self,
        entries: Entries,
        retry: Vec<usize>,
        rejected: Vec<(usize, String)>,
        after: Option<Duration>,
        mut backoff: Backoff,
    ) -> Vec<(Entries, Backoff)> {
        let counters = &self.ledger.counters;
        let sink = &self.ledger.name;
        let mut open = vec![false; entries.len()];
        for &i in retry.iter().chain(rejected.iter().map(|(i, _)| i)) {
            if let Some(flag) = open.get_mut(i) {
                *flag = true;
            }
        }
        let sent: Entries = entries.iter().zip(&open).filter(|(_, open)| !**open).map(|(e, _)| e.clone()).collect();
        counters.sent.inc_by(sent.len() as u64);
        self.ledger.settle(&sent);
        if !rejected.is_empty() {
            let first = rejected.first().map(|(_, r)| r.clone()).unwrap_or_default();
            tracing::warn!(%sink, records = rejected.len(), reason = %first, "backend rejected some records; dead-lettered");
            let letters: Vec<(Entry, String)> =
                rejected.iter().filter_map(|(i, reason)| Some((entries.get(*i)?.clone(), reason.clone()))).collect();
            let settled: Entries = letters.iter().map(|(e, _)| e.clone()).collect();
            self.dead_letter(letters).await;
            self.ledger.settle(&settled);
        }
        if retry.is_empty() {
            return Vec::new();
        }
        counters.retried.inc_by(retry.len() as u64);
        counters.retries.inc();
        let wait = backoff.next(after);
        log_retry(sink, backoff.attempts(), retry.len(), wait, "some records were refused for now (429/5xx items)");
        tokio::time::sleep(wait).await;
        vec![(subset(&entries, &retry), backoff)]
    }

    /// Encodes on the blocking pool (compression and serialization are CPU-heavy). The
    /// entries come back even if the encoder panicked, so that they can still be settled.
    async fn encode(&self, entries: Entries) -> (Entries, Result<Request, String>) {
        let protocol = Arc::clone(&self.protocol);
        let shared = Arc::new(entries);
        let for_task = Arc::clone(&shared);
        let result = tokio::task::spawn_blocking(move || protocol.encode(&for_task))
            .await
            .unwrap_or_else(|error| Err(format!("encoder panicked: {error}")));
        let entries = Arc::try_unwrap(shared).unwrap_or_else(|still_shared| still_shared.as_ref().clone());
        (entries, result)
    }

    /// Writes dead letters, retrying until the disk takes them: a record is acknowledged
    /// only once its dead letter is safely written.
    async fn dead_letter(&self, rejected: Vec<(Entry, String)>) {
        let count = rejected.len() as u64;
        let rejected = Arc::new(rejected);
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        loop {
            let letters = Arc::clone(&self.dead_letters);
            let batch = Arc::clone(&rejected);
            match tokio::task::spawn_blocking(move || letters.write(&batch)).await {
                Ok(Ok(())) => break,
                Ok(Err(error)) => {
                    let path = self.dead_letters.path().display().to_string();
                    tracing::error!(sink = %self.ledger.name, %path, %error, "cannot write dead letters; retrying");
                }
                Err(error) => {
                    tracing::error!(sink = %self.ledger.name, %error, "dead-letter writer panicked; retrying")
                }
            }
            tokio::time::sleep(backoff.next(None)).await;
        }
        self.ledger.counters.dead_lettered.inc_by(count);
    }

    async fn write_loss(&self, count: u64, reason: &str) {
        let letters = Arc::clone(&self.dead_letters);
        let reason = reason.to_owned();
        let written = tokio::task::spawn_blocking(move || letters.write_loss(count, &reason)).await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::error!(sink = %self.ledger.name, "cannot note lost records in the dead-letter file");
        }
    }
}

/// One log line per retry, at warn for the first and then every power of two (an outage
/// does not flood the log), at debug otherwise.
fn log_retry(sink: &str, attempt: u32, records: usize, wait: Duration, reason: &str) {
    let wait_ms = wait.as_millis() as u64;
    if attempt.is_power_of_two() {
        tracing::warn!(%sink, attempt, records, wait_ms, %reason, "request failed; retrying");
    } else {
        tracing::debug!(%sink, attempt, records, wait_ms, %reason, "request failed; retrying");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use bytes::Bytes;

    use super::*;
    use crate::pipeline::{Acknowledgements, FileKey};
    use crate::record::Level;
    use crate::sink::http::BoxFuture;
    use crate::sink::loki::Loki;
    use crate::telemetry::metrics::SinkMetrics;

    /// A transport answering from a script (then 204), recording each request's size.
    #[derive(Default)]
    struct Scripted {
        replies: StdMutex<VecDeque<Reply>>,
        seen: StdMutex<Vec<usize>>,
    }

    impl Transport for Scripted {
        fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Reply> {
            self.seen.lock().expect("seen").push(request.records);
            let reply = self.replies.lock().expect("replies").pop_front();
            Box::pin(
                async move { reply.unwrap_or(Reply::Answer { status: 204, retry_after: None, body: Bytes::new() }) },
            )
        }

        fn health_check(&self) -> BoxFuture<'_, Result<String, String>> {
            Box::pin(async { Ok("scripted".to_owned()) })
        }
    }

    fn answer(status: u16) -> Reply {
        Reply::Answer { status, retry_after: Some(Duration::ZERO), body: Bytes::from_static(b"scripted") }
    }

    #[tokio::test]
    async fn retries_then_splits_streams_and_dead_letters_only_the_refused_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = FileKey { dev: 1, inode: 2, checksum: 3 };
        let acks = Arc::new(Acknowledgements::new(1));
        acks.open(file, "/a.log", 0);
        let transport = Arc::new(Scripted::default());
        transport.replies.lock().expect("replies").extend([
            Reply::Failed { reason: "connection refused".into() },
            answer(503),
            answer(400),
            answer(204),
            answer(400),
        ]);
        let config =
            match crate::sink::settings::from_yaml("{name: l, type: loki, endpoint: 'http://x', labels: [level]}")
                .target
            {
                crate::sink::SinkTarget::Loki(settings) => settings,
                other => panic!("not loki: {other:?}"),
            };
        let ledger = Arc::new(Ledger::new("l".into(), Arc::clone(&acks), &SinkMetrics::default()));
        let sink = NetworkSink {
            ledger: Arc::clone(&ledger),
            dead_letters: Arc::new(DeadLetters::new(dir.path(), "l".into())),
            protocol: Arc::new(Loki::new(&config)),
            transport: Arc::clone(&transport) as Arc<dyn Transport>,
            limits: BatchLimits::default(),
            concurrency: 1,
            ordered: true,
        };
        let (sender, receiver) = mpsc::channel(4);
        let records = [Level::Info, Level::Error, Level::Info, Level::Error]
            .into_iter()
            .map(|level| {
                let mut record = Record::new("m".into(), jiff::Timestamp::UNIX_EPOCH, Arc::new(Vec::new()));
                record.level = Some(level);
                record
            })
            .collect();
        sender.send(Arc::new(Batch { records, ack: Some(acks.issue(file, 40, 0)) })).await.expect("send");
        drop(sender);
        run(sink, receiver).await.expect("run");

        assert_eq!(*transport.seen.lock().expect("seen"), vec![4, 4, 4, 2, 2]);
        assert_eq!(acks.acked_offset(&file), Some(40), "every record settled: the batch is acknowledged");
        assert_eq!(ledger.counters.sent.get(), 2);
        assert_eq!(ledger.counters.dead_lettered.get(), 2);
        assert_eq!(ledger.counters.retried.get(), 8);
        assert_eq!(ledger.counters.in_flight.get(), 0);
        let letters = std::fs::read_to_string(dir.path().join("dead-letter/l.ndjson")).expect("dead letters");
        assert_eq!(letters.lines().count(), 2);
    }
}
