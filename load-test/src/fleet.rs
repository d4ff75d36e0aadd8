//! The simulated fleet, for both modes of `run` (a child gateway, or a target deployment).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use load_test::{latency_histogram, Errors, Percentiles, TargetReplay};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::child::progress;
use crate::playback::{pairs, Capture, Clock};
use crate::run::RunArgs;
use crate::track;
use crate::unit::{self, Behaviour, Phase, Replay, Shared, Target, UnitSpec};

/// The unit tasks' shared state and the controls of the run's phases.
pub(crate) struct Fleet {
    pub(crate) shared: Arc<Shared>,
    pub(crate) phase_tx: watch::Sender<Phase>,
    storm_tx: watch::Sender<u64>,
    pub(crate) pb: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
    behaviour: Behaviour,
    /// Target mode's replay phase: each framed unit's queue of captured MO, and the receiving
    /// ends until `connect` hands them to the units.
    replay_tx: Vec<mpsc::UnboundedSender<Replay>>,
    replay_rx: Mutex<Vec<mpsc::UnboundedReceiver<Replay>>>,
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
            burst_round: Behaviour::burst_round_for(a.mo_rate, a.mo_senders),
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
        let queues = if a.replay.is_some() {
            a.tcp + a.quic
        } else {
            0
        };
        let (replay_tx, replay_rx) = (0..queues).map(|_| mpsc::unbounded_channel()).unzip();
        Self {
            shared,
            phase_tx,
            storm_tx,
            pb,
            ticker,
            behaviour,
            replay_tx,
            replay_rx: Mutex::new(replay_rx),
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
        let mut replay_rx =
            std::mem::take(&mut *self.replay_rx.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter();
        for i in 0..framed {
            let permit = Arc::clone(&gate).acquire_owned().await?;
            let spec = UnitSpec {
                i,
                quic: i >= a.tcp,
                sender: a.mo_senders > 0 && i % every == 0,
                in_storm: i % 100 < a.storm_percent,
                v2: a.protocol >= 2,
                replay: replay_rx.next(),
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

    /// Replay phase (target mode, `--replay`): the capture played back through the framed
    /// units (`playback::pairs`: captured unit `j mod captured` on unit `j mod units`), at the
    /// captured times `speed` times faster, each frame written by its unit on its own
    /// connection and counted with the unit's MO. Waits until every frame is written (or its
    /// write failed) and, in version 2, acknowledged; or until nothing moved for 15 s once
    /// every frame was handed out.
    pub(crate) async fn replay(
        &self,
        capture: &Capture,
        speed: f64,
    ) -> anyhow::Result<TargetReplay> {
        let r = &self.shared.track.replayed;
        self.pb.set_prefix("replay");
        self.phase_tx.send_replace(Phase::Replay);
        let scheduled: u64 = pairs(capture.units.len(), self.replay_tx.len())
            .map(|(k, _)| capture.units[k].script.len() as u64)
            .sum();
        let players_n = pairs(capture.units.len(), self.replay_tx.len()).count();
        let clock = Clock::start(speed)?;
        let t = Instant::now();
        // Frames whose unit had gone (its task ended) when they were due.
        let gone = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut players = Vec::with_capacity(players_n);
        for (k, i) in pairs(capture.units.len(), self.replay_tx.len()) {
            let (script, tx, gone) = (
                Arc::clone(&capture.units[k].script),
                self.replay_tx[i].clone(),
                Arc::clone(&gone),
            );
            players.push(tokio::spawn(async move {
                for (offset_ms, mo) in script.iter() {
                    let due = clock.wait(*offset_ms).await;
                    let frame = Replay {
                        due,
                        mo: mo.clone(),
                    };
                    if tx.send(frame).is_err() {
                        gone.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let acks = self.shared.track.acks();
        let mut last = (u64::MAX, Instant::now());
        loop {
            let (written, failed, acked) = (
                r.written.load(Ordering::Relaxed),
                r.failed.load(Ordering::Relaxed),
                r.acked.load(Ordering::Relaxed),
            );
            let done = written + failed + gone.load(Ordering::Relaxed);
            if done >= scheduled && (!acks || acked >= written) {
                break;
            }
            if done + acked != last.0 {
                last = (done + acked, Instant::now());
            } else if players.iter().all(|p| p.is_finished())
                && last.1.elapsed() > Duration::from_secs(15)
            {
                self.pb.println(format!(
                    "replay: stalled at {written} written, {acked} acknowledged of {scheduled}"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        for p in players {
            p.abort();
        }
        self.phase_tx.send_replace(Phase::Quiet);
        let sent = r.written.load(Ordering::Relaxed);
        let summary = TargetReplay {
            captured_frames: capture.frames,
            captured_units: capture.units.len() as u64,
            speed,
            units: players_n.min(self.replay_tx.len()) as u64,
            frames: scheduled,
            sent,
            acknowledged: r.acked.load(Ordering::Relaxed),
            unsent: scheduled.saturating_sub(sent),
            secs,
            per_sec: sent as f64 / secs.max(1e-9),
            lateness: r.lateness.percentiles(),
            ..TargetReplay::default()
        };
        self.pb.println(format!(
            "replay: {sent} of {scheduled} frames written, {} acknowledged, in {secs:.1}s",
            summary.acknowledged
        ));
        Ok(summary)
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
            // Counted by the verification, after the units are gone.
            verify_reads: 0,
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
