//! Framed TCP, optionally inside TLS.

use std::sync::Arc;

use codec::Transport;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::server::session::{self, busy_frame};
use crate::server::Ctx;

pub(crate) async fn accept(ctx: Arc<Ctx>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    while let Some((stream, peer)) = super::accept_until(&listener, &ctx.stop_accept, "tcp").await {
        let Some(guard) = ctx.admit_connection(Transport::Tcp) else {
            let _ = stream.try_write(&busy_frame());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let task_ctx = Arc::clone(&ctx);
        let tls = tls.clone();
        ctx.session_tasks.spawn(async move {
            match tls {
                None => {
                    let (rd, wr) = stream.into_split();
                    let mut wr = session::run(task_ctx, rd, wr, peer, Transport::Tcp, guard).await;
                    let _ = wr.shutdown().await;
                }
                Some(acceptor) => {
                    let hs = task_ctx.config.handshake_timeout();
                    match tokio::time::timeout(hs, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let (rd, wr) = tokio::io::split(stream);
                            let mut wr =
                                session::run(task_ctx, rd, wr, peer, Transport::Tcp, guard).await;
                            let _ = wr.shutdown().await;
                        }
                        _ => {
                            metrics::counter!(crate::metrics::HANDSHAKE_FAILURES, "transport" => "tcp", "reason" => "tls")
                                .increment(1);
                        }
                    }
                }
            }
        });
    }
}
