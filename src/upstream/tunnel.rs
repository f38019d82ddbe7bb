//! Joins the two halves of an upgraded connection (WebSocket and other HTTP/1.1 upgrades).
//!
//! After the backend answered `101 Switching Protocols` and the gateway passed that answer
//! to the client, both connections stop speaking HTTP. One task per tunnel waits for both
//! upgrades to complete and then copies bytes in both directions until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

pub(super) fn spawn(client: OnUpgrade, backend: OnUpgrade, upstream: Arc<str>) {
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(upstream = %upstream, error = %err, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut backend = TokioIo::new(backend);
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((to_backend, to_client)) => {
                tracing::debug!(upstream = %upstream, to_backend, to_client, "tunnel closed");
            }
            Err(err) => {
                tracing::debug!(upstream = %upstream, error = %err, "tunnel ended with an error")
            }
        }
    });
}
