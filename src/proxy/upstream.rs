//! Keep-alive HTTP/1.1 connections to the app. Each client connection keeps the app connection
//! its last request used ([`Affinity`]), so a keep-alive client is served over one keep-alive
//! connection to the app, with no shared pool, lock or extra task on the request path. A request
//! that finds its connection's app connection busy (HTTP/2 clients multiplex) takes an idle one
//! from a small shared pool, or connects. A connection goes back when its response is complete.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::body::ClientBody;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No connection to the app could be made.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The connection failed while the request was sent or the response awaited.
    #[error("{0}")]
    Upstream(hyper::Error),
}

/// The app's address and the idle connections no client connection holds.
pub struct Upstream {
    /// `host:port`, for connecting when the host is a name.
    authority: Authority,
    /// The address to connect to, when the host is an IP address (no resolution per connect).
    address: Option<SocketAddr>,
    /// The `Host` header for requests that carry none (the port only when not 80).
    host: HeaderValue,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(SendRequest<ClientBody>, Instant)>>,
}

/// The app connection a client connection last used; handed to the shared pool when the client
/// connection closes.
pub struct Affinity {
    upstream: Arc<Upstream>,
    held: Mutex<Option<SendRequest<ClientBody>>>,
}

/// An app connection in use by one request; it goes back to its client connection (or the
/// shared pool) when dropped, which the proxy does once the response body is complete.
pub struct Lease {
    sender: Option<SendRequest<ClientBody>>,
    home: Arc<Affinity>,
}

impl Upstream {
    pub fn new(authority: Authority, connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Upstream {
        let address = authority.as_str().parse().ok();
        let host = match authority.port_u16() {
            Some(80) | None => HeaderValue::from_str(authority.host()),
            Some(_) => HeaderValue::from_str(authority.as_str()),
        }
        .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Upstream { authority, address, host, connect_timeout, idle_timeout, max_idle, idle: Mutex::new(Vec::new()) }
    }

    /// Sends `request` (its URI made origin-form, `Host` set when missing) over an idle
    /// connection, or a new one. A request that a reused connection closed before sending is sent
    /// again on a new connection, as the pooled client did.
    pub async fn send(
        self: &Arc<Self>,
        affinity: &Arc<Affinity>,
        mut request: Request<ClientBody>,
    ) -> Result<(Response<Incoming>, Lease), ForwardError> {
        request.headers_mut().entry(HOST).or_insert_with(|| self.host.clone());
        *request.uri_mut() = origin_form(request.uri());
        let reused = self.checkout(affinity).await;
        let was_reused = reused.is_some();
        let mut sender = match reused {
            Some(sender) => sender,
            // Boxed: connecting is the rare path, and its state would otherwise make every
            // request's future (moved and polled on every request) larger.
            None => Box::pin(self.connect()).await?,
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response, Lease { sender: Some(sender), home: Arc::clone(affinity) })),
            Err(mut error) => match error.take_message() {
                // Not sent: the idle connection was closed under us. Once more, on a new one.
                Some(unsent) if was_reused => {
                    tracing::debug!(error = %error.error(), "idle app connection closed; reconnecting");
                    let mut fresh = Box::pin(self.connect()).await?;
                    let response = fresh.send_request(unsent).await.map_err(ForwardError::Upstream)?;
                    Ok((response, Lease { sender: Some(fresh), home: Arc::clone(affinity) }))
                }
                _ => Err(ForwardError::Upstream(error.into_error())),
            },
        }
    }

    /// A ready idle connection: the client connection's own, else one from the shared pool.
    async fn checkout(&self, affinity: &Affinity) -> Option<SendRequest<ClientBody>> {
        let held = affinity.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut sender) = held {
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
        loop {
            let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let (mut sender, since) = pooled?;
            if since.elapsed() < self.idle_timeout && sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A new connection to the app, its driver spawned.
    async fn connect(&self) -> Result<SendRequest<ClientBody>, ForwardError> {
        let connecting = async {
            match self.address {
                Some(address) => TcpStream::connect(address).await,
                None => TcpStream::connect(self.authority.as_str()).await,
            }
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(ForwardError::Connect(error)),
            Err(_) => return Err(ForwardError::Connect(std::io::ErrorKind::TimedOut.into())),
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::Builder::new().handshake(TokioIo::new(stream)).await.map_err(ForwardError::Upstream)?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "app connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Keeps `sender` for reuse by anyone, if there is room.
    fn pool(&self, sender: SendRequest<ClientBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(sender, since)| since.elapsed() < self.idle_timeout && !sender.is_closed());
        if idle.len() < self.max_idle {
            idle.push((sender, Instant::now()));
        }
    }

    /// Closes shared idle connections unused for the idle timeout.
    pub fn expire_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(sender, since)| since.elapsed() < self.idle_timeout && !sender.is_closed());
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
}

impl Affinity {
    pub fn new(upstream: &Arc<Upstream>) -> Arc<Affinity> {
        Arc::new(Affinity { upstream: Arc::clone(upstream), held: Mutex::new(None) })
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        if let Some(sender) = self.held.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            self.upstream.pool(sender);
        }
    }
}

impl Lease {
    /// The connection is not reusable (it was upgraded): do not give it back.
    pub fn discard(mut self) {
        self.sender = None;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(sender) = self.sender.take() else { return };
        if sender.is_closed() {
            return;
        }
        let mut held = self.home.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none() {
            *held = Some(sender);
        } else {
            drop(held);
            self.home.upstream.pool(sender);
        }
    }
}

/// The request target the app sees: path and query only.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => Uri::from(path.clone()),
        _ => Uri::from(PathAndQuery::from_static("/")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_out_in_origin_form() {
        let uri: Uri = "http://shop.example:8080/a/b?x=1".parse().expect("uri");
        assert_eq!(origin_form(&uri).to_string(), "/a/b?x=1");
        assert_eq!(origin_form(&"http://shop.example".parse().expect("uri")).to_string(), "/");
        assert_eq!(origin_form(&"/a?b".parse().expect("uri")).to_string(), "/a?b");
    }

    #[test]
    fn host_header_omits_the_default_port() {
        let upstream = |text: &str| {
            Upstream::new(text.parse().expect("authority"), Duration::from_secs(1), Duration::from_secs(1), 1)
        };
        assert_eq!(upstream("127.0.0.1:80").host, "127.0.0.1");
        assert_eq!(upstream("app:8080").host, "app:8080");
        assert!(upstream("127.0.0.1:8080").address.is_some());
        assert!(upstream("app:8080").address.is_none());
    }
}
