//! The write-ahead spool: numbered segment files of checksummed frames under
//! `<data_dir>/buffer/`, appended by one writer and read back in order.
//!
//! ```text
//! segment  <first id, 20 digits>.seg  =  MAGIC  frame*
//! frame    len: u32 LE | crc32: u32 LE | id: u64 LE | records: u32 LE | payload (len bytes)
//!          crc32 covers id, records and payload
//! ```
//!
//! Frame ids grow by one per frame across segments. As in Vector's disk buffer, a frame is
//! length-delimited and carries its own checksum, so recovery needs no index: at start-up
//! every segment is scanned and its valid prefix kept; whatever follows a bad frame (a torn
//! tail left by a crash, a flipped bit) is skipped, counted, and never read, and new frames go
//! to a new segment, never after a damaged one. What is delivered is known from outside
//! (the id below which every frame was acknowledged, persisted with the checkpoints): frames
//! below it are skipped, and a segment is deleted once every frame in it is delivered.
//!
//! Durability is the caller's: [`Spool::sync_job`] hands out what must be fsynced (the files
//! written since the last job and, after a new segment, the directory), to run off the async
//! runtime; a frame counts as durable once a job taken after its append has finished.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// First bytes of every segment file (format version 1).
const MAGIC: &[u8; 8] = b"PLNSPL01";
/// Bytes before a frame's payload.
pub const FRAME_HEADER: usize = 20;
/// A length above this is corruption, not a frame (the writer splits larger batches).
pub const MAX_PAYLOAD: usize = 64 << 20;
/// Segment size aimed at: small enough that delivered data is freed soon, large enough that
/// files stay few.
const SEGMENT_TARGET: u64 = 32 << 20;

/// A frame read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub records: u32,
    pub payload: Vec<u8>,
}

/// What must be made durable: run [`SyncJob::run`] on a blocking thread.
#[derive(Debug)]
pub struct SyncJob {
    files: Vec<File>,
    dir: Option<PathBuf>,
}

impl SyncJob {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    pub fn run(self) -> io::Result<()> {
        for file in &self.files {
            file.sync_data()?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    first_id: u64,
    path: PathBuf,
    /// Bytes of the valid prefix: the reader never goes past it.
    len: u64,
    /// One past the last valid frame's id (`first_id` when it has none).
    next_id: u64,
}

/// Where the reader is.
struct Cursor {
    first_id: u64,
    file: BufReader<File>,
    pos: u64,
}

/// The spool. Not thread-safe: one owner appends, reads and acknowledges.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// Open on the last segment while it takes frames (never a recovered segment).
    writer: Option<File>,
    /// Written since the last sync job (the current writer is cloned when the job is taken).
    unsynced: Vec<File>,
    writer_dirty: bool,
    dir_dirty: bool,
    next_id: u64,
    cursor: Option<Cursor>,
    /// Frames below this id were read (or skipped).
    read_id: u64,
    /// Frames below this id are delivered.
    acked: u64,
    disk_bytes: u64,
    events: u64,
    /// Frames read and not yet delivered: (id, records).
    in_flight: VecDeque<(u64, u32)>,
    /// Damaged parts of segments skipped so far.
    corrupt: u64,
}

impl Spool {
    /// Opens (creating) the spool in `dir`; frames below `acked` were delivered before.
    pub fn open(dir: &Path, max_bytes: u64, acked: u64) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(1 << 20, SEGMENT_TARGET),
            segments: VecDeque::new(),
            writer: None,
            unsynced: Vec::new(),
            writer_dirty: false,
            dir_dirty: false,
            next_id: acked,
            cursor: None,
            read_id: acked,
            acked,
            disk_bytes: 0,
            events: 0,
            in_flight: VecDeque::new(),
            corrupt: 0,
        };
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let id = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(".seg"))
                .and_then(|stem| stem.parse::<u64>().ok());
            if let Some(id) = id {
                found.push((id, path));
            }
        }
        found.sort();
        for (first_id, path) in found {
            let scan = scan_segment(&path, first_id)?;
            if scan.damaged {
                spool.corrupt += 1;
                tracing::warn!(path = %path.display(), valid_bytes = scan.len, "spool segment damaged (torn write or corruption); the rest of it is skipped");
            }
            if scan.next_id <= acked || scan.next_id == first_id {
                // Delivered, or nothing valid in it.
                remove(&path);
                continue;
            }
            spool.next_id = spool.next_id.max(scan.next_id);
            spool.disk_bytes += file_len(&path);
            spool.events += scan.records_from(acked);
            spool.segments.push_back(Segment { first_id, path, len: scan.len, next_id: scan.next_id });
        }
        Ok(spool)
    }

    /// Appends one frame; returns its id. On a write error the frame is not in the spool
    /// and the next append starts a new segment.
    pub fn append(&mut self, records: u32, payload: &[u8]) -> io::Result<u64> {
        if payload.len() > MAX_PAYLOAD {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "spool frame too large"));
        }
        let rolled = match (&self.writer, self.segments.back()) {
            (Some(_), Some(last)) => last.len >= self.segment_bytes,
            _ => true,
        };
        if rolled {
            self.start_segment()?;
        }
        let id = self.next_id;
        let mut frame = Vec::with_capacity(FRAME_HEADER + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&checksum(id, records, payload).to_le_bytes());
        frame.extend_from_slice(&id.to_le_bytes());
        frame.extend_from_slice(&records.to_le_bytes());
        frame.extend_from_slice(payload);
        let (Some(writer), Some(segment)) = (&mut self.writer, self.segments.back_mut()) else {
            return Err(io::Error::other("no spool segment"));
        };
        if let Err(error) = writer.write_all(&frame) {
            // Whatever part was written lies past the segment's valid length: never read.
            self.close_writer();
            return Err(error);
        }
        segment.len += frame.len() as u64;
        segment.next_id = id + 1;
        self.next_id = id + 1;
        self.disk_bytes += frame.len() as u64;
        self.events += u64::from(records);
        self.writer_dirty = true;
        Ok(id)
    }

    fn start_segment(&mut self) -> io::Result<()> {
        self.close_writer();
        let path = self.dir.join(format!("{:020}.seg", self.next_id));
        let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
        if let Err(error) = file.write_all(MAGIC) {
            drop(file);
            remove(&path);
            return Err(error);
        }
        self.disk_bytes += MAGIC.len() as u64;
        self.segments.push_back(Segment {
            first_id: self.next_id,
            path,
            len: MAGIC.len() as u64,
            next_id: self.next_id,
        });
        self.writer = Some(file);
        self.writer_dirty = true;
        self.dir_dirty = true;
        Ok(())
    }

    /// Keeps the writer's unsynced writes for the next sync job, and stops appending to it.
    fn close_writer(&mut self) {
        if let Some(writer) = self.writer.take() {
            if self.writer_dirty {
                self.unsynced.push(writer);
            }
        }
        self.writer_dirty = false;
    }

    /// What to fsync so that every frame appended so far is durable.
    pub fn sync_job(&mut self) -> SyncJob {
        let mut files = std::mem::take(&mut self.unsynced);
        if self.writer_dirty {
            if let Some(clone) = self.writer.as_ref().and_then(|w| w.try_clone().ok()) {
                files.push(clone);
                self.writer_dirty = false;
            } else {
                // Cannot clone the descriptor: sync by closing it (the next append rolls).
                self.close_writer();
                files.append(&mut self.unsynced);
            }
        }
        let dir = std::mem::take(&mut self.dir_dirty).then(|| self.dir.clone());
        SyncJob { files, dir }
    }

    /// One past the id of the last frame appended.
    pub fn appended(&self) -> u64 {
        self.next_id
    }

    /// Appends and syncs since the last sync job.
    pub fn has_unsynced(&self) -> bool {
        self.writer_dirty || self.dir_dirty || !self.unsynced.is_empty()
    }

    /// Frames appended and not read yet.
    pub fn has_unread(&self) -> bool {
        self.read_id < self.next_id
    }

    /// The next frame in order, or `None` when every frame appended was read. A damaged
    /// frame makes the rest of its segment skipped (and counted).
    pub fn read_next(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if self.read_id >= self.next_id {
                return Ok(None);
            }
            let Some(index) = self.segments.iter().position(|s| s.next_id > self.read_id) else {
                self.read_id = self.next_id;
                return Ok(None);
            };
            let (first_id, len, next_id) = {
                let segment = &self.segments[index];
                (segment.first_id, segment.len, segment.next_id)
            };
            if self.cursor.as_ref().is_none_or(|c| c.first_id != first_id) {
                let mut file = File::open(&self.segments[index].path)?;
                file.seek(SeekFrom::Start(MAGIC.len() as u64))?;
                self.cursor = Some(Cursor { first_id, file: BufReader::new(file), pos: MAGIC.len() as u64 });
            }
            let Some(cursor) = &mut self.cursor else {
                continue;
            };
            if cursor.pos >= len {
                // Only possible when the valid length says the frames end before next_id.
                self.read_id = self.read_id.max(next_id);
                self.cursor = None;
                continue;
            }
            match read_frame(&mut cursor.file, len - cursor.pos) {
                Ok(Some(frame)) => {
                    cursor.pos += (FRAME_HEADER + frame.payload.len()) as u64;
                    if frame.id < self.read_id {
                        continue;
                    }
                    self.read_id = frame.id + 1;
                    self.in_flight.push_back((frame.id, frame.records));
                    return Ok(Some(frame));
                }
                Ok(None) | Err(_) => {
                    self.corrupt += 1;
                    tracing::warn!(path = %self.segments[index].path.display(), offset = cursor.pos, "damaged spool frame; the rest of the segment is skipped");
                    self.read_id = self.read_id.max(next_id);
                    self.cursor = None;
                }
            }
        }
    }

    /// Every frame below `through` is delivered: frees the segments they filled.
    pub fn acknowledge(&mut self, through: u64) {
        if through <= self.acked {
            return;
        }
        self.acked = through;
        while let Some(&(id, records)) = self.in_flight.front() {
            if id >= through {
                break;
            }
            self.in_flight.pop_front();
            self.events = self.events.saturating_sub(u64::from(records));
        }
        if self.acked >= self.next_id {
            self.events = 0;
        }
        while let Some(front) = self.segments.front() {
            let is_writer = self.segments.len() == 1 && self.writer.is_some();
            let done = front.next_id <= self.acked && (!is_writer || self.acked >= self.next_id);
            if !done {
                break;
            }
            if is_writer {
                self.close_writer();
                // Nothing in it is needed any more: no need to sync it.
                self.unsynced.clear();
            }
            if let Some(segment) = self.segments.pop_front() {
                self.disk_bytes = self.disk_bytes.saturating_sub(file_len(&segment.path));
                if self.cursor.as_ref().is_some_and(|c| c.first_id == segment.first_id) {
                    self.cursor = None;
                }
                remove(&segment.path);
            }
        }
    }

    /// Holds `max_bytes` or more: appending waits (the spool takes at least one frame even
    /// when that is larger than `max_bytes`).
    pub fn is_full(&self) -> bool {
        self.disk_bytes >= self.max_bytes && !self.segments.is_empty()
    }

    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    /// Records not yet delivered.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Damaged segment parts skipped since opening.
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Id below which every frame is delivered.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Id the next frame gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
}

/// CRC-32 of a frame's id, record count and payload.
fn checksum(id: u64, records: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&id.to_le_bytes());
    hasher.update(&records.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Reads one frame of at most `available` bytes: `None` when it is torn, too long or fails
/// its checksum.
fn read_frame(reader: &mut impl Read, available: u64) -> io::Result<Option<Frame>> {
    if available < FRAME_HEADER as u64 {
        return Ok(None);
    }
    let mut header = [0u8; FRAME_HEADER];
    if !read_full(reader, &mut header)? {
        return Ok(None);
    }
    let field =
        |range: std::ops::Range<usize>| header[range].iter().rev().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let len = field(0..4) as usize;
    let crc = field(4..8) as u32;
    let id = field(8..16);
    let records = field(16..20) as u32;
    if len > MAX_PAYLOAD || (FRAME_HEADER + len) as u64 > available {
        return Ok(None);
    }
    let mut payload = vec![0; len];
    if !read_full(reader, &mut payload)? || checksum(id, records, &payload) != crc {
        return Ok(None);
    }
    Ok(Some(Frame { id, records, payload }))
}

/// `read_exact` that says `false` at end of file instead of failing.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<bool> {
    match reader.read_exact(buffer) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(error),
    }
}

/// What a start-up scan of one segment found.
struct Scan {
    len: u64,
    next_id: u64,
    damaged: bool,
    /// (id, records) of each valid frame.
    frames: Vec<(u64, u32)>,
}

impl Scan {
    fn records_from(&self, acked: u64) -> u64 {
        self.frames.iter().filter(|(id, _)| *id >= acked).map(|(_, n)| u64::from(*n)).sum()
    }
}

/// Validates a segment's frames from the start: its valid prefix ends at the first frame
/// that is torn, fails its checksum, or does not follow the previous id.
fn scan_segment(path: &Path, first_id: u64) -> io::Result<Scan> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; MAGIC.len()];
    let mut scan = Scan { len: 0, next_id: first_id, damaged: false, frames: Vec::new() };
    if !read_full(&mut reader, &mut magic)? || &magic != MAGIC {
        scan.damaged = size > 0;
        return Ok(scan);
    }
    scan.len = MAGIC.len() as u64;
    while scan.len < size {
        match read_frame(&mut reader, size - scan.len)? {
            Some(frame) if frame.id == scan.next_id => {
                scan.len += (FRAME_HEADER + frame.payload.len()) as u64;
                scan.next_id = frame.id + 1;
                scan.frames.push((frame.id, frame.records));
            }
            _ => {
                scan.damaged = true;
                break;
            }
        }
    }
    Ok(scan)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

fn remove(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        if error.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %error, "cannot delete spool segment");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        Append(usize),
        Sync,
        Read,
        /// Acknowledge this many of the frames read and not yet acknowledged.
        Ack(usize),
        /// Persist the acknowledged id (as the checkpoint writer does).
        Persist,
        /// Kill -9: unsynced bytes of each file may be cut (at a point chosen by the seed),
        /// garbage may follow them, a file created since the last sync may vanish.
        Crash(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0usize..3000).prop_map(Step::Append),
            2 => Just(Step::Sync),
            3 => Just(Step::Read),
            2 => (0usize..4).prop_map(Step::Ack),
            1 => Just(Step::Persist),
            1 => any::<u64>().prop_map(Step::Crash),
        ]
    }

    fn payload(id_hint: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (id_hint as usize * 31 + i) as u8).collect()
    }

    struct Model {
        dir: tempfile::TempDir,
        spool: Spool,
        /// Every frame ever appended, by id.
        appended: BTreeMap<u64, Vec<u8>>,
        /// Frames below this id were synced.
        durable: u64,
        /// Valid length of each segment file at the last sync.
        synced_len: HashMap<PathBuf, u64>,
        /// Read, not acknowledged.
        read: VecDeque<u64>,
        persisted_acked: u64,
        /// Highest id below which every frame was acknowledged, in any life of the spool.
        delivered: u64,
        /// The last frame read since the spool was opened.
        last_read: Option<u64>,
    }

    impl Model {
        fn new() -> Model {
            let dir = tempfile::tempdir().expect("tempdir");
            // Small segments so that steps cross segment boundaries.
            let mut spool = Spool::open(dir.path(), 64 << 10, 0).expect("open");
            spool.segment_bytes = 8 << 10;
            Model {
                dir,
                spool,
                appended: BTreeMap::new(),
                durable: 0,
                synced_len: HashMap::new(),
                read: VecDeque::new(),
                persisted_acked: 0,
                delivered: 0,
                last_read: None,
            }
        }

        fn apply(&mut self, step: &Step) {
            match step {
                Step::Append(len) => {
                    let data = payload(self.spool.next_id(), *len);
                    let id = self.spool.append(*len as u32 % 7, &data).expect("append");
                    assert!(self.appended.insert(id, data).is_none(), "id {id} reused");
                }
                Step::Sync => {
                    self.spool.sync_job().run().expect("sync");
                    self.durable = self.spool.next_id();
                    self.synced_len = self.spool.segments.iter().map(|s| (s.path.clone(), s.len)).collect();
                }
                Step::Read => {
                    if let Some(frame) = self.spool.read_next().expect("read") {
                        self.check(&frame);
                        self.read.push_back(frame.id);
                    }
                }
                Step::Ack(n) => {
                    for _ in 0..*n {
                        let Some(id) = self.read.pop_front() else { break };
                        self.spool.acknowledge(id + 1);
                    }
                }
                Step::Persist => self.persisted_acked = self.spool.acked(),
                Step::Crash(seed) => self.crash(*seed),
            }
        }

        /// A frame read back is one appended, in order, never one delivered as persisted.
        fn check(&mut self, frame: &Frame) {
            assert_eq!(self.appended.get(&frame.id), Some(&frame.payload), "frame {} altered", frame.id);
            assert_eq!(frame.records, frame.payload.len() as u32 % 7);
            assert!(self.last_read.is_none_or(|last| frame.id > last), "frame {} out of order", frame.id);
            assert!(frame.id >= self.persisted_acked, "frame {} was delivered", frame.id);
            self.last_read = Some(frame.id);
        }

        fn crash(&mut self, seed: u64) {
            let segments: Vec<PathBuf> = self.spool.segments.iter().map(|s| s.path.clone()).collect();
            self.delivered = self.delivered.max(self.spool.acked());
            let dir = self.dir.path().to_path_buf();
            // The process dies: nothing it held is flushed by anyone.
            let placeholder = Spool::open(&dir.join("elsewhere"), 1, 0).expect("placeholder");
            drop(std::mem::replace(&mut self.spool, placeholder));
            let mut rng = fastrand::Rng::with_seed(seed);
            for path in segments {
                let len = file_len(&path);
                let synced = self.synced_len.get(&path).copied();
                let keep_from = synced.unwrap_or(0);
                if len <= keep_from {
                    continue;
                }
                match rng.u8(0..4) {
                    0 => {}
                    1 if synced.is_none() => remove(&path),
                    _ => {
                        let cut = rng.u64(keep_from..=len);
                        let file = OpenOptions::new().write(true).open(&path).expect("open");
                        file.set_len(cut).expect("truncate");
                        if rng.bool() {
                            let garbage: Vec<u8> = (0..rng.usize(1..64)).map(|_| rng.u8(..)).collect();
                            OpenOptions::new()
                                .append(true)
                                .open(&path)
                                .and_then(|mut f| f.write_all(&garbage))
                                .expect("garbage");
                        }
                    }
                }
            }
            let _ = fs::remove_dir_all(dir.join("elsewhere"));
            self.spool = Spool::open(&dir, 64 << 10, self.persisted_acked).expect("reopen");
            self.spool.segment_bytes = 8 << 10;
            // Frames that may come back: durable ones for sure, others maybe.
            self.read.clear();
            self.last_read = None;
            // (Frames delivered since the last persist may come back, or not if their segment
            // was deleted; delivered is delivered.)
            let from = self.delivered.max(self.persisted_acked);
            let must: Vec<u64> = self.appended.range(from..self.durable.max(from)).map(|(id, _)| *id).collect();
            // Replay everything now, as the buffer does after a restart, and check it.
            let mut got = Vec::new();
            while let Some(frame) = self.spool.read_next().expect("read") {
                self.check(&frame);
                got.push(frame.id);
            }
            for id in &must {
                assert!(
                    got.contains(id),
                    "durable frame {id} lost (got {got:?}, persisted ack {})",
                    self.persisted_acked
                );
            }
            // What did not come back is gone (delivered, or never durable); ids from next_id on
            // are given again.
            self.appended.retain(|id, _| got.contains(id));
            assert!(got.iter().all(|id| *id < self.spool.next_id()));
            self.read = got.into_iter().collect();
        }

        /// At the end: everything read back once more after a clean sync and reopen.
        fn finish(mut self) {
            self.apply(&Step::Sync);
            self.apply(&Step::Persist);
            self.crash(0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
        #[test]
        fn durable_frames_survive_any_crash_in_order_and_intact(steps in proptest::collection::vec(step(), 1..60)) {
            let mut model = Model::new();
            for step in &steps {
                model.apply(step);
            }
            model.finish();
        }
    }

    #[test]
    fn a_flipped_bit_skips_the_rest_of_its_segment_and_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 1 << 20, 0).expect("open");
        spool.segment_bytes = 300;
        for i in 0..6u8 {
            spool.append(1, &[i; 100]).expect("append");
        }
        spool.sync_job().run().expect("sync");
        let first = spool.segments[0].path.clone();
        assert!(spool.segments.len() >= 2);
        drop(spool);
        let mut bytes = fs::read(&first).expect("read");
        let at = MAGIC.len() + FRAME_HEADER + 10;
        bytes[at] ^= 0x40;
        fs::write(&first, bytes).expect("write");
        let mut spool = Spool::open(dir.path(), 1 << 20, 0).expect("reopen");
        assert_eq!(spool.corrupt(), 1);
        let mut ids = Vec::new();
        while let Some(frame) = spool.read_next().expect("read") {
            ids.push(frame.id);
        }
        // Frame 0 is damaged: segment 0 (frames 0..3) is skipped from there.
        assert_eq!(ids.first(), Some(&3), "{ids:?}");
        assert_eq!(ids, (3..6).collect::<Vec<_>>());
        // A later bit flip in a segment already scanned is found by the reader.
        let id = spool.append(1, b"late").expect("append");
        let path = spool.segments.back().expect("segment").path.clone();
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).expect("write");
        assert_eq!(spool.read_next().expect("read"), None, "frame {id} is damaged");
        assert_eq!(spool.corrupt(), 2);
    }

    #[test]
    fn delivered_segments_are_deleted_and_the_bound_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::open(dir.path(), 4096, 0).expect("open");
        spool.segment_bytes = 1024;
        let mut appended = 0;
        while !spool.is_full() {
            spool.append(2, &[7; 500]).expect("append");
            appended += 1;
        }
        assert!(spool.disk_bytes() >= 4096 && spool.disk_bytes() < 4096 + 600);
        assert_eq!(spool.events(), 2 * appended);
        while let Some(frame) = spool.read_next().expect("read") {
            spool.acknowledge(frame.id + 1);
        }
        assert_eq!(spool.events(), 0);
        assert_eq!(spool.disk_bytes(), 0);
        assert!(!spool.is_full());
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 0);
    }
}
