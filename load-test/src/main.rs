//! `load-test`: simulated units against a gateway, reporting connections held, memory per idle
//! connection, MO/s onto the bus and MT round-trip percentiles. Loopback only.
//!
//! ```text
//! load-test run --tcp 15000 --quic 35000 --mo-secs 10 --mt-rate 1000 --mt-secs 10 --out summary.json
//! ```
//! `run` spawns `load-test serve` (the gateway) as a child and talks to it over stdin/stdout.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use codec::mo::ReplyResult;
use codec::mt::StatusUpdate;
use codec::{decode_bus_envelope, CorrelationId, MtMessage};
use gateway::mt::new_correlation_id;
use gateway::sim::{self, UnitConn};
use gateway::{
    Deps, Gateway, GatewayConfig, MemoryDirectory, MemoryPresence, MtClient, NoFallback,
    NoPresenceSink, PresenceRegistry, UnitCredentials,
};
use ingest::bus::memory::{MemoryBus, MemoryBusConfig};
use ingest::bus::{Bus, Topics};
use load_test::{device_key, imei, rss_kib, MtStats, ServeStats, Summary};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{watch, Semaphore};

#[derive(Parser)]
#[command(
    name = "load-test",
    about = "Load generator for the SMARTSolar RTC gateway"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a gateway (in-process bus, N known units) controlled over stdin/stdout.
    Serve {
        /// Units in the directory.
        #[arg(long)]
        units: u32,
    },
    /// Spawn `serve`, connect simulated units, measure, write a JSON summary.
    Run {
        /// TCP units.
        #[arg(long, default_value_t = 1000)]
        tcp: u32,
        /// QUIC units.
        #[arg(long, default_value_t = 1000)]
        quic: u32,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 256)]
        connect_concurrency: usize,
        /// Units that send MO back to back in the MO phase.
        #[arg(long, default_value_t = 200)]
        mo_senders: u32,
        /// Seconds of the MO phase (0 skips it).
        #[arg(long, default_value_t = 10)]
        mo_secs: u64,
        /// MT commands per second in the MT phase.
        #[arg(long, default_value_t = 1000)]
        mt_rate: u32,
        /// Seconds of the MT phase (0 skips it).
        #[arg(long, default_value_t = 10)]
        mt_secs: u64,
        /// Where to write the summary.
        #[arg(long, default_value = "load-test-summary.json")]
        out: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Both sides hold one descriptor per TCP unit.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Serve { units } => rt.block_on(serve(units)),
        Cmd::Run {
            tcp,
            quic,
            connect_concurrency,
            mo_senders,
            mo_secs,
            mt_rate,
            mt_secs,
            out,
        } => rt.block_on(run(RunArgs {
            tcp,
            quic,
            connect_concurrency,
            mo_senders,
            mo_secs,
            mt_rate,
            mt_secs,
            out,
        })),
    }
}

// ------------------------------------------------------------------------------------------
// serve: the gateway under test

async fn serve(units: u32) -> anyhow::Result<()> {
    let directory = MemoryDirectory::new();
    for i in 0..units {
        directory.insert(UnitCredentials::new(imei(i), device_key(i)));
    }
    let bus = MemoryBus::new(MemoryBusConfig {
        partitions: 16,
        capacity: 100_000,
    });
    let registry = MemoryPresence::new();
    let deps = Deps {
        bus: Arc::new(bus.clone()),
        directory: Arc::new(directory),
        presence: Arc::new(NoPresenceSink),
        registry: Arc::new(registry.clone()),
        fallback: Arc::new(NoFallback),
    };
    let mut config = GatewayConfig::loopback("load");
    config.http_listen = None;
    config.max_connections = 200_000;
    config.rate_per_sec = 1e6;
    config.rate_burst = 1_000_000;
    config.idle_timeout_ms = 600_000;
    config.handshake_timeout_ms = 60_000;
    let topics = Topics::default();
    let gw = Gateway::bind(config, deps).await?;
    let addrs = gw.local_addrs();
    let ready = serde_json::json!({
        "tcp": addrs.tcp, "quic": addrs.quic, "cert": hex::encode(gw.certificate_der()),
        "pid": std::process::id(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop_rx2 = stop_rx.clone();
    let gw_task = tokio::spawn(gw.run(async move {
        let _ = stop_rx2.wait_for(|s| *s).await;
    }));

    // MO counter.
    let mo_count = Arc::new(AtomicU64::new(0));
    {
        let mut c = bus.subscribe(&[&topics.mo], "load-mo").await?;
        let n = Arc::clone(&mo_count);
        tokio::spawn(async move {
            while let Ok(d) = c.recv().await {
                n.fetch_add(1, Ordering::Relaxed);
                let _ = c.commit(&d).await;
            }
        });
    }
    // MT replies: round trips.
    let pending: Arc<Mutex<HashMap<CorrelationId, Instant>>> = Arc::default();
    let rtts: Arc<Mutex<hdrhistogram::Histogram<u64>>> =
        Arc::new(Mutex::new(hdrhistogram::Histogram::new(3)?));
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
    let mt = MtClient::new(Arc::new(bus.clone()), topics.clone());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let reply = match parts.as_slice() {
            ["stats"] => serde_json::to_value(ServeStats {
                mo_consumed: mo_count.load(Ordering::Relaxed),
                mt_replies: replies.load(Ordering::Relaxed),
                units_online: registry.len(),
                rss_kib: rss_kib(std::process::id()).unwrap_or(0),
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
    Ok(())
}

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
    let tick = Duration::from_millis(10);
    let mut interval = tokio::time::interval(tick);
    while sent < total {
        interval.tick().await;
        // Catch up to the schedule: commands due by now.
        let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as u64).min(total);
        while sent < due {
            let i = next_unit % units;
            next_unit = next_unit.wrapping_add(1);
            let who = imei(i);
            if registry.lookup(&who).await.is_none() {
                continue;
            }
            let id = new_correlation_id();
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, Instant::now());
            mt.enqueue(
                &who,
                &MtMessage::StatusUpdate(StatusUpdate {
                    correlation_id: id,
                    enabled: Some(true),
                    server_time: Some(sim::now_s()),
                    ..StatusUpdate::default()
                }),
            )
            .await?;
            sent += 1;
        }
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
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(MtStats {
        sent,
        answered: sent - unanswered,
        rate: sent as f64 / elapsed,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: h.max() as f64 / 1000.0,
    })
}

// ------------------------------------------------------------------------------------------
// run: the units and the report

struct RunArgs {
    tcp: u32,
    quic: u32,
    connect_concurrency: usize,
    mo_senders: u32,
    mo_secs: u64,
    mt_rate: u32,
    mt_secs: u64,
    out: String,
}

struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    async fn ask(&mut self, cmd: &str) -> anyhow::Result<serde_json::Value> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let line = self.lines.next_line().await?.context("serve exited")?;
        Ok(serde_json::from_str(&line)?)
    }
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let units = a.tcp + a.quic;
    let mut proc = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--units", &units.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = proc.stdin.take().context("stdin")?;
    let mut lines = BufReader::new(proc.stdout.take().context("stdout")?).lines();
    let ready: serde_json::Value =
        serde_json::from_str(&lines.next_line().await?.context("serve did not start")?)?;
    let mut child = Child { proc, stdin, lines };
    let tcp_addr: SocketAddr = serde_json::from_value(ready["tcp"].clone())?;
    let quic_addr: SocketAddr = serde_json::from_value(ready["quic"].clone())?;
    let cert = hex::decode(ready["cert"].as_str().context("cert")?)?;
    let pid = ready["pid"].as_u64().context("pid")? as u32;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_baseline = rss_kib(pid).unwrap_or(0);
    eprintln!("gateway pid {pid}, baseline RSS {rss_baseline} KiB");

    // One QUIC client endpoint (UDP socket) per 2,000 units.
    let endpoints: Vec<quinn::Endpoint> = (0..a.quic.div_ceil(2000).max(1))
        .map(|_| sim::quic_endpoint(&cert, Duration::from_secs(20)))
        .collect::<Result<_, _>>()?;
    let connected = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(a.connect_concurrency));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(units as usize);
    for i in 0..units {
        let is_quic = i >= a.tcp;
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let ep = endpoints[(i as usize) % endpoints.len()].clone();
        let (connected, failures, sending, mut stop) = (
            Arc::clone(&connected),
            Arc::clone(&failures),
            Arc::clone(&sending),
            stop_rx.clone(),
        );
        let sender = i % (units / a.mo_senders.max(1)).max(1) == 0;
        tasks.push(tokio::spawn(async move {
            let conn = async {
                let mut u = if is_quic {
                    UnitConn::quic(&ep, quic_addr).await?
                } else {
                    UnitConn::tcp(tcp_addr).await?
                };
                u.handshake(Some(&imei(i)), &device_key(i)).await?;
                Ok::<_, sim::SimError>(u)
            };
            let mut u = match tokio::time::timeout(Duration::from_secs(60), conn).await {
                Ok(Ok(u)) => u,
                Ok(Err(e)) => {
                    if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("unit {i}: {e}");
                    }
                    return;
                }
                Err(_) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            unit_loop(&mut u, i, sender, &sending, &mut stop).await;
            u.abort();
        }));
    }
    // Wait for the connect phase to settle.
    let mut last = (0, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let done = connected.load(Ordering::Relaxed) + failures.load(Ordering::Relaxed);
        if done >= u64::from(units) {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            eprintln!("connect phase stalled at {done}/{units}");
            break;
        }
    }
    let connect_secs = t0.elapsed().as_secs_f64();
    let n_connected = connected.load(Ordering::Relaxed);
    eprintln!(
        "connected {n_connected} units in {connect_secs:.1}s ({} failed)",
        failures.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = rss_kib(pid).unwrap_or(0);
    let stats: ServeStats = serde_json::from_value(child.ask("stats").await?)?;
    eprintln!(
        "idle RSS {rss_idle} KiB, online per registry {}",
        stats.units_online
    );

    let mut summary = Summary {
        tcp_units: a.tcp,
        quic_units: a.quic,
        connected: n_connected,
        connect_failures: failures.load(Ordering::Relaxed),
        connect_secs,
        rss_baseline_kib: rss_baseline,
        rss_idle_kib: rss_idle,
        kib_per_idle_connection: if n_connected > 0 {
            (rss_idle.saturating_sub(rss_baseline)) as f64 / n_connected as f64
        } else {
            0.0
        },
        mo_senders: a.mo_senders,
        ..Summary::default()
    };

    if a.mo_secs > 0 {
        let before: ServeStats = serde_json::from_value(child.ask("stats").await?)?;
        let t = Instant::now();
        sending.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(a.mo_secs)).await;
        let after: ServeStats = serde_json::from_value(child.ask("stats").await?)?;
        let secs = t.elapsed().as_secs_f64();
        sending.store(false, Ordering::Relaxed);
        summary.mo_secs = secs;
        summary.mo_messages = after.mo_consumed - before.mo_consumed;
        summary.mo_per_sec = summary.mo_messages as f64 / secs;
        eprintln!(
            "MO: {} in {secs:.1}s = {:.0}/s",
            summary.mo_messages, summary.mo_per_sec
        );
        tokio::time::sleep(Duration::from_secs(2)).await; // let the backlog drain
    }
    if a.mt_secs > 0 {
        let v = child
            .ask(&format!("mt {} {} {}", a.mt_rate, a.mt_secs, units))
            .await?;
        if v.get("error").is_some() {
            bail!("serve: {v}");
        }
        summary.mt = serde_json::from_value(v)?;
        eprintln!("MT: {:?}", summary.mt);
    }
    let end: ServeStats = serde_json::from_value(child.ask("stats").await?)?;
    summary.held_at_end = end.units_online;

    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(&a.out, &json)?;
    println!("{json}");

    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    drop(child.stdin);
    let _ = tokio::time::timeout(Duration::from_secs(30), child.proc.wait()).await;
    Ok(())
}

/// A connected unit: answers MT, sends a keepalive every 60 s, and, if it is one of the MO
/// senders, sends telemetry back to back while the MO phase is on.
async fn unit_loop(
    u: &mut UnitConn,
    i: u32,
    sender: bool,
    sending: &AtomicBool,
    stop: &mut watch::Receiver<bool>,
) {
    let mut keepalive = tokio::time::interval(Duration::from_secs(60));
    let mut poll = tokio::time::interval(Duration::from_millis(200));
    let mut seq = 0u64;
    loop {
        if sender && sending.load(Ordering::Relaxed) {
            // Back to back, but still answer MT between bursts.
            for _ in 0..32 {
                seq += 1;
                if u.send_raw(&sim::telemetry(sim::now_s(), seq))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            tokio::task::yield_now().await;
            if let Ok(Ok(Some(f))) = tokio::time::timeout(Duration::ZERO, u.recv()).await {
                let _ = u.answer(&f, ReplyResult::Ok).await;
            }
            continue;
        }
        tokio::select! {
            _ = stop.changed() => return,
            f = u.recv() => match f {
                Ok(Some(f)) => {
                    if u.answer(&f, ReplyResult::Ok).await.is_err() {
                        return;
                    }
                }
                _ => {
                    if i < 3 {
                        eprintln!("unit {i} closed by the gateway");
                    }
                    return;
                }
            },
            _ = keepalive.tick() => {
                if u.keepalive().await.is_err() {
                    return;
                }
            }
            _ = poll.tick(), if sender => {}
        }
    }
}
