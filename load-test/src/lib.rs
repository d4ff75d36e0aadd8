//! Load generator for the RTC gateway.
//!
//! # Layout
//! - this file: the simulated fleet's identities, `/proc` readings, and the JSON summary.
//! - `main.rs`: the `load-test` binary: `run` (the units, and the report) spawns `serve` (a
//!   gateway on an in-process bus with an MO counter and an MT driver) as a child process, so
//!   the gateway's memory is measured alone.
//!
//! The unit behaviour itself (handshake, MO, answering MT) is `gateway::sim`.

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

/// What `serve` reports on request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServeStats {
    /// MO messages consumed from the MO topic so far.
    pub mo_consumed: u64,
    /// MT replies consumed so far.
    pub mt_replies: u64,
    /// Units the presence registry shows connected.
    pub units_online: usize,
    /// Gateway process RSS (KiB).
    pub rss_kib: u64,
}

/// MT round-trip result of one MT phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MtStats {
    /// Commands enqueued.
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

/// The JSON summary `run` writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// TCP units asked for / held.
    pub tcp_units: u32,
    /// QUIC units asked for.
    pub quic_units: u32,
    /// Units admitted (handshake done) at the end of the connect phase.
    pub connected: u64,
    /// Units that failed to connect.
    pub connect_failures: u64,
    /// Seconds the connect phase took.
    pub connect_secs: f64,
    /// Gateway RSS before any unit connected (KiB).
    pub rss_baseline_kib: u64,
    /// Gateway RSS with every unit connected and idle (KiB).
    pub rss_idle_kib: u64,
    /// (idle − baseline) / connected.
    pub kib_per_idle_connection: f64,
    /// Units still connected at the end.
    pub held_at_end: usize,
    /// MO phase: units sending, seconds, messages consumed from the bus, rate.
    pub mo_senders: u32,
    /// Seconds of the MO phase.
    pub mo_secs: f64,
    /// MO messages that reached the bus in the MO phase.
    pub mo_messages: u64,
    /// MO messages per second onto the bus.
    pub mo_per_sec: f64,
    /// MT phase.
    pub mt: MtStats,
}
