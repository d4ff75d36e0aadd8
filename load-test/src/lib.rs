//! Load generator for the RTC gateway.
//!
//! # Layout
//! - this file: the simulated fleet's identities, `/proc` readings, latency percentiles and the
//!   JSON summary.
//! - `main.rs`: the `load-test` binary: `run` (simulated units and the report) and `replay` (a
//!   capture file played back) spawn `serve` (a gateway on an in-process bus with an MO counter
//!   and an MT driver) as a child process, so the gateway's memory is measured alone.
//! - `unit.rs`: what one simulated unit does (hello, periodic status/telemetry/event logs,
//!   answering MT with DCM balances, reconnect storms) and the legacy HTTP units.
//!
//! The wire-level unit (handshake, framing, sending) is the `sim` crate.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The IMEI of simulated unit `i`.
pub fn imei(i: u32) -> String {
    format!("35{i:013}")
}

/// The device key of simulated unit `i` (24 characters).
pub fn device_key(i: u32) -> String {
    format!("key-{i:020}")
}

/// `VmRSS` of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The load test only ever targets this machine: refuses any other address.
pub fn ensure_loopback(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "refusing to load {addr}: the load test targets loopback only"
    );
    Ok(addr)
}

/// Latency percentiles of an HDR histogram recorded in microseconds, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Percentiles {
    /// Reads the percentiles of `h` (microseconds).
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
        }
    }
}

/// A histogram for latencies in microseconds (1 µs … 1 h, 3 significant digits).
pub fn latency_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// What `serve` reports on request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServeStats {
    /// MO messages consumed from the MO topic so far.
    pub mo_consumed: u64,
    /// Messages consumed from the MT reply topic so far (unit replies, command responses,
    /// final balances, gateway-written outcomes).
    pub mt_replies: u64,
    /// Dead letters consumed from the MO dead-letter topic so far.
    pub dead_letters: u64,
    /// Units the presence registry shows connected.
    pub units_online: usize,
    /// Gateway process RSS (KiB).
    pub rss_kib: u64,
}

/// MT round-trip result of one MT phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MtStats {
    /// Commands enqueued (status updates and DCM payment commands, alternately).
    pub sent: u64,
    /// Replies matched.
    pub answered: u64,
    /// Achieved enqueue rate (per second).
    pub rate: f64,
    /// Round trip percentiles (ms): enqueue on the bus → unit's reply on the reply topic.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Errors seen by the simulated units.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Errors {
    /// Connects or handshakes that failed (or timed out).
    pub connect: u64,
    /// Sends that failed on an established connection.
    pub send: u64,
    /// Connections the gateway closed while the unit was not leaving.
    pub closed_by_gateway: u64,
    /// Legacy HTTP requests that failed or did not answer 200.
    pub http: u64,
}

/// The JSON summary `run` writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// TCP units asked for.
    pub tcp_units: u32,
    /// QUIC units asked for.
    pub quic_units: u32,
    /// Legacy HTTP units asked for.
    pub http_units: u32,
    /// Units admitted (handshake done) at the end of the connect phase.
    pub connected: u64,
    /// Units that failed to connect in the connect phase (all their attempts failed).
    pub connect_failures: u64,
    /// Units whose first connect attempt failed (a unit retries with backoff, like a real
    /// one; those that then connected are in `connected`).
    #[serde(default)]
    pub first_attempt_failures: u64,
    /// Connect attempts after a failed one, connect phase and reconnects.
    #[serde(default)]
    pub connect_retries: u64,
    /// Seconds the connect phase took.
    pub connect_secs: f64,
    /// Handshakes per second in the connect phase.
    pub connects_per_sec: f64,
    /// Connect + hello → welcome latency (every handshake, reconnects included).
    pub handshake: Percentiles,
    /// Gateway RSS before any unit connected (KiB).
    pub rss_baseline_kib: u64,
    /// Gateway RSS with every unit connected and idle (KiB).
    pub rss_idle_kib: u64,
    /// Highest gateway RSS sampled during the run (KiB).
    pub rss_peak_kib: u64,
    /// (idle − baseline) / connected.
    pub kib_per_idle_connection: f64,
    /// Units still connected at the end (presence registry).
    pub held_at_end: usize,
    /// Seconds of realistic behaviour (periodic status, telemetry, event logs).
    pub periodic_secs: f64,
    /// MO messages the units sent in that phase.
    pub periodic_mo_sent: u64,
    /// MO messages per second that reached the bus in that phase.
    pub periodic_mo_per_sec: f64,
    /// MO throughput phase: units sending back to back.
    pub mo_senders: u32,
    /// Seconds of the MO throughput phase.
    pub mo_secs: f64,
    /// MO messages that reached the bus in the MO phase.
    pub mo_messages: u64,
    /// MO messages per second onto the bus.
    pub mo_per_sec: f64,
    /// MT phase.
    pub mt: MtStats,
    /// Reconnect storm: units told to drop and reconnect at once.
    pub storm_units: u64,
    /// Of those, reconnected (handshake done again) within the storm's time limit.
    pub storm_reconnected: u64,
    /// Seconds until the last of them was back.
    pub storm_secs: f64,
    /// Legacy HTTP request latency.
    pub http: Percentiles,
    /// Errors.
    pub errors: Errors,
    /// Wall time of the whole run.
    pub total_secs: f64,
}

/// The JSON summary `replay` writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplaySummary {
    /// The capture file.
    pub capture: String,
    /// Frames in the capture (after `--max-frames`).
    pub captured_frames: u64,
    /// Distinct units in the capture.
    pub captured_units: u64,
    /// Copies of each captured unit.
    pub clones: u32,
    /// Playback speed (1 = as captured).
    pub speed: f64,
    /// Units that connected.
    pub connected: u64,
    /// Frames sent.
    pub sent: u64,
    /// Frames that reached the bus (MO, MT reply and dead-letter topics).
    pub received: u64,
    /// Seconds from the first frame sent to the last received.
    pub secs: f64,
    /// Frames per second onto the bus.
    pub per_sec: f64,
    /// How late frames were sent against the capture's schedule.
    pub send_lag: Percentiles,
    /// Highest gateway RSS sampled (KiB).
    pub rss_peak_kib: u64,
    /// Errors.
    pub errors: Errors,
}
