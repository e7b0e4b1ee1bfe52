//! Reading followed files: one chunk at a time into the file's framing, the lines it
//! completes copied into one batch that is parsed on the parse pool and sent downstream, in
//! file order, with its acknowledgement token; rotated files finished once read to their end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::error::TrySendError;

use super::parsing::RawBatch;
use super::{Closed, READS_PER_ROUND, Tailer};
use crate::pipeline::{Batch, FileKey};

/// Bytes framed at a time within one read.
const FRAME_SLICE: usize = 8 * 1024;
/// A batch is sent once it holds this many records (plus at most one slice's worth).
const MAX_BATCH_RECORDS: usize = 2048;

impl Tailer {
    /// Reads what is new in every open file. `Ok(true)` when anything was read.
    pub(super) fn read_round(&mut self) -> Result<bool, Closed> {
        let mut progressed = false;
        let now = Instant::now();
        let keys: Vec<FileKey> = self.files.values().filter(|t| t.reader.is_some()).map(|t| t.key).collect();
        for key in keys {
            let mut at_eof = false;
            for _ in 0..READS_PER_ROUND {
                if self.blocked() {
                    return Ok(true);
                }
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
        if self.files.values().any(super::Tracked::wants_descriptor) {
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
                    // A corrupt archive will not get better: finish with what was read, and
                    // do not pick it up again.
                    tracked.rotated_at.get_or_insert(Instant::now());
                    self.covered.insert((key.dev, key.inode));
                }
                return Ok(0);
            }
        };
        if read == 0 {
            // Shorter than where we are: truncated, maybe after its path went away (a file
            // copied, truncated and then rotated by rename before discovery looked).
            if let Some(size) = reader.size().filter(|&size| size < tracked.read_offset) {
                let path = tracked.path.clone();
                self.truncated(*key, path, size);
            }
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
        // Framed in slices so that a batch holds at most about MAX_BATCH_RECORDS records, however
        // short the lines (a chunk of empty lines would otherwise be 64Ki records).
        let path = Arc::clone(&tracked.path_text);
        let mut raw = RawBatch::new(Arc::clone(&path), read + 1024);
        let mut done = 0;
        while done < read {
            let Some(tracked) = self.files.get_mut(key) else {
                break;
            };
            let piece = &self.buffer[done..(done + FRAME_SLICE).min(read)];
            tracked.assembler.push(piece, chunk_offset + done as u64, &mut |framed| raw.push(&framed));
            done += piece.len();
            if raw.len() >= MAX_BATCH_RECORDS && done < read {
                let full = std::mem::replace(&mut raw, RawBatch::new(Arc::clone(&path), read - done + 1024));
                self.send(key, 0, full)?;
            }
        }
        self.send(key, read, raw)?;
        Ok(read)
    }

    /// Sends a multiline record that has waited its timeout.
    fn flush_idle(&mut self, key: &FileKey, now: Instant) -> Result<(), Closed> {
        let Some(tracked) = self.files.get_mut(key) else {
            return Ok(());
        };
        let mut raw = RawBatch::new(Arc::clone(&tracked.path_text), 0);
        tracked.assembler.flush_idle(now, &mut |framed| raw.push(&framed));
        self.send(key, 0, raw)
    }

    /// Closes a file that will not grow: a `.gz` read to its end, or a rotated-away file that
    /// has been at its end for the grace period (the app may write to its old descriptor
    /// until it reopens). What its framing holds, a last line without newline included, is
    /// sent first; the descriptor is kept until every sink acknowledged what was read from it
    /// (a rotated file may be deleted meanwhile; see [`Tailer::make_room`] for the bound).
    fn finish_if_done(&mut self, key: &FileKey) -> Result<(), Closed> {
        let grace = self.rotation_grace();
        let Some(tracked) = self.files.get_mut(key) else {
            return Ok(());
        };
        let rotated_long_ago = tracked.rotated_at.is_some_and(|at| at.elapsed() >= grace);
        if !(tracked.compressed || rotated_long_ago) {
            return Ok(());
        }
        // A second call finds the framing empty and sends nothing.
        let mut raw = RawBatch::new(Arc::clone(&tracked.path_text), 0);
        tracked.assembler.flush(tracked.read_offset, &mut |framed| raw.push(&framed));
        self.send(key, 0, raw)?;
        let delivered = self.delivered(key);
        let Some(tracked) = self.files.get_mut(key) else {
            return Ok(());
        };
        if !delivered {
            if !tracked.draining {
                tracing::debug!(path = %tracked.path.display(), "read to its end; kept open until its records are acknowledged");
                tracked.draining = true;
            }
            return Ok(());
        }
        self.finish(key);
        Ok(())
    }

    /// Counts what was read and hands the batch to the parse pool; sends downstream what is
    /// parsed already.
    fn send(&mut self, key: &FileKey, bytes_read: usize, raw: RawBatch) -> Result<(), Closed> {
        let metrics = &self.context.metrics;
        if bytes_read > 0 {
            metrics.bytes.get_or_create(&self.label).inc_by(bytes_read as u64);
        }
        let Some(end) = raw.end_offset() else {
            return Ok(());
        };
        metrics.lines.get_or_create(&self.label).inc_by(raw.len() as u64);
        let truncated = raw.truncated();
        if truncated > 0 {
            metrics.lines_truncated.get_or_create(&self.label).inc_by(truncated);
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
        while self.in_flight.full(&self.context.parse_pool) {
            self.forward_oldest()?;
        }
        self.in_flight.submit(&self.context.parse_pool, &self.parsing, raw, token);
        self.forward(false)
    }

    /// Sends downstream, in order, the batches parsed so far; with `wait`, every batch in
    /// flight.
    pub(super) fn forward(&mut self, wait: bool) -> Result<(), Closed> {
        while let Some(parsed) = self.in_flight.next(wait) {
            if let Some(batch) = parsed {
                self.deliver(batch)?;
            }
        }
        Ok(())
    }

    /// Waits for the oldest batch in flight and sends it downstream.
    fn forward_oldest(&mut self) -> Result<(), Closed> {
        match self.in_flight.next(true) {
            Some(Some(batch)) => self.deliver(batch),
            _ => Ok(()),
        }
    }

    /// Sends a parsed batch downstream, or keeps it in the outbox, behind those already
    /// there, when the queue is full (backpressure: the tailer then stops reading and the file
    /// is the buffer). Never blocks, so that discovery goes on while the sinks are behind.
    fn deliver(&mut self, batch: Batch) -> Result<(), Closed> {
        if !self.outbox.is_empty() {
            self.outbox.push_back(batch);
            return Ok(());
        }
        match self.context.output.try_send(batch) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(Closed),
            Err(TrySendError::Full(batch)) => {
                self.outbox.push_back(batch);
                Ok(())
            }
        }
    }

    /// Sends what the outbox holds as far as the queue has room.
    pub(super) fn flush_outbox(&mut self) -> Result<(), Closed> {
        while let Some(batch) = self.outbox.pop_front() {
            match self.context.output.try_send(batch) {
                Ok(()) => {}
                Err(TrySendError::Closed(_)) => return Err(Closed),
                Err(TrySendError::Full(batch)) => {
                    self.outbox.push_front(batch);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for room downstream and sends the outbox's oldest batch into it;
    /// `Err` at shutdown. The thread parks meanwhile and wakes as soon as there is room, so
    /// the pipeline never idles behind a polling interval.
    pub(super) fn wait_for_room(&mut self, timeout: Duration) -> Result<(), Closed> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let output = &self.context.output;
        let shutdown = &self.context.shutdown;
        let reserved = block_on_timeout(
            async {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => Err(Closed),
                    permit = output.reserve() => permit.map_err(|_| Closed),
                }
            },
            timeout,
        );
        match reserved {
            None => Ok(()),
            Some(Err(Closed)) => Err(Closed),
            Some(Ok(permit)) => {
                if let Some(batch) = self.outbox.pop_front() {
                    permit.send(batch);
                }
                Ok(())
            }
        }
    }

    /// The outbox holds batches: read nothing more until the sinks catch up.
    pub(super) fn blocked(&self) -> bool {
        !self.outbox.is_empty()
    }
}

/// Polls `future` on this (non-async) thread, parking it while the future waits, for up to
/// `timeout`; `None` if it did not complete by then. Enough for channel sends and cancellation
/// tokens, which need no runtime driver.
fn block_on_timeout<F: Future>(future: F, timeout: Duration) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let deadline = Instant::now() + timeout;
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return Some(output);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}
