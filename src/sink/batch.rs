//! Batching for the network sinks: pipeline batches are cut into request-sized [`Entries`]
//! (by `max_events`, `max_bytes`, `timeout`), and each pipeline batch is acknowledged once,
//! when every one of its records has been settled (sent or dead-lettered), however many
//! requests, retries and lanes it was spread over. The [`Ledger`] also keeps the sink's
//! counters and the age of its oldest unacknowledged batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::settings::BatchLimits;
use crate::pipeline::{Acknowledgements, Batch};
use crate::record::{Record, Value};
use crate::telemetry::metrics::SinkMetrics;

/// A pipeline batch being delivered by one sink.
#[derive(Debug)]
pub(crate) struct Pending {
    pub batch: Arc<Batch>,
    /// Records not yet settled.
    remaining: AtomicUsize,
    /// Arrival order, for the oldest-unacknowledged gauge.
    id: u64,
    /// This batch's share of the sink's retention budget, given back when the last of its
    /// records is dropped.
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// One record of a pending batch.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub pending: Arc<Pending>,
    pub index: u32,
}

impl Entry {
    pub fn record(&self) -> &Record {
        &self.pending.batch.records[self.index as usize]
    }
}

/// The records of one request.
pub(crate) type Entries = Vec<Entry>;

/// Per-sink settlement: acknowledgements, outcome counters and delivery-lag gauges.
pub(crate) struct Ledger {
    pub name: Arc<str>,
    acks: Arc<Acknowledgements>,
    next_id: AtomicU64,
    /// Arrival time of each unsettled pipeline batch, by id.
    unsettled: Mutex<BTreeMap<u64, Instant>>,
    pub counters: SinkCounters,
}

/// The sink's metric handles, resolved once.
#[derive(Clone)]
pub(crate) struct SinkCounters {
    pub sent: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub bytes: Counter,
    pub duration: Histogram,
    pub batches: Counter,
    pub retries: Counter,
    pub in_flight: Gauge,
    pub oldest_unacked: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl SinkCounters {
    pub fn new(metrics: &SinkMetrics, sink: &str) -> SinkCounters {
        let label = SinkMetrics::label(sink);
        let outcome = |name| metrics.events.get_or_create(&SinkMetrics::outcome(sink, name)).clone();
        SinkCounters {
            sent: outcome("sent"),
            retried: outcome("retried"),
            dead_lettered: outcome("dead_lettered"),
            bytes: metrics.bytes.get_or_create(&label).clone(),
            duration: metrics.request_duration.get_or_create(&label).clone(),
            batches: metrics.batches.get_or_create(&label).clone(),
            retries: metrics.retries.get_or_create(&label).clone(),
            in_flight: metrics.in_flight.get_or_create(&label).clone(),
            oldest_unacked: metrics.oldest_unacked_age.get_or_create(&label).clone(),
        }
    }
}

impl Ledger {
    pub fn new(name: Arc<str>, acks: Arc<Acknowledgements>, metrics: &SinkMetrics) -> Ledger {
        let counters = SinkCounters::new(metrics, &name);
        Ledger { name, acks, next_id: AtomicU64::new(0), unsettled: Mutex::new(BTreeMap::new()), counters }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        // Every update is one insert or remove: a poisoned map is still consistent.
        self.unsettled.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts tracking a pipeline batch, without a retention budget (tests).
    #[cfg(test)]
    pub fn admit(&self, batch: Arc<Batch>) -> Option<Arc<Pending>> {
        self.admit_with(batch, None)
    }

    /// Starts tracking a pipeline batch, holding `budget` until the batch is fully settled and
    /// dropped. An empty batch is acknowledged at once.
    pub fn admit_with(
        &self,
        batch: Arc<Batch>,
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Option<Arc<Pending>> {
        if batch.records.is_empty() {
            if let Some(token) = &batch.ack {
                self.acks.ack(token);
            }
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Instant::now());
        let remaining = AtomicUsize::new(batch.records.len());
        Some(Arc::new(Pending { batch, remaining, id, _budget: budget }))
    }

    /// Marks `entries` as settled (sent or dead-lettered); acknowledges each pipeline batch
    /// whose last record this was. One atomic operation per run of same-batch entries.
    pub fn settle(&self, entries: &[Entry]) {
        let mut start = 0;
        while start < entries.len() {
            let pending = &entries[start].pending;
            let run = entries[start..].iter().take_while(|e| Arc::ptr_eq(&e.pending, pending)).count();
            if pending.remaining.fetch_sub(run, Ordering::AcqRel) == run {
                if let Some(token) = &pending.batch.ack {
                    self.acks.ack(token);
                }
                self.lock().remove(&pending.id);
            }
            start += run;
        }
    }

    /// Refreshes the oldest-unacknowledged-batch gauge.
    pub fn update_age(&self) {
        let oldest = self.lock().values().next().copied();
        let age = oldest.map_or(0.0, |since| since.elapsed().as_secs_f64());
        self.counters.oldest_unacked.set(age);
    }
}

/// A request being filled.
#[derive(Default)]
pub(crate) struct Buffer {
    pub entries: Entries,
    pub bytes: usize,
    pub since: Option<Instant>,
}

impl Buffer {
    /// Adds a record of about `size` encoded bytes; true when the batch is now full.
    pub fn push(&mut self, entry: Entry, size: usize, limits: &BatchLimits) -> bool {
        if self.entries.is_empty() {
            self.since = Some(Instant::now());
        }
        self.entries.push(entry);
        self.bytes += size;
        self.entries.len() >= limits.max_events || self.bytes as u64 >= limits.max_bytes
    }

    /// When this buffer must be sent even if not full.
    pub fn deadline(&self, limits: &BatchLimits) -> Option<Instant> {
        self.since.map(|since| since + limits.timeout)
    }

    pub fn take(&mut self) -> Entries {
        self.since = None;
        self.bytes = 0;
        std::mem::take(&mut self.entries)
    }
}

/// A rough encoded size of a record: message, attribute text and a fixed overhead. Cheap and
/// allocation-free; `max_bytes` is a budget, not an exact limit.
pub(crate) fn size_hint(record: &Record) -> usize {
    let attributes: usize = record.attributes.iter().map(|(k, v)| k.len() + value_size(v) + 4).sum();
    record.message.len() + attributes + 96
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len() + 2,
        Value::Array(items) => items.iter().map(value_size).sum::<usize>() + 2,
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + value_size(v) + 4).sum::<usize>() + 2,
        _ => 8,
    }
}

/// How often the oldest-unacknowledged gauge is refreshed while idle.
pub(crate) const AGE_TICK: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::FileKey;

    fn batch(acks: &Acknowledgements, file: FileKey, n: usize, end: u64) -> Arc<Batch> {
        let resource = Arc::new(Vec::new());
        let records =
            (0..n).map(|i| Record::new(format!("line {i}"), jiff::Timestamp::UNIX_EPOCH, resource.clone())).collect();
        Arc::new(Batch { records, ack: Some(acks.issue(file, end, 0)) })
    }

    #[test]
    fn a_pipeline_batch_is_acknowledged_once_all_its_records_settled() {
        let file = FileKey { dev: 1, inode: 1, checksum: 7 };
        let acks = Arc::new(Acknowledgements::new(1));
        acks.open(file, "/a", 0);
        let metrics = SinkMetrics::default();
        let ledger = Ledger::new("s".into(), Arc::clone(&acks), &metrics);
        let first = ledger.admit(batch(&acks, file, 3, 30)).expect("pending");
        let second = ledger.admit(batch(&acks, file, 1, 40)).expect("pending");
        let entry = |p: &Arc<Pending>, index| Entry { pending: Arc::clone(p), index };
        ledger.settle(&[entry(&first, 0), entry(&second, 0)]);
        assert_eq!(acks.acked_offset(&file), Some(0), "batch 0 still has records out");
        ledger.settle(&[entry(&first, 2), entry(&first, 1)]);
        assert_eq!(acks.acked_offset(&file), Some(40));
        ledger.update_age();
        assert_eq!(ledger.counters.oldest_unacked.get(), 0.0);
        assert!(ledger.admit(Arc::new(Batch { records: Vec::new(), ack: None })).is_none());
    }

    #[test]
    fn buffers_fill_by_events_and_bytes() {
        let limits = BatchLimits { max_events: 3, max_bytes: 1000, timeout: std::time::Duration::from_secs(1) };
        let acks = Arc::new(Acknowledgements::new(1));
        let ledger = Ledger::new("s".into(), acks, &SinkMetrics::default());
        let resource = Arc::new(Vec::new());
        let records = vec![Record::new("x".into(), jiff::Timestamp::UNIX_EPOCH, resource); 4];
        let pending = ledger.admit(Arc::new(Batch { records, ack: None })).expect("pending");
        let mut buffer = Buffer::default();
        let entry = |index| Entry { pending: Arc::clone(&pending), index };
        assert!(!buffer.push(entry(0), 10, &limits));
        assert!(buffer.deadline(&limits).is_some());
        assert!(buffer.push(entry(1), 990, &limits), "bytes limit");
        assert_eq!(buffer.take().len(), 2);
        assert!(buffer.deadline(&limits).is_none());
        assert!(!buffer.push(entry(2), 1, &limits));
        assert!(!buffer.push(entry(3), 1, &limits));
    }
}
