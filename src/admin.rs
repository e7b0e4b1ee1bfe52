//! The admin HTTP server on `admin.listen`: `/metrics` (Prometheus text format, or OpenMetrics
//! when the scraper asks for it), `/healthz` (the process is up), `/readyz` (inputs and sinks
//! started, not shutting down), `/config` (the effective config, secrets redacted) and `/tap`
//! (live records as JSON lines, for `pillion tap`; see [`crate::tap`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::net::{ServeOptions, serve};
use crate::proxy::conn::{Activity, ConnTimeouts};
use crate::tap::{Filter, Tap, TapBody, TapError};
use crate::telemetry::metrics::Metrics;

/// The admin server's connections get the inbound proxy's default header-read and idle limits.
const TIMEOUTS: ConnTimeouts =
    ConnTimeouts { header_read: std::time::Duration::from_secs(10), idle: std::time::Duration::from_secs(90) };
/// Scrapes in progress at shutdown get this long to finish.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin endpoints serve.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    /// Set once inputs and sinks have started; cleared when shutdown begins.
    pub ready: Arc<AtomicBool>,
    pub config_yaml: Arc<str>,
    /// Live record streams.
    pub tap: Arc<Tap>,
}

/// A response body: a whole one, or a tap's endless stream.
type AdminBody = Either<Full<Bytes>, TapStream>;

/// The bound admin server.
pub struct AdminServer {
    listener: TcpListener,
}

impl AdminServer {
    /// Binds `address` (port 0 picks a free port).
    pub async fn bind(address: SocketAddr) -> std::io::Result<AdminServer> {
        Ok(AdminServer { listener: TcpListener::bind(address).await? })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled.
    pub fn spawn(self, state: AdminState, shutdown: CancellationToken) -> JoinHandle<()> {
        let state = Arc::new(state);
        let options = ServeOptions { server: "admin", timeouts: TIMEOUTS, drain: DRAIN };
        tokio::spawn(serve(self.listener, shutdown, options, None, move |_client, activity: Arc<Activity>, _peer| {
            let state = Arc::clone(&state);
            service_fn(move |request| {
                activity.request_started();
                let response = respond(&state, &request, &activity);
                async move { Ok::<_, Infallible>(response) }
            })
        }))
    }
}

/// Answers a request. A tap's stream counts as a request in flight until it ends, so that the
/// connection's idle timeout does not cut it; every other answer is complete at once.
fn respond(state: &AdminState, request: &Request<Incoming>, activity: &Arc<Activity>) -> Response<AdminBody> {
    if request.uri().path() == "/tap" && request.method() == Method::GET {
        return tap(state, request).map(|body| match body {
            Either::Right(body) => Either::Right(TapStream { body, activity: Arc::clone(activity) }),
            Either::Left(full) => {
                activity.request_finished();
                Either::Left(full)
            }
        });
    }
    activity.request_finished();
    route(state, request).map(Either::Left)
}

/// A tap's body, holding its connection's request open until the stream ends.
struct TapStream {
    body: TapBody,
    activity: Arc<Activity>,
}

impl hyper::body::Body for TapStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }
}

impl Drop for TapStream {
    fn drop(&mut self) {
        self.activity.request_finished();
    }
}

/// `GET /tap?input=NAME&sink=NAME`: streams records as JSON lines until the client leaves.
fn tap(state: &AdminState, request: &Request<Incoming>) -> Response<Either<Full<Bytes>, TapBody>> {
    let mut filter = Filter::default();
    for (key, value) in url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "input" => filter.input = Some(value.into_owned()),
            "sink" => filter.sink = Some(value.into_owned()),
            _ => {
                return text(StatusCode::BAD_REQUEST, "unknown parameter; use input=NAME and/or sink=NAME\n")
                    .map(Either::Left);
            }
        }
    }
    match state.tap.subscribe(filter) {
        Ok(body) => {
            let mut response = Response::new(Either::Right(body));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
            response
        }
        Err(error) => {
            let status = match error {
                TapError::TooManyClients => StatusCode::SERVICE_UNAVAILABLE,
                TapError::UnknownInput { .. } | TapError::UnknownSink { .. } => StatusCode::NOT_FOUND,
            };
            with_type(status, format!("{error}\n"), "text/plain; charset=utf-8").map(Either::Left)
        }
    }
}

fn route(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match request.uri().path() {
        "/metrics" => metrics(state, request),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.ready.load(Ordering::Relaxed) => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/config" => with_type(StatusCode::OK, state.config_yaml.to_string(), "application/yaml; charset=utf-8"),
        _ => text(StatusCode::NOT_FOUND, "not found; try /metrics /healthz /readyz /config /tap\n"),
    }
}

fn metrics(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let wants_openmetrics = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let (encoded, content_type) = if wants_openmetrics {
        (state.metrics.encode_openmetrics(), OPENMETRICS_TEXT)
    } else {
        (state.metrics.encode_prometheus(), PROMETHEUS_TEXT)
    };
    match encoded {
        Ok(body) => with_type(StatusCode::OK, body, content_type),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "metrics encoding failed\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, body.to_owned(), "text/plain; charset=utf-8")
}

fn with_type(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
