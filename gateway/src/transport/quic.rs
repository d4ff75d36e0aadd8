//! QUIC: one bidirectional stream per unit session, carrying the same frames as TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use codec::Transport;
use quinn::crypto::rustls::QuicServerConfig;

use crate::server::session;
use crate::server::Ctx;
use crate::tls::Identity;
use crate::{Error, GatewayConfig};

/// Transport settings sized for many small, mostly idle sessions: one stream each, small
/// windows (frames are ≤ `max_frame`), and an idle timeout above the session's own so the
/// session reports `inactivity` first.
pub(crate) fn transport_config(config: &GatewayConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let window = (config.max_frame as u32).saturating_mul(4).max(16 * 1024);
    t.max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(window.into())
        .receive_window(window.into())
        .send_window(u64::from(window))
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(
            Duration::from_millis(config.idle_timeout_ms.saturating_add(30_000))
                .try_into()
                .ok(),
        );
    t
}

pub(crate) fn endpoint(
    config: &GatewayConfig,
    identity: &Identity,
    addr: SocketAddr,
) -> Result<quinn::Endpoint, Error> {
    let tls = identity.rustls_server(true)?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| Error::Tls(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(config)));
    Ok(quinn::Endpoint::server(server, addr)?)
}

pub(crate) async fn accept(ctx: Arc<Ctx>, endpoint: quinn::Endpoint) {
    loop {
        let incoming = tokio::select! {
            () = ctx.stop_accept.cancelled() => return,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => return,
            },
        };
        let Some(guard) = ctx.admit_connection(Transport::Quic) else {
            incoming.refuse();
            continue;
        };
        let task_ctx = Arc::clone(&ctx);
        ctx.session_tasks.spawn(async move {
            let hs = task_ctx.config.handshake_timeout();
            let conn = match tokio::time::timeout(hs, incoming).await {
                Ok(Ok(c)) => c,
                _ => {
                    metrics::counter!(crate::metrics::HANDSHAKE_FAILURES, "transport" => "quic", "reason" => "tls")
                        .increment(1);
                    return;
                }
            };
            let (send, recv) = match tokio::time::timeout(hs, conn.accept_bi()).await {
                Ok(Ok(s)) => s,
                _ => {
                    metrics::counter!(crate::metrics::HANDSHAKE_FAILURES, "transport" => "quic", "reason" => "no_stream")
                        .increment(1);
                    conn.close(1u32.into(), b"no stream");
                    return;
                }
            };
            let peer = conn.remote_address();
            let mut send = session::run(task_ctx, recv, send, peer, Transport::Quic, guard).await;
            let _ = send.finish();
            // Let the last frames (welcome, refused, queued MT) arrive before closing.
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            conn.close(0u32.into(), b"bye");
        });
    }
}
