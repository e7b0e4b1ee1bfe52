//! A named outbound destination (`proxy.outbound.destinations[]`): its endpoints (static or from
//! DNS, see `discovery`), its balancer (see `balance`), and a client that keeps a connection pool
//! per endpoint, originating mTLS with the pod's identity when `mtls` is on.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use super::balance::{Balancer, Group, Outlier};
use super::discovery::{Dns, DnsName};
use super::identity::{Identity, IdentityError};
use super::metrics::{EndpointLabels, TlsMetrics};
use super::settings::DestinationConfig;

pub type OutBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// How often ejections are looked at without traffic (for `pillion_endpoints`).
const TICK: Duration = Duration::from_secs(1);

/// Why a destination could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("proxy.outbound.destinations {host}: mtls needs proxy.identity")]
    NoIdentity { host: String },
    #[error("proxy.outbound.destinations {host}: {name:?} is not a valid TLS server name")]
    ServerName { host: String, name: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Dns(#[from] super::discovery::DiscoveryError),
}

/// One named destination.
pub struct Destination {
    /// The name the app calls, lowercase.
    pub host: Arc<str>,
    pub balancer: Arc<Balancer>,
    pub client: Client<MeshConnector, OutBody>,
}

impl Destination {
    /// Builds the destination; DNS ones start following their name (until `shutdown`).
    pub fn new(
        config: &DestinationConfig,
        identity: Option<&Arc<Identity>>,
        dns: &mut Option<Arc<Dns>>,
        dns_nameserver: Option<std::net::SocketAddr>,
        connect_timeout: Duration,
        gauge: prometheus_client::metrics::family::Family<EndpointLabels, prometheus_client::metrics::gauge::Gauge>,
        shutdown: &CancellationToken,
    ) -> Result<Destination, DestinationError> {
        let host: Arc<str> = Arc::from(config.host.to_ascii_lowercase());
        let outlier = Outlier {
            consecutive_failures: config.outlier.consecutive_failures,
            eject_for: config.outlier.eject_for.get(),
        };
        let groups = config.split.iter().map(|s| Group { endpoints: s.endpoints.clone(), weight: s.weight }).collect();
        let balancer = Arc::new(Balancer::new(Arc::clone(&host), config.load_balancer, outlier, groups, gauge));
        let mut statics = config.endpoints.clone();
        if statics.is_empty() && config.dns.is_none() {
            statics = config.split.iter().flat_map(|s| s.endpoints.iter().copied()).collect();
        }
        balancer.set_endpoints(&statics);

        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let tls = if config.mtls {
            let identity = identity.ok_or_else(|| DestinationError::NoIdentity { host: config.host.clone() })?;
            let pin = config.server_identity.as_deref().map(Arc::from);
            let name = config.dns.as_ref().map_or(config.host.as_str(), |dns| dns.name.as_str()).to_owned();
            let server_name = ServerName::try_from(name.clone())
                .map_err(|_| DestinationError::ServerName { host: config.host.clone(), name })?;
            Some(Arc::new(Originate {
                connector: TlsConnector::from(identity.client_config(pin)?),
                server_name,
                metrics: identity.metrics().clone(),
            }))
        } else {
            None
        };
        let connector = MeshConnector { http, tls };
        let client = Client::builder(TokioExecutor::new()).pool_timer(TokioTimer::new()).build(connector);

        if let Some(name) = &config.dns {
            let resolver = match dns {
                Some(resolver) => Arc::clone(resolver),
                None => {
                    let resolver = Arc::new(Dns::new(dns_nameserver)?);
                    *dns = Some(Arc::clone(&resolver));
                    resolver
                }
            };
            let name = DnsName { name: name.name.clone(), port: name.port, refresh: name.refresh.get() };
            tokio::spawn(resolver.follow(name, Arc::clone(&balancer), shutdown.clone()));
        }
        let ticking = Arc::clone(&balancer);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => ticking.tick(),
                }
            }
        });
        Ok(Destination { host, balancer, client })
    }
}

/// mTLS origination for one destination.
struct Originate {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    metrics: TlsMetrics,
}

/// Connects to an endpoint: TCP, then TLS when the destination has `mtls`.
#[derive(Clone)]
pub struct MeshConnector {
    http: HttpConnector,
    tls: Option<Arc<Originate>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for MeshConnector {
    type Response = MeshStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MeshStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            let Some(tls) = tls else { return Ok(MeshStream::Plain(tcp)) };
            match tls.connector.connect(tls.server_name.clone(), tcp.into_inner()).await {
                Ok(stream) => {
                    tls.metrics.handshake("outbound", true);
                    Ok(MeshStream::Tls(Box::new(TokioIo::new(stream))))
                }
                Err(error) => {
                    tls.metrics.handshake("outbound", false);
                    Err(error.into())
                }
            }
        })
    }
}

/// A connection to an endpoint, plain or TLS.
pub enum MeshStream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for MeshStream {
    fn connected(&self) -> Connected {
        match self {
            MeshStream::Plain(stream) => stream.connected(),
            MeshStream::Tls(_) => Connected::new(),
        }
    }
}

impl hyper::rt::Read for MeshStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            MeshStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for MeshStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MeshStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            MeshStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            MeshStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            MeshStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
