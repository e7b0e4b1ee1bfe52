//! The inbound reverse proxy: clients (HTTP/1.1, or HTTP/2 with prior knowledge, on one port)
//! reach the app through it, and every request is counted, timed and traced on the way. The
//! request path is [`proxy`]: one function, one commented step per layer. With `mtls` the
//! listener terminates TLS first (`identity::Termination`): the peer's verified identity is
//! checked against `allow_identities` and handed to the app in `x-forwarded-client-cert`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HOST, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use opentelemetry::trace::SpanKind;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::access_log::{AccessEntry, AccessLog};
use super::body::{ClientBody, ProxyBody};
use super::conn::{Activity, ConnTimeouts};
use super::finish::{Finish, InFlight, Outcome, Recorder};
use super::headers;
use super::identity::{Identity, Peer, Termination, identity_matches};
use super::metrics::{ErrorType, MethodGauges, ProxyMetrics, ServerLabels, method_label};
use super::route::Routes;
pub use super::settings::InboundSettings as Settings;
use super::settings::MtlsMode;
use super::span::{self, RequestInfo};
use super::upstream::{Affinity, ForwardError, Lease, Upstream};
use super::{ProxyError, upgrade};
use crate::config::units::Cidr;
use crate::net::{ServeOptions, serve};
use crate::telemetry::traces::Tracing;

pub use crate::net::MAX_HEADER_BYTES;

/// Idle keep-alive connections kept to the app.
const POOL_IDLE_PER_HOST: usize = 256;
/// Series per duration family beyond the routes' own bound (statuses, methods, failures).
const SERIES_HEADROOM: usize = 100;

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
    trusted_proxies: Vec<Cidr>,
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

/// `x-forwarded-client-cert`, Envoy's header for the client certificate's identity.
const XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");

/// The bound inbound listener, ready to serve.
pub struct InboundServer {
    listener: TcpListener,
    inbound: Arc<Inbound>,
    timeouts: ConnTimeouts,
    tls: Option<Arc<Termination>>,
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
            (mode, Some(identity)) => Some(Arc::new(Termination::new(identity, mode == MtlsMode::Required)?)),
        };
        let mesh = match (&tls, identity) {
            (Some(_), Some(identity)) => {
                Some(InboundMesh { identity: Arc::clone(identity), allow: config.allow_identities.clone() })
            }
            _ => None,
        };
        let max_routes = config.max_routes;
        metrics.server_duration.set_cap(max_routes + config.routes.len() + SERIES_HEADROOM);
        let family = metrics.server_duration.clone();
        let forget = Box::new(move |route: &str| family.forget(|labels| &*labels.route == route));
        let inbound = Inbound {
            upstream: Arc::new(upstream),
            routes: Routes::new(&config.routes, max_routes, config.route_ttl, forget),
            active: MethodGauges::new(&metrics.server_active),
            metrics,
            tracing,
            access_log,
            request_timeout: timeouts.request,
            trusted_proxies: config.trusted_proxies.clone(),
            mesh,
        };
        Ok(InboundServer {
            listener,
            inbound: Arc::new(inbound),
            timeouts: ConnTimeouts { header_read: timeouts.header_read, idle: timeouts.idle },
            tls,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then stops accepting and lets in-flight requests finish
    /// (for at most `drain`).
    pub fn spawn(self, shutdown: CancellationToken, drain: Duration) -> JoinHandle<()> {
        let options = ServeOptions { server: "proxy", timeouts: self.timeouts, drain };
        let expiry = tokio::spawn(expire_idle(Arc::clone(&self.inbound.upstream)));
        let inbound = self.inbound;
        tokio::spawn(async move {
            serve(self.listener, shutdown, options, self.tls, move |client, activity: Arc<Activity>, peer| {
                let connection = Arc::new(ClientConnection {
                    inbound: Arc::clone(&inbound),
                    client,
                    forwarding: headers::ClientForwarding::new(client),
                    peer,
                    activity,
                    affinity: Affinity::new(&inbound.upstream),
                });
                service_fn(move |request| {
                    let connection = Arc::clone(&connection);
                    async move { Ok::<_, Infallible>(proxy(connection, request).await) }
                })
            })
            .await;
            expiry.abort();
        })
    }
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

/// What the requests of one client connection share.
struct ClientConnection {
    inbound: Arc<Inbound>,
    client: SocketAddr,
    forwarding: headers::ClientForwarding,
    /// With mTLS: whether the connection is TLS and the verified peer's identity.
    peer: Option<Arc<Peer>>,
    activity: Arc<Activity>,
    /// The app connection this client connection last used.
    affinity: Arc<Affinity>,
}

/// One inbound request, layer by layer.
async fn proxy(connection: Arc<ClientConnection>, mut request: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let ClientConnection { inbound, client, forwarding, peer, activity, affinity } = &*connection;
    let client = *client;

    // Labels: the method and the route, both bounded whatever the client sends.
    let method = method_label(request.method());
    let route = inbound.routes.route(request.uri().path());

    // RED: in flight until the response body is done; recorded once, as 499 if the client
    // leaves before there is a response.
    let in_flight = InFlight::new(inbound.active.get(method), Some(Arc::clone(activity)));
    let path = inbound.access_log.as_ref().map(|_| request.uri().path().to_owned());
    let recorder =
        ServerRecorder { inbound: Arc::clone(inbound), method, route: Arc::clone(&route), client, path, lease: None };
    let mut finish = Finish::new(recorder, started, in_flight, inbound.tracing.clone());

    // Trace: continue the caller's trace (its headers are for us, even when `Connection` names
    // them) or start one; the app receives our span's context and none of the client's
    // propagation headers.
    if let Some(tracing) = &inbound.tracing {
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
        finish.set_span(Some(span::start(tracing, &mut headers, &info)));
        *request.headers_mut() = headers;
    }

    // Headers: hop-by-hop out (an Upgrade handshake kept); `Connection` cannot name the
    // propagation headers pillion just set.
    let upgrade = headers::upgrade_protocol(request.headers()).filter(|_| request.version() == Version::HTTP_11);
    let protected = inbound.tracing.as_ref().map_or(&[][..], |tracing| &tracing.propagator_fields[..]);
    headers::strip_hop_by_hop(request.headers_mut(), upgrade.as_ref(), protected);

    // Refusals: a reverse proxy does not tunnel, and a request must name one valid host.
    if request.method() == Method::CONNECT {
        let text = "method not allowed: CONNECT is not proxied here\n";
        return finish.failed(StatusCode::METHOD_NOT_ALLOWED, ErrorType::ClientError, text);
    }
    if let Err(text) = headers::check_host(request.version(), request.headers(), request.uri().authority()) {
        return finish.failed(StatusCode::BAD_REQUEST, ErrorType::ClientError, text);
    }

    // Forwarding headers: pillion's own, or appended to a trusted proxy's.
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    let trusted = inbound.trusted_proxies.iter().any(|block| block.contains(client.ip()));
    let scheme = if peer.as_ref().is_some_and(|peer| peer.tls) { "https" } else { "http" };
    headers::add_forwarded(request.headers_mut(), forwarding, trusted, scheme, authority.as_deref());
    if let (None, Some(authority)) = (request.headers().get(HOST), &authority) {
        if let Ok(host) = HeaderValue::from_str(authority) {
            request.headers_mut().insert(HOST, host);
        }
    }
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));

    // mTLS: only the verified peer's identity reaches the app; identities not allowed get 403.
    if let Some(mesh) = &inbound.mesh {
        request.headers_mut().remove(XFCC);
        let identity = peer.as_ref().and_then(|peer| peer.identity.as_deref());
        if !mesh.allows(identity) {
            tracing::debug!(%client, identity = identity.unwrap_or("none"), "peer identity not allowed");
            let text = "forbidden: this peer's identity is not allowed\n";
            return finish.failed(StatusCode::FORBIDDEN, ErrorType::ClientError, text);
        }
        if let Some(identity) = identity {
            let value = format!("By={};URI={identity}", mesh.identity.own_identity());
            if let Ok(value) = HeaderValue::from_str(&value) {
                request.headers_mut().insert(XFCC, value);
            }
        }
    }

    // Route to the app over HTTP/1.1, whatever the client spoke; the body is watched so that a
    // client's broken or slow upload is booked as the client's.
    *request.version_mut() = Version::HTTP_11;
    let (parts, body) = request.into_parts();
    let (body, upload) = ClientBody::new(body);
    let request = Request::from_parts(parts, body);

    // Forward within the request timeout: 502 if the app cannot be reached, 504 if it is slow.
    let forwarded = tokio::time::timeout(inbound.request_timeout, inbound.upstream.send(affinity, request)).await;
    let (mut response, lease) = match forwarded {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) if upload.is_broken() => {
            let text = "bad request: the request body was malformed or cut short\n";
            return finish.failed(StatusCode::BAD_REQUEST, ErrorType::ClientError, text);
        }
        Ok(Err(error @ ForwardError::Connect(_))) => {
            tracing::debug!(%error, "app unreachable");
            let text = "bad gateway: the app is not reachable\n";
            return finish.failed(StatusCode::BAD_GATEWAY, ErrorType::Connect, text);
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "app request failed");
            let text = "bad gateway: the app closed the connection\n";
            return finish.failed(StatusCode::BAD_GATEWAY, ErrorType::Upstream, text);
        }
        Err(_) if !upload.is_done() => {
            let text = "request timeout: the request body did not arrive in time\n";
            return finish.failed(StatusCode::REQUEST_TIMEOUT, ErrorType::ClientError, text);
        }
        Err(_) => {
            let text = "gateway timeout: the app did not answer in time\n";
            return finish.failed(StatusCode::GATEWAY_TIMEOUT, ErrorType::Timeout, text);
        }
    };

    // Upgrade: on 101, splice the client's connection to the app's once both are handed over.
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_upgrade = switching.then(|| hyper::upgrade::on(&mut response));
    if let (Some(client_side), Some(app_side)) = (client_upgrade, upstream_upgrade) {
        tokio::spawn(upgrade::splice(client_side, app_side));
    }

    // Response: hop-by-hop out, body streamed; metrics, span and access log when it is done.
    // The app connection is reusable once this response is complete, unless it was upgraded.
    let response_upgrade = if switching { headers::upgrade_protocol(response.headers()) } else { None };
    headers::strip_hop_by_hop(response.headers_mut(), response_upgrade.as_ref(), &[]);
    if switching {
        lease.discard();
    } else if let Some(recorder) = finish.recorder_mut() {
        recorder.lease = Some(lease);
    }
    let completion = finish.responded(response.status());
    response.map(|body| ProxyBody::upstream(body).on_complete(completion))
}

/// What the inbound proxy records about a finished request.
struct ServerRecorder {
    inbound: Arc<Inbound>,
    method: &'static str,
    route: Arc<str>,
    client: SocketAddr,
    path: Option<String>,
    /// The app connection, given back when the response is complete.
    lease: Option<Lease>,
}

impl Recorder for ServerRecorder {
    fn record(self, outcome: &Outcome) {
        let inbound = &self.inbound;
        let labels =
            ServerLabels { method: self.method, route: self.route, status: outcome.status, error_type: outcome.error };
        inbound.metrics.server_duration.observe(&labels, outcome.duration.as_secs_f64(), outcome.exemplar);
        if let (Some(log), Some(path)) = (&inbound.access_log, &self.path) {
            log.write(&AccessEntry {
                method: self.method,
                path,
                route: &labels.route,
                status: outcome.status,
                duration: outcome.duration,
                body_bytes: outcome.body_bytes,
                client: self.client,
                ids: outcome.ids,
            });
        }
    }
}
