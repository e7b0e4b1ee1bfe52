//! The tailer: one thread per input that discovers files, follows appends, frames and parses
//! lines, and sends batches downstream. Blocking on a full channel is the backpressure: when
//! sinks are slow the tailer stops reading and the file on disk is the buffer.
//!
//! This is the foundation's simple tailer. File identity is device + inode; a file renamed
//! away is read to its end and then closed; a file shorter than the read offset was
//! truncated and is read again from 0. Reading resumes from the acknowledged checkpoint.

pub mod checkpoint;
mod discover;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{InputSettings, raw::StartAt};
use crate::frame::{Line, LineFramer};
use crate::parse::Parser;
use crate::pipeline::{Acknowledgements, Batch, FileKey};
use crate::record::{Record, Resource, Source, Value};
use crate::telemetry::metrics::{InputLabel, InputMetrics, ParserLabels};
use crate::transform::Transforms;

/// Bytes read from one file per read call; one read makes at most one batch.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per file per round, so that one busy file does not starve the others.
const READS_PER_ROUND: usize = 16;
/// How long a rotated-away file stays open at EOF in case the app still writes to it.
const ROTATION_GRACE: Duration = Duration::from_secs(5);

/// Everything a tailer thread needs.
pub struct TailerContext {
    pub input: Arc<InputSettings>,
    pub transforms: Arc<Transforms>,
    pub resource: Resource,
    pub acks: Arc<Acknowledgements>,
    pub metrics: InputMetrics,
    /// Offsets from the checkpoint file at start-up.
    pub checkpoints: Arc<HashMap<FileKey, (String, u64)>>,
    pub output: mpsc::Sender<Batch>,
    pub shutdown: CancellationToken,
}

/// Starts the tailer thread for one input.
pub fn spawn(context: TailerContext) -> std::io::Result<std::thread::JoinHandle<()>> {
    let name = format!("tail-{}", context.input.name);
    std::thread::Builder::new().name(name).spawn(move || Tailer::new(context).run())
}

struct TailedFile {
    key: FileKey,
    path: PathBuf,
    path_text: Arc<str>,
    file: File,
    /// Offset of the next byte to read.
    read_offset: u64,
    framer: LineFramer,
    /// When the path stopped leading to this file (renamed or deleted); closed at EOF after
    /// a grace period.
    rotated_at: Option<Instant>,
}

struct Tailer {
    context: TailerContext,
    parser: Parser,
    label: InputLabel,
    parser_label: ParserLabels,
    files: HashMap<FileKey, TailedFile>,
    buffer: Vec<u8>,
    first_scan: bool,
}

/// The downstream channel is closed: the pipeline is shutting down.
struct Closed;

impl Tailer {
    fn new(context: TailerContext) -> Tailer {
        let label = InputMetrics::label(&context.input.name);
        let parser = context.input.parser.clone();
        let parser_label = ParserLabels { input: context.input.name.to_string(), parser: parser.name().to_owned() };
        Tailer {
            context,
            parser,
            label,
            parser_label,
            files: HashMap::new(),
            buffer: vec![0; READ_CHUNK],
            first_scan: true,
        }
    }

    fn run(mut self) {
        let poll = self.context.input.poll_interval;
        let mut last_scan: Option<Instant> = None;
        while !self.context.shutdown.is_cancelled() {
            if last_scan.is_none_or(|at| at.elapsed() >= poll) {
                self.scan();
                last_scan = Some(Instant::now());
            }
            match self.read_round() {
                Err(Closed) => break,
                Ok(true) => continue,
                Ok(false) => self.idle(poll),
            }
        }
        tracing::debug!(input = %self.context.input.name, "tailer stopped");
    }

    /// Sleeps until the next poll, waking early for shutdown.
    fn idle(&self, poll: Duration) {
        let deadline = Instant::now() + poll;
        while !self.context.shutdown.is_cancelled() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Finds new, renamed, rotated and truncated files.
    fn scan(&mut self) {
        let found = discover::discover(&self.context.input);
        let mut live: HashMap<FileKey, PathBuf> = HashMap::with_capacity(found.len());
        for path in found {
            match std::fs::metadata(&path) {
                Ok(meta) => {
                    live.insert(FileKey { dev: meta.dev(), inode: meta.ino() }, path);
                }
                Err(error) => tracing::debug!(path = %path.display(), %error, "file vanished during discovery"),
            }
        }
        for (key, tailed) in &mut self.files {
            match live.get(key) {
                Some(path) if *path != tailed.path => {
                    tracing::info!(from = %tailed.path.display(), to = %path.display(), "file renamed");
                    tailed.path = path.clone();
                    tailed.path_text = Arc::from(path.to_string_lossy().as_ref());
                    self.context.acks.open(*key, &tailed.path_text, 0);
                }
                Some(_) => {}
                None if tailed.rotated_at.is_none() => {
                    tracing::info!(path = %tailed.path.display(), "file rotated away; reading it to the end");
                    tailed.rotated_at = Some(Instant::now());
                }
                None => {}
            }
        }
        for (key, path) in live {
            if !self.files.contains_key(&key) {
                self.open(key, path);
            }
        }
        self.check_truncation();
        self.first_scan = false;
        self.update_gauges();
    }

    fn open(&mut self, key: FileKey, path: PathBuf) {
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot open file");
                return;
            }
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let offset = self.start_offset(&key, &path, size);
        let mut tailed = TailedFile {
            key,
            path_text: Arc::from(path.to_string_lossy().as_ref()),
            path,
            file,
            read_offset: offset,
            framer: LineFramer::new(self.context.input.max_line_bytes),
            rotated_at: None,
        };
        if let Err(error) = tailed.file.seek(SeekFrom::Start(offset)) {
            tracing::warn!(path = %tailed.path.display(), %error, "cannot seek");
            return;
        }
        self.context.acks.open(key, &tailed.path_text, offset);
        tracing::info!(input = %self.context.input.name, path = %tailed.path.display(), offset, "tailing file");
        self.files.insert(key, tailed);
    }

    /// The checkpoint if there is one (0 if the file shrank while pillion was down), else
    /// `start_at` for files present at start-up, else the beginning (a file created while
    /// pillion runs is read whole, or its first lines would be lost).
    fn start_offset(&self, key: &FileKey, path: &Path, size: u64) -> u64 {
        if let Some((_, offset)) = self.context.checkpoints.get(key) {
            if *offset <= size {
                return *offset;
            }
            tracing::warn!(path = %path.display(), checkpoint = offset, size, "file is shorter than its checkpoint: truncated while pillion was down; reading from the start");
            self.context.metrics.truncations.get_or_create(&self.label).inc();
            return 0;
        }
        match self.context.input.start_at {
            StartAt::End if self.first_scan => size,
            _ => 0,
        }
    }

    fn check_truncation(&mut self) {
        for tailed in self.files.values_mut() {
            let Ok(size) = tailed.file.metadata().map(|m| m.len()) else {
                continue;
            };
            if size >= tailed.read_offset {
                continue;
            }
            tracing::warn!(path = %tailed.path.display(), size, offset = tailed.read_offset, "file truncated; reading from the start");
            self.context.metrics.truncations.get_or_create(&self.label).inc();
            tailed.framer.reset();
            tailed.read_offset = 0;
            if let Err(error) = tailed.file.seek(SeekFrom::Start(0)) {
                tracing::warn!(path = %tailed.path.display(), %error, "cannot seek");
            }
        }
    }

    fn update_gauges(&self) {
        let metrics = &self.context.metrics;
        metrics.files.get_or_create(&self.label).set(self.files.len() as i64);
        let lag: u64 = self
            .files
            .values()
            .map(|t| {
                let size = t.file.metadata().map(|m| m.len()).unwrap_or(t.read_offset);
                let acked = self.context.acks.acked_offset(&t.key).unwrap_or(0);
                size.saturating_sub(acked)
            })
            .sum();
        metrics.lag_bytes.get_or_create(&self.label).set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// Reads what is new in every file. `Ok(true)` when anything was read.
    fn read_round(&mut self) -> Result<bool, Closed> {
        let mut progressed = false;
        let keys: Vec<FileKey> = self.files.keys().copied().collect();
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
                self.close_if_finished(&key)?;
            }
        }
        Ok(progressed)
    }

    /// Closes a rotated-away file once it has been at EOF for the grace period (the app may
    /// write to its old file descriptor until it reopens), flushing a final unterminated line.
    fn close_if_finished(&mut self, key: &FileKey) -> Result<(), Closed> {
        let grace = (self.context.input.poll_interval * 2).max(ROTATION_GRACE);
        let due = self.files.get(key).and_then(|t| t.rotated_at).is_some_and(|at| at.elapsed() >= grace);
        if !due {
            return Ok(());
        }
        let Some(mut tailed) = self.files.remove(key) else {
            return Ok(());
        };
        let mut lines = LineCollector::new(&self.parser, &self.context, Arc::clone(&tailed.path_text));
        tailed.framer.flush(tailed.read_offset, |line| lines.accept(line));
        tracing::info!(path = %tailed.path.display(), "finished rotated file");
        self.send(key, 0, lines)
    }

    /// Reads one chunk of `key` and sends its complete lines as one batch; returns bytes read.
    fn read_chunk(&mut self, key: &FileKey) -> Result<usize, Closed> {
        let Some(tailed) = self.files.get_mut(key) else {
            return Ok(0);
        };
        let read = match tailed.file.read(&mut self.buffer) {
            Ok(n) => n,
            Err(error) => {
                tracing::warn!(path = %tailed.path.display(), %error, "read failed");
                return Ok(0);
            }
        };
        if read == 0 {
            return Ok(0);
        }
        let chunk_offset = tailed.read_offset;
        tailed.read_offset += read as u64;
        let mut lines = LineCollector::new(&self.parser, &self.context, Arc::clone(&tailed.path_text));
        tailed.framer.push(&self.buffer[..read], chunk_offset, |line| lines.accept(line));
        self.send(key, read, lines)?;
        Ok(read)
    }

    /// Counts what was read, applies transforms and sends the batch downstream.
    fn send(&self, key: &FileKey, bytes_read: usize, lines: LineCollector) -> Result<(), Closed> {
        let metrics = &self.context.metrics;
        metrics.bytes.get_or_create(&self.label).inc_by(bytes_read as u64);
        metrics.lines.get_or_create(&self.label).inc_by(lines.records.len() as u64);
        if lines.truncated > 0 {
            metrics.lines_truncated.get_or_create(&self.label).inc_by(lines.truncated);
        }
        if lines.parse_errors > 0 {
            metrics.parse_errors.get_or_create(&self.parser_label).inc_by(lines.parse_errors);
        }
        let Some(end) = lines.end_offset else {
            return Ok(());
        };
        let token = self.context.acks.issue(*key, end);
        let mut records = lines.records;
        records.retain_mut(|record| self.context.transforms.apply(record));
        if records.is_empty() {
            self.context.acks.ack_all(&token);
            return Ok(());
        }
        let batch = Batch { records, ack: Some(token) };
        self.context.output.blocking_send(batch).map_err(|_| Closed)
    }
}

/// Turns framed lines into records for one batch.
struct LineCollector<'a> {
    parser: &'a Parser,
    context: &'a TailerContext,
    path: Arc<str>,
    observed: Timestamp,
    records: Vec<Record>,
    end_offset: Option<u64>,
    truncated: u64,
    parse_errors: u64,
}

impl<'a> LineCollector<'a> {
    fn new(parser: &'a Parser, context: &'a TailerContext, path: Arc<str>) -> LineCollector<'a> {
        LineCollector {
            parser,
            context,
            path,
            observed: Timestamp::now(),
            records: Vec::new(),
            end_offset: None,
            truncated: 0,
            parse_errors: 0,
        }
    }

    fn accept(&mut self, line: Line<'_>) {
        let mut parsed = self.parser.parse(line.bytes, self.observed, &self.context.resource);
        self.parse_errors += u64::from(parsed.failed);
        let record = &mut parsed.record;
        let input = Arc::clone(&self.context.input.name);
        record.source = Some(Source { input, path: Arc::clone(&self.path), offset: line.start });
        add_input_attributes(record, &self.context.input.attributes);
        if line.truncated {
            self.truncated += 1;
            record.attributes.insert("truncated".to_owned(), Value::Bool(true));
        }
        self.end_offset = Some(line.end);
        self.records.push(parsed.record);
    }
}

fn add_input_attributes(record: &mut Record, attributes: &[(String, String)]) {
    for (key, value) in attributes {
        if !record.attributes.contains_key(key) {
            record.attributes.insert(key.clone(), Value::String(value.clone()));
        }
    }
}
