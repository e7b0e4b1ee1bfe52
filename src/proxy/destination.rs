//! A named outbound destination (`proxy.outbound.destinations[]`): its endpoints (static or from
//! DNS, see `discovery`), its balancer (see `balance`), and a client that keeps a connection pool
//! per endpoint, originating mTLS with the pod's identity when `mtls` is on (HTTP/2 when the
//! endpoint offers it in ALPN, as pillion's inbound does; else HTTP/1.1).

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
            // The client speaks HTTP/2 on this connection when the server chose it in ALPN.
            MeshStream::Tls(stream) if stream.inner().get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
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

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use hyper_util::server::conn::auto;

    use super::*;
    use crate::proxy::identity::tests::{TestCa, write_identity};

    /// A TLS server on 127.0.0.1 that answers every request with the HTTP version it arrived in;
    /// `alpn` is what it offers.
    async fn version_server(identity: &Arc<Identity>, alpn: &[&[u8]]) -> std::net::SocketAddr {
        let mut config = (*identity.server_config(true).expect("server config")).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let version = format!("{:?}", request.version());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(version))))
                    });
                    let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        address
    }

    #[tokio::test]
    async fn the_client_speaks_h2_when_the_endpoint_offers_it_and_http1_otherwise() {
        let ca = TestCa::new();
        let (server_dir, client_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let server =
            Identity::load(write_identity(server_dir.path(), &ca, &ca.leaf(&["api"], 1)), TlsMetrics::default())
                .expect("server identity");
        let client = Identity::load(
            write_identity(client_dir.path(), &ca, &ca.leaf(&["spiffe://c/ns/shop/sa/web"], 2)),
            TlsMetrics::default(),
        )
        .expect("client identity");
        let originate = Arc::new(Originate {
            connector: TlsConnector::from(client.client_config(None).expect("client config")),
            server_name: ServerName::try_from("api").expect("name"),
            metrics: TlsMetrics::default(),
        });
        let client: Client<MeshConnector, OutBody> = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(MeshConnector { http: HttpConnector::new(), tls: Some(originate) });
        let offers: [&[&[u8]]; 3] = [&[b"h2", b"http/1.1"], &[b"http/1.1"], &[]];
        for (alpn, expected) in offers.into_iter().zip(["HTTP/2.0", "HTTP/1.1", "HTTP/1.1"]) {
            let address = version_server(&server, alpn).await;
            for _ in 0..2 {
                // As the outbound proxy sends it: HTTP/1.1, the endpoint's address in the URI.
                let request = http::Request::get(format!("http://{address}/"))
                    .header(http::header::HOST, "api")
                    .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
                    .expect("request");
                let response = client.request(request).await.expect("response");
                assert_eq!(response.status(), 200);
                let body = response.into_body().collect().await.expect("body").to_bytes();
                assert_eq!(body, expected.as_bytes(), "server offering {alpn:?}");
            }
        }
    }
}
