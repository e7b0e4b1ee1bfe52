//! The inbound reverse proxy: clients (HTTP/1.1, or HTTP/2 with prior knowledge, on one port)
//! reach the app through it, and every request is counted, timed and traced on the way. The
//! request path is [`proxy`]: one function, one commented step per layer. With `mtls` the
//! listener terminates TLS first ([`handshake`]): the peer's verified identity is checked against
//! `allow_identities` and handed to the app in `x-forwarded-client-cert`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HOST, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use opentelemetry::trace::SpanKind;
use prometheus_client::metrics::gauge::Gauge;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::access_log::{AccessEntry, AccessLog};
use super::body::{Completion, ProxyBody};
use super::conn::{self, Activity};
use super::headers;
use super::identity::{Identity, identity_matches, peer_identity};
use super::metrics::{ErrorType, MethodGauges, ProxyMetrics, ServerLabels, TraceExemplar, method_label};
use super::route::Routes;
pub use super::settings::InboundSettings as Settings;
use super::settings::MtlsMode;
use super::span::{self, RequestInfo, RequestSpan};
use super::upstream::{Affinity, ForwardError, Lease, Upstream};
use super::{ProxyError, upgrade};
use crate::telemetry::traces::Tracing;

/// The largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Idle keep-alive connections kept to the app.
const POOL_IDLE_PER_HOST: usize = 256;

/// What every inbound request shares.
pub struct Inbound {
    upstream: Arc<Upstream>,
    routes: Routes,
    metrics: ProxyMetrics,
    /// `http_server_active_requests`, per method.
    active: MethodGauges,
    tracing: Option<Arc<Tracing>>,
    access_log: Option<AccessLog>,
    request_timeout: Duration,
    /// With `mtls` on: who we are and whom we let in.
    mesh: Option<InboundMesh>,
}

/// The inbound side of the mesh.
struct InboundMesh {
    identity: Arc<Identity>,
    /// `allow_identities`; empty allows every peer.
    allow: Vec<String>,
}

impl InboundMesh {
    fn allows(&self, peer: Option<&str>) -> bool {
        if self.allow.is_empty() {
            return true;
        }
        peer.is_some_and(|peer| self.allow.iter().any(|pattern| identity_matches(pattern, peer)))
    }
}

/// What the connection's TLS handshake established.
#[derive(Debug, Default)]
pub struct Peer {
    pub tls: bool,
    /// The client certificate's identity (URI SAN, else first DNS SAN), when one was verified.
    pub identity: Option<Arc<str>>,
}

/// TLS termination for an `mtls` listener.
#[derive(Clone)]
struct TlsTermination {
    config: Arc<ServerConfig>,
    /// Plain connections are served too.
    permissive: bool,
    identity: Arc<Identity>,
}

/// `x-forwarded-client-cert`, Envoy's header for the client certificate's identity.
const XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");

/// The bound inbound listener, ready to serve.
pub struct InboundServer {
    listener: TcpListener,
    inbound: Arc<Inbound>,
    header_read: Duration,
    idle: Duration,
    tls: Option<TlsTermination>,
}

impl InboundServer {
    /// Binds `config.listen` and prepares the connections to `config.upstream`.
    pub async fn bind(
        config: &Settings,
        metrics: ProxyMetrics,
        tracing: Option<Arc<Tracing>>,
        access_log: Option<AccessLog>,
        identity: Option<&Arc<Identity>>,
    ) -> Result<InboundServer, ProxyError> {
        let listen = config.listen;
        let listener =
            TcpListener::bind(listen).await.map_err(|source| ProxyError::Bind { address: listen, source })?;
        let timeouts = &config.timeouts;
        let upstream = Upstream::new(config.upstream.clone(), timeouts.request, timeouts.idle, POOL_IDLE_PER_HOST);
        let tls = match (config.mtls, identity) {
            (MtlsMode::Off, _) => None,
            (_, None) => return Err(ProxyError::NoIdentity),
            (mode, Some(identity)) => Some(TlsTermination {
                config: identity.server_config(mode == MtlsMode::Required)?,
                permissive: mode == MtlsMode::Permissive,
                identity: Arc::clone(identity),
            }),
        };
        let mesh = tls
            .as_ref()
            .map(|tls| InboundMesh { identity: Arc::clone(&tls.identity), allow: config.allow_identities.clone() });
        let inbound = Inbound {
            upstream: Arc::new(upstream),
            routes: Routes::new(&config.routes, config.max_routes),
            active: MethodGauges::new(&metrics.server_active),
            metrics,
            tracing,
            access_log,
            request_timeout: timeouts.request,
            mesh,
        };
        Ok(InboundServer {
            listener,
            inbound: Arc::new(inbound),
            header_read: timeouts.header_read,
            idle: timeouts.idle,
            tls,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then stops accepting and lets in-flight requests finish
    /// (for at most `drain`).
    pub fn spawn(self, shutdown: CancellationToken, drain: Duration) -> JoinHandle<()> {
        tokio::spawn(self.serve(shutdown, drain))
    }

    async fn serve(self, shutdown: CancellationToken, drain: Duration) {
        let builder = Arc::new(server_builder(self.header_read));
        let graceful = GracefulShutdown::new();
        let expiry = tokio::spawn(expire_idle(Arc::clone(&self.inbound.upstream)));
        while let Some((stream, client)) = crate::net::accept(&self.listener, &shutdown, "proxy").await {
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                inbound: Arc::clone(&self.inbound),
                client,
                builder: Arc::clone(&builder),
                watcher: graceful.watcher(),
                idle: self.idle,
            };
            match &self.tls {
                None => {
                    tokio::spawn(connection.serve(stream, None));
                }
                Some(tls) => {
                    let tls = tls.clone();
                    let header_read = self.header_read;
                    tokio::spawn(async move {
                        match handshake(stream, &tls, header_read, client).await {
                            Some(Accepted::Plain(stream)) => connection.serve(stream, Some(Arc::default())).await,
                            Some(Accepted::Tls(stream, peer)) => connection.serve(stream, Some(peer)).await,
                            None => {}
                        }
                    });
                }
            }
        }
        drop(self.listener);
        expiry.abort();
        tracing::info!("proxy stopped accepting; draining in-flight requests");
        if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
            tracing::warn!("proxy drain timed out; closing the remaining connections");
        }
    }
}

/// One accepted client connection, ready to be served.
struct Connection {
    inbound: Arc<Inbound>,
    client: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    idle: Duration,
}

impl Connection {
    /// Serves HTTP on `io` (plain, or TLS already terminated) until it closes or idles out.
    async fn serve<I>(self, io: I, peer: Option<Arc<Peer>>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection { inbound, client, builder, watcher, idle } = self;
        let activity = Activity::new();
        let per_request = Arc::clone(&activity);
        let affinity = Affinity::new(&inbound.upstream);
        let service = service_fn(move |request| {
            let inbound = Arc::clone(&inbound);
            let activity = Arc::clone(&per_request);
            let affinity = Arc::clone(&affinity);
            let peer = peer.clone();
            async move { Ok::<_, Infallible>(proxy(inbound, client, peer, activity, affinity, request).await) }
        });
        let connection = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned());
        tokio::select! {
            served = connection => if let Err(error) = served {
                tracing::debug!(%error, %client, "proxy connection ended with an error");
            },
            _ = conn::idle(&activity, idle) => tracing::debug!(%client, "idle proxy connection closed"),
        }
    }
}

/// A connection to an `mtls` listener after its first bytes.
enum Accepted {
    /// Not TLS, on a permissive listener.
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, Arc<Peer>),
}

/// Terminates TLS within `header_read`: `None` when the connection is refused (not TLS on a
/// `required` listener, no or an unverified client certificate, or too slow).
async fn handshake(
    stream: TcpStream,
    tls: &TlsTermination,
    header_read: Duration,
    client: SocketAddr,
) -> Option<Accepted> {
    /// The first byte of a TLS handshake record.
    const HANDSHAKE: u8 = 0x16;
    let metrics = tls.identity.metrics();
    let deadline = tokio::time::Instant::now() + header_read;
    if tls.permissive {
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] == HANDSHAKE => {}
            Ok(Ok(1)) => return Some(Accepted::Plain(stream)),
            _ => return None,
        }
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            metrics.handshake("inbound", true);
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(peer_identity)
                .map(Arc::from);
            Some(Accepted::Tls(Box::new(stream), Arc::new(Peer { tls: true, identity })))
        }
        Ok(Err(error)) => {
            metrics.handshake("inbound", false);
            tracing::debug!(%error, %client, "inbound TLS handshake failed");
            None
        }
        Err(_) => {
            metrics.handshake("inbound", false);
            tracing::debug!(%client, "inbound TLS handshake timed out");
            None
        }
    }
}

/// HTTP/1.1 and h2c on one port, with the header-read timeout and header size limits.
fn server_builder(header_read: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

/// Closes shared idle app connections once they have been unused for the idle timeout.
async fn expire_idle(upstream: Arc<Upstream>) {
    let mut ticks = tokio::time::interval(upstream.idle_timeout() / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        upstream.expire_idle();
    }
}

/// One inbound request, layer by layer.
async fn proxy(
    inbound: Arc<Inbound>,
    client: SocketAddr,
    peer: Option<Arc<Peer>>,
    activity: Arc<Activity>,
    affinity: Arc<Affinity>,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();

    // Labels: the method and the route, both bounded whatever the client sends.
    let method = method_label(request.method());
    let route = inbound.routes.route(request.uri().path());

    // RED: the request is in flight until its response body is done (or it is abandoned).
    let in_flight = InFlight::new(inbound.active.get(method), activity);

    // Trace: continue the caller's trace or start one; the app receives our span's context.
    let span = inbound.tracing.as_ref().map(|tracing| {
        let mut headers = std::mem::take(request.headers_mut());
        let info = RequestInfo {
            kind: SpanKind::Server,
            method: request.method(),
            method_label: method,
            path: request.uri().path(),
            route: Some(&route),
            server: None,
            client: Some(client),
            version: request.version(),
            tls_client_subject: peer.as_ref().and_then(|peer| peer.identity.as_deref()),
        };
        let span = span::start(tracing, &mut headers, &info);
        *request.headers_mut() = headers;
        span
    });

    // Access log: keep the path, when there is one to write.
    let path = inbound.access_log.as_ref().map(|_| request.uri().path().to_owned());
    let mut finish =
        Finish { inbound: Arc::clone(&inbound), in_flight, started, method, route, span, client, path, lease: None };

    // Headers: hop-by-hop out (an Upgrade handshake kept), X-Forwarded-* and Forwarded in.
    let upgrade = headers::upgrade_protocol(request.headers()).filter(|_| request.version() == Version::HTTP_11);
    headers::strip_hop_by_hop(request.headers_mut(), upgrade.as_ref());
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    let scheme = if peer.as_ref().is_some_and(|peer| peer.tls) { "https" } else { "http" };
    headers::add_forwarded(request.headers_mut(), client, scheme, authority.as_deref());
    if let (None, Some(authority)) = (request.headers().get(HOST), &authority) {
        if let Ok(host) = HeaderValue::from_str(authority) {
            request.headers_mut().insert(HOST, host);
        }
    }
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));

    // mTLS: only the verified peer's identity reaches the app; others than allowed get 403.
    if let Some(mesh) = &inbound.mesh {
        request.headers_mut().remove(XFCC);
        let identity = peer.as_ref().and_then(|peer| peer.identity.as_deref());
        if !mesh.allows(identity) {
            tracing::debug!(%client, identity = identity.unwrap_or("none"), "peer identity not allowed");
            return finish.respond(StatusCode::FORBIDDEN, None, "forbidden: this peer's identity is not allowed\n");
        }
        if let Some(identity) = identity {
            let value = format!("By={};URI={identity}", mesh.identity.own_identity());
            if let Ok(value) = HeaderValue::from_str(&value) {
                request.headers_mut().insert(XFCC, value);
            }
        }
    }

    // Route to the app over HTTP/1.1, whatever the client spoke.
    *request.version_mut() = Version::HTTP_11;

    // Forward within the request timeout: 502 if the app cannot be reached, 504 if it is slow.
    let forwarded = tokio::time::timeout(inbound.request_timeout, inbound.upstream.send(&affinity, request)).await;
    let (mut response, lease) = match forwarded {
        Ok(Ok(answer)) => answer,
        Ok(Err(error @ ForwardError::Connect(_))) => {
            tracing::debug!(%error, "app unreachable");
            return finish.failed(
                StatusCode::BAD_GATEWAY,
                ErrorType::Connect,
                "bad gateway: the app is not reachable\n",
            );
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "app request failed");
            return finish.failed(
                StatusCode::BAD_GATEWAY,
                ErrorType::Upstream,
                "bad gateway: the app closed the connection\n",
            );
        }
        Err(_) => {
            return finish.failed(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorType::Timeout,
                "gateway timeout: the app did not answer in time\n",
            );
        }
    };

    // Upgrade: on 101, splice the client's connection to the app's once both are handed over.
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_upgrade = switching.then(|| hyper::upgrade::on(&mut response));
    if let (Some(client_side), Some(app_side)) = (client_upgrade, upstream_upgrade) {
        tokio::spawn(upgrade::splice(client_side, app_side));
    }
    // The app connection is reusable once this response is complete, unless it was upgraded.
    if switching {
        lease.discard();
    } else {
        finish.lease = Some(lease);
    }

    // Response: hop-by-hop out, body streamed; metrics, span and access log when it is done.
    let response_upgrade = if switching { headers::upgrade_protocol(response.headers()) } else { None };
    headers::strip_hop_by_hop(response.headers_mut(), response_upgrade.as_ref());
    let status = response.status();
    response.map(|body| ProxyBody::upstream(body).on_complete(Box::new(finish.with_status(status))))
}

/// Everything recorded once a request is over.
struct Finish {
    inbound: Arc<Inbound>,
    in_flight: InFlight,
    started: Instant,
    method: &'static str,
    route: Arc<str>,
    span: Option<RequestSpan>,
    client: SocketAddr,
    path: Option<String>,
    /// The app connection, given back when the response is complete.
    lease: Option<Lease>,
}

impl Finish {
    fn with_status(self, status: StatusCode) -> Finished {
        Finished { finish: self, status: status.as_u16(), error: ErrorType::of_status(status.as_u16()) }
    }

    /// A response pillion makes itself, for a failure to get one from the app.
    fn failed(self, status: StatusCode, error: ErrorType, text: &'static str) -> Response<ProxyBody> {
        self.respond(status, Some(error), text)
    }

    /// A response pillion makes itself.
    fn respond(self, status: StatusCode, error: Option<ErrorType>, text: &'static str) -> Response<ProxyBody> {
        let finished = Finished { finish: self, status: status.as_u16(), error };
        let mut response = Response::new(ProxyBody::text(text).on_complete(Box::new(finished)));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    }
}

struct Finished {
    finish: Finish,
    status: u16,
    error: Option<ErrorType>,
}

impl Completion for Finished {
    fn complete(self: Box<Self>, body_bytes: u64) {
        let Finished { finish, status, error } = *self;
        let duration = finish.started.elapsed();
        let metrics = &finish.inbound.metrics;
        let labels =
            ServerLabels { method: finish.method, route: Arc::clone(&finish.route), status, error_type: error };
        let exemplar =
            finish.span.as_ref().and_then(RequestSpan::trace_id_hex).map(|trace_id| TraceExemplar { trace_id });
        metrics.server_duration.get_or_create(&labels).observe(duration.as_secs_f64(), exemplar, None);
        let ids = finish.span.as_ref().and_then(|span| span.ids);
        if let (Some(span), Some(tracing)) = (finish.span, &finish.inbound.tracing) {
            span.finish(tracing, status, error);
        }
        if let (Some(log), Some(path)) = (&finish.inbound.access_log, &finish.path) {
            log.write(&AccessEntry {
                method: finish.method,
                path,
                route: &finish.route,
                status,
                duration,
                body_bytes,
                client: finish.client,
                ids,
            });
        }
        drop(finish.in_flight);
    }
}

/// Counts a request in `http_server_active_requests` and in its connection until dropped,
/// whether the request finished or the client went away first.
struct InFlight {
    active: Gauge,
    activity: Arc<Activity>,
}

impl InFlight {
    fn new(active: &Gauge, activity: Arc<Activity>) -> InFlight {
        active.inc();
        activity.request_started();
        InFlight { active: active.clone(), activity }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.active.dec();
        self.activity.request_finished();
    }
}
