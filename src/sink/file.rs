//! The `file` sink: appends NDJSON records to a file, acknowledging each batch once it is
//! written (it then survives a crash of pillion; it is fsynced on shutdown). A failed write
//! (disk full, say) is retried with backoff, never dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{SinkContext, SinkError};
use crate::backoff::Backoff;

/// The fields a file sink takes (and requires).
pub const FIELDS: &[&str] = &["path"];

/// A file sink, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The NDJSON file appended to.
    pub path: PathBuf,
}
use crate::pipeline::Batch;

/// The open output file.
pub(super) struct FileWriter {
    path: PathBuf,
    file: File,
}

impl FileWriter {
    /// Opens (creating it and its directory) `path` for appending.
    pub fn open(sink: &str, path: &Path) -> Result<FileWriter, SinkError> {
        let io_error = |source| SinkError::Io { sink: sink.to_owned(), target: path.display().to_string(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(io_error)?;
        Ok(FileWriter { path: path.to_owned(), file })
    }
}

pub(super) async fn run(
    context: SinkContext,
    writer: FileWriter,
    mut batches: mpsc::Receiver<Arc<Batch>>,
) -> Result<(), SinkError> {
    let mut writer = Some(writer);
    let mut buffer = Vec::with_capacity(64 * 1024);
    while let Some(batch) = batches.recv().await {
        let started = Instant::now();
        buffer.clear();
        for record in &batch.records {
            if let Err(error) = record.write_json_line(&mut buffer) {
                tracing::error!(sink = %context.name, %error, "cannot encode record");
            }
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // Bytes of `buffer` already in the file: a retry after a partial write resumes there,
        // so no byte is written twice. (A crash between the partial write and the retry still
        // leaves a partial line; the batch is then sent again after restart: at least once.)
        let mut written = 0;
        loop {
            let mut current = writer.take().ok_or_else(|| lost_writer(&context))?;
            let (returned, result) = tokio::task::spawn_blocking(move || {
                let result = write_from(&mut current.file, &buffer, &mut written).map(|()| written);
                (current, (result.map_err(|e| (e, written)), buffer))
            })
            .await
            .map_err(|_| lost_writer(&context))?;
            let (result, returned_buffer) = result;
            buffer = returned_buffer;
            let path = returned.path.display().to_string();
            writer = Some(returned);
            match result {
                Ok(_) => break,
                Err((error, done)) => {
                    written = done;
                    let wait = backoff.next(None);
                    tracing::warn!(sink = %context.name, %path, %error, retry_in = ?wait, "write failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        context.delivered(&batch, buffer.len(), started);
    }
    if let Some(writer) = writer {
        let sync = tokio::task::spawn_blocking(move || writer.file.sync_all()).await;
        if let Ok(Err(error)) = sync {
            tracing::warn!(sink = %context.name, %error, "fsync on shutdown failed");
        }
    }
    Ok(())
}

/// Writes `buffer[*written..]`, advancing `written` as bytes reach the file.
fn write_from(file: &mut impl Write, buffer: &[u8], written: &mut usize) -> std::io::Result<()> {
    while *written < buffer.len() {
        match file.write(&buffer[*written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn lost_writer(context: &SinkContext) -> SinkError {
    SinkError::Io {
        sink: context.name.to_string(),
        target: "file".into(),
        source: std::io::Error::other("the writer task panicked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `budget` bytes, then fails once (a full disk), then accepts everything.
    struct FlakyDisk {
        data: Vec<u8>,
        budget: usize,
        failed: bool,
    }

    impl Write for FlakyDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if !self.failed && self.budget == 0 {
                self.failed = true;
                return Err(std::io::Error::other("no space left on device"));
            }
            let n = if self.failed { buf.len() } else { buf.len().min(self.budget).min(3) };
            self.budget = self.budget.saturating_sub(n);
            self.data.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_retry_after_a_partial_write_resumes_where_it_stopped() {
        let buffer = b"{\"a\":1}\n{\"b\":2}\n".to_vec();
        let mut disk = FlakyDisk { data: Vec::new(), budget: 7, failed: false };
        let mut written = 0;
        assert!(write_from(&mut disk, &buffer, &mut written).is_err());
        assert_eq!(written, 7);
        write_from(&mut disk, &buffer, &mut written).expect("second attempt");
        assert_eq!(disk.data, buffer, "no byte written twice or skipped");
    }
}
