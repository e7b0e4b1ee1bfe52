//! Discovery decisions: for every file the globs select, whether it is a file already
//! followed (renamed? truncated? grown while closed?), a new file (where to start), a copy of
//! a file already read, or a compressed rotated file; and which followed files were rotated
//! away. The rules are in the parent module's doc.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use super::discover::SkipReason;
use super::reader::{self, Reader};
use super::{StartAt, Tailer, Waiting, discover, fingerprint, unix_now};
use crate::pipeline::{FileKey, Known};
use crate::telemetry::metrics::SkippedLabels;

/// A file found by discovery that is not followed yet.
struct Found {
    path: PathBuf,
    size: u64,
    id: (u64, u64),
}

impl Tailer {
    /// Looks at every file the globs select and updates what is followed.
    pub(super) fn scan(&mut self) {
        let mut seen = HashSet::new();
        let mut new = Vec::new();
        let discovery = discover::discover(&self.context.input);
        self.skipped_now.extend(discovery.skipped);
        for path in discovery.files {
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(error) => {
                    tracing::debug!(path = %path.display(), %error, "file vanished during discovery");
                    continue;
                }
            };
            let id = (meta.dev(), meta.ino());
            if !seen.insert(id) {
                continue;
            }
            let known = self.by_inode.get(&id).copied();
            match known {
                Some(key) if self.inode_reused(key, &path, meta.len()) => {
                    self.untrack(&key);
                    self.context.acks.mark_gone(&key, unix_now());
                }
                Some(key) => {
                    self.check_known(key, path, meta.len());
                    continue;
                }
                None => {}
            }
            new.push(Found { path, size: meta.len(), id });
        }
        self.check_gone(&seen);
        for found in new {
            if reader::is_gzip(&found.path) {
                self.consider_gzip(found);
            } else {
                self.consider_new(found);
            }
        }
        self.waiting.retain(|id, _| seen.contains(id));
        self.covered.retain(|id| seen.contains(id));
        self.reopen_grown();
        self.report_skipped();
        self.first_scan = false;
        self.update_gauges();
    }

    /// Warns about and counts each path newly skipped by this scan (once while it stays so).
    fn report_skipped(&mut self) {
        let now = std::mem::take(&mut self.skipped_now);
        for (path, reason) in now.difference(&self.skipped) {
            tracing::warn!(input = %self.context.input.name, path = %path.display(), reason = reason.as_str(), "file not tailed");
            let labels = SkippedLabels { input: self.context.input.name.to_string(), reason: reason.as_str() };
            self.context.metrics.skipped_files.get_or_create(&labels).inc();
        }
        self.skipped = now;
    }

    /// A compressed file's inode now holds another file (it was deleted and the inode reused
    /// before discovery noticed): compressed files never change.
    fn inode_reused(&self, key: FileKey, path: &std::path::Path, size: u64) -> bool {
        self.files.get(&key).is_some_and(|t| t.compressed && (size != t.size || !reader::is_gzip(path)))
    }

    /// A followed file: renamed, truncated, or grown while closed.
    fn check_known(&mut self, key: FileKey, path: PathBuf, size: u64) {
        let Some(tracked) = self.files.get_mut(&key) else {
            return;
        };
        if tracked.path != path {
            tracing::info!(from = %tracked.path.display(), to = %path.display(), "file renamed");
            tracked.path_text = std::sync::Arc::from(path.to_string_lossy().as_ref());
            tracked.path = path.clone();
            self.context.acks.open(key, &tracked.path_text, 0);
        }
        tracked.rotated_at = None;
        if tracked.compressed || tracked.finished {
            tracked.size = size;
            return;
        }
        let grew = size != tracked.size;
        tracked.size = size;
        let replaced = size < tracked.read_offset || (grew && key.checksum != 0 && head_changed(tracked, key.checksum));
        if replaced {
            self.truncated(key, path, size);
        }
    }

    /// `key` was truncated (or its content replaced): its content is read again from 0 under
    /// the identity of the new content; a copy of the old content resumes where we stopped.
    pub(super) fn truncated(&mut self, key: FileKey, path: PathBuf, size: u64) {
        let Some(mut old) = self.untrack(&key) else {
            return;
        };
        tracing::warn!(path = %path.display(), size, offset = old.read_offset, "file truncated; reading it from the start");
        if self.replaced.len() >= 4096 {
            self.replaced.clear();
        }
        self.replaced.insert(key);
        self.context.metrics.truncations.get_or_create(&self.label).inc();
        self.context.acks.mark_gone(&key, unix_now());
        // The same descriptor reads the new content (the path may lead elsewhere by now).
        let reader = match old.reader.take() {
            Some(reader) => Some(reader),
            None if self.make_room() => Reader::open_plain(&path, key.dev, key.inode, 0).ok(),
            None => None,
        };
        let head = match &reader {
            Some(Reader::Plain(file)) => fingerprint::read_head(file).unwrap_or_default(),
            _ => Vec::new(),
        };
        let Some(checksum) = fingerprint::checksum(&head) else {
            // Not one line yet: discovery fingerprints it like a new file (from 0).
            self.waiting.insert((key.dev, key.inode), Waiting { since: Instant::now(), size });
            return;
        };
        let new_key = FileKey { checksum, ..key };
        self.context.acks.reset(new_key, &path.to_string_lossy(), 0, 0);
        let reader = reader.and_then(|mut reader| reader.rewind().ok().map(|()| reader));
        self.track(new_key, path, size, 0, false, reader);
    }

    /// Followed files that discovery no longer finds were rotated away or deleted.
    fn check_gone(&mut self, seen: &HashSet<(u64, u64)>) {
        let gone: Vec<FileKey> =
            self.files.values().filter(|t| !seen.contains(&(t.key.dev, t.key.inode))).map(|t| t.key).collect();
        for key in gone {
            let Some(tracked) = self.files.get_mut(&key) else {
                continue;
            };
            if tracked.finished {
                self.untrack(&key);
                self.context.acks.mark_gone(&key, unix_now());
            } else if tracked.reader.is_none() {
                // A `.gz` without a descriptor was never opened: its size on disk is counted.
                let unread = match tracked.compressed {
                    true => tracked.size,
                    false => tracked.size.saturating_sub(tracked.read_offset),
                };
                let path = tracked.path.clone();
                self.untrack(&key);
                self.context.acks.mark_gone(&key, unix_now());
                self.count_lost(&path, unread, "file gone while closed for the open-files limit");
            } else if tracked.rotated_at.is_none() {
                tracing::info!(path = %tracked.path.display(), "file rotated away; reading it to the end");
                tracked.rotated_at = Some(Instant::now());
                self.context.metrics.rotations.get_or_create(&self.label).inc();
            }
        }
    }

    /// A plain file not followed yet.
    fn consider_new(&mut self, found: Found) {
        let head = match File::open(&found.path).and_then(|file| Ok((fingerprint::read_head(&file)?, file))) {
            // A pseudo-file (procfs, sysfs) says it is empty yet has content, and would be
            // read again from the start at every poll: never tailed.
            Ok((head, file)) if !head.is_empty() && file.metadata().is_ok_and(|meta| meta.len() == 0) => {
                self.skipped_now.insert((found.path, SkipReason::NotRegular));
                return;
            }
            Ok((head, _)) => head,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %found.path.display(), %error, "file vanished before it was opened");
                return;
            }
            // Permissions, or a file that cannot be read at all (EIO).
            Err(_) => {
                self.skipped_now.insert((found.path, SkipReason::Unreadable));
                return;
            }
        };
        // An empty file waits for its first line however long it takes: there is nothing to
        // read, and a fingerprint is what recognizes its copies later.
        let checksum = match fingerprint::checksum(&head) {
            Some(checksum) => checksum,
            None if !head.is_empty() && self.waited(&found) => 0,
            None => {
                self.waited(&found);
                return;
            }
        };
        let key = FileKey { dev: found.id.0, inode: found.id.1, checksum };
        let Some(offset) = self.start_offset(key, &found) else {
            return;
        };
        self.waiting.remove(&found.id);
        let reader = match self.make_room() {
            true => match Reader::open_plain(&found.path, key.dev, key.inode, offset) {
                Ok(reader) => Some(reader),
                Err(error) => {
                    tracing::debug!(path = %found.path.display(), %error, "cannot open new file");
                    return;
                }
            },
            false => None,
        };
        tracing::info!(path = %found.path.display(), offset, "following file");
        self.track(key, found.path, found.size, offset, false, reader);
    }

    /// Starts or continues waiting for `found`; `true` once it waited the fingerprint timeout.
    fn waited(&mut self, found: &Found) -> bool {
        let timeout = self.fingerprint_timeout();
        let waiting = self.waiting.entry(found.id).or_insert(Waiting { since: Instant::now(), size: found.size });
        waiting.since.elapsed() >= timeout
    }

    /// Where to start reading a new plain file, registering it in the ledger; `None` to wait
    /// (a suspected copy of a file not yet truncated).
    fn start_offset(&mut self, key: FileKey, found: &Found) -> Option<u64> {
        let path = found.path.to_string_lossy();
        let acks = &self.context.acks;
        let same_inode = acks.with_inode(key.dev, key.inode);
        // The file itself, or the same inode checkpointed by device and inode only.
        let same = same_inode.iter().find(|k| k.key == key).or_else(|| same_inode.iter().find(|k| k.key.checksum == 0));
        if let Some(known) = same {
            let offset = self.read_ends.get(&known.key).map_or(known.acked, |&(end, _)| end.max(known.acked));
            if found.size < offset {
                tracing::warn!(%path, size = found.size, offset, "file shorter than its checkpoint (truncated while pillion was down); reading it from the start");
                self.context.metrics.truncations.get_or_create(&self.label).inc();
                acks.reset(key, &path, 0, 0);
                return Some(0);
            }
            if known.key == key {
                acks.open(key, &path, offset);
            } else {
                acks.forget(&known.key);
                acks.reset(key, &path, offset, known.tail);
            }
            return Some(offset);
        }
        // Before the inode rule: a copy may well reuse the inode of a file deleted earlier.
        if let Some((offset, tail, original)) = self.copy_offset(key, found) {
            tracing::info!(%path, offset, "file is a copy of a truncated or rotated file; resuming where that one stopped");
            self.context.acks.reset_after(key, &path, (offset, tail), original);
            return Some(offset);
        }
        if !same_inode.is_empty() {
            tracing::warn!(%path, "first line changed since the checkpoint (truncated and rewritten, or inode reused); reading it from the start");
            self.context.metrics.truncations.get_or_create(&self.label).inc();
            self.context.acks.reset(key, &path, 0, 0);
            return Some(0);
        }
        if self.original_is_live(key, found.id) && !self.waited(found) {
            return None;
        }
        let offset = match self.context.input.start_at {
            StartAt::End if self.first_scan => found.size,
            _ => 0,
        };
        self.context.acks.reset(key, &path, offset, 0);
        Some(offset)
    }

    /// Files this one could be a copy of: same first line, another inode.
    fn originals(&self, key: FileKey, id: (u64, u64)) -> Vec<Known> {
        let mut originals = self.context.acks.with_checksum(key.checksum);
        originals.retain(|k| (k.key.dev, k.key.inode) != id);
        originals
    }

    fn original_is_live(&self, key: FileKey, id: (u64, u64)) -> bool {
        self.originals(key, id).iter().any(|k| self.files.get(&k.key).is_some_and(|t| !t.finished))
    }

    /// The offset (and tail) a copy of a gone file resumes at: where that file was last
    /// delivered or read, if the copy has the same bytes just before it.
    fn copy_offset(&self, key: FileKey, found: &Found) -> Option<(u64, u64, FileKey)> {
        let file = File::open(&found.path).ok()?;
        self.originals(key, found.id)
            .into_iter()
            .filter(|k| k.gone && !self.files.contains_key(&k.key))
            .map(|k| self.resume_point(&k))
            .filter(|&(offset, tail, _)| {
                offset <= found.size && (tail == 0 || reader::plain_tail(&file, offset) == tail)
            })
            .max_by_key(|&(offset, _, _)| offset)
    }

    /// Where a copy of `original` resumes: where this run read it to, else where it was
    /// delivered; and the original, whose batches still in flight the copy's checkpoint must
    /// wait for.
    fn resume_point(&self, original: &Known) -> (u64, u64, FileKey) {
        let (offset, tail) = self.read_ends.get(&original.key).copied().unwrap_or((original.acked, original.tail));
        (offset, tail, original.key)
    }

    /// A `.gz` file not followed yet (see the parent module's doc).
    fn consider_gzip(&mut self, found: Found) {
        if self.covered.contains(&found.id) {
            return;
        }
        // Read only once its size is stable: it may still be being compressed.
        match self.waiting.get(&found.id) {
            Some(waiting) if waiting.size == found.size => {}
            _ => {
                self.waiting.insert(found.id, Waiting { since: Instant::now(), size: found.size });
                return;
            }
        }
        let head = match Reader::gzip_head(&found.path) {
            Ok(head) => head,
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                self.skipped_now.insert((found.path, SkipReason::Unreadable));
                return;
            }
            Err(error) => {
                tracing::warn!(path = %found.path.display(), %error, "cannot decompress; will retry when it changes");
                return;
            }
        };
        self.waiting.remove(&found.id);
        let checksum = fingerprint::checksum(&head).unwrap_or(0);
        let key = FileKey { dev: found.id.0, inode: found.id.1, checksum };
        let Some(offset) = self.gzip_offset(key, &found) else {
            self.covered.insert(found.id);
            return;
        };
        if !self.make_room() {
            // Opened once a descriptor is free; counted lost if deleted before.
            tracing::info!(path = %found.path.display(), "compressed file waits for a descriptor (max_open_files)");
            self.track(key, found.path, found.size, offset, true, None);
            return;
        }
        match Reader::open_gzip(&found.path, offset) {
            Ok((reader, skipped)) => {
                tracing::info!(path = %found.path.display(), offset = skipped, "reading compressed file");
                self.track(key, found.path, found.size, skipped, true, Some(reader));
            }
            Err(error) => tracing::warn!(path = %found.path.display(), %error, "cannot decompress"),
        }
    }

    /// Where to start in a `.gz`; `None` to skip it (its content arrives another way).
    fn gzip_offset(&mut self, key: FileKey, found: &Found) -> Option<u64> {
        let path = found.path.to_string_lossy().into_owned();
        let acks = &self.context.acks;
        if let Some(known) = acks.with_inode(key.dev, key.inode).into_iter().find(|k| k.key == key) {
            acks.open(key, &path, known.acked);
            return Some(known.acked);
        }
        if key.checksum != 0 {
            if self.original_is_live(key, found.id) {
                tracing::debug!(%path, "compressed copy of a file still being read; skipped");
                return None;
            }
            let resume = self
                .originals(key, found.id)
                .into_iter()
                .map(|k| self.resume_point(&k))
                .filter(|&(offset, tail, _)| tail == 0 || reader::gzip_tail(&found.path, offset) == tail)
                .max_by_key(|&(offset, _, _)| offset);
            if let Some((offset, tail, original)) = resume {
                tracing::info!(%path, offset, "compressed copy of a rotated file; resuming where that one stopped");
                self.context.acks.reset_after(key, &path, (offset, tail), original);
                return Some(offset);
            }
        }
        if self.first_scan && self.context.input.start_at == StartAt::End {
            return None;
        }
        self.context.acks.reset(key, &path, 0, 0);
        Some(0)
    }

    /// Opens files waiting for a descriptor: plain files closed for the open-files limit that
    /// have grown, and `.gz` files that found none free.
    pub(super) fn reopen_grown(&mut self) {
        let mut grown: Vec<(Instant, FileKey)> =
            self.files.values().filter(|t| t.wants_descriptor()).map(|t| (t.last_active, t.key)).collect();
        grown.sort_unstable();
        for (_, key) in grown {
            if !self.make_room() {
                return;
            }
            let Some(tracked) = self.files.get_mut(&key) else {
                continue;
            };
            let opened = match tracked.compressed {
                false => Reader::open_plain(&tracked.path, key.dev, key.inode, tracked.read_offset),
                true => Reader::open_gzip_checked(&tracked.path, key.dev, key.inode, tracked.read_offset).map(
                    |(reader, skipped)| {
                        tracked.read_offset = skipped;
                        tracked.emitted_end = tracked.emitted_end.min(skipped);
                        reader
                    },
                ),
            };
            match opened {
                Ok(reader) => {
                    tracked.reader = Some(reader);
                    tracked.last_active = Instant::now();
                    self.open_files += 1;
                }
                Err(error) => {
                    tracing::debug!(path = %tracked.path.display(), %error, "cannot reopen")
                }
            }
        }
    }
}

/// The first line of a followed file is no longer the one it was identified by.
fn head_changed(tracked: &super::Tracked, checksum: u64) -> bool {
    let head = match &tracked.reader {
        Some(Reader::Plain(file)) => fingerprint::read_head(file),
        _ => File::open(&tracked.path).and_then(|file| fingerprint::read_head(&file)),
    };
    head.is_ok_and(|head| fingerprint::checksum(&head) != Some(checksum))
}
