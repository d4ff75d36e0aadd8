//! An MT shard: owns the MT state ([`UnitMt`]) of the units whose IMEI hashes to it, drives
//! their timers, and routes commands for units it does not hold.
//!
//! Everything about one unit happens in one shard task, in message order, which is what keeps a
//! unit's commands in order even when they are parked, forwarded or retried.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use codec::mo::ReplyResult;
use codec::{CorrelationId, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::outbox::PushError;
use super::session::CLOSE_SLOW;
use super::{Ctx, SessionHandle};
use crate::config::node_topic;
use crate::metrics as m;
use crate::mt::{mt_envelope, outcome_envelope, RESULT_EXPIRED, RESULT_QUEUE_FULL};
use crate::proto::mt::{EnqueueError, MtCommand, MtEvent, UnitMt};

/// Input of a shard.
pub(crate) enum ShardMsg {
    /// An MT command from the bus for a unit of this shard.
    Route { imei: Arc<str>, command: MtCommand },
    /// The record's list of what the unit must still get (read when it connected or polled),
    /// oldest first: merged into its queue in that order (see `UnitMt::merge_pending`).
    Pending {
        imei: Arc<str>,
        commands: Vec<MtCommand>,
    },
    /// A session was admitted.
    Attach {
        imei: Arc<str>,
        session: SessionHandle,
    },
    /// A session ended (ignored unless it is still the attached one).
    Detach { imei: Arc<str>, session_id: u64 },
    /// The unit answered an MT command.
    Reply {
        imei: Arc<str>,
        correlation_id: CorrelationId,
    },
    /// An HTTP unit polls `GET /rc_data`: take its queued commands.
    HttpPoll {
        imei: Arc<str>,
        reply: oneshot::Sender<Vec<MtCommand>>,
    },
    /// Hand every queued command back to the shared MT topic and stop.
    Shutdown(oneshot::Sender<()>),
}

struct Entry {
    mt: UnitMt,
    session: Option<SessionHandle>,
    /// The deadline currently in `Shard::timers` for this unit.
    timer: Option<Instant>,
    transport: Transport,
}

pub(crate) struct Shard {
    ctx: Arc<Ctx>,
    units: HashMap<Arc<str>, Entry>,
    timers: BTreeSet<(Instant, Arc<str>)>,
}

impl Shard {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            ctx,
            units: HashMap::new(),
            timers: BTreeSet::new(),
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<ShardMsg>) {
        loop {
            let next = self.timers.first().map(|(t, _)| *t);
            let msg = tokio::select! {
                msg = rx.recv() => msg,
                () = sleep_until_opt(next) => {
                    self.fire_timers().await;
                    continue;
                }
            };
            let Some(msg) = msg else { return };
            m::popped("shard");
            match msg {
                ShardMsg::Route { imei, command } => self.route(imei, command).await,
                ShardMsg::Pending { imei, commands } => self.merge_pending(imei, commands).await,
                ShardMsg::Attach { imei, session } => {
                    let transport = session.transport;
                    let e = self.entry(&imei);
                    if let Some(old) = e.session.replace(session) {
                        old.close(super::session::CLOSE_REPLACED);
                    }
                    e.transport = transport;
                    e.mt.handle_connected(Instant::now().into_std());
                    self.flush(&imei).await;
                }
                ShardMsg::Detach { imei, session_id } => {
                    if let Some(e) = self.units.get_mut(&imei) {
                        if e.session.as_ref().is_some_and(|s| s.id == session_id) {
                            e.session = None;
                            e.mt.handle_disconnected();
                        }
                    }
                    self.flush(&imei).await;
                }
                ShardMsg::Reply {
                    imei,
                    correlation_id,
                } => {
                    if let Some(e) = self.units.get_mut(&imei) {
                        e.mt.handle_reply(correlation_id, Instant::now().into_std());
                    }
                    self.flush(&imei).await;
                }
                ShardMsg::HttpPoll { imei, reply } => {
                    let commands = self
                        .units
                        .get_mut(&imei)
                        .map(|e| e.mt.drain())
                        .unwrap_or_default();
                    let _ = reply.send(commands);
                    self.flush(&imei).await;
                }
                ShardMsg::Shutdown(done) => {
                    self.hand_back().await;
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    fn entry(&mut self, imei: &Arc<str>) -> &mut Entry {
        let policy = self.ctx.policy;
        self.units.entry(Arc::clone(imei)).or_insert_with(|| Entry {
            mt: UnitMt::new(policy),
            session: None,
            timer: None,
            transport: Transport::Tcp,
        })
    }

    /// A command for a unit of this shard: queue it here if this node has the unit (or its
    /// parked commands, so order holds), else forward it to the node holding the unit, else
    /// park it here until the unit shows up or the retries run out.
    async fn route(&mut self, imei: Arc<str>, command: MtCommand) {
        if !self.units.contains_key(&imei) {
            if let Some(node) = self.remote_holder(&imei).await {
                self.forward(&imei, &node, vec![command]).await;
                return;
            }
        }
        let now = Instant::now().into_std();
        if let Err(EnqueueError::Full(c)) = self.entry(&imei).mt.enqueue(command, now) {
            self.refuse_full(&imei, &c).await;
        }
        // A parked unit may have connected to another node meanwhile.
        if self.units.get(&imei).is_some_and(|e| e.session.is_none()) {
            self.forward_if_elsewhere(&imei).await;
        }
        self.flush(&imei).await;
    }

    /// The record's commands for a unit: merged into its queue here (in the record's order,
    /// without duplicates), or all forwarded to the node that holds the unit now.
    async fn merge_pending(&mut self, imei: Arc<str>, commands: Vec<MtCommand>) {
        if commands.is_empty() {
            return;
        }
        metrics::counter!(m::MT_EVENTS, "event" => "from_record").increment(commands.len() as u64);
        if !self.units.contains_key(&imei) {
            if let Some(node) = self.remote_holder(&imei).await {
                self.forward(&imei, &node, commands).await;
                return;
            }
        }
        let now = Instant::now().into_std();
        let refused = self.entry(&imei).mt.merge_pending(commands, now);
        for c in refused {
            self.refuse_full(&imei, &c).await;
        }
        if self.units.get(&imei).is_some_and(|e| e.session.is_none()) {
            self.forward_if_elsewhere(&imei).await;
        }
        self.flush(&imei).await;
    }

    /// The unit's queue is full: the command is refused with a gateway-written outcome.
    async fn refuse_full(&self, imei: &str, command: &MtCommand) {
        metrics::counter!(m::MT_EVENTS, "event" => "refused").increment(1);
        let transport = self.units.get(imei).map_or(Transport::Tcp, |e| e.transport);
        let env = outcome_envelope(
            imei,
            command.correlation_id,
            transport,
            ReplyResult::Other(RESULT_QUEUE_FULL),
            "the unit's MT queue is full",
        );
        self.publish_reply(imei, &env).await;
    }

    /// If the registry says another node holds `imei`, hands that node every command queued
    /// here for it, in order; returns whether it did.
    async fn forward_if_elsewhere(&mut self, imei: &str) -> bool {
        let Some(node) = self.remote_holder(imei).await else {
            return false;
        };
        let cmds = self
            .units
            .get_mut(imei)
            .map(|e| e.mt.drain())
            .unwrap_or_default();
        self.forward(imei, &node, cmds).await;
        true
    }

    /// Another node that the registry says holds `imei`.
    async fn remote_holder(&self, imei: &str) -> Option<String> {
        let node = self.ctx.deps.registry.lookup(imei).await?;
        (node != self.ctx.config.node_id).then_some(node)
    }

    async fn forward(&self, imei: &str, node: &str, commands: Vec<MtCommand>) {
        let topic = node_topic(&self.ctx.config.topics, node);
        for c in commands {
            metrics::counter!(m::MT_EVENTS, "event" => "forwarded").increment(1);
            let env = mt_envelope(imei, c.correlation_id, c.created_at_ms, &c.message);
            if let Err(e) = self
                .ctx
                .deps
                .bus
                .publish(&topic, imei.as_bytes(), &env)
                .await
            {
                tracing::error!(imei, error = %e, "cannot forward an MT command");
            }
        }
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some((t, imei)) = self.timers.first().cloned() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            let Some(e) = self.units.get_mut(&imei) else {
                continue;
            };
            e.timer = None;
            // Before retrying a parked unit, look where it is now.
            if e.session.is_none() && self.forward_if_elsewhere(&imei).await {
                self.flush(&imei).await;
                continue;
            }
            if let Some(e) = self.units.get_mut(&imei) {
                e.mt.handle_timeout(now.into_std());
            }
            self.flush(&imei).await;
        }
    }

    /// Writes what the unit's MT state wants written, acts on its events, re-arms its timer and
    /// forgets a unit with nothing left.
    async fn flush(&mut self, imei: &Arc<str>) {
        let Some(e) = self.units.get_mut(imei) else {
            return;
        };
        while let Some((_, frame)) = e.mt.poll_transmit() {
            let Some(s) = &e.session else { break };
            match s.outbox.try_push(frame) {
                Ok(()) => m::pushed("session_out"),
                Err(PushError::Full) => {
                    // The unit does not read: disconnect it rather than buffer without end.
                    metrics::counter!(m::DISCONNECTS, "reason" => "slow_unit_queue").increment(1);
                    s.close(CLOSE_SLOW);
                    break;
                }
                Err(PushError::Closed) => break,
            }
        }
        let events: Vec<MtEvent> = std::iter::from_fn(|| e.mt.poll_event()).collect();
        let transport = e.transport;
        let deadline = e.mt.poll_timeout().map(Instant::from_std);
        if deadline != e.timer {
            if let Some(old) = e.timer.take() {
                self.timers.remove(&(old, Arc::clone(imei)));
            }
            if let Some(t) = deadline {
                self.timers.insert((t, Arc::clone(imei)));
            }
            if let Some(e) = self.units.get_mut(imei) {
                e.timer = deadline;
            }
        }
        if self
            .units
            .get(imei)
            .is_some_and(|e| e.session.is_none() && e.mt.is_empty())
        {
            if let Some(e) = self.units.remove(imei) {
                if let Some(t) = e.timer {
                    self.timers.remove(&(t, Arc::clone(imei)));
                }
            }
        }
        for ev in events {
            match ev {
                MtEvent::Sent { .. } => {
                    metrics::counter!(m::MT_EVENTS, "event" => "sent").increment(1);
                }
                MtEvent::Settled { .. } => {
                    metrics::counter!(m::MT_EVENTS, "event" => "settled").increment(1);
                }
                MtEvent::Unreachable {
                    correlation_id,
                    attempts,
                } => {
                    metrics::counter!(m::MT_EVENTS, "event" => "unreachable").increment(1);
                    let fallback = Arc::clone(&self.ctx.deps.fallback);
                    let imei = Arc::clone(imei);
                    // The fallback may send an SMS: never let it stall the shard.
                    tokio::spawn(async move {
                        fallback.unreachable(&imei, correlation_id, attempts).await;
                    });
                }
                MtEvent::Expired { command, sends } => {
                    metrics::counter!(m::MT_EVENTS, "event" => "expired").increment(1);
                    let env = outcome_envelope(
                        imei,
                        command.correlation_id,
                        transport,
                        ReplyResult::Other(RESULT_EXPIRED),
                        &format!("expired without a reply after {sends} sends"),
                    );
                    self.publish_reply(imei, &env).await;
                }
            }
        }
    }

    async fn publish_reply(&self, imei: &str, env: &[u8]) {
        let topic = &self.ctx.config.topics.mt_reply;
        if let Err(e) = self.ctx.deps.bus.publish(topic, imei.as_bytes(), env).await {
            tracing::error!(imei, error = %e, "cannot publish an MT outcome");
        }
    }

    /// Shutdown: every command still queued goes back on the shared MT topic, in order, for
    /// whichever gateway gets the unit next.
    async fn hand_back(&mut self) {
        let topic = self.ctx.config.topics.mt.clone();
        let units: Vec<_> = self.units.drain().collect();
        for (imei, mut e) in units {
            for c in e.mt.drain() {
                metrics::counter!(m::MT_EVENTS, "event" => "handed_back").increment(1);
                let env = mt_envelope(&imei, c.correlation_id, c.created_at_ms, &c.message);
                if let Err(err) = self
                    .ctx
                    .deps
                    .bus
                    .publish(&topic, imei.as_bytes(), &env)
                    .await
                {
                    tracing::error!(imei = %imei, error = %err, "MT command lost at shutdown");
                }
            }
        }
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How long until `created_at_ms + ttl` from now (zero if already past).
pub(crate) fn expires_at(created_at_ms: i64, ttl_ms: u64) -> Instant {
    let left = (created_at_ms.saturating_add(ttl_ms as i64) - crate::unix_ms()).max(0);
    Instant::now() + Duration::from_millis(left as u64)
}
