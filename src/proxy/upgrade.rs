//! Upgraded connections (WebSocket and other `Upgrade` protocols): once the app answers 101
//! and hyper hands over both connections, bytes are copied both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Copies between the client's and the app's upgraded connections until both are done.
pub async fn splice(client: OnUpgrade, app: OnUpgrade) {
    let (client, app) = match tokio::try_join!(client, app) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut app = TokioIo::new(app);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut app).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}
