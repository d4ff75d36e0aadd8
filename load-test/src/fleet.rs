//! The simulated fleet, for both modes of `run` (a child gateway, or a target deployment).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use load_test::{latency_histogram, Errors, Percentiles};
use tokio::sync::{watch, Semaphore};

use crate::child::progress;
use crate::run::RunArgs;
use crate::track;
use crate::unit::{self, Behaviour, Phase, Shared, Target, UnitSpec};

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
    /// within 60 s, seconds until the last was back); all zero when `--storm-percent 0`
    /// skips it.
    pub(crate) async fn storm(&self, a: &RunArgs) -> (u64, u64, f64) {
        if a.storm_percent == 0 {
            return (0, 0, 0.0);
        }
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
