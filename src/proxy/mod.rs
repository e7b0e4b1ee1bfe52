//! The HTTP proxy: `inbound` fronts the app's port, `outbound` is the app's egress proxy. Both
//! record RED metrics (`metrics`, with bounded `route` labels) and spans (`span`) for every
//! request, stream bodies (`body`), and handle hop-by-hop and forwarding headers (`headers`).
//! The inbound proxy reaches the app over keep-alive connections tied to client connections
//! (`upstream`).

pub mod access_log;
pub mod balance;
pub mod body;
pub mod breaker;
pub mod conn;
pub mod destination;
pub mod discovery;
pub mod finish;
pub mod headers;
pub mod identity;
pub mod inbound;
pub mod metrics;
pub mod outbound;
pub mod route;
pub mod settings;
pub mod span;
pub mod upgrade;
pub mod upstream;

use std::net::SocketAddr;

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on proxy address {address}: {source}")]
    Bind { address: SocketAddr, source: std::io::Error },
    #[error("proxy.inbound.upstream {upstream}: {why}")]
    Upstream { upstream: String, why: String },
    #[error("mTLS needs proxy.identity")]
    NoIdentity,
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Destination(#[from] destination::DestinationError),
}
