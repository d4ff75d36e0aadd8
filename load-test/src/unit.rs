//! What one simulated unit does, and the legacy HTTP units.
//!
//! A framed unit (TCP or QUIC) connects and says hello (protocol version 2 by default: its MO
//! are numbered, at most `sim::DEFAULT_WINDOW` wait for an acknowledgement, and the window is
//! sent again after a reconnect; version 1 on request), then, depending on the run's phase:
//! - `Quiet`: keepalives every 60 s, answers MT commands;
//! - `Periodic`: also a status report (with its DCM balance), a telemetry batch and an event
//!   log on their own periods, each unit starting at a random offset so the fleet is spread;
//! - `Burst`: the designated MO senders send telemetry back to back (throughput);
//! - a reconnect storm: the units chosen for it drop the connection and reconnect at once;
//! - in any phase (target mode's replay phase hands them out): the captured MO it is given,
//!   written as they come and counted with its own (`Tracking::restamp`, `Tracking::replayed`).
//!
//! MT answers: a payment command changes the unit's balance and the reply carries the new
//! balance and expected expiry (what DCM reads); other commands are answered by
//! `sim::UnitConn::answer` (reply, plus a command response or a status report).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codec::legacy::basic_auth;
use codec::mo::{MtReply, ReplyResult, StatusReport};
use codec::{decode_mt, MoMessage, MtMessage};
use sim::{MoWindow, UnitConn};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::{Instant, MissedTickBehavior};

/// What the fleet is asked to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Quiet,
    Periodic,
    Burst,
    /// Target mode's capture replay: quiet, but for the captured MO handed to the unit.
    Replay,
    Stop,
}

/// A captured MO for a unit to write (target mode's replay phase), and when it was due.
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) due: Instant,
    pub(crate) mo: Vec<u8>,
}

/// Counters every unit task updates.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Units connected now.
    pub(crate) online: AtomicU64,
    /// Handshakes done (reconnects included).
    pub(crate) handshakes: AtomicU64,
    /// Units that gave up connecting (every attempt failed).
    pub(crate) connect_failures: AtomicU64,
    /// Units whose first connect attempt failed (whether or not a retry succeeded).
    pub(crate) first_attempt_failures: AtomicU64,
    /// Connect attempts after a failed one.
    pub(crate) connect_retries: AtomicU64,
    /// Handshakes done after a storm disconnect.
    pub(crate) reconnects: AtomicU64,
    /// Milliseconds since the run started at the last reconnect.
    pub(crate) last_reconnect_ms: AtomicU64,
    /// MO written without error (a version-2 resend is not counted again).
    pub(crate) mo_sent: AtomicU64,
    pub(crate) mt_answered: AtomicU64,
    pub(crate) send_errors: AtomicU64,
    pub(crate) closed_by_gateway: AtomicU64,
    pub(crate) http_requests: AtomicU64,
    pub(crate) http_errors: AtomicU64,
}

/// What all unit tasks share.
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    /// Connect + handshake latency, µs.
    pub(crate) handshake_us: Mutex<hdrhistogram::Histogram<u64>>,
    /// Legacy HTTP request latency, µs.
    pub(crate) http_us: Mutex<hdrhistogram::Histogram<u64>>,
    pub(crate) phase: watch::Receiver<Phase>,
    /// Incremented to start a reconnect storm.
    pub(crate) storm: watch::Receiver<u64>,
    pub(crate) started: Instant,
    /// What each unit sent, for the verification of target mode.
    pub(crate) track: crate::track::Tracking,
}

/// Where the gateway listens.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) tcp: SocketAddr,
    pub(crate) quic: SocketAddr,
    pub(crate) http: Option<SocketAddr>,
    /// QUIC client endpoints (one UDP socket per 2,000 units).
    pub(crate) endpoints: Vec<quinn::Endpoint>,
    /// Each unit's IMEI and device key, by index.
    pub(crate) ids: Arc<[crate::track::Identity]>,
    /// The pinned gateway certificate (DER) when units speak TLS over TCP and QUIC.
    pub(crate) tls: Option<Arc<[u8]>>,
    /// The legacy HTTP listener speaks HTTPS (with `tls`'s certificate).
    pub(crate) http_tls: bool,
}

/// Periods of the realistic behaviour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Behaviour {
    pub(crate) status: Duration,
    pub(crate) telemetry: Duration,
    pub(crate) event: Duration,
    /// How often one burst sender may start a round of [`BURST_ROUND`] MO (`--mo-rate`);
    /// `None`: back to back.
    pub(crate) burst_round: Option<Duration>,
}

/// MO a burst sender writes between looks at what the gateway sent it.
pub(crate) const BURST_ROUND: u32 = 32;

impl Behaviour {
    /// The round period that holds `senders` to `rate` MO/s together (0: no limit).
    pub(crate) fn burst_round_for(rate: u32, senders: u32) -> Option<Duration> {
        (rate > 0 && senders > 0).then(|| {
            Duration::from_secs_f64(f64::from(BURST_ROUND) * f64::from(senders) / f64::from(rate))
        })
    }
}

/// One framed unit's configuration.
pub(crate) struct UnitSpec {
    pub(crate) i: u32,
    pub(crate) quic: bool,
    /// Sends back to back in the `Burst` phase.
    pub(crate) sender: bool,
    /// Drops and reconnects in a storm.
    pub(crate) in_storm: bool,
    /// Speaks protocol version 2 (numbered MO, acknowledgements).
    pub(crate) v2: bool,
    /// Captured MO to write as they come (target mode's replay phase).
    pub(crate) replay: Option<mpsc::UnboundedReceiver<Replay>>,
}

/// A version-2 unit's numbering across its connections: the window (unacknowledged MO, sent
/// again after a reconnect), which numbers carried which telemetry and which were replayed,
/// and how far the acknowledgements reported to the tracking have come.
struct Acks {
    window: Option<MoWindow>,
    telemetry: VecDeque<(u64, u64)>,
    replayed: VecDeque<u64>,
    reported: u64,
}

impl Acks {
    fn new(v2: bool) -> Self {
        Self {
            window: v2.then(|| MoWindow::new(rand::random(), sim::DEFAULT_WINDOW)),
            telemetry: VecDeque::new(),
            replayed: VecDeque::new(),
            reported: 0,
        }
    }

    /// Reports to the tracking what the connection's window says is acknowledged since the
    /// last call (numbers count 1, 2, 3… so the highest acknowledged is also how many).
    fn settle(&mut self, u: &UnitConn, track: &crate::track::Tracking, i: u32) {
        let Some(acked) = u.window().map(MoWindow::acked) else {
            return;
        };
        let before = self.replayed.len();
        self.replayed.retain(|&n| n > acked);
        let replayed = (before - self.replayed.len()) as u64;
        track.replayed.acked.fetch_add(replayed, Ordering::Relaxed);
        if acked <= self.reported {
            return;
        }
        let mut newest = None;
        while let Some(&(seq, telemetry)) = self.telemetry.front() {
            if seq > acked {
                break;
            }
            newest = Some(telemetry);
            self.telemetry.pop_front();
        }
        track.mo_acked(i, acked - self.reported, newest);
        self.reported = acked;
    }

    /// The unit leaves: its telemetry still unacknowledged is not expected in the store.
    fn leave(&mut self, track: &crate::track::Tracking, i: u32) {
        for (_, telemetry) in self.telemetry.drain(..) {
            track.never_acked(i, telemetry);
        }
        self.replayed.clear();
    }
}

/// How long a leaving version-2 unit waits for the acknowledgement of its window.
const LEAVE_ACK_WAIT: Duration = Duration::from_secs(5);

fn record(h: &Mutex<hdrhistogram::Histogram<u64>>, d: Duration) {
    let us = (d.as_micros() as u64).max(1);
    let _ = h.lock().unwrap_or_else(|e| e.into_inner()).record(us);
}

enum End {
    Stop,
    Storm,
    Closed,
}

/// How a unit retries a failed connect: each attempt is given `ATTEMPT_TIMEOUT`, then the unit
/// waits an exponential backoff (`BACKOFF_FIRST` doubling up to `BACKOFF_MAX`, a random half
/// to all of it, so units that failed together do not retry together) and tries again, up to
/// `CONNECT_ATTEMPTS` attempts.
const CONNECT_ATTEMPTS: u32 = 8;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The wait before attempt `failed + 1`, after `failed` failed attempts (≥ 1).
pub(crate) fn backoff(failed: u32, unit_random: f64) -> Duration {
    let full = BACKOFF_FIRST
        .saturating_mul(1 << failed.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    full.mul_f64(0.5 + 0.5 * unit_random.clamp(0.0, 1.0))
}

/// Connects like a real unit, retrying with backoff; counts first-attempt failures and
/// retries. The error is the last attempt's.
/// `window`: a version-2 unit's (each attempt starts from it), `None` for version 1.
pub(crate) async fn connect_retrying(
    i: u32,
    quic: bool,
    target: &Target,
    window: Option<&MoWindow>,
    c: &Counters,
) -> Result<UnitConn, String> {
    let mut failed = 0;
    loop {
        let e = match connect(i, quic, target, window.cloned()).await {
            Ok(u) => return Ok(u),
            Err(e) => e,
        };
        failed += 1;
        if failed == 1 {
            c.first_attempt_failures.fetch_add(1, Ordering::Relaxed);
        }
        if c.connect_retries.load(Ordering::Relaxed) < 5 {
            eprintln!("unit {i}: attempt {failed}: {e}");
        }
        if failed >= CONNECT_ATTEMPTS {
            return Err(e);
        }
        tokio::time::sleep(backoff(failed, rand::random())).await;
        c.connect_retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// One connect attempt: opens a connection and completes the handshake, in version 2 when
/// given a window (whose unacknowledged MO are then sent again).
pub(crate) async fn connect(
    i: u32,
    quic: bool,
    target: &Target,
    window: Option<MoWindow>,
) -> Result<UnitConn, String> {
    let conn = async {
        let mut u = if quic {
            let ep = &target.endpoints[(i as usize) % target.endpoints.len()];
            UnitConn::quic(ep, target.quic).await?
        } else if let Some(cert) = &target.tls {
            UnitConn::tcp_tls(target.tcp, cert).await?
        } else {
            UnitConn::tcp(target.tcp).await?
        };
        let id = &target.ids[i as usize];
        match window {
            Some(w) => u.handshake_v2(Some(&id.imei), &id.key, w).await?,
            None => u.handshake(Some(&id.imei), &id.key).await?,
        };
        Ok::<_, sim::SimError>(u)
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, conn).await {
        Ok(Ok(u)) => Ok(u),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// A framed unit for the whole run.
pub(crate) async fn framed_unit(
    mut spec: UnitSpec,
    target: Target,
    shared: Arc<Shared>,
    behaviour: Behaviour,
    mut permit: Option<OwnedSemaphorePermit>,
) {
    let c = &shared.counters;
    let mut reconnecting = false;
    let mut balance: i64 = 432_000 - i64::from(spec.i % 1000) * 60;
    let mut acks = Acks::new(spec.v2);
    let mut replay = spec.replay.take();
    loop {
        let t = Instant::now();
        let window = acks.window.as_ref();
        let mut u = match connect_retrying(spec.i, spec.quic, &target, window, c).await {
            Ok(u) => u,
            Err(e) => {
                if c.connect_failures.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("unit {}: gave up: {e}", spec.i);
                }
                acks.leave(&shared.track, spec.i);
                return;
            }
        };
        record(&shared.handshake_us, t.elapsed());
        permit.take();
        c.handshakes.fetch_add(1, Ordering::Relaxed);
        c.online.fetch_add(1, Ordering::Relaxed);
        if reconnecting {
            c.reconnects.fetch_add(1, Ordering::Relaxed);
            c.last_reconnect_ms.fetch_max(
                shared.started.elapsed().as_millis() as u64,
                Ordering::Relaxed,
            );
        }
        shared.track.set_online(spec.i, true);
        let end = session(
            &spec,
            &mut u,
            &shared,
            behaviour,
            &mut balance,
            &mut acks,
            &mut replay,
        )
        .await;
        if matches!(end, End::Stop) && u.window().is_some() {
            // A version-2 unit leaves once its window is acknowledged (or after a while).
            u.await_acks(LEAVE_ACK_WAIT).await;
            acks.settle(&u, &shared.track, spec.i);
        }
        shared.track.set_online(spec.i, false);
        c.online.fetch_sub(1, Ordering::Relaxed);
        if matches!(end, End::Stop) {
            acks.leave(&shared.track, spec.i);
            // Leave cleanly, so what the unit wrote last still reaches the gateway.
            let _ = tokio::time::timeout(Duration::from_secs(5), u.close()).await;
            return;
        }
        // The window goes to the next connection (a storm's reconnect sends it again).
        acks.window = u.take_window().or(acks.window.take());
        u.abort();
        match end {
            End::Storm => reconnecting = true,
            End::Stop => return,
            End::Closed => {
                c.closed_by_gateway.fetch_add(1, Ordering::Relaxed);
                acks.leave(&shared.track, spec.i);
                return;
            }
        }
    }
}

fn status_report(time: u64, balance: i64) -> Vec<u8> {
    codec::mo_to_vec(&MoMessage::StatusReport(StatusReport {
        time: Some(time),
        enabled: Some(balance > 0),
        tamper_enabled: Some(true),
        tamper_triggered: Some(false),
        software_version: Some("3.6a"),
        energy_limit: Some(120.5),
        capacity_limit: Some(80.0),
        balance: Some(balance),
        expected_expiry: Some(time + balance.max(0) as u64),
    }))
}

/// What a framed unit does with what `recv_or_ack` gave it: settles the acknowledgements read,
/// answers an MT frame (counted in `mt_answered`). `Some(end)` when the connection is over:
/// the gateway closed it (expected when `stopping`), or an answer could not be written.
async fn on_received<F: std::ops::Deref<Target = [u8]>, E>(
    received: Result<Option<Option<F>>, E>,
    u: &mut UnitConn,
    balance: &mut i64,
    shared: &Shared,
    i: u32,
    acks: &mut Acks,
    stopping: bool,
) -> Option<End> {
    match received {
        Ok(Some(None)) => {
            acks.settle(u, &shared.track, i);
            None
        }
        Ok(Some(Some(f))) => match answer(u, &f, balance, &shared.track, i, acks).await {
            Ok(()) => {
                shared.counters.mt_answered.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(_) => Some(End::Closed),
        },
        _ if stopping => Some(End::Stop),
        _ => Some(End::Closed),
    }
}

/// Answers one MT frame; payment commands move the balance. Every MO written (the reply,
/// and the command response or status report `sim` adds) is counted for unit `i`, and the
/// acknowledgements read meanwhile are reported.
async fn answer(
    u: &mut UnitConn,
    frame: &[u8],
    balance: &mut i64,
    track: &crate::track::Tracking,
    i: u32,
    acks: &mut Acks,
) -> Result<(), sim::SimError> {
    let r = answer_frame(u, frame, balance, track, i).await;
    acks.settle(u, track, i);
    r
}

async fn answer_frame(
    u: &mut UnitConn,
    frame: &[u8],
    balance: &mut i64,
    track: &crate::track::Tracking,
    i: u32,
) -> Result<(), sim::SimError> {
    if let Ok(MtMessage::PaymentCommands(p)) = decode_mt(frame) {
        for cmd in p.commands.iter() {
            *balance = balance.saturating_add(cmd.value);
            track.mt_received(cmd.transaction_id);
        }
        let now = sim::now_s();
        u.send_mo(&MoMessage::Reply(MtReply {
            correlation_id: p.correlation_id,
            result: ReplyResult::Ok,
            info: None,
            balance: Some(*balance),
            expected_expiry: Some(now + (*balance).max(0) as u64),
        }))
        .await?;
        track.mo_written(i, None);
        return Ok(());
    }
    if let Ok(MtMessage::StatusUpdate(st)) = decode_mt(frame) {
        if let Some(enabled) = st.enabled {
            track.mt_received(&crate::track::switch_key(i, enabled));
        }
    }
    let kind = u.answer(frame, ReplyResult::Ok).await?;
    // The reply, plus a command response or a status report (`sim::UnitConn::answer`).
    track.mo_written(i, None);
    if matches!(kind, codec::MtType::CommandRequest | codec::MtType::Sync) {
        track.mo_written(i, None);
    }
    Ok(())
}

fn periodic(period: Duration) -> tokio::time::Interval {
    let offset = period.mul_f64(rand::random::<f64>());
    let mut i = tokio::time::interval_at(Instant::now() + offset, period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

async fn session(
    spec: &UnitSpec,
    u: &mut UnitConn,
    shared: &Shared,
    b: Behaviour,
    balance: &mut i64,
    acks: &mut Acks,
    replay: &mut Option<mpsc::UnboundedReceiver<Replay>>,
) -> End {
    let c = &shared.counters;
    let mut phase = shared.phase.clone();
    let mut storm = shared.storm.clone();
    storm.borrow_and_update();
    let mut keepalive = tokio::time::interval(Duration::from_secs(60));
    let mut status = periodic(b.status);
    let mut telemetry = periodic(b.telemetry);
    let mut event = periodic(b.event);
    // When the next paced burst round may start.
    let mut next_round: Option<tokio::time::Instant> = None;
    loop {
        let mut telemetry_seq = None;
        let ph = *phase.borrow_and_update();
        if ph == Phase::Stop {
            return End::Stop;
        }
        if ph == Phase::Burst && spec.sender {
            if let Some(period) = b.burst_round {
                // Paced: wait for this round's turn, answering what arrives meanwhile. A late
                // round starts at once, without catching up on the ones it missed.
                let now = tokio::time::Instant::now();
                let due = *next_round.get_or_insert(now);
                next_round = Some(due.max(now - period) + period);
                if due > now {
                    if let Ok(received) = tokio::time::timeout_at(due, u.recv_or_ack()).await {
                        let stopping = *phase.borrow() == Phase::Stop;
                        if let Some(end) =
                            on_received(received, u, balance, shared, spec.i, acks, stopping).await
                        {
                            return end;
                        }
                    }
                    // The round that was due; or, after an early frame, the same wait again.
                    if tokio::time::Instant::now() < due {
                        next_round = Some(due);
                        continue;
                    }
                }
            }
            for _ in 0..BURST_ROUND {
                let seq = shared.track.next_seq(spec.i);
                let mo = shared.track.telemetry(seq);
                if send(u, &mo, &[seq], shared, spec.i, acks).await.is_err() {
                    c.send_errors.fetch_add(1, Ordering::Relaxed);
                    return End::Closed;
                }
            }
            tokio::task::yield_now().await;
            let polled = tokio::time::timeout(Duration::ZERO, u.recv()).await;
            acks.settle(u, &shared.track, spec.i);
            if let Ok(Ok(Some(f))) = polled {
                if answer(u, &f, balance, &shared.track, spec.i, acks)
                    .await
                    .is_ok()
                {
                    c.mt_answered.fetch_add(1, Ordering::Relaxed);
                }
            }
            continue;
        }
        let on = ph == Phase::Periodic;
        let out = tokio::select! {
            _ = phase.changed() => continue,
            r = storm.changed(), if spec.in_storm => {
                if r.is_ok() {
                    return End::Storm;
                }
                continue;
            }
            received = u.recv_or_ack() => {
                let stopping = *phase.borrow() == Phase::Stop;
                match on_received(received, u, balance, shared, spec.i, acks, stopping).await {
                    Some(end) => return end,
                    None => continue,
                }
            }
            f = next_replay(replay) => {
                match f {
                    Some(f) => {
                        if replay_one(u, f, shared, spec.i, acks).await.is_err() {
                            c.send_errors.fetch_add(1, Ordering::Relaxed);
                            return End::Closed;
                        }
                    }
                    None => *replay = None,
                }
                continue;
            }
            _ = keepalive.tick() => None,
            _ = status.tick(), if on => {
                // Credit runs down between reports (seconds of credit).
                *balance -= b.status.as_secs() as i64;
                Some(status_report(sim::now_s(), *balance))
            }
            _ = telemetry.tick(), if on => {
                telemetry_seq = Some(shared.track.next_seq(spec.i));
                telemetry_seq.map(|s| shared.track.telemetry(s))
            }
            _ = event.tick(), if on => Some(sim::event_log(sim::now_s(), "Above RV")),
        };
        let sent = match out {
            None => u.keepalive().await,
            Some(mo) => send(u, &mo, telemetry_seq.as_slice(), shared, spec.i, acks)
                .await
                .map(drop),
        };
        if sent.is_err() {
            c.send_errors.fetch_add(1, Ordering::Relaxed);
            return End::Closed;
        }
    }
}

/// Sends one MO of unit `i` (`telemetry`: the telemetry sequence numbers it carries) and
/// counts it: numbered and windowed in version 2 (waiting for room), as is in version 1.
/// Returns the number given (0 in version 1).
async fn send(
    u: &mut UnitConn,
    mo: &[u8],
    telemetry: &[u64],
    shared: &Shared,
    i: u32,
    acks: &mut Acks,
) -> Result<u64, sim::SimError> {
    match u.send_message(mo).await {
        Ok(number) => {
            shared.counters.mo_sent.fetch_add(1, Ordering::Relaxed);
            shared.track.mo_written(i, telemetry.last().copied());
            if number > 0 {
                acks.telemetry
                    .extend(telemetry.iter().map(|&t| (number, t)));
            }
            acks.settle(u, &shared.track, i);
            Ok(number)
        }
        Err(e) => {
            shared.track.write_failed(i, telemetry);
            Err(e)
        }
    }
}

/// The next captured MO handed to the unit; never, without a replay.
async fn next_replay(rx: &mut Option<mpsc::UnboundedReceiver<Replay>>) -> Option<Replay> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes one captured MO (its telemetry made identifiable, `Tracking::restamp`) and counts it
/// with the unit's MO and with the replayed ones.
async fn replay_one(
    u: &mut UnitConn,
    f: Replay,
    shared: &Shared,
    i: u32,
    acks: &mut Acks,
) -> Result<(), sim::SimError> {
    let (mo, telemetry) = shared.track.restamp(i, &f.mo);
    let r = &shared.track.replayed;
    r.lateness.record(f.due);
    match send(u, &mo, &telemetry, shared, i, acks).await {
        Ok(number) => {
            r.written.fetch_add(1, Ordering::Relaxed);
            if number > 0 {
                acks.replayed.push_back(number);
                acks.settle(u, &shared.track, i);
            }
            Ok(())
        }
        Err(e) => {
            r.failed.fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// A legacy HTTP unit: every `status` period it uploads its status (`POST /rc_data`) and its
/// telemetry (`POST /rm_data`), and polls its settings (`GET /rc_data`); until `Stop`.
pub(crate) async fn http_unit(i: u32, target: Target, shared: Arc<Shared>, b: Behaviour) {
    let Some(addr) = target.http else { return };
    let c = &shared.counters;
    let id = &target.ids[i as usize];
    let who = &id.imei;
    let auth = basic_auth(who, &id.key);
    let mut phase = shared.phase.clone();
    let mut tick = periodic(b.status);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = phase.changed() => {}
            _ = tick.tick() => {}
        }
        if *phase.borrow_and_update() == Phase::Stop {
            return;
        }
        n += 1;
        let now = sim::now_s();
        let status = format!(
            r#"{{"imei":"{who}","time":{now},"enabled":true,"balance":{},"connection":{{"mcc":639,"mnc":2,"cells":[{{"lac":1,"cid":{i},"signal":-71}}]}}}}"#,
            432_000 - n * 60
        );
        // Identifiable like the framed units' telemetry (`Tracking::telemetry`).
        let seq = shared.track.next_seq(i);
        let (t, pulses) = shared.track.stamp(seq);
        let telemetry = format!(
            r#"{{"imei":"{who}","fields":{{"voltage":[[{t},12.9]],"current":[[{t},1.25]],"pulse_count":[[{t},{pulses}]]}}}}"#
        );
        let requests: [(&str, &str, Option<&[u8]>); 3] = [
            ("POST", "/rc_data", Some(status.as_bytes())),
            ("POST", "/rm_data", Some(telemetry.as_bytes())),
            ("GET", "/rc_data", None),
        ];
        for (method, path, body) in requests {
            let t = Instant::now();
            let request = async {
                match target.tls.as_ref().filter(|_| target.http_tls) {
                    Some(cert) => {
                        sim::https_request(addr, cert, method, path, Some(&auth), body).await
                    }
                    None => sim::http_request(addr, method, path, Some(&auth), body).await,
                }
            };
            let r = tokio::time::timeout(Duration::from_secs(30), request).await;
            c.http_requests.fetch_add(1, Ordering::Relaxed);
            match r {
                Ok(Ok((200, _))) => {
                    record(&shared.http_us, t.elapsed());
                    if path == "/rm_data" {
                        shared.track.http_uploaded(i, seq);
                    }
                }
                Ok(Ok((status, body))) => {
                    if path == "/rm_data" {
                        shared.track.write_failed(i, &[seq]);
                    }
                    if c.http_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!(
                            "http unit {i}: {method} {path}: {status} {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                }
                _ => {
                    if path == "/rm_data" {
                        shared.track.write_failed(i, &[seq]);
                    }
                    c.http_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_thirty_with_jitter_of_half() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(5, 1.0), Duration::from_secs(16));
        assert_eq!(backoff(6, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(40, 0.0), BACKOFF_MAX / 2);
        // Out-of-range randomness is clamped, never a longer or negative wait.
        assert_eq!(backoff(3, 7.0), Duration::from_secs(4));
        assert_eq!(backoff(3, -1.0), Duration::from_secs(2));
    }

    #[test]
    fn the_burst_pace_holds_the_senders_to_the_rate_together() {
        // 990 senders at 80,000 MO/s together: a round of 32 each every 0.396 s.
        let round = Behaviour::burst_round_for(80_000, 990).expect("a pace");
        assert!((round.as_secs_f64() - 0.396).abs() < 1e-9, "{round:?}");
        let per_sec = f64::from(BURST_ROUND) * 990.0 / round.as_secs_f64();
        assert!((per_sec - 80_000.0).abs() < 1e-6, "{per_sec}");
        assert_eq!(Behaviour::burst_round_for(0, 990), None, "0: no limit");
        assert_eq!(Behaviour::burst_round_for(1_000, 0), None, "no senders");
    }
}
