//! Persisted read positions: `<data_dir>/checkpoints.json`, a versioned document written
//! atomically (temp file, fsync, rename, fsync the directory) so that a crash at any instant
//! leaves either the old or the new checkpoint, never a torn one. A corrupt or unreadable
//! file is reported and treated as empty: pillion then starts per `start_at` rather than
//! crash-looping.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pipeline::{FileKey, FileOffset};

const FILE_NAME: &str = "checkpoints.json";

/// The on-disk format, tagged by version so that later formats can read older ones.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "version")]
enum Document {
    #[serde(rename = "1")]
    V1 { files: Vec<EntryV1> },
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
    pub offsets: HashMap<FileKey, (String, u64)>,
    pub warning: Option<String>,
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
            Err(error) => return Loaded { offsets: HashMap::new(), warning: Some(unreadable(&path, &error)) },
        };
        match serde_json::from_str::<Document>(&text) {
            Ok(Document::V1 { files }) => Loaded {
                offsets: files
                    .into_iter()
                    .map(|e| (FileKey { dev: e.dev, inode: e.inode }, (e.path, e.offset)))
                    .collect(),
                warning: None,
            },
            Err(error) => Loaded { offsets: HashMap::new(), warning: Some(unreadable(&path, &error)) },
        }
    }

    /// Writes `offsets` atomically.
    pub fn save(&self, offsets: &[FileOffset]) -> Result<(), CheckpointError> {
        let path = self.path();
        let wrap = |source| CheckpointError::Write { path: path.clone(), source };
        fs::create_dir_all(&self.dir).map_err(wrap)?;
        let document = Document::V1 {
            files: offsets
                .iter()
                .map(|o| EntryV1 { dev: o.key.dev, inode: o.key.inode, path: o.path.clone(), offset: o.offset })
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
    format!(
        "ignoring unreadable checkpoint file {}: {error}; files will be read according to start_at",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CheckpointStore::new(&dir.path().join("data"));
        assert!(store.load().offsets.is_empty());
        let key = FileKey { dev: 3, inode: 4 };
        store.save(&[FileOffset { key, path: "/x.log".into(), offset: 42 }]).expect("save");
        assert_eq!(store.load().offsets.get(&key), Some(&("/x.log".to_owned(), 42)));
        for garbage in ["", "{", "{\"version\":\"99\"}", "\u{0}\u{1}"] {
            fs::write(store.path(), garbage).expect("write");
            let loaded = store.load();
            assert!(loaded.offsets.is_empty());
            assert!(loaded.warning.is_some(), "{garbage:?}");
        }
    }
}
