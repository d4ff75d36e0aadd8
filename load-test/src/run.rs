//! `load-test run`: simulated units against a child gateway (or, with `--api`, a running
//! deployment: [`crate::target`]) and the report.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use load_test::{rss_kib, Summary};

use crate::child::{rss_sampler, Child};
use crate::fleet::Fleet;
use crate::serve::BusArgs;
use crate::unit::Phase;
use crate::{target, track, MAX_MT_RATE, MAX_UNITS};

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The unit protocol version of the framed units: 2 (numbered MO, acknowledgements, a
    /// bounded window of unacknowledged MO) or 1 (no acknowledgements; earlier figures).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub(crate) protocol: u8,
    /// Self-contained mode: the bus of the spawned gateway.
    #[command(flatten)]
    pub(crate) bus: BusArgs,
    /// TCP units.
    #[arg(long, default_value_t = 1000)]
    pub(crate) tcp: u32,
    /// QUIC units.
    #[arg(long, default_value_t = 1000)]
    pub(crate) quic: u32,
    /// Legacy HTTP units (poll every `--status-secs`).
    #[arg(long, default_value_t = 0)]
    pub(crate) http: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub(crate) connect_concurrency: usize,
    /// Seconds of realistic behaviour (periodic status, telemetry, event logs); 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub(crate) periodic_secs: u64,
    /// Status report period per unit (seconds).
    #[arg(long, default_value_t = 60.0)]
    pub(crate) status_secs: f64,
    /// Telemetry period per unit (seconds).
    #[arg(long, default_value_t = 15.0)]
    pub(crate) telemetry_secs: f64,
    /// Event log period per unit (seconds).
    #[arg(long, default_value_t = 300.0)]
    pub(crate) event_secs: f64,
    /// Units that send MO back to back in the MO throughput phase.
    #[arg(long, default_value_t = 200)]
    pub(crate) mo_senders: u32,
    /// Seconds of the MO throughput phase (0 skips it).
    #[arg(long, default_value_t = 10)]
    pub(crate) mo_secs: u64,
    /// Most MO per second all burst senders together write (0: as fast as they can). To run
    /// MT against MO at a set share of the measured capacity (issue 21: "80%").
    #[arg(long, default_value_t = 0)]
    pub(crate) mo_rate: u32,
    /// MT commands per second in the MT phase (status updates and payment commands).
    #[arg(long, default_value_t = 1000)]
    pub(crate) mt_rate: u32,
    /// Seconds of the MT phase (0 skips it).
    #[arg(long, default_value_t = 10)]
    pub(crate) mt_secs: u64,
    /// Target mode: run the MT phase during the MO burst instead of after it (the burst then
    /// lasts until the MT phase ends): MT latency under MO load. `--mt-during-mo` or
    /// `--mt-during-mo true|false`.
    #[arg(long, requires = "api", action = clap::ArgAction::Set, num_args = 0..=1,
          default_value_t = false, default_missing_value = "true")]
    pub(crate) mt_during_mo: bool,
    /// Target mode: a file holding the current phase's name (`Periodic`, `Burst`, …),
    /// rewritten as each phase starts, so a script can act during one (profile the burst).
    #[arg(long, requires = "api")]
    pub(crate) phase_file: Option<PathBuf>,
    /// Target mode: concurrent ingest-lag probes (each follows one unit's next telemetry).
    #[arg(long, default_value_t = 1, requires = "api")]
    pub(crate) lag_probes: u32,
    /// Percent of the framed units that drop and reconnect at once at the end (0 skips it).
    #[arg(long, default_value_t = 0)]
    pub(crate) storm_percent: u32,
    /// Turn the gateway's capture mode on, writing to this file.
    #[arg(long)]
    pub(crate) capture: Option<PathBuf>,
    /// Abort the run after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub(crate) max_secs: u64,
    /// No progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Where to write the summary.
    #[arg(long, default_value = "load-test-summary.json")]
    pub(crate) out: PathBuf,
    /// Target mode: the API of a running deployment (`http://host:port`). Units are
    /// provisioned through it, MT is sent through it and what arrived is verified through it.
    #[arg(long)]
    pub(crate) api: Option<String>,
    /// Target mode: the API user (needs product create and payment rights).
    #[arg(long, requires = "api")]
    pub(crate) api_user: Option<String>,
    /// Target mode: the API user's password (or `LOAD_TEST_API_PASSWORD`, which keeps it out
    /// of the process list).
    #[arg(long, env = "LOAD_TEST_API_PASSWORD", hide_env_values = true)]
    pub(crate) api_password: Option<String>,
    /// Target mode: the gateway's framed TCP listener (TLS when `--ca-cert` is given).
    #[arg(long, requires = "api")]
    pub(crate) gateway_tcp: Option<String>,
    /// Target mode: the gateway's QUIC listener (needs `--ca-cert`).
    #[arg(long, requires = "api")]
    pub(crate) gateway_quic: Option<String>,
    /// Target mode: the gateway's legacy HTTP listener (`http://host:port` or `https://…`).
    #[arg(long, requires = "api")]
    pub(crate) gateway_http: Option<String>,
    /// Target mode: the certificate (PEM) units pin for TLS over TCP, QUIC and HTTPS.
    #[arg(long, requires = "api")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Target mode: units to use. Read when the file exists (no provisioning); written after
    /// provisioning otherwise. Columns: `imei,device_key`.
    #[arg(long, requires = "api")]
    pub(crate) units_csv: Option<PathBuf>,
    /// Target mode: factory requests in flight at once while provisioning.
    #[arg(long, default_value_t = 16)]
    pub(crate) provision_concurrency: usize,
    /// Target mode: the server's process id on this machine, to sample its RSS from /proc.
    #[arg(long, requires = "api")]
    pub(crate) server_pid: Option<u32>,
    /// Target mode: longest wait for what was sent to be stored, after the run (seconds).
    #[arg(long, default_value_t = 120)]
    pub(crate) verify_secs: u64,
    /// Target mode: a capture file (gateway capture mode, `docs/operations.md`) to play back
    /// through the framed units after the MT phase; its MO are verified with the rest.
    #[arg(long, requires = "api")]
    pub(crate) replay: Option<PathBuf>,
    /// Target mode: playback speed of `--replay` (1 = as captured, 10 = ten times faster).
    #[arg(long, default_value_t = 1.0, requires = "replay")]
    pub(crate) replay_speed: f64,
    /// Target mode: play at most this many frames of `--replay` (from its start).
    #[arg(long, requires = "replay")]
    pub(crate) replay_max_frames: Option<usize>,
    /// Target mode: a self-contained HTML chart of rates, ingest lag and MT latency.
    #[arg(long, requires = "api")]
    pub(crate) chart: Option<PathBuf>,
}

pub(crate) async fn run(a: RunArgs) -> anyhow::Result<()> {
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
    (
        summary.storm_units,
        summary.storm_reconnected,
        summary.storm_secs,
    ) = fleet.storm(&a).await;

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
