//! Load generator for the RTC gateway.
//!
//! # Layout
//! - this file: the simulated fleet's identities, `/proc` readings, latency percentiles and the
//!   JSON summary.
//! - `main.rs`: the `load-test` binary: `run` (simulated units and the report) and `replay` (a
//!   capture file played back) spawn `serve` (a gateway on the in-process bus or the durable
//!   disk bus, with an MO counter and an MT driver) as a child process, so the gateway's memory
//!   is measured alone.
//! - `track.rs`: what each unit wrote and had acknowledged, for the summary and target mode's
//!   verification.
//! - `target.rs`: target mode (`--api`): a running deployment, provisioned, driven and verified
//!   through its API.
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
    /// Disk bus only: batches written and synced so far (group commit: one `fdatasync` per
    /// batch, so publishes ÷ batches is the mean batch).
    #[serde(default)]
    pub bus_batches: Option<u64>,
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
    /// Target mode: reads of the verification that failed and were tried again (the data
    /// API answering 500, say). A read still failing at the deadline fails the run.
    #[serde(default)]
    pub verify_reads: u64,
}

/// The JSON summary `run` writes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// The framed units' protocol version (2: numbered MO, acknowledgements).
    #[serde(default)]
    pub protocol: u8,
    /// The gateway's bus: `memory` (in-process) or `disk` (durable, fsync on).
    #[serde(default)]
    pub bus: String,
    /// MO the units wrote without error over the whole run (framed units' telemetry, status
    /// reports, event logs, MT replies and command responses; HTTP units' telemetry uploads).
    /// A version-2 resend after a reconnect is not counted again.
    #[serde(default)]
    pub mo_sent: u64,
    /// Of those, acknowledged: covered by the gateway's cumulative acknowledgement (version
    /// 2), or answered 200 (HTTP). Version-1 framed units get no acknowledgement.
    #[serde(default)]
    pub mo_acknowledged: u64,
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
    /// MO the units wrote in the MO phase.
    #[serde(default)]
    pub mo_phase_sent: u64,
    /// MO acknowledgements the units received in the MO phase, per second (version 2; 0 in
    /// version 1).
    #[serde(default)]
    pub mo_acked_per_sec: f64,
    /// Disk bus: batches synced in the MO phase (one `fdatasync` each); `mo_messages` ÷ this
    /// is the mean group-commit batch.
    #[serde(default)]
    pub mo_bus_batches: Option<u64>,
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

/// Target mode's replay phase (`run --api … --replay FILE`): a capture played back through
/// the provisioned framed units. Its MO are also in the run's `mo_sent`, `mo_acknowledged`,
/// `mo_stored`, `mo_lost` and `mo_duplicated` (verified with the units' other MO), and its
/// telemetry records in the `telemetry_*` counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetReplay {
    /// The capture file.
    pub capture: String,
    /// Frames read from it (after `--replay-max-frames`).
    pub captured_frames: u64,
    /// Of those, not played: not an MO message (the gateway dead-letters such a frame, so
    /// nothing of it could be verified).
    pub skipped: u64,
    /// Captured units with a frame played.
    pub captured_units: u64,
    /// Playback speed (1 = as captured).
    pub speed: f64,
    /// Framed units that played captured traffic.
    pub units: u64,
    /// Frames to play: each captured unit's frames times the units playing it.
    pub frames: u64,
    /// Written by their unit without error.
    pub sent: u64,
    /// Of those, acknowledged by the gateway (version 2; 0 in version 1).
    pub acknowledged: u64,
    /// Frames not written: the write failed, or the unit had gone.
    pub unsent: u64,
    /// Seconds from the playback's start until every frame was written and acknowledged.
    pub secs: f64,
    /// Frames written per second over those seconds.
    pub per_sec: f64,
    /// How late frames were written against the capture's schedule (scaled by the speed).
    pub lateness: Percentiles,
}

/// One second of a target-mode run (the chart's data).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SecondSample {
    /// Seconds since the units started connecting.
    pub t: u64,
    /// The run's phase then.
    pub phase: String,
    /// MO acknowledged in this second.
    pub mo_per_sec: u64,
    /// Commands the API accepted in this second.
    pub mt_accepted_per_sec: u64,
    /// Commands their unit received in this second.
    pub mt_delivered_per_sec: u64,
    /// Highest MT latency (API request → unit received it) in this second, ms.
    pub mt_latency_max_ms: Option<f64>,
    /// Ingest lag of the last sample finished in this second, ms.
    pub ingest_lag_ms: Option<f64>,
    /// Server RSS (KiB), when `--server-pid` was given.
    pub rss_kib: Option<u64>,
}

/// The JSON summary of `run` in target mode (against a running deployment).
///
/// An MO counts as acknowledged when the gateway's acknowledgement covers it (framed units of
/// protocol version 2) or its HTTP upload was answered 200. Version-1 framed units get no
/// acknowledgement: their MO are verified against what they wrote, and `protocol` says so.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TargetSummary {
    /// The run's tag: `pulse_count` of its telemetry is `tag * 10^7 + sequence number`.
    pub run_tag: u64,
    /// The framed units' protocol version (2: numbered MO, acknowledgements).
    #[serde(default)]
    pub protocol: u8,
    /// Units used (framed TCP, QUIC, legacy HTTP).
    pub tcp_units: u32,
    /// QUIC units.
    pub quic_units: u32,
    /// Legacy HTTP units.
    pub http_units: u32,
    /// Units provisioned through the API in this run (0 when read from `--units-csv`).
    pub provisioned: u64,
    /// Seconds provisioning took.
    pub provision_secs: f64,
    /// Framed units connected in the connect phase.
    pub connected: u64,
    /// Seconds the connect phase took.
    pub connect_secs: f64,
    /// MO written by the units: framed units' telemetry, status reports, event logs and MT
    /// replies; HTTP units' telemetry uploads (their status uploads and polls are not counted).
    pub mo_sent: u64,
    /// Of those, acknowledged (see the type's doc).
    pub mo_acknowledged: u64,
    /// Written and never acknowledged (version 2): the unit left, or its connection ended,
    /// before the acknowledgement came. Not counted lost: they may or may not be stored.
    #[serde(default)]
    pub mo_unacknowledged: u64,
    /// Acknowledged MO found (`mo_acknowledged − mo_lost`; version-1 framed units: written
    /// MO, as they have no acknowledgement): a framed unit's MO are counted
    /// against its rows in `rtc_mo_message_history` received since the run started, and its
    /// telemetry must be in the time-series store too; HTTP units' telemetry in the store.
    pub mo_stored: u64,
    /// Acknowledged MO missing (lost: acknowledged and not stored): per framed unit the larger
    /// of its database shortfall and its telemetry missing from the store; per HTTP unit its
    /// telemetry missing from the store.
    pub mo_lost: u64,
    /// Database rows beyond what a unit wrote (failed writes and unacknowledged MO included),
    /// plus telemetry points stored more than once.
    pub mo_duplicated: u64,
    /// Acknowledged telemetry batches (each identifiable); a replayed batch counts each of
    /// its records (each made identifiable).
    pub telemetry_acknowledged: u64,
    /// Of those, found in the time-series store through the data API.
    pub telemetry_stored: u64,
    /// Acknowledged telemetry not in the store.
    pub telemetry_lost: u64,
    /// Commands sent through the API: payment commands (`add_payment_command`) and, every
    /// tenth, an enable or disable (`PUT /v1/products/<imei>/enable|disable`).
    pub mt_sent: u64,
    /// Of those, accepted (201 for a payment, 200 for enable/disable).
    pub mt_accepted: u64,
    /// Of the accepted, enable/disable commands (delivered = the unit received a status update
    /// with that `enabled`).
    pub mt_switches: u64,
    /// Accepted commands their unit received.
    pub mt_delivered: u64,
    /// Accepted commands no unit received.
    pub mt_lost: u64,
    /// Accepted payment commands whose `payment_commands` row is `acknowledged` (the unit's
    /// reply recorded); `mt_accepted − mt_switches` when all are.
    pub mt_acknowledged: u64,
    /// MT latency: API request → the unit received the command.
    pub mt_latency: Percentiles,
    /// Ingest lag: a unit's telemetry written → visible through the data API (sampled).
    pub ingest_lag: Percentiles,
    /// Connect + handshake latency.
    pub handshake: Percentiles,
    /// Legacy HTTP request latency.
    pub http: Percentiles,
    /// MO per second acknowledged in the MO burst phase.
    pub burst_mo_per_sec: f64,
    /// The burst's cap on MO per second (`--mo-rate`); `None`: as fast as the units could.
    #[serde(default)]
    pub burst_mo_rate_limit: Option<u32>,
    /// The MT phase ran during the MO burst (`--mt-during-mo`): `mt_latency` is then MT
    /// latency under MO load, and the burst lasted until the MT phase ended.
    #[serde(default)]
    pub mt_during_mo: bool,
    /// Wall-clock time (Unix ms) of the series' second 0, to line the windows up with
    /// what the server's own metrics recorded.
    #[serde(default)]
    pub t0_unix_ms: u64,
    /// The MO burst, in seconds since the units started connecting: [start, end].
    #[serde(default)]
    pub burst_window_s: Option<[f64; 2]>,
    /// The MT phase (first command sent, last answered by the API), same clock: [start, end].
    #[serde(default)]
    pub mt_window_s: Option<[f64; 2]>,
    /// Ingest lag by the phase the probed telemetry was sent in (`Periodic`: the realistic
    /// load; `Burst`: during the MO burst).
    #[serde(default)]
    pub ingest_lag_by_phase: std::collections::BTreeMap<String, Percentiles>,
    /// Reconnect storm: units told to drop and reconnect, reconnected, seconds.
    pub storm_units: u64,
    /// Reconnected within 60 s.
    pub storm_reconnected: u64,
    /// Seconds until the last was back.
    pub storm_secs: f64,
    /// The replay phase (`--replay`), when it ran.
    #[serde(default)]
    pub replay: Option<TargetReplay>,
    /// Highest server RSS sampled (KiB; 0 without `--server-pid`).
    pub rss_peak_kib: u64,
    /// Seconds from the end of the run until everything was found (or the wait gave up).
    pub verify_secs: f64,
    /// Per-second series.
    pub series: Vec<SecondSample>,
    /// Errors.
    pub errors: Errors,
    /// Wall time of the whole run.
    pub total_secs: f64,
}

/// A self-contained HTML page (inline SVG) charting a target-mode run: MO/s, MT/s, MT
/// latency and ingest lag per second.
pub fn chart_html(s: &TargetSummary) -> String {
    type Pick = fn(&SecondSample) -> Option<f64>;
    // (title, colour, the value, dots: seconds without a value are gaps, so each value is
    // also drawn as a dot)
    let charts: [(&str, &str, Pick, bool); 4] = [
        (
            "MO acknowledged per second",
            "#1f77b4",
            |p| Some(p.mo_per_sec as f64),
            false,
        ),
        (
            "MT delivered per second",
            "#2ca02c",
            |p| Some(p.mt_delivered_per_sec as f64),
            false,
        ),
        (
            "MT latency, max in the second (ms)",
            "#d62728",
            |p| p.mt_latency_max_ms,
            true,
        ),
        (
            "Ingest lag, sampled (ms)",
            "#9467bd",
            |p| p.ingest_lag_ms,
            true,
        ),
    ];
    let (w, h, pad) = (720.0, 180.0, 40.0);
    let t_max = s.series.last().map_or(1, |p| p.t.max(1)) as f64;
    let mut body = String::new();
    for (title, colour, pick, dots) in charts {
        let pts: Vec<(f64, f64)> = s
            .series
            .iter()
            .filter_map(|p| pick(p).map(|v| (p.t as f64, v)))
            .collect();
        let y_max = pts.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-9);
        // Plot area: x from `pad` to `w - pad`, y from 20 (the maximum) down to `h - pad + 10`.
        let xy: Vec<(f64, f64)> = pts
            .iter()
            .map(|(t, v)| {
                (
                    pad + t / t_max * (w - 2.0 * pad),
                    h - pad + 10.0 - v / y_max * (h - pad - 10.0),
                )
            })
            .collect();
        let line: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let marks: String = if dots {
            xy.iter()
                .map(|(x, y)| {
                    format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"{colour}\"/>")
                })
                .collect()
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<h2>{title}</h2>\n<svg width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">\
             <line x1=\"{pad}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#888\"/>\
             <line x1=\"{pad}\" y1=\"20\" x2=\"{pad}\" y2=\"{y0}\" stroke=\"#888\"/>\
             <text x=\"2\" y=\"20\" font-size=\"11\">{y_max:.0}</text>\
             <text x=\"2\" y=\"{y0}\" font-size=\"11\">0</text>\
             <text x=\"{x1}\" y=\"{yt}\" font-size=\"11\" text-anchor=\"end\">{t_max:.0} s</text>\
             <polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>{marks}</svg>\n",
            line.join(" "),
            y0 = h - pad + 10.0,
            x1 = w - pad,
            yt = h - 5.0,
        ));
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>load-test run {tag}</title>\
         </head><body style=\"font-family:sans-serif\">\n<h1>load-test run {tag}</h1>\n\
         <p>MO sent {} · acknowledged {} · stored {} · lost {} · duplicated {}<br>\
         MT accepted {} · delivered {} · lost {} · MT p99 {:.1} ms · ingest lag p99 {:.1} ms</p>\n\
         {body}</body></html>\n",
        s.mo_sent,
        s.mo_acknowledged,
        s.mo_stored,
        s.mo_lost,
        s.mo_duplicated,
        s.mt_accepted,
        s.mt_delivered,
        s.mt_lost,
        s.mt_latency.p99_ms,
        s.ingest_lag.p99_ms,
        tag = s.run_tag,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_one_page_of_inline_svg_without_scripts() {
        let s = TargetSummary {
            mo_sent: 7,
            series: (0..3)
                .map(|t| SecondSample {
                    t,
                    mo_per_sec: t * 10,
                    ingest_lag_ms: (t == 1).then_some(250.0),
                    ..SecondSample::default()
                })
                .collect(),
            ..TargetSummary::default()
        };
        let page = chart_html(&s);
        assert_eq!(
            page.matches("<svg").count(),
            4,
            "MO/s, MT/s, MT latency, lag"
        );
        assert!(!page.contains("<script") && !page.contains("src="));
        // MO/s: three points, the last (20/s) at the top of the plot.
        assert!(
            page.contains("points=\"40.0,150.0 360.0,85.0 680.0,20.0\""),
            "{page}"
        );
        // The one lag sample is a dot at the top, in the middle.
        assert!(page.contains("<circle cx=\"360.0\" cy=\"20.0\""), "{page}");
        assert!(page.contains("MO sent 7"));
    }
}
