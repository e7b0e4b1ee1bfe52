//! The egress proxy: the app uses it as its HTTP proxy (`HTTP_PROXY`), sending absolute-form
//! requests (`GET http://svc/path`) and `CONNECT host:port` for TLS tunnels. Each call gets
//! client-side RED metrics per destination, a CLIENT span carrying the app's trace onward, a
//! timeout, retries (idempotent, replayable requests only) and a per-destination circuit
//! breaker. Named destinations (`destinations`, see `destination`) are balanced over their
//! endpoints, with mTLS when configured; a retry goes to another endpoint. The request path is
//! [`forward`], one commented step per layer.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use opentelemetry::trace::SpanKind;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ProxyError;
use super::body::ProxyBody;
use super::breaker::{Admission, Breakers};
use super::conn::{Activity, ConnTimeouts};
use super::destination::{Destination as Named, OutBody};
use super::discovery::Dns;
use super::finish::{Finish, InFlight, Outcome, Recorder, plain};
use super::headers;
use super::identity::Identity;
use super::metrics::{ClientLabels, ErrorType, MethodGauges, ProxyMetrics, method_label};
use super::route::OTHER;
pub use super::settings::OutboundSettings as Settings;
use super::span::{self, RequestInfo};
use crate::backoff::Backoff;
use crate::net::{ServeOptions, serve};
use crate::telemetry::traces::Tracing;

/// First retry waits up to this long; each further one up to twice as long, at most
/// `RETRY_BACKOFF_CAP`.
const RETRY_BACKOFF: Duration = Duration::from_millis(25);
const RETRY_BACKOFF_CAP: Duration = Duration::from_secs(1);
/// The app's connections to its egress proxy: the same header-read and idle limits as inbound.
const TIMEOUTS: ConnTimeouts = ConnTimeouts { header_read: Duration::from_secs(10), idle: Duration::from_secs(90) };
/// Series of the client duration family beyond the destinations' own bound.
const SERIES_HEADROOM: usize = 100;

/// What every outbound request shares.
pub struct Outbound {
    client: Client<HttpConnector, OutBody>,
    metrics: ProxyMetrics,
    /// `http_client_active_requests`, per method.
    active: MethodGauges,
    tracing: Option<Arc<Tracing>>,
    breakers: Breakers,
    destinations: Destinations,
    timeout: Duration,
    retries: u32,
    idempotent_only: bool,
    /// Named destinations.
    named: Vec<Arc<Named>>,
}

/// The destinations the app has called, at most `max_destinations` of them; later ones share the
/// `other` label and have no circuit breaker of their own.
struct Destinations {
    max: usize,
    known: RwLock<HashSet<Arc<str>>>,
}

/// A destination as labels and breakers know it.
#[derive(Clone)]
struct Destination {
    /// `host:port`, the circuit breaker's key; `None` past `max_destinations`.
    key: Option<Arc<str>>,
    /// `server_address`: the host without the port, or `other`.
    label: Arc<str>,
}

impl Destinations {
    fn new(max: usize) -> Destinations {
        Destinations { max, known: RwLock::new(HashSet::new()) }
    }

    fn get(&self, host: &str, port: u16) -> Destination {
        let key = format!("{host}:{port}");
        let known = {
            let known = self.known.read().unwrap_or_else(|e| e.into_inner());
            known.get(key.as_str()).cloned()
        };
        let key = known.or_else(|| {
            let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
            if let Some(key) = known.get(key.as_str()) {
                return Some(Arc::clone(key));
            }
            (known.len() < self.max).then(|| {
                let key: Arc<str> = Arc::from(key);
                known.insert(Arc::clone(&key));
                key
            })
        });
        match key {
            Some(key) => Destination { key: Some(key), label: Arc::from(host) },
            None => Destination { key: None, label: Arc::from(OTHER) },
        }
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
        let max_destinations = config.max_destinations;
        let mut dns: Option<Arc<Dns>> = None;
        let named = config
            .destinations
            .iter()
            .map(|destination| {
                let gauge = metrics.endpoints.clone();
                Named::new(destination, identity, &mut dns, dns_nameserver, config.timeout, gauge, shutdown)
                    .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        metrics.client_duration.set_cap(max_destinations + SERIES_HEADROOM);
        let outbound = Outbound {
            named,
            client,
            active: MethodGauges::new(&metrics.client_active),
            metrics,
            tracing,
            breakers,
            destinations: Destinations::new(max_destinations),
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
        let options = ServeOptions { server: "egress", timeouts: TIMEOUTS, drain };
        let outbound = self.outbound;
        tokio::spawn(serve(self.listener, shutdown, options, None, move |_client, activity: Arc<Activity>, _peer| {
            let outbound = Arc::clone(&outbound);
            service_fn(move |request| {
                let outbound = Arc::clone(&outbound);
                let activity = Arc::clone(&activity);
                async move { Ok::<_, Infallible>(handle(outbound, activity, request).await) }
            })
        }))
    }
}

async fn handle(outbound: Arc<Outbound>, activity: Arc<Activity>, request: Request<Incoming>) -> Response<ProxyBody> {
    if request.method() == Method::CONNECT {
        return tunnel(outbound, activity, request).await;
    }
    match request.uri().scheme_str() {
        Some("http") if request.uri().authority().is_some() => forward(outbound, activity, request).await,
        _ => plain(
            StatusCode::BAD_REQUEST,
            "this is an HTTP proxy: send absolute-form requests (http://host/path) or CONNECT host:port\n",
        ),
    }
}

/// One absolute-form request, layer by layer.
async fn forward(
    outbound: Arc<Outbound>,
    activity: Arc<Activity>,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let method = method_label(request.method());
    let host = request.uri().host().unwrap_or("unknown").trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = request.uri().port_u16().unwrap_or(80);
    let destination = outbound.destinations.get(&host, port);
    let named = outbound.named.iter().find(|d| d.host.eq_ignore_ascii_case(&host)).cloned();

    // RED: in flight until the response body is done. Circuit breaker: fail fast while the
    // destination is known to be down.
    let named_label = named.as_ref().map(|d| Arc::clone(&d.host));
    let mut finish = match admit(&outbound, activity, started, method, &destination, named_label) {
        Ok(finish) => finish,
        Err(rejected) => return *rejected,
    };

    // Trace: a CLIENT span, child of the app's context, whose context travels on.
    if let Some(tracing) = &outbound.tracing {
        let mut headers = std::mem::take(request.headers_mut());
        let info = RequestInfo {
            kind: SpanKind::Client,
            method: request.method(),
            method_label: method,
            path: request.uri().path(),
            route: None,
            server: Some((&host, Some(port))),
            client: None,
            version: request.version(),
            tls_client_subject: None,
        };
        finish.set_span(Some(span::start(tracing, &mut headers, &info)));
        *request.headers_mut() = headers;
    }

    // Headers: hop-by-hop and proxy credentials stay here.
    let protected = outbound.tracing.as_ref().map_or(&[][..], |tracing| &tracing.propagator_fields[..]);
    headers::strip_hop_by_hop(request.headers_mut(), None, protected);
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
    let mut backoff = Backoff::new(RETRY_BACKOFF, RETRY_BACKOFF_CAP);
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
        outbound.record(&destination, outcome.is_ok());
        match outcome {
            Err(_) if attempt < attempts && outbound.admit(&destination) != Admission::Rejected => {
                // Another endpoint is tried at once; the same one (or a plain host) after a pause.
                let elsewhere =
                    named.as_ref().is_some_and(|d| d.balancer.addresses().iter().any(|a| !tried.contains(a)));
                if !elsewhere {
                    tokio::time::sleep(backoff.next(None)).await;
                }
            }
            other => break other,
        }
    };

    match result {
        Ok(response) | Err((Some(response), _)) => {
            let mut response = response;
            headers::strip_hop_by_hop(response.headers_mut(), None, &[]);
            let completion = finish.responded(response.status());
            response.map(|body| ProxyBody::upstream(body).on_complete(completion))
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

type Attempt = Result<Response<Incoming>, (Option<Response<Incoming>>, ErrorType)>;

/// An attempt's result: a response, or why it failed (with the 5xx response, if there was one).
// The error side carries the 5xx response itself, moved once per attempt, never stored.
#[allow(clippy::result_large_err)]
fn classify(
    result: Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, tokio::time::error::Elapsed>,
) -> Attempt {
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
async fn tunnel(
    outbound: Arc<Outbound>,
    activity: Arc<Activity>,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let Some(authority) = request.uri().authority().cloned() else {
        return plain(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n");
    };
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let destination = outbound.destinations.get(host, authority.port_u16().unwrap_or(443));
    let finish = match admit(&outbound, activity, started, "CONNECT", &destination, None) {
        Ok(finish) => finish,
        Err(rejected) => return *rejected,
    };
    let connected = tokio::time::timeout(outbound.timeout, TcpStream::connect(authority.as_str())).await;
    let upstream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => {
            outbound.record(&destination, false);
            let text = "bad gateway: the destination is not reachable\n";
            return finish.failed(StatusCode::BAD_GATEWAY, ErrorType::Connect, text);
        }
        Err(_) => {
            outbound.record(&destination, false);
            let text = "gateway timeout: connecting took too long\n";
            return finish.failed(StatusCode::GATEWAY_TIMEOUT, ErrorType::Timeout, text);
        }
    };
    outbound.record(&destination, true);
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
    let completion = finish.responded(StatusCode::OK);
    Response::new(ProxyBody::empty().on_complete(completion))
}

impl Outbound {
    /// The circuit breaker's decision; destinations past `max_destinations` have none.
    fn admit(&self, destination: &Destination) -> Admission {
        match &destination.key {
            Some(key) => self.breakers.admit(key),
            None => Admission::Allowed,
        }
    }

    fn record(&self, destination: &Destination, success: bool) {
        if let Some(key) = &destination.key {
            self.breakers.record(key, success);
        }
    }
}

/// Counts the request in flight, then asks the destination's circuit breaker: `Err` is the fast
/// 503 to return while the circuit is open.
fn admit(
    outbound: &Arc<Outbound>,
    activity: Arc<Activity>,
    started: Instant,
    method: &'static str,
    destination: &Destination,
    named: Option<Arc<str>>,
) -> Result<Finish<ClientRecorder>, Box<Response<ProxyBody>>> {
    let in_flight = InFlight::new(outbound.active.get(method), Some(activity));
    let server_address = Arc::clone(&destination.label);
    let recorder = ClientRecorder { outbound: Arc::clone(outbound), method, server_address, named };
    let finish = Finish::new(recorder, started, in_flight, outbound.tracing.clone());
    if outbound.admit(destination) == Admission::Rejected {
        let text = "circuit open: the destination is failing\n";
        return Err(Box::new(finish.failed(StatusCode::SERVICE_UNAVAILABLE, ErrorType::CircuitOpen, text)));
    }
    Ok(finish)
}

/// What the egress proxy records about a finished request.
struct ClientRecorder {
    outbound: Arc<Outbound>,
    method: &'static str,
    server_address: Arc<str>,
    /// The named destination, for the `destination` label.
    named: Option<Arc<str>>,
}

impl Recorder for ClientRecorder {
    fn record(self, outcome: &Outcome) {
        let labels = ClientLabels {
            method: self.method,
            server_address: self.server_address,
            destination: self.named,
            status: outcome.status,
            error_type: outcome.error,
        };
        let seconds = outcome.duration.as_secs_f64();
        self.outbound.metrics.client_duration.observe(&labels, seconds, outcome.exemplar);
    }
}
