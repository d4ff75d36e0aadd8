//! `load-test replay`: a capture played back with many units cloned from it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use load_test::{latency_histogram, Errors, Percentiles, ReplaySummary, ServeStats};
use sim::UnitConn;
use tokio::sync::Semaphore;

use crate::child::{progress, rss_sampler, Child};
use crate::serve::BusArgs;
use crate::unit;
use crate::MAX_UNITS;

#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// The capture file (gateway capture mode, `docs/operations.md`).
    pub(crate) file: PathBuf,
    /// Playback speed: 1 = as captured, 10 = ten times faster.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) speed: f64,
    /// Units cloned from each captured unit.
    #[arg(long, default_value_t = 1)]
    pub(crate) clones: u32,
    /// Replay at most this many frames of the capture (from its start).
    #[arg(long)]
    pub(crate) max_frames: Option<usize>,
    /// Transport for the clones: `tcp`, `quic`, or `captured` (as captured; HTTP → TCP).
    #[arg(long, default_value = "captured")]
    pub(crate) transport: String,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,
    /// Abort after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub(crate) max_secs: u64,
    /// No progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Where to write the summary.
    #[arg(long, default_value = "load-test-replay.json")]
    pub(crate) out: PathBuf,
}

/// One captured unit's frames: (milliseconds from the capture's start, MO payload).
type Script = Vec<(u64, Vec<u8>)>;

pub(crate) async fn replay(a: ReplayArgs) -> anyhow::Result<()> {
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
