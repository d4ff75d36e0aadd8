//! `load-test serve`: the gateway under test, controlled over stdin/stdout by `run` and
//! `replay` (which spawn it as a child process).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bus::memory::{MemoryBus, MemoryBusConfig};
use bus::{Bus, DiskBus, DiskBusConfig, Topics};
use codec::mt::{PaymentCategory, PaymentCommand, PaymentCommands, StatusUpdate};
use codec::{decode_bus_envelope, CorrelationId, MtMessage, Seq};
use gateway::mt::new_correlation_id;
use gateway::{
    Deps, Gateway, GatewayConfig, MemoryDirectory, MemoryPresence, MtClient, NoFallback,
    NoPendingMt, NoPresenceSink, PresenceRegistry, UnitCredentials,
};
use load_test::{device_key, imei, latency_histogram, rss_kib, MtStats, Percentiles, ServeStats};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// Which bus the gateway under test publishes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BusKind {
    /// The in-process bus (nothing durable; what the load test always used before).
    #[default]
    Memory,
    /// The durable disk bus with the shipped defaults (`bus::DiskBusConfig::default()`:
    /// group commit, fsync on), as `smartsolar serve` runs it.
    Disk,
}

impl BusKind {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }
}

/// The gateway's bus, for `serve` and passed on to it by `run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct BusArgs {
    /// The bus behind the gateway.
    #[arg(long, value_enum, default_value_t = BusKind::Memory)]
    pub(crate) bus: BusKind,
    /// The disk bus's directory (default: a new directory under the system's temp dir,
    /// removed afterwards). Must not hold another process's bus.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
}

/// The bus `serve` publishes to; a disk bus in a directory of its own is removed on drop.
struct ServeBus {
    bus: Arc<dyn Bus>,
    disk: Option<DiskBus>,
    remove: Option<PathBuf>,
}

impl ServeBus {
    fn open(args: &BusArgs) -> anyhow::Result<Self> {
        let topics = Topics::default();
        match args.bus {
            BusKind::Memory => Ok(Self {
                bus: Arc::new(MemoryBus::new(MemoryBusConfig {
                    partitions: 16,
                    capacity: 100_000,
                })),
                disk: None,
                remove: None,
            }),
            BusKind::Disk => {
                let (dir, remove) = match &args.data_dir {
                    Some(d) => (d.clone(), None),
                    None => {
                        let d = std::env::temp_dir()
                            .join(format!("load-test-bus-{}", std::process::id()));
                        (d.clone(), Some(d))
                    }
                };
                let disk = DiskBus::open(&dir, DiskBusConfig::default())
                    .with_context(|| format!("opening the disk bus in {}", dir.display()))?;
                disk.ensure_topics(&[
                    &topics.mo,
                    &topics.mt,
                    &topics.mt_reply,
                    &topics.mo_dead_letter,
                    &topics.mt_reply_dead_letter,
                ])?;
                Ok(Self {
                    bus: Arc::new(disk.clone()),
                    disk: Some(disk),
                    remove,
                })
            }
        }
    }
}

impl Drop for ServeBus {
    fn drop(&mut self) {
        if let Some(d) = &self.disk {
            d.close();
        }
        if let Some(dir) = &self.remove {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The counting consumer commits after this many messages ...
const COUNT_COMMIT_EVERY: u64 = 1024;
/// ... or this long after the oldest uncommitted one arrived, whichever comes first.
const COUNT_COMMIT_AFTER: Duration = Duration::from_millis(5);

/// Counts every message `consumer` receives into `count`, exactly: each is counted as it
/// arrives. Commits are batched, because a commit covers everything before it on its
/// partition: the newest delivery of each partition is committed every
/// [`COUNT_COMMIT_EVERY`] messages or [`COUNT_COMMIT_AFTER`], so the harness's own cost (a
/// commit per message was 5% of the gateway process's CPU on the disk bus, issue 16) stays
/// out of the gateway's figures.
async fn count_messages(mut consumer: Box<dyn bus::Consumer>, count: Arc<AtomicU64>) {
    let mut newest: HashMap<u32, bus::Delivery> = HashMap::new();
    let mut uncommitted = 0u64;
    // One timer, armed when the first uncommitted message arrives, not one per message.
    let due = tokio::time::sleep(COUNT_COMMIT_AFTER);
    tokio::pin!(due);
    loop {
        tokio::select! {
            biased;
            // `recv` of the in-process and disk buses takes a message only when it returns,
            // so a `recv` left waiting here loses nothing.
            received = consumer.recv() => {
                let Ok(d) = received else { break };
                count.fetch_add(1, Ordering::Relaxed);
                if uncommitted == 0 {
                    due.as_mut().reset(tokio::time::Instant::now() + COUNT_COMMIT_AFTER);
                }
                uncommitted += 1;
                newest.insert(d.partition, d);
                if uncommitted < COUNT_COMMIT_EVERY {
                    continue;
                }
            }
            () = &mut due, if uncommitted > 0 => {}
        }
        for (_, d) in newest.drain() {
            let _ = consumer.commit(&d).await;
        }
        uncommitted = 0;
    }
}

pub(crate) async fn serve(
    units: u32,
    http: bool,
    capture: Option<PathBuf>,
    bus_args: BusArgs,
) -> anyhow::Result<()> {
    let directory = MemoryDirectory::new();
    for i in 0..units {
        directory.insert(UnitCredentials::new(imei(i), device_key(i)));
    }
    let served = ServeBus::open(&bus_args)?;
    let bus = Arc::clone(&served.bus);
    let registry = MemoryPresence::new();
    let deps = Deps {
        bus: Arc::clone(&bus),
        directory: Arc::new(directory),
        presence: Arc::new(NoPresenceSink),
        registry: Arc::new(registry.clone()),
        fallback: Arc::new(NoFallback),
        pending: Arc::new(NoPendingMt),
    };
    let mut config = GatewayConfig::loopback("load");
    if !http {
        config.http_listen = None;
    }
    config.max_connections = 250_000;
    config.rate_per_sec = 1e6;
    config.rate_burst = 1_000_000;
    config.idle_timeout_ms = 600_000;
    config.handshake_timeout_ms = 60_000;
    config.capture_path = capture;
    let topics = Topics::default();
    let gw = Gateway::bind(config, deps).await?;
    let addrs = gw.local_addrs();
    let ready = serde_json::json!({
        "tcp": addrs.tcp, "quic": addrs.quic, "http": addrs.http,
        "cert": hex::encode(gw.certificate_der()), "pid": std::process::id(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop_rx2 = stop_rx.clone();
    let gw_task = tokio::spawn(gw.run(async move {
        let _ = stop_rx2.wait_for(|s| *s).await;
    }));

    let count = |topic: &str, group: &'static str| {
        let n = Arc::new(AtomicU64::new(0));
        let bus = Arc::clone(&bus);
        let (topic, n2) = (topic.to_owned(), Arc::clone(&n));
        async move {
            let c = bus.subscribe(&[&topic], group).await?;
            tokio::spawn(count_messages(c, n2));
            anyhow::Ok(n)
        }
    };
    let mo_count = count(&topics.mo, "load-mo").await?;
    let dead_count = count(&topics.mo_dead_letter, "load-dead").await?;
    // MT replies: round trips.
    let pending: Arc<Mutex<HashMap<CorrelationId, Instant>>> = Arc::default();
    let rtts = Arc::new(Mutex::new(latency_histogram()));
    let replies = Arc::new(AtomicU64::new(0));
    {
        let mut c = bus.subscribe(&[&topics.mt_reply], "load-mt").await?;
        let (pending, rtts, replies) = (
            Arc::clone(&pending),
            Arc::clone(&rtts),
            Arc::clone(&replies),
        );
        tokio::spawn(async move {
            while let Ok(d) = c.recv().await {
                replies.fetch_add(1, Ordering::Relaxed);
                // The MT's id is inside the unit's reply (the envelope's id is the MO's own).
                let answered = decode_bus_envelope(&d.payload)
                    .ok()
                    .and_then(|env| codec::decode_mo(env.message).ok()?.correlation_id());
                if let Some(id) = answered {
                    let sent = pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    if let Some(t) = sent {
                        let us = t.elapsed().as_micros() as u64;
                        let _ = rtts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record(us.max(1));
                    }
                }
                let _ = c.commit(&d).await;
            }
        });
    }

    let mut out = std::io::stdout();
    writeln!(out, "{ready}")?;
    out.flush()?;
    let mt = MtClient::new(Arc::clone(&bus), topics.clone());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let reply = match parts.as_slice() {
            ["stats"] => serde_json::to_value(ServeStats {
                mo_consumed: mo_count.load(Ordering::Relaxed),
                mt_replies: replies.load(Ordering::Relaxed),
                dead_letters: dead_count.load(Ordering::Relaxed),
                units_online: registry.len(),
                rss_kib: rss_kib(std::process::id()).unwrap_or(0),
                bus_batches: served.disk.as_ref().map(DiskBus::batches),
            })?,
            ["mt", rate, secs, n] => {
                let (rate, secs, n): (u32, u64, u32) = (rate.parse()?, secs.parse()?, n.parse()?);
                rtts.lock().unwrap_or_else(|e| e.into_inner()).reset();
                let stats = mt_phase(&mt, &registry, &pending, &rtts, rate, secs, n).await?;
                serde_json::to_value(stats)?
            }
            _ => serde_json::json!({"error": format!("unknown command {line:?}")}),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    // stdin closed: drain and stop.
    let _ = stop_tx.send(true);
    let _ = gw_task.await;
    drop(served);
    Ok(())
}

/// Enqueues `rate` MT commands per second for `secs` seconds to online units among the first
/// `units`, alternating status updates and DCM payment commands.
async fn mt_phase(
    mt: &MtClient,
    registry: &MemoryPresence,
    pending: &Mutex<HashMap<CorrelationId, Instant>>,
    rtts: &Mutex<hdrhistogram::Histogram<u64>>,
    rate: u32,
    secs: u64,
    units: u32,
) -> anyhow::Result<MtStats> {
    let total = u64::from(rate) * secs;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next_unit = 0u32;
    let mut misses = 0u32;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    // Each command is enqueued in a task of its own: on the disk bus an enqueue returns after
    // its group commit (~3 ms here), so enqueueing one after the other held the rate to
    // ~700/s; concurrent enqueues share commits and the schedule holds.
    let mut enqueues = tokio::task::JoinSet::new();
    while sent < total {
        interval.tick().await;
        while let Some(done) = enqueues.try_join_next() {
            done??;
        }
        // Catch up to the schedule: commands due by now.
        let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as u64).min(total);
        while sent < due {
            let i = next_unit % units.max(1);
            next_unit = next_unit.wrapping_add(1);
            let who = imei(i);
            if registry.lookup(&who).await.is_none() {
                misses += 1;
                if misses > units.max(1) * 2 {
                    bail!("no unit online for MT");
                }
                continue;
            }
            let id = new_correlation_id();
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Instant::now());
            let tx = format!("lt-{sent}");
            let commands = [PaymentCommand {
                category: PaymentCategory::Payment,
                value: 86_400,
                transaction_id: &tx,
            }];
            let msg = if sent & 1 == 0 {
                MtMessage::StatusUpdate(StatusUpdate {
                    correlation_id: id,
                    enabled: Some(true),
                    server_time: Some(sim::now_s()),
                    ..StatusUpdate::default()
                })
            } else {
                MtMessage::PaymentCommands(PaymentCommands {
                    correlation_id: id,
                    commands: Seq::new(&commands),
                })
            };
            let (mt, cbor) = (mt.clone(), codec::mt_to_vec(&msg));
            let created_ms = chrono::Utc::now().timestamp_millis();
            enqueues.spawn(async move { mt.enqueue_raw(&who, id, &cbor, created_ms).await });
            sent += 1;
        }
    }
    while let Some(done) = enqueues.join_next().await {
        done??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the last replies arrive.
    for _ in 0..50 {
        if pending.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unanswered = pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .count() as u64;
    let h = rtts.lock().unwrap_or_else(|e| e.into_inner());
    let p = Percentiles::of(&h);
    Ok(MtStats {
        sent,
        answered: sent - unanswered,
        rate: sent as f64 / elapsed,
        p50_ms: p.p50_ms,
        p90_ms: p.p90_ms,
        p99_ms: p.p99_ms,
        max_ms: p.max_ms,
    })
}
