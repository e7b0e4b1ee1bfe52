//! The inbound reverse proxy: clients (HTTP/1.1, or HTTP/2 with prior knowledge, on one port)
//! reach the app through it, and every request is counted, timed and traced on the way. The
//! request path is [`proxy`]: one function, one commented step per layer.

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
use hyper_util::server::graceful::GracefulShutdown;
use opentelemetry::trace::SpanKind;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::access_log::{AccessEntry, AccessLog};
use super::body::{Completion, ProxyBody};
use super::conn::{self, Activity};
use super::headers;
use super::metrics::{ErrorType, MethodGauges, ProxyMetrics, ServerLabels, TraceExemplar, method_label};
use super::route::Routes;
pub use super::settings::InboundSettings as Settings;
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
}

/// The bound inbound listener, ready to serve.
pub struct InboundServer {
    listener: TcpListener,
    inbound: Arc<Inbound>,
    header_read: Duration,
    idle: Duration,
}

impl InboundServer {
    /// Binds `config.listen` and prepares the connections to `config.upstream`.
    pub async fn bind(
        config: &Settings,
        metrics: ProxyMetrics,
        tracing: Option<Arc<Tracing>>,
        access_log: Option<AccessLog>,
    ) -> Result<InboundServer, ProxyError> {
        let listen = config.listen;
        let listener =
            TcpListener::bind(listen).await.map_err(|source| ProxyError::Bind { address: listen, source })?;
        let timeouts = &config.timeouts;
        let upstream = Upstream::new(config.upstream.clone(), timeouts.request, timeouts.idle, POOL_IDLE_PER_HOST);
        let inbound = Inbound {
            upstream: Arc::new(upstream),
            routes: Routes::new(&config.routes, config.max_routes),
            active: MethodGauges::new(&metrics.server_active),
            metrics,
            tracing,
            access_log,
            request_timeout: timeouts.request,
        };
        Ok(InboundServer {
            listener,
            inbound: Arc::new(inbound),
            header_read: timeouts.header_read,
            idle: timeouts.idle,
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
        let builder = server_builder(self.header_read);
        let graceful = GracefulShutdown::new();
        let expiry = tokio::spawn(expire_idle(Arc::clone(&self.inbound.upstream)));
        while let Some((stream, client)) = crate::net::accept(&self.listener, &shutdown, "proxy").await {
            let _ = stream.set_nodelay(true);
            let activity = Activity::new();
            let inbound = Arc::clone(&self.inbound);
            let per_request = Arc::clone(&activity);
            let affinity = Affinity::new(&inbound.upstream);
            let service = service_fn(move |request| {
                let inbound = Arc::clone(&inbound);
                let activity = Arc::clone(&per_request);
                let affinity = Arc::clone(&affinity);
                async move { Ok::<_, Infallible>(proxy(inbound, client, activity, affinity, request).await) }
            });
            let io = TokioIo::new(stream);
            let connection = graceful.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
            let idle = self.idle;
            tokio::spawn(async move {
                tokio::select! {
                    served = connection => if let Err(error) = served {
                        tracing::debug!(%error, %client, "proxy connection ended with an error");
                    },
                    _ = conn::idle(&activity, idle) => tracing::debug!(%client, "idle proxy connection closed"),
                }
            });
        }
        drop(self.listener);
        expiry.abort();
        tracing::info!("proxy stopped accepting; draining in-flight requests");
        if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
            tracing::warn!("proxy drain timed out; closing the remaining connections");
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
    headers::add_forwarded(request.headers_mut(), client, "http", authority.as_deref());
    if let (None, Some(authority)) = (request.headers().get(HOST), &authority) {
        if let Ok(host) = HeaderValue::from_str(authority) {
            request.headers_mut().insert(HOST, host);
        }
    }
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));

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
        let finished = Finished { finish: self, status: status.as_u16(), error: Some(error) };
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
