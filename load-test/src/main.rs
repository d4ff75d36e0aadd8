//! `load-test`: simulated units against a gateway, or captured traffic played back; reports
//! connections held, memory per idle connection, MO throughput, MT round-trip percentiles,
//! handshake and HTTP latency, errors, and writes a JSON summary. Loopback only; every run is
//! bounded (`--max-secs`) and stops by itself.
//!
//! ```text
//! load-test run --tcp 15000 --quic 35000 --http 100 --periodic-secs 30 --mo-secs 10 \
//!     --mt-rate 1000 --mt-secs 10 --storm-percent 20 --out summary.json
//! load-test run --tcp 200 --quic 50 --capture traffic.jsonl --mo-secs 0 --mt-secs 0
//! load-test replay traffic.jsonl --speed 10 --clones 20 --out replay.json
//! ```
//! `run` and `replay` spawn `load-test serve` (the gateway; `--bus memory|disk`) as a child
//! process and talk to it over stdin/stdout. Framed units speak protocol version 2 unless
//! `--protocol 1`.

mod target;
mod track;
mod unit;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bus::memory::{MemoryBus, MemoryBusConfig};
use bus::{Bus, DiskBus, DiskBusConfig, Topics};
use clap::{Parser, Subcommand};
use codec::mt::{PaymentCategory, PaymentCommand, PaymentCommands, StatusUpdate};
use codec::{decode_bus_envelope, CorrelationId, MtMessage, Seq};
use gateway::mt::new_correlation_id;
use gateway::{
    Deps, Gateway, GatewayConfig, MemoryDirectory, MemoryPresence, MtClient, NoFallback,
    NoPendingMt, NoPresenceSink, PresenceRegistry, UnitCredentials,
};
use indicatif::{ProgressBar, ProgressStyle};
use load_test::{
    device_key, ensure_loopback, imei, latency_histogram, rss_kib, Errors, MtStats, Percentiles,
    ReplaySummary, ServeStats, Summary,
};
use sim::UnitConn;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{watch, Semaphore};
use unit::{Behaviour, Phase, Shared, Target, UnitSpec};

/// Hard caps, so a typo cannot take the machine down.
const MAX_UNITS: u32 = 200_000;
const MAX_MT_RATE: u32 = 100_000;

#[derive(Parser)]
#[command(
    name = "load-test",
    about = "Load generator for the SMARTSolar RTC gateway (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a gateway (N known units, the bus of `--bus`) controlled over stdin/stdout.
    Serve {
        /// Units in the directory.
        #[arg(long)]
        units: u32,
        /// Enable the legacy HTTP listener.
        #[arg(long)]
        http: bool,
        /// Capture mode: write what units send to this file.
        #[arg(long)]
        capture: Option<PathBuf>,
        #[command(flatten)]
        bus: BusArgs,
    },
    /// Spawn `serve`, connect simulated units, run the phases, write a JSON summary.
    Run(Box<RunArgs>),
    /// Spawn `serve` and play a capture file back with many units cloned from it.
    Replay(ReplayArgs),
}

/// Which bus the gateway under test publishes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
enum BusKind {
    /// The in-process bus (nothing durable; what the load test always used before).
    #[default]
    Memory,
    /// The durable disk bus with the shipped defaults (`bus::DiskBusConfig::default()`:
    /// group commit, fsync on), as `smartsolar serve` runs it.
    Disk,
}

impl BusKind {
    const fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }
}

/// The gateway's bus, for `serve` and passed on to it by `run`.
#[derive(clap::Args, Debug, Clone, Default)]
struct BusArgs {
    /// The bus behind the gateway.
    #[arg(long, value_enum, default_value_t = BusKind::Memory)]
    bus: BusKind,
    /// The disk bus's directory (default: a new directory under the system's temp dir,
    /// removed afterwards). Must not hold another process's bus.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The unit protocol version of the framed units: 2 (numbered MO, acknowledgements, a
    /// bounded window of unacknowledged MO) or 1 (no acknowledgements; earlier figures).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    protocol: u8,
    /// Self-contained mode: the bus of the spawned gateway.
    #[command(flatten)]
    bus: BusArgs,
    /// TCP units.
    #[arg(long, default_value_t = 1000)]
    tcp: u32,
    /// QUIC units.
    #[arg(long, default_value_t = 1000)]
    quic: u32,
    /// Legacy HTTP units (poll every `--status-secs`).
    #[arg(long, default_value_t = 0)]
    http: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Seconds of realistic behaviour (periodic status, telemetry, event logs); 0 skips it.
    #[arg(long, default_value_t = 10)]
    periodic_secs: u64,
    /// Status report period per unit (seconds).
    #[arg(long, default_value_t = 60.0)]
    status_secs: f64,
    /// Telemetry period per unit (seconds).
    #[arg(long, default_value_t = 15.0)]
    telemetry_secs: f64,
    /// Event log period per unit (seconds).
    #[arg(long, default_value_t = 300.0)]
    event_secs: f64,
    /// Units that send MO back to back in the MO throughput phase.
    #[arg(long, default_value_t = 200)]
    mo_senders: u32,
    /// Seconds of the MO throughput phase (0 skips it).
    #[arg(long, default_value_t = 10)]
    mo_secs: u64,
    /// MT commands per second in the MT phase (status updates and payment commands).
    #[arg(long, default_value_t = 1000)]
    mt_rate: u32,
    /// Seconds of the MT phase (0 skips it).
    #[arg(long, default_value_t = 10)]
    mt_secs: u64,
    /// Percent of the framed units that drop and reconnect at once at the end (0 skips it).
    #[arg(long, default_value_t = 0)]
    storm_percent: u32,
    /// Turn the gateway's capture mode on, writing to this file.
    #[arg(long)]
    capture: Option<PathBuf>,
    /// Abort the run after this many seconds.
    #[arg(long, default_value_t = 900)]
    max_secs: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Where to write the summary.
    #[arg(long, default_value = "load-test-summary.json")]
    out: PathBuf,
    /// Target mode: the API of a running deployment (`http://host:port`). Units are
    /// provisioned through it, MT is sent through it and what arrived is verified through it.
    #[arg(long)]
    api: Option<String>,
    /// Target mode: the API user (needs product create and payment rights).
    #[arg(long, requires = "api")]
    api_user: Option<String>,
    /// Target mode: the API user's password (or `LOAD_TEST_API_PASSWORD`, which keeps it out
    /// of the process list).
    #[arg(long, env = "LOAD_TEST_API_PASSWORD", hide_env_values = true)]
    api_password: Option<String>,
    /// Target mode: the gateway's framed TCP listener (TLS when `--ca-cert` is given).
    #[arg(long, requires = "api")]
    gateway_tcp: Option<String>,
    /// Target mode: the gateway's QUIC listener (needs `--ca-cert`).
    #[arg(long, requires = "api")]
    gateway_quic: Option<String>,
    /// Target mode: the gateway's legacy HTTP listener (`http://host:port` or `https://…`).
    #[arg(long, requires = "api")]
    gateway_http: Option<String>,
    /// Target mode: the certificate (PEM) units pin for TLS over TCP, QUIC and HTTPS.
    #[arg(long, requires = "api")]
    ca_cert: Option<PathBuf>,
    /// Target mode: units to use. Read when the file exists (no provisioning); written after
    /// provisioning otherwise. Columns: `imei,device_key`.
    #[arg(long, requires = "api")]
    units_csv: Option<PathBuf>,
    /// Target mode: factory requests in flight at once while provisioning.
    #[arg(long, default_value_t = 16)]
    provision_concurrency: usize,
    /// Target mode: the server's process id on this machine, to sample its RSS from /proc.
    #[arg(long, requires = "api")]
    server_pid: Option<u32>,
    /// Target mode: longest wait for what was sent to be stored, after the run (seconds).
    #[arg(long, default_value_t = 120)]
    verify_secs: u64,
    /// Target mode: a self-contained HTML chart of rates, ingest lag and MT latency.
    #[arg(long, requires = "api")]
    chart: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The capture file (gateway capture mode, `docs/operations.md`).
    file: PathBuf,
    /// Playback speed: 1 = as captured, 10 = ten times faster.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Units cloned from each captured unit.
    #[arg(long, default_value_t = 1)]
    clones: u32,
    /// Replay at most this many frames of the capture (from its start).
    #[arg(long)]
    max_frames: Option<usize>,
    /// Transport for the clones: `tcp`, `quic`, or `captured` (as captured; HTTP → TCP).
    #[arg(long, default_value = "captured")]
    transport: String,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Abort after this many seconds.
    #[arg(long, default_value_t = 900)]
    max_secs: u64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Where to write the summary.
    #[arg(long, default_value = "load-test-replay.json")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Both sides hold one descriptor per TCP unit: raise the soft limit to the hard one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if n < 65_536 => eprintln!("note: file descriptor limit is {n}"),
        Ok(_) => {}
        Err(e) => eprintln!("note: cannot raise the file descriptor limit: {e}"),
    }
    let max_secs = match &cli.cmd {
        Cmd::Serve { .. } => None,
        Cmd::Run(a) => Some(a.max_secs),
        Cmd::Replay(a) => Some(a.max_secs),
    };
    if let Some(secs) = max_secs {
        // Bounded in time whatever happens: the child `serve` stops when our stdin pipe closes.
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            eprintln!("load-test: --max-secs {secs} reached, aborting");
            std::process::exit(3);
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Serve {
            units,
            http,
            capture,
            bus,
        } => rt.block_on(serve(units, http, capture, bus)),
        Cmd::Run(a) => rt.block_on(run(*a)),
        Cmd::Replay(a) => rt.block_on(replay(a)),
    }
}

// ------------------------------------------------------------------------------------------
// serve: the gateway under test

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

async fn serve(
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

// ------------------------------------------------------------------------------------------
// The child gateway

struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pid: u32,
    tcp: SocketAddr,
    quic: SocketAddr,
    http: Option<SocketAddr>,
    cert: Vec<u8>,
}

impl Child {
    async fn spawn(
        units: u32,
        http: bool,
        capture: Option<&PathBuf>,
        bus: &BusArgs,
    ) -> anyhow::Result<Self> {
        // `LOAD_TEST_GATEWAY_WRAPPER="heaptrack -o /tmp/gw"` runs the gateway under a profiler.
        let wrapper = std::env::var("LOAD_TEST_GATEWAY_WRAPPER").unwrap_or_default();
        let mut wrapper = wrapper.split_whitespace();
        let mut cmd = match wrapper.next() {
            Some(program) => {
                let mut cmd = tokio::process::Command::new(program);
                cmd.args(wrapper).arg(std::env::current_exe()?);
                cmd
            }
            None => tokio::process::Command::new(std::env::current_exe()?),
        };
        cmd.args(["serve", "--units", &units.to_string()]);
        if http {
            cmd.arg("--http");
        }
        if let Some(c) = capture {
            cmd.arg("--capture").arg(c);
        }
        cmd.args(["--bus", bus.bus.name()]);
        if let Some(d) = &bus.data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut proc = cmd
            .spawn()
            .with_context(|| format!("starting the gateway: {:?}", cmd.as_std()))?;
        let stdin = proc.stdin.take().context("stdin")?;
        let mut lines = BufReader::new(proc.stdout.take().context("stdout")?).lines();
        // The first JSON line (a wrapper may print its own lines first).
        let ready: serde_json::Value = loop {
            let line = lines.next_line().await?.context("serve did not start")?;
            if line.starts_with('{') {
                break serde_json::from_str(&line)?;
            }
            eprintln!("{line}");
        };
        let addr = |k: &str| -> anyhow::Result<Option<SocketAddr>> {
            let a: Option<SocketAddr> = serde_json::from_value(ready[k].clone())?;
            a.map(ensure_loopback).transpose()
        };
        Ok(Self {
            tcp: addr("tcp")?.context("tcp listener")?,
            quic: addr("quic")?.context("quic listener")?,
            http: addr("http")?,
            cert: hex::decode(ready["cert"].as_str().context("cert")?)?,
            pid: ready["pid"].as_u64().context("pid")? as u32,
            proc,
            stdin,
            lines,
        })
    }

    async fn ask(&mut self, cmd: &str) -> anyhow::Result<serde_json::Value> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let line = self.lines.next_line().await?.context("serve exited")?;
        Ok(serde_json::from_str(&line)?)
    }

    async fn stats(&mut self) -> anyhow::Result<ServeStats> {
        Ok(serde_json::from_value(self.ask("stats").await?)?)
    }

    /// Closes stdin (the gateway drains and exits) and waits.
    async fn stop(self) {
        let Self {
            mut proc, stdin, ..
        } = self;
        drop(stdin);
        let _ = tokio::time::timeout(Duration::from_secs(30), proc.wait()).await;
    }

    /// Where the child gateway listens, for `units` units of its directory.
    fn target(&self, quic_units: u32, units: u32) -> anyhow::Result<Target> {
        Ok(Target {
            tcp: self.tcp,
            quic: self.quic,
            http: self.http,
            endpoints: quic_endpoints(&self.cert, quic_units)?,
            ids: (0..units)
                .map(|i| track::Identity {
                    imei: imei(i),
                    key: device_key(i),
                })
                .collect(),
            tls: None,
            http_tls: false,
        })
    }
}

/// One QUIC client endpoint (UDP socket) per 2,000 units, trusting `cert`.
fn quic_endpoints(cert: &[u8], quic_units: u32) -> anyhow::Result<Vec<quinn::Endpoint>> {
    Ok((0..quic_units.div_ceil(2000).max(1))
        .map(|_| sim::quic_endpoint(cert, Duration::from_secs(20)))
        .collect::<Result<_, _>>()?)
}

/// Samples the gateway's RSS every 500 ms; keeps the peak.
fn rss_sampler(pid: u32) -> Arc<AtomicU64> {
    let peak = Arc::new(AtomicU64::new(0));
    let p = Arc::clone(&peak);
    tokio::spawn(async move {
        while let Some(kib) = rss_kib(pid) {
            p.fetch_max(kib, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    peak
}

fn progress(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix:>10} {wide_msg}")
            .expect("valid template"),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

// ------------------------------------------------------------------------------------------
// The simulated fleet, for both modes of `run`

/// The unit tasks' shared state and the controls of the run's phases.
pub(crate) struct Fleet {
    pub(crate) shared: Arc<Shared>,
    pub(crate) phase_tx: watch::Sender<Phase>,
    storm_tx: watch::Sender<u64>,
    pub(crate) pb: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
    behaviour: Behaviour,
}

impl Fleet {
    /// The fleet's shared state and a progress bar showing its counters.
    pub(crate) fn new(a: &RunArgs, track: track::Tracking) -> Self {
        let (phase_tx, phase_rx) = watch::channel(Phase::Quiet);
        let (storm_tx, storm_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            counters: unit::Counters::default(),
            handshake_us: Mutex::new(latency_histogram()),
            http_us: Mutex::new(latency_histogram()),
            phase: phase_rx,
            storm: storm_rx,
            started: tokio::time::Instant::now(),
            track,
        });
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.05));
        let behaviour = Behaviour {
            status: secs(a.status_secs),
            telemetry: secs(a.telemetry_secs),
            event: secs(a.event_secs),
        };
        let pb = progress(a.quiet);
        let ticker = {
            let (pb, shared) = (pb.clone(), Arc::clone(&shared));
            tokio::spawn(async move {
                loop {
                    let c = &shared.counters;
                    pb.set_message(format!(
                        "online {} | handshakes {} | MO sent {} | MT answered {} | HTTP {} | \
                         errors {}",
                        c.online.load(Ordering::Relaxed),
                        c.handshakes.load(Ordering::Relaxed),
                        c.mo_sent.load(Ordering::Relaxed),
                        c.mt_answered.load(Ordering::Relaxed),
                        c.http_requests.load(Ordering::Relaxed),
                        c.connect_failures.load(Ordering::Relaxed)
                            + c.send_errors.load(Ordering::Relaxed)
                            + c.closed_by_gateway.load(Ordering::Relaxed)
                            + c.http_errors.load(Ordering::Relaxed),
                    ));
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        Self {
            shared,
            phase_tx,
            storm_tx,
            pb,
            ticker,
            behaviour,
        }
    }

    /// Connect phase: starts the framed units (`--connect-concurrency` handshakes in flight)
    /// and waits until each has connected or given up. The unit tasks, units connected, and
    /// the seconds it took.
    pub(crate) async fn connect(
        &self,
        a: &RunArgs,
        target: &Target,
    ) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, u64, f64)> {
        let (pb, c) = (&self.pb, &self.shared.counters);
        let framed = a.tcp + a.quic;
        pb.set_prefix("connect");
        let gate = Arc::new(Semaphore::new(a.connect_concurrency.max(1)));
        let t0 = Instant::now();
        let mut tasks = Vec::with_capacity((framed + a.http) as usize);
        let every = (framed / a.mo_senders.max(1)).max(1);
        for i in 0..framed {
            let permit = Arc::clone(&gate).acquire_owned().await?;
            let spec = UnitSpec {
                i,
                quic: i >= a.tcp,
                sender: a.mo_senders > 0 && i % every == 0,
                in_storm: i % 100 < a.storm_percent,
                v2: a.protocol >= 2,
            };
            tasks.push(tokio::spawn(unit::framed_unit(
                spec,
                target.clone(),
                Arc::clone(&self.shared),
                self.behaviour,
                Some(permit),
            )));
        }
        let mut last = (0, Instant::now());
        loop {
            let done =
                c.handshakes.load(Ordering::Relaxed) + c.connect_failures.load(Ordering::Relaxed);
            if done >= u64::from(framed) {
                break;
            }
            if done != last.0 {
                last = (done, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(75) {
                // Longer than one attempt plus the longest backoff: retrying units still count.
                pb.println(format!("connect phase stalled at {done}/{framed}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let connect_secs = t0.elapsed().as_secs_f64();
        let n_connected = c.handshakes.load(Ordering::Relaxed);
        pb.println(format!(
            "connected {n_connected} units in {connect_secs:.1}s ({} failed; {} first attempts \
             failed, {} retries)",
            c.connect_failures.load(Ordering::Relaxed),
            c.first_attempt_failures.load(Ordering::Relaxed),
            c.connect_retries.load(Ordering::Relaxed),
        ));
        Ok((tasks, n_connected, connect_secs))
    }

    /// Starts the legacy HTTP units (indexes after the framed ones); they start uploading
    /// with the periodic phase.
    pub(crate) fn start_http(
        &self,
        a: &RunArgs,
        target: &Target,
        tasks: &mut Vec<tokio::task::JoinHandle<()>>,
    ) {
        if target.http.is_none() {
            return;
        }
        for i in a.tcp + a.quic..a.tcp + a.quic + a.http {
            tasks.push(tokio::spawn(unit::http_unit(
                i,
                target.clone(),
                Arc::clone(&self.shared),
                self.behaviour,
            )));
        }
    }

    /// Reconnect storm: the storm's units drop and reconnect at once. (units, reconnected
    /// within 60 s, seconds until the last was back).
    pub(crate) async fn storm(&self, a: &RunArgs) -> (u64, u64, f64) {
        let c = &self.shared.counters;
        self.pb.set_prefix("storm");
        let storm_units = (0..a.tcp + a.quic)
            .filter(|i| i % 100 < a.storm_percent)
            .count() as u64;
        let before = c.reconnects.load(Ordering::Relaxed);
        let t = tokio::time::Instant::now();
        self.storm_tx.send_modify(|e| *e += 1);
        let limit = Duration::from_secs(60);
        while c.reconnects.load(Ordering::Relaxed) - before < storm_units && t.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let back = c.reconnects.load(Ordering::Relaxed) - before;
        let last_ms = c.last_reconnect_ms.load(Ordering::Relaxed);
        let secs = (last_ms as f64 / 1000.0 - t.duration_since(self.shared.started).as_secs_f64())
            .max(0.0);
        self.pb.println(format!(
            "storm: {back}/{storm_units} reconnected in {secs:.2}s"
        ));
        (storm_units, back, secs)
    }

    /// Handshake and HTTP latency percentiles, and the units' errors.
    pub(crate) fn results(&self) -> (Percentiles, Percentiles, Errors) {
        let (sh, c) = (&self.shared, &self.shared.counters);
        let of = |h: &Mutex<hdrhistogram::Histogram<u64>>| {
            Percentiles::of(&h.lock().unwrap_or_else(|e| e.into_inner()))
        };
        let errors = Errors {
            connect: c.connect_failures.load(Ordering::Relaxed),
            send: c.send_errors.load(Ordering::Relaxed),
            closed_by_gateway: c.closed_by_gateway.load(Ordering::Relaxed),
            http: c.http_errors.load(Ordering::Relaxed),
        };
        (of(&sh.handshake_us), of(&sh.http_us), errors)
    }

    /// Tells every unit to stop and waits (5 s each at most) for their tasks.
    pub(crate) async fn stop(&self, tasks: Vec<tokio::task::JoinHandle<()>>) {
        self.phase_tx.send_replace(Phase::Stop);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.ticker.abort();
        self.pb.finish_and_clear();
    }
}

// ------------------------------------------------------------------------------------------
// run: simulated units and the report

async fn run(a: RunArgs) -> anyhow::Result<()> {
    if a.api.is_some() {
        return target::run(a).await;
    }
    let t_run = Instant::now();
    let framed = a.tcp + a.quic;
    let units = framed + a.http;
    anyhow::ensure!(units <= MAX_UNITS, "at most {MAX_UNITS} units");
    anyhow::ensure!(a.mt_rate <= MAX_MT_RATE, "at most {MAX_MT_RATE} MT/s");
    let mut child = Child::spawn(units, a.http > 0, a.capture.as_ref(), &a.bus).await?;
    let pid = child.pid;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_baseline = rss_kib(pid).unwrap_or(0);
    let peak = rss_sampler(pid);
    let target = child.target(a.quic, units)?;

    let tracking = track::Tracking::new(units, 0, sim::now_s(), a.protocol >= 2);
    let fleet = Fleet::new(&a, tracking);
    let (shared, pb) = (Arc::clone(&fleet.shared), fleet.pb.clone());
    let c = &shared.counters;
    let (mut tasks, n_connected, connect_secs) = fleet.connect(&a, &target).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid).unwrap_or(0);

    let mut summary = Summary {
        tcp_units: a.tcp,
        quic_units: a.quic,
        http_units: a.http,
        connected: n_connected,
        connect_failures: c.connect_failures.load(Ordering::Relaxed),
        first_attempt_failures: c.first_attempt_failures.load(Ordering::Relaxed),
        connect_retries: c.connect_retries.load(Ordering::Relaxed),
        connect_secs,
        connects_per_sec: n_connected as f64 / connect_secs.max(1e-9),
        rss_baseline_kib: rss_baseline,
        rss_idle_kib: rss_idle,
        kib_per_idle_connection: if n_connected > 0 {
            (rss_idle.saturating_sub(rss_baseline)) as f64 / n_connected as f64
        } else {
            0.0
        },
        mo_senders: a.mo_senders,
        protocol: a.protocol,
        bus: a.bus.bus.name().to_owned(),
        ..Summary::default()
    };

    // Legacy HTTP units (they start with the periodic phase).
    fleet.start_http(&a, &target, &mut tasks);

    if a.periodic_secs > 0 {
        pb.set_prefix("periodic");
        let before = child.stats().await?;
        let sent_before = c.mo_sent.load(Ordering::Relaxed);
        let t = Instant::now();
        fleet.phase_tx.send_replace(Phase::Periodic);
        tokio::time::sleep(Duration::from_secs(a.periodic_secs)).await;
        let after = child.stats().await?;
        let secs = t.elapsed().as_secs_f64();
        fleet.phase_tx.send_replace(Phase::Quiet);
        summary.periodic_secs = secs;
        summary.periodic_mo_sent = c.mo_sent.load(Ordering::Relaxed) - sent_before;
        summary.periodic_mo_per_sec = (after.mo_consumed - before.mo_consumed) as f64 / secs;
        pb.println(format!(
            "periodic: {} MO sent, {:.0}/s onto the bus",
            summary.periodic_mo_sent, summary.periodic_mo_per_sec
        ));
    }
    if a.mo_secs > 0 && a.mo_senders > 0 {
        pb.set_prefix("MO burst");
        let track = &shared.track;
        let units_count = || {
            (
                track.mo_written_total.load(Ordering::Relaxed),
                track.mo_acked_total.load(Ordering::Relaxed),
            )
        };
        let before = child.stats().await?;
        let (sent_before, acked_before) = units_count();
        let t = Instant::now();
        fleet.phase_tx.send_replace(Phase::Burst);
        tokio::time::sleep(Duration::from_secs(a.mo_secs)).await;
        let (sent_after, acked_after) = units_count();
        let after = child.stats().await?;
        let secs = t.elapsed().as_secs_f64();
        fleet.phase_tx.send_replace(Phase::Quiet);
        summary.mo_secs = secs;
        summary.mo_messages = after.mo_consumed - before.mo_consumed;
        summary.mo_per_sec = summary.mo_messages as f64 / secs;
        summary.mo_phase_sent = sent_after - sent_before;
        summary.mo_acked_per_sec = (acked_after - acked_before) as f64 / secs;
        summary.mo_bus_batches = after
            .bus_batches
            .zip(before.bus_batches)
            .map(|(a, b)| a - b);
        pb.println(format!(
            "MO burst: {} onto the bus in {secs:.1}s = {:.0}/s, {:.0} acknowledged/s",
            summary.mo_messages, summary.mo_per_sec, summary.mo_acked_per_sec
        ));
        tokio::time::sleep(Duration::from_secs(2)).await; // let the backlog drain
    }
    if a.mt_secs > 0 && a.mt_rate > 0 && framed > 0 {
        pb.set_prefix("MT");
        let v = child
            .ask(&format!("mt {} {} {}", a.mt_rate, a.mt_secs, framed))
            .await?;
        if v.get("error").is_some() {
            bail!("serve: {v}");
        }
        summary.mt = serde_json::from_value(v)?;
        pb.println(format!("MT: {:?}", summary.mt));
    }
    if a.storm_percent > 0 {
        (
            summary.storm_units,
            summary.storm_reconnected,
            summary.storm_secs,
        ) = fleet.storm(&a).await;
    }

    pb.set_prefix("stopping");
    let end = child.stats().await?;
    summary.held_at_end = end.units_online;
    fleet.stop(tasks).await;
    child.stop().await;

    (summary.handshake, summary.http, summary.errors) = fleet.results();
    summary.mo_sent = shared.track.mo_written_total.load(Ordering::Relaxed);
    summary.mo_acknowledged = shared.track.mo_acked_total.load(Ordering::Relaxed);
    summary.rss_peak_kib = peak.load(Ordering::Relaxed);
    summary.total_secs = t_run.elapsed().as_secs_f64();
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(&a.out, &json)?;
    println!("{json}");
    Ok(())
}

// ------------------------------------------------------------------------------------------
// replay: a capture played back

/// One captured unit's frames: (milliseconds from the capture's start, MO payload).
type Script = Vec<(u64, Vec<u8>)>;

async fn replay(a: ReplayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.speed > 0.0, "--speed must be positive");
    anyhow::ensure!(a.clones >= 1, "--clones must be at least 1");
    let mut frames = gateway::capture::read_capture(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    if let Some(max) = a.max_frames {
        frames.truncate(max);
    }
    anyhow::ensure!(!frames.is_empty(), "{}: no frames", a.file.display());
    let t_first = frames.iter().map(|f| f.t_ms).min().unwrap_or(0);
    // Per captured unit, in order: (offset from the capture's start, payload).
    let mut order: Vec<String> = Vec::new();
    let mut per_unit: HashMap<String, (bool, Script)> = HashMap::new();
    for f in &frames {
        let payload = f
            .payload()
            .with_context(|| format!("bad base64 in a frame of {}", f.imei))?;
        let e = per_unit.entry(f.imei.clone()).or_insert_with(|| {
            order.push(f.imei.clone());
            (f.transport == "quic", Vec::new())
        });
        e.1.push(((f.t_ms - t_first).max(0) as u64, payload));
    }
    let captured_units = order.len() as u32;
    let units = captured_units
        .checked_mul(a.clones)
        .filter(|u| *u <= MAX_UNITS)
        .with_context(|| format!("at most {MAX_UNITS} units (captured units × clones)"))?;
    let scripts: Vec<Arc<Script>> = order
        .iter()
        .map(|k| Arc::new(per_unit[k].1.clone()))
        .collect();
    let quic_of = |u: usize| match a.transport.as_str() {
        "tcp" => false,
        "quic" => true,
        _ => per_unit[&order[u]].0,
    };
    let quic_units = (0..order.len()).filter(|u| quic_of(*u)).count() as u32 * a.clones;

    let mut child = Child::spawn(units, false, None, &BusArgs::default()).await?;
    let peak = rss_sampler(child.pid);
    let target = child.target(quic_units, units)?;
    let pb = progress(a.quiet);
    pb.set_prefix("connect");
    let before = child.stats().await?;

    // Connect every clone first, then play all of them against one clock.
    let gate = Arc::new(Semaphore::new(a.connect_concurrency.max(1)));
    let mut connecting = Vec::with_capacity(units as usize);
    for k in 0..units {
        let (u, quic) = ((k / a.clones) as usize, quic_of((k / a.clones) as usize));
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let target = target.clone();
        connecting.push(tokio::spawn(async move {
            // Captured payloads are bare MO messages: played back in version 1.
            let r = unit::connect(k, quic, &target, None).await;
            drop(permit);
            (u, r)
        }));
    }
    let mut conns: Vec<(usize, UnitConn)> = Vec::with_capacity(units as usize);
    let mut errors = Errors::default();
    for t in connecting {
        match t.await? {
            (u, Ok(c)) => conns.push((u, c)),
            (_, Err(e)) => {
                if errors.connect < 5 {
                    pb.println(format!("connect: {e}"));
                }
                errors.connect += 1;
            }
        }
    }
    let connected = conns.len() as u64;
    pb.set_prefix("replay");
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let t_start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let send_errors = Arc::new(AtomicU64::new(0));
    let lag = Arc::new(Mutex::new(latency_histogram()));
    let mut players = Vec::with_capacity(conns.len());
    for (u, mut conn) in conns {
        let script = Arc::clone(&scripts[u]);
        let (sent, send_errors, lag) = (
            Arc::clone(&sent),
            Arc::clone(&send_errors),
            Arc::clone(&lag),
        );
        let speed = a.speed;
        players.push(tokio::spawn(async move {
            for (offset_ms, payload) in script.iter() {
                let at = start + Duration::from_secs_f64(*offset_ms as f64 / 1000.0 / speed);
                tokio::time::sleep_until(at).await;
                let late = tokio::time::Instant::now().saturating_duration_since(at);
                if conn.send_raw(payload).await.is_err() {
                    send_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                let _ = lag
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record((late.as_micros() as u64).max(1));
            }
            // Keep the connection until the gateway has read everything, then leave.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = conn.close().await;
        }));
    }
    let total = frames.len() as u64 * u64::from(a.clones);
    pb.set_length(total);
    let received = |s: &ServeStats| s.mo_consumed + s.mt_replies + s.dead_letters;
    let base = received(&before);
    let mut last = (0u64, Instant::now());
    let mut got;
    loop {
        let now = child.stats().await?;
        got = received(&now) - base;
        pb.set_message(format!(
            "sent {} | on the bus {got} of {total}",
            sent.load(Ordering::Relaxed)
        ));
        let players_done = players.iter().all(|p| p.is_finished());
        if players_done && got >= sent.load(Ordering::Relaxed) {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if players_done && last.1.elapsed() > Duration::from_secs(10) {
            pb.println("replay: the bus stopped receiving");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = t_start.elapsed().as_secs_f64();
    for p in players {
        let _ = p.await;
    }
    pb.finish_and_clear();
    child.stop().await;
    errors.send = send_errors.load(Ordering::Relaxed);
    let sent = sent.load(Ordering::Relaxed);
    let summary = ReplaySummary {
        capture: a.file.display().to_string(),
        captured_frames: frames.len() as u64,
        captured_units: u64::from(captured_units),
        clones: a.clones,
        speed: a.speed,
        connected,
        sent,
        received: got,
        secs,
        per_sec: got as f64 / secs.max(1e-9),
        send_lag: Percentiles::of(&lag.lock().unwrap_or_else(|e| e.into_inner())),
        rss_peak_kib: peak.load(Ordering::Relaxed),
        errors,
    };
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(&a.out, &json)?;
    println!("{json}");
    Ok(())
}
