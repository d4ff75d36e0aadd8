//! The ingest engine: MO bus envelopes in, telemetry to the time-series
//! store, everything else to the [`MoSink`], failures to the dead-letter topic.
//!
//! ```text
//!             ┌────────────┐  by IMEI   ┌─────────┐ batches ┌──────────────┐
//!  bus (MO) ─►│ consumer   │──bounded──►│ shard i │────────►│ tsdb / sink  │
//!             │ task       │◄──done─────│ worker  │         │ / dead letter│
//!             └────────────┘            └─────────┘         └──────────────┘
//! ```
//! - **Sharding**: one worker per shard, chosen by a hash of the IMEI, so a
//!   unit's messages are applied in order while units run in parallel.
//! - **Batching**: a worker takes up to `batch_max` messages or what arrives
//!   within `batch_delay_ms` of the first, and writes their telemetry in one
//!   time-series write.
//! - **Backpressure**: shard queues are bounded and the consumer stops
//!   receiving while `max_in_flight` messages are unprocessed, so a slow
//!   store slows the bus down instead of growing memory.
//! - **Commit after processing**: the consumer commits a partition's offset
//!   only once every message up to it is done (applied or dead-lettered).
//!   Transient failures are retried with backoff and never committed past.
//! - **Graceful drain**: when `shutdown` resolves, no new message is taken;
//!   queued ones are processed and committed; after `drain_timeout_ms` the
//!   still-failing rest is left uncommitted (redelivered on the next start).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use codec::envelope::{
    decode_bus_envelope, encode_dead_letter, encode_mo_queue_envelope, format_timestamp,
    BusEnvelope, DeadLetter, IdentType, MoQueueEnvelope, QueueName,
};
use codec::mo::TelemetryBatch;
use codec::{decode_mo, CorrelationId, MoMessage, Number};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::metrics as m;
use crate::sink::{Balance, MoContext, MoHistory, MoSink, ProcessingStatus, SinkError};
use crate::tsdb::{check_point, FieldValue, Point, TimeSeries, TsdbError, TELEMETRY};
use bus::partition_for;
use bus::{Bus, BusError, Consumer, Delivery, Topics};

/// Settings of the ingest engine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Consumer group on the MO topic (processes with the same group share the work).
    pub group: String,
    /// Worker shards (parallel units).
    pub shards: usize,
    /// Messages per shard queue.
    pub shard_queue: usize,
    /// Most messages in one batch.
    pub batch_max: usize,
    /// Longest wait for a batch to fill, milliseconds.
    pub batch_delay_ms: u64,
    /// Most messages received but not yet done.
    pub max_in_flight: usize,
    /// How long the drain keeps retrying failures after shutdown, milliseconds.
    pub drain_timeout_ms: u64,
    /// First retry delay for transient failures, milliseconds (doubles up to 5 s).
    pub retry_initial_ms: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            group: "ingest".into(),
            shards: 4,
            shard_queue: 2048,
            batch_max: 512,
            batch_delay_ms: 20,
            max_in_flight: 16_384,
            drain_timeout_ms: 30_000,
            retry_initial_ms: 50,
        }
    }
}

/// Engine failures (the engine only stops on these or on shutdown).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Subscribing to the MO topic failed.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

/// What the workers share.
struct Ctx {
    bus: Arc<dyn Bus>,
    topics: Topics,
    tsdb: Arc<dyn TimeSeries>,
    sink: Arc<dyn MoSink>,
    config: EngineConfig,
    /// Becomes true when the drain deadline passes: stop retrying.
    give_up: watch::Receiver<bool>,
    /// The `queue_name` of this engine's dead letters: where a replay puts them back.
    queue: QueueName,
}

/// A processed message, reported back to the consumer task for commit.
struct Done {
    topic: String,
    partition: u32,
    offset: u64,
}

/// Runs the engine until `shutdown` resolves, then drains and returns.
///
/// Subscribes to `topics.mo` in group `config.group`; telemetry goes to
/// `tsdb`, other MO types to `sink`, undecodable or rejected messages to
/// `topics.mo_dead_letter` as the codec's JSON [`DeadLetter`]. An engine whose
/// `topics.mo` is `topics.mt_reply` (the reply engine) writes its dead letters with
/// `queue_name` `RTC-MT.Reply`, so a replay puts them back on the reply topic.
pub async fn run(
    bus: Arc<dyn Bus>,
    topics: Topics,
    tsdb: Arc<dyn TimeSeries>,
    sink: Arc<dyn MoSink>,
    config: EngineConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EngineError> {
    let shards = config.shards.max(1);
    let mut consumer = bus.subscribe(&[&topics.mo], &config.group).await?;
    let (give_up_tx, give_up) = watch::channel(false);
    let queue = if topics.mo == topics.mt_reply {
        QueueName::MtReply
    } else {
        QueueName::Mo
    };
    let ctx = Arc::new(Ctx {
        bus,
        topics,
        tsdb,
        sink,
        config: config.clone(),
        give_up,
        queue,
    });
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let mut senders = Vec::with_capacity(shards);
    let mut workers = JoinSet::new();
    for shard in 0..shards {
        let (tx, rx) = mpsc::channel(config.shard_queue.max(1));
        senders.push(tx);
        workers.spawn(worker(shard, rx, done_tx.clone(), Arc::clone(&ctx)));
    }
    drop(done_tx);

    let mut tracker = Tracker::default();
    let mut in_flight = 0usize;
    tokio::pin!(shutdown);
    tracing::info!(group = %config.group, shards, "ingest engine started");
    loop {
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => {
                in_flight -= 1;
                tracker.done(done);
                while let Ok(done) = done_rx.try_recv() {
                    in_flight -= 1;
                    tracker.done(done);
                }
                commit(&mut *consumer, &mut tracker).await;
            }
            () = &mut shutdown => break,
            r = consumer.recv(), if in_flight < config.max_in_flight.max(1) => match r {
                Ok(d) => {
                    tracker.track(&d);
                    in_flight += 1;
                    let shard = partition_for(&d.key, shards as u32) as usize;
                    metrics::counter!(m::INGEST_QUEUE_PUSHED, "shard" => shard.to_string()).increment(1);
                    // Waits while the shard's queue is full: backpressure.
                    if senders[shard].send(d).await.is_err() {
                        tracing::error!(shard, "ingest worker gone");
                        break;
                    }
                }
                Err(BusError::Closed) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "MO receive failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
        }
        metrics::gauge!(m::INGEST_IN_FLIGHT).set(in_flight as f64);
    }

    // Drain: no new messages; let the workers finish what they hold.
    tracing::info!(in_flight, "ingest engine draining");
    drop(senders);
    let drain = Duration::from_millis(config.drain_timeout_ms);
    let deadline = tokio::spawn(async move {
        tokio::time::sleep(drain).await;
        let _ = give_up_tx.send(true);
    });
    while let Some(done) = done_rx.recv().await {
        in_flight -= 1;
        tracker.done(done);
        commit(&mut *consumer, &mut tracker).await;
    }
    while workers.join_next().await.is_some() {}
    deadline.abort();
    commit(&mut *consumer, &mut tracker).await;
    metrics::gauge!(m::INGEST_IN_FLIGHT).set(in_flight as f64);
    if in_flight > 0 {
        tracing::warn!(
            in_flight,
            "drain gave up; those messages stay uncommitted and come again"
        );
    }
    tracing::info!("ingest engine stopped");
    Ok(())
}

async fn commit(consumer: &mut dyn Consumer, tracker: &mut Tracker) {
    for (topic, partition, offset) in tracker.take_commits() {
        let d = Delivery {
            topic,
            key: Bytes::new(),
            payload: Bytes::new(),
            partition,
            offset,
        };
        if let Err(e) = consumer.commit(&d).await {
            // Not fatal: those messages are delivered again and re-applied idempotently.
            tracing::warn!(error = %e, topic = %d.topic, partition, offset, "commit failed");
        }
    }
}

/// Per partition, the offsets received in order and whether each is done;
/// the commit point is the last of the leading done run.
#[derive(Default)]
struct Tracker {
    partitions: HashMap<(String, u32), VecDeque<(u64, bool)>>,
    ready: HashMap<(String, u32), u64>,
}

impl Tracker {
    fn track(&mut self, d: &Delivery) {
        self.partitions
            .entry((d.topic.clone(), d.partition))
            .or_default()
            .push_back((d.offset, false));
    }

    fn done(&mut self, d: Done) {
        let key = (d.topic, d.partition);
        let Some(q) = self.partitions.get_mut(&key) else {
            return;
        };
        if let Some(e) = q.iter_mut().find(|(o, done)| *o == d.offset && !*done) {
            e.1 = true;
        }
        let mut last = None;
        while let Some(&(o, true)) = q.front() {
            last = Some(o);
            q.pop_front();
        }
        if let Some(o) = last {
            let r = self.ready.entry(key).or_insert(o);
            *r = (*r).max(o);
        }
    }

    fn take_commits(&mut self) -> Vec<(String, u32, u64)> {
        self.ready.drain().map(|((t, p), o)| (t, p, o)).collect()
    }
}

async fn worker(
    shard: usize,
    mut rx: mpsc::Receiver<Delivery>,
    done: mpsc::UnboundedSender<Done>,
    ctx: Arc<Ctx>,
) {
    let shard_label = shard.to_string();
    let max = ctx.config.batch_max.max(1);
    let delay = Duration::from_millis(ctx.config.batch_delay_ms);
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + delay;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(d)) => batch.push(d),
                Ok(None) | Err(_) => break,
            }
        }
        metrics::counter!(m::INGEST_QUEUE_POPPED, "shard" => shard_label.clone())
            .increment(batch.len() as u64);
        metrics::histogram!(m::INGEST_BATCH_SIZE).record(batch.len() as f64);
        let started = std::time::Instant::now();
        let finished = process_batch(&ctx, &batch).await;
        metrics::histogram!(m::INGEST_BATCH_DURATION).record(started.elapsed().as_secs_f64());
        for (d, ok) in batch.iter().zip(finished) {
            if ok {
                let _ = done.send(Done {
                    topic: d.topic.clone(),
                    partition: d.partition,
                    offset: d.offset,
                });
            }
        }
    }
}

/// One decoded message of a batch.
struct Decoded<'a> {
    ctx: MoContext<'a>,
    msg: MoMessage<'a>,
}

/// Processes a batch; returns per message whether it is done (applied or
/// dead-lettered). `false` only when retries were abandoned at the drain deadline.
async fn process_batch(ctx: &Ctx, batch: &[Delivery]) -> Vec<bool> {
    let mut finished = vec![true; batch.len()];
    let mut history: Vec<MoHistory<'_>> = Vec::new();
    // Telemetry: (index in batch, its points), written together at the end.
    let mut telemetry: Vec<(usize, MoContext<'_>, Vec<Point>)> = Vec::new();

    // When the gateway received each message, for the lag histogram.
    let mut received_at_ms = Vec::with_capacity(batch.len());

    for (i, d) in batch.iter().enumerate() {
        let env = match decode_bus_envelope(&d.payload) {
            Ok(env) => {
                received_at_ms.push(env.received_at_ms);
                env
            }
            Err(e) => {
                finished[i] =
                    dead_letter_raw(ctx, d, &format!("undecodable bus envelope: {e}")).await;
                continue;
            }
        };
        let decoded = match decode_mo(env.message) {
            Ok(msg) => Decoded {
                ctx: context(&env, msg.message_type()),
                msg,
            },
            Err(e) => {
                let reason = format!("undecodable MO message: {e}");
                finished[i] = dead_letter(ctx, &env, &reason).await;
                metrics::counter!(m::INGEST_MESSAGES, "type" => "undecodable", "outcome" => "dead_letter").increment(1);
                continue;
            }
        };
        let kind = decoded.ctx.message_type.as_str();
        if let MoMessage::Telemetry(t) = decoded.msg {
            match telemetry_points(env.imei, &t) {
                Ok(points) => telemetry.push((i, decoded.ctx, points)),
                Err(e) => {
                    finished[i] =
                        reject(ctx, &env, decoded.ctx, &e.to_string(), &mut history).await;
                }
            }
            continue;
        }
        match apply(ctx, &decoded).await {
            Ok(()) => {
                metrics::counter!(m::INGEST_MESSAGES, "type" => kind, "outcome" => "processed")
                    .increment(1);
                history.push(MoHistory {
                    ctx: decoded.ctx,
                    status: ProcessingStatus::Processed,
                    info: None,
                });
            }
            Err(Failure::Abandoned) => finished[i] = false,
            Err(Failure::Rejected(reason)) => {
                finished[i] = reject(ctx, &env, decoded.ctx, &reason, &mut history).await;
            }
        }
    }

    // Telemetry of the whole batch in one write.
    if !telemetry.is_empty() {
        let all: Vec<Point> = telemetry
            .iter()
            .flat_map(|(_, _, p)| p.iter().cloned())
            .collect();
        match write_with_retry(ctx, &all).await {
            Ok(()) => {
                for (_, mctx, p) in &telemetry {
                    count_telemetry(p);
                    history.push(MoHistory {
                        ctx: *mctx,
                        status: ProcessingStatus::Processed,
                        info: None,
                    });
                }
            }
            Err(Failure::Abandoned) => {
                for (i, _, _) in &telemetry {
                    finished[*i] = false;
                }
            }
            Err(Failure::Rejected(_)) => {
                // Find the culprits: write message by message.
                for (i, mctx, p) in &telemetry {
                    match write_with_retry(ctx, p).await {
                        Ok(()) => {
                            count_telemetry(p);
                            history.push(MoHistory {
                                ctx: *mctx,
                                status: ProcessingStatus::Processed,
                                info: None,
                            });
                        }
                        Err(Failure::Abandoned) => finished[*i] = false,
                        Err(Failure::Rejected(e)) => {
                            let env =
                                decode_bus_envelope(&batch[*i].payload).expect("decoded above");
                            finished[*i] = reject(ctx, &env, *mctx, &e, &mut history).await;
                        }
                    }
                }
            }
        }
    }

    if !history.is_empty() {
        let mut delay = Duration::from_millis(ctx.config.retry_initial_ms);
        loop {
            match ctx.sink.record_mo_history(&history).await {
                Ok(()) => break,
                Err(e) => {
                    if *ctx.give_up.borrow() {
                        tracing::warn!(error = %e, "MO history not recorded; messages left uncommitted");
                        finished.iter_mut().for_each(|f| *f = false);
                        break;
                    }
                    if matches!(e, SinkError::Permanent(_)) {
                        // History is bookkeeping: losing it must not block telemetry.
                        tracing::error!(error = %e, rows = history.len(), "MO history refused");
                        break;
                    }
                    metrics::counter!(m::INGEST_RETRIES, "step" => "history").increment(1);
                    delay = backoff(ctx, delay).await;
                }
            }
        }
    }
    let now_ms = unix_ms();
    let lag = metrics::histogram!(m::INGEST_LAG);
    for r in received_at_ms {
        lag.record((now_ms - r).max(0) as f64 / 1000.0);
    }
    finished
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn count_telemetry(points: &[Point]) {
    metrics::counter!(m::INGEST_MESSAGES, "type" => "telemetry", "outcome" => "processed")
        .increment(1);
    metrics::counter!(m::INGEST_TELEMETRY_VALUES)
        .increment(points.iter().map(|p| p.fields.len() as u64).sum());
}

/// Dead-letters a message the sink or the store refused and records a failed history row.
async fn reject<'a>(
    ctx: &Ctx,
    env: &BusEnvelope<'_>,
    mctx: MoContext<'a>,
    reason: &str,
    history: &mut Vec<MoHistory<'a>>,
) -> bool {
    metrics::counter!(m::INGEST_MESSAGES, "type" => mctx.message_type.as_str(), "outcome" => "dead_letter").increment(1);
    history.push(MoHistory {
        ctx: mctx,
        status: ProcessingStatus::Failed,
        info: Some(reason.to_owned()),
    });
    dead_letter(ctx, env, reason).await
}

fn context<'a>(env: &BusEnvelope<'a>, message_type: codec::MoType) -> MoContext<'a> {
    MoContext {
        imei: env.imei,
        correlation_id: env.correlation_id,
        received_at_ms: env.received_at_ms,
        transport: env.transport,
        ident: env.ident,
        message_type,
        message: env.message,
        mo_number: env.mo_number,
    }
}

/// A telemetry batch as points of the `telemetry` measurement (record time
/// is unix seconds). Records without a storable value are skipped.
pub fn telemetry_points(imei: &str, t: &TelemetryBatch<'_>) -> Result<Vec<Point>, TsdbError> {
    let mut out = Vec::with_capacity(t.records.len());
    for r in t.records.iter() {
        let time_ns = i64::try_from(r.time)
            .ok()
            .and_then(|s| s.checked_mul(1_000_000_000))
            .ok_or_else(|| {
                TsdbError::InvalidPoint(format!("record time {} out of range", r.time))
            })?;
        let fields: Vec<(String, FieldValue)> = r
            .values
            .iter()
            .filter_map(|v| {
                let fv = match v.value {
                    Number::Int(i) => FieldValue::Int(i),
                    Number::Float(f) if f.is_finite() => FieldValue::Float(f),
                    Number::Float(_) => return None,
                };
                Some((v.field.to_owned(), fv))
            })
            .collect();
        if fields.is_empty() {
            continue;
        }
        let p = Point {
            measurement: TELEMETRY.into(),
            imei: imei.to_owned(),
            tags: Default::default(),
            fields,
            time_ns,
        };
        check_point(&p)?;
        out.push(p);
    }
    Ok(out)
}

/// Why a message could not be done.
enum Failure {
    /// Retries of a transient failure were abandoned at the drain deadline.
    Abandoned,
    /// Refused for good: dead-letter it with this reason.
    Rejected(String),
}

/// Hands a non-telemetry message to the sink, retrying transient failures.
async fn apply(ctx: &Ctx, m: &Decoded<'_>) -> Result<(), Failure> {
    let mut delay = Duration::from_millis(ctx.config.retry_initial_ms);
    loop {
        match apply_once(ctx.sink.as_ref(), m).await {
            Ok(()) => return Ok(()),
            Err(SinkError::Permanent(reason)) => return Err(Failure::Rejected(reason)),
            Err(SinkError::Transient(e)) => {
                if *ctx.give_up.borrow() {
                    tracing::warn!(error = %e, imei = m.ctx.imei, "giving up on MO at drain deadline");
                    return Err(Failure::Abandoned);
                }
                metrics::counter!(m::INGEST_RETRIES, "step" => "sink").increment(1);
                delay = backoff(ctx, delay).await;
            }
        }
    }
}

/// The balance a status report or an MT reply carries, if any, to the sink's ledger.
async fn report_balance(
    sink: &dyn MoSink,
    c: &MoContext<'_>,
    balance: Option<i64>,
    expected_expiry: Option<u64>,
) -> Result<(), SinkError> {
    if let Some(balance) = balance {
        let b = Balance {
            balance,
            expected_expiry,
        };
        sink.balance(c, &b).await?;
    }
    Ok(())
}

async fn apply_once(sink: &dyn MoSink, m: &Decoded<'_>) -> Result<(), SinkError> {
    let c = &m.ctx;
    match &m.msg {
        MoMessage::StatusReport(r) => {
            sink.status_report(c, r).await?;
            report_balance(sink, c, r.balance, r.expected_expiry).await?;
        }
        MoMessage::CellReport(r) => sink.cell_report(c, r).await?,
        MoMessage::EventLog(l) => sink.event_log(c, l).await?,
        MoMessage::Reply(r) => {
            sink.mt_reply(c, r).await?;
            report_balance(sink, c, r.balance, r.expected_expiry).await?;
        }
        MoMessage::CommandResponse(r) => sink.command_response(c, r).await?,
        MoMessage::FinalBalance(f) => sink.final_balance(c, f).await?,
        MoMessage::OfflineNotice(n) => sink.offline_notice(c, n).await?,
        MoMessage::Telemetry(_) => {}
    }
    Ok(())
}

async fn write_with_retry(ctx: &Ctx, points: &[Point]) -> Result<(), Failure> {
    let mut delay = Duration::from_millis(ctx.config.retry_initial_ms);
    loop {
        match ctx.tsdb.write(points).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() => {
                if *ctx.give_up.borrow() {
                    tracing::warn!(error = %e, "giving up on telemetry write at drain deadline");
                    return Err(Failure::Abandoned);
                }
                metrics::counter!(m::INGEST_RETRIES, "step" => "tsdb").increment(1);
                delay = backoff(ctx, delay).await;
            }
            Err(e) => return Err(Failure::Rejected(e.to_string())),
        }
    }
}

/// Sleeps `delay` (cut short at the drain deadline) and returns the next delay.
async fn backoff(ctx: &Ctx, delay: Duration) -> Duration {
    let mut give_up = ctx.give_up.clone();
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        _ = give_up.wait_for(|g| *g) => {}
    }
    (delay * 2).min(Duration::from_secs(5))
}

/// Publishes a dead letter, retrying while the bus fails (until the drain
/// deadline). Returns whether it was published.
async fn publish_dead_letter(ctx: &Ctx, key: &[u8], dl: &DeadLetter<'_>) -> bool {
    let body = encode_dead_letter(dl);
    let mut delay = Duration::from_millis(ctx.config.retry_initial_ms);
    loop {
        match ctx
            .bus
            .publish(&ctx.topics.mo_dead_letter, key, &body)
            .await
        {
            Ok(()) => {
                metrics::counter!(m::INGEST_DEAD_LETTERS, "queue" => ctx.queue.as_str())
                    .increment(1);
                return true;
            }
            Err(e) => {
                if *ctx.give_up.borrow() {
                    tracing::error!(error = %e, "dead letter not published; message left uncommitted");
                    return false;
                }
                metrics::counter!(m::INGEST_RETRIES, "step" => "dead_letter").increment(1);
                delay = backoff(ctx, delay).await;
            }
        }
    }
}

async fn dead_letter(ctx: &Ctx, env: &BusEnvelope<'_>, reason: &str) -> bool {
    tracing::warn!(imei = env.imei, correlation_id = %env.correlation_id, reason, "MO dead-lettered");
    let dl = DeadLetter::from_bus(ctx.queue, env, reason);
    publish_dead_letter(ctx, env.imei.as_bytes(), &dl).await
}

/// Dead-letters bytes that are not even a bus envelope: the payload goes in
/// the MO queue envelope's `message` (base64) with the bus key as `ident`.
async fn dead_letter_raw(ctx: &Ctx, d: &Delivery, reason: &str) -> bool {
    use base64::Engine as _;
    tracing::warn!(key = %String::from_utf8_lossy(&d.key), reason, "undecodable bus message dead-lettered");
    metrics::counter!(m::INGEST_MESSAGES, "type" => "undecodable", "outcome" => "dead_letter")
        .increment(1);
    let now_ms = unix_ms();
    let env = MoQueueEnvelope {
        ident: String::from_utf8_lossy(&d.key).into_owned().into(),
        message: base64::engine::general_purpose::STANDARD
            .encode(&d.payload)
            .into(),
        correlation_id: CorrelationId::default(),
        timestamp: format_timestamp(now_ms).into(),
        ident_type: IdentType::Imei,
    };
    let dl = DeadLetter {
        queue_name: ctx.queue,
        reason: reason.to_owned().into(),
        payload: encode_mo_queue_envelope(&env).into(),
    };
    publish_dead_letter(ctx, &d.key, &dl).await
}

#[cfg(test)]
mod tests;
