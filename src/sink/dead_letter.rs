//! The dead-letter file of a sink, `<data_dir>/dead-letter/<sink>.ndjson`: records the
//! backend rejected for good, one JSON object per line with the record and the backend's
//! reason. A record is acknowledged only after its dead letter is written and synced, so a
//! rejection never loses a record silently.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::batch::Entry;
use crate::record::{Record, Rfc3339Nanos};

/// One sink's dead-letter file, opened on first use.
pub(crate) struct DeadLetters {
    sink: Arc<str>,
    path: PathBuf,
    file: Mutex<Option<File>>,
}

#[derive(Serialize)]
struct DeadLetter<'a> {
    dead_lettered_at: Rfc3339Nanos,
    sink: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<&'a Record>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost_records: Option<u64>,
}

impl DeadLetters {
    pub fn new(data_dir: &Path, sink: Arc<str>) -> DeadLetters {
        let path = data_dir.join("dead-letter").join(format!("{sink}.ndjson"));
        DeadLetters { sink, path, file: Mutex::new(None) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line per `(entry, reason)` and syncs the file. Blocking: call it from a
    /// blocking thread.
    pub fn write(&self, rejected: &[(Entry, String)]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(rejected.len() * 512);
        let now = Rfc3339Nanos(jiff::Timestamp::now());
        for (entry, reason) in rejected {
            let letter = DeadLetter {
                dead_lettered_at: Rfc3339Nanos(now.0),
                sink: &self.sink,
                reason,
                record: Some(entry.record()),
                lost_records: None,
            };
            serde_json::to_writer(&mut out, &letter)?;
            out.push(b'\n');
        }
        self.append(&out)
    }

    /// Notes that the backend dropped `count` records it did not name.
    pub fn write_loss(&self, count: u64, reason: &str) -> std::io::Result<()> {
        let letter = DeadLetter {
            dead_lettered_at: Rfc3339Nanos(jiff::Timestamp::now()),
            sink: &self.sink,
            reason,
            record: None,
            lost_records: Some(count),
        };
        let mut out = serde_json::to_vec(&letter)?;
        out.push(b'\n');
        self.append(&out)
    }

    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            *guard = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        let Some(file) = guard.as_mut() else {
            return Err(std::io::Error::other("dead-letter file not open"));
        };
        file.write_all(bytes)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Batch;
    use crate::sink::batch::Ledger;
    use crate::telemetry::metrics::SinkMetrics;

    #[test]
    fn writes_the_record_and_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let letters = DeadLetters::new(dir.path(), "loki".into());
        let ledger =
            Ledger::new("loki".into(), Arc::new(crate::pipeline::Acknowledgements::new(1)), &SinkMetrics::default());
        let record = Record::new("boom".into(), jiff::Timestamp::UNIX_EPOCH, Arc::new(Vec::new()));
        let pending = ledger.admit(Arc::new(Batch { records: vec![record], ack: None })).expect("pending");
        letters.write(&[(Entry { pending, index: 0 }, "HTTP 400: out of order".into())]).expect("write");
        letters.write_loss(3, "partial success").expect("write");
        let text = std::fs::read_to_string(dir.path().join("dead-letter/loki.ndjson")).expect("read");
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        assert_eq!(lines[0]["reason"], "HTTP 400: out of order");
        assert_eq!(lines[0]["record"]["message"], "boom");
        assert_eq!(lines[1]["lost_records"], 3);
    }
}
