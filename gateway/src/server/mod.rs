//! The running gateway: shared context, start-up (`bind`) and the shutdown sequence (`run`).

mod consumer;
mod control;
mod outbox;
pub(crate) mod session;
pub(crate) mod shard;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bus::Consumer;
use bytes::Bytes;
use codec::Transport;
use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics as m;
use crate::presence::StatusReason;
use crate::proto::mt::{MtCommand, MtPolicy};
use crate::tls::Identity;
use crate::{transport, Deps, Error, GatewayConfig};

pub(crate) use session::SessionHandle;
pub(crate) use shard::ShardMsg;

/// Consumer group of the shared MT topic (one per deployment: each command reaches one node).
pub(crate) const MT_GROUP: &str = "rtc-gateway";

/// Longest wait for the record of a unit's pending MT commands; a record not read in time is
/// read again when the unit next connects or polls.
const PENDING_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by every task of one gateway.
pub(crate) struct Ctx {
    pub(crate) config: GatewayConfig,
    pub(crate) deps: Deps,
    pub(crate) policy: MtPolicy,
    /// IMEI → the unit's live session on this node.
    pub(crate) sessions: DashMap<Arc<str>, SessionHandle>,
    shards: Vec<mpsc::Sender<ShardMsg>>,
    presence_tx: mpsc::Sender<PresenceMsg>,
    next_session_id: AtomicU64,
    /// Counts the credential changes this node has acted on (control messages). A handshake
    /// reads it before its directory lookup and again once its session is registered: if it
    /// moved, the key the handshake checked may be the old one, so the session is checked
    /// again (`control::recheck`).
    pub(crate) credential_changes: AtomicU64,
    connections: AtomicUsize,
    /// Cancelled at shutdown: every session finishes its current message and closes.
    pub(crate) sessions_closing: CancellationToken,
    /// Cancelled at shutdown: listeners stop accepting.
    pub(crate) stop_accept: CancellationToken,
    pub(crate) session_tasks: TaskTracker,
    /// Capture mode's writer (`capture_path`).
    pub(crate) capture: Option<crate::capture::Capture>,
}

impl Ctx {
    pub(crate) fn shard_for(&self, imei: &str) -> &mpsc::Sender<ShardMsg> {
        &self.shards[crate::shard_index(imei, self.shards.len())]
    }

    /// Sends to the unit's shard, waiting while it is busy (bounded queue).
    pub(crate) async fn to_shard(&self, imei: &str, msg: ShardMsg) {
        m::pushed("shard");
        if self.shard_for(imei).send(msg).await.is_err() {
            tracing::debug!(imei, "shard gone (shutting down)");
        }
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Admits one more connection unless `max_connections` are held.
    pub(crate) fn admit_connection(self: &Arc<Self>, transport: Transport) -> Option<ConnGuard> {
        let held = self.connections.fetch_add(1, Ordering::AcqRel);
        if held >= self.config.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!(m::CONNECTIONS_REFUSED, "transport" => transport.as_str())
                .increment(1);
            return None;
        }
        metrics::counter!(m::CONNECTIONS_ACCEPTED, "transport" => transport.as_str()).increment(1);
        metrics::gauge!(m::CONNECTIONS, "transport" => transport.as_str()).increment(1.0);
        Some(ConnGuard {
            ctx: Arc::clone(self),
            transport,
        })
    }

    /// Reads the record of what `imei` must still get and hands it to the unit's shard, which
    /// merges it into the unit's queue (in the record's order, without duplicates). Called
    /// after a session's `Attach` and before an HTTP poll takes the queue, so neither a
    /// restarted gateway nor a lost bus message keeps a command from the unit.
    pub(crate) async fn load_pending(&self, imei: &Arc<str>) {
        let commands = match tokio::time::timeout(PENDING_TIMEOUT, self.deps.pending.pending(imei))
            .await
        {
            Ok(c) => c,
            Err(_) => {
                tracing::warn!(imei = %imei, "pending MT commands not read in time; read on the next connect");
                return;
            }
        };
        if commands.is_empty() {
            return;
        }
        // A fresh time to live: the record, not the first send, says the unit must get it.
        let now = crate::unix_ms();
        let expires_at = shard::expires_at(now, self.config.mt.ttl_ms).into_std();
        let commands = commands
            .into_iter()
            .map(|c| MtCommand {
                correlation_id: c.correlation_id,
                message: Bytes::from(c.message),
                created_at_ms: now,
                expires_at,
            })
            .collect();
        let imei = Arc::clone(imei);
        self.to_shard(&imei.clone(), ShardMsg::Pending { imei, commands })
            .await;
    }

    pub(crate) async fn presence(&self, msg: PresenceMsg) {
        m::pushed("presence");
        let _ = self.presence_tx.send(msg).await;
    }
}

/// Held by a connection's task; releases the connection slot when dropped.
pub(crate) struct ConnGuard {
    ctx: Arc<Ctx>,
    transport: Transport,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.ctx.connections.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!(m::CONNECTIONS, "transport" => self.transport.as_str()).decrement(1.0);
    }
}

/// For the presence worker, which calls the [`crate::PresenceSink`] in order.
pub(crate) enum PresenceMsg {
    Online(Arc<str>, Transport, i64),
    Offline(Arc<str>, StatusReason, Option<String>, i64),
    Stop(oneshot::Sender<()>),
}

/// The addresses the listeners are bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddrs {
    /// QUIC (UDP).
    pub quic: Option<SocketAddr>,
    /// Framed TCP.
    pub tcp: Option<SocketAddr>,
    /// Legacy HTTP.
    pub http: Option<SocketAddr>,
}

/// A bound TCP listener and, when it speaks TLS, its acceptor.
type TcpWithTls = (tokio::net::TcpListener, Option<tokio_rustls::TlsAcceptor>);

/// A bound, not yet running gateway.
pub struct Gateway {
    ctx: Arc<Ctx>,
    quic: Option<transport::quic::Driver>,
    tcp: Option<TcpWithTls>,
    http: Option<TcpWithTls>,
    shard_rx: Vec<mpsc::Receiver<ShardMsg>>,
    presence_rx: mpsc::Receiver<PresenceMsg>,
    consumers: Vec<Box<dyn Consumer>>,
    control: Box<dyn Consumer>,
    certificate: Vec<u8>,
}

impl Gateway {
    /// Binds the listeners and joins the MT consumer groups.
    pub async fn bind(config: GatewayConfig, deps: Deps) -> Result<Self, Error> {
        config.validate()?;
        let identity = Identity::load(&config)?;
        let certificate = identity
            .chain
            .first()
            .map(|c| c.to_vec())
            .unwrap_or_default();

        let quic = match config.quic_listen {
            Some(addr) => Some(transport::quic::bind(&config, &identity, addr)?),
            None => None,
        };
        let tcp = match config.tcp_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let tls = if config.tcp_tls {
                    Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                        identity.rustls_server(false)?,
                    )))
                } else {
                    None
                };
                Some((listener, tls))
            }
            None => None,
        };
        let http = match config.http_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                let tls = if config.http_uses_tls() {
                    Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                        identity.rustls_https()?,
                    )))
                } else {
                    None
                };
                Some((listener, tls))
            }
            None => None,
        };

        let shards = if config.shards == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            config.shards
        };
        let (shard_tx, shard_rx): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| mpsc::channel(config.shard_queue.max(1)))
            .unzip();
        let (presence_tx, presence_rx) = mpsc::channel(4096);

        let node_topic = config.node_topic();
        let shared = deps.bus.subscribe(&[&config.topics.mt], MT_GROUP).await?;
        let own = deps
            .bus
            .subscribe_sole(&[&node_topic], &format!("{MT_GROUP}.{}", config.node_id))
            .await?;
        // Every gateway reads every control message: a group of its own.
        let control = deps
            .bus
            .subscribe_sole(
                &[&config.topics.gateway_control],
                &rtc::control::group(&config.node_id),
            )
            .await?;

        let capture = match &config.capture_path {
            Some(path) => {
                tracing::warn!(path = %path.display(), "capture mode: recording every MO message");
                Some(crate::capture::Capture::open(path)?)
            }
            None => None,
        };
        let ctx = Arc::new(Ctx {
            policy: config.mt.policy(),
            config,
            deps,
            sessions: DashMap::new(),
            shards: shard_tx,
            presence_tx,
            next_session_id: AtomicU64::new(1),
            credential_changes: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            sessions_closing: CancellationToken::new(),
            stop_accept: CancellationToken::new(),
            session_tasks: TaskTracker::new(),
            capture,
        });
        let quic = match quic {
            Some((socket, server)) => Some(transport::quic::Driver::new(
                Arc::clone(&ctx),
                socket,
                server,
            )?),
            None => None,
        };
        Ok(Self {
            ctx,
            quic,
            tcp,
            http,
            shard_rx,
            presence_rx,
            consumers: vec![shared, own],
            control,
            certificate,
        })
    }

    /// Where the listeners are.
    pub fn local_addrs(&self) -> LocalAddrs {
        LocalAddrs {
            quic: self.quic.as_ref().and_then(|d| d.local_addr().ok()),
            tcp: self.tcp.as_ref().and_then(|(l, _)| l.local_addr().ok()),
            http: self.http.as_ref().and_then(|(l, _)| l.local_addr().ok()),
        }
    }

    /// The server certificate (DER), for clients to trust in tests and development.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }

    /// This gateway's node id.
    pub fn node_id(&self) -> &str {
        &self.ctx.config.node_id
    }

    /// Runs until `shutdown` resolves, then drains (see [`crate::run`]).
    pub async fn run(self, shutdown: impl Future + Send) {
        let Self {
            ctx,
            quic,
            tcp,
            http,
            shard_rx,
            presence_rx,
            consumers,
            control,
            ..
        } = self;
        let background = TaskTracker::new();

        let shard_tasks: Vec<_> = shard_rx
            .into_iter()
            .map(|rx| tokio::spawn(shard::Shard::new(Arc::clone(&ctx)).run(rx)))
            .collect();
        let presence_task = tokio::spawn(presence_worker(Arc::clone(&ctx), presence_rx));

        let stop_consumers = CancellationToken::new();
        let feeds = consumers
            .into_iter()
            .map(|c| (c, consumer::Feed::Mt))
            .chain([(control, consumer::Feed::Control)]);
        for (c, feed) in feeds {
            background.spawn(consumer::run(
                Arc::clone(&ctx),
                c,
                stop_consumers.clone(),
                feed,
            ));
        }
        // The QUIC driver serves its connections until the very end, not only while
        // accepting: sessions still drain through it after `stop_accept`.
        let close_quic = CancellationToken::new();
        let quic_task = quic.map(|driver| tokio::spawn(driver.run(close_quic.clone())));
        if let Some((listener, tls)) = tcp {
            background.spawn(transport::tcp::accept(Arc::clone(&ctx), listener, tls));
        }
        if let Some((listener, tls)) = http {
            background.spawn(transport::http::serve(Arc::clone(&ctx), listener, tls));
        }
        background.close();
        tracing::info!(node = %ctx.config.node_id, "gateway running");

        shutdown.await;
        tracing::info!(node = %ctx.config.node_id, "gateway draining");

        // 1. No new units, no new MT commands.
        ctx.stop_accept.cancel();
        stop_consumers.cancel();
        background.wait().await;
        // 2. Sessions finish the message in hand, flush queued writes, close.
        ctx.sessions_closing.cancel();
        ctx.session_tasks.close();
        let grace = Duration::from_millis(ctx.config.shutdown_grace_ms);
        if tokio::time::timeout(grace, ctx.session_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("sessions still open after the shutdown grace period");
        }
        // 3. Shards hand undelivered MT commands back to the shared MT topic.
        for tx in &ctx.shards {
            let (done, wait) = oneshot::channel();
            if tx.send(ShardMsg::Shutdown(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        for t in shard_tasks {
            let _ = t.await;
        }
        // 4. Presence records written.
        let (done, wait) = oneshot::channel();
        ctx.presence(PresenceMsg::Stop(done)).await;
        let _ = wait.await;
        let _ = presence_task.await;
        close_quic.cancel();
        if let Some(task) = quic_task {
            let _ = task.await;
        }
        if let Some(capture) = ctx.capture.clone() {
            let _ = tokio::task::spawn_blocking(move || capture.flush_blocking()).await;
        }
        tracing::info!(node = %ctx.config.node_id, "gateway stopped");
    }
}

async fn presence_worker(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<PresenceMsg>) {
    while let Some(msg) = rx.recv().await {
        m::popped("presence");
        match msg {
            PresenceMsg::Online(imei, transport, at) => {
                ctx.deps.presence.connected(&imei, transport, at).await;
            }
            PresenceMsg::Offline(imei, reason, info, at) => {
                ctx.deps
                    .presence
                    .disconnected(&imei, reason, info, at)
                    .await;
            }
            PresenceMsg::Stop(done) => {
                let _ = done.send(());
                return;
            }
        }
    }
}
