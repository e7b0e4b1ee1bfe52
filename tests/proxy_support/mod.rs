//! Test peers for the proxy tests: an app (upstream) that records what it receives, and OTLP
//! trace receivers (gRPC with tonic's server, and HTTP/protobuf) that decode the real wire format.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::support::Pillion;

pub type Body = BoxBody<Bytes, Infallible>;

pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed()
}

/// The proxy's address, from the `proxy listening` log line.
pub fn log_address(pillion: &mut Pillion, message: &str) -> SocketAddr {
    let _ = pillion.admin_address();
    crate::support::eventually(Duration::from_secs(20), message, || {
        pillion.log_lines().iter().find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            (value["message"] == message).then(|| value["address"].as_str()?.parse().ok()).flatten()
        })
    })
}

/// What the app received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub version: http::Version,
    pub headers: HeaderMap,
}

/// The app behind the proxy.
#[derive(Clone)]
pub struct Upstream {
    pub address: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// `/flaky` answers 500 while this is false.
    pub healthy: Arc<AtomicBool>,
}

impl Upstream {
    pub fn start(rt: &Runtime) -> Upstream {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
        let upstream = Upstream {
            address: listener.local_addr().expect("addr"),
            seen: Arc::default(),
            healthy: Arc::new(AtomicBool::new(true)),
        };
        let app = upstream.clone();
        rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let app = app.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let app = app.clone();
                        async move { Ok::<_, Infallible>(app.handle(request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        upstream
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    async fn handle(&self, mut request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let seen = Seen { path: path.clone(), version: request.version(), headers: request.headers().clone() };
        self.seen.lock().expect("lock").push(seen);
        match path.as_str() {
            "/slow" => {
                let ms = request.uri().query().and_then(|q| q.strip_prefix("ms=")?.parse().ok()).unwrap_or(3000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Response::new(full("slow\n"))
            }
            "/flaky" if !self.healthy.load(Ordering::SeqCst) => {
                let mut response = Response::new(full("down\n"));
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
            "/upload" => {
                let mut total = 0u64;
                let body = request.body_mut();
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else { break };
                    total += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                Response::new(full(total.to_string()))
            }
            "/download" => {
                let size: u64 = request.uri().query().and_then(|q| q.strip_prefix("bytes=")?.parse().ok()).unwrap_or(0);
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let count = size / chunk.len() as u64;
                let frames = futures_stream(chunk, count);
                Response::new(StreamBody::new(frames).boxed())
            }
            "/ws" => {
                let upgrade = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    let Ok(upgraded) = upgrade.await else { return };
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut response = Response::new(full(Bytes::new()));
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                response.headers_mut().insert("connection", "upgrade".parse().expect("value"));
                response.headers_mut().insert("upgrade", "websocket".parse().expect("value"));
                response
            }
            _ => Response::new(full("ok\n")),
        }
    }
}

fn futures_stream(
    chunk: Bytes,
    count: u64,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static {
    futures_util::stream::iter((0..count).map(move |_| Ok(Frame::data(chunk.clone()))))
}

/// Attributes flattened to text.
pub type TextAttributes = Vec<(String, String)>;

/// Spans a receiver got, with their resource attributes.
#[derive(Clone, Default)]
pub struct Received {
    pub spans: Arc<Mutex<Vec<(TextAttributes, Span)>>>,
}

impl Received {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().expect("lock");
        for resource_spans in request.resource_spans {
            let resource: Vec<(String, String)> = resource_spans
                .resource
                .map(|r| r.attributes.iter().map(|kv| (kv.key.clone(), any_text(kv.value.as_ref()))).collect())
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push((resource.clone(), span));
                }
            }
        }
    }

    pub fn all(&self) -> Vec<(TextAttributes, Span)> {
        self.spans.lock().expect("lock").clone()
    }
}

pub fn any_text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// A span's attributes as text.
pub fn attributes(span: &Span) -> Vec<(String, String)> {
    span.attributes.iter().map(|kv| (kv.key.clone(), any_text(kv.value.as_ref()))).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// An OTLP/gRPC collector on 127.0.0.1.
pub fn grpc_receiver(rt: &Runtime) -> (SocketAddr, Received) {
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let address = listener.local_addr().expect("addr");
    let received = Received::default();
    let service = TraceServiceServer::new(GrpcReceiver(received.clone()));
    rt.spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await;
    });
    (address, received)
}

/// An OTLP/HTTP (protobuf) collector on 127.0.0.1; records the paths it was sent to.
pub fn http_receiver(rt: &Runtime) -> (SocketAddr, Received, Arc<Mutex<Vec<String>>>) {
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let address = listener.local_addr().expect("addr");
    let received = Received::default();
    let paths: Arc<Mutex<Vec<String>>> = Arc::default();
    let (spans, seen_paths) = (received.clone(), Arc::clone(&paths));
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (spans, seen_paths) = (spans.clone(), Arc::clone(&seen_paths));
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (spans, seen_paths) = (spans.clone(), Arc::clone(&seen_paths));
                    async move {
                        seen_paths.lock().expect("lock").push(request.uri().path().to_owned());
                        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        if let Ok(decoded) = ExportTraceServiceRequest::decode(body) {
                            spans.add(decoded);
                        }
                        let reply = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                        let mut response = Response::new(Full::new(Bytes::from(reply)));
                        response.headers_mut().insert("content-type", "application/x-protobuf".parse().expect("value"));
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (address, received, paths)
}

/// An HTTP/1.1 client to one address (pooled keep-alive).
pub fn client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn get(uri: String, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::get(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(full(Bytes::new())).expect("request")
}

/// Peak resident memory (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Current resident memory (VmRSS) of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
