//! What flows between the stages of the log pipeline: [`Batch`]es of records downstream, and
//! acknowledgements back upstream through [`Acknowledgements`], which keeps, per file, the
//! offset just past the longest prefix of batches that every sink has acknowledged. That
//! offset, and never a later one, is what the checkpoint persists (design.md, "Delivery
//! guarantees").

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::record::Record;

/// Seconds since the Unix epoch: checkpoint entries record since when a file is gone.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A file's identity: device and inode plus a checksum of the file's first line (see
/// `tail::fingerprint`). `checksum` 0 means "identified by device and inode only".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
    pub checksum: u64,
}

/// Which batch of which file a sink is acknowledging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    pub file: FileKey,
    /// Which reading of the file (bumped when a truncated file is read again from 0), so that
    /// a late acknowledgement of the old content cannot move the new content's checkpoint.
    pub epoch: u64,
    /// Batches of one file are numbered 0, 1, 2... in file order.
    pub seq: u64,
    /// Offset just past the batch's last line.
    pub end_offset: u64,
    /// A checksum of the bytes just before `end_offset` (see `tail::fingerprint::tail`), kept
    /// with the checkpoint so that a copy of the file is recognized at that offset.
    pub tail: u64,
}

/// Records on their way to the sinks, with what to acknowledge once they are delivered.
#[derive(Debug)]
pub struct Batch {
    pub records: Vec<Record>,
    /// `None` for records that come from no file (nothing to checkpoint).
    pub ack: Option<AckToken>,
}

/// One file's delivery progress.
#[derive(Debug)]
struct Progress {
    path: String,
    /// Offset up to which every sink has acknowledged.
    acked: u64,
    /// [`AckToken::tail`] at `acked`.
    acked_tail: u64,
    /// See [`AckToken::epoch`].
    epoch: u64,
    /// Unix seconds since when the file is gone (closed, or restored and not seen yet).
    gone_since: Option<u64>,
    /// Sequence number the next issued batch gets.
    next_issue: u64,
    /// Lowest sequence number not yet committed into `acked`.
    next_commit: u64,
    /// Acknowledged batches above `next_commit`: seq to (acks so far, end offset, tail).
    pending: BTreeMap<u64, (u32, u64, u64)>,
}

/// An entry of a checkpoint snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffset {
    pub key: FileKey,
    pub path: String,
    pub offset: u64,
    /// [`AckToken::tail`] at `offset`; 0 when unknown.
    pub tail: u64,
    /// Unix seconds since when the file is gone; entries are forgotten a TTL later.
    pub gone_since: Option<u64>,
}

/// What the ledger knows about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub key: FileKey,
    pub acked: u64,
    pub tail: u64,
    pub gone: bool,
}

/// The acknowledgement ledger shared by the tailers and the sinks.
#[derive(Debug)]
pub struct Acknowledgements {
    sinks: u32,
    files: Mutex<HashMap<FileKey, Progress>>,
    dirty: AtomicBool,
    next_epoch: AtomicU64,
}

impl Acknowledgements {
    /// A ledger where a batch is delivered once `sinks` sinks have acknowledged it.
    pub fn new(sinks: usize) -> Acknowledgements {
        Acknowledgements {
            sinks: u32::try_from(sinks.max(1)).unwrap_or(u32::MAX),
            files: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(false),
            next_epoch: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Progress>> {
        // A panic while holding this lock cannot leave the map half-updated in a way that loses
        // data (every update is a single insert or field write), so poisoning is ignored.
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fresh(&self, path: &str, offset: u64, tail: u64) -> Progress {
        Progress {
            path: path.to_owned(),
            acked: offset,
            acked_tail: tail,
            epoch: self.next_epoch.fetch_add(1, Ordering::Relaxed),
            gone_since: None,
            next_issue: 0,
            next_commit: 0,
            pending: BTreeMap::new(),
        }
    }

    /// Loads checkpoint entries at start-up. They count as gone until a tailer opens them.
    pub fn restore(&self, entries: &[FileOffset], now_unix: u64) {
        let mut files = self.lock();
        for entry in entries {
            let mut progress = self.fresh(&entry.path, entry.offset, entry.tail);
            progress.gone_since = Some(entry.gone_since.unwrap_or(now_unix));
            files.insert(entry.key, progress);
        }
    }

    /// Starts tracking a file whose delivered prefix ends at `offset`, or updates its path
    /// (a tracked file keeps its progress and is no longer gone).
    pub fn open(&self, file: FileKey, path: &str, offset: u64) {
        let mut files = self.lock();
        let progress = files.entry(file).or_insert_with(|| self.fresh(path, offset, 0));
        if progress.path != path || progress.gone_since.is_some() {
            progress.path = path.to_owned();
            progress.gone_since = None;
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Starts `file` over at `offset` (new, or truncated: acknowledgements still in flight
    /// for the old content are ignored). `tail` is the checksum before `offset`, 0 if unknown.
    pub fn reset(&self, file: FileKey, path: &str, offset: u64, tail: u64) {
        let progress = self.fresh(path, offset, tail);
        self.lock().insert(file, progress);
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The file is no longer read (rotated away and finished, or deleted).
    pub fn mark_gone(&self, file: &FileKey, now_unix: u64) {
        if let Some(progress) = self.lock().get_mut(file) {
            progress.gone_since.get_or_insert(now_unix);
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Forgets files gone for longer than `ttl_secs`; returns how many.
    pub fn expire(&self, now_unix: u64, ttl_secs: u64) -> usize {
        let mut files = self.lock();
        let before = files.len();
        files.retain(|_, p| p.gone_since.is_none_or(|since| now_unix.saturating_sub(since) <= ttl_secs));
        let removed = before - files.len();
        if removed > 0 {
            self.dirty.store(true, Ordering::Relaxed);
        }
        removed
    }

    /// Numbers the next batch of `file`, which ends at `end_offset`.
    pub fn issue(&self, file: FileKey, end_offset: u64, tail: u64) -> AckToken {
        let mut files = self.lock();
        let (epoch, seq) = files.get_mut(&file).map_or((0, 0), |progress| {
            progress.next_issue += 1;
            (progress.epoch, progress.next_issue - 1)
        });
        AckToken { file, epoch, seq, end_offset, tail }
    }

    /// One sink delivered the batch (or dead-lettered it).
    pub fn ack(&self, token: &AckToken) {
        self.record_acks(token, 1);
    }

    /// Every sink is done with the batch (e.g. transforms dropped all its records).
    pub fn ack_all(&self, token: &AckToken) {
        self.record_acks(token, self.sinks);
    }

    fn record_acks(&self, token: &AckToken, count: u32) {
        let mut files = self.lock();
        let Some(progress) = files.get_mut(&token.file).filter(|p| p.epoch == token.epoch) else {
            return;
        };
        let entry = progress.pending.entry(token.seq).or_insert((0, token.end_offset, token.tail));
        entry.0 = entry.0.saturating_add(count);
        let mut advanced = false;
        while let Some(&(acks, end, tail)) = progress.pending.get(&progress.next_commit) {
            if acks < self.sinks {
                break;
            }
            progress.pending.remove(&progress.next_commit);
            progress.next_commit += 1;
            progress.acked = end;
            progress.acked_tail = tail;
            advanced = true;
        }
        if advanced {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// The delivered offset of `file`, if it is tracked.
    pub fn acked_offset(&self, file: &FileKey) -> Option<u64> {
        self.lock().get(file).map(|progress| progress.acked)
    }

    /// Every tracked file with this first-line checksum (copies and compressed copies of a
    /// file have its checksum).
    pub fn with_checksum(&self, checksum: u64) -> Vec<Known> {
        self.known(|key| key.checksum == checksum && checksum != 0)
    }

    /// Every tracked file with this device and inode.
    pub fn with_inode(&self, dev: u64, inode: u64) -> Vec<Known> {
        self.known(|key| key.dev == dev && key.inode == inode)
    }

    fn known(&self, wanted: impl Fn(&FileKey) -> bool) -> Vec<Known> {
        self.lock()
            .iter()
            .filter(|(key, _)| wanted(key))
            .map(|(key, p)| Known { key: *key, acked: p.acked, tail: p.acked_tail, gone: p.gone_since.is_some() })
            .collect()
    }

    /// Stops tracking a file that is gone; returns its delivered offset.
    pub fn forget(&self, file: &FileKey) -> Option<u64> {
        let removed = self.lock().remove(file).map(|progress| progress.acked);
        self.dirty.store(true, Ordering::Relaxed);
        removed
    }

    /// The delivered offsets of all files, and clears the "changed" flag. `None` when nothing
    /// changed since the last snapshot.
    pub fn snapshot_if_changed(&self) -> Option<Vec<FileOffset>> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return None;
        }
        Some(self.snapshot())
    }

    /// Makes the next [`Self::snapshot_if_changed`] return a snapshot (after a failed write).
    pub fn mark_changed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The delivered offsets of all files.
    pub fn snapshot(&self) -> Vec<FileOffset> {
        let files = self.lock();
        let mut out: Vec<FileOffset> = files
            .iter()
            .map(|(key, p)| FileOffset {
                key: *key,
                path: p.path.clone(),
                offset: p.acked,
                tail: p.acked_tail,
                gone_since: p.gone_since,
            })
            .collect();
        out.sort_by_key(|entry| entry.key);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: FileKey = FileKey { dev: 1, inode: 2, checksum: 3 };

    #[test]
    fn checkpoint_is_the_longest_fully_acknowledged_prefix() {
        let acks = Acknowledgements::new(2);
        acks.open(FILE, "/a.log", 0);
        let t0 = acks.issue(FILE, 100, 0);
        let t1 = acks.issue(FILE, 200, 0);
        let t2 = acks.issue(FILE, 300, 0);
        acks.ack(&t2);
        acks.ack(&t2);
        assert_eq!(acks.acked_offset(&FILE), Some(0), "a hole before batch 2");
        acks.ack(&t0);
        assert_eq!(acks.acked_offset(&FILE), Some(0), "only one of two sinks");
        acks.ack(&t0);
        assert_eq!(acks.acked_offset(&FILE), Some(100));
        acks.ack_all(&t1);
        assert_eq!(acks.acked_offset(&FILE), Some(300));
        assert!(acks.snapshot_if_changed().is_some());
        assert!(acks.snapshot_if_changed().is_none());
    }

    #[test]
    fn reopening_keeps_progress() {
        let acks = Acknowledgements::new(1);
        acks.open(FILE, "/a.log", 50);
        let t0 = acks.issue(FILE, 80, 7);
        acks.open(FILE, "/a.log.1", 0);
        acks.ack(&t0);
        assert_eq!(
            acks.snapshot(),
            vec![FileOffset { key: FILE, path: "/a.log.1".into(), offset: 80, tail: 7, gone_since: None }]
        );
    }

    #[test]
    fn acknowledgements_of_old_content_are_ignored_after_a_reset() {
        let acks = Acknowledgements::new(1);
        acks.open(FILE, "/a.log", 0);
        let old = acks.issue(FILE, 500, 0);
        acks.reset(FILE, "/a.log", 0, 0);
        let new = acks.issue(FILE, 40, 0);
        acks.ack(&old);
        assert_eq!(acks.acked_offset(&FILE), Some(0));
        acks.ack(&new);
        assert_eq!(acks.acked_offset(&FILE), Some(40));
    }

    #[test]
    fn gone_files_expire_after_the_ttl() {
        let acks = Acknowledgements::new(1);
        let entry = FileOffset { key: FILE, path: "/a.log".into(), offset: 9, tail: 5, gone_since: Some(100) };
        acks.restore(&[entry], 1000);
        assert_eq!(acks.with_checksum(3), vec![Known { key: FILE, acked: 9, tail: 5, gone: true }]);
        assert_eq!(acks.with_inode(1, 2).len(), 1);
        assert_eq!(acks.expire(150, 100), 0);
        acks.open(FILE, "/a.log", 0);
        assert_eq!(acks.expire(10_000, 100), 0, "open files never expire");
        acks.mark_gone(&FILE, 10_000);
        assert_eq!(acks.expire(10_200, 100), 1);
        assert!(acks.snapshot().is_empty());
    }
}
