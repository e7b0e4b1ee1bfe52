//! A protocol-faithful test backend for the network sinks, on 127.0.0.1:0: it decodes the
//! real wire formats (Loki protobuf + snappy and JSON + gzip, Elasticsearch `_bulk` NDJSON +
//! gzip, OTLP logs over HTTP/protobuf and gRPC) and can be scripted to fail: statuses (500,
//! 429 with Retry-After), connection resets, stalls past the client's timeout, per-stream
//! 400s like Loki's, `errors: true` bulk responses with per-item statuses, and outages.
//! Only records the receiver acknowledged are kept, so a test can check "none lost, none
//! duplicated" exactly.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;

use super::eventually;

/// A scripted failure, applied to the next push request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and Retry-After seconds, when given); nothing is kept.
    Status(u16, Option<u64>),
    /// Close the connection without answering.
    Reset,
    /// Wait this long (past the client's timeout), then answer 503; nothing is kept.
    Stall(Duration),
    /// Keep the records, then wait this long before answering 200: the client times out and
    /// retries something the backend already has.
    AcceptThenStall(Duration),
    /// Elasticsearch: answer 200 with `errors: true`; item i gets status i of the list (items
    /// past its end succeed). Only the successful items are kept.
    BulkItems(Vec<u16>),
    /// OTLP: keep the records but report this many as rejected (partial success).
    OtlpPartial(i64),
}

/// One record the backend accepted.
#[derive(Debug, Clone)]
pub struct Line {
    /// Loki: the stream's labels; Elasticsearch: the index; OTLP: the resource's service.name.
    pub stream: String,
    pub message: String,
    /// Loki structured metadata; OTLP attributes (as text).
    pub metadata: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub timestamp_ns: i128,
    /// The whole document as decoded (ES source; OTLP severity and ids; Loki nothing).
    pub doc: serde_json::Value,
}

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    outage: Option<u16>,
    reject_stream: Option<String>,
    lines: Vec<Line>,
    push_requests: usize,
    headers: Vec<HeaderMap>,
    es_ids: HashSet<String>,
}

/// The running receiver; stops when dropped.
pub struct Receiver {
    pub address: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

type Body = BoxBody<Bytes, Infallible>;

impl Receiver {
    pub fn start() -> Receiver {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("receiver runtime");
            runtime.block_on(serve(listener, shared, stopped));
        });
        Receiver { address, state, stop: Some(stop) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("receiver state")
    }

    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Every push request gets `status` until this is called with `None`.
    pub fn set_outage(&self, status: Option<u16>) {
        self.lock().outage = status;
    }

    /// Loki: a request with a stream whose labels contain `needle` is refused with 400 (as
    /// Loki refuses a whole push for one stream's out-of-order or too-old entries).
    pub fn reject_streams_containing(&self, needle: &str) {
        self.lock().reject_stream = Some(needle.to_owned());
    }

    pub fn lines(&self) -> Vec<Line> {
        self.lock().lines.clone()
    }

    pub fn push_requests(&self) -> usize {
        self.lock().push_requests
    }

    /// Values of header `name` on the push requests seen.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let state = self.lock();
        state.headers.iter().filter_map(|h| h.get(name)?.to_str().ok().map(str::to_owned)).collect()
    }

    pub fn wait_for_lines(&self, count: usize, timeout: Duration) -> Vec<Line> {
        eventually(timeout, &format!("{count} lines at the receiver"), || {
            let lines = self.lines();
            (lines.len() >= count).then_some(lines)
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted { Ok(pair) => pair, Err(_) => continue },
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(Arc::clone(&state), request));
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}

fn respond(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response
}

/// Decoded records and how to answer when accepting them.
struct Decoded {
    lines: Vec<Line>,
    /// Loki: labels of each stream (for per-stream rejections).
    streams: Vec<String>,
    /// Elasticsearch: the `_id` of each item, if any.
    ids: Vec<Option<String>>,
}

async fn handle(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    let path = request.uri().path().to_owned();
    if request.method() == hyper::Method::GET {
        return Ok(respond(200, r#"{"version":{"number":"8.15.0"},"tagline":"You Know, for Search"}"#));
    }
    let headers = request.headers().clone();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let grpc = path.ends_with("LogsService/Export");
    let decoded = match decode(&path, &headers, &body) {
        Ok(decoded) => decoded,
        Err(error) => return Ok(respond(400, format!("receiver cannot decode: {error}"))),
    };
    let fault = {
        let mut state = state.lock().expect("state");
        state.push_requests += 1;
        state.headers.push(headers);
        match state.outage {
            Some(status) => Some(Fault::Status(status, None)),
            None => state.faults.pop_front(),
        }
    };
    let ok = |body: Bytes| if grpc { grpc_response(0, "", body) } else { respond(200, body) };
    match fault {
        Some(Fault::Status(status, retry_after)) => {
            if grpc {
                return Ok(grpc_response(if status == 429 { 8 } else { 14 }, "scripted failure", Bytes::new()));
            }
            let mut response = respond(status, format!("scripted failure {status}"));
            if let Some(seconds) = retry_after {
                response.headers_mut().insert("retry-after", seconds.into());
            }
            Ok(response)
        }
        Some(Fault::Reset) => Err(std::io::Error::other("scripted connection reset")),
        Some(Fault::Stall(wait)) => {
            tokio::time::sleep(wait).await;
            Ok(respond(503, "stalled"))
        }
        Some(Fault::AcceptThenStall(wait)) => {
            let answer = accept(&state, &path, decoded, &[]);
            tokio::time::sleep(wait).await;
            Ok(ok(answer))
        }
        Some(Fault::BulkItems(statuses)) => Ok(ok(accept(&state, &path, decoded, &statuses))),
        Some(Fault::OtlpPartial(rejected)) => {
            accept(&state, &path, decoded, &[]);
            let response = ExportLogsServiceResponse {
                partial_success: Some(opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: "scripted partial success".into(),
                }),
            };
            Ok(ok(Bytes::from(response.encode_to_vec())))
        }
        None => {
            let needle = state.lock().expect("state").reject_stream.clone();
            if let Some(stream) = needle.and_then(|n| decoded.streams.iter().find(|s| s.contains(&n)).cloned()) {
                let message = format!("entry for stream '{stream}' has timestamp too old");
                return Ok(respond(400, message));
            }
            Ok(ok(accept(&state, &path, decoded, &[])))
        }
    }
}

/// Keeps the accepted records; returns the response body (bulk item results for _bulk).
fn accept(state: &Mutex<State>, path: &str, decoded: Decoded, item_statuses: &[u16]) -> Bytes {
    let mut state = state.lock().expect("state");
    if !path.ends_with("/_bulk") {
        state.lines.extend(decoded.lines);
        return Bytes::new();
    }
    let mut items = Vec::new();
    let mut errors = false;
    for (index, (line, id)) in decoded.lines.into_iter().zip(decoded.ids).enumerate() {
        let mut status = item_statuses.get(index).copied().unwrap_or(201);
        if status < 300 {
            if let Some(id) = &id {
                if !state.es_ids.insert(id.clone()) {
                    status = 409;
                }
            }
        }
        if status < 300 {
            state.lines.push(line);
            items.push(serde_json::json!({"create": {"status": status, "result": "created"}}));
        } else {
            errors = true;
            let error = match status {
                409 => {
                    serde_json::json!({"type": "version_conflict_engine_exception", "reason": "document already exists"})
                }
                429 => serde_json::json!({"type": "es_rejected_execution_exception", "reason": "queue full"}),
                _ => serde_json::json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [n]"}),
            };
            items.push(serde_json::json!({"create": {"status": status, "error": error}}));
        }
    }
    Bytes::from(serde_json::to_vec(&serde_json::json!({"took": 1, "errors": errors, "items": items})).expect("json"))
}

fn gunzip_if(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, String> {
    if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body).read_to_end(&mut out).map_err(|e| format!("gzip: {e}"))?;
        Ok(out)
    } else {
        Ok(body.to_vec())
    }
}

fn decode(path: &str, headers: &HeaderMap, body: &[u8]) -> Result<Decoded, String> {
    if path.ends_with("/loki/api/v1/push") {
        let json =
            headers.get("content-type").is_some_and(|v| v.to_str().unwrap_or("").starts_with("application/json"));
        return if json { decode_loki_json(&gunzip_if(headers, body)?) } else { decode_loki_protobuf(body) };
    }
    if path.ends_with("/_bulk") {
        return decode_bulk(&gunzip_if(headers, body)?);
    }
    if path.ends_with("/v1/logs") {
        let raw = gunzip_if(headers, body)?;
        return decode_otlp(ExportLogsServiceRequest::decode(raw.as_slice()).map_err(|e| e.to_string())?);
    }
    if path.ends_with("LogsService/Export") {
        if body.len() < 5 || body[0] != 0 {
            return Err("bad gRPC frame".into());
        }
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        let message = body.get(5..5 + length).ok_or("short gRPC frame")?;
        return decode_otlp(ExportLogsServiceRequest::decode(message).map_err(|e| e.to_string())?);
    }
    Err(format!("unknown path {path}"))
}

fn decode_loki_protobuf(body: &[u8]) -> Result<Decoded, String> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).map_err(|e| format!("snappy: {e}"))?;
    let push = pillion::sink::loki::proto::PushRequest::decode(raw.as_slice()).map_err(|e| e.to_string())?;
    let mut decoded = Decoded { lines: Vec::new(), streams: Vec::new(), ids: Vec::new() };
    for stream in push.streams {
        let mut last = i128::MIN;
        for entry in stream.entries {
            let ts = entry.timestamp.map_or(0, |t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos));
            if ts < last {
                return Err(format!("entries out of order in stream {}", stream.labels));
            }
            last = ts;
            decoded.lines.push(Line {
                stream: stream.labels.clone(),
                message: entry.line,
                metadata: entry.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect(),
                timestamp_ns: ts,
                doc: serde_json::Value::Null,
            });
        }
        decoded.streams.push(stream.labels);
    }
    Ok(decoded)
}

fn decode_loki_json(body: &[u8]) -> Result<Decoded, String> {
    let push: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut decoded = Decoded { lines: Vec::new(), streams: Vec::new(), ids: Vec::new() };
    for stream in push["streams"].as_array().ok_or("no streams")? {
        let labels = stream["stream"].as_object().ok_or("no stream labels")?;
        let text =
            labels.iter().map(|(k, v)| format!("{k}=\"{}\"", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(", ");
        let text = format!("{{{text}}}");
        for value in stream["values"].as_array().ok_or("no values")? {
            let ts: i128 = value[0].as_str().ok_or("timestamp")?.parse().map_err(|_| "timestamp not a number")?;
            let metadata = value[2]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect())
                .unwrap_or_default();
            decoded.lines.push(Line {
                stream: text.clone(),
                message: value[1].as_str().ok_or("line")?.to_owned(),
                metadata,
                timestamp_ns: ts,
                doc: serde_json::Value::Null,
            });
        }
        decoded.streams.push(text);
    }
    Ok(decoded)
}

fn decode_bulk(body: &[u8]) -> Result<Decoded, String> {
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    let mut decoded = Decoded { lines: Vec::new(), streams: Vec::new(), ids: Vec::new() };
    while let Some(action) = lines.next() {
        let action: serde_json::Value = serde_json::from_str(action).map_err(|e| format!("action: {e}"))?;
        let (_, meta) = action.as_object().and_then(|o| o.iter().next()).ok_or("empty action")?;
        let doc: serde_json::Value =
            serde_json::from_str(lines.next().ok_or("action without document")?).map_err(|e| format!("doc: {e}"))?;
        let ts = doc["@timestamp"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()).ok_or("@timestamp")?;
        decoded.ids.push(meta["_id"].as_str().map(str::to_owned));
        decoded.lines.push(Line {
            stream: meta["_index"].as_str().unwrap_or("").to_owned(),
            message: doc["message"].as_str().unwrap_or("").to_owned(),
            metadata: BTreeMap::new(),
            timestamp_ns: ts.as_nanosecond(),
            doc,
        });
    }
    Ok(decoded)
}

fn decode_otlp(request: ExportLogsServiceRequest) -> Result<Decoded, String> {
    let mut decoded = Decoded { lines: Vec::new(), streams: Vec::new(), ids: Vec::new() };
    let text = |value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match value
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    };
    for resource_logs in request.resource_logs {
        let resource = resource_logs.resource.unwrap_or_default();
        let service = resource
            .attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for scope in resource_logs.scope_logs {
            for log in scope.log_records {
                let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
                decoded.lines.push(Line {
                    stream: service.clone(),
                    message: text(&log.body),
                    metadata: log.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect(),
                    timestamp_ns: i128::from(log.time_unix_nano),
                    doc: serde_json::json!({
                        "severity_number": log.severity_number,
                        "severity_text": log.severity_text,
                        "trace_id": hex(&log.trace_id),
                        "span_id": hex(&log.span_id),
                        "scope": scope.scope.as_ref().map(|s| s.name.clone()),
                    }),
                });
            }
        }
    }
    Ok(decoded)
}

/// A gRPC response: the message framed, then `grpc-status` in the trailers.
fn grpc_response(code: u8, message: &str, body: Bytes) -> Response<Body> {
    let mut framed = Vec::with_capacity(body.len() + 5);
    if code == 0 {
        framed.push(0);
        framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
        framed.extend_from_slice(&body);
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", code.to_string().parse().expect("header"));
    if !message.is_empty() {
        trailers.insert("grpc-message", message.parse().expect("header"));
    }
    let body = Full::new(Bytes::from(framed)).with_trailers(async move { Some(Ok(trailers)) }).boxed();
    let mut response = Response::new(body);
    response.headers_mut().insert("content-type", "application/grpc".parse().expect("header"));
    response
}
