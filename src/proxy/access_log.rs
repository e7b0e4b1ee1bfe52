//! Access-log records: with `proxy.inbound.access_log: true`, every request becomes a
//! [`Record`] in the log pipeline (method, route, status, duration, bytes, client, trace and
//! span ids), so logs, metrics and traces join on trace_id. Records are queued without waiting;
//! when the pipeline is full they are dropped and counted rather than slowing the proxy.

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Batch;
use crate::record::{Level, Record, Resource, SpanId, TraceId, Value};

/// Access-log records waiting to be batched.
const QUEUE: usize = 4096;
/// Records per batch sent into the pipeline.
const BATCH: usize = 256;

/// One finished request.
pub struct AccessEntry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub duration: Duration,
    pub body_bytes: u64,
    pub client: SocketAddr,
    pub ids: Option<(TraceId, SpanId)>,
}

/// The writing end, shared by every connection.
#[derive(Clone)]
pub struct AccessLog {
    sender: mpsc::Sender<Record>,
    resource: Resource,
    dropped: Counter,
}

impl AccessLog {
    /// Starts the task that batches records into `output` until `stop` (then drains and ends).
    pub fn spawn(
        output: mpsc::Sender<Batch>,
        resource: Resource,
        dropped: Counter,
        stop: CancellationToken,
    ) -> (AccessLog, JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let task = tokio::spawn(forward(receiver, output, stop));
        (AccessLog { sender, resource, dropped }, task)
    }

    /// Queues the record of `entry`; never waits.
    pub fn write(&self, entry: &AccessEntry) {
        if self.sender.try_send(record(entry, &self.resource)).is_err() {
            self.dropped.inc();
        }
    }
}

fn record(entry: &AccessEntry, resource: &Resource) -> Record {
    let message = format!("{} {} {}", entry.method, entry.path, entry.status);
    let mut record = Record::new(message, jiff::Timestamp::now(), Resource::clone(resource));
    record.level = Some(match entry.status {
        500.. => Level::Error,
        400..=499 => Level::Warn,
        _ => Level::Info,
    });
    if let Some((trace_id, span_id)) = entry.ids {
        record.trace_id = Some(trace_id);
        record.span_id = Some(span_id);
    }
    let attributes = &mut record.attributes;
    attributes.insert("http.request.method", Value::from(entry.method));
    attributes.insert("http.route", Value::from(entry.route));
    attributes.insert("url.path", Value::from(entry.path));
    attributes.insert("http.response.status_code", Value::from(entry.status));
    attributes.insert("http.server.request.duration", Value::from(entry.duration.as_secs_f64()));
    attributes.insert("http.response.body.size", Value::from(entry.body_bytes));
    attributes.insert("client.address", Value::from(entry.client.ip().to_string()));
    record
}

async fn forward(mut receiver: mpsc::Receiver<Record>, output: mpsc::Sender<Batch>, stop: CancellationToken) {
    let mut records = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => break,
            received = receiver.recv_many(&mut records, BATCH) => received,
        };
        if received == 0 {
            return;
        }
        let batch = Batch { records: std::mem::replace(&mut records, Vec::with_capacity(BATCH)), ack: None };
        if output.send(batch).await.is_err() {
            return;
        }
    }
    receiver.close();
    while let Ok(record) = receiver.try_recv() {
        records.push(record);
    }
    if !records.is_empty() {
        let _ = output.send(Batch { records, ack: None }).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn entries_arrive_as_records_with_trace_ids() {
        let (output, mut batches) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let (log, task) = AccessLog::spawn(output, Arc::new(vec![]), Counter::default(), stop.clone());
        let trace_id = TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e4736");
        let span_id = SpanId::parse_hex("00f067aa0ba902b7");
        log.write(&AccessEntry {
            method: "GET",
            path: "/users/42",
            route: "/users/{id}",
            status: 200,
            duration: Duration::from_millis(3),
            body_bytes: 12,
            client: "127.0.0.1:5000".parse().expect("addr"),
            ids: trace_id.zip(span_id),
        });
        let batch = batches.recv().await.expect("batch");
        assert!(batch.ack.is_none());
        let record = &batch.records[0];
        assert_eq!(record.message, "GET /users/42 200");
        assert_eq!(record.trace_id, trace_id);
        assert_eq!(record.attributes["http.route"], "/users/{id}");
        stop.cancel();
        task.await.expect("task");
    }
}
