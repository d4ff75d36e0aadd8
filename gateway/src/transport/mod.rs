//! The front ends: each accepts connections and hands them to the session driver.

pub(crate) mod http;
pub(crate) mod quic;
pub(crate) mod tcp;

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The next connection of `listener`, or `None` once `stop` is cancelled. An accept error
/// (out of descriptors or similar) is logged and retried after a pause instead of spinning.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    stop: &CancellationToken,
    what: &'static str,
) -> Option<(TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!(error = %e, listener = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}
