//! The tailer: one thread per input that discovers files, follows each one across renames,
//! truncations and compression, frames what it reads, and sends batches downstream. The
//! lines are parsed on a pool of parser threads shared by all inputs ([`parsing`]), so a
//! tailer thread only reads and frames; its batches still go downstream in file order.
//!
//! # How a file is followed
//!
//! - **Discovery** walks the `paths` globs every `poll_interval` (stat polling is the source
//!   of truth); file-system events only wake the poller early ([`watch`]). A file is known by
//!   its identity (device, inode and first-line checksum, see [`fingerprint`]), never by path.
//!   Only regular files are tailed: a symlink leading out of the glob's fixed prefix (unless
//!   `follow_symlinks`), a FIFO, device, directory, a pseudo-file (procfs, sysfs: size 0 with
//!   content) or an unreadable file is skipped, warned about and counted once
//!   (`pillion_input_skipped_files_total{input,reason}`).
//! - **Rename rotation** (logrotate `create`): the renamed file keeps its identity. If it
//!   still matches the globs it is simply followed under its new name; if not, or once it is
//!   deleted, it is read to its end through the descriptor already open (even if deleted),
//!   kept for a grace period in case the app still writes to it, then closed.
//! - **Copy-and-truncate**: a file shorter than the read offset, or whose first line changed,
//!   was truncated: its content is read again from 0. The copy (`app.log.1`, a new inode with
//!   the old first line) is recognized as a copy of the truncated file and resumes where the
//!   reading of the original stopped, so the lines written between the last read and the
//!   truncation are not lost and nothing is read twice. A copy seen before its original was
//!   truncated waits (up to the fingerprint timeout) for the truncation.
//! - **Compressed rotated files** (`.gz`, read through `MultiGzDecoder` once their size is
//!   stable): a `.gz` whose first line is that of a file still being read is skipped (the
//!   open descriptor delivers that content); one whose original is gone resumes at the
//!   original's checkpoint (decompressing and discarding what was delivered); one never
//!   seen is read from the start.
//! - **Truncated while down**: at start-up a checkpointed file shorter than its checkpoint, or
//!   whose first line changed, is read from 0.
//!
//! # Delivery, backpressure, memory
//!
//! Each read (at most [`READ_CHUNK`] bytes) becomes one batch (several for very short
//! lines: a batch holds about 2048 records at most) whose acknowledgement token ends at its
//! last complete record; the checkpoint is the longest fully acknowledged
//! prefix (see [`crate::pipeline`]). At most 2 x (parser threads) batches per input are
//! being parsed at once; when the downstream queue is full, parsed batches wait in the
//! tailer's outbox and nothing more is read: the file is the buffer. The tailer never blocks
//! on the queue, so discovery goes on while the sinks are down: files that rotation creates,
//! copies or compresses meanwhile are opened at once, and a descriptor keeps a file's content
//! readable after rotation deletes it. Memory per file is bounded by the framing stages
//! (`max_line_bytes` each); at most `max_open_files` descriptors are open: idle, fully read
//! files are closed first (least recently active) and reopened when they grow. Files rotated
//! away (and `.gz` files) keep their descriptor until read to the end *and* acknowledged by
//! every sink; when the limit needs one, such a file read to its end is closed next (nothing
//! is lost unless pillion dies before delivery). A file with unread bytes is never closed to
//! open another: a file that finds no free descriptor waits for one.
//!
//! # Limits
//!
//! Bytes of a file deleted before they were read cannot be read by anyone. When pillion knows
//! how many (a file that waited for a descriptor under the open-files limit and was deleted
//! first; for a `.gz`, its size on disk) they are counted in `pillion_input_lost_bytes_total`
//! and logged. Without `logs.buffer`, what rotation deletes while pillion is down (a kill -9
//! during an outage) is lost uncounted: only the buffer's spool survives that.
//! Truncation is recognized by size or by a changed first line: a file truncated and
//! rewritten *with the same first line* past the read offset within one poll interval, or one
//! identified by device and inode only, is not recognized as truncated. A copy is recognized
//! only when it has the same bytes just before the offset it would resume at.

pub mod checkpoint;
mod discover;
pub mod fingerprint;
mod parsing;
mod read;
mod reader;
mod scan;
pub mod settings;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::frame::{Assembler, FrameSettings};
use crate::pipeline::{Acknowledgements, Batch, FileKey, unix_now};
use crate::record::Resource;
use crate::telemetry::metrics::{InputLabel, InputMetrics, ParserLabels};
use crate::transform::Transforms;

pub use parsing::ParsePool;
use parsing::{InFlight, ParseContext};
use reader::Reader;
pub use settings::{InputConfig, InputSettings, StartAt};

/// Bytes read from one file per read call; one read makes at most one batch.
pub const READ_CHUNK: usize = 64 * 1024;
/// Reads per file per round, so that one busy file does not starve the others.
const READS_PER_ROUND: usize = 16;
/// How long a rotated-away file stays open at EOF in case the app still writes to it.
const ROTATION_GRACE: Duration = Duration::from_secs(5);
/// Longest sleep between checks of the shutdown token.
const WAKE_CHECK: Duration = Duration::from_millis(50);

/// Everything a tailer thread needs.
pub struct TailerContext {
    pub input: Arc<InputSettings>,
    pub transforms: Arc<Transforms>,
    pub resource: Resource,
    /// The acknowledgement ledger, with the checkpoint entries restored into it.
    pub acks: Arc<Acknowledgements>,
    pub metrics: InputMetrics,
    pub output: mpsc::Sender<Batch>,
    /// Where the lines read are parsed (shared by every input).
    pub parse_pool: Arc<ParsePool>,
    pub shutdown: CancellationToken,
}

/// Starts the tailer thread for one input.
pub fn spawn(context: TailerContext) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("tail-{}", context.input.name);
    std::thread::Builder::new().name(name).spawn(move || Tailer::new(context).run())
}

/// One file being followed.
struct Tracked {
    key: FileKey,
    path: PathBuf,
    path_text: Arc<str>,
    compressed: bool,
    /// `None` when closed: for the open-files limit (reopened when it grows) or finished.
    reader: Option<Reader>,
    /// Offset of the next byte to read (decompressed bytes for a `.gz`).
    read_offset: u64,
    /// Offset just past the last record sent downstream: where a copy of this file resumes.
    emitted_end: u64,
    /// [`fingerprint::tail`] at `emitted_end`.
    emitted_tail: u64,
    /// Size at the last scan.
    size: u64,
    assembler: Assembler,
    /// When the path stopped leading to this file (renamed out of the globs or deleted).
    rotated_at: Option<Instant>,
    /// Read to its end and closed for good.
    finished: bool,
    /// Read to its end (rotated away, or compressed), kept open until what was sent from it
    /// is acknowledged.
    draining: bool,
    /// Last time data was read, for closing the least recently active file first.
    last_active: Instant,
}

impl Tracked {
    /// Closed for the open-files limit (or never opened for it) with something left to read.
    fn wants_descriptor(&self) -> bool {
        self.reader.is_none() && !self.finished && (self.compressed || self.size > self.read_offset)
    }
}

/// A file discovered but not tracked yet.
struct Waiting {
    since: Instant,
    size: u64,
}

struct Tailer {
    context: TailerContext,
    parsing: Arc<ParseContext>,
    in_flight: InFlight,
    frame: FrameSettings,
    label: InputLabel,
    files: HashMap<FileKey, Tracked>,
    /// `(dev, inode)` of every tracked file.
    by_inode: HashMap<(u64, u64), FileKey>,
    /// Files without a fingerprint yet, suspected copies, and `.gz` files whose size is not
    /// stable yet.
    waiting: HashMap<(u64, u64), Waiting>,
    /// `.gz` files whose content arrives through their original's open descriptor.
    covered: HashSet<(u64, u64)>,
    /// How far this run read files it no longer tracks (truncated or finished): a copy of one
    /// resumes there.
    read_ends: HashMap<FileKey, (u64, u64)>,
    /// Identities whose content was truncated in this run: the same inode showing the same
    /// first line again is new content.
    replaced: HashSet<FileKey>,
    /// Paths skipped at the last scan (warned about and counted once while they stay so),
    /// and those found so far by the current one.
    skipped: HashSet<(PathBuf, discover::SkipReason)>,
    skipped_now: HashSet<(PathBuf, discover::SkipReason)>,
    open_files: usize,
    /// Parsed batches, in order, that the downstream queue had no room for. While it holds
    /// any, nothing is read (see [`Tailer::run`]); it holds at most the batches in flight and
    /// those of one read.
    outbox: VecDeque<Batch>,
    buffer: Vec<u8>,
    first_scan: bool,
    wakeup: watch::Wakeup,
}

/// The downstream channel is closed, or shutdown began while it was full.
struct Closed;

impl Tailer {
    fn new(context: TailerContext) -> Tailer {
        let label = InputMetrics::label(&context.input.name);
        let parser = context.input.parser.clone();
        let parser_label = ParserLabels { input: context.input.name.to_string(), parser: parser.name().to_owned() };
        let parsing = Arc::new(ParseContext {
            parser,
            input: Arc::clone(&context.input),
            transforms: Arc::clone(&context.transforms),
            resource: context.resource.clone(),
            acks: Arc::clone(&context.acks),
            metrics: context.metrics.clone(),
            label: label.clone(),
            parser_label,
        });
        let input = &context.input;
        let frame = FrameSettings {
            max_line_bytes: input.max_line_bytes,
            container: input.container,
            multiline: input.multiline.clone(),
        };
        Tailer {
            parsing,
            in_flight: InFlight::new(),
            frame,
            label,
            files: HashMap::new(),
            by_inode: HashMap::new(),
            waiting: HashMap::new(),
            covered: HashSet::new(),
            read_ends: HashMap::new(),
            replaced: HashSet::new(),
            skipped: HashSet::new(),
            skipped_now: HashSet::new(),
            open_files: 0,
            outbox: VecDeque::new(),
            buffer: vec![0; READ_CHUNK],
            first_scan: true,
            wakeup: watch::Wakeup::new(),
            context,
        }
    }

    /// Scans every `poll_interval` (or when a file appeared, vanished or was renamed) and
    /// reads after a scan or a file-system event, until there is nothing new: an idle input
    /// costs one scan per poll interval. While the sinks are behind (the outbox holds batches
    /// the downstream queue has no room for) nothing is read, but scans go on: a file created,
    /// copied or compressed by a rotation meanwhile is opened at once, and its descriptor
    /// keeps its content readable after rotation deletes it.
    fn run(mut self) {
        let poll = self.context.input.poll_interval;
        let mut last_scan: Option<Instant> = None;
        let mut read_due = true;
        while !self.context.shutdown.is_cancelled() {
            if last_scan.is_none_or(|at| at.elapsed() >= poll) || self.wakeup.take_rescan() {
                self.watch_roots();
                self.scan();
                last_scan = Some(Instant::now());
                read_due = true;
            }
            if self.flush_outbox().is_err() {
                break;
            }
            if !self.outbox.is_empty() {
                let due = last_scan.map_or(Duration::ZERO, |at| poll.saturating_sub(at.elapsed()));
                if self.wait_for_room(due.min(WAKE_CHECK)).is_err() {
                    break;
                }
                read_due = true;
                continue;
            }
            if read_due {
                match self.read_round() {
                    Err(Closed) => break,
                    Ok(true) => continue,
                    Ok(false) => {}
                }
            }
            // Nothing new to read: what is still being parsed goes downstream before waiting.
            if self.forward(true).is_err() {
                break;
            }
            if !self.outbox.is_empty() {
                continue;
            }
            let due = last_scan.map_or(Duration::ZERO, |at| poll.saturating_sub(at.elapsed()));
            read_due = self.wakeup.wait(due.min(WAKE_CHECK));
        }
        // What was read and is still being parsed goes downstream if there is room; what is
        // not delivered is not acknowledged, and is read again after a restart.
        let _ = self.forward(true).and_then(|()| self.flush_outbox());
        tracing::debug!(input = %self.context.input.name, "tailer stopped");
    }

    fn watch_roots(&mut self) {
        for (dir, recursive) in discover::roots(&self.context.input) {
            self.wakeup.watch(&dir, recursive);
        }
    }

    /// A file without a fingerprint falls back to device and inode after this long.
    fn fingerprint_timeout(&self) -> Duration {
        (self.context.input.poll_interval * 5).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }

    fn rotation_grace(&self) -> Duration {
        (self.context.input.poll_interval * 2).max(ROTATION_GRACE)
    }

    fn count_lost(&self, path: &std::path::Path, bytes: u64, why: &str) {
        if bytes == 0 {
            return;
        }
        tracing::warn!(path = %path.display(), bytes, "{why}: these bytes were never read and are lost");
        self.context.metrics.lost_bytes.get_or_create(&self.label).inc_by(bytes);
    }

    /// Starts following a file at `offset`.
    fn track(&mut self, key: FileKey, path: PathBuf, size: u64, offset: u64, compressed: bool, reader: Option<Reader>) {
        let path_text: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
        if reader.is_some() {
            self.open_files += 1;
        }
        let tracked = Tracked {
            key,
            path,
            path_text,
            compressed,
            reader,
            read_offset: offset,
            emitted_end: offset,
            emitted_tail: 0,
            size,
            assembler: Assembler::new(&self.frame),
            rotated_at: None,
            finished: false,
            draining: false,
            last_active: Instant::now(),
        };
        self.by_inode.insert((key.dev, key.inode), key);
        self.files.insert(key, tracked);
    }

    /// Stops following `key`; the ledger keeps its progress until it expires.
    fn untrack(&mut self, key: &FileKey) -> Option<Tracked> {
        let tracked = self.files.remove(key)?;
        if tracked.reader.is_some() {
            self.open_files -= 1;
        }
        if self.by_inode.get(&(key.dev, key.inode)) == Some(key) {
            self.by_inode.remove(&(key.dev, key.inode));
        }
        if self.read_ends.len() >= 4096 {
            self.read_ends.clear();
        }
        self.read_ends.insert(*key, (tracked.emitted_end, tracked.emitted_tail));
        Some(tracked)
    }

    /// Frees a descriptor if `max_open_files` are open, by closing what costs least: the least
    /// recently active file that is fully read and still reachable by its path (reopened when
    /// it grows), else a file read to its end whose records still wait for acknowledgement
    /// (nothing is lost unless pillion dies before they are delivered). A file with unread
    /// bytes is never closed for another: a file that gets no descriptor waits for one, and if
    /// it is deleted meanwhile its unread bytes are counted lost (see [`Tailer::scan`]).
    /// `false` when nothing can be closed.
    fn make_room(&mut self) -> bool {
        if self.open_files < self.context.input.max_open_files {
            return true;
        }
        let idle = self
            .files
            .values()
            .filter(|t| t.reader.is_some() && t.rotated_at.is_none() && !t.compressed && t.read_offset >= t.size)
            .min_by_key(|t| t.last_active)
            .map(|t| t.key);
        if let Some(tracked) = idle.and_then(|key| self.files.get_mut(&key)) {
            tracked.reader = None;
            self.open_files -= 1;
            return true;
        }
        let draining = self
            .files
            .values()
            .filter(|t| t.reader.is_some() && t.draining)
            .min_by_key(|t| t.last_active)
            .map(|t| t.key);
        let Some(key) = draining else {
            return false;
        };
        if let Some(tracked) = self.files.get(&key) {
            tracing::info!(path = %tracked.path.display(), "closing a file read to its end before its records were acknowledged (max_open_files)");
        }
        self.finish(&key);
        true
    }

    /// Closes a file read to its end for good; one rotated away is no longer followed.
    fn finish(&mut self, key: &FileKey) {
        let Some(tracked) = self.files.get_mut(key) else {
            return;
        };
        tracing::info!(path = %tracked.path.display(), bytes = tracked.read_offset, "finished file");
        tracked.finished = true;
        tracked.draining = false;
        if tracked.reader.take().is_some() {
            self.open_files -= 1;
        }
        if tracked.rotated_at.is_some() {
            self.untrack(key);
            self.context.acks.mark_gone(key, unix_now());
        }
    }

    /// Every sink acknowledged what was sent downstream from `key` (or the ledger forgot it).
    fn delivered(&self, key: &FileKey) -> bool {
        let Some(tracked) = self.files.get(key) else {
            return true;
        };
        self.context.acks.acked_offset(key).is_none_or(|acked| acked >= tracked.emitted_end)
    }

    fn update_gauges(&self) {
        let metrics = &self.context.metrics;
        let live = self.files.values().filter(|t| !t.finished).count();
        metrics.files.get_or_create(&self.label).set(i64::try_from(live).unwrap_or(i64::MAX));
        let lag: u64 = self
            .files
            .values()
            .filter(|t| !t.compressed && !t.finished)
            .map(|t| t.size.saturating_sub(self.context.acks.acked_offset(&t.key).unwrap_or(t.size)))
            .sum();
        metrics.lag_bytes.get_or_create(&self.label).set(i64::try_from(lag).unwrap_or(i64::MAX));
    }
}
