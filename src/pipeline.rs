//! What flows between the stages of the log pipeline: [`Batch`]es of records downstream, and
//! acknowledgements back upstream through [`Acknowledgements`], which keeps, per file, the
//! offset just past the longest prefix of batches that every sink has acknowledged. That
//! offset, and never a later one, is what the checkpoint persists (design.md, "Delivery
//! guarantees").

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::record::Record;

/// A file's identity: device and inode (the tailer issue adds a content fingerprint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
}

/// Which batch of which file a sink is acknowledging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    pub file: FileKey,
    /// Batches of one file are numbered 0, 1, 2... in file order.
    pub seq: u64,
    /// Offset just past the batch's last line.
    pub end_offset: u64,
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
    /// Sequence number the next issued batch gets.
    next_issue: u64,
    /// Lowest sequence number not yet committed into `acked`.
    next_commit: u64,
    /// Acknowledged batches above `next_commit`: seq to (acks so far, end offset).
    pending: BTreeMap<u64, (u32, u64)>,
}

/// An entry of a checkpoint snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOffset {
    pub key: FileKey,
    pub path: String,
    pub offset: u64,
}

/// The acknowledgement ledger shared by the tailers and the sinks.
#[derive(Debug)]
pub struct Acknowledgements {
    sinks: u32,
    files: Mutex<HashMap<FileKey, Progress>>,
    dirty: AtomicBool,
}

impl Acknowledgements {
    /// A ledger where a batch is delivered once `sinks` sinks have acknowledged it.
    pub fn new(sinks: usize) -> Acknowledgements {
        Acknowledgements {
            sinks: u32::try_from(sinks.max(1)).unwrap_or(u32::MAX),
            files: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Progress>> {
        // A panic while holding this lock cannot leave the map half-updated in a way that loses
        // data (every update is a single insert or field write), so poisoning is ignored.
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts tracking a file whose delivered prefix ends at `offset`, or updates its path.
    pub fn open(&self, file: FileKey, path: &str, offset: u64) {
        let mut files = self.lock();
        let progress = files.entry(file).or_insert_with(|| Progress {
            path: String::new(),
            acked: offset,
            next_issue: 0,
            next_commit: 0,
            pending: BTreeMap::new(),
        });
        if progress.path != path {
            progress.path = path.to_owned();
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// Numbers the next batch of `file`, which ends at `end_offset`.
    pub fn issue(&self, file: FileKey, end_offset: u64) -> AckToken {
        let mut files = self.lock();
        let seq = files.get_mut(&file).map_or(0, |progress| {
            progress.next_issue += 1;
            progress.next_issue - 1
        });
        AckToken { file, seq, end_offset }
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
        let Some(progress) = files.get_mut(&token.file) else {
            return;
        };
        let entry = progress.pending.entry(token.seq).or_insert((0, token.end_offset));
        entry.0 = entry.0.saturating_add(count);
        let mut advanced = false;
        while let Some(&(acks, end)) = progress.pending.get(&progress.next_commit) {
            if acks < self.sinks {
                break;
            }
            progress.pending.remove(&progress.next_commit);
            progress.next_commit += 1;
            progress.acked = end;
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
            .map(|(key, p)| FileOffset { key: *key, path: p.path.clone(), offset: p.acked })
            .collect();
        out.sort_by_key(|entry| entry.key);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: FileKey = FileKey { dev: 1, inode: 2 };

    #[test]
    fn checkpoint_is_the_longest_fully_acknowledged_prefix() {
        let acks = Acknowledgements::new(2);
        acks.open(FILE, "/a.log", 0);
        let t0 = acks.issue(FILE, 100);
        let t1 = acks.issue(FILE, 200);
        let t2 = acks.issue(FILE, 300);
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
        let t0 = acks.issue(FILE, 80);
        acks.open(FILE, "/a.log.1", 0);
        acks.ack(&t0);
        assert_eq!(acks.snapshot(), vec![FileOffset { key: FILE, path: "/a.log.1".into(), offset: 80 }]);
    }
}
