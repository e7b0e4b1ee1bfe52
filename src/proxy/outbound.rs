//! The egress proxy: the app uses it as its HTTP proxy (`HTTP_PROXY`), sending absolute-form
//! requests (`GET http://svc/path`) and `CONNECT host:port` for TLS tunnels. Each call gets
//! client-side RED metrics per destination, a CLIENT span carrying the app's trace onward, a
//! timeout, retries (idempotent, replayable requests only) and a per-destination circuit
//! breaker. Named destinations (`destinations`, see `destination`) are balanced over their
//! endpoints, with mTLS when configured; a retry goes to another endpoint. The request path is
//! [`forward`], one commented step per layer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use opentelemetry::trace::SpanKind;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ProxyError;
use super::body::{Completion, ProxyBody};
use super::breaker::{Admission, Breakers};
use super::destination::{Destination, OutBody};
use super::discovery::Dns;
use super::headers;
use super::identity::Identity;
use super::metrics::{ClientLabels, ErrorType, MethodLabel, ProxyMetrics, TraceExemplar, method_label};
pub use super::settings::OutboundSettings as Settings;
use super::span::{self, RequestInfo, RequestSpan};
use crate::telemetry::traces::Tracing;

/// First retry waits this long; each further one twice as long.
const RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// What every outbound request shares.
pub struct Outbound {
    client: Client<HttpConnector, OutBody>,
    metrics: ProxyMetrics,
    tracing: Option<Arc<Tracing>>,
    breakers: Breakers,
    timeout: Duration,
    retries: u32,
    idempotent_only: bool,
    /// Named destinations.
    destinations: Vec<Arc<Destination>>,
}

impl Outbound {
    /// The named destination the app called, if `host` is one.
    fn named(&self, host: &str) -> Option<&Arc<Destination>> {
        self.destinations.iter().find(|d| d.host.eq_ignore_ascii_case(host))
    }
}

/// The bound egress listener.
pub struct OutboundServer {
    listener: TcpListener,
    outbound: Arc<Outbound>,
}

impl OutboundServer {
    pub async fn bind(
        config: &Settings,
        metrics: ProxyMetrics,
        tracing: Option<Arc<Tracing>>,
        identity: Option<&Arc<Identity>>,
        dns_nameserver: Option<SocketAddr>,
        shutdown: &CancellationToken,
    ) -> Result<OutboundServer, ProxyError> {
        let listen = config.listen;
        let listener =
            TcpListener::bind(listen).await.map_err(|source| ProxyError::Bind { address: listen, source })?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector);
        let breakers = Breakers::new(config.breaker_failures, config.breaker_open_for, metrics.breaker_state.clone());
        let mut dns: Option<Arc<Dns>> = None;
        let destinations = config
            .destinations
            .iter()
            .map(|destination| {
                let gauge = metrics.endpoints.clone();
                let timeout = config.timeout;
                Destination::new(destination, identity, &mut dns, dns_nameserver, timeout, gauge, shutdown)
                    .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outbound = Outbound {
            destinations,
            client,
            metrics,
            tracing,
            breakers,
            timeout: config.timeout,
            retries: config.retries,
            idempotent_only: config.idempotent_only,
        };
        Ok(OutboundServer { listener, outbound: Arc::new(outbound) })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then drains for at most `drain`.
    pub fn spawn(self, shutdown: CancellationToken, drain: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let graceful = GracefulShutdown::new();
            while let Some((stream, _)) = crate::net::accept(&self.listener, &shutdown, "egress").await {
                let _ = stream.set_nodelay(true);
                let outbound = Arc::clone(&self.outbound);
                let service = service_fn(move |request| {
                    let outbound = Arc::clone(&outbound);
                    async move { Ok::<_, Infallible>(handle(outbound, request).await) }
                });
                let connection =
                    graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned());
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "egress connection ended with an error");
                    }
                });
            }
            drop(self.listener);
            let _ = tokio::time::timeout(drain, graceful.shutdown()).await;
        })
    }
}

async fn handle(outbound: Arc<Outbound>, request: Request<Incoming>) -> Response<ProxyBody> {
    if request.method() == Method::CONNECT {
        return tunnel(outbound, request).await;
    }
    match request.uri().scheme_str() {
        Some("http") if request.uri().authority().is_some() => forward(outbound, request).await,
        _ => plain(
            StatusCode::BAD_REQUEST,
            "this is an HTTP proxy: send absolute-form requests (http://host/path) or CONNECT host:port\n",
        ),
    }
}

/// One absolute-form request, layer by layer.
async fn forward(outbound: Arc<Outbound>, mut request: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = method_label(request.method());
    let destination = destination(request.uri());
    let named = request.uri().host().and_then(|host| outbound.named(host)).cloned();

    // RED: in flight until the response body is done. Circuit breaker: fail fast while the
    // destination is known to be down.
    let finish = match ClientFinish::admit(&outbound, started, method, &destination) {
        Ok(finish) => ClientFinish { named: named.as_ref().map(|d| Arc::clone(&d.host)), ..finish },
        Err(rejected) => return *rejected,
    };

    // Trace: a CLIENT span, child of the app's context, whose context travels on.
    let span = outbound.tracing.as_ref().map(|tracing| {
        let mut headers = std::mem::take(request.headers_mut());
        let (host, port) = span::split_host_port(&destination);
        let info = RequestInfo {
            kind: SpanKind::Client,
            method: request.method(),
            method_label: method,
            path: request.uri().path(),
            route: None,
            server: Some((host, port)),
            client: None,
            version: request.version(),
            tls_client_subject: None,
        };
        let span = span::start(tracing, &mut headers, &info);
        *request.headers_mut() = headers;
        span
    });
    let finish = ClientFinish { span, ..finish };

    // Headers: hop-by-hop and proxy credentials stay here.
    headers::strip_hop_by_hop(request.headers_mut(), None);
    request.headers_mut().remove(http::header::PROXY_AUTHORIZATION);
    *request.version_mut() = Version::HTTP_11;

    // Retries: only for requests that can be sent again (no body) and may be (idempotent).
    let replayable = request.body().is_end_stream();
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    let attempts = if replayable && (idempotent || !outbound.idempotent_only) { outbound.retries + 1 } else { 1 };
    let (parts, body) = request.into_parts();
    let mut body = Some(body.boxed_unsync());

    // Send with the timeout per attempt; the breaker learns every outcome. A named
    // destination's balancer picks an endpoint per attempt, another one for each retry.
    let mut attempt = 0;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let result = loop {
        attempt += 1;
        let body = body.take().unwrap_or_else(|| Empty::new().map_err(|never| match never {}).boxed_unsync());
        let mut attempt_request = Request::from_parts(parts.clone(), body);
        let outcome = match &named {
            None => classify(tokio::time::timeout(outbound.timeout, outbound.client.request(attempt_request)).await),
            Some(named) => match named.balancer.pick(&tried) {
                None => Err((None, ErrorType::Connect)),
                Some(pick) => {
                    tried.push(pick.endpoint.address);
                    *attempt_request.uri_mut() = endpoint_uri(pick.endpoint.address, &parts.uri);
                    let sent = named.client.request(attempt_request);
                    let outcome = classify(tokio::time::timeout(outbound.timeout, sent).await);
                    named.balancer.report(pick, outcome.is_ok());
                    outcome
                }
            },
        };
        outbound.breakers.record(&destination, outcome.is_ok());
        match outcome {
            Err(_) if attempt < attempts && outbound.breakers.admit(&destination) != Admission::Rejected => {
                // Another endpoint is tried at once; the same one (or a plain host) after a pause.
                let elsewhere =
                    named.as_ref().is_some_and(|d| d.balancer.addresses().iter().any(|a| !tried.contains(a)));
                if !elsewhere {
                    tokio::time::sleep(RETRY_BACKOFF * 2u32.pow(attempt - 1)).await;
                }
            }
            other => break other,
        }
    };

    match result {
        Ok(response) | Err((Some(response), _)) => {
            let mut response = response;
            headers::strip_hop_by_hop(response.headers_mut(), None);
            let status = response.status().as_u16();
            response.map(|body| ProxyBody::upstream(body).on_complete(Box::new(finish.with_status(status))))
        }
        Err((None, ErrorType::Timeout)) => finish.failed(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorType::Timeout,
            "gateway timeout: the destination did not answer in time\n",
        ),
        Err((None, error)) => {
            finish.failed(StatusCode::BAD_GATEWAY, error, "bad gateway: the destination is not reachable\n")
        }
    }
}

type Outcome = Result<Response<Incoming>, (Option<Response<Incoming>>, ErrorType)>;

/// An attempt's result: a response, or why it failed (with the 5xx response, if there was one).
// The error side carries the 5xx response itself, moved once per attempt, never stored.
#[allow(clippy::result_large_err)]
fn classify(
    result: Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, tokio::time::error::Elapsed>,
) -> Outcome {
    match result {
        Ok(Ok(response)) if response.status().is_server_error() => {
            let status = response.status().as_u16();
            Err((Some(response), ErrorType::Status(status)))
        }
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) if error.is_connect() => Err((None, ErrorType::Connect)),
        Ok(Err(_)) => Err((None, ErrorType::Upstream)),
        Err(_) => Err((None, ErrorType::Timeout)),
    }
}

/// The app's request URI pointed at one endpoint (the `Host` header keeps the name it called).
fn endpoint_uri(endpoint: SocketAddr, uri: &http::Uri) -> http::Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("http://{endpoint}{path}").parse().unwrap_or_else(|_| uri.clone())
}

/// `CONNECT host:port`: answer 200, then copy bytes both ways (TLS stays end to end).
async fn tunnel(outbound: Arc<Outbound>, mut request: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let Some(authority) = request.uri().authority().map(|a| a.as_str().to_owned()) else {
        return plain(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n");
    };
    let destination: Arc<str> = Arc::from(authority.as_str());
    let finish = match ClientFinish::admit(&outbound, started, "CONNECT", &destination) {
        Ok(finish) => finish,
        Err(rejected) => return *rejected,
    };
    let connected = tokio::time::timeout(outbound.timeout, TcpStream::connect(authority.as_str())).await;
    let upstream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => {
            outbound.breakers.record(&destination, false);
            return finish.failed(
                StatusCode::BAD_GATEWAY,
                ErrorType::Connect,
                "bad gateway: the destination is not reachable\n",
            );
        }
        Err(_) => {
            outbound.breakers.record(&destination, false);
            return finish.failed(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorType::Timeout,
                "gateway timeout: connecting took too long\n",
            );
        }
    };
    outbound.breakers.record(&destination, true);
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    });
    Response::new(ProxyBody::empty().on_complete(Box::new(finish.with_status(200))))
}

/// `host:port` of an absolute-form URI (port 80 when absent).
fn destination(uri: &http::Uri) -> Arc<str> {
    let host = uri.host().unwrap_or("unknown");
    let port = uri.port_u16().unwrap_or(80);
    Arc::from(format!("{host}:{port}"))
}

fn plain(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::text(text));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

struct ClientFinish {
    in_flight: ClientInFlight,
    outbound: Arc<Outbound>,
    started: Instant,
    method: &'static str,
    destination: Arc<str>,
    /// The named destination, for the `destination` label.
    named: Option<Arc<str>>,
    span: Option<RequestSpan>,
}

impl ClientFinish {
    /// Counts the request in flight, then asks the destination's circuit breaker: `Err` is the
    /// fast 503 to return while the circuit is open.
    fn admit(
        outbound: &Arc<Outbound>,
        started: Instant,
        method: &'static str,
        destination: &Arc<str>,
    ) -> Result<ClientFinish, Box<Response<ProxyBody>>> {
        let finish = ClientFinish {
            in_flight: ClientInFlight::new(&outbound.metrics, method),
            outbound: Arc::clone(outbound),
            started,
            method,
            destination: Arc::clone(destination),
            named: None,
            span: None,
        };
        if outbound.breakers.admit(destination) == Admission::Rejected {
            let text = "circuit open: the destination is failing\n";
            return Err(Box::new(finish.failed(StatusCode::SERVICE_UNAVAILABLE, ErrorType::CircuitOpen, text)));
        }
        Ok(finish)
    }

    fn with_status(self, status: u16) -> ClientFinished {
        ClientFinished { finish: self, status, error: ErrorType::of_status(status) }
    }

    fn failed(self, status: StatusCode, error: ErrorType, text: &'static str) -> Response<ProxyBody> {
        let finished = ClientFinished { finish: self, status: status.as_u16(), error: Some(error) };
        plain(status, text).map(|body| body.on_complete(Box::new(finished)))
    }
}

struct ClientFinished {
    finish: ClientFinish,
    status: u16,
    error: Option<ErrorType>,
}

impl Completion for ClientFinished {
    fn complete(self: Box<Self>, _body_bytes: u64) {
        let ClientFinished { finish, status, error } = *self;
        let metrics = &finish.outbound.metrics;
        let labels = ClientLabels {
            method: finish.method,
            server_address: finish.destination,
            destination: finish.named,
            status,
            error_type: error,
        };
        let exemplar =
            finish.span.as_ref().and_then(RequestSpan::trace_id_hex).map(|trace_id| TraceExemplar { trace_id });
        metrics.client_duration.get_or_create(&labels).observe(finish.started.elapsed().as_secs_f64(), exemplar, None);
        if let (Some(span), Some(tracing)) = (finish.span, &finish.outbound.tracing) {
            span.finish(tracing, status, error);
        }
        drop(finish.in_flight);
    }
}

/// Counts an outbound request in `http_client_active_requests` until dropped.
struct ClientInFlight {
    active: Family<MethodLabel, Gauge>,
    method: &'static str,
}

impl ClientInFlight {
    fn new(metrics: &ProxyMetrics, method: &'static str) -> ClientInFlight {
        metrics.client_active.get_or_create(&MethodLabel { method }).inc();
        ClientInFlight { active: metrics.client_active.clone(), method }
    }
}

impl Drop for ClientInFlight {
    fn drop(&mut self) {
        self.active.get_or_create(&MethodLabel { method: self.method }).dec();
    }
}
