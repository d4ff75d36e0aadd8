//! `load-test replay`: a capture played back with many units cloned from it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use load_test::{Errors, ReplaySummary, ServeStats};
use sim::UnitConn;
use tokio::sync::Semaphore;

use crate::child::{progress, rss_sampler, Child};
use crate::playback::{Capture, Clock, Lateness};
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

pub(crate) async fn replay(a: ReplayArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.speed > 0.0, "--speed must be positive");
    anyhow::ensure!(a.clones >= 1, "--clones must be at least 1");
    let capture = Capture::load(&a.file, a.max_frames)?;
    let captured_units = capture.units.len() as u32;
    let units = captured_units
        .checked_mul(a.clones)
        .filter(|u| *u <= MAX_UNITS)
        .with_context(|| format!("at most {MAX_UNITS} units (captured units × clones)"))?;
    let quic_of = |u: usize| match a.transport.as_str() {
        "tcp" => false,
        "quic" => true,
        _ => capture.units[u].quic,
    };
    let quic_units = (0..capture.units.len()).filter(|u| quic_of(*u)).count() as u32 * a.clones;

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
    let clock = Clock::start(a.speed)?;
    let t_start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let send_errors = Arc::new(AtomicU64::new(0));
    let lateness = Arc::new(Lateness::default());
    let mut players = Vec::with_capacity(conns.len());
    for (u, mut conn) in conns {
        let script = Arc::clone(&capture.units[u].script);
        let (sent, send_errors, lateness) = (
            Arc::clone(&sent),
            Arc::clone(&send_errors),
            Arc::clone(&lateness),
        );
        players.push(tokio::spawn(async move {
            for (offset_ms, payload) in script.iter() {
                lateness.record(clock.wait(*offset_ms).await);
                if conn.send_raw(payload).await.is_err() {
                    send_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            // Keep the connection until the gateway has read everything, then leave.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = conn.close().await;
        }));
    }
    let total = capture.frames * u64::from(a.clones);
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
        captured_frames: capture.frames,
        captured_units: u64::from(captured_units),
        clones: a.clones,
        speed: a.speed,
        connected,
        sent,
        received: got,
        secs,
        per_sec: got as f64 / secs.max(1e-9),
        send_lag: lateness.percentiles(),
        rss_peak_kib: peak.load(Ordering::Relaxed),
        errors,
    };
    let json = serde_json::to_string_pretty(&summary)?;
    std::fs::write(&a.out, &json)?;
    println!("{json}");
    Ok(())
}
