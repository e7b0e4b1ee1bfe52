//! Persisted read positions and the task that writes them ([`CheckpointWriter`]):
//! `<data_dir>/checkpoints.json`, a versioned document written
//! atomically (temp file, fsync, rename, fsync the directory) so that a crash at any instant
//! leaves either the old or the new checkpoint, never a torn one. A corrupt or unreadable
//! file is reported and treated as empty: pillion then starts per `start_at` rather than
//! crash-looping.
//!
//! Version 2 keys each entry by the full file identity (device, inode and first-line
//! checksum, see [`super::fingerprint`]) and records since when a file is gone, so that
//! entries are forgotten a TTL later. Version 1 (device and inode only) is still read: its
//! entries match a file by device and inode whatever its checksum.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Acknowledgements, FileKey, FileOffset, unix_now};

const FILE_NAME: &str = "checkpoints.json";

/// The on-disk format, tagged by version so that later formats can read older ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum Document {
    #[serde(rename = "1")]
    V1 { files: Vec<EntryV1> },
    #[serde(rename = "2")]
    V2 { files: Vec<EntryV2> },
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryV2 {
    dev: u64,
    inode: u64,
    /// Checksum of the first line; 0: identified by device and inode only.
    checksum: u64,
    path: String,
    offset: u64,
    /// Checksum of the bytes just before `offset`, to recognize a copy of the file.
    #[serde(default)]
    tail: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gone_since: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EntryV1 {
    dev: u64,
    inode: u64,
    path: String,
    offset: u64,
}

/// Errors writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot write checkpoints to {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Where checkpoints are kept.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

/// What loading found: the offsets, and a warning when the file had to be ignored.
#[derive(Debug, Default)]
pub struct Loaded {
    pub entries: Vec<FileOffset>,
    pub warning: Option<String>,
}

impl Loaded {
    /// The entries by identity.
    pub fn by_key(&self) -> HashMap<FileKey, FileOffset> {
        self.entries.iter().map(|e| (e.key, e.clone())).collect()
    }
}

impl CheckpointStore {
    pub fn new(data_dir: &Path) -> CheckpointStore {
        CheckpointStore { dir: data_dir.to_owned() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// Reads the checkpoints; a missing file is empty, a corrupt one is empty with a warning.
    pub fn load(&self) -> Loaded {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Loaded::default(),
            Err(error) => {
                return Loaded { entries: Vec::new(), warning: Some(unreadable(&path, &error)) };
            }
        };
        match serde_json::from_str::<Document>(&text) {
            Ok(Document::V1 { files }) => Loaded {
                entries: files
                    .into_iter()
                    .map(|e| FileOffset {
                        key: FileKey { dev: e.dev, inode: e.inode, checksum: 0 },
                        path: e.path,
                        offset: e.offset,
                        tail: 0,
                        gone_since: None,
                    })
                    .collect(),
                warning: None,
            },
            Ok(Document::V2 { files }) => Loaded {
                entries: files
                    .into_iter()
                    .map(|e| FileOffset {
                        key: FileKey { dev: e.dev, inode: e.inode, checksum: e.checksum },
                        path: e.path,
                        offset: e.offset,
                        tail: e.tail,
                        gone_since: e.gone_since,
                    })
                    .collect(),
                warning: None,
            },
            Err(error) => Loaded { entries: Vec::new(), warning: Some(unreadable(&path, &error)) },
        }
    }

    /// Writes `offsets` atomically.
    pub fn save(&self, offsets: &[FileOffset]) -> Result<(), CheckpointError> {
        let path = self.path();
        let wrap = |source| CheckpointError::Write { path: path.clone(), source };
        fs::create_dir_all(&self.dir).map_err(wrap)?;
        let document = Document::V2 {
            files: offsets
                .iter()
                .map(|o| EntryV2 {
                    dev: o.key.dev,
                    inode: o.key.inode,
                    checksum: o.key.checksum,
                    path: o.path.clone(),
                    offset: o.offset,
                    tail: o.tail,
                    gone_since: o.gone_since,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&document).map_err(|e| wrap(std::io::Error::other(e)))?;
        let temp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut file = File::create(&temp).map_err(wrap)?;
        file.write_all(&bytes).map_err(wrap)?;
        file.sync_all().map_err(wrap)?;
        drop(file);
        fs::rename(&temp, &path).map_err(wrap)?;
        File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(wrap)
    }
}

fn unreadable(path: &Path, error: &dyn std::fmt::Display) -> String {
    format!("ignoring unreadable checkpoint file {}: {error}; files will be read according to start_at", path.display())
}

/// Persists the acknowledgement ledger every `interval` when it changed, forgetting the files
/// gone for longer than the TTL; [`CheckpointWriter::finish`] writes the final checkpoint.
pub struct CheckpointWriter {
    store: CheckpointStore,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl CheckpointWriter {
    pub fn spawn(store: CheckpointStore, acks: Arc<Acknowledgements>, (interval, ttl): (Duration, Duration)) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(write_periodically(store.clone(), acks, interval, ttl, stop.clone()));
        CheckpointWriter { store, stop, task }
    }

    /// Stops the periodic writer and writes what `acks` holds now.
    pub async fn finish(self, acks: &Acknowledgements) -> Result<(), CheckpointError> {
        self.stop.cancel();
        let _ = self.task.await;
        let offsets = acks.snapshot();
        let store = self.store;
        match tokio::task::spawn_blocking(move || store.save(&offsets)).await {
            Ok(saved) => saved,
            Err(error) => {
                tracing::error!(%error, "the final checkpoint writer panicked");
                Ok(())
            }
        }
    }
}

async fn write_periodically(
    store: CheckpointStore,
    acks: Arc<Acknowledgements>,
    interval: Duration,
    ttl: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let forgotten = acks.expire(unix_now(), ttl.as_secs());
        if forgotten > 0 {
            tracing::info!(forgotten, "checkpoints of files gone longer than checkpoint_ttl forgotten");
        }
        let Some(offsets) = acks.snapshot_if_changed() else {
            continue;
        };
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.save(&offsets)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "checkpoint not written; will retry");
                acks.mark_changed();
            }
            Err(error) => tracing::warn!(%error, "checkpoint writer panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::new(&dir.path().join("data"));
        assert!(store.load().entries.is_empty());
        let key = FileKey { dev: 3, inode: 4, checksum: 5 };
        let entry = FileOffset { key, path: "/x.log".into(), offset: 42, tail: 9, gone_since: Some(7) };
        store.save(std::slice::from_ref(&entry)).expect("save");
        assert_eq!(store.load().entries, vec![entry]);
        let text = fs::read_to_string(store.path()).expect("read");
        assert!(text.contains("\"version\": \"2\""), "{text}");
        for garbage in ["", "{", "{\"version\":\"99\"}", "\u{0}\u{1}", "{\"version\":\"2\",\"files\":[{\"dev\":1}]}"] {
            fs::write(store.path(), garbage).expect("write");
            let loaded = store.load();
            assert!(loaded.entries.is_empty());
            assert!(loaded.warning.is_some(), "{garbage:?}");
        }
    }

    #[test]
    fn version_1_is_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::new(dir.path());
        let v1 = r#"{"version":"1","files":[{"dev":3,"inode":4,"path":"/x.log","offset":42}]}"#;
        fs::write(store.path(), v1).expect("write");
        let loaded = store.load();
        assert!(loaded.warning.is_none());
        let key = FileKey { dev: 3, inode: 4, checksum: 0 };
        assert_eq!(
            loaded.entries,
            vec![FileOffset { key, path: "/x.log".into(), offset: 42, tail: 0, gone_since: None }]
        );
    }
}
