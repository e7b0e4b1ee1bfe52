//! The life of a server, shared by the admin server and both proxies: accept until shutdown
//! (without spinning when accept fails, out of file descriptors say), serve each connection
//! under the header-read and idle timeouts, then drain in-flight requests within a deadline,
//! saying in the log how the drain went.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy::conn::{self, Activity, ConnTimeouts, Watched};
use crate::proxy::identity::{Accepted, Peer, Termination};

/// The largest request head (request line and headers) accepted; larger gets 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The next connection on `listener`, or `None` once `shutdown` is cancelled. A failed accept
/// is logged (naming `server`) and retried after a short pause.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    server: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(error) => {
                    tracing::warn!(%error, server, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// HTTP/1.1 and h2c on one port, with the header size limits. Header-read and idle timeouts are
/// [`conn::watch`]'s, not hyper's: hyper's header timer starts when it waits for the next head,
/// so it would cut kept-alive connections at `header_read`, and never starts on a connection
/// that sends nothing.
pub(crate) fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(MAX_HEADER_BYTES).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

/// How one server runs: its name in logs, its timeouts and its drain deadline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeOptions {
    pub server: &'static str,
    pub timeouts: ConnTimeouts,
    pub drain: Duration,
}

/// Accepts and serves connections until `shutdown`, then stops accepting and lets in-flight
/// requests finish for at most `options.drain`. `service` makes each connection's service from
/// the client's address, the connection's [`Activity`] (which the service must tell when a
/// request starts and ends) and, with `tls`, what the TLS handshake established about the peer
/// (`None` without `tls`; a plain connection to a permissive listener has a default [`Peer`]).
pub(crate) async fn serve<M, S, B>(
    listener: TcpListener,
    shutdown: CancellationToken,
    options: ServeOptions,
    tls: Option<Arc<Termination>>,
    service: M,
) where
    M: Fn(SocketAddr, Arc<Activity>, Option<Arc<Peer>>) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let ServeOptions { server, timeouts, drain } = options;
    let builder = Arc::new(builder());
    let service = Arc::new(service);
    let graceful = GracefulShutdown::new();
    while let Some((stream, client)) = accept(&listener, &shutdown, server).await {
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let connection = Connection {
            builder: Arc::clone(&builder),
            watcher: graceful.watcher(),
            activity: Arc::clone(&activity),
            client,
            server,
            timeouts,
        };
        match &tls {
            None => {
                let service = service(client, Arc::clone(&activity), None);
                tokio::spawn(connection.run(Watched::new(stream, activity), service));
            }
            // The handshake runs on the connection's task, not in the accept loop.
            Some(tls) => {
                let tls = Arc::clone(tls);
                let service = Arc::clone(&service);
                tokio::spawn(async move {
                    match tls.accept(stream, client, Arc::clone(&activity), timeouts.header_read).await {
                        Some(Accepted::Plain(io)) => {
                            connection.run(io, service(client, activity, Some(Arc::default()))).await
                        }
                        Some(Accepted::Tls(io, peer)) => {
                            connection.run(io, service(client, activity, Some(peer))).await
                        }
                        None => {}
                    }
                });
            }
        }
    }
    drop(listener);
    drop(service);
    tracing::info!(server, "stopped accepting; draining in-flight requests");
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => tracing::info!(server, "drained"),
        Err(_) => tracing::warn!(server, ?drain, "drain timed out; closing the remaining connections"),
    }
}

/// One accepted connection, about to be served.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    activity: Arc<Activity>,
    client: SocketAddr,
    server: &'static str,
    timeouts: ConnTimeouts,
}

impl Connection {
    /// Serves HTTP on `io` (plain, or TLS already terminated) until it ends or times out.
    async fn run<I, S, B>(self, io: I, service: S)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Connection { builder, watcher, activity, client, server, timeouts } = self;
        let connection = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned());
        tokio::select! {
            served = connection => if let Err(error) = served {
                tracing::debug!(%error, %client, server, "connection ended with an error");
            },
            expired = conn::watch(&activity, timeouts) => {
                tracing::debug!(%client, server, ?expired, "connection timed out; closed");
            }
        }
    }
}
