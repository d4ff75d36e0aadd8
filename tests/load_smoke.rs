//! The load test in target mode against the real `smartsolar serve` (embedded defaults:
//! SQLite, the embedded time-series store, the disk bus): 1,000 units provisioned through the
//! API, ~10 s of traffic over TLS-TCP, QUIC and legacy HTTP, payment commands through the
//! API, a reconnect storm. The framed units speak protocol version 2: an MO counts as
//! acknowledged when the gateway's acknowledgement covers it. Fails on any acknowledged MO
//! lost (not stored) or any MO duplicated (database and time-series store), on MO left
//! unacknowledged, and on any command not delivered or not acknowledged, read from the
//! summary JSON.
//!
//! And the replay phase of target mode: traffic `serve` captured (gateway capture mode) played
//! back through the provisioned units and verified stored exactly once with the rest.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{
    assert_every_mo_stored_once, free_port, load_test_run, run_load_test, smartsolar_command,
    summary_count, Process,
};

/// `smartsolar serve` on embedded defaults in `dir` (the legacy HTTP listener on `legacy`;
/// capture mode writing to `capture`), ready: the process, its API's base URL and its TLS-TCP
/// and QUIC ports.
async fn serve(
    dir: &Path,
    legacy: Option<u16>,
    capture: Option<&Path>,
) -> (Process, String, (u16, u16)) {
    let (http, tcp, quic) = (free_port(), free_port(), free_port());
    let mut cmd = smartsolar_command("serve", dir, (http, tcp, quic), legacy);
    if let Some(path) = capture {
        cmd.env("SMARTSOLAR_GATEWAY_CAPTURE_PATH", path);
    }
    let child = cmd
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Process(child);
    let base = format!("http://127.0.0.1:{http}");
    server.wait_ready(&reqwest::Client::new(), &base).await;
    (server, base, (tcp, quic))
}

/// The flags that point target mode at `serve` in `dir`: its API, its gateway's TLS-TCP and
/// QUIC ports, and the gateway certificate `serve` wrote into its data dir.
fn target_flags(dir: &Path, base: &str, (tcp, quic): (u16, u16)) -> Vec<(&'static str, String)> {
    let cert = dir.join("data").join("gateway-cert.pem");
    vec![
        ("--api", base.to_owned()),
        ("--gateway-tcp", format!("127.0.0.1:{tcp}")),
        ("--gateway-quic", format!("127.0.0.1:{quic}")),
        ("--ca-cert", cert.display().to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_units_against_serve_lose_and_duplicate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let legacy = free_port();
    let (server, base, (tcp, quic)) = serve(dir.path(), Some(legacy), None).await;

    let (units_csv, chart) = (dir.path().join("units.csv"), dir.path().join("chart.html"));
    let mut flags = target_flags(dir.path(), &base, (tcp, quic));
    flags.extend([
        ("--gateway-http", format!("http://127.0.0.1:{legacy}")),
        ("--server-pid", server.0.id().to_string()),
        ("--units-csv", units_csv.display().to_string()),
        ("--chart", chart.display().to_string()),
    ]);
    let s = run_load_test(dir.path(), &flags).await;
    // The units speak protocol version 2, so "acknowledged" is the gateway's acknowledgement
    // (after the disk bus's fsync), not a write that succeeded; `run_load_test` has checked
    // that every acknowledged MO is stored (lost = acknowledged and not stored = 0).
    assert_eq!(s["protocol"], 2, "version-2 units: {s}");
    assert_eq!(
        s["mo_unacknowledged"], 0,
        "every unit's window acknowledged before it left: {s}"
    );
    assert_eq!(s["mo_lost"], 0);
    assert!(
        s["burst_mo_per_sec"].as_f64().is_some(),
        "the burst rate is reported"
    );
    assert!(
        s["rss_peak_kib"].as_u64().unwrap() > 0,
        "server RSS sampled"
    );
    assert!(
        !s["series"].as_array().unwrap().is_empty(),
        "per-second series"
    );
    // The units it provisioned are listed for the next run, and the chart is written.
    let listed = std::fs::read_to_string(&units_csv).unwrap().lines().count();
    assert_eq!(listed, 1_001, "header + one line per unit");
    let page = std::fs::read_to_string(&chart).unwrap();
    assert!(
        page.contains("<svg") && !page.contains("<script"),
        "self-contained chart"
    );
}

/// `serve` captures a short target-mode run (20 units, 2 s of telemetry, status and event
/// logs); a second run reuses 10 of those units (`--units-csv`) with every other phase off and
/// plays the capture back through them twice as fast (`--replay`; two captured units on each). Every replayed frame must be written,
/// acknowledged by the gateway and found in the database (its telemetry in the store), and
/// nothing stored twice: the run's MO counts are the replayed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_replayed_through_provisioned_units_is_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("capture.jsonl");
    let (_server, base, (tcp, quic)) = serve(dir.path(), None, Some(&capture)).await;
    let units_csv = dir.path().join("units.csv");
    let mut fixed = target_flags(dir.path(), &base, (tcp, quic));
    fixed.extend([
        ("--units-csv", units_csv.display().to_string()),
        ("--http", "0".into()),
        ("--mo-senders", "0".into()),
        ("--mo-secs", "0".into()),
        ("--mt-secs", "0".into()),
        ("--storm-percent", "0".into()),
    ]);
    // The fixed flags and `phases` ("--flag value …").
    fn with<'a>(fixed: &[(&'a str, String)], phases: &'a str) -> Vec<(&'a str, String)> {
        let mut args = fixed.to_vec();
        let mut words = phases.split_whitespace();
        while let (Some(k), Some(v)) = (words.next(), words.next()) {
            args.push((k, v.to_owned()));
        }
        args
    }

    let (recorded, stderr) = load_test_run(
        &with(
            &fixed,
            "--tcp 10 --quic 10 --periodic-secs 2 --status-secs 1 --telemetry-secs 0.5 \
             --event-secs 1",
        ),
        &dir.path().join("recorded.json"),
    )
    .await;
    assert_every_mo_stored_once(&recorded, &stderr);
    // The verification counts a unit's database rows received since its run started (less
    // a 2 s margin): the second run must start after the first one's last row. (The capture
    // writer has flushed by then too: it does every second.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    let captured = gateway::capture::read_capture(&capture).unwrap();
    assert!(
        captured.len() as u64 >= summary_count(&recorded)("mo_sent"),
        "serve captured the run: {} frames",
        captured.len()
    );

    let replay = format!(
        "--tcp 5 --quic 5 --periodic-secs 0 --replay {} --replay-speed 2",
        capture.display()
    );
    let (s, stderr) =
        load_test_run(&with(&fixed, &replay), &dir.path().join("replayed.json")).await;
    let n = summary_count(&s);
    let r = &s["replay"];
    let rn = summary_count(r);
    assert_eq!(n("provisioned"), 0, "the first run's units, from the CSV");
    assert_eq!(rn("captured_frames"), captured.len() as u64, "{s}");
    assert_eq!((rn("skipped"), rn("captured_units")), (0, 20), "{s}");
    assert_eq!(rn("units"), 10, "two captured units on each: {s}");
    assert_eq!(
        rn("frames"),
        captured.len() as u64,
        "each frame played once: {s}"
    );
    assert_eq!(
        rn("sent"),
        rn("frames"),
        "every frame written: {s}\n{stderr}"
    );
    assert_eq!(rn("acknowledged"), rn("sent"), "{s}");
    assert_eq!(rn("unsent"), 0);
    assert!(r["lateness"]["count"].as_u64() == Some(rn("sent")), "{s}");
    // The replayed frames are in the verified counts: written, acknowledged, then each found
    // once in the database (telemetry in the store too). Nothing else sent MO in this run
    // but MT the server might send (answered by the units), so at least the replayed.
    assert_every_mo_stored_once(&s, &stderr);
    assert!(n("mo_stored") >= rn("sent"), "replayed MO stored: {s}");
    let telemetry = captured
        .iter()
        .filter(|f| {
            let mo = f.payload().unwrap();
            matches!(codec::decode_mo(&mo), Ok(codec::MoMessage::Telemetry(_)))
        })
        .count() as u64;
    assert!(telemetry > 20, "the capture has telemetry: {telemetry}");
    assert!(
        n("telemetry_stored") >= telemetry,
        "each replayed telemetry record found in the store: {s}"
    );
}

/// `--mt-during-mo`: the MT phase runs during the MO burst, not after it. 40 units, 20 of
/// them sending back to back, and 100 commands through the API at 50/s: the summary says MT
/// ran during MO, the MT phase's window lies inside the burst's, and the per-second series
/// (labelled by the sampler with the phase of that second) has most commands accepted in
/// burst seconds — after a burst (the default) it would have next to none. No acknowledged MO
/// lost or duplicated.
///
/// Not asserted: that every MO was acknowledged and every command delivered. The senders'
/// windows (256 MO, read by the gateway at 20/s a unit) are still full when the units leave,
/// and commands to a sender wait behind that backlog: the first run here delivered 70 of 100
/// before the units left (issue 21, item 3: MT needs its own path). The figures are in the
/// summary for the report to show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mt_during_the_mo_burst_overlaps_it_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base, (tcp, quic)) = serve(dir.path(), None, None).await;
    let mut args = target_flags(dir.path(), &base, (tcp, quic));
    args.extend([
        ("--tcp", "20".into()),
        ("--quic", "20".into()),
        ("--http", "0".into()),
        ("--periodic-secs", "0".into()),
        ("--mo-senders", "20".into()),
        ("--mo-secs", "1".into()),
        ("--mt-rate", "50".into()),
        ("--mt-secs", "2".into()),
        ("--storm-percent", "0".into()),
        ("--mt-during-mo", "true".into()),
    ]);
    let (s, stderr) = load_test_run(&args, &dir.path().join("during.json")).await;
    let n = summary_count(&s);
    assert_eq!(n("mo_lost"), 0, "MO lost; {stderr}");
    assert_eq!(n("mo_duplicated"), 0, "MO duplicated; {stderr}");
    assert_eq!(n("mo_stored"), n("mo_acknowledged"), "{stderr}");
    assert_eq!(n("telemetry_stored"), n("telemetry_acknowledged"));
    assert_eq!(n("mt_accepted"), 100, "{stderr}");
    assert!(n("mt_delivered") > 0, "{s}");
    assert_eq!(
        s["mt_latency"]["count"].as_u64(),
        Some(n("mt_delivered")),
        "a latency per delivered command"
    );
    assert_eq!(s["mt_during_mo"], true, "{s}");
    assert!(s["burst_mo_per_sec"].as_f64().unwrap() > 0.0, "{s}");
    let window = |k: &str| {
        let w = s[k].as_array().unwrap_or_else(|| panic!("{k}: {s}"));
        (w[0].as_f64().unwrap(), w[1].as_f64().unwrap())
    };
    let (burst, mt) = (window("burst_window_s"), window("mt_window_s"));
    assert!(
        burst.0 <= mt.0 && mt.1 <= burst.1,
        "MT {mt:?} within the burst {burst:?}"
    );
    assert!(
        burst.1 - burst.0 >= 1.9,
        "the burst lasted the MT phase: {burst:?}"
    );
    let in_burst: u64 = s["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["phase"] == "Burst")
        .map(|p| p["mt_accepted_per_sec"].as_u64().unwrap())
        .sum();
    assert!(
        in_burst * 2 > n("mt_accepted"),
        "{in_burst} of {} commands accepted in burst seconds",
        n("mt_accepted")
    );
}
