//! One unit connection, whatever the transport: handshake, then MO frames in and MT frames out
//! until the unit leaves, goes quiet, is too slow, is replaced or the gateway shuts down.
//!
//! One task per connection, and it owns everything of that connection: a small read buffer,
//! the bounded outbound queue, the idle timer. Nothing per connection lives elsewhere except
//! the session handle in the IMEI map, which is what keeps an idle connection cheap.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use codec::ack::MoNumber;
use codec::envelope::QueueName;
use codec::frame::{FrameCodec, HEADER_LEN};
use codec::handshake::{HandshakeMessage, RefuseReason, Refused};
use codec::mo::OfflineReason;
use codec::{
    encode_bus_envelope, encode_dead_letter, BusEnvelope, CorrelationId, DeadLetter, MoMessage,
    MoType, Transport,
};
use futures_util::StreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use super::{ConnGuard, Ctx, PresenceMsg, ShardMsg};
use crate::directory::UnitCredentials;
use crate::metrics as m;
use crate::presence::StatusReason;
use crate::proto::handshake::{Admitted, Handshake, Lookup, Outcome};
use crate::proto::rate::TokenBucket;

/// Why the shard (or a newer connection) closed a session.
pub(crate) const CLOSE_SHUTDOWN: u8 = 0;
pub(crate) const CLOSE_REPLACED: u8 = 1;
pub(crate) const CLOSE_SLOW: u8 = 2;
/// The unit's credentials changed (`control::recheck`).
pub(crate) const CLOSE_CREDENTIALS: u8 = 3;

/// How the rest of the gateway reaches a live session.
#[derive(Clone, Debug)]
pub(crate) struct SessionHandle {
    pub(crate) id: u64,
    /// MT frames (payloads) to write, bounded: a unit that does not drain it is disconnected.
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) close: CancellationToken,
    pub(crate) close_reason: Arc<AtomicU8>,
    pub(crate) transport: Transport,
    /// What the unit was admitted with, to tell whether a credential change concerns this
    /// session (its `Debug` leaves the key out).
    pub(crate) credentials: Arc<UnitCredentials>,
}

impl SessionHandle {
    pub(crate) fn close(&self, reason: u8) {
        self.close_reason.store(reason, Ordering::Relaxed);
        self.close.cancel();
    }
}

/// Initial read buffer: handshake messages and typical MO messages are ~100 bytes. The buffer
/// grows for a larger frame (up to `max_frame`) and is what an idle connection costs.
const READ_BUFFER: usize = 256;

/// Serves one connection until it ends; returns the write half so the transport can close it
/// its own way.
pub(crate) async fn run<R, W>(
    ctx: Arc<Ctx>,
    rd: R,
    mut wr: W,
    peer: SocketAddr,
    transport: Transport,
    _guard: ConnGuard,
) -> W
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut frames =
        FramedRead::with_capacity(rd, FrameCodec::new(ctx.config.max_frame), READ_BUFFER);
    let started = Instant::now();
    // Before the directory lookup: see `Ctx::credential_changes`.
    let changes_before = ctx.credential_changes.load(Ordering::SeqCst);
    let admitted = match handshake(&ctx, &mut frames, &mut wr, peer, transport).await {
        Some(a) => a,
        None => return wr,
    };
    metrics::counter!(m::HANDSHAKES, "transport" => transport.as_str()).increment(1);
    metrics::histogram!(m::HANDSHAKE_DURATION, "transport" => transport.as_str())
        .record(started.elapsed().as_secs_f64());
    let mut session = Session {
        // A v2 hello always has a boot id (the handshake refuses one without); `None` means
        // the v1 protocol, whose MO frames carry no number and get no acknowledgement.
        boot: if admitted.version >= codec::handshake::VERSION_ACK {
            admitted.boot
        } else {
            None
        },
        imei: Arc::from(admitted.unit.imei.as_str()),
        credentials: Arc::new(admitted.unit),
        changes_before,
        ident: admitted.ident,
        transport,
        offline: None,
    };
    session.serve(&ctx, frames, &mut wr).await;
    wr
}

async fn handshake<R, W>(
    ctx: &Ctx,
    frames: &mut FramedRead<R, FrameCodec>,
    wr: &mut W,
    peer: SocketAddr,
    transport: Transport,
) -> Option<Admitted>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let deadline = Instant::now() + ctx.config.handshake_timeout();
    let ip_identity = ctx
        .config
        .ip_network
        .as_deref()
        .map(|n| (Arc::<str>::from(n), peer.ip()));
    let mut hs = Handshake::new(
        deadline.into_std(),
        rand::random(),
        (crate::unix_ms() / 1000) as u64,
        ip_identity,
    );
    let write_timeout = ctx.config.write_timeout();
    let fail = |reason: &'static str| {
        metrics::counter!(m::HANDSHAKE_FAILURES, "transport" => transport.as_str(), "reason" => reason)
            .increment(1);
        None
    };
    loop {
        if let Some(out) = hs.poll_transmit() {
            if write_frame(wr, &out, write_timeout).await.is_err() {
                return fail("write_failed");
            }
        }
        match hs.outcome() {
            Some(Outcome::Admitted(a)) => return Some((**a).clone()),
            Some(Outcome::Failed(f)) => return fail(f.as_str()),
            None => {}
        }
        if let Some(lookup) = hs.poll_lookup() {
            let dir = &ctx.deps.directory;
            let found = match &lookup {
                Lookup::Imei(imei) => timeout_at(deadline, dir.lookup_imei(imei)).await,
                Lookup::Ip { network, ip } => {
                    timeout_at(deadline, dir.lookup_ip(network, *ip)).await
                }
            };
            match found {
                Ok(found) => hs.handle_lookup(found, Instant::now().into_std()),
                Err(_) => hs.handle_timeout(Instant::now().into_std()),
            }
            continue;
        }
        match timeout_at(deadline, next_frame(frames)).await {
            Err(_) => hs.handle_timeout(Instant::now().into_std()),
            Ok(Some(Ok(payload))) if payload.is_empty() => {} // keepalive
            Ok(Some(Ok(payload))) => hs.handle_frame(&payload, Instant::now().into_std()),
            Ok(Some(Err(e))) => {
                metrics::counter!(m::DECODE_ERRORS, "kind" => "frame").increment(1);
                tracing::debug!(%peer, error = %e, "bad frame during handshake");
                return fail("frame_error");
            }
            Ok(None) => return fail("closed"),
        }
    }
}

/// A `refused` handshake message.
fn refused(reason: RefuseReason, info: Option<&str>) -> Vec<u8> {
    let mut payload = Vec::new();
    codec::encode_handshake(
        &HandshakeMessage::Refused(Refused { reason, info }),
        &mut payload,
    );
    payload
}

/// Tells a unit the gateway is full, without waiting on it.
pub(crate) fn busy_frame() -> Vec<u8> {
    let payload = refused(RefuseReason::ServerBusy, None);
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

struct Session {
    /// `Some(boot id)` when the session speaks version 2 (numbered MO frames, acknowledged).
    boot: Option<u32>,
    imei: Arc<str>,
    credentials: Arc<UnitCredentials>,
    /// `Ctx::credential_changes` before the handshake's directory lookup.
    changes_before: u64,
    ident: Option<String>,
    transport: Transport,
    /// What the unit's offline notice said, for the disconnect record.
    offline: Option<(OfflineReason, Option<String>)>,
}

/// How a session ended (metric label and presence record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ClosedByUnit,
    Inactivity,
    FrameError,
    WriteFailed,
    Shutdown,
    Replaced,
    Slow,
    BusClosed,
    CredentialsChanged,
}

impl End {
    const fn as_str(self) -> &'static str {
        match self {
            Self::ClosedByUnit => "closed_by_unit",
            Self::Inactivity => "inactivity",
            Self::FrameError => "frame_error",
            Self::WriteFailed => "write_failed",
            Self::Shutdown => "shutdown",
            Self::Replaced => "replaced",
            Self::Slow => "slow_unit",
            Self::BusClosed => "bus_closed",
            Self::CredentialsChanged => "credentials_changed",
        }
    }
}

impl Session {
    async fn serve<R, W>(
        &mut self,
        ctx: &Arc<Ctx>,
        mut frames: FramedRead<R, FrameCodec>,
        wr: &mut W,
    ) where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let outbox = Arc::new(Outbox::new(ctx.config.session_queue));
        let handle = super::SessionHandle {
            id: ctx.next_session_id(),
            outbox: Arc::clone(&outbox),
            close: ctx.sessions_closing.child_token(),
            close_reason: Arc::new(AtomicU8::new(CLOSE_SHUTDOWN)),
            transport: self.transport,
            credentials: Arc::clone(&self.credentials),
        };
        if let Some(old) = ctx.sessions.insert(Arc::clone(&self.imei), handle.clone()) {
            old.close(CLOSE_REPLACED);
        }
        if ctx.credential_changes.load(Ordering::SeqCst) != self.changes_before {
            // A credential change was acted on during this handshake, perhaps before this
            // session was in the map: check the key this unit proved is still the one.
            super::control::recheck(ctx, &self.imei).await;
        }
        ctx.deps
            .registry
            .claim(&self.imei, &ctx.config.node_id)
            .await;
        ctx.presence(PresenceMsg::Online(
            Arc::clone(&self.imei),
            self.transport,
            crate::unix_ms(),
        ))
        .await;
        ctx.to_shard(
            &self.imei,
            ShardMsg::Attach {
                imei: Arc::clone(&self.imei),
                session: handle.clone(),
            },
        )
        .await;
        // What the database says the unit must still get; off the session's path, so a slow
        // database delays no MO.
        let (pending_ctx, pending_imei) = (Arc::clone(ctx), Arc::clone(&self.imei));
        tokio::spawn(async move { pending_ctx.load_pending(&pending_imei).await });

        let idle = ctx.config.idle_timeout();
        let write_timeout = ctx.config.write_timeout();
        let mut bucket = TokenBucket::new(
            ctx.config.rate_per_sec,
            ctx.config.rate_burst,
            Instant::now().into_std(),
        );
        let idle_timer = sleep_until(Instant::now() + idle);
        tokio::pin!(idle_timer);
        // Version 2: the highest MO number the bus has accepted and the unit not yet been told.
        let mut unacked: Option<u64> = None;
        // How many MO frames that ack will cover (for `MO_ACKED`).
        let mut covered = 0u64;

        let end = loop {
            tokio::select! {
                biased;
                () = handle.close.cancelled() => {
                    break match handle.close_reason.load(Ordering::Relaxed) {
                        CLOSE_REPLACED => End::Replaced,
                        CLOSE_SLOW => End::Slow,
                        CLOSE_CREDENTIALS => End::CredentialsChanged,
                        _ => End::Shutdown,
                    };
                }
                out = outbox.pop() => {
                    m::popped("session_out");
                    if write_frame(wr, &out, write_timeout).await.is_err() {
                        break End::WriteFailed;
                    }
                }
                () = &mut idle_timer => break End::Inactivity,
                frame = next_frame(&mut frames) => match frame {
                    None => break End::ClosedByUnit,
                    Some(Err(e)) => {
                        metrics::counter!(m::DECODE_ERRORS, "kind" => "frame").increment(1);
                        tracing::debug!(imei = %self.imei, error = %e, "frame error, closing");
                        break End::FrameError;
                    }
                    Some(Ok(payload)) => {
                        let now = Instant::now();
                        idle_timer.as_mut().reset(now + idle);
                        // A keepalive (empty) frame carries no message, but may be what
                        // was buffered behind the last MO: the pending ack is settled below.
                        if !payload.is_empty() {
                            if let Err(wait) = bucket.take(now.into_std()) {
                                metrics::counter!(m::RATE_LIMITED).increment(1);
                                tokio::time::sleep(wait).await;
                            }
                            let Some(boot) = self.boot else {
                                if !self.handle_mo(ctx, &payload, CorrelationId(rand::random())).await {
                                    break End::BusClosed;
                                }
                                continue;
                            };
                            // This frame and the whole frames already buffered behind it go to
                            // the bus together, in order: on the disk bus they share one group
                            // commit instead of waiting for one each.
                            let mut batch = vec![payload];
                            let mut broken = None;
                            while batch.len() < V2_PUBLISH_BATCH
                                && matches!(
                                    codec::frame::check(frames.read_buffer(), ctx.config.max_frame),
                                    Ok(codec::frame::Status::Complete { .. })
                                )
                            {
                                match next_frame(&mut frames).await {
                                    Some(Ok(next)) if next.is_empty() => {}
                                    Some(Ok(next)) => {
                                        if let Err(wait) = bucket.take(Instant::now().into_std()) {
                                            metrics::counter!(m::RATE_LIMITED).increment(1);
                                            tokio::time::sleep(wait).await;
                                        }
                                        batch.push(next);
                                    }
                                    Some(Err(e)) => {
                                        metrics::counter!(m::DECODE_ERRORS, "kind" => "frame").increment(1);
                                        tracing::debug!(imei = %self.imei, error = %e, "frame error, closing");
                                        broken = Some(End::FrameError);
                                        break;
                                    }
                                    None => {
                                        broken = Some(End::ClosedByUnit);
                                        break;
                                    }
                                }
                            }
                            let mut numbered = Vec::with_capacity(batch.len());
                            for payload in &batch {
                                match codec::ack::split_sequenced(payload) {
                                    Ok(split) => numbered.push(split),
                                    Err(e) => {
                                        metrics::counter!(m::DECODE_ERRORS, "kind" => "frame").increment(1);
                                        tracing::debug!(imei = %self.imei, error = %e, "v2 frame without a sequence number, closing");
                                        broken = Some(End::FrameError);
                                        break;
                                    }
                                }
                            }
                            // What came before a broken frame is published (and not
                            // acknowledged: the connection closes; the unit sends it again).
                            if !self.handle_numbered(ctx, boot, &numbered).await {
                                break End::BusClosed;
                            }
                            if let Some(end) = broken {
                                break end;
                            }
                            // `handle_numbered` returned after the bus accepted the messages
                            // (the disk bus after its group-commit fsync, Kafka with acks=all),
                            // so an ack now is honest.
                            if let Some(&(seq, _)) = numbered.iter().max_by_key(|(seq, _)| *seq) {
                                unacked = Some(unacked.map_or(seq, |u| u.max(seq)));
                            }
                            covered += numbered.len() as u64;
                        }
                        // Coalesced: while another whole frame is already buffered, it is
                        // handled first and one ack covers both.
                        let more = matches!(
                            codec::frame::check(frames.read_buffer(), ctx.config.max_frame),
                            Ok(codec::frame::Status::Complete { .. })
                        );
                        if !more {
                            if let Some(n) = unacked.take() {
                                if self.write_ack(n, wr, write_timeout).await.is_err() {
                                    break End::WriteFailed;
                                }
                                metrics::counter!(m::MO_ACKED, "transport" => self.transport.as_str())
                                    .increment(std::mem::take(&mut covered));
                            }
                        }
                    }
                },
            }
        };

        // Drain: MT frames already queued for this unit still go out (bounded by the queue
        // size and the write timeout); nothing more is queued. Not after a credential change:
        // whoever holds this connection proved a key that is no longer the unit's, so it gets
        // no more commands, only the reason it is closed (protocol §3).
        outbox.close();
        if end == End::CredentialsChanged {
            metrics::counter!(m::SESSIONS_REVOKED).increment(1);
            let bye = refused(
                RefuseReason::CredentialsChanged,
                Some("device key changed; handshake again"),
            );
            let _ = write_frame(wr, &bye, write_timeout).await;
        }
        if matches!(end, End::Shutdown | End::ClosedByUnit | End::Inactivity) {
            while let Some(out) = outbox.try_pop() {
                m::popped("session_out");
                if write_frame(wr, &out, write_timeout).await.is_err() {
                    break;
                }
            }
        }
        let _ = timeout(write_timeout, wr.flush()).await;

        metrics::counter!(m::DISCONNECTS, "reason" => end.as_str()).increment(1);
        ctx.sessions.remove_if(&self.imei, |_, h| h.id == handle.id);
        ctx.to_shard(
            &self.imei,
            ShardMsg::Detach {
                imei: Arc::clone(&self.imei),
                session_id: handle.id,
            },
        )
        .await;
        if !ctx.sessions.contains_key(&self.imei) {
            ctx.deps
                .registry
                .release(&self.imei, &ctx.config.node_id)
                .await;
        }
        let (reason, info) = match (end, self.offline.take()) {
            (End::Inactivity, _) => (StatusReason::Inactivity, None),
            (_, Some((r, info))) => (StatusReason::from_offline(r), info),
            (e, None) => (StatusReason::Unknown, Some(e.as_str().replace('_', " "))),
        };
        ctx.presence(PresenceMsg::Offline(
            Arc::clone(&self.imei),
            reason,
            info,
            crate::unix_ms(),
        ))
        .await;
    }

    /// Tells a version-2 unit that every MO up to `seq` is durably accepted (protocol §8.3).
    async fn write_ack<W: AsyncWrite + Unpin>(
        &self,
        seq: u64,
        wr: &mut W,
        limit: Duration,
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(12);
        codec::ack::encode_ack(&codec::ack::MoAck { seq }, &mut out);
        write_frame(wr, &out, limit).await?;
        metrics::counter!(m::MO_ACKS, "transport" => self.transport.as_str()).increment(1);
        Ok(())
    }

    /// Validates one version-1 MO message and publishes it (or its dead letter) under a
    /// random correlation id. Returns `false` when the bus is gone; `true` only after the bus
    /// accepted it.
    async fn handle_mo(
        &mut self,
        ctx: &Ctx,
        payload: &[u8],
        correlation_id: CorrelationId,
    ) -> bool {
        let prepared = self.prepare_mo(ctx, payload, correlation_id, None);
        let accepted = ctx
            .deps
            .bus
            .publish(prepared.topic, self.imei.as_bytes(), &prepared.bytes)
            .await;
        self.accepted(ctx, accepted, prepared.reply.into_iter())
            .await
    }

    /// Version-2 MO messages `(seq, message)` of boot `boot`, validated and published (or
    /// their dead letters) together and in order, each under the correlation id derived from
    /// its number (protocol §8.5). Returns `false` when the bus is gone; `true` only after
    /// the bus accepted every one.
    async fn handle_numbered(&mut self, ctx: &Ctx, boot: u32, numbered: &[(u64, &[u8])]) -> bool {
        if numbered.is_empty() {
            return true;
        }
        let prepared: Vec<PreparedMo<'_>> = numbered
            .iter()
            .map(|&(seq, message)| {
                let number = MoNumber { boot, seq };
                // The number travels too: ingest records it, so a resend is still recognised
                // after the dedupe record of its id was pruned (the unit's pruned mark).
                self.prepare_mo(
                    ctx,
                    message,
                    number.correlation_id(&self.imei),
                    Some(number),
                )
            })
            .collect();
        let key = self.imei.as_bytes();
        let messages: Vec<(&str, &[u8], &[u8])> = prepared
            .iter()
            .map(|p| (p.topic, key, p.bytes.as_slice()))
            .collect();
        let accepted = ctx.deps.bus.publish_all(&messages).await;
        let replies: Vec<CorrelationId> = prepared.iter().filter_map(|p| p.reply).collect();
        self.accepted(ctx, accepted, replies.into_iter()).await
    }

    /// After a publish: `false` (logged) when the bus refused; else tells the shard about each
    /// MT reply among the messages, so their MT is settled, and `true`.
    async fn accepted(
        &self,
        ctx: &Ctx,
        published: Result<(), bus::BusError>,
        replies: impl Iterator<Item = CorrelationId>,
    ) -> bool {
        if let Err(e) = published {
            tracing::warn!(imei = %self.imei, error = %e, "bus publish failed");
            return false;
        }
        for correlation_id in replies {
            ctx.to_shard(
                &self.imei,
                ShardMsg::Reply {
                    imei: Arc::clone(&self.imei),
                    correlation_id,
                },
            )
            .await;
        }
        true
    }

    /// Validates one MO message into what goes on the bus: its envelope on the MO or MT-reply
    /// topic, or its dead letter; notes an offline notice and counts it. `mo_number` is a
    /// version-2 MO's `(boot, seq)`.
    fn prepare_mo<'c>(
        &mut self,
        ctx: &'c Ctx,
        payload: &[u8],
        correlation_id: CorrelationId,
        mo_number: Option<MoNumber>,
    ) -> PreparedMo<'c> {
        let topics = &ctx.config.topics;
        let env = BusEnvelope {
            imei: &self.imei,
            correlation_id,
            received_at_ms: crate::unix_ms(),
            transport: self.transport,
            ident: self.ident.as_deref(),
            message: payload,
            mo_number,
        };
        if let Some(c) = &ctx.capture {
            c.record(&self.imei, self.transport, env.received_at_ms, payload);
        }
        let transport = self.transport.as_str();
        metrics::counter!(m::MO_BYTES, "transport" => transport).increment(payload.len() as u64);
        let (topic, bytes, reply) = match codec::decode_mo(payload) {
            Err(e) => {
                metrics::counter!(m::MO_MESSAGES, "type" => "invalid", "transport" => transport)
                    .increment(1);
                metrics::counter!(m::DECODE_ERRORS, "kind" => "mo").increment(1);
                metrics::counter!(m::DEAD_LETTERS, "queue" => QueueName::Mo.as_str()).increment(1);
                let dl = DeadLetter::from_bus(QueueName::Mo, &env, &e);
                (&topics.mo_dead_letter, encode_dead_letter(&dl), None)
            }
            Ok(msg) => {
                let ty = msg.message_type();
                metrics::counter!(m::MO_MESSAGES, "type" => ty.as_str(), "transport" => transport)
                    .increment(1);
                let mut reply = None;
                match msg {
                    MoMessage::Reply(r) => reply = Some(r.correlation_id),
                    MoMessage::OfflineNotice(n) => {
                        self.offline = Some((n.reason, n.info.map(str::to_owned)));
                    }
                    _ => {}
                }
                let topic = match ty {
                    MoType::Reply | MoType::CommandResponse | MoType::FinalBalance => {
                        &topics.mt_reply
                    }
                    _ => &topics.mo,
                };
                (topic, encode_bus_envelope(&env), reply)
            }
        };
        PreparedMo {
            topic,
            bytes,
            reply,
        }
    }
}

/// One MO message ready for the bus.
struct PreparedMo<'c> {
    topic: &'c str,
    bytes: Vec<u8>,
    /// The MT it answers, when it is an MT reply.
    reply: Option<CorrelationId>,
}

/// Most version-2 MO frames already buffered that are published together (the simulator's
/// window: a unit has at most that many unacknowledged).
const V2_PUBLISH_BATCH: usize = 256;

/// Writes one frame (header and payload in one buffer, one write) and flushes.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    wr: &mut W,
    payload: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    let write = async {
        wr.write_all(&frame).await?;
        wr.flush().await
    };
    timeout(limit, write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
}

async fn next_frame<R: AsyncRead + Unpin>(
    frames: &mut FramedRead<R, FrameCodec>,
) -> Option<Result<BytesMut, codec::DecodeError>> {
    frames.next().await
}
