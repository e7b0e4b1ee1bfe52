//! Reading followed files: one chunk at a time into the file's framing, the records it
//! completes parsed into one batch, sent downstream with its acknowledgement token; rotated
//! files finished once read to their end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::mpsc::error::TrySendError;

use super::{Closed, READS_PER_ROUND, Tailer, TailerContext, now_unix};
use crate::frame::Framed;
use crate::parse::Parser;
use crate::pipeline::{Batch, FileKey};
use crate::record::{Record, Source, Value};

impl Tailer {
    /// Reads what is new in every open file. `Ok(true)` when anything was read.
    pub(super) fn read_round(&mut self) -> Result<bool, Closed> {
        let mut progressed = false;
        let now = Instant::now();
        let keys: Vec<FileKey> = self.files.values().filter(|t| t.reader.is_some()).map(|t| t.key).collect();
        for key in keys {
            let mut at_eof = false;
            for _ in 0..READS_PER_ROUND {
                match self.read_chunk(&key)? {
                    0 => {
                        at_eof = true;
                        break;
                    }
                    _ => progressed = true,
                }
            }
            if at_eof {
                self.flush_idle(&key, now)?;
                self.finish_if_done(&key)?;
            }
        }
        // Files waiting for a descriptor get those of files just read to their end.
        if self.files.values().any(|t| t.reader.is_none() && !t.finished && !t.compressed && t.size > t.read_offset) {
            self.reopen_grown();
        }
        Ok(progressed)
    }

    /// Reads one chunk of `key` and sends the records it completes; returns bytes read.
    fn read_chunk(&mut self, key: &FileKey) -> Result<usize, Closed> {
        let Some(tracked) = self.files.get_mut(key) else {
            return Ok(0);
        };
        let Some(reader) = &mut tracked.reader else {
            return Ok(0);
        };
        let read = match reader.read(&mut self.buffer) {
            Ok(read) => read,
            Err(error) => {
                tracing::warn!(path = %tracked.path.display(), %error, "read failed");
                if tracked.compressed {
                    // A corrupt archive will not get better: finish with what was read.
                    tracked.rotated_at.get_or_insert(Instant::now());
                }
                return Ok(0);
            }
        };
        if read == 0 {
            return Ok(0);
        }
        // Checked after the read: if the first line is still the same, what was read is the
        // file's old content, not the start of what a copytruncate wrote in its place.
        if reader.head_changed(key.checksum) {
            let size = reader.size().unwrap_or(0);
            let path = tracked.path.clone();
            self.truncated(*key, path, size);
            return Ok(read);
        }
        let chunk_offset = tracked.read_offset;
        tracked.read_offset += read as u64;
        tracked.last_active = Instant::now();
        let mut records = Collector::new(&self.parser, &self.context, Arc::clone(&tracked.path_text));
        tracked.assembler.push(&self.buffer[..read], chunk_offset, &mut |framed| records.accept(framed));
        let records = records.done();
        self.send(key, read, records)?;
        Ok(read)
    }

    /// Sends a multiline record that has waited its timeout.
    fn flush_idle(&mut self, key: &FileKey, now: Instant) -> Result<(), Closed> {
        let Some(tracked) = self.files.get_mut(key) else {
            return Ok(());
        };
        let mut records = Collector::new(&self.parser, &self.context, Arc::clone(&tracked.path_text));
        tracked.assembler.flush_idle(now, &mut |framed| records.accept(framed));
        let records = records.done();
        self.send(key, 0, records)
    }

    /// Closes a file that will not grow: a `.gz` read to its end, or a rotated-away file that
    /// has been at its end for the grace period (the app may write to its old descriptor
    /// until it reopens). What its framing holds, a last line without newline included, is
    /// sent first.
    fn finish_if_done(&mut self, key: &FileKey) -> Result<(), Closed> {
        let grace = self.rotation_grace();
        let Some(tracked) = self.files.get_mut(key) else {
            return Ok(());
        };
        let rotated_long_ago = tracked.rotated_at.is_some_and(|at| at.elapsed() >= grace);
        if !(tracked.compressed || rotated_long_ago) {
            return Ok(());
        }
        let mut records = Collector::new(&self.parser, &self.context, Arc::clone(&tracked.path_text));
        tracked.assembler.flush(tracked.read_offset, &mut |framed| records.accept(framed));
        let records = records.done();
        self.send(key, 0, records)?;
        let Some(tracked) = self.files.get_mut(key) else {
            return Ok(());
        };
        tracing::info!(path = %tracked.path.display(), bytes = tracked.read_offset, "finished file");
        tracked.finished = true;
        if tracked.reader.take().is_some() {
            self.open_files -= 1;
        }
        if tracked.rotated_at.is_some() {
            self.untrack(key);
            self.context.acks.mark_gone(key, now_unix());
        }
        Ok(())
    }

    /// Counts what was read, applies transforms and sends the batch downstream.
    fn send(&mut self, key: &FileKey, bytes_read: usize, records: Collected) -> Result<(), Closed> {
        let metrics = &self.context.metrics;
        if bytes_read > 0 {
            metrics.bytes.get_or_create(&self.label).inc_by(bytes_read as u64);
        }
        let Some(end) = records.end_offset else {
            return Ok(());
        };
        metrics.lines.get_or_create(&self.label).inc_by(records.records.len() as u64);
        if records.truncated > 0 {
            metrics.lines_truncated.get_or_create(&self.label).inc_by(records.truncated);
        }
        if records.invalid_utf8 > 0 {
            metrics.invalid_utf8.get_or_create(&self.label).inc_by(records.invalid_utf8);
        }
        if records.parse_errors > 0 {
            metrics.parse_errors.get_or_create(&self.parser_label).inc_by(records.parse_errors);
        }
        let tail = match self.files.get_mut(key) {
            Some(tracked) => {
                let tail = tracked.reader.as_ref().map_or(0, |reader| reader.tail_at(end));
                tracked.emitted_end = end;
                tracked.emitted_tail = tail;
                tail
            }
            None => 0,
        };
        let token = self.context.acks.issue(*key, end, tail);
        let mut records = records.records;
        records.retain_mut(|record| self.context.transforms.apply(record));
        if records.is_empty() {
            self.context.acks.ack_all(&token);
            return Ok(());
        }
        self.deliver(Batch { records, ack: Some(token) })
    }

    /// Waits for room downstream (backpressure: the file is the buffer), giving up at
    /// shutdown; an undelivered batch is not acknowledged and is read again after restart.
    fn deliver(&self, mut batch: Batch) -> Result<(), Closed> {
        let mut pause = Duration::from_millis(1);
        loop {
            match self.context.output.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Err(Closed),
                Err(TrySendError::Full(returned)) => {
                    if self.context.shutdown.is_cancelled() {
                        return Err(Closed);
                    }
                    batch = returned;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Turns framed records into parsed records for one batch.
struct Collector<'a> {
    parser: &'a Parser,
    context: &'a TailerContext,
    path: Arc<str>,
    observed: Timestamp,
    collected: Collected,
}

/// One batch's records, and what to count.
#[derive(Default)]
struct Collected {
    records: Vec<Record>,
    /// End of the last record: what the batch acknowledges.
    end_offset: Option<u64>,
    truncated: u64,
    invalid_utf8: u64,
    parse_errors: u64,
}

impl<'a> Collector<'a> {
    fn new(parser: &'a Parser, context: &'a TailerContext, path: Arc<str>) -> Collector<'a> {
        Collector { parser, context, path, observed: Timestamp::now(), collected: Collected::default() }
    }

    fn done(self) -> Collected {
        self.collected
    }

    fn accept(&mut self, framed: Framed<'_>) {
        let out = &mut self.collected;
        if std::str::from_utf8(framed.bytes).is_err() {
            out.invalid_utf8 += 1;
        }
        let mut parsed = self.parser.parse(framed.bytes, self.observed, &self.context.resource);
        out.parse_errors += u64::from(parsed.failed);
        let record = &mut parsed.record;
        let input = Arc::clone(&self.context.input.name);
        record.source = Some(Source { input, path: Arc::clone(&self.path), offset: framed.start });
        for (key, value) in &self.context.input.attributes {
            if !record.attributes.contains_key(key) {
                record.attributes.insert(key.clone(), Value::String(value.clone()));
            }
        }
        if framed.truncated {
            out.truncated += 1;
            record.attributes.insert("truncated".to_owned(), Value::Bool(true));
        }
        if let Some(stream) = framed.stream {
            record.attributes.insert("stream".to_owned(), Value::String(stream.as_str().to_owned()));
        }
        if let Some(time) = framed.time.filter(|_| record.timestamp == record.observed_timestamp) {
            record.timestamp = time;
        }
        out.end_offset = Some(framed.end);
        out.records.push(parsed.record);
    }
}
