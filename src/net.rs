//! Listener plumbing shared by the admin server and the proxies: accepting until shutdown,
//! without spinning when accept fails (out of file descriptors, say).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

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
