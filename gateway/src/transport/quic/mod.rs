//! QUIC: one bidirectional stream per unit session, carrying the same frames as TCP.
//!
//! The protocol is quinn's (`quinn-proto`); the I/O around it is ours ([`driver`]), sized for
//! many idle units rather than a few busy ones.

mod conn;
mod driver;

pub(crate) use driver::Driver;

use conn::{Conn, RecvHalf, SendHalf};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use codec::Transport;
use quinn_proto::crypto::rustls::QuicServerConfig;

use crate::server::session;
use crate::server::{ConnGuard, Ctx};
use crate::tls::Identity;
use crate::{Error, GatewayConfig};

/// Transport settings sized for many small, mostly idle sessions: one stream each, small
/// windows (frames are ≤ `max_frame`), and an idle timeout above the session's own so the
/// session reports `inactivity` first.
pub(crate) fn transport_config(config: &GatewayConfig) -> quinn_proto::TransportConfig {
    let mut t = quinn_proto::TransportConfig::default();
    let window = (config.max_frame as u32).saturating_mul(4).max(16 * 1024);
    t.max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(window.into())
        .receive_window(window.into())
        .send_window(u64::from(window))
        .datagram_receive_buffer_size(None)
        // Units send frames of a few hundred bytes: the 1,200-byte minimum QUIC MTU carries
        // them, and probing for more costs each connection its probe state and packets.
        .mtu_discovery_config(None)
        .max_idle_timeout(
            Duration::from_millis(config.idle_timeout_ms.saturating_add(30_000))
                .try_into()
                .ok(),
        );
    t
}

/// Binds the QUIC socket and sets up the endpoint; [`Driver::run`] serves it.
pub(crate) fn bind(
    config: &GatewayConfig,
    identity: &Identity,
    addr: SocketAddr,
) -> Result<(std::net::UdpSocket, Arc<quinn_proto::ServerConfig>), Error> {
    let mut tls = identity.rustls_server(true)?;
    // No session tickets: with tens of thousands of units the server's 256-entry resumption
    // store cannot hold their sessions anyway, and the tickets cost every handshake two
    // messages and each connection ~0.3 KiB of crypto-stream state (docs/decisions.md).
    tls.send_tls13_tickets = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| Error::Tls(e.to_string()))?;
    let mut server = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(config)));
    let socket = udp_socket(addr, config.quic_socket_buffer)?;
    let (rcv, snd) = buffer_sizes(&socket);
    tracing::info!(%addr, receive_buffer = rcv, send_buffer = snd, "QUIC socket");
    if rcv < config.quic_socket_buffer {
        tracing::warn!(
            asked = config.quic_socket_buffer,
            got = rcv,
            "QUIC receive buffer capped by net.core.rmem_max: connect storms may lose packets"
        );
    }
    Ok((socket, Arc::new(server)))
}

/// A UDP socket bound to `addr` with `buffer` bytes asked for both directions (the kernel
/// may give less, see `GatewayConfig::quic_socket_buffer`).
pub(crate) fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer than asked is not an error, only logged.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The effective (receive, send) buffer sizes; Linux reports twice what it grants.
fn buffer_sizes(socket: &std::net::UdpSocket) -> (usize, usize) {
    let s = socket2::SockRef::from(socket);
    let half = |r: std::io::Result<usize>| r.map(|n| n / 2).unwrap_or(0);
    (half(s.recv_buffer_size()), half(s.send_buffer_size()))
}

/// One unit's session task: waits for the handshake and the unit's stream, runs the session
/// over it, then lets the last frames arrive and closes the connection.
pub(crate) async fn serve(ctx: Arc<Ctx>, conn: Arc<Conn>, peer: SocketAddr, guard: ConnGuard) {
    // Whatever happens below (a panic included), the connection is closed, so the driver
    // never keeps a connection nobody serves.
    let _close = CloseOnDrop(Arc::clone(&conn));
    let hs = ctx.config.handshake_timeout();
    match tokio::time::timeout(hs, conn.stream_opened()).await {
        Ok(Ok(())) => {}
        failed => {
            let reason = if conn.is_handshaking() || matches!(failed, Ok(Err(_))) {
                "tls"
            } else {
                "no_stream"
            };
            metrics::counter!(crate::metrics::HANDSHAKE_FAILURES, "transport" => "quic", "reason" => reason)
                .increment(1);
            conn.close(1, b"no stream");
            return;
        }
    }
    let recv = RecvHalf(Arc::clone(&conn));
    let send = SendHalf(Arc::clone(&conn));
    let _send = session::run(ctx, recv, send, peer, Transport::Quic, guard).await;
    conn.finish();
    // Let the last frames (welcome, refused, queued MT) arrive before closing.
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.send_finished()).await;
}

struct CloseOnDrop(Arc<Conn>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close(0, b"bye");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Linux grants at most (`net.core.rmem_max`/`wmem_max`), where readable.
    fn kernel_max(name: &str) -> Option<usize> {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    #[test]
    fn udp_socket_gets_the_buffer_asked_up_to_the_kernel_cap() {
        let asked = 4 << 20;
        let socket = udp_socket(([127, 0, 0, 1], 0).into(), asked).unwrap();
        assert!(socket.local_addr().unwrap().port() != 0);
        let (rcv, snd) = buffer_sizes(&socket);
        let want = |cap: Option<usize>| cap.map_or(asked, |c| c.min(asked));
        assert!(rcv >= want(kernel_max("rmem_max")), "receive buffer {rcv}");
        assert!(snd >= want(kernel_max("wmem_max")), "send buffer {snd}");
    }
}
