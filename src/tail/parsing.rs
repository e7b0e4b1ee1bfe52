//! Parsing off the tailer thread. The tailer reads and frames; the lines of each batch are
//! copied into a [`RawBatch`] and parsed, transformed and counted on a [`ParsePool`] shared by
//! every input, so one busy file can use every core. Each tailer keeps its batches in flight
//! in an [`InFlight`] queue and sends them downstream in the order it read them: a file's
//! batches stay in file order, as the sinks and the acknowledgement ledger expect.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};

use jiff::Timestamp;

use super::InputSettings;
use crate::frame::{Framed, Stream};
use crate::parse::Parser;
use crate::pipeline::{AckToken, Acknowledgements, Batch};
use crate::record::{Attributes, Record, Resource, Source, Value};
use crate::telemetry::metrics::{InputLabel, InputMetrics, ParserLabels};
use crate::transform::Transforms;

type Job = Box<dyn FnOnce() + Send>;

/// Threads that parse batches for every tailer.
pub struct ParsePool {
    jobs: SyncSender<Job>,
    threads: usize,
}

impl ParsePool {
    /// Starts `threads` parser threads (at least one).
    pub fn start(threads: usize) -> std::io::Result<ParsePool> {
        let threads = threads.max(1);
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Job>(threads * 2);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new().name(format!("parse-{index}")).spawn(move || run_jobs(&receiver))?;
        }
        Ok(ParsePool { jobs: sender, threads })
    }

    /// One per core the machine offers.
    pub fn per_core() -> std::io::Result<ParsePool> {
        ParsePool::start(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Batches a tailer keeps in flight: enough to keep every thread busy.
    fn depth(&self) -> usize {
        self.threads * 2
    }

    fn submit(&self, job: Job) {
        // The threads only stop when the pool is dropped, so the send cannot fail while
        // `self` lives; should every thread have died, run the job here rather than lose it.
        if let Err(returned) = self.jobs.send(job) {
            (returned.0)();
        }
    }
}

/// Runs jobs until the pool is dropped. A job that panics (a parser bug) loses its batch,
/// which is then never acknowledged and so read again after a restart, but not the thread.
fn run_jobs(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = receiver.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            tracing::error!("a parser thread panicked; the batch it was parsing is not acknowledged");
        }
    }
}

/// What a parse job needs of its input, shared by the tailer and the pool.
pub(super) struct ParseContext {
    pub parser: Parser,
    pub input: Arc<InputSettings>,
    pub transforms: Arc<Transforms>,
    pub resource: Resource,
    pub acks: Arc<Acknowledgements>,
    pub metrics: InputMetrics,
    pub label: InputLabel,
    pub parser_label: ParserLabels,
}

/// One line of a [`RawBatch`].
struct RawLine {
    bytes: Range<usize>,
    start: u64,
    end: u64,
    truncated: bool,
    time: Option<Timestamp>,
    stream: Option<Stream>,
}

/// Framed lines of one batch, copied out of the read buffer, not parsed yet.
pub(super) struct RawBatch {
    path: Arc<str>,
    observed: Timestamp,
    bytes: Vec<u8>,
    lines: Vec<RawLine>,
}

impl RawBatch {
    /// An empty batch for about `bytes` bytes of lines.
    pub fn new(path: Arc<str>, bytes: usize) -> RawBatch {
        let bytes = Vec::with_capacity(bytes);
        RawBatch { path, observed: Timestamp::now(), bytes, lines: Vec::new() }
    }

    pub fn push(&mut self, framed: &Framed<'_>) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(framed.bytes);
        self.lines.push(RawLine {
            bytes: at..self.bytes.len(),
            start: framed.start,
            end: framed.end,
            truncated: framed.truncated,
            time: framed.time,
            stream: framed.stream,
        });
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// End of the last line: what the batch acknowledges.
    pub fn end_offset(&self) -> Option<u64> {
        self.lines.last().map(|line| line.end)
    }

    pub fn truncated(&self) -> u64 {
        self.lines.iter().filter(|line| line.truncated).count() as u64
    }

    /// Parses every line, applies the transforms and counts what failed. `None` when the
    /// transforms dropped every record (the batch is then acknowledged by every sink).
    fn parse(self, context: &ParseContext, token: AckToken) -> Option<Batch> {
        let mut records = Vec::with_capacity(self.lines.len());
        let (mut invalid_utf8, mut parse_errors) = (0, 0);
        // Attributes are built here and moved out exactly sized: one allocation per record.
        let mut scratch = Attributes::new();
        for line in &self.lines {
            let bytes = &self.bytes[line.bytes.clone()];
            if std::str::from_utf8(bytes).is_err() {
                invalid_utf8 += 1;
            }
            let parsed = context.parser.parse_into(bytes, self.observed, &context.resource, scratch);
            parse_errors += u64::from(parsed.failed);
            let mut record = parsed.record;
            self.annotate(context, line, &mut record);
            let kept = context.transforms.apply(&mut record);
            scratch = std::mem::take(&mut record.attributes);
            if kept {
                record.attributes = scratch.take_exact();
                records.push(record);
            } else {
                scratch.clear();
            }
        }
        let metrics = &context.metrics;
        if invalid_utf8 > 0 {
            metrics.invalid_utf8.get_or_create(&context.label).inc_by(invalid_utf8);
        }
        if parse_errors > 0 {
            metrics.parse_errors.get_or_create(&context.parser_label).inc_by(parse_errors);
        }
        if records.is_empty() {
            context.acks.ack_all(&token);
            return None;
        }
        Some(Batch { records, ack: Some(token) })
    }

    /// Source, the input's static attributes, and what the framing knew about the line.
    fn annotate(&self, context: &ParseContext, line: &RawLine, record: &mut Record) {
        let input = Arc::clone(&context.input.name);
        record.source = Some(Source { input, path: Arc::clone(&self.path), offset: line.start });
        for (key, value) in &context.input.attributes {
            if !record.attributes.contains_key(key) {
                record.attributes.insert(key.as_str(), Value::from(value.as_str()));
            }
        }
        if line.truncated {
            record.attributes.insert("truncated", Value::Bool(true));
        }
        if let Some(stream) = line.stream {
            record.attributes.insert("stream", Value::from(stream.as_str()));
        }
        if let Some(time) = line.time.filter(|_| record.timestamp == record.observed_timestamp) {
            record.timestamp = time;
        }
    }
}

/// A tailer's batches being parsed, oldest first.
pub(super) struct InFlight {
    pending: VecDeque<Receiver<Option<Batch>>>,
}

impl InFlight {
    pub fn new() -> InFlight {
        InFlight { pending: VecDeque::new() }
    }

    /// Hands `raw` to the pool.
    pub fn submit(&mut self, pool: &ParsePool, context: &Arc<ParseContext>, raw: RawBatch, token: AckToken) {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let context = Arc::clone(context);
        pool.submit(Box::new(move || {
            let _ = done.send(raw.parse(&context, token));
        }));
        self.pending.push_back(result);
    }

    /// Whether the queue is as deep as `pool` needs: the next submit should wait for the oldest.
    pub fn full(&self, pool: &ParsePool) -> bool {
        self.pending.len() >= pool.depth()
    }

    /// The oldest batch once parsed: `Some(None)` when all its records were dropped; `None`
    /// when nothing is in flight, or (`wait` false) the oldest is not parsed yet.
    pub fn next(&mut self, wait: bool) -> Option<Option<Batch>> {
        let oldest = self.pending.front()?;
        let result = if wait {
            oldest.recv().ok()
        } else {
            match oldest.try_recv() {
                Ok(batch) => Some(batch),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => None,
            }
        };
        self.pending.pop_front();
        // A job that died without an answer lost its batch: it is not acknowledged, so it is
        // read again after a restart, like any batch not delivered.
        Some(result.flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::FileKey;

    fn context(acks: &Arc<Acknowledgements>) -> Arc<ParseContext> {
        let yaml = "logs:\n  inputs:\n    - { name: app, paths: [/x/*.log], format: json }\n  transforms:\n    - drop: { when: { level: debug } }\n";
        let config = crate::config::load_str(yaml, "test", &|_| None).expect("config");
        let input = Arc::clone(&config.logs.inputs[0]);
        Arc::new(ParseContext {
            parser: input.parser.clone(),
            transforms: Arc::clone(&config.logs.transforms),
            resource: Arc::new(Vec::new()),
            acks: Arc::clone(acks),
            metrics: InputMetrics::default(),
            label: InputMetrics::label(&input.name),
            parser_label: ParserLabels { input: "app".into(), parser: "json".into() },
            input,
        })
    }

    /// Batch `n` of `lines` JSON lines; the first batches are the longest, so that later
    /// ones tend to finish first.
    fn raw_batch(n: usize, lines: usize, level: &str) -> RawBatch {
        let mut raw = RawBatch::new("/x/a.log".into(), 0);
        let mut offset = (n * 1_000_000) as u64;
        for i in 0..lines {
            let line = format!(r#"{{"level":"{level}","msg":"batch {n} line {i}"}}"#);
            let framed = Framed {
                bytes: line.as_bytes(),
                start: offset,
                end: offset + line.len() as u64 + 1,
                truncated: false,
                time: None,
                stream: None,
            };
            raw.push(&framed);
            offset = framed.end;
        }
        raw
    }

    #[test]
    fn batches_come_out_parsed_in_the_order_they_went_in() {
        let acks = Arc::new(Acknowledgements::new(1));
        let context = context(&acks);
        let pool = ParsePool::start(3).expect("pool");
        let key = FileKey { dev: 1, inode: 2, checksum: 3 };
        acks.open(key, "/x/a.log", 0);
        let mut in_flight = InFlight::new();
        let mut out = Vec::new();
        let mut end = 0;
        for n in 0..40 {
            // Every fifth batch is all debug lines, which the transforms drop.
            let raw = raw_batch(n, 400 - n * 10, if n % 5 == 4 { "debug" } else { "info" });
            end = raw.end_offset().expect("lines");
            let token = acks.issue(key, end, 0);
            while in_flight.full(&pool) {
                out.push(in_flight.next(true).expect("in flight"));
            }
            in_flight.submit(&pool, &context, raw, token);
            while let Some(parsed) = in_flight.next(false) {
                out.push(parsed);
            }
        }
        while let Some(parsed) = in_flight.next(true) {
            out.push(parsed);
        }
        assert_eq!(out.len(), 40);
        for (n, parsed) in out.into_iter().enumerate() {
            let Some(batch) = parsed else {
                assert_eq!(n % 5, 4, "batch {n} was dropped");
                continue;
            };
            assert_eq!(batch.ack.as_ref().map(|t| t.seq), Some(n as u64));
            assert_eq!(batch.records.len(), 400 - n * 10);
            assert_eq!(batch.records[1].message, format!("batch {n} line 1"));
            assert_eq!(batch.records[1].source.as_ref().map(|s| &*s.path), Some("/x/a.log"));
            acks.ack(batch.ack.as_ref().expect("token"));
        }
        // The dropped batches were acknowledged when parsed: the checkpoint reaches the end.
        assert_eq!(acks.acked_offset(&key), Some(end));
    }

    #[test]
    fn a_panicking_job_loses_its_batch_but_not_the_thread() {
        let pool = ParsePool::start(1).expect("pool");
        let (done, result) = std::sync::mpsc::sync_channel::<()>(1);
        pool.submit(Box::new(move || {
            let _keep = done;
            panic!("parser bug");
        }));
        assert!(result.recv().is_err(), "the job's answer is lost");
        let (sender, receiver) = std::sync::mpsc::channel();
        pool.submit(Box::new(move || {
            let _ = sender.send(7);
        }));
        assert_eq!(receiver.recv_timeout(std::time::Duration::from_secs(10)), Ok(7));
    }

    #[test]
    fn a_pool_runs_jobs_on_its_threads() {
        let here = std::thread::current().id();
        let (sender, receiver) = std::sync::mpsc::channel();
        let pool = ParsePool::start(2).expect("pool");
        for _ in 0..8 {
            let sender = sender.clone();
            pool.submit(Box::new(move || {
                let _ = sender.send(std::thread::current().id());
            }));
        }
        drop(sender);
        let threads: Vec<_> = receiver.iter().collect();
        assert_eq!(threads.len(), 8);
        assert!(threads.iter().all(|id| *id != here), "every job ran on a pool thread");
    }
}
