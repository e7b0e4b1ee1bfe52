//! Live taps on the log pipeline: `GET /tap` on the admin server streams the records flowing
//! through pillion, as JSON lines, to `pillion tap` (or curl). A tap sees the records entering
//! the sinks (after transforms), optionally of one input only (`?input=NAME`), or the records a
//! given sink has delivered (`?sink=NAME`: written, or accepted by its backend).
//!
//! A tap never slows the pipeline: each client has a small bounded buffer of batches, filled
//! with `try_send` (the batches are shared, not copied); when it is full, because the client
//! reads slowly or not at all, the batch is dropped for that client and counted, both in
//! `pillion_tap_dropped_records_total` and in a notice line in the client's stream
//! (`{"pillion_tap":{"dropped":N}}`). Records are serialized in the client's connection task,
//! not on the pipeline's path; without clients, publishing costs one atomic load per batch.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use crate::pipeline::Batch;

/// Batches buffered per client before further batches are dropped for it (a batch holds at
/// most a few thousand records).
pub const CLIENT_BUFFER_BATCHES: usize = 4;
/// Tap clients at once; more are refused (503).
pub const MAX_CLIENTS: usize = 4;

/// `pillion_tap_clients` and `pillion_tap_dropped_records_total`.
#[derive(Clone, Default)]
pub struct TapMetrics {
    pub clients: Gauge,
    pub dropped: Counter,
}

impl TapMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("pillion_tap_clients", "Clients streaming records from /tap", self.clients.clone());
        registry.register(
            "pillion_tap_dropped_records",
            "Records not streamed to a tap client because its buffer was full (a slow client)",
            self.dropped.clone(),
        );
    }
}

/// What a client asked to see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only records read by this input.
    pub input: Option<String>,
    /// The records this sink delivered, instead of the records entering the sinks.
    pub sink: Option<String>,
}

/// Why a client was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TapError {
    #[error("unknown input {name:?}; inputs: {known}")]
    UnknownInput { name: String, known: String },
    #[error("unknown sink {name:?}; sinks: {known}")]
    UnknownSink { name: String, known: String },
    #[error("too many tap clients (at most {MAX_CLIENTS}); try again later")]
    TooManyClients,
}

/// Records of one batch sent to a client: all of them, or those at `indices`.
#[derive(Debug, Clone)]
struct Item {
    batch: Arc<Batch>,
    indices: Option<Arc<[u32]>>,
}

impl Item {
    fn len(&self) -> usize {
        self.indices.as_ref().map_or(self.batch.records.len(), |indices| indices.len())
    }
}

struct Client {
    /// `None`: the records entering the sinks; `Some`: what this sink delivered.
    sink: Option<Arc<str>>,
    sender: mpsc::Sender<Item>,
    dropped: Arc<AtomicU64>,
}

/// The tap hub: the pipeline publishes into it, the admin server subscribes clients.
pub struct Tap {
    inputs: Vec<Arc<str>>,
    sinks: Vec<Arc<str>>,
    clients: Mutex<Vec<Client>>,
    /// Clients whose stream is still open: the pipeline's fast path when it is 0.
    active: Arc<AtomicUsize>,
    metrics: TapMetrics,
}

impl Tap {
    /// A hub for a pipeline with these inputs and sinks (the names clients may filter on).
    pub fn new(inputs: Vec<Arc<str>>, sinks: Vec<Arc<str>>, metrics: TapMetrics) -> Arc<Tap> {
        Arc::new(Tap { inputs, sinks, clients: Mutex::new(Vec::new()), active: Arc::new(AtomicUsize::new(0)), metrics })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // Every update is one push or retain: a poisoned list is still consistent.
        self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a client; its stream is the returned body.
    pub fn subscribe(&self, filter: Filter) -> Result<TapBody, TapError> {
        let known = |names: &[Arc<str>]| names.iter().map(|n| n.as_ref()).collect::<Vec<_>>().join(", ");
        if let Some(name) = filter.input.as_ref().filter(|name| !self.inputs.iter().any(|i| i.as_ref() == *name)) {
            return Err(TapError::UnknownInput { name: name.clone(), known: known(&self.inputs) });
        }
        let sink = match &filter.sink {
            None => None,
            Some(name) => match self.sinks.iter().find(|s| s.as_ref() == name) {
                Some(sink) => Some(Arc::clone(sink)),
                None => return Err(TapError::UnknownSink { name: name.clone(), known: known(&self.sinks) }),
            },
        };
        let mut clients = self.lock();
        clients.retain(|client| !client.sender.is_closed());
        if clients.len() >= MAX_CLIENTS {
            return Err(TapError::TooManyClients);
        }
        let (sender, receiver) = mpsc::channel(CLIENT_BUFFER_BATCHES);
        let dropped = Arc::new(AtomicU64::new(0));
        clients.push(Client { sink, sender, dropped: Arc::clone(&dropped) });
        self.active.fetch_add(1, Ordering::Relaxed);
        self.metrics.clients.inc();
        Ok(TapBody {
            receiver,
            input: filter.input,
            dropped,
            reported: 0,
            active: Arc::clone(&self.active),
            gauge: self.metrics.clients.clone(),
        })
    }

    /// A batch entering the sinks.
    pub fn entering(&self, batch: &Arc<Batch>) {
        self.publish(None, || Item { batch: Arc::clone(batch), indices: None });
    }

    /// `sink` delivered the whole `batch`.
    pub fn delivered(&self, sink: &str, batch: &Arc<Batch>) {
        self.publish(Some(sink), || Item { batch: Arc::clone(batch), indices: None });
    }

    /// `sink` delivered the records at `indices` of `batch`.
    pub fn delivered_some(&self, sink: &str, batch: &Arc<Batch>, indices: impl FnOnce() -> Vec<u32>) {
        self.publish(Some(sink), || Item { batch: Arc::clone(batch), indices: Some(indices().into()) });
    }

    /// Whether any client is streaming (the rest is not worth computing otherwise).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    fn publish(&self, sink: Option<&str>, item: impl FnOnce() -> Item) {
        if !self.is_active() {
            return;
        }
        let mut clients = self.lock();
        let mut build = Some(item);
        let mut item: Option<Item> = None;
        clients.retain(|client| {
            if client.sink.as_deref() != sink {
                return !client.sender.is_closed();
            }
            let item = match (&item, build.take()) {
                (Some(item), _) => item.clone(),
                (None, Some(build)) => item.insert(build()).clone(),
                (None, None) => return true,
            };
            match client.sender.try_send(item) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(item)) => {
                    let records = item.len() as u64;
                    client.dropped.fetch_add(records, Ordering::Relaxed);
                    self.metrics.dropped.inc_by(records);
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    /// Ends every client's stream (shutdown): their bodies finish after what is buffered.
    pub fn close(&self) {
        self.lock().clear();
    }
}

/// One client's stream: JSON lines of records, and drop notices.
pub struct TapBody {
    receiver: mpsc::Receiver<Item>,
    input: Option<String>,
    dropped: Arc<AtomicU64>,
    reported: u64,
    active: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl TapBody {
    fn encode(&self, item: &Item) -> Vec<u8> {
        let mut out = Vec::new();
        let records = &item.batch.records;
        let mut write = |index: usize| {
            let Some(record) = records.get(index) else { return };
            let wanted = match &self.input {
                None => true,
                Some(input) => record.source.as_ref().is_some_and(|source| source.input.as_ref() == input),
            };
            if wanted && let Err(error) = record.write_json_line(&mut out) {
                tracing::debug!(%error, "tap: cannot encode a record");
            }
        };
        match &item.indices {
            None => (0..records.len()).for_each(&mut write),
            Some(indices) => indices.iter().for_each(|&i| write(i as usize)),
        }
        out
    }
}

impl Body for TapBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > self.reported {
                let notice = format!("{{\"pillion_tap\":{{\"dropped\":{}}}}}\n", dropped - self.reported);
                self.reported = dropped;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(notice)))));
            }
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(item)) => {
                    let lines = self.encode(&item);
                    if !lines.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(lines)))));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for TapBody {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// Why `pillion tap` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to pillion's admin server at {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("admin server at {address}: {source}")]
    Http { address: String, source: hyper::Error },
    #[error("admin server at {address} answered {status}: {message}")]
    Refused { address: String, status: u16, message: String },
    #[error("cannot write: {0}")]
    Write(std::io::Error),
}

/// Streams `/tap` from the admin server at `address` (host:port) into `out`, record lines as
/// they come; the server's notices (`{"pillion_tap":...}`) go to `notices` as text. Returns when
/// the server ends the stream (pillion shut down) or `out` is closed (a broken pipe).
pub async fn stream(
    address: &str,
    filter: &Filter,
    out: &mut (dyn std::io::Write + Send),
    notices: &mut (dyn std::io::Write + Send),
) -> Result<(), ClientError> {
    use http_body_util::{BodyExt, Empty};
    let connect = |source| ClientError::Connect { address: address.to_owned(), source };
    let http = |source| ClientError::Http { address: address.to_owned(), source };
    let tcp = tokio::net::TcpStream::connect(address).await.map_err(connect)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.map_err(http)?;
    let driver = tokio::spawn(connection);
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(input) = &filter.input {
        query.append_pair("input", input);
    }
    if let Some(sink) = &filter.sink {
        query.append_pair("sink", sink);
    }
    let request = hyper::Request::get(format!("/tap?{}", query.finish()))
        .header(hyper::header::HOST, address)
        .body(Empty::<Bytes>::new())
        .map_err(|error| ClientError::Refused { address: address.to_owned(), status: 0, message: error.to_string() })?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let message = body.collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned());
        driver.abort();
        return Err(ClientError::Refused {
            address: address.to_owned(),
            status: status.as_u16(),
            message: message.unwrap_or_default(),
        });
    }
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(http)?.into_data() else { continue };
        pending.extend_from_slice(&data);
        let Some(end) = memchr::memrchr(b'\n', &pending) else { continue };
        let complete: Vec<u8> = pending.drain(..=end).collect();
        let written = write_lines(&complete, out, notices);
        match written {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => break,
            other => other.map_err(ClientError::Write)?,
        }
    }
    driver.abort();
    Ok(())
}

/// Writes complete lines: records to `out` (flushed, so that a pipe sees them at once),
/// notices to `notices` in words.
fn write_lines(
    lines: &[u8],
    out: &mut (dyn std::io::Write + Send),
    notices: &mut (dyn std::io::Write + Send),
) -> std::io::Result<()> {
    for line in lines.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b"{\"pillion_tap\":") {
            let notice: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
            let dropped = notice["pillion_tap"]["dropped"].as_u64().unwrap_or(0);
            writeln!(notices, "pillion tap: {dropped} records skipped: this client read more slowly than they came")?;
        } else {
            out.write_all(line)?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Record, Resource, Source};
    use http_body_util::BodyExt;

    fn batch(input: &str, messages: &[&str]) -> Arc<Batch> {
        let records = messages
            .iter()
            .map(|message| {
                let mut record = Record::new((*message).to_owned(), jiff::Timestamp::now(), Resource::default());
                record.source = Some(Source { input: Arc::from(input), path: Arc::from("/x.log"), offset: 0 });
                record
            })
            .collect();
        Arc::new(Batch { records, ack: None })
    }

    fn tap() -> Arc<Tap> {
        Tap::new(vec!["app".into(), "audit".into()], vec!["out".into()], TapMetrics::default())
    }

    async fn next_text(body: &mut TapBody) -> String {
        let frame = body.frame().await.expect("a frame").expect("infallible");
        String::from_utf8(frame.into_data().expect("data").to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn streams_records_of_the_chosen_input_as_json_lines() {
        let tap = tap();
        let mut body = tap.subscribe(Filter { input: Some("audit".into()), sink: None }).expect("subscribe");
        tap.entering(&batch("app", &["a1"]));
        tap.entering(&batch("audit", &["b1", "b2"]));
        let text = next_text(&mut body).await;
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["message"], "b1");
        assert_eq!(lines[1]["source"]["input"], "audit");
    }

    #[tokio::test]
    async fn a_sink_tap_sees_only_what_that_sink_delivered() {
        let tap = tap();
        let mut body = tap.subscribe(Filter { input: None, sink: Some("out".into()) }).expect("subscribe");
        tap.entering(&batch("app", &["not delivered yet"]));
        tap.delivered_some("out", &batch("app", &["x", "y", "z"]), || vec![0, 2]);
        let text = next_text(&mut body).await;
        assert!(text.contains("\"x\"") && text.contains("\"z\"") && !text.contains("\"y\""), "{text}");
        assert!(!text.contains("not delivered"), "{text}");
    }

    #[tokio::test]
    async fn a_slow_client_loses_batches_counted_and_never_blocks_the_publisher() {
        let metrics = TapMetrics::default();
        let tap = Tap::new(vec!["app".into()], vec![], metrics.clone());
        let mut body = tap.subscribe(Filter::default()).expect("subscribe");
        // Nobody reads: publishing many batches returns at once, the buffer keeps the first ones.
        for _ in 0..100 {
            tap.entering(&batch("app", &["one", "two"]));
        }
        let dropped = (100 - CLIENT_BUFFER_BATCHES as u64) * 2;
        assert_eq!(metrics.dropped.get(), dropped);
        // The client is told how many records it missed before the buffered ones.
        assert_eq!(next_text(&mut body).await, format!("{{\"pillion_tap\":{{\"dropped\":{dropped}}}}}\n"));
        assert!(next_text(&mut body).await.contains("\"one\""));
    }

    #[test]
    fn unknown_names_and_too_many_clients_are_refused() {
        let tap = tap();
        let unknown = tap.subscribe(Filter { input: Some("nope".into()), sink: None }).err();
        assert_eq!(unknown, Some(TapError::UnknownInput { name: "nope".into(), known: "app, audit".into() }));
        assert!(matches!(
            tap.subscribe(Filter { input: None, sink: Some("nope".into()) }),
            Err(TapError::UnknownSink { .. })
        ));
        let bodies: Vec<TapBody> = (0..MAX_CLIENTS).map(|_| tap.subscribe(Filter::default()).expect("room")).collect();
        assert!(matches!(tap.subscribe(Filter::default()), Err(TapError::TooManyClients)));
        drop(bodies);
        assert!(!tap.is_active());
        assert!(tap.subscribe(Filter::default()).is_ok(), "closed clients make room");
    }

    #[test]
    fn notices_go_to_their_own_stream_in_words() {
        let mut out = Vec::new();
        let mut notices = Vec::new();
        let lines = b"{\"message\":\"a\"}\n{\"pillion_tap\":{\"dropped\":12}}\n{\"message\":\"b\"}\n";
        write_lines(lines, &mut out, &mut notices).expect("write");
        assert_eq!(out, b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n");
        assert!(String::from_utf8_lossy(&notices).contains("12 records skipped"));
    }

    #[tokio::test]
    async fn close_ends_every_stream() {
        let tap = tap();
        let mut body = tap.subscribe(Filter::default()).expect("subscribe");
        tap.close();
        assert!(body.frame().await.is_none());
    }
}
