//! The `stdout` sink: one JSON record per line on standard output, acknowledged once written
//! and flushed. pillion's own logs go to stderr, so the two never mix.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{SinkContext, SinkError};
use crate::pipeline::Batch;

pub(super) async fn run(context: SinkContext, mut batches: mpsc::Receiver<Arc<Batch>>) -> Result<(), SinkError> {
    let mut out = tokio::io::stdout();
    let mut buffer = Vec::with_capacity(64 * 1024);
    let io_error = |source| SinkError::Io { sink: context.name.to_string(), target: "stdout".into(), source };
    while let Some(batch) = batches.recv().await {
        let started = Instant::now();
        buffer.clear();
        for record in &batch.records {
            record.write_json_line(&mut buffer).map_err(|e| io_error(e.into()))?;
        }
        out.write_all(&buffer).await.map_err(io_error)?;
        out.flush().await.map_err(io_error)?;
        context.delivered(&batch, buffer.len(), started);
        if buffer.capacity() > 4 * 1024 * 1024 {
            buffer = Vec::with_capacity(64 * 1024);
        }
    }
    Ok(())
}
